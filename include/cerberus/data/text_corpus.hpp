// A corpus of plain-text documents for language-model pre-training: read a folder of .txt files
// (one document each), split documents into train / validation by document, and cut their
// paragraphs into chunks of at most N bytes.
//
//   auto docs = cerberus::data::read_text_documents("data/pretrain/sotu");
//   auto [train, valid] = cerberus::data::split_documents(std::move(docs), 0.05, /*seed=*/1);
//   std::vector<std::string> chunks = cerberus::data::chunk_documents(train, 512);
//   cerberus::data::shuffle(chunks, /*seed=*/1);
//
// A paragraph is a run of non-blank lines (joined with one space), so both one-paragraph-per-line
// files (SOTU: a whole address on one line) and wrapped text separated by blank lines (Moby-Dick)
// read naturally. Splitting is by document, never inside one, so validation text is never seen in
// training. Everything is deterministic: files are read in name order and shuffles depend only on
// the seed (our own Fisher-Yates over Philox, not std::shuffle, whose algorithm differs between
// standard libraries).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/core/random.hpp"
#include "cerberus/data/sentences.hpp"
#include "cerberus/data/text_file.hpp"

namespace cerberus::data {

struct Document {
  std::string name;                     // the file name, without the folder
  std::vector<std::string> paragraphs;  // non-empty, trimmed
};

// Paragraphs of `text`: runs of non-blank lines joined by one space; blank lines separate them.
inline std::vector<std::string> split_paragraphs(std::string_view text) {
  std::vector<std::string> out;
  std::string current;
  auto flush = [&] {
    if (!current.empty()) out.push_back(std::move(current));
    current.clear();
  };
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    const std::string_view line = text_detail::trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (line.empty()) {
      flush();
      continue;
    }
    if (!current.empty()) current += ' ';
    current += line;
  }
  flush();
  return out;
}

// Every regular file in `dir` whose name ends with `extension`, sorted by name, as documents.
// Files with no text give no document. A missing folder, or one without such files, throws FileError.
inline std::vector<Document> read_text_documents(const std::filesystem::path& dir, const std::string& extension = ".txt") {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw FileError("[read_text_documents] '" + dir.string() + "' is not a directory (expected a folder of *" + extension +
                    " files; scripts/fetch-data.sh downloads the corpora)");
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().filename().string().ends_with(extension)) files.push_back(entry.path());
  if (files.empty())
    throw FileError("[read_text_documents] '" + dir.string() + "' holds no *" + extension + " files (expected at least one)");
  std::sort(files.begin(), files.end());
  std::vector<Document> docs;
  for (const auto& f : files) {
    Document d{f.filename().string(), split_paragraphs(read_text_file(f, "read_text_documents", "a text file"))};
    if (!d.paragraphs.empty()) docs.push_back(std::move(d));
  }
  return docs;
}

// Shuffles `items` in place; the order depends only on `seed` and the size, on every platform.
template <class T>
void shuffle(std::vector<T>& items, std::uint64_t seed) {
  Generator gen(seed);
  for (std::size_t i = items.size(); i > 1; --i) {
    // A 32x32-bit multiply maps a uniform 32-bit draw to [0, i) (bias below 2^-32 * i: negligible).
    const std::size_t j = static_cast<std::size_t>((static_cast<std::uint64_t>(gen.next_u32()) * i) >> 32);
    std::swap(items[i - 1], items[j]);
  }
}

struct DocumentSplit {
  std::vector<Document> train;
  std::vector<Document> validation;
};

// Puts round(validation_fraction * n) documents, chosen by `seed`, in validation (at least one
// when the fraction is positive, and never all of them), the rest in train; each side keeps the
// documents' original order. validation_fraction must be in [0, 1).
inline DocumentSplit split_documents(std::vector<Document> docs, double validation_fraction, std::uint64_t seed) {
  if (!(validation_fraction >= 0.0 && validation_fraction < 1.0))
    throw ValueError("[split_documents] validation_fraction must be in [0, 1), got " + std::to_string(validation_fraction));
  const std::size_t n = docs.size();
  std::size_t k = static_cast<std::size_t>(std::llround(validation_fraction * static_cast<double>(n)));
  if (validation_fraction > 0.0) {
    if (n < 2)
      throw ValueError("[split_documents] a validation split needs at least 2 documents, got " + std::to_string(n));
    k = std::clamp<std::size_t>(k, 1, n - 1);
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  shuffle(order, seed);
  std::vector<char> in_validation(n, 0);
  for (std::size_t i = 0; i < k; ++i) in_validation[order[i]] = 1;
  DocumentSplit split;
  for (std::size_t i = 0; i < n; ++i) (in_validation[i] ? split.validation : split.train).push_back(std::move(docs[i]));
  return split;
}

// Every paragraph of every document cut by chunk_text: whole sentences packed into chunks of at
// most max_bytes bytes, in document order. Shuffle the result for training.
inline std::vector<std::string> chunk_documents(const std::vector<Document>& docs, std::size_t max_bytes) {
  std::vector<std::string> out;
  for (const Document& d : docs)
    for (const std::string& p : d.paragraphs)
      for (std::string& c : chunk_text(p, max_bytes)) out.push_back(std::move(c));
  return out;
}

// Every sentence of every document, in order (split_sentences on each paragraph).
inline std::vector<std::string> document_sentences(const std::vector<Document>& docs) {
  std::vector<std::string> out;
  for (const Document& d : docs)
    for (const std::string& p : d.paragraphs)
      for (std::string& s : split_sentences(p)) out.push_back(std::move(s));
  return out;
}

}  // namespace cerberus::data
