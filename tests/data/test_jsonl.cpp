// data/jsonl.hpp (and the shared read_report.hpp): JSON Lines records, bad records under both
// policies with file:line messages, the report's counts, and write-then-read round trips.
#include <algorithm>
#include <filesystem>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "cerberus/data/jsonl.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "support/temp_dir.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing_support::TempDir;
using Strings = std::vector<std::string>;

TEST_CASE("parse_jsonl reads one object per line, skipping blank lines, CRLF and a BOM") {
  const auto r = data::parse_jsonl("\xEF\xBB\xBF{\"a\": 1}\r\n\n  \t\n{\"b\": \"x\"}\n", "t.jsonl");
  REQUIRE(r.records.size() == 2);
  CHECK(r.records[0].line == 1);
  CHECK(r.records[0].value.find("a")->as_int() == 1);
  CHECK(r.records[1].line == 4);
  CHECK(r.records[1].value.find("b")->as_string() == "x");
  CHECK(r.report.source == "t.jsonl");
  CHECK(r.report.lines_read == 4);
  CHECK(r.report.records_kept == 2);
  CHECK(r.report.records_rejected == 0);
  CHECK(r.report.clean());
  // No final newline is fine for a good line; an empty text has no records.
  CHECK(data::parse_jsonl("{}").records.size() == 1);
  CHECK(data::parse_jsonl("").records.empty());
}

TEST_CASE("bad JSONL records name the file, the 1-based line and what was expected") {
  CHECK(message_of([] { data::parse_jsonl("{}\n{\"a\": 1,\n", "train.jsonl"); }) ==
        "[read_jsonl] train.jsonl:2: expected a JSON object, found invalid JSON (column 9: expected a string key, "
        "found end of input)");
  CHECK(message_of([] { data::parse_jsonl("{}\n\n[1, 2]\n", "train.jsonl"); }) ==
        "[read_jsonl] train.jsonl:3: expected a JSON object, found an array '[1, 2]'");
  CHECK(message_of([] { data::parse_jsonl_fields("{\"input\": \"a\"}\n", {"input", "target"}, "train.jsonl"); }) ==
        "[read_jsonl] train.jsonl:1: expected a JSON object with a string field \"target\", found no \"target\" member");
  CHECK(message_of([] { data::parse_jsonl_fields("{\"input\": \"a\", \"target\": 7}\n", {"input", "target"}, "train.jsonl"); }) ==
        "[read_jsonl] train.jsonl:1: expected a JSON object with a string field \"target\", found \"target\": an integer");
  // Invalid JSON in a fields read says which fields it wanted.
  CHECK(message_of([] { data::parse_jsonl_fields("nope\n", {"input", "target"}, "train.jsonl"); }) ==
        "[read_jsonl] train.jsonl:1: expected a JSON object with string fields \"input\", \"target\", found invalid "
        "JSON (column 2: expected 'null', found 'o')");
}

TEST_CASE("a truncated last line says the file may have been cut short") {
  const std::string msg = message_of([] { data::parse_jsonl("{\"a\": \"x\"}\n{\"a\": \"unfini", "cut.jsonl"); });
  CHECK(msg.find("[read_jsonl] cut.jsonl:2: expected a JSON object, found invalid JSON") == 0);
  CHECK(msg.find("the last line has no newline: was the file cut short?") != std::string::npos);
}

