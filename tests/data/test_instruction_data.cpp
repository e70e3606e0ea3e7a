// data/splits.hpp and data/instruction_data.hpp on small inline DDTP and sentiment fixtures (the
// fetched data/ is never needed): the three tasks' examples and filters, the hash split (pinned,
// deterministic, disjoint by key, shared by both DDTP tasks, caps), DDTP pre-training text of train
// packages only, and the JSONL cache: written, fresh or stale, read back identical, and clear
// errors for cut or malformed files.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cerberus/data/instruction_data.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "support/temp_dir.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing_support::TempDir;
using data::Split;
using data::TextExample;
using Strings = std::vector<std::string>;

namespace {

std::string md5_of(int i) {
  char buf[40];
  const auto u = static_cast<unsigned>(i);
  std::snprintf(buf, sizeof buf, "%08x%08x%08x%08x", u * 2654435761u, u + 1u, u * 40503u, 0xabcdefu ^ u);
  return buf;
}

// n packages in Translation-en and Translation-fr layout: a short description and two paragraphs,
// the first of two sentences, so that each package gives 1 short + 2 sentence + 1 paragraph pairs.
std::string ddtp_text(int n, const char* language) {
  const bool en = std::string(language) == "en";
  std::string s;
  for (int i = 0; i < n; ++i) {
    s += "Package: pkg" + std::to_string(i) + "\nDescription-md5: " + md5_of(i) + "\nDescription-" + language + ": ";
    s += en ? "tool number " + std::to_string(i) + "\n" : "outil numéro " + std::to_string(i) + "\n";
    s += en ? " Package " + std::to_string(i) + " does things. It does them well.\n .\n This package contains tool " +
                  std::to_string(i) + ".\n"
            : " Le paquet " + std::to_string(i) + " fait des choses. Il les fait bien.\n .\n Ce paquet contient l'outil " +
                  std::to_string(i) + ".\n";
    s += "\n";
  }
  return s;
}

std::string sentiment_json(int first, int n) {
  std::string s = "[";
  for (int i = first; i < first + n; ++i)
    s += "{\"text\": \"review " + std::to_string(i) + " was " + (i % 2 ? "great" : "bad") + "\", \"class\": " +
         (i % 2 ? "1" : "0") + "},\n";
  return s + "{\"text\": \"\", \"class\": null}]";
}

// A data/ folder laid out as scripts/fetch-data.sh leaves it.
void write_data_dir(const TempDir& dir, int packages = 200) {
  std::filesystem::create_directories(dir / "data/ddtp");
  std::filesystem::create_directories(dir / "data/sentiment");
  dir.write("data/ddtp/Translation-en", ddtp_text(packages, "en"));
  dir.write("data/ddtp/Translation-fr", ddtp_text(packages, "fr"));
  dir.write("data/sentiment/amazon.json", sentiment_json(0, 100));
  dir.write("data/sentiment/yelp.json", sentiment_json(100, 100));
  dir.write("data/sentiment/imdb.json", sentiment_json(200, 100));
}

std::set<std::string> keys_of(const std::vector<TextExample>& v) {
  std::set<std::string> out;
  for (const auto& e : v) out.insert(e.key);
  return out;
}

const data::SplitOptions wide{0.2, 0.2};  // big splits, so small fixtures fill all three

}  // namespace

TEST_CASE("the split rule is pinned: FNV-1a 64 and the positions of known keys") {
  CHECK(data::fnv1a64("") == 0xcbf29ce484222325ull);
  CHECK(data::fnv1a64("a") == 0xaf63dc4c8601ec8cull);
  CHECK(data::split_position("d943033bedada21853d2ae54a2578a7b", 0) == Approx(0.226069).margin(1e-6));
  CHECK(data::split_position("great phone", 0) == Approx(0.765341).margin(1e-6));
  const data::SplitOptions third{0.3, 0.3};
  CHECK(data::split_of("a", third) == Split::test);        // 0.0108
  CHECK(data::split_of("c", third) == Split::validation);  // 0.4825
  CHECK(data::split_of("e", third) == Split::train);       // 0.6867
  CHECK(data::split_position("a", 1) != data::split_position("a", 0));  // the seed changes it
  CHECK(message_of([] { data::SplitOptions{0.6, 0.5}.check(); }) ==
        "[SplitOptions] expected fractions >= 0 with validation + test < 1, found validation 0.600000, test 0.500000");
}

