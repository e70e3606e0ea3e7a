// data/sentiment.hpp on inline JSON: the trailing placeholder record is dropped, bad records are
// reported with file and record path, AFINN scores sum over lowercased words.
#include <string>
#include <vector>

#include "cerberus/data/sentiment.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "support/temp_dir.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing_support::TempDir;

TEST_CASE("parse_sentiment keeps labelled sentences and drops the empty placeholder") {
  const auto ex = data::parse_sentiment(
      R"([{"text":"Great for the jawbone.","class":1},{"text":"Never worked once!","class":0},{"text":"","class":null}])",
      "amazon.json");
  REQUIRE(ex.size() == 2);
  CHECK(ex[0].text == "Great for the jawbone.");
  CHECK(ex[0].label == 1);
  CHECK(ex[1].label == 0);
}

TEST_CASE("parse_sentiment errors name the file and the record") {
  CHECK(message_of([] { data::parse_sentiment(R"([{"text":"ok","class":1},{"text":"x","class":2}])", "yelp.json"); }) ==
        "[read_sentiment] yelp.json[1].class: expected 0 or 1, found 2");
  CHECK(message_of([] { data::parse_sentiment(R"([{"text":"","class":1}])", "yelp.json"); }) ==
        "[read_sentiment] yelp.json[0].text: expected a non-empty sentence");
  // A null class on a non-empty sentence is not the placeholder: the JSON reader says what it found.
  const std::string null_class = message_of([] { data::parse_sentiment(R"([{"text":"hm","class":null}])", "imdb.json"); });
  CHECK(null_class.find("imdb.json[0].class") != std::string::npos);
  const std::string missing = message_of([] { data::parse_sentiment(R"([{"class":1}])", "imdb.json"); });
  CHECK(missing.find("imdb.json[0]") != std::string::npos);
  CHECK(missing.find("text") != std::string::npos);
}

TEST_CASE("AFINN: scores sum over lowercased words, apostrophes and hyphens kept") {
  const auto lex = data::parse_afinn(R"({"good": 3, "bad": -3, "don't like": -2, "well-made": 2, "can't stand": -3})");
  CHECK(lex.size() == 5);
  CHECK(data::afinn_score("Good, GOOD, bad.", lex) == 3);
  CHECK(data::afinn_score("A well-made case!", lex) == 2);
  CHECK(data::afinn_score("Nothing to see", lex) == 0);
  TempDir dir;
  CHECK(data::read_afinn(dir.write("afinn.json", R"({"abandon": -2})")).at("abandon") == -2);
  CHECK(data::read_sentiment(dir.write("s.json", R"([{"text":"Nice.","class":1}])")).size() == 1);
}
