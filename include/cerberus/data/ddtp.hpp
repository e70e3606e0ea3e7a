// DDTP (Debian Description Translation Project) Translation files, and EN-xx translation pairs
// built from them. scripts/fetch-data.sh downloads data/ddtp/Translation-{en,fr,de}.
//
// Format (Debian control file): records separated by blank lines; each a set of "Field: value"
// lines; a line starting with a space or tab continues the previous field. A record holds
//   Package: 0ad
//   Description-md5: d943033bedada21853d2ae54a2578a7b
//   Description-fr: short description (one line)
//    long description, lines starting with one space,
//    .
//    a line " ." separating paragraphs.
// The md5 identifies the English original, so Translation-en and Translation-fr join on it.
// Long-description lines are trimmed and joined with one space per paragraph (lines indented
// further, Debian's "verbatim" lists, are joined the same way: fine for training pairs).
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/data/sentences.hpp"
#include "cerberus/data/text_file.hpp"

namespace cerberus::data {

struct PackageDescription {
  std::string package;
  std::string md5;       // Description-md5: the English original's checksum
  std::string language;  // "en", "fr", "de", from the Description-<language> field name
  std::string short_text;
  std::vector<std::string> paragraphs;  // the long description, may be empty
};

namespace ddtp_detail {

[[noreturn]] inline void fail(std::string_view source, std::size_t line, const std::string& what) {
  throw FileError("[read_ddtp] " + std::string(source) + ":" + std::to_string(line) + ": " + what);
}

inline std::string quoted(std::string_view s) {
  return "'" + std::string(s.substr(0, 60)) + (s.size() > 60 ? "...'" : "'");
}

}  // namespace ddtp_detail

// Parses the text of a Translation file. `source` names it in errors, which give the line:
//   [read_ddtp] Translation-fr:12: expected 'Field: value' or a continuation line starting with a space, found 'xyz'
inline std::vector<PackageDescription> parse_ddtp(std::string_view text, std::string_view source = "<memory>") {
  using ddtp_detail::fail;
  std::vector<PackageDescription> out;
  PackageDescription rec;
  bool in_record = false, in_description = false, have_md5 = false, have_description = false;
  std::size_t record_line = 0;
  std::string paragraph;

  auto end_paragraph = [&] {
    if (!paragraph.empty()) rec.paragraphs.push_back(std::move(paragraph));
    paragraph.clear();
  };
  auto end_record = [&] {
    if (!in_record) return;
    end_paragraph();
    if (rec.package.empty()) fail(source, record_line, "record has no 'Package:' field");
    if (!have_md5) fail(source, record_line, "record for package '" + rec.package + "' has no 'Description-md5:' field");
    if (!have_description)
      fail(source, record_line, "record for package '" + rec.package + "' has no 'Description-<language>:' field");
    out.push_back(std::move(rec));
    rec = PackageDescription{};
    in_record = in_description = have_md5 = have_description = false;
  };

  std::size_t line_no = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    if (text_detail::trim(line).empty()) {  // a blank line ends the record
      end_record();
      continue;
    }
    if (line.front() == ' ' || line.front() == '\t') {  // continuation
      if (!in_record) fail(source, line_no, "continuation line " + ddtp_detail::quoted(line) + " before any field");
      if (!in_description) continue;  // continuation of another (multi-line) field: not needed
      const std::string_view body = text_detail::trim(line);
      if (body == ".") {
        end_paragraph();
        continue;
      }
      if (!paragraph.empty()) paragraph += ' ';
      paragraph += body;
      continue;
    }
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0)
      fail(source, line_no,
           "expected 'Field: value' or a continuation line starting with a space, found " + ddtp_detail::quoted(line));
    if (!in_record) {
      in_record = true;
      record_line = line_no;
    }
    const std::string_view field = line.substr(0, colon);
    const std::string_view value = text_detail::trim(line.substr(colon + 1));
    end_paragraph();
    in_description = false;
    if (field == "Package") {
      rec.package = value;
    } else if (field == "Description-md5") {
      if (value.size() != 32 || value.find_first_not_of("0123456789abcdef") != std::string_view::npos)
        fail(source, line_no, "expected a 32-digit lowercase hex Description-md5, found " + ddtp_detail::quoted(value));
      rec.md5 = value;
      have_md5 = true;
    } else if (field.starts_with("Description-")) {
      if (have_description) fail(source, line_no, "second Description-<language> field in one record");
      rec.language = field.substr(12);
      rec.short_text = value;
      have_description = in_description = true;
    }
    // Other fields are ignored.
  }
  end_record();
  return out;
}

inline std::vector<PackageDescription> read_ddtp(const std::filesystem::path& path) {
  const std::string text = read_text_file(path, "read_ddtp", "a Debian Translation-<language> file");
  return parse_ddtp(text, path.filename().string());
}

struct TranslationPair {
  enum class Kind { short_description, paragraph };
  std::string source;  // e.g. English
  std::string target;  // e.g. French
  Kind kind;
  std::string package;
  std::string md5;
};

// Joins two Translation files on Description-md5: for each md5 present in both (once, in the
// source's order), the pair of short descriptions, plus one pair per long-description paragraph
// when both sides have the same number of paragraphs (otherwise paragraphs cannot be aligned and
// only the short pair is kept). Pairs with an empty side are skipped.
inline std::vector<TranslationPair> align_translations(const std::vector<PackageDescription>& source,
                                                       const std::vector<PackageDescription>& target) {
  std::unordered_map<std::string_view, const PackageDescription*> by_md5;
  for (const auto& t : target) by_md5.emplace(t.md5, &t);
  std::unordered_set<std::string_view> done;
  std::vector<TranslationPair> out;
  for (const auto& s : source) {
    const auto it = by_md5.find(s.md5);
    if (it == by_md5.end() || !done.insert(s.md5).second) continue;
    const PackageDescription& t = *it->second;
    if (!s.short_text.empty() && !t.short_text.empty())
      out.push_back({s.short_text, t.short_text, TranslationPair::Kind::short_description, s.package, s.md5});
    if (s.paragraphs.size() == t.paragraphs.size())
      for (std::size_t i = 0; i < s.paragraphs.size(); ++i)
        out.push_back({s.paragraphs[i], t.paragraphs[i], TranslationPair::Kind::paragraph, s.package, s.md5});
  }
  return out;
}

}  // namespace cerberus::data
