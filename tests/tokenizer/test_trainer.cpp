// tokenizer/trainer.hpp: training on a corpus made only of long paragraphs (which raw SentencePiece
// drops entirely) still covers its words, and TrainingReport counts the split lines; training from
// files; BPE; byte_fallback; determinism for a fixed seed; option validation.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sentencepiece_trainer.h>

#include "cerberus/tokenizer.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "support/temp_dir.hpp"
#include "tokenizer/corpus.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing_support::TempDir;
using tokenizer::Id;

namespace {

// 40 paragraphs of 200 sentences each (about 11-12 KB a line, over twice the 4192-byte limit).
std::vector<std::string> long_paragraphs() {
  const auto sentences = testing_support::make_corpus(40 * 200, 3);
  std::vector<std::string> out;
  for (std::size_t p = 0; p < 40; ++p) {
    std::string line;
    for (std::size_t s = 0; s < 200; ++s) line += (s ? " " : "") + sentences[p * 200 + s];
    out.push_back(line);
  }
  return out;
}

// Plain SentenceIterator over strings, to show what SentencePiece does without our splitting.
class RawLines : public sentencepiece::SentenceIterator {
 public:
  explicit RawLines(const std::vector<std::string>& lines) : lines_(lines) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& lines_;
  std::size_t i_ = 0;
};

// Fraction of the corpus words that are one piece ("▁word") of the model.
double word_coverage(const tokenizer::Tokenizer& tok) {
  std::size_t whole = 0;
  for (const auto& w : testing_support::corpus_words()) whole += tok.contains("▁" + w);
  return static_cast<double>(whole) / static_cast<double>(testing_support::corpus_words().size());
}

}  // namespace

TEST_CASE("the trap is real: raw SentencePiece skips every line over 4192 bytes") {
  const auto paragraphs = long_paragraphs();
  for (const auto& p : paragraphs) REQUIRE(p.size() > 2 * 4192);
  RawLines raw(paragraphs);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--vocab_size=600 --minloglevel=2 --num_threads=2", &raw, &model);
  CHECK(!status.ok());  // nothing was left to train on
}

TEST_CASE("a corpus of long paragraphs trains: lines are split at sentences, words are covered") {
  const auto paragraphs = long_paragraphs();
  tokenizer::TrainerOptions o;
  o.vocab_size = 600;
  const auto [tok, report] = tokenizer::train(o, paragraphs);
  CHECK(report.lines_split == 40);
  CHECK(report.pieces_from_split == report.lines);
  CHECK(report.lines >= 120);  // each 8.4+ KB paragraph became at least 3 lines of <= 4192 bytes
  std::size_t bytes = 0;
  for (const auto& p : paragraphs) bytes += p.size();
  CHECK(report.bytes <= bytes);
  CHECK(report.bytes >= bytes - report.lines);  // only the spaces at the cuts are gone
  CHECK(tok.vocab_size() == 600);
  CHECK(word_coverage(tok) > 0.9);
  const std::string s = paragraphs[7].substr(0, 200);
  CHECK(tok.decode(tok.encode(s)) == s.substr(0, s.find_last_not_of(' ') + 1));
}

TEST_CASE("a smaller max_sentence_length splits more, and short lines are not counted as split") {
  std::vector<std::string> corpus = testing_support::make_corpus(2000, 4);
  const std::string paragraph = long_paragraphs()[0];
  corpus.push_back(paragraph);
  tokenizer::TrainerOptions o;
  o.vocab_size = 500;
  o.max_sentence_length = 1000;
  const auto [tok, report] = tokenizer::train(o, corpus);
  CHECK(report.lines_split == 1);
  CHECK(report.pieces_from_split >= paragraph.size() / 1000);  // pieces of <= 1000 bytes
  CHECK(report.lines == 2000 + report.pieces_from_split);
}

