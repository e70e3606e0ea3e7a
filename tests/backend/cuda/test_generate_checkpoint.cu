// A whole model on the GPU beyond training: KV-cache generation and checkpoints.
//   - a decoder-only model trained briefly on the CPU (so its next-token choices are clear, not
//     near-ties that float rounding could flip) and copied to cuda: logits of KV-cache steps
//     against a full forward on the device, and greedy generation against the CPU's tokens;
//   - safetensors checkpoints saved from cuda tensors, loaded into CPU models and back into
//     cuda models, bit for bit, in float and in bf16;
//   - instruct::Predictor over a cuda multi-task model (KV-cache greedy generation and beam
//     search, rank classification, head classification, predict_many) against the same model
//     on the CPU.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cerberus/instruct.hpp"
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "check.cuh"

namespace {

using namespace cerberus;

nn::TransformerConfig small_config() {
  nn::TransformerConfig c;
  c.vocab_size = 50, c.d_model = 32, c.n_layers = 2, c.n_heads = 4, c.d_ff = 64, c.max_seq_len = 24;
  c.tie_embeddings = true;
  return c;
}

// Teaches the model "next id = id + 3 (mod V)" for 60 AdamW steps, on the CPU.
void train_counting(nn::DecoderOnly<float, cpu>& model) {
  const auto& c = model.config();
  const Index b = 4, t = 16;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * t)), next(ids.size());
  for (Index r = 0; r < b; ++r)
    for (Index j = 0; j < t; ++j) {
      ids[static_cast<std::size_t>(r * t + j)] = (5 * r + 3 * j) % c.vocab_size;
      next[static_cast<std::size_t>(r * t + j)] = (5 * r + 3 * j + 3) % c.vocab_size;
    }
  const auto x = from_vector<std::int64_t>(ids, Shape{b, t}), y = from_vector<std::int64_t>(next, Shape{b, t});
  optim::AdamW opt(model.named_parameters(), {.lr = 1e-2});
  for (int step = 0; step < 60; ++step) {
    opt.zero_grad();
    auto loss = model.loss(x, y);
    loss.backward();
    opt.step();
  }
}

void check_generation() {
  Generator gen(5);
  nn::DecoderOnly<float, cpu> host(small_config(), gen);
  train_counting(host);
  nn::DecoderOnly<float, cuda> device(small_config(), gen);
  check::copy_weights(host, device);

  // Prompts from the training rows (r = 0 and 1), continued within the 16 trained positions.
  const auto prompt = from_vector<std::int64_t>({0, 3, 6, 9, 5, 8, 11, 14}, Shape{2, 4});
  // KV cache on the device: the prompt, then one token at a time, against a full forward.
  {
    NoGradGuard no_grad;
    device.eval();
    const auto full_ids = from_vector<std::int64_t>({0, 3, 6, 9, 12, 15, 5, 8, 11, 14, 17, 20}, Shape{2, 6}).to<cuda>();
    const Tensor<float, cuda> full = device.forward(full_ids);
    auto cache = device.make_cache(2, 6);
    const Tensor<float, cuda> first = device.forward_step(full_ids.slice(1, 0, 4).contiguous(), cache);
    const Tensor<float, cuda> fifth = device.forward_step(full_ids.slice(1, 4, 5).contiguous(), cache);
    const Tensor<float, cuda> sixth = device.forward_step(full_ids.slice(1, 5, 6).contiguous(), cache);
    const Tensor<float, cpu> full_h = full.to<cpu>();
    check::expect_close("KV cache: prompt logits", first, full_h.slice(1, 0, 4).contiguous(), 1e-4);
    check::expect_close("KV cache: 5th position", fifth, full_h.slice(1, 4, 5).contiguous(), 1e-4);
    check::expect_close("KV cache: 6th position", sixth, full_h.slice(1, 5, 6).contiguous(), 1e-4);
    device.train();
  }
  nn::SamplingOptions greedy;
  greedy.max_new_tokens = 10;
  const Tensor<std::int64_t, cpu> want = nn::generate(host, prompt, greedy);
  const Tensor<std::int64_t, cuda> got = nn::generate(device, prompt.to<cuda>(), greedy);
  check::expect_equal_ids("greedy generation (10 new tokens, KV cache)", got, want);
  // The model learned its task: the CPU's continuation counts on by 3 (checked here on the CPU
  // with the same seed and steps: 0 3 6 9 -> 12 15 ... 39, 5 8 11 14 -> 17 20 ... 44).
  const auto w = want.to_vector();
  check::report(w[4] == 12 && w[13] == 39 && w[18] == 17 && w[27] == 44, "the trained model continues the count",
                "12 ... 39 and 17 ... 44 expected after the prompts");

  nn::SamplingOptions sampled = greedy;
  sampled.temperature = 0.8, sampled.top_k = 5, sampled.seed = 3;
  check::expect_equal_ids("sampled generation (temperature 0.8, top-k 5, seed 3)", nn::generate(device, prompt.to<cuda>(), sampled),
                          nn::generate(host, prompt, sampled));
}

