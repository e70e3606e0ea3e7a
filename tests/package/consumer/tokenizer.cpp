// Consumer of the `tokenizer` component: cerberus::tokenizer must bring SentencePiece's runtime and
// trainer libraries. Trains a tiny BPE model in memory (sentencepiece_train), loads it
// (sentencepiece), round-trips a sentence and stores the ids in a cerberus tensor.
#include <cerberus/cerberus.hpp>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <cstdint>
#include <string>
#include <vector>

namespace {

class Corpus : public sentencepiece::SentenceIterator {
 public:
  explicit Corpus(std::vector<std::string> lines) : lines_(std::move(lines)) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::vector<std::string> lines_;
  std::size_t i_ = 0;
};

}  // namespace

int main() {
  std::vector<std::string> lines;
  for (int k = 0; k < 50; ++k) {
    lines.push_back("the quick brown fox jumps over the lazy dog");
    lines.push_back("a lazy dog sleeps while the quick fox runs");
    lines.push_back("brown dogs and quick foxes share the meadow");
  }
  Corpus corpus(lines);
  std::string model;
  const auto trained = sentencepiece::SentencePieceTrainer::Train(
      "--model_type=bpe --vocab_size=60 --character_coverage=1.0 --minloglevel=2 --num_threads=1", &corpus, &model);
  if (!trained.ok()) {
    std::fprintf(stderr, "tokenizer consumer: training failed: %s\n", trained.ToString().c_str());
    return 1;
  }

  sentencepiece::SentencePieceProcessor sp;
  const auto loaded = sp.LoadFromSerializedProto(model);
  if (!loaded.ok()) {
    std::fprintf(stderr, "tokenizer consumer: loading failed: %s\n", loaded.ToString().c_str());
    return 1;
  }

  const std::string text = "the lazy fox jumps";
  std::vector<int> ids;
  std::string decoded;
  if (!sp.Encode(text, &ids).ok() || !sp.Decode(ids, &decoded).ok()) {
    std::fprintf(stderr, "tokenizer consumer: encode/decode failed\n");
    return 1;
  }
  if (decoded != text || ids.empty()) {
    std::fprintf(stderr, "tokenizer consumer: round trip gave '%s' from %zu ids\n", decoded.c_str(), ids.size());
    return 1;
  }

  std::vector<std::int64_t> ids64(ids.begin(), ids.end());
  const auto tensor = cerberus::from_vector<std::int64_t>(ids64);
  if (tensor.numel() != static_cast<cerberus::Index>(ids.size()) || tensor(0) != ids[0]) {
    std::fprintf(stderr, "tokenizer consumer: ids tensor mismatch\n");
    return 1;
  }
  std::printf("tokenizer consumer: vocab %d, '%s' -> %zu ids: ok\n", sp.GetPieceSize(), text.c_str(), ids.size());
  return 0;
}
