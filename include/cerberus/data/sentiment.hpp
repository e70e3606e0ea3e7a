// Sentiment data from the npm package `sentiment@5.0.2` (scripts/fetch-data.sh puts it in
// data/sentiment/): the UCI "Sentiment Labelled Sentences" sets amazon.json, yelp.json,
// imdb.json (arrays of {"text": ..., "class": 0 | 1}) and the AFINN-165 word list
// (afinn-165.json: {"word": score in -5..5}), plus the AFINN baseline a model should beat.
#pragma once

#include <cctype>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/data/text_file.hpp"
#include "cerberus/io/json.hpp"

namespace cerberus::data {

struct SentimentExample {
  std::string text;
  int label;  // 1 positive, 0 negative
};

// Parses one fixture file's JSON text. Records with empty text and a null class are dropped (each
// file ends with one such placeholder); any other record needs a non-empty "text" string and a
// "class" of 0 or 1, else FileError naming `source` and the record ("amazon.json[12].class").
inline std::vector<SentimentExample> parse_sentiment(std::string_view json_text, std::string_view source = "<string>") {
  const io::Json root = io::parse_json(json_text, source);
  const io::JsonRef records(root, std::string(source));
  std::vector<SentimentExample> out;
  for (std::size_t i = 0; i < records.size(); ++i) {
    const io::JsonRef r = records.at(i);
    const io::JsonRef label = r.at("class");
    const std::string& text = r.at("text").as_string();
    if (label.kind() == io::Json::Kind::null && text.empty()) continue;  // the trailing placeholder
    const std::int64_t value = label.as_int();
    if (value != 0 && value != 1)
      throw FileError("[read_sentiment] " + label.path() + ": expected 0 or 1, found " + std::to_string(value));
    if (text.empty()) throw FileError("[read_sentiment] " + r.path() + ".text: expected a non-empty sentence");
    out.push_back({text, static_cast<int>(value)});
  }
  return out;
}

inline std::vector<SentimentExample> read_sentiment(const std::filesystem::path& path) {
  return parse_sentiment(read_text_file(path, "read_sentiment", "a JSON array of {\"text\", \"class\"} records"),
                         path.filename().string());
}

// AFINN: word -> integer score.
inline std::unordered_map<std::string, int> parse_afinn(std::string_view json_text, std::string_view source = "<string>") {
  const io::Json root = io::parse_json(json_text, source);
  const io::JsonRef words(root, std::string(source));
  std::unordered_map<std::string, int> out;
  for (const std::string& w : words.keys()) out.emplace(w, static_cast<int>(words.at(w).as_int()));
  return out;
}

inline std::unordered_map<std::string, int> read_afinn(const std::filesystem::path& path) {
  return parse_afinn(read_text_file(path, "read_afinn", "a JSON object of word scores"), path.filename().string());
}

// The baseline: the sum of the AFINN scores of the text's words. Words are lowercased runs of
// letters, digits, apostrophes and hyphens (so "don't" and "well-made" stay whole, as in AFINN);
// there is no negation handling. Classify as positive when the score is > 0.
inline int afinn_score(std::string_view text, const std::unordered_map<std::string, int>& lexicon) {
  int score = 0;
  std::string word;
  auto flush = [&] {
    if (word.empty()) return;
    if (const auto it = lexicon.find(word); it != lexicon.end()) score += it->second;
    word.clear();
  };
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '\'' || c == '-' || u >= 0x80) {
      word += static_cast<char>(std::tolower(u));
    } else {
      flush();
    }
  }
  flush();
  return score;
}

}  // namespace cerberus::data
