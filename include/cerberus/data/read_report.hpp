// What the record readers (jsonl.hpp, tsv.hpp) share: the policy for a bad record, the report of
// what was read and rejected, and the table of string fields both can return.
//
// A bad record is never dropped silently. Under BadRecordPolicy::error the first one throws
// FileError; under BadRecordPolicy::skip it is counted in the report (per reason, and the first
// few listed) and reading goes on. Every complaint has one shape, "file:line: expected ..., found ...":
//   train.jsonl:17: expected a JSON object with a string field "target", found no "target" member
// with the line 1-based. Thrown, it is prefixed by the reader's name: "[read_jsonl] train.jsonl:17: ...".
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"

namespace cerberus::data {

enum class BadRecordPolicy {
  error,  // throw FileError at the first bad record
  skip,   // count it in the ReadReport and keep reading
};

struct ReadReport {
  static constexpr std::size_t max_listed_rejects = 10;

  std::string source;              // the file name used in messages
  std::size_t lines_read = 0;      // every line, blank ones and the header included
  std::size_t records_kept = 0;
  std::size_t records_rejected = 0;
  std::map<std::string, std::size_t> rejects_by_reason;  // short reason ("invalid JSON") -> count
  std::vector<std::string> first_rejects;                // "file:line: expected ..., found ...", at most max_listed_rejects

  bool clean() const { return records_rejected == 0; }

  // One line, e.g. "train.jsonl: 120 lines, 118 records kept, 2 rejected (invalid JSON: 1, missing field
  // \"target\": 1)"; the listed rejects follow on their own lines, indented.
  std::string summary() const {
    std::string out = source + ": " + std::to_string(lines_read) + " lines, " + std::to_string(records_kept) +
                      " records kept, " + std::to_string(records_rejected) + " rejected";
    if (!rejects_by_reason.empty()) {
      out += " (";
      bool first = true;
      for (const auto& [reason, count] : rejects_by_reason) {
        if (!first) out += ", ";
        out += reason + ": " + std::to_string(count);
        first = false;
      }
      out += ")";
    }
    for (const std::string& r : first_rejects) out += "\n  " + r;
    if (records_rejected > first_rejects.size())
      out += "\n  ... and " + std::to_string(records_rejected - first_rejects.size()) + " more";
    return out;
  }
};

// One record's string fields, in the order of the table's `fields`, and the line it came from.
struct FieldRecord {
  std::size_t line = 0;
  std::vector<std::string> values;
};

// Records of named string fields: what read_jsonl_fields and read_tsv return.
struct FieldTable {
  std::vector<std::string> fields;
  std::vector<FieldRecord> records;
  ReadReport report;

  // Position of `field` in `fields`; ValueError naming the fields there are when absent.
  std::size_t index_of(std::string_view field) const {
    for (std::size_t i = 0; i < fields.size(); ++i)
      if (fields[i] == field) return i;
    std::string have;
    for (const std::string& f : fields) have += (have.empty() ? "\"" : ", \"") + f + "\"";
    throw ValueError("[FieldTable] " + report.source + ": expected a field \"" + std::string(field) + "\", found only " +
                     (have.empty() ? std::string("no fields") : have));
  }
};

namespace read_detail {

// The text of a complaint about one line: "file:line: what".
inline std::string at_line(std::string_view source, std::size_t line, std::string_view what) {
  return std::string(source) + ":" + std::to_string(line) + ": " + std::string(what);
}

// A bad record: thrown under `error` (prefixed by "[op] "), else counted under `reason`.
inline void reject(ReadReport& report, BadRecordPolicy policy, std::string_view op, std::size_t line,
                   const std::string& reason, std::string_view what) {
  std::string message = at_line(report.source, line, what);
  if (policy == BadRecordPolicy::error) throw FileError("[" + std::string(op) + "] " + message);
  ++report.records_rejected;
  ++report.rejects_by_reason[reason];
  if (report.first_rejects.size() < ReadReport::max_listed_rejects) report.first_rejects.push_back(std::move(message));
}

// A short excerpt of a line for messages: at most 60 bytes (never cutting a UTF-8 character), quoted.
inline std::string excerpt(std::string_view s) {
  constexpr std::size_t limit = 60;
  if (s.size() <= limit) return "'" + std::string(s) + "'";
  std::size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
  return "'" + std::string(s.substr(0, cut)) + "...'";
}

// Calls fn(line, line_number, is_last_without_newline) for every line of `text`, 1-based, with a
// trailing '\r' removed (CRLF files) and a UTF-8 byte-order mark at the very start skipped. A final
// newline does not start an empty extra line.
template <class Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  std::size_t number = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    const bool unterminated = nl == std::string_view::npos;
    text = unterminated ? std::string_view{} : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    fn(line, ++number, unterminated);
  }
}

}  // namespace read_detail

}  // namespace cerberus::data
