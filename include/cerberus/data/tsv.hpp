// Tab-separated values with a header row, read with a report and written atomically.
//
//   auto table = cerberus::data::read_tsv("pairs.tsv", {"english", "french"});
//   const std::size_t en = table.index_of("english"), fr = table.index_of("french");
//   for (const auto& r : table.records) use(r.values[en], r.values[fr]);
//
// Format:
// - Lines end with '\n' or "\r\n"; a UTF-8 byte-order mark at the start is skipped.
// - The first line is the header: column names separated by single tabs, none empty, no two alike,
//   and including every required column. A bad header throws whatever the policy, since nothing
//   after it could be read.
// - Every later non-empty line is a record of exactly as many tab-separated fields as the header.
//   Empty lines are no records (so a one-column table cannot hold an empty value).
// - Escapes inside a field (the "linear TSV" convention, as in PostgreSQL's COPY text format):
//     \t  tab      \n  newline      \r  carriage return      \\  backslash
//   Any other character after a backslash, or a backslash ending the line, is a bad record; so
//   are bytes that are not valid UTF-8. write_tsv escapes exactly these four, so every string
//   round-trips.
// Bad records are handled by the BadRecordPolicy (read_report.hpp):
//   pairs.tsv:9: expected 2 tab-separated fields (english, french), found 3
//   pairs.tsv:12: expected an escape (\t, \n, \r or \\) after '\' in field 2 (french), found '\x'
#pragma once

#include <cstddef>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/data/read_report.hpp"
#include "cerberus/data/text_file.hpp"
#include "cerberus/io/file.hpp"
#include "cerberus/io/json.hpp"

namespace cerberus::data {

namespace tsv_detail {

inline std::vector<std::string_view> split_tabs(std::string_view line) {
  std::vector<std::string_view> out;
  for (;;) {
    const std::size_t tab = line.find('\t');
    out.push_back(line.substr(0, tab));
    if (tab == std::string_view::npos) return out;
    line.remove_prefix(tab + 1);
  }
}

// Unescapes one field; on a bad escape returns nullopt and sets `found` to what was there.
inline std::optional<std::string> unescape(std::string_view field, std::string& found) {
  std::string out;
  out.reserve(field.size());
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] != '\\') {
      out += field[i];
      continue;
    }
    if (i + 1 == field.size()) {
      found = "the end of the field";
      return std::nullopt;
    }
    switch (field[++i]) {
      case 't': out += '\t'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case '\\': out += '\\'; break;
      default: {
        const std::size_t n = io::detail::utf8_sequence_length(field, i);  // the whole character, if valid
        found = "'\\" + std::string(field.substr(i, n ? n : 1)) + "'";
        return std::nullopt;
      }
    }
  }
  return out;
}

// Byte offset (0-based) of the first byte that does not start a valid UTF-8 sequence, or npos.
inline std::size_t invalid_utf8_at(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = io::detail::utf8_sequence_length(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

inline std::string column_list(const std::vector<std::string>& columns) {
  std::string out;
  for (const std::string& c : columns) out += (out.empty() ? "" : ", ") + c;
  return out;
}

}  // namespace tsv_detail

// A TSV text (see the top of this file). `required_columns` must all be in the header; the table's
// `fields` are the whole header and each record's values follow it. `source` names the text in
// messages (a file name).
inline FieldTable parse_tsv(std::string_view text, const std::vector<std::string>& required_columns = {},
                            std::string_view source = "<string>", BadRecordPolicy policy = BadRecordPolicy::error) {
  FieldTable out;
  out.report.source = std::string(source);
  bool have_header = false;
  read_detail::for_each_line(text, [&](std::string_view line, std::size_t number, bool) {
    ++out.report.lines_read;
    if (!have_header) {
      auto header_error = [&](const std::string& what) {
        throw FileError("[read_tsv] " + read_detail::at_line(source, number, what));
      };
      if (tsv_detail::invalid_utf8_at(line) != std::string_view::npos)
        header_error("expected a header row of UTF-8 column names, found invalid UTF-8");
      std::unordered_set<std::string_view> seen;
      for (std::string_view name : tsv_detail::split_tabs(line)) {
        if (name.empty())
          header_error("expected a header row of non-empty tab-separated column names, found an empty name in " +
                       read_detail::excerpt(line));
        if (!seen.insert(name).second)
          header_error("expected unique column names in the header, found \"" + std::string(name) + "\" twice");
        out.fields.emplace_back(name);
      }
      for (const std::string& c : required_columns)
        if (!seen.count(c))
          header_error("expected a header with the column \"" + c + "\" (required: " +
                       tsv_detail::column_list(required_columns) + "), found columns " + tsv_detail::column_list(out.fields));
      have_header = true;
      return;
    }
    if (line.empty()) return;  // no record
    const std::vector<std::string_view> parts = tsv_detail::split_tabs(line);
    if (parts.size() != out.fields.size()) {
      read_detail::reject(out.report, policy, "read_tsv", number, "wrong field count",
                          "expected " + std::to_string(out.fields.size()) + " tab-separated fields (" +
                              tsv_detail::column_list(out.fields) + "), found " + std::to_string(parts.size()));
      return;
    }
    if (const std::size_t bad = tsv_detail::invalid_utf8_at(line); bad != std::string_view::npos) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(line[bad]));
      read_detail::reject(out.report, policy, "read_tsv", number, "invalid UTF-8",
                          "expected UTF-8 text, found byte " + std::string(hex) + " at column " + std::to_string(bad + 1));
      return;
    }
    FieldRecord record{number, {}};
    record.values.reserve(parts.size());
    for (std::size_t i = 0; i < parts.size(); ++i) {
      std::string found;
      std::optional<std::string> value = tsv_detail::unescape(parts[i], found);
      if (!value) {
        read_detail::reject(out.report, policy, "read_tsv", number, "bad escape",
                            "expected an escape (\\t, \\n, \\r or \\\\) after '\\' in field " + std::to_string(i + 1) +
                                " (" + out.fields[i] + "), found " + found);
        return;
      }
      record.values.push_back(std::move(*value));
    }
    out.records.push_back(std::move(record));
    ++out.report.records_kept;
  });
  if (!have_header)
    throw FileError("[read_tsv] " + read_detail::at_line(source, 1, "expected a header row of tab-separated column names, found an empty file"));
  return out;
}

