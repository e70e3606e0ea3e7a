// data/tsv.hpp: the header and its required columns, field counts, escapes, CRLF and a BOM, both
// bad-record policies with file:line messages, and write-then-read round trips.
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "cerberus/data/tsv.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "support/temp_dir.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing_support::TempDir;
using Strings = std::vector<std::string>;

TEST_CASE("parse_tsv reads a header and rows, with CRLF, a BOM, blank lines and escapes") {
  const data::FieldTable t = data::parse_tsv(
      "\xEF\xBB\xBFid\ttext\tlabel\r\n"
      "1\thello world\tpositive\r\n"
      "\r\n"
      "2\ttab:\\t newline:\\n cr:\\r backslash:\\\\ end\tnegative\n"
      "3\t\t\n",  // empty fields are values
      {"text", "label"}, "pairs.tsv");
  CHECK(t.fields == Strings{"id", "text", "label"});
  REQUIRE(t.records.size() == 3);
  CHECK(t.records[0].line == 2);
  CHECK(t.records[0].values == Strings{"1", "hello world", "positive"});
  CHECK(t.records[1].line == 4);
  CHECK(t.records[1].values[1] == "tab:\t newline:\n cr:\r backslash:\\ end");
  CHECK(t.records[2].values == Strings{"3", "", ""});
  CHECK(t.index_of("label") == 2);
  CHECK(t.report.lines_read == 5);
  CHECK(t.report.records_kept == 3);
  CHECK(t.report.clean());
}

TEST_CASE("a bad TSV header is an error whatever the policy") {
  const auto skip = data::BadRecordPolicy::skip;
  CHECK(message_of([&] { data::parse_tsv("", {}, "empty.tsv", skip); }) ==
        "[read_tsv] empty.tsv:1: expected a header row of tab-separated column names, found an empty file");
  CHECK(message_of([&] { data::parse_tsv("english\tgerman\nhi\thallo\n", {"english", "french"}, "pairs.tsv", skip); }) ==
        "[read_tsv] pairs.tsv:1: expected a header with the column \"french\" (required: english, french), found "
        "columns english, german");
  CHECK(message_of([&] { data::parse_tsv("a\t\tb\n", {}, "h.tsv", skip); }) ==
        "[read_tsv] h.tsv:1: expected a header row of non-empty tab-separated column names, found an empty name in "
        "'a\t\tb'");
  CHECK(message_of([&] { data::parse_tsv("a\tb\ta\n", {}, "h.tsv", skip); }) ==
        "[read_tsv] h.tsv:1: expected unique column names in the header, found \"a\" twice");
}

TEST_CASE("bad TSV records name the file, the line and what was expected") {
  CHECK(message_of([] { data::parse_tsv("english\tfrench\nhi\tsalut\na\tb\tc\n", {}, "pairs.tsv"); }) ==
        "[read_tsv] pairs.tsv:3: expected 2 tab-separated fields (english, french), found 3");
  CHECK(message_of([] { data::parse_tsv("english\tfrench\nno tab here\n", {}, "pairs.tsv"); }) ==
        "[read_tsv] pairs.tsv:2: expected 2 tab-separated fields (english, french), found 1");
  CHECK(message_of([] { data::parse_tsv("english\tfrench\nhi\tsal\\xut\n", {}, "pairs.tsv"); }) ==
        "[read_tsv] pairs.tsv:2: expected an escape (\\t, \\n, \\r or \\\\) after '\\' in field 2 (french), found '\\x'");
  CHECK(message_of([] { data::parse_tsv("english\tfrench\nhi\\\tsalut\n", {}, "pairs.tsv"); }) ==
        "[read_tsv] pairs.tsv:2: expected an escape (\\t, \\n, \\r or \\\\) after '\\' in field 1 (english), found the "
        "end of the field");
  CHECK(message_of([] { data::parse_tsv("english\tfrench\nhi\tsal\xffut\n", {}, "pairs.tsv"); }) ==
        "[read_tsv] pairs.tsv:2: expected UTF-8 text, found byte 0xFF at column 7");
}

TEST_CASE("the skip policy counts TSV rejects by reason and keeps the good rows") {
  std::string text = "english\tfrench\n";
  for (int i = 0; i < 12; ++i) text += "good" + std::to_string(i) + "\tbon\n";
  for (int i = 0; i < 7; ++i) text += "too\tmany\tfields\n";
  for (int i = 0; i < 5; ++i) text += "bad\\q\tescape\n";
  text += "last\tline without newline";
  const data::FieldTable t = data::parse_tsv(text, {"french"}, "mixed.tsv", data::BadRecordPolicy::skip);
  REQUIRE(t.records.size() == 13);
  CHECK(t.records[11].values == Strings{"good11", "bon"});
  CHECK(t.records[12].line == 26);
  CHECK(t.records[12].values == Strings{"last", "line without newline"});
  CHECK(t.report.lines_read == 26);
  CHECK(t.report.records_kept == 13);
  CHECK(t.report.records_rejected == 12);
  CHECK(t.report.rejects_by_reason == std::map<std::string, std::size_t>{{"wrong field count", 7}, {"bad escape", 5}});
  REQUIRE(t.report.first_rejects.size() == 10);
  CHECK(t.report.first_rejects[0] == "mixed.tsv:14: expected 2 tab-separated fields (english, french), found 3");
  CHECK(t.report.first_rejects[9].find("mixed.tsv:23: expected an escape") == 0);
}

TEST_CASE("write_tsv escapes what the reader unescapes: values round-trip") {
  TempDir dir;
  const Strings columns{"english", "french"};
  const std::vector<Strings> rows{
      {"tab\there", "newline\nthere"},
      {"backslash \\ and \\t literally", "cr\r and crlf\r\n"},
      {"", "UTF-8: é 中文 🎉"},
  };
  const auto path = dir / "pairs.tsv";
  data::write_tsv(path, columns, rows);
  CHECK(data::read_text_file(path, "test", "tsv") ==
        "english\tfrench\n"
        "tab\\there\tnewline\\nthere\n"
        "backslash \\\\ and \\\\t literally\tcr\\r and crlf\\r\\n\n"
        "\tUTF-8: é 中文 🎉\n");
  const data::FieldTable back = data::read_tsv(path, columns);
  CHECK(back.fields == columns);
  REQUIRE(back.records.size() == rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) CHECK(back.records[i].values == rows[i]);
  CHECK(back.report.source == "pairs.tsv");

  CHECK(message_of([&] { data::write_tsv(dir / "x.tsv", {"a\tb"}, {}); }) ==
        "[write_tsv] column 0: expected a unique non-empty name without tabs, newlines or backslashes, found 'a\tb'");
  CHECK(message_of([&] { data::write_tsv(dir / "x.tsv", {"a", "b"}, {{"1"}}); }) ==
        "[write_tsv] row 0: expected 2 values (one per column), found 1");
  CHECK(message_of([&] { data::write_tsv(dir / "x.tsv", {"a"}, {{""}}); }) ==
        "[write_tsv] row 0: a one-column table cannot hold an empty value");
  CHECK_FALSE(std::filesystem::exists(dir / "x.tsv"));
}
