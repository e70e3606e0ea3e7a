// Streams (backend/cuda/stream.cuh) and the caching allocator's per-stream pools (memory.cuh):
// work under a CudaStreamGuard gives the results of the default stream; a block freed by one
// stream's work is not handed to another stream; two threads, each with its own stream, run a
// training computation concurrently and both get their default-stream results; wait_for orders
// one stream after another.
#include <thread>

#include "check.cuh"

namespace {

using namespace cerberus;
using check::expect_close;
using check::random;

struct Inputs {
  Tensor<float, cpu> x, w1, w2;
};

struct Result {
  Tensor<float, cpu> loss, dw1, dw2;
};

Inputs make_inputs(Generator& gen) { return {random<float>({64, 96}, gen, -1, 1), random<float>({96, 128}, gen, -0.3, 0.3), random<float>({128, 32}, gen, -0.3, 0.3)}; }

// A two-layer MLP's loss and weight gradients, computed on the current stream (host copies at the end).
Result mlp_step(const Inputs& in) {
  const auto x = in.x.to<cuda>();
  auto w1 = in.w1.to<cuda>(), w2 = in.w2.to<cuda>();
  w1.set_requires_grad();
  w2.set_requires_grad();
  const Tensor<float, cuda> h = gelu(matmul(x, w1));
  const Tensor<float, cuda> y = matmul(h, w2);
  auto loss = sum(y * y);
  loss.backward();
  return {loss.to<cpu>(), w1.grad().to<cpu>(), w2.grad().to<cpu>()};
}

void expect_same(const std::string& name, const Result& got, const Result& want) {
  auto close = [&](const std::string& what, const Tensor<float, cpu>& g, const Tensor<float, cpu>& w) {
    const double err = check::max_error(g.to_vector(), w.to_vector());
    check::report(err < 1e-6, name + " " + what, "max rel error " + check::fmt(err));
  };
  close("loss", got.loss, want.loss);
  close("dw1", got.dw1, want.dw1);
  close("dw2", got.dw2, want.dw2);
}

}  // namespace

int main() {
  return check::run("test_streams (cuda)", [] {
    Generator gen(20261129);
    const Inputs a = make_inputs(gen), b = make_inputs(gen);
    const Result ref_a = mlp_step(a), ref_b = mlp_step(b);  // the legacy default stream

    // 1. The same computation under a guard: the same numbers; the guard restores the stream.
    CudaStream first;
    {
      CudaStreamGuard guard(first);
      check::report(current_cuda_stream() == first.get(), "the guard makes its stream current");
      expect_same("under a guard", mlp_step(a), ref_a);
    }
    check::report(current_cuda_stream() == cudaStreamLegacy, "the guard restores the default stream");

    // 2. Pools: a block freed under one stream is reused by that stream only.
    const Index odd = 12345;  // a size class no other part of this test uses
    {
      CudaStreamGuard guard(first);
      auto t = Tensor<float, cuda>::empty(Shape{odd});
      t.fill(1.0f);
      first.synchronize();
    }
    const auto before = cuda_memory_stats();
    CudaStream second;
    {
      CudaStreamGuard guard(second);
      auto t = Tensor<float, cuda>::empty(Shape{odd});
      t.fill(2.0f);
      second.synchronize();
    }
    const auto after_second = cuda_memory_stats();
    check::report(after_second.system_allocations == before.system_allocations + 1,
                  "another stream gets fresh memory, not the block the first stream freed",
                  "system allocations " + std::to_string(before.system_allocations) + " -> " + std::to_string(after_second.system_allocations));
    {
      CudaStreamGuard guard(first);
      auto t = Tensor<float, cuda>::empty(Shape{odd});
      check::report(cuda_memory_stats().cache_hits == after_second.cache_hits + 1, "the first stream reuses its own freed block");
    }

    // 3. Two threads, a stream each, ten steps each, concurrently.
    std::vector<Result> got_a, got_b;
    std::string error_a, error_b;
    auto worker = [](const Inputs& in, std::vector<Result>& out, std::string& error) {
      try {
        CudaStream own;
        CudaStreamGuard guard(own);
        for (int i = 0; i < 10; ++i) out.push_back(mlp_step(in));
      } catch (const std::exception& e) {
        error = e.what();
      }
    };
    std::thread ta(worker, std::cref(a), std::ref(got_a), std::ref(error_a));
    std::thread tb(worker, std::cref(b), std::ref(got_b), std::ref(error_b));
    ta.join();
    tb.join();
    check::report(error_a.empty() && error_b.empty(), "two threads on their own streams", error_a + error_b);
    check::report(got_a.size() == 10 && got_b.size() == 10, "both threads finished their ten steps");
    for (std::size_t i = 0; i < got_a.size(); ++i) expect_same("thread A step " + std::to_string(i + 1), got_a[i], ref_a);
    for (std::size_t i = 0; i < got_b.size(); ++i) expect_same("thread B step " + std::to_string(i + 1), got_b[i], ref_b);

    // 4. wait_for: the second stream reads what the first wrote, after waiting for it.
    Tensor<float, cuda> big;
    {
      CudaStreamGuard guard(first);
      big = Tensor<float, cuda>::empty(Shape{1 << 24});
      for (int i = 0; i < 8; ++i) big.fill(static_cast<float>(i));  // queued work for the wait to span
    }
    second.wait_for(first);
    {
      CudaStreamGuard guard(second);
      const auto total = sum(big).to<cpu>();
      check::report(total.item() == 7.0f * static_cast<float>(1 << 24), "wait_for orders the second stream after the first",
                    "sum " + check::fmt(total.item()));
    }
    first.synchronize();  // big was made under the first stream: finished with before it is dropped
  });
}