inline FieldTable read_tsv(const std::filesystem::path& path, const std::vector<std::string>& required_columns = {},
                           BadRecordPolicy policy = BadRecordPolicy::error) {
  return parse_tsv(read_text_file(path, "read_tsv", "a tab-separated file with a header row"), required_columns,
                   path.filename().string(), policy);
}

// A field escaped as the reader expects: tab, newline, carriage return and backslash as \t \n \r \\.
inline std::string escape_tsv_field(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    switch (c) {
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\\': out += "\\\\"; break;
      default: out += c;
    }
  }
  return out;
}

// The TSV text of a header and rows (each with one value per column), every line ended by '\n'.
// Column names cannot be escaped: they must be non-empty, unique, and free of tabs, newlines and
// backslashes (ValueError otherwise); values must be valid UTF-8.
inline std::string to_tsv(const std::vector<std::string>& columns, const std::vector<std::vector<std::string>>& rows) {
  if (columns.empty()) throw ValueError("[write_tsv] expected at least one column, found none");
  std::unordered_set<std::string_view> seen;
  std::string out;
  for (std::size_t i = 0; i < columns.size(); ++i) {
    const std::string& c = columns[i];
    if (c.empty() || c.find_first_of("\t\n\r\\") != std::string::npos || !seen.insert(c).second)
      throw ValueError("[write_tsv] column " + std::to_string(i) + ": expected a unique non-empty name without tabs, " +
                       "newlines or backslashes, found " + read_detail::excerpt(c));
    out += (i ? "\t" : "") + c;
  }
  out += '\n';
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].size() != columns.size())
      throw ValueError("[write_tsv] row " + std::to_string(r) + ": expected " + std::to_string(columns.size()) +
                       " values (one per column), found " + std::to_string(rows[r].size()));
    // A one-column row with an empty value would be an empty line, which the reader skips.
    if (columns.size() == 1 && rows[r][0].empty())
      throw ValueError("[write_tsv] row " + std::to_string(r) + ": a one-column table cannot hold an empty value");
    for (std::size_t i = 0; i < rows[r].size(); ++i) {
      if (tsv_detail::invalid_utf8_at(rows[r][i]) != std::string_view::npos)
        throw ValueError("[write_tsv] row " + std::to_string(r) + ", column \"" + columns[i] + "\": expected UTF-8 text");
      if (i) out += '\t';
      out += escape_tsv_field(rows[r][i]);
    }
    out += '\n';
  }
  return out;
}

// Writes a TSV file atomically (io::AtomicFile).
inline void write_tsv(const std::filesystem::path& path, const std::vector<std::string>& columns,
                      const std::vector<std::vector<std::string>>& rows) {
  const std::string text = to_tsv(columns, rows);
  io::AtomicFile file(path.string(), "write_tsv");
  file.write(text.data(), text.size());
  file.commit();
}

}  // namespace cerberus::data