TEST_CASE("split_by_key: deterministic, order-independent, disjoint by key, close to the fractions") {
  std::vector<TextExample> examples;
  for (int i = 0; i < 4000; ++i) examples.push_back({"in" + std::to_string(i), "out", "key" + std::to_string(i / 2)});
  const data::TaskSplits a = data::split_task("t", examples);
  std::vector<TextExample> reversed(examples.rbegin(), examples.rend());
  const data::TaskSplits b = data::split_task("t", reversed);
  CHECK(keys_of(a.train) == keys_of(b.train));
  CHECK(keys_of(a.validation) == keys_of(b.validation));
  CHECK(keys_of(a.test) == keys_of(b.test));
  CHECK(a.validation.size() == b.validation.size());
  CHECK(a.train.size() + a.validation.size() + a.test.size() == 4000);
  // 5 % each of 2000 keys: within a few standard deviations (about 10 keys).
  CHECK(a.validation.size() > 2 * 60);
  CHECK(a.validation.size() < 2 * 140);
  CHECK(a.test.size() > 2 * 60);
  CHECK(a.test.size() < 2 * 140);
  std::vector<std::string> common;
  const auto tr = keys_of(a.train), va = keys_of(a.validation), te = keys_of(a.test);
  std::set_intersection(tr.begin(), tr.end(), va.begin(), va.end(), std::back_inserter(common));
  std::set_intersection(tr.begin(), tr.end(), te.begin(), te.end(), std::back_inserter(common));
  std::set_intersection(va.begin(), va.end(), te.begin(), te.end(), std::back_inserter(common));
  CHECK(common.empty());
  // Validation and test come ordered by position (a prefix is a fair sample); train in input order.
  for (std::size_t i = 1; i < a.validation.size(); ++i)
    CHECK(data::split_position(a.validation[i - 1].key, 0) <= data::split_position(a.validation[i].key, 0));
  CHECK(std::is_sorted(a.train.begin(), a.train.end(), [](const TextExample& x, const TextExample& y) {
    return std::stoi(x.input.substr(2)) < std::stoi(y.input.substr(2));
  }));
}

TEST_CASE("caps drop whole keys beyond the limit, never moving them to train") {
  std::vector<TextExample> examples;
  for (int i = 0; i < 3000; ++i) examples.push_back({"in", "out", "key" + std::to_string(i / 3)});  // 3 per key
  data::SplitOptions capped;
  capped.max_validation_examples = 10;  // 3 whole keys fit: 9 examples
  capped.max_test_examples = 0;
  std::size_t dropped = 0;
  const data::TaskSplits s = data::split_task("t", examples, capped, &dropped);
  const data::TaskSplits full = data::split_task("t", examples);
  CHECK(s.validation.size() == 9);
  CHECK(s.test.empty());
  CHECK(s.train.size() == full.train.size());  // nothing moved into train
  CHECK(dropped == full.validation.size() - 9 + full.test.size());
  // The kept keys are the first ones of the uncapped validation.
  CHECK(std::equal(s.validation.begin(), s.validation.end(), full.validation.begin()));
}

