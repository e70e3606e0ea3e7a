// JSON: exact round trips (int64 kept exact, doubles shortest-exact, UTF-8 and escapes), the
// writer's two layouts, error positions, typed access with paths, and robustness on every prefix.
#include <cmath>
#include <limits>
#include <string>

#include "cerberus/io/json.hpp"
#include "io/io_support.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using cerberus::io::Json;
using cerberus::io::JsonError;
using cerberus::io::JsonParseError;
using cerberus::io::JsonRef;
using cerberus::io::parse_json;
using cerberus::testing_support::message_of;

namespace {
// The "expected X, found Y" part of the parse error and its position.
struct Failure {
  std::size_t line = 0, column = 0;
  std::string detail, message;
};
Failure parse_failure(const std::string& text, int max_depth = 128) {
  try {
    parse_json(text, "doc.json", max_depth);
  } catch (const JsonParseError& e) {
    return {e.line(), e.column(), e.detail(), e.what()};
  }
  return {0, 0, "(parsed)", "(parsed)"};
}
}  // namespace

TEST_CASE("json: values keep their kind and exact value", "[io][json]") {
  const Json j = parse_json(R"({"i": 9223372036854775807, "n": -9223372036854775808, "big": 9223372036854775808,
                               "d": 0.1, "e": 1e-300, "neg0": -0.0, "t": true, "f": false, "z": null, "one": 1.0})");
  CHECK(j.find("i")->as_int() == std::numeric_limits<std::int64_t>::max());
  CHECK(j.find("n")->as_int() == std::numeric_limits<std::int64_t>::min());
  // One past int64 is no longer an integer: it becomes the nearest double.
  CHECK(j.find("big")->kind() == Json::Kind::number);
  CHECK(j.find("big")->as_double() == 9223372036854775808.0);
  CHECK(j.find("d")->as_double() == 0.1);
  CHECK(j.find("e")->as_double() == 1e-300);
  CHECK(std::signbit(j.find("neg0")->as_double()));
  CHECK(j.find("t")->as_bool());
  CHECK_FALSE(j.find("f")->as_bool());
  CHECK(j.find("z")->is_null());
  CHECK(j.find("one")->kind() == Json::Kind::number);  // 1.0 is not the integer 1
  CHECK(j.find("i")->as_double() == 9223372036854775807.0);  // integers read as doubles too
}

TEST_CASE("json: dump is compact or indented, in insertion order, and parses back equal", "[io][json]") {
  Json j;
  j["zeta"] = 1;
  j["alpha"] = Json::Array{Json(1.5), Json("x"), Json(), Json(true)};
  j["mid"] = Json::object();
  j["empty"] = Json::array();
  j["nested"]["k"] = -3;
  j["whole"] = 2.0;
  CHECK(j.dump() == R"({"zeta":1,"alpha":[1.5,"x",null,true],"mid":{},"empty":[],"nested":{"k":-3},"whole":2.0})");
  CHECK(j.dump(2) ==
        "{\n  \"zeta\": 1,\n  \"alpha\": [\n    1.5,\n    \"x\",\n    null,\n    true\n  ],\n  \"mid\": {},\n  \"empty\": [],\n"
        "  \"nested\": {\n    \"k\": -3\n  },\n  \"whole\": 2.0\n}");
  CHECK(parse_json(j.dump()) == j);
  CHECK(parse_json(j.dump(4)) == j);

  // Doubles print in the shortest form that reads back to the same bits.
  for (double d : {0.1, 1.0 / 3.0, 1e300, -2.5e-308, 123456789.125, 5e-324}) {
    const Json back = parse_json(Json(d).dump());
    CHECK(back.as_double() == d);
  }
  CHECK_THROWS_AS(Json(std::nan("")).dump(), JsonError);
  CHECK_THROWS_AS(Json(std::numeric_limits<double>::infinity()).dump(), JsonError);
}

