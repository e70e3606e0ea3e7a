// Training a SentencePiece model from memory or from text files, with no text silently lost.
//
//   cerberus::tokenizer::TrainerOptions options{.vocab_size = 1000, .user_defined_symbols = {"<sep>"}};
//   auto [tok, report] = cerberus::tokenizer::train(options, lines);
//
// The trap this guards against: SentencePiece's trainer skips every input line longer than
// max_sentence_length bytes (4192 by default) without an error; a corpus of long paragraphs (each
// State of the Union address is one line) would vanish from training. Here every line is fed
// through data::chunk_text first: a long line is split at sentence ends, then at whitespace (then,
// for a single huge word, at a UTF-8 boundary), and TrainingReport counts what was split.
//
// Training runs in memory (a sentencepiece::SentenceIterator subclass): SentencePiece never reads
// the files itself, so its line-length filter never applies to raw lines. Needs libsentencepiece_train,
// which the cerberus::tokenizer target links.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sentencepiece_trainer.h>

#include "cerberus/core/error.hpp"
#include "cerberus/data/sentences.hpp"
#include "cerberus/tokenizer/tokenizer.hpp"

namespace cerberus::tokenizer {

enum class ModelType { unigram, bpe };

struct TrainerOptions {
  int vocab_size = 8000;
  ModelType model_type = ModelType::unigram;
  // Fraction of characters the model must cover; rarer characters become <unk> (or bytes, with
  // byte_fallback). 1.0 suits small alphabets; SentencePiece suggests 0.9995 for CJK-rich text.
  double character_coverage = 1.0;
  // Special ids. Pad at 0 lets a zero-filled batch mean "all padding"; -1 disables pad, bos or
  // eos (unk is required). Ids must be distinct and below vocab_size.
  int pad_id = 0;
  int unk_id = 1;
  int bos_id = 2;
  int eos_id = 3;
  // Pieces that are never split and always get their own id: task markers, separators.
  // They may not contain ',' (SentencePiece's list separator) and may not be empty.
  std::vector<std::string> user_defined_symbols;
  // 0: train on every line; otherwise SentencePiece samples this many lines (randomly when
  // shuffle_input_sentence, else the first ones).
  std::int64_t input_sentence_size = 0;
  bool shuffle_input_sentence = true;
  int num_threads = 2;
  // Seed of SentencePiece's random generator (a process-wide setting it offers, set just before
  // training): same corpus + options + seed gives the same model.
  std::uint32_t seed = 0x5eed;
  // Longest line SentencePiece accepts, in bytes; longer input lines are split (see above).
  std::size_t max_sentence_length = 4192;
  // Characters outside the vocabulary become UTF-8 byte pieces (<0x41>) instead of <unk>, so any
  // text round-trips. Costs 256 vocabulary entries.
  bool byte_fallback = false;
  // SentencePiece adds a space before the text, so "Hello" at the start of a text and inside one
  // encode alike. See tokenizer.hpp for what it means for user-defined symbols.
  bool add_dummy_prefix = true;
  // When false, SentencePiece may return a smaller vocabulary than asked if the corpus is too small,
  // instead of failing.
  bool hard_vocab_limit = true;
  // "nmt_nfkc" (default: NFKC plus whitespace clean-up), "nfkc", "identity", ...
  std::string normalization_rule_name = "nmt_nfkc";
  bool verbose = false;  // SentencePiece's progress log on stderr (a process-wide level)
};

struct TrainingReport {
  std::size_t lines = 0;         // lines given to the trainer (after splitting; empty lines skipped)
  std::size_t bytes = 0;         // bytes in those lines
  std::size_t lines_split = 0;   // input lines longer than max_sentence_length that were split
  std::size_t pieces_from_split = 0;  // the lines those became
};

struct Trained {
  Tokenizer tokenizer;
  TrainingReport report;
};

namespace train_detail {

// Feeds lines from `next_line` to SentencePiece, splitting each on '\n' and chunking long ones.
class SplittingIterator final : public sentencepiece::SentenceIterator {
 public:
  SplittingIterator(std::function<bool(std::string&)> next_line, std::size_t max_bytes, TrainingReport& report)
      : next_line_(std::move(next_line)), max_bytes_(max_bytes), report_(report) {
    fill();
  }
  bool done() const override { return pending_.empty(); }
  void Next() override {
    pending_.pop_front();
    fill();
  }
  const std::string& value() const override { return pending_.front(); }
  sentencepiece::util::Status status() const override {
    if (!error_) return {};
    return {sentencepiece::util::StatusCode::kInternal, "reading the corpus failed"};
  }
  // A read error seen while SentencePiece iterated: rethrown by train() once Train() has returned,
  // rather than thrown through SentencePiece's code.
  const std::exception_ptr& error() const { return error_; }

