// What the language-model examples share (pretrain.cpp, instruction_tuning.cpp, compare_sharing.cpp):
// their command-line options, the token stream of a corpus, and wall-clock timing.
//
//   --quick  --data DIR  --out DIR  --resume  --steps N  --stop-after N  --seed S
// An unknown option or a bad number is a ValueError naming the program and its usage line.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/data/text_corpus.hpp"
#include "cerberus/tokenizer.hpp"

namespace example_support {

struct RunOptions {
  std::filesystem::path data_dir = "data";
  std::filesystem::path out_dir;  // default: <out_root>/quick or <out_root>/full
  bool quick = false;
  bool resume = false;
  std::int64_t steps = 0;       // 0: the mode's default
  std::int64_t stop_after = 0;  // 0: run to the end; N: save and stop after step N, as if interrupted
  std::uint64_t seed = 1;
};

[[noreturn]] inline void usage_error(const char* program, const std::string& what) {
  throw cerberus::ValueError(std::string("[") + program + "] " + what + " (usage: " + program +
                             " [--quick] [--data DIR] [--out DIR] [--resume] [--steps N] [--stop-after N] [--seed S])");
}

// Parses the options; out_dir defaults to out_root/quick or out_root/full, so the two modes never
// overwrite each other.
inline RunOptions parse_run_options(const char* program, int argc, char** argv, const std::filesystem::path& out_root) {
  RunOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error(program, "option " + std::string(a) + " needs a value");
      return argv[++i];
    };
    auto number = [&](std::string_view name) -> std::int64_t {
      const std::string v = value();
      std::size_t used = 0;
      long long n = -1;
      try {
        n = std::stoll(v, &used);
      } catch (const std::exception&) {
      }
      if (used != v.size() || n < 0) usage_error(program, std::string(name) + " expects a non-negative integer, got '" + v + "'");
      return n;
    };
    if (a == "--quick") o.quick = true;
    else if (a == "--resume") o.resume = true;
    else if (a == "--data") o.data_dir = value();
    else if (a == "--out") o.out_dir = value();
    else if (a == "--steps") o.steps = number(a);
    else if (a == "--stop-after") o.stop_after = number(a);
    else if (a == "--seed") o.seed = static_cast<std::uint64_t>(number(a));
    else usage_error(program, "unknown option '" + std::string(a) + "'");
  }
  if (o.out_dir.empty()) o.out_dir = out_root / (o.quick ? "quick" : "full");
  return o;
}

// Every document's paragraphs encoded one after another, each document ended by </s>.
inline std::vector<std::int64_t> token_stream(const cerberus::tokenizer::Tokenizer& tok, const std::vector<cerberus::data::Document>& docs) {
  std::vector<std::int64_t> stream;
  for (const auto& d : docs) {
    for (const auto& p : d.paragraphs) {
      const std::vector<std::int64_t> ids = tok.encode(p);
      stream.insert(stream.end(), ids.begin(), ids.end());
    }
    stream.push_back(tok.eos_id());
  }
  return stream;
}

inline double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace example_support