TEST_CASE("json: strings decode every escape, surrogate pairs to UTF-8, and re-encode", "[io][json]") {
  const Json s = parse_json(R"("q\" b\\ s\/ \b\f\n\r\t \u00e9 \u20AC \ud83d\ude00 \u0001 raw-é")");
  CHECK(s.as_string() == "q\" b\\ s/ \b\f\n\r\t \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \x01 raw-\xC3\xA9");
  // The writer escapes only what it must (as serde_json does): quotes, backslash, controls.
  CHECK(s.dump() == "\"q\\\" b\\\\ s/ \\b\\f\\n\\r\\t \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \\u0001 raw-\xC3\xA9\"");
  CHECK(parse_json(s.dump()) == s);
  CHECK(parse_json(R"("\u0000")").as_string() == std::string(1, '\0'));
  // Strings that are not UTF-8 cannot be written (the output would not parse back).
  CHECK(message_of([] { Json("bad \xFF").dump(); }).find("not valid UTF-8") != std::string::npos);
}

TEST_CASE("json: syntax errors say line, column, what was expected and what was found", "[io][json]") {
  auto f = parse_failure("{\n  \"a\": 1,\n  \"b\" 2\n}");
  CHECK(f.message == "[json] doc.json: line 3, column 7: expected ':', found '2'");
  CHECK(f.line == 3);
  CHECK(f.column == 7);

  CHECK(parse_failure("").detail == "expected a JSON value, found end of input");
  CHECK(parse_failure("[1, 2,]").detail == "expected a JSON value, found ']'");
  CHECK(parse_failure("{\"a\": 1,}").detail == "expected a string key, found '}'");
  CHECK(parse_failure("[1 2]").detail == "expected ',' or ']', found '2'");
  CHECK(parse_failure("{\"a\" : 1 \"b\"}").detail == "expected ',' or '}', found '\"'");
  CHECK(parse_failure("01").detail == "expected end of input, found '1'");
  CHECK(parse_failure("-").detail == "expected a digit, found end of input");
  CHECK(parse_failure("1.").detail == "expected a digit, found end of input");
  CHECK(parse_failure("1e+").detail == "expected a digit, found end of input");
  CHECK(parse_failure("tru").detail == "expected 'true', found end of input");
  CHECK(parse_failure("nul!").detail == "expected 'null', found '!'");
  CHECK(parse_failure("NaN").detail == "expected a JSON value, found 'N'");
  CHECK(parse_failure("\"abc").detail == "expected '\"' closing the string, found end of input");
  CHECK(parse_failure("\"a\nb\"").detail == "expected a string character (control characters must be escaped), found byte 0x0A");
  CHECK(parse_failure("\"\\x\"").detail == "expected an escape character (one of \"\\/bfnrtu), found 'x'");
  CHECK(parse_failure("\"\\u12g4\"").detail == "expected a hex digit, found 'g'");
  CHECK(parse_failure("\"\\udc00\"").detail == "expected a high surrogate before a low one, found a lone \\udc00");
  CHECK(parse_failure("\"\\ud83d x\"").detail == "expected a \\u low surrogate after the high surrogate, found ' '");
  CHECK(parse_failure("\"\\ud83d\\u0041\"").detail == "expected a low surrogate (\\uDC00-\\uDFFF), found \\u0041");
  CHECK(parse_failure("\"\xC3\x28\"").detail == "expected valid UTF-8, found byte 0xC3");
  CHECK(parse_failure("\"\xED\xA0\x80\"").detail == "expected valid UTF-8, found byte 0xED");  // encoded surrogate
  CHECK(parse_failure("\"\xC0\xAF\"").detail == "expected valid UTF-8, found byte 0xC0");  // overlong '/'
  CHECK(parse_failure("1e999").detail == "expected a number within double range, found 1e999");
  CHECK(parse_failure("{} {}").detail == "expected end of input, found '{'");
  CHECK(parse_failure("\xEF\xBB\xBF{}").detail == "expected a JSON value, found byte 0xEF");  // no BOM

  // Duplicate keys: the error points at the second occurrence.
  f = parse_failure("{\"a\": 1,\n \"b\": 2,\n \"a\": 3}");
  CHECK(f.detail == "expected a unique key, found a second \"a\"");
  CHECK(f.line == 3);
  CHECK(f.column == 2);
}