 private:
  void fill() {
    try {
      std::string line;
      while (pending_.empty() && next_line_(line)) {
        std::string_view rest = line;
        while (!rest.empty()) {  // a line may hold several text lines
          const std::size_t nl = rest.find('\n');
          push(rest.substr(0, nl));
          rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
        }
      }
    } catch (...) {
      error_ = std::current_exception();
      pending_.clear();  // done(): SentencePiece stops and asks status()
    }
  }
  void push(std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (data::text_detail::trim(line).empty()) return;
    if (line.size() <= max_bytes_) {
      add(std::string(line));
      return;
    }
    ++report_.lines_split;
    for (std::string& piece : data::chunk_text(line, max_bytes_)) {
      ++report_.pieces_from_split;
      add(std::move(piece));
    }
  }
  void add(std::string line) {
    ++report_.lines;
    report_.bytes += line.size();
    pending_.push_back(std::move(line));
  }

  std::function<bool(std::string&)> next_line_;
  std::size_t max_bytes_;
  TrainingReport& report_;
  std::deque<std::string> pending_;
  std::exception_ptr error_;
};

inline void validate(const TrainerOptions& o) {
  auto fail = [](const std::string& what) { throw ValueError("[tokenizer::train] " + what); };
  if (o.vocab_size <= 0) fail("vocab_size must be positive, got " + std::to_string(o.vocab_size));
  if (o.unk_id < 0) fail("unk_id must be >= 0 (SentencePiece requires <unk>), got " + std::to_string(o.unk_id));
  const std::pair<const char*, int> ids[] = {{"pad_id", o.pad_id}, {"unk_id", o.unk_id}, {"bos_id", o.bos_id}, {"eos_id", o.eos_id}};
  for (const auto& [name, id] : ids) {
    if (id >= o.vocab_size)
      fail(std::string(name) + " = " + std::to_string(id) + " must be below vocab_size = " + std::to_string(o.vocab_size));
    for (const auto& [other, other_id] : ids)
      if (id >= 0 && name != other && id == other_id)
        fail(std::string(name) + " and " + other + " are both " + std::to_string(id) + " (special ids must differ)");
  }
  if (!(o.character_coverage > 0.0 && o.character_coverage <= 1.0))
    fail("character_coverage must be in (0, 1], got " + std::to_string(o.character_coverage));
  if (o.max_sentence_length < 4) fail("max_sentence_length must be at least 4 bytes, got " + std::to_string(o.max_sentence_length));
  if (o.num_threads <= 0) fail("num_threads must be positive, got " + std::to_string(o.num_threads));
  if (o.input_sentence_size < 0) fail("input_sentence_size must be >= 0, got " + std::to_string(o.input_sentence_size));
  for (std::size_t i = 0; i < o.user_defined_symbols.size(); ++i) {
    const std::string& s = o.user_defined_symbols[i];
    if (s.empty() || s.find(',') != std::string::npos)
      fail("user_defined_symbols[" + std::to_string(i) + "] = '" + s + "' must be non-empty and contain no ','");
  }
}

inline std::unordered_map<std::string, std::string> kwargs(const TrainerOptions& o) {
  const auto flag = [](bool b) { return std::string(b ? "true" : "false"); };
  std::string symbols;
  for (const std::string& s : o.user_defined_symbols) symbols += (symbols.empty() ? "" : ",") + s;
  std::unordered_map<std::string, std::string> kw = {
      {"model_type", o.model_type == ModelType::bpe ? "bpe" : "unigram"},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"character_coverage", std::to_string(o.character_coverage)},
      {"pad_id", std::to_string(o.pad_id)},
      {"unk_id", std::to_string(o.unk_id)},
      {"bos_id", std::to_string(o.bos_id)},
      {"eos_id", std::to_string(o.eos_id)},
      {"input_sentence_size", std::to_string(o.input_sentence_size)},
      {"shuffle_input_sentence", flag(o.shuffle_input_sentence)},
      {"num_threads", std::to_string(o.num_threads)},
      {"max_sentence_length", std::to_string(o.max_sentence_length)},
      {"byte_fallback", flag(o.byte_fallback)},
      {"add_dummy_prefix", flag(o.add_dummy_prefix)},
      {"hard_vocab_limit", flag(o.hard_vocab_limit)},
      {"normalization_rule_name", o.normalization_rule_name},
      {"minloglevel", o.verbose ? "0" : "2"},
  };
  if (!symbols.empty()) kw["user_defined_symbols"] = symbols;
  return kw;
}

inline Trained run(const TrainerOptions& options, std::function<bool(std::string&)> next_line, const std::string& source) {
  validate(options);
  Trained result;
  SplittingIterator iterator(std::move(next_line), options.max_sentence_length, result.report);
  if (iterator.error()) std::rethrow_exception(iterator.error());
  if (iterator.done()) throw ValueError("[tokenizer::train] " + source + " holds no text (only empty lines)");
  sentencepiece::SetRandomGeneratorSeed(options.seed);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs(options), &iterator, &model);
  if (iterator.error()) std::rethrow_exception(iterator.error());
  if (!status.ok())
    throw ValueError("[tokenizer::train] SentencePiece could not train a " + std::to_string(options.vocab_size) +
                     "-piece model on " + source + " (" + std::to_string(result.report.lines) + " lines, " +
                     std::to_string(result.report.bytes) + " bytes): " + status.ToString());
  result.tokenizer = Tokenizer::from_serialized(model);
  return result;
}

}  // namespace train_detail