TEST_CASE("translation_examples: sentence pairs, the English word limit, empty sides and duplicates") {
  const auto en = data::parse_ddtp(
      "Package: a\nDescription-md5: " + md5_of(1) + "\nDescription-en: a tool\n"
      " One two three. Four five six seven.\n .\n This is a much longer paragraph of well over six words.\n\n"
      "Package: b\nDescription-md5: " + md5_of(2) + "\nDescription-en: a tool\n"
      " Mismatched. Sentence counts.\n\n"
      "Package: c\nDescription-md5: " + md5_of(3) + "\nDescription-en: c tool\n 3.\n .\n Auto Nice Daemon\n\n");
  const auto fr = data::parse_ddtp(
      "Package: a\nDescription-md5: " + md5_of(1) + "\nDescription-fr: un outil\n"
      " Un deux trois. Quatre cinq six sept.\n .\n Ceci est un paragraphe bien plus long.\n\n"
      "Package: b\nDescription-md5: " + md5_of(2) + "\nDescription-fr: un outil\n"
      " Une seule phrase ici.\n\n"
      "Package: c\nDescription-md5: " + md5_of(3) + "\nDescription-fr: outil c\n 3.\n .\n Auto Nice Daemon\n\n");
  data::FilterCounts filtered;
  const auto ex = data::translation_examples(en, fr, {.max_source_words = 6}, &filtered);
  REQUIRE(ex.size() == 5);
  CHECK(ex[0] == TextExample{"a tool", "un outil", md5_of(1)});
  CHECK(ex[1] == TextExample{"One two three.", "Un deux trois.", md5_of(1)});
  CHECK(ex[2] == TextExample{"Four five six seven.", "Quatre cinq six sept.", md5_of(1)});
  // Package b: its short pair repeats a's (a duplicate); its paragraph has 2 vs 1 sentences, so it stays whole.
  CHECK(ex[3] == TextExample{"Mismatched. Sentence counts.", "Une seule phrase ici.", md5_of(2)});
  // Package c: a list number (no letters) and an untranslated paragraph are left out.
  CHECK(ex[4] == TextExample{"c tool", "outil c", md5_of(3)});
  CHECK(filtered == data::FilterCounts{{"duplicate", 1}, {"no letters", 1}, {"source over 6 words", 1}, {"untranslated", 1}});
  for (const auto& e : ex) CHECK(data::count_words(e.input) <= 6);

  // Without sentence pairs the first paragraph stays whole (7 words: over the limit).
  const auto whole = data::translation_examples(en, fr, {.max_source_words = 6, .sentence_pairs = false});
  CHECK(whole.size() == 3);
}

TEST_CASE("summarization_examples: leading sentences within the word budget -> the short description") {
  const auto en = data::parse_ddtp(
      "Package: a\nDescription-md5: " + md5_of(1) + "\nDescription-en: short one\n"
      " One two three. Four five six.\n .\n Seven eight nine ten.\n\n"
      "Package: b\nDescription-md5: " + md5_of(2) + "\nDescription-en: no long text\n\n"
      "Package: c\nDescription-md5: " + md5_of(3) + "\nDescription-en: long first sentence\n"
      " a b c d e f g h i j.\n\n"
      "Package: a-copy\nDescription-md5: " + md5_of(1) + "\nDescription-en: short one\n One two three.\n\n");
  data::FilterCounts filtered;
  const auto ex = data::summarization_examples(en, {.max_input_words = 7}, &filtered);
  REQUIRE(ex.size() == 2);
  CHECK(ex[0] == TextExample{"One two three. Four five six.", "short one", md5_of(1)});  // 6 words; 10 would not fit
  CHECK(ex[1] == TextExample{"a b c d e f g", "long first sentence", md5_of(3)});   // cut inside the first sentence
  CHECK(filtered == data::FilterCounts{{"duplicate md5", 1}, {"no long description", 1}});
  CHECK(data::summarization_examples(en, {.max_input_words = 10})[0].input == "One two three. Four five six. Seven eight nine ten.");
}

TEST_CASE("sentiment_examples: positive / negative targets, duplicates and conflicting labels") {
  const std::vector<data::SentimentExample> s{
      {"Great phone.", 1}, {"Awful.", 0}, {"Great phone.", 1}, {"It is fine.", 1}, {"It is fine.", 0}};
  data::FilterCounts filtered;
  const auto ex = data::sentiment_examples(s, &filtered);
  REQUIRE(ex.size() == 2);
  CHECK(ex[0] == TextExample{"Great phone.", "positive", "Great phone."});
  CHECK(ex[1] == TextExample{"Awful.", "negative", "Awful."});
  CHECK(filtered == data::FilterCounts{{"conflicting labels", 2}, {"duplicate", 1}});
}

