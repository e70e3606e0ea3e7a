// JSON Lines: one JSON object per line (https://jsonlines.org), read with a report and written
// atomically.
//
//   auto table = cerberus::data::read_jsonl_fields("train.jsonl", {"input", "target"},
//                                                  cerberus::data::BadRecordPolicy::skip);
//   for (const auto& r : table.records) use(r.values[0], r.values[1]);
//   if (!table.report.clean()) log(table.report.summary());
//
// Rules: lines are split on '\n' (a trailing '\r' is dropped, so CRLF files read too; a UTF-8
// byte-order mark at the start is skipped); blank lines (only spaces or tabs) are no records; every
// other line must be one JSON object (io::parse_json: strict RFC 8259, valid UTF-8, no duplicate
// keys). Anything else is a bad record, handled by the BadRecordPolicy (read_report.hpp):
//   train.jsonl:17: expected a JSON object, found invalid JSON (column 9: expected ',' or '}', found end of input)
//   train.jsonl:18: expected a JSON object with a string field "target", found no "target" member
// The writer puts each object compact on one line: JSON escapes every control character, so a
// newline or tab inside a string never breaks a line, and the file ends with a newline (a last line
// without one is reported as possibly cut short).
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/data/read_report.hpp"
#include "cerberus/data/text_file.hpp"
#include "cerberus/io/file.hpp"
#include "cerberus/io/json.hpp"