// Trains on in-memory text: each string is one or more lines ('\n'-separated). Invalid options
// or a failed training throw ValueError with SentencePiece's message.
inline Trained train(const TrainerOptions& options, std::span<const std::string> corpus) {
  std::size_t i = 0;
  return train_detail::run(
      options,
      [&](std::string& line) {
        if (i >= corpus.size()) return false;
        line = corpus[i++];
        return true;
      },
      "an in-memory corpus of " + std::to_string(corpus.size()) + " strings");
}

// Trains on the lines of text files (read in the order given). A file that cannot be opened
// throws FileError before training starts.
inline Trained train_from_files(const TrainerOptions& options, std::span<const std::filesystem::path> files) {
  for (const auto& f : files)
    if (!std::ifstream(f)) throw FileError("[tokenizer::train_from_files] cannot open '" + f.string() + "' (expected a text file)");
  std::size_t next = 0;
  std::ifstream in;
  return train_detail::run(
      options,
      [&](std::string& line) {
        while (true) {
          if (in.is_open() && std::getline(in, line)) return true;
          if (in.is_open() && in.bad())
            throw FileError("[tokenizer::train_from_files] reading '" + files[next - 1].string() + "' failed");
          if (next >= files.size()) return false;
          in = std::ifstream(files[next++]);
        }
      },
      std::to_string(files.size()) + " file(s) starting with '" + (files.empty() ? std::string() : files[0].string()) + "'");
}

}  // namespace cerberus::tokenizer