TEST_CASE("train_from_files reads lines of files and splits long ones too") {
  TempDir dir;
  std::string text;
  for (const auto& s : testing_support::make_corpus(1500, 6)) text += s + "\n";
  const auto a = dir.write("a.txt", text);
  std::string longs;
  for (const auto& p : long_paragraphs()) longs += p + "\r\n\n";  // CRLF and blank lines
  const auto b = dir.write("b.txt", longs);
  tokenizer::TrainerOptions o;
  o.vocab_size = 600;
  const std::vector<std::filesystem::path> files = {a, b};
  const auto [tok, report] = tokenizer::train_from_files(o, files);
  CHECK(report.lines_split == 40);
  CHECK(report.lines == 1500 + report.pieces_from_split);
  CHECK(word_coverage(tok) > 0.9);

  const std::vector<std::filesystem::path> missing = {a, dir / "nope.txt"};
  CHECK(message_of([&] { tokenizer::train_from_files(o, missing); }) ==
        "[tokenizer::train_from_files] cannot open '" + (dir / "nope.txt").string() + "' (expected a text file)");
}

TEST_CASE("BPE models train and round-trip; byte_fallback round-trips unseen characters") {
  const auto corpus = testing_support::make_corpus(3000);
  tokenizer::TrainerOptions o;
  o.vocab_size = 600;
  o.model_type = tokenizer::ModelType::bpe;
  const auto bpe = tokenizer::train(o, corpus).tokenizer;
  CHECK(bpe.vocab_size() == 600);
  CHECK(bpe.decode(bpe.encode(corpus[10])) == corpus[10]);

  o.model_type = tokenizer::ModelType::unigram;
  o.byte_fallback = true;
  const auto bytes = tokenizer::train(o, corpus).tokenizer;
  const std::string foreign = "The whale swam to 東京, naïvely.";
  const auto ids = bytes.encode(foreign);
  CHECK(std::find(ids.begin(), ids.end(), bytes.unk_id()) == ids.end());
  CHECK(bytes.decode(ids) == foreign);
  CHECK(bytes.contains("<0xE6>"));  // the byte pieces exist
}

TEST_CASE("training is deterministic for fixed options and seed") {
  const auto corpus = testing_support::make_corpus(3000, 8);
  tokenizer::TrainerOptions o;
  o.vocab_size = 500;
  o.input_sentence_size = 1500;  // sampling: uses the seeded generator
  const auto first = tokenizer::train(o, corpus).tokenizer.serialized();
  const auto second = tokenizer::train(o, corpus).tokenizer.serialized();
  CHECK(first == second);
}

TEST_CASE("invalid options and empty corpora are refused before training, naming the option") {
  const auto corpus = testing_support::make_corpus(100);
  tokenizer::TrainerOptions o;
  o.vocab_size = 100;
  o.bos_id = 0;  // same as pad
  CHECK(message_of([&] { tokenizer::train(o, corpus); }) ==
        "[tokenizer::train] pad_id and bos_id are both 0 (special ids must differ)");
  o = {};
  o.vocab_size = 100;
  o.unk_id = -1;
  CHECK(message_of([&] { tokenizer::train(o, corpus); }) ==
        "[tokenizer::train] unk_id must be >= 0 (SentencePiece requires <unk>), got -1");
  o = {};
  o.vocab_size = 3;
  CHECK(message_of([&] { tokenizer::train(o, corpus); }) == "[tokenizer::train] eos_id = 3 must be below vocab_size = 3");
  o = {};
  o.user_defined_symbols = {"<a,b>"};
  CHECK(message_of([&] { tokenizer::train(o, corpus); }) ==
        "[tokenizer::train] user_defined_symbols[0] = '<a,b>' must be non-empty and contain no ','");
  o = {};
  CHECK(message_of([&] { tokenizer::train(o, std::vector<std::string>{"", "  ", "\n"}); }) ==
        "[tokenizer::train] an in-memory corpus of 3 strings holds no text (only empty lines)");
  // SentencePiece's own refusal comes through with its message.
  o = {};
  o.vocab_size = 5000;
  const std::string too_big = message_of([&] { tokenizer::train(o, corpus); });
  CHECK(too_big.starts_with("[tokenizer::train] SentencePiece could not train a 5000-piece model on an in-memory corpus of 100 strings"));
  CHECK(too_big.find("Vocabulary size too high") != std::string::npos);
}