TEST_CASE("the skip policy counts every reject by reason, lists the first ones and keeps the rest") {
  std::string text;
  for (int i = 0; i < 30; ++i) {
    if (i % 3 == 0) text += "{\"input\": \"in" + std::to_string(i) + "\", \"target\": \"out\"}\n";  // good: 10
    else if (i % 3 == 1) text += "{\"input\": \"x\"\n";                                               // invalid JSON: 10
    else text += "{\"input\": \"x\", \"target\": null}\n";                                           // not a string: 10
  }
  text += "\"just a string\"\n";  // not an object
  const data::FieldTable t = data::parse_jsonl_fields(text, {"input", "target"}, "mixed.jsonl", data::BadRecordPolicy::skip);
  CHECK(t.fields == Strings{"input", "target"});
  REQUIRE(t.records.size() == 10);
  CHECK(t.records[0].line == 1);
  CHECK(t.records[0].values == Strings{"in0", "out"});
  CHECK(t.records[9].line == 28);
  CHECK(t.records[9].values == Strings{"in27", "out"});
  CHECK(t.index_of("target") == 1);
  CHECK(message_of([&] { (void)t.index_of("label"); }) ==
        "[FieldTable] mixed.jsonl: expected a field \"label\", found only \"input\", \"target\"");

  const data::ReadReport& r = t.report;
  CHECK(r.lines_read == 31);
  CHECK(r.records_kept == 10);
  CHECK(r.records_rejected == 21);
  CHECK_FALSE(r.clean());
  CHECK(r.rejects_by_reason == std::map<std::string, std::size_t>{
                                   {"invalid JSON", 10}, {"field \"target\" not a string", 10}, {"not a JSON object", 1}});
  REQUIRE(r.first_rejects.size() == data::ReadReport::max_listed_rejects);
  CHECK(r.first_rejects[0].find("mixed.jsonl:2: expected a JSON object with string fields") == 0);
  CHECK(r.first_rejects[1] ==
        "mixed.jsonl:3: expected a JSON object with a string field \"target\", found \"target\": null");
  const std::string summary = r.summary();
  CHECK(summary.find("mixed.jsonl: 31 lines, 10 records kept, 21 rejected (field \"target\" not a string: 10, "
                     "invalid JSON: 10, not a JSON object: 1)") == 0);
  CHECK(summary.find("... and 11 more") != std::string::npos);
}

TEST_CASE("write_jsonl escapes strings so that every value round-trips, one record per line") {
  TempDir dir;
  const Strings fields{"input", "target"};
  const std::vector<Strings> rows{
      {"line one\nline two", "tab\there"},
      {"quote \" backslash \\ slash /", "control \x01\x1f and CR\r"},
      {"UTF-8: é, 中文, 🎉", ""},
      {"", "{\"not\": \"json\"}"},
  };
  const auto path = dir / "rows.jsonl";
  data::write_jsonl(path, fields, rows);
  const std::string text = data::read_text_file(path, "test", "jsonl");
  CHECK(std::count(text.begin(), text.end(), '\n') == 4);  // newlines inside values are escaped
  CHECK(text.substr(0, text.find('\n')) == "{\"input\":\"line one\\nline two\",\"target\":\"tab\\there\"}");
  const data::FieldTable back = data::read_jsonl_fields(path, fields);
  REQUIRE(back.records.size() == rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    CHECK(back.records[i].values == rows[i]);
    CHECK(back.records[i].line == i + 1);
  }
  CHECK(back.report.source == "rows.jsonl");

  // Whole objects too; the file is replaced atomically (no temporary left behind).
  std::vector<io::Json> objects(2, io::Json::object());
  objects[0]["n"] = 1;
  objects[1]["s"] = "two";
  data::write_jsonl(path, objects);
  const auto again = data::read_jsonl(path);
  REQUIRE(again.records.size() == 2);
  CHECK(again.records[0].value == objects[0]);
  CHECK(again.records[1].value == objects[1]);
  CHECK(std::distance(std::filesystem::directory_iterator(dir.path()), std::filesystem::directory_iterator()) == 1);
}

TEST_CASE("write_jsonl refuses what it cannot write as JSON Lines") {
  TempDir dir;
  CHECK(message_of([&] { data::write_jsonl(dir / "x.jsonl", std::vector<io::Json>{io::Json(3)}); }) ==
        "[write_jsonl] record 0: expected a JSON object, found an integer");
  CHECK(message_of([&] { data::write_jsonl(dir / "x.jsonl", {"a", "b"}, {{"only one"}}); }) ==
        "[write_jsonl] row 0: expected 2 values (one per field), found 1");
  CHECK(message_of([&] { data::write_jsonl(dir / "x.jsonl", {"a"}, {{"bad \xff byte"}}); }).find("not valid UTF-8") !=
        std::string::npos);
  CHECK_FALSE(std::filesystem::exists(dir / "x.jsonl"));
}

TEST_CASE("read_jsonl names a missing file") {
  CHECK(message_of([] { data::read_jsonl("/nonexistent/train.jsonl"); }) ==
        "[read_jsonl] '/nonexistent/train.jsonl' does not exist (expected a JSON Lines file)");
}