namespace cerberus::data {

// One object and the (1-based) line it was on.
struct JsonlRecord {
  std::size_t line = 0;
  io::Json value;  // always an object
};

struct JsonlRecords {
  std::vector<JsonlRecord> records;
  ReadReport report;
};

namespace jsonl_detail {

inline const char* a_kind(io::Json::Kind k) {
  switch (k) {
    case io::Json::Kind::null: return "null";
    case io::Json::Kind::boolean: return "a boolean";
    case io::Json::Kind::integer: return "an integer";
    case io::Json::Kind::number: return "a number";
    case io::Json::Kind::string: return "a string";
    case io::Json::Kind::array: return "an array";
    case io::Json::Kind::object: return "an object";
  }
  return "a value";
}

// A bad record's reason for the report's counts and its full "expected ..., found ..." text.
struct Complaint {
  std::string reason;
  std::string what;
};

// The shared loop. `check(object)` returns a complaint for an object the caller cannot use, and
// `keep(line, object)` takes the good ones.
template <class Check, class Keep>
ReadReport parse_lines(std::string_view text, std::string_view source, BadRecordPolicy policy, std::string_view op,
                       const std::string& expectation, Check&& check, Keep&& keep) {
  ReadReport report;
  report.source = std::string(source);
  read_detail::for_each_line(text, [&](std::string_view line, std::size_t number, bool unterminated) {
    ++report.lines_read;
    if (line.find_first_not_of(" \t") == std::string_view::npos) return;  // blank: no record
    std::optional<io::Json> value;
    try {
      value = io::parse_json(line, source);
    } catch (const io::JsonParseError& e) {
      std::string what = "expected " + expectation + ", found invalid JSON (column " + std::to_string(e.column()) +
                         ": " + e.detail() + ")";
      if (unterminated) what += "; the last line has no newline: was the file cut short?";
      read_detail::reject(report, policy, op, number, "invalid JSON", what);
      return;
    }
    if (!value->is_object()) {
      read_detail::reject(report, policy, op, number, "not a JSON object",
                          "expected " + expectation + ", found " + a_kind(value->kind()) + " " +
                              read_detail::excerpt(line));
      return;
    }
    if (std::optional<Complaint> bad = check(*value)) {
      read_detail::reject(report, policy, op, number, bad->reason, bad->what);
      return;
    }
    keep(number, std::move(*value));
    ++report.records_kept;
  });
  return report;
}

inline std::string object_with_fields(const std::vector<std::string>& fields) {
  if (fields.empty()) return "a JSON object";
  std::string out = "a JSON object with string fields ";
  for (std::size_t i = 0; i < fields.size(); ++i) out += (i ? ", \"" : "\"") + fields[i] + "\"";
  return out;
}

}  // namespace jsonl_detail

// Every object of a JSON Lines text. `source` names it in messages (a file name).
inline JsonlRecords parse_jsonl(std::string_view text, std::string_view source = "<string>",
                                BadRecordPolicy policy = BadRecordPolicy::error) {
  JsonlRecords out;
  out.report = jsonl_detail::parse_lines(
      text, source, policy, "read_jsonl", "a JSON object",
      [](const io::Json&) { return std::optional<jsonl_detail::Complaint>{}; },
      [&](std::size_t line, io::Json value) { out.records.push_back({line, std::move(value)}); });
  return out;
}

inline JsonlRecords read_jsonl(const std::filesystem::path& path, BadRecordPolicy policy = BadRecordPolicy::error) {
  return parse_jsonl(read_text_file(path, "read_jsonl", "a JSON Lines file"), path.filename().string(), policy);
}

// Records that must hold every one of `fields` as a string (other members are ignored); values
// come in the order of `fields`. A record lacking one, or holding it as another kind, is a bad
// record: "expected a JSON object with a string field "target", found no "target" member" (reason
// `missing field "target"`) or "... found "target": an integer" (reason `field "target" not a string`).
inline FieldTable parse_jsonl_fields(std::string_view text, const std::vector<std::string>& fields,
                                     std::string_view source = "<string>", BadRecordPolicy policy = BadRecordPolicy::error) {
  FieldTable out;
  out.fields = fields;
  auto check = [&](const io::Json& object) -> std::optional<jsonl_detail::Complaint> {
    for (const std::string& f : fields) {
      const io::Json* v = object.find(f);
      const std::string expected = "expected a JSON object with a string field \"" + f + "\", found ";
      if (!v) return jsonl_detail::Complaint{"missing field \"" + f + "\"", expected + "no \"" + f + "\" member"};
      if (v->kind() != io::Json::Kind::string)
        return jsonl_detail::Complaint{"field \"" + f + "\" not a string",
                                       expected + "\"" + f + "\": " + jsonl_detail::a_kind(v->kind())};
    }
    return std::nullopt;
  };
  auto keep = [&](std::size_t line, const io::Json& object) {
    FieldRecord r{line, {}};
    r.values.reserve(fields.size());
    for (const std::string& f : fields) r.values.push_back(object.find(f)->as_string());  // checked: a string
    out.records.push_back(std::move(r));
  };
  out.report = jsonl_detail::parse_lines(text, source, policy, "read_jsonl", jsonl_detail::object_with_fields(fields),
                                         check, keep);
  return out;
}

inline FieldTable read_jsonl_fields(const std::filesystem::path& path, const std::vector<std::string>& fields,
                                    BadRecordPolicy policy = BadRecordPolicy::error) {
  return parse_jsonl_fields(read_text_file(path, "read_jsonl", "a JSON Lines file"), fields, path.filename().string(),
                            policy);
}

// The JSON Lines text of `records` (each must be an object): one compact object per line, each
// line ended by '\n'. Strings must be valid UTF-8 (io::JsonError otherwise).
inline std::string to_jsonl(const std::vector<io::Json>& records) {
  std::string out;
  for (std::size_t i = 0; i < records.size(); ++i) {
    if (!records[i].is_object())
      throw ValueError("[write_jsonl] record " + std::to_string(i) + ": expected a JSON object, found " +
                       jsonl_detail::a_kind(records[i].kind()));
    out += records[i].dump();
    out += '\n';
  }
  return out;
}

// Records of string fields: row i becomes {"fields[0]": rows[i][0], ...}. Every row needs one value per field.
inline std::string to_jsonl(const std::vector<std::string>& fields, const std::vector<std::vector<std::string>>& rows) {
  std::string out;
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].size() != fields.size())
      throw ValueError("[write_jsonl] row " + std::to_string(i) + ": expected " + std::to_string(fields.size()) +
                       " values (one per field), found " + std::to_string(rows[i].size()));
    io::Json object = io::Json::object();
    for (std::size_t f = 0; f < fields.size(); ++f) object[fields[f]] = rows[i][f];
    out += object.dump();
    out += '\n';
  }
  return out;
}

// Writes JSON Lines text atomically (io::AtomicFile): readers see the old file or the whole new one.
inline void write_jsonl_text(const std::filesystem::path& path, std::string_view jsonl_text) {
  io::AtomicFile file(path.string(), "write_jsonl");
  file.write(jsonl_text.data(), jsonl_text.size());
  file.commit();
}

inline void write_jsonl(const std::filesystem::path& path, const std::vector<io::Json>& records) {
  write_jsonl_text(path, to_jsonl(records));
}

inline void write_jsonl(const std::filesystem::path& path, const std::vector<std::string>& fields,
                        const std::vector<std::vector<std::string>>& rows) {
  write_jsonl_text(path, to_jsonl(fields, rows));
}

}  // namespace cerberus::data