TEST_CASE("json: nesting deeper than the limit is refused, not recursed into", "[io][json]") {
  const std::string deep(100000, '[');  // would overflow the stack of a naive recursive parser
  CHECK(parse_failure(deep).detail == "expected at most 128 nested arrays and objects, found deeper nesting");
  CHECK(parse_failure(std::string(128, '[') + std::string(128, ']')).detail == "(parsed)");
  CHECK(parse_failure(std::string(129, '[') + std::string(129, ']')).column == 129);
  CHECK(parse_failure("[[[1]]]", 2).detail == "expected at most 2 nested arrays and objects, found deeper nesting");
}

TEST_CASE("json: every proper prefix of a document is a clean parse error", "[io][json]") {
  const std::string doc = R"({"text": "caf\u00e9 \ud83d\ude00 ok", "class": [1, -2.5e3, true, null, {"k": "v"}]})";
  REQUIRE_NOTHROW(parse_json(doc));
  for (std::size_t n = 0; n < doc.size(); ++n) {
    INFO("prefix length " << n);
    CHECK_THROWS_AS(parse_json(doc.substr(0, n)), JsonParseError);
  }
}

TEST_CASE("json: typed access names the path of the value", "[io][json]") {
  const Json root = parse_json(R"({"d_model": "512", "layers": [{"heads": 8}, {"heads": 8.5}], "name": "tiny"})");
  const JsonRef config(root, "config");
  CHECK(message_of([&] { config.at("d_model").as_int(); }) == "[json] config.d_model: expected integer, found string");
  CHECK(message_of([&] { config.at("layers").at(1).at("heads").as_int(); }) == "[json] config.layers[1].heads: expected integer, found number");
  CHECK(message_of([&] { config.at("layers").at(5); }) == "[json] config.layers: expected at least 6 elements, found 2");
  CHECK(message_of([&] { config.at("dropout"); }) == "[json] config: expected a member \"dropout\", found none");
  CHECK(message_of([&] { config.at("name").at("x"); }) == "[json] config.name: expected object, found string");
  CHECK(config.at("layers").at(0).at("heads").as_int() == 8);
  CHECK(config.at("layers").at(1).at("heads").as_double() == 8.5);
  CHECK_FALSE(config.find("dropout").has_value());
  CHECK(config.keys() == std::vector<std::string>{"d_model", "layers", "name"});
  // Errors from a file are FileErrors, so one catch covers a bad config whichever way it is bad.
  CHECK_THROWS_AS(config.at("d_model").as_int(), cerberus::FileError);
}

TEST_CASE("json: a dataset of {text, class} records reads through JsonRef", "[io][json]") {
  cerberus::testing_support::TempDir dir;
  Json data = Json::array();
  for (int i = 0; i < 3; ++i) {
    Json record;
    record["text"] = "review " + std::to_string(i) + " \xE2\x9C\x93";
    record["class"] = i % 2;
    data.push_back(record);
  }
  const std::string path = dir.file("sentiment.json");
  cerberus::io::write_json_file(path, data);
  const Json back = cerberus::io::read_json_file(path);
  CHECK(back == data);
  const JsonRef rows(back, "dataset");
  REQUIRE(rows.size() == 3);
  CHECK(rows.at(2).at("text").as_string() == "review 2 \xE2\x9C\x93");
  CHECK(rows.at(1).at("class").as_int() == 1);

  cerberus::testing_support::write_bytes(path, "[{\"text\": \"a\", \"class\": 0},\n {\"text\": \"b\" \"class\": 1}]");
  CHECK(message_of([&] { cerberus::io::read_json_file(path); }) == "[json] " + path + ": line 2, column 15: expected ',' or '}', found '\"'");
  CHECK(message_of([&] { cerberus::io::read_json_file(dir.file("absent.json")); }).find("cannot open " + dir.file("absent.json")) != std::string::npos);
}