TEST_CASE("a package lands in the same split in translate and summarize, and pre-training sees train only") {
  const auto en = data::parse_ddtp(ddtp_text(300, "en"), "Translation-en");
  const auto fr = data::parse_ddtp(ddtp_text(300, "fr"), "Translation-fr");
  const auto translate = data::split_task("translate", data::translation_examples(en, fr), wide);
  const auto summarize = data::split_task("summarize", data::summarization_examples(en), wide);
  for (const Split s : {Split::train, Split::validation, Split::test}) {
    CHECK_FALSE(translate.split(s).empty());
    CHECK(keys_of(translate.split(s)) == keys_of(summarize.split(s)));
  }
  const auto docs = data::ddtp_pretraining_documents(en, wide);
  std::set<std::string> doc_packages;
  for (const auto& d : docs) doc_packages.insert(d.name);
  CHECK(docs.size() == keys_of(translate.train).size());
  for (const auto& d : en) CHECK(doc_packages.count(d.package + ".en") == (data::split_of(d.md5, wide) == Split::train));
  CHECK(docs[0].paragraphs.size() == 3);  // short + two paragraphs
}

TEST_CASE("prepare_instruction_data writes the cache once and reads back identical records") {
  TempDir dir;
  write_data_dir(dir);
  data::InstructionDataOptions options;
  options.split = wide;
  const data::PreparationReport first = data::prepare_instruction_data(dir / "data", dir / "instruct", options);
  REQUIRE(first.tasks.size() == 3);
  CHECK(first.tasks[0].name == "translate");
  CHECK(first.tasks[1].name == "summarize");
  CHECK(first.tasks[2].name == "sentiment");
  for (const auto& t : first.tasks) {
    CHECK(t.rebuilt);
    CHECK(t.validation > 0);
    CHECK(t.test > 0);
    for (const char* f : {"train.jsonl", "validation.jsonl", "test.jsonl", "manifest.json"})
      CHECK(std::filesystem::exists(dir / "instruct" / t.name / f));
  }
  // 4 pairs per package, but "It does them well." -> "Il les fait bien." is the same in all: kept once.
  CHECK(first.tasks[0].train + first.tasks[0].validation + first.tasks[0].test == 200 * 3 + 1);
  CHECK(first.tasks[2].train + first.tasks[2].validation + first.tasks[2].test == 300);

  // Read back: identical to building in memory.
  const auto en = data::parse_ddtp(ddtp_text(200, "en"));
  const auto fr = data::parse_ddtp(ddtp_text(200, "fr"));
  const data::TaskSplits expected = data::split_task("translate", data::translation_examples(en, fr), wide);
  const data::LoadedTask loaded = data::read_prepared_task(dir / "instruct", "translate");
  CHECK(loaded.splits.name == "translate");
  CHECK(loaded.splits.train == expected.train);
  CHECK(loaded.splits.validation == expected.validation);
  CHECK(loaded.splits.test == expected.test);
  REQUIRE(loaded.reports.size() == 3);
  CHECK(loaded.reports[0].source == "train.jsonl");
  CHECK(loaded.reports[0].records_kept == expected.train.size());
  CHECK(loaded.reports[1].clean());
  const auto sentiment = data::read_prepared_task(dir / "instruct", "sentiment");
  CHECK(sentiment.splits.train[0].target == (sentiment.splits.train[0].input.ends_with("great") ? "positive" : "negative"));

  // Fresh: nothing rebuilt, same counts.
  const auto second = data::prepare_instruction_data(dir / "data", dir / "instruct", options);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK_FALSE(second.tasks[i].rebuilt);
    CHECK(second.tasks[i].train == first.tasks[i].train);
    CHECK(second.tasks[i].filtered == first.tasks[i].filtered);
  }
  // Other options rebuild the tasks they concern; a changed source rebuilds its tasks.
  data::InstructionDataOptions shorter = options;
  shorter.summarization.max_input_words = 3;
  const auto third = data::prepare_instruction_data(dir / "data", dir / "instruct", shorter);
  CHECK_FALSE(third.tasks[0].rebuilt);
  CHECK(third.tasks[1].rebuilt);
  CHECK_FALSE(third.tasks[2].rebuilt);
  dir.write("data/sentiment/imdb.json", sentiment_json(200, 50));
  const auto fourth = data::prepare_instruction_data(dir / "data", dir / "instruct", shorter);
  CHECK(fourth.tasks[2].rebuilt);
  CHECK(fourth.tasks[2].train + fourth.tasks[2].validation + fourth.tasks[2].test == 250);
  // A damaged split file makes the task stale: it is rebuilt.
  dir.write("instruct/translate/test.jsonl", "{}\n");
  CHECK(data::prepare_instruction_data(dir / "data", dir / "instruct", shorter).tasks[0].rebuilt);
}

