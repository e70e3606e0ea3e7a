// GPT training step on the GPU: forward + backward + AdamW of the models of
// benchmarks/transformer_train.cpp (and benchmarks/peers/gpt_libtorch.cpp), on cuda:
//   tiny   vocab 8000,  d 256,  4 layers,  4 heads, seq 128,  batch 16   fp32 and bf16
//   small  vocab 16000, d 512,  6 layers,  8 heads, seq 256,  batch 8    fp32 and bf16
//   large  vocab 32000, d 1024, 16 layers, 16 heads, seq 1024, batch 8   bf16 (issue 8)
// token + learned position embeddings, pre-LayerNorm blocks, causal attention, GELU (tanh) MLP
// of width 4d, final LayerNorm, tied LM head, cross-entropy, AdamW (lr 3e-4, decay 0.1).
// bf16 is the library's mixed precision: the model built as DecoderOnly<bfloat16> (bf16 weights,
// activations and cuBLAS products with float sums), float master weights in AdamW.
// Each step ends with the loss copied to the host (a synchronisation); 2 warm-up steps, median
// of 7, and per phase (forward with the loss, backward, optimizer) the device time and the host
// time spent queueing it (mean of the 7). Prints "RESULT cerberus gpt train <config> <tokens/s>
// tokens/s" and the memory the
// caching allocator holds at the end (its peak: it never returns memory), which
// benchmarks/gpu/run.sh pairs with bench_torch.py's "torch gpt train <config>" (PyTorch eager,
// autocast bf16 for the bf16 rows, torch.cuda.max_memory_reserved).
// bf16 attention runs on tensor cores (backend/cuda/attention_tensor_core.cuh);
// --no-tensor-core-attention sends it through the float conversion instead (run.sh passes it
// when test_attention_tensor_core failed on this machine).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/backend/cuda.cuh"
#include "../gpt_configs.hpp"

using namespace cerberus;

namespace {

template <class T>
void run(const std::string& name, Index B) {
  const auto c = bench::gpt_config(name);
  const Index T_len = c.max_seq_len;
  Generator gen(0);
  nn::DecoderOnly<T, cuda> model(c, gen);
  optim::AdamW optimizer(model.named_parameters(), {.lr = 3e-4, .weight_decay = 0.1});
  std::vector<std::int64_t> ids_host(static_cast<std::size_t>(B * T_len)), targets_host(ids_host.size());
  for (std::size_t i = 0; i < ids_host.size(); ++i) {
    ids_host[i] = static_cast<std::int64_t>((i * 2654435761u) % static_cast<std::size_t>(c.vocab_size));
    targets_host[i] = static_cast<std::int64_t>((i * 40503u + 7) % static_cast<std::size_t>(c.vocab_size));
  }
  const auto ids = from_vector<std::int64_t>(ids_host, {B, T_len}).to<cuda>();
  const auto targets = from_vector<std::int64_t>(targets_host, {B, T_len}).to<cuda>();
  std::vector<double> times;
  double loss_value = 0;
  // Phases: forward (with the loss), backward, optimizer. For each, the device time between
  // events recorded at its ends and the host time spent queueing it: where the two are close,
  // the device waited for the host (launch-bound), not the other way round.
  cudaEvent_t marks[4];
  for (auto& m : marks) cuda_backend::check(cudaEventCreate(&m), "bench_gpt", "cudaEventCreate");
  double device_ms[3] = {}, host_ms[3] = {};
  using clock = std::chrono::steady_clock;
  auto since = [](clock::time_point t) { return std::chrono::duration<double, std::milli>(clock::now() - t).count(); };
  for (int i = 0; i < 9; ++i) {
    const auto start = clock::now();
    cudaEventRecord(marks[0], cuda_backend::stream());
    optimizer.zero_grad();
    auto loss = model.loss(ids, targets);
    cudaEventRecord(marks[1], cuda_backend::stream());
    const double host_forward = since(start);
    const auto backward_start = clock::now();
    loss.backward();
    cudaEventRecord(marks[2], cuda_backend::stream());
    const double host_backward = since(backward_start);
    const auto step_start = clock::now();
    optimizer.step();
    cudaEventRecord(marks[3], cuda_backend::stream());
    const double host_step = since(step_start);
    loss_value = static_cast<double>(loss.template to<cpu>().item());
    const double ms = since(start);
    if (i >= 2) {
      times.push_back(ms);
      const double host[3] = {host_forward, host_backward, host_step};
      for (int k = 0; k < 3; ++k) {
        float elapsed = 0;
        cudaEventElapsedTime(&elapsed, marks[k], marks[k + 1]);
        device_ms[k] += elapsed;
        host_ms[k] += host[k];
      }
    }
  }
  for (auto& m : marks) cudaEventDestroy(m);
  std::sort(times.begin(), times.end());
  const double ms = times[times.size() / 2];
  const std::string label = name + (std::is_same_v<T, bfloat16> ? " bf16" : "");
  const auto memory = cuda_memory_stats();
  std::printf("RESULT cerberus gpt train %-26s %10.0f tokens/s  (%.2f ms/step, loss %.4f, %.0f MiB held)\n", label.c_str(),
              static_cast<double>(B * T_len) / (ms * 1e-3), ms, loss_value,
              static_cast<double>(memory.bytes_in_use + memory.bytes_cached) / (1024.0 * 1024.0));
  const double n = static_cast<double>(times.size());
  std::printf("PHASES cerberus gpt train %-26s forward %.2f ms (host %.2f), backward %.2f ms (host %.2f), optimizer %.2f ms (host %.2f)\n",
              label.c_str(), device_ms[0] / n, host_ms[0] / n, device_ms[1] / n, host_ms[1] / n, device_ms[2] / n, host_ms[2] / n);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-tensor-core-attention") == 0) set_tensor_core_attention(false);
    else {
      std::fprintf(stderr, "usage: bench_gpt [--no-tensor-core-attention]\n");
      return 2;
    }
  }
  if (!cuda_available()) {
    std::printf("no CUDA device: nothing to time\n");
    return 77;
  }
  std::printf("bf16 attention: %s\n", tensor_core_attention_enabled() ? "tensor cores" : "float conversion (--no-tensor-core-attention)");
  try {
    // Memory is reported as the allocator's total, so the rows run from the smallest model up.
    run<float>("tiny", 16);
    run<bfloat16>("tiny", 16);
    run<float>("small", 8);
    run<bfloat16>("small", 8);
    run<bfloat16>("large", 8);
  } catch (const std::exception& e) {
    std::printf("bench_gpt failed: %s\n", e.what());
    return 1;
  }
  return 0;
}
