// Consumer of the `tokenizer` component: cerberus::tokenizer must bring the installed
// <cerberus/tokenizer.hpp> and SentencePiece's runtime and trainer libraries. Trains a tiny BPE
// model in memory (sentencepiece_train), round-trips a sentence through save/load
// (sentencepiece) and stores the ids in a cerberus tensor.
#include <cerberus/cerberus.hpp>
#include <cerberus/tokenizer.hpp>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

int main() {
  std::vector<std::string> lines;
  for (int k = 0; k < 50; ++k) {
    lines.push_back("the quick brown fox jumps over the lazy dog");
    lines.push_back("a lazy dog sleeps while the quick fox runs");
    lines.push_back("brown dogs and quick foxes share the meadow");
  }
  cerberus::tokenizer::TrainerOptions options;
  options.model_type = cerberus::tokenizer::ModelType::bpe;
  options.vocab_size = 60;
  options.num_threads = 1;
  try {
    const auto trained = cerberus::tokenizer::train(options, lines);
    const auto path = std::filesystem::temp_directory_path() / "cerberus_tokenizer_consumer.model";
    trained.tokenizer.save(path);
    const auto tok = cerberus::tokenizer::Tokenizer::load(path);
    std::filesystem::remove(path);

    const std::string text = "the lazy fox jumps";
    const std::vector<std::int64_t> ids = tok.encode(text);
    if (tok.decode(ids) != text || ids.empty()) {
      std::fprintf(stderr, "tokenizer consumer: round trip gave '%s' from %zu ids\n", tok.decode(ids).c_str(), ids.size());
      return 1;
    }
    const auto tensor = cerberus::from_vector<std::int64_t>(ids);
    if (tensor.numel() != static_cast<cerberus::Index>(ids.size()) || tensor(0) != ids[0]) {
      std::fprintf(stderr, "tokenizer consumer: ids tensor mismatch\n");
      return 1;
    }
    std::printf("tokenizer consumer: vocab %lld, '%s' -> %zu ids: ok\n", static_cast<long long>(tok.vocab_size()), text.c_str(),
                ids.size());
  } catch (const cerberus::Error& e) {
    std::fprintf(stderr, "tokenizer consumer: %s\n", e.what());
    return 1;
  }
  return 0;
}