TEST_CASE("a cut or malformed prepared file gives a clear error") {
  TempDir dir;
  write_data_dir(dir, 60);
  data::InstructionDataOptions options;
  options.split = wide;
  data::prepare_instruction_data(dir / "data", dir / "instruct", options);
  const auto path = dir / "instruct" / "summarize" / "train.jsonl";
  const std::string text = data::read_text_file(path, "test", "jsonl");

  // Cut in the middle of the third line.
  const std::size_t third = text.find('\n', text.find('\n') + 1) + 1;
  dir.write("instruct/summarize/train.jsonl", text.substr(0, third + 10));
  const std::string cut = message_of([&] { data::read_prepared_task(dir / "instruct", "summarize"); });
  CHECK(cut.find("[read_jsonl] train.jsonl:3: expected a JSON object with string fields \"input\", \"target\", \"key\", "
                 "found invalid JSON") == 0);
  CHECK(cut.find("was the file cut short?") != std::string::npos);

  // Cut at a line end: every line parses, but the manifest's count is not met.
  dir.write("instruct/summarize/train.jsonl", text.substr(0, third));
  const std::string short_file = message_of([&] { data::read_prepared_task(dir / "instruct", "summarize"); });
  CHECK(short_file.find("[read_prepared_task] train.jsonl: expected ") == 0);
  CHECK(short_file.find(" records (manifest.json), found 2 (was the file cut short?)") != std::string::npos);
  // Under skip, the missing records are counted as rejects, not silently dropped.
  const auto skipped = data::read_prepared_task(dir / "instruct", "summarize", data::BadRecordPolicy::skip);
  CHECK(skipped.splits.train.size() == 2);
  CHECK(skipped.reports[0].records_rejected == skipped.reports[0].rejects_by_reason.at("missing records"));
  CHECK(skipped.reports[0].records_rejected > 0);

  // A record without its key.
  dir.write("instruct/summarize/train.jsonl", "{\"input\": \"x\", \"target\": \"y\", \"key\": \"k\"}\n{\"input\": \"x\", \"target\": \"y\"}\n");
  CHECK(message_of([&] { data::read_prepared_task(dir / "instruct", "summarize"); }) ==
        "[read_jsonl] train.jsonl:2: expected a JSON object with a string field \"key\", found no \"key\" member");

  // Never prepared; a source that was never fetched.
  CHECK(message_of([&] { data::read_prepared_task(dir / "instruct", "nope"); }).find("does not exist (expected a prepared task \"nope\"; run prepare_instruction_data first)") != std::string::npos);
  std::filesystem::remove(dir / "data/sentiment/yelp.json");
  CHECK(message_of([&] { data::prepare_instruction_data(dir / "data", dir / "instruct"); }).find("sentiment/yelp.json' is missing (expected the sentiment task's source; scripts/fetch-data.sh downloads it)") != std::string::npos);
}