template <class T>
void check_checkpoint(const char* label) {
  const auto dir = std::filesystem::temp_directory_path() / ("cerberus_cuda_ckpt_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / (std::string(label) + ".safetensors")).string();
  Generator gen(9);
  nn::DecoderOnly<T, cuda> device(small_config(), gen);
  io::save_checkpoint(path, device.named_parameters());  // from device memory

  Generator other(10);
  nn::DecoderOnly<T, cpu> host(small_config(), other);
  io::load_checkpoint(path, host.named_parameters());
  nn::DecoderOnly<T, cuda> back(small_config(), other);
  io::load_checkpoint(path, back.named_parameters());  // into device memory
  const auto d = device.named_parameters();
  const auto h = host.named_parameters();
  const auto b = back.named_parameters();
  bool host_same = d.size() == h.size(), back_same = d.size() == b.size();
  for (std::size_t k = 0; k < d.size() && host_same && back_same; ++k) {
    const auto dv = d[k].tensor.to_vector(), hv = h[k].tensor.to_vector(), bv = b[k].tensor.to_vector();
    host_same = host_same && std::memcmp(dv.data(), hv.data(), dv.size() * sizeof(T)) == 0;
    back_same = back_same && std::memcmp(dv.data(), bv.data(), dv.size() * sizeof(T)) == 0;
  }
  check::report(host_same, std::string(label) + " checkpoint: saved from cuda, loaded on the CPU", "every parameter bitwise");
  check::report(back_same, std::string(label) + " checkpoint: saved from cuda, loaded back to cuda", "every parameter bitwise");
  std::filesystem::remove_all(dir);
}

// One id per character: 0 pad, 1 bos, 2 eos, 3 sep, 4 + (c - 32) for printable ASCII.
struct CharTokenizer {
  std::vector<std::int64_t> encode(std::string_view s) const {
    std::vector<std::int64_t> out;
    for (const char c : s) out.push_back(c >= 32 && c < 127 ? 4 + (c - 32) : 4 + ('?' - 32));
    return out;
  }
  std::string decode(std::span<const std::int64_t> ids) const {
    std::string out;
    for (const std::int64_t id : ids)
      if (id >= 4) out += static_cast<char>(id - 4 + 32);
    return out;
  }
  std::int64_t pad_id() const { return 0; }
  std::int64_t bos_id() const { return 1; }
  std::int64_t eos_id() const { return 2; }
};

template <class Trunk>
using PredictModel = mtl::Model<Trunk, mtl::Hard, mtl::Equal, mtl::Task<"translate", mtl::LMHead<>>, mtl::Task<"summarize", mtl::LMHead<>>,
                                mtl::Task<"sentiment", mtl::SequenceClassifier<2, mtl::Pooling::last>>>;

void check_predictor() {
  nn::TransformerConfig c;
  c.vocab_size = 100, c.d_model = 32, c.n_layers = 2, c.n_heads = 4, c.d_ff = 64, c.max_seq_len = 64;
  Generator gen(21), gen_d(22);
  PredictModel<nn::Decoder<float, cpu>> host(nn::Decoder<float, cpu>(c, gen), gen);
  PredictModel<nn::Decoder<float, cuda>> device(nn::Decoder<float, cuda>(c, gen_d), gen_d);
  check::copy_weights(host, device);

  instruct::TaskRegistry tasks;
  tasks.add(instruct::TaskSpec::make("translate", instruct::TaskKind::generation, "Translate to French.", {{"{instruction} {input}"}}));
  tasks.add(instruct::TaskSpec::make("summarize", instruct::TaskKind::classification, "Summarize in one word.", {{"{instruction} {input}"}},
                                     {"sports", "politics"}));
  tasks.add(instruct::TaskSpec::make("sentiment", instruct::TaskKind::classification, "Positive or negative?", {{"{input} {instruction}"}},
                                     {"negative", "positive"}));
  instruct::PredictOptions o;
  o.collate = {.max_length = 64, .add_bos = true, .sep_id = 3};
  o.generation.max_new_tokens = 8;
  o.generation.stop_at_eos = false;  // always 8 tokens: more positions compared
  const CharTokenizer tok;
  instruct::Predictor on_cpu(host, tok, tasks, o);
  instruct::Predictor on_cuda(device, tok, tasks, o);
  check::report(on_cuda.uses_kv_cache("translate"), "Predictor on cuda: generation runs on the KV cache");

  const std::vector<std::string> texts = {"the cat sat", "a long day at the office", "yes"};
  const auto same_ids = [](const instruct::Prediction& a, const instruct::Prediction& b) { return a.output_ids == b.output_ids; };
  const auto close_probabilities = [](const instruct::Prediction& a, const instruct::Prediction& b) {
    bool ok = a.label == b.label && a.probabilities.size() == b.probabilities.size();
    for (std::size_t i = 0; ok && i < a.probabilities.size(); ++i) ok = std::abs(a.probabilities[i] - b.probabilities[i]) < 1e-4;
    return ok;
  };
  bool greedy = true, beams = true, ranked = true, headed = true;
  for (const auto& text : texts) {
    greedy = greedy && same_ids(on_cuda.predict_task("translate", text), on_cpu.predict_task("translate", text));
    ranked = ranked && close_probabilities(on_cuda.predict_task("summarize", text), on_cpu.predict_task("summarize", text));
  }
  const auto many_d = on_cuda.predict_many("sentiment", texts), many_h = on_cpu.predict_many("sentiment", texts);
  for (std::size_t i = 0; i < texts.size(); ++i) headed = headed && close_probabilities(many_d[i], many_h[i]);
  on_cpu.options().generation.decoding = on_cuda.options().generation.decoding = instruct::Decoding::beam_search;
  on_cpu.options().generation.num_beams = on_cuda.options().generation.num_beams = 3;
  for (const auto& text : texts) beams = beams && same_ids(on_cuda.predict_task("translate", text), on_cpu.predict_task("translate", text));
  check::report(greedy, "Predictor on cuda: greedy generation (KV cache) gives the CPU's tokens");
  check::report(beams, "Predictor on cuda: beam search (3 beams, KV cache) gives the CPU's tokens");
  check::report(ranked, "Predictor on cuda: rank classification", "labels equal, probabilities within 1e-4");
  check::report(headed, "Predictor on cuda: head classification through predict_many", "labels equal, probabilities within 1e-4");
}

}  // namespace

int main() {
  return check::run("test_generate_checkpoint (cuda)", [] {
    check_generation();
    check_checkpoint<float>("float");
    check_checkpoint<bfloat16>("bf16");
    check_predictor();
  });
}
