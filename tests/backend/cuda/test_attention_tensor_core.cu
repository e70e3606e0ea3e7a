// The tensor-core bf16 attention (backend/cuda/attention_tensor_core.cuh) against the CPU's
// float attention on the same bf16 values: forward output, the saved logsumexp (through the
// backend call, against a double-precision reference), and the gradients of q, k and v. Head
// sizes 64 and 128; causal and not; Tq = Tk, Tq < Tk (decoding: Tq = 1, and a few rows),
// Tq > Tk (causal rows that see no key); lengths that are not multiples of the 64-row tiles
// (1, 37, 200) and a long one (1024, many tiles and the unmasked-tile fast path); key padding,
// a batch row whose keys are all padded, segments (packed examples), [B, T, H, D] operands
// viewed per head. Results come from poisoned (NaN) buffers, so an element a kernel does not
// write fails. Then: set_tensor_core_attention(false) gives the float-conversion path (its output
// bit for bit), the tensor-core path differs from it (so it ran), and rows that are not 16-byte aligned
// fall back to the conversion path with correct results. Exit 77 without a device.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "check.cuh"

namespace {

using namespace cerberus;
using check::expect_close;
using check::random;

constexpr double tolerance = 1e-2;      // bf16 operands, P and dS rounded to bf16 for the products
constexpr double lse_tolerance = 1e-3;  // fp32 sums of exact bf16 products

struct Case {
  Index b, h, tq, tk, d;
  bool causal = false, padding = false, segments = false, permuted = false;
  bool padded_row = false;  // batch row 0 pads every key: its queries see nothing
};

std::string describe(const Case& c) {
  char text[200];
  std::snprintf(text, sizeof text, "B%lld H%lld Tq%lld Tk%lld D%lld%s%s%s%s%s", static_cast<long long>(c.b), static_cast<long long>(c.h),
                static_cast<long long>(c.tq), static_cast<long long>(c.tk), static_cast<long long>(c.d), c.causal ? " causal" : "",
                c.padding ? " padded" : "", c.padded_row ? " fully-padded-row" : "", c.segments ? " segments" : "",
                c.permuted ? " permuted" : "");
  return text;
}

AttentionOptions make_options(const Case& c) {
  AttentionOptions options;
  options.causal = c.causal;
  if (c.padding || c.padded_row) {
    options.key_padding = Tensor<std::uint8_t, cpu>::empty({c.b, c.tk});
    for (Index r = 0; r < c.b; ++r)
      for (Index j = 0; j < c.tk; ++j) {
        const bool tail = c.padding && j >= c.tk - 1 - 3 * r;  // batch row r pads its last 1 + 3r keys
        options.key_padding.data()[r * c.tk + j] = (tail || (c.padded_row && r == 0)) ? 1 : 0;
      }
  }
  if (c.segments) {  // uneven packed examples crossing the 64-key tiles: 7 + 13 r, 29, 3, 61, 1, 40, ...
    options.segments = Tensor<std::int64_t, cpu>::empty({c.b, c.tk});
    for (Index r = 0; r < c.b; ++r) {
      const Index lengths[] = {7 + 13 * r, 29, 3, 61, 1, 40};
      Index j = 0, id = 0;
      while (j < c.tk) {
        const Index end = std::min(c.tk, j + lengths[id % 6]);
        for (; j < end; ++j) options.segments.data()[r * c.tk + j] = id;
        ++id;
      }
    }
  }
  return options;
}

// logsumexp of each query row's scaled, masked scores in double, from the logical [B, H, T, D]
// values (the same masks as ops/attention.hpp); -inf for a row that sees no key.
std::vector<float> reference_lse(const Case& c, const AttentionOptions& options, const std::vector<float>& q, const std::vector<float>& k) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  std::vector<float> lse(static_cast<std::size_t>(c.b * c.h * c.tq));
  for (Index b = 0; b < c.b; ++b)
    for (Index h = 0; h < c.h; ++h)
      for (Index i = 0; i < c.tq; ++i) {
        std::vector<double> s;
        for (Index j = 0; j < c.tk; ++j) {
          if (c.causal && j > i + (c.tk - c.tq)) continue;
          if (options.key_padding.defined() && options.key_padding.data()[b * c.tk + j]) continue;
          if (options.segments.defined() &&
              options.segments.data()[b * c.tk + j] != options.segments.data()[b * c.tk + i + (c.tk - c.tq)])
            continue;
          double dot = 0;
          for (Index x = 0; x < c.d; ++x)
            dot += static_cast<double>(q[static_cast<std::size_t>(((b * c.h + h) * c.tq + i) * c.d + x)]) *
                   static_cast<double>(k[static_cast<std::size_t>(((b * c.h + h) * c.tk + j) * c.d + x)]);
          s.push_back(dot * scale);
        }
        double value = -std::numeric_limits<double>::infinity();
        if (!s.empty()) {
          const double m = *std::max_element(s.begin(), s.end());
          double sum = 0;
          for (const double x : s) sum += std::exp(x - m);
          value = m + std::log(sum);
        }
        lse[static_cast<std::size_t>((b * c.h + h) * c.tq + i)] = static_cast<float>(value);
      }
  return lse;
}

cuda_backend::DeviceAttentionView<bfloat16> device_view(const Tensor<bfloat16, cuda>& t) {
  return {t.data(), t.strides()[0], t.strides()[1], t.strides()[2]};
}

void check_case(Generator& gen, const Case& c) {
  const std::string where = describe(c);
  const AttentionOptions options = make_options(c);
  // bf16 values, in [B, T, H, D] memory when permuted; the CPU reference computes in float on the
  // same (already rounded) values.
  auto make = [&](Index t) { return c.permuted ? random<bfloat16>({c.b, t, c.h, c.d}, gen, -1, 1) : random<bfloat16>({c.b, c.h, t, c.d}, gen, -1, 1); };
  auto view = [&](const auto& t) { return c.permuted ? t.permute({0, 2, 1, 3}) : t; };
  const auto qb = make(c.tq), kb = make(c.tk), vb = make(c.tk);
  auto qh = qb.to<float>(), kh = kb.to<float>(), vh = vb.to<float>();
  auto qd = qb.to<cuda>(), kd = kb.to<cuda>(), vd = vb.to<cuda>();
  for (auto* t : {&qh, &kh, &vh}) t->set_requires_grad();
  for (auto* t : {&qd, &kd, &vd}) t->set_requires_grad();

  const auto oh = scaled_dot_product_attention(view(qh), view(kh), view(vh), options);
  const auto od = scaled_dot_product_attention(view(qd), view(kd), view(vd), options);
  expect_close("tensor-core attention out " + where, od.to<float>(), oh, tolerance);
  const auto up = random<bfloat16>(oh.shape(), gen);
  sum(oh * up.to<float>()).backward();
  sum(od * up.to<cuda>()).backward();
  expect_close("tensor-core attention dq " + where, qd.grad().to<float>(), qh.grad(), tolerance);
  expect_close("tensor-core attention dk " + where, kd.grad().to<float>(), kh.grad(), tolerance);
  expect_close("tensor-core attention dv " + where, vd.grad().to<float>(), vh.grad(), tolerance);

  // The saved logsumexp, from the backend call the op makes, against double precision.
  cuda_backend::DeviceAttentionGeometry g{c.b, c.h, c.tq, c.tk, c.d, c.d, c.causal, nullptr};
  Tensor<std::int64_t, cuda> segments;
  if (options.segments.defined()) {
    segments = options.segments.to<cuda>();
    g.segments = segments.data();
  }
  Tensor<float, cuda> bias;
  if (options.key_padding.defined()) {
    auto host = Tensor<float, cpu>::empty({c.b, c.tk});
    for (Index i = 0; i < c.b * c.tk; ++i) host.data()[i] = options.key_padding.data()[i] ? -std::numeric_limits<float>::infinity() : 0.f;
    bias = host.to<cuda>();
  }
  auto out = Tensor<bfloat16, cuda>::empty({c.b, c.h, c.tq, c.d});
  auto lse = Tensor<float, cuda>::empty({c.b, c.h, c.tq});
  const auto qv = view(qd.detach()), kv = view(kd.detach()), vv = view(vd.detach());
  cuda_backend::attention_forward_tensor_core(g, static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.d))), device_view(qv), device_view(kv),
                                              device_view(vv), bias.defined() ? bias.data() : nullptr, out.data(), lse.data());
  const auto want = reference_lse(c, options, view(qb).to<float>().to_vector(), view(kb).to<float>().to_vector());
  auto want_tensor = Tensor<float, cpu>::empty({c.b, c.h, c.tq});
  std::copy(want.begin(), want.end(), want_tensor.data());
  expect_close("tensor-core attention lse " + where, lse, want_tensor, lse_tolerance);
  check::expect_bitwise("tensor-core attention out, backend call = op " + where, out, od.detach().to<cpu>());
}

// set_tensor_core_attention(false): the float-conversion path, its output bit for bit (float
// attention on the converted operands, rounded to bf16); on: a different output (the tensor-core
// kernels ran), equal to rounding.
void check_switch(Generator& gen) {
  const Index b = 2, h = 2, t = 100, d = 64;
  AttentionOptions options;
  options.causal = true;
  const auto qb = random<bfloat16>({b, h, t, d}, gen, -1, 1), kb = random<bfloat16>({b, h, t, d}, gen, -1, 1);
  const auto vb = random<bfloat16>({b, h, t, d}, gen, -1, 1), up = random<bfloat16>({b, h, t, d}, gen);
  auto run = [&](bool tensor_cores) {
    set_tensor_core_attention(tensor_cores);
    auto q = qb.to<cuda>().set_requires_grad();
    const auto out = scaled_dot_product_attention(q, kb.to<cuda>(), vb.to<cuda>(), options);
    sum(out * up.to<cuda>()).backward();
    set_tensor_core_attention(true);
    return std::pair{out.detach(), q.grad()};
  };
  check::report(tensor_core_attention_enabled(), "tensor-core attention is on by default");
  const auto [off_out, off_dq] = run(false);
  // The conversion path by hand: float operands, float attention, results rounded to bf16.
  auto qf = qb.to<float>().to<cuda>().set_requires_grad();
  const auto float_out = scaled_dot_product_attention(qf, kb.to<float>().to<cuda>(), vb.to<float>().to<cuda>(), options);
  sum(float_out * up.to<float>().to<cuda>()).backward();
  check::expect_bitwise("switch off: out is the float-conversion path's", off_out, float_out.detach().to<bfloat16>().to<cpu>());
  // (dq only to rounding: the op's backward takes delta = rowsum(dO * O) from its bf16 output, the
  // float run from its float output.)
  expect_close("switch off: dq as the float-conversion path's", off_dq.to<float>(), qf.grad().to<cpu>(), tolerance);
  const auto [on_out, on_dq] = run(true);
  const auto a = on_out.to_vector(), o = off_out.to_vector();
  bool differs = false;
  for (std::size_t i = 0; i < a.size() && !differs; ++i) differs = std::memcmp(&a[i], &o[i], sizeof(bfloat16)) != 0;
  check::report(differs, "switch on: the output differs from the conversion path's (the tensor-core kernels ran)");
  expect_close("switch on vs off: out", on_out.to<float>(), off_out.to<float>().to<cpu>(), tolerance);
  expect_close("switch on vs off: dq", on_dq.to<float>(), off_dq.to<float>().to<cpu>(), tolerance);
}

// Rows that are not 16-byte aligned (q a slice of wider rows: row stride 65) are refused by the
// tensor-core path and run through the conversion path, still right.
void check_unaligned_fallback(Generator& gen) {
  const Index b = 1, h = 2, t = 40, d = 64;
  const auto wide = random<bfloat16>({b, h, t, d + 1}, gen, -1, 1);
  const auto kb = random<bfloat16>({b, h, t, d}, gen, -1, 1), vb = random<bfloat16>({b, h, t, d}, gen, -1, 1);
  const auto qd = wide.to<cuda>().slice(3, 1, d + 1);
  const auto qh = wide.to<float>().slice(3, 1, d + 1);
  const auto od = scaled_dot_product_attention(qd, kb.to<cuda>(), vb.to<cuda>());
  const auto oh = scaled_dot_product_attention(qh, kb.to<float>(), vb.to<float>());
  expect_close("unaligned rows fall back to the conversion path: out", od.to<float>(), oh, tolerance);
}

}  // namespace

int main() {
  return check::run("test_attention_tensor_core (cuda)", [] {
    int device = 0, major = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (major < 8) {
      std::printf("compute capability %d.x: no bf16 tensor cores, nothing to check\n", major);
      return;
    }
    Generator gen(20260601);
    for (const Index d : {64, 128}) {
      check_case(gen, {.b = 2, .h = 2, .tq = 64, .tk = 64, .d = d});
      check_case(gen, {.b = 2, .h = 2, .tq = 37, .tk = 37, .d = d, .causal = true});
      check_case(gen, {.b = 1, .h = 3, .tq = 200, .tk = 200, .d = d, .causal = true, .padding = true});
      check_case(gen, {.b = 2, .h = 2, .tq = 1, .tk = 200, .d = d, .causal = true});  // decoding: one query sees every key
      check_case(gen, {.b = 2, .h = 2, .tq = 5, .tk = 37, .d = d, .causal = true, .padding = true});
      check_case(gen, {.b = 2, .h = 2, .tq = 37, .tk = 200, .d = d});
      check_case(gen, {.b = 1, .h = 2, .tq = 1, .tk = 1, .d = d});
      check_case(gen, {.b = 2, .h = 2, .tq = 200, .tk = 200, .d = d, .causal = true, .segments = true});
      check_case(gen, {.b = 2, .h = 2, .tq = 150, .tk = 200, .d = d, .causal = true, .padding = true, .segments = true, .permuted = true});
      check_case(gen, {.b = 2, .h = 2, .tq = 70, .tk = 70, .d = d, .segments = true});
      check_case(gen, {.b = 2, .h = 2, .tq = 37, .tk = 100, .d = d, .causal = true, .padded_row = true});
      check_case(gen, {.b = 2, .h = 3, .tq = 100, .tk = 100, .d = d, .causal = true, .permuted = true});
    }
    check_case(gen, {.b = 1, .h = 2, .tq = 60, .tk = 37, .d = 64, .causal = true});  // Tq > Tk: the first 23 rows see no key
    check_case(gen, {.b = 1, .h = 2, .tq = 1024, .tk = 1024, .d = 64, .causal = true});
    check_case(gen, {.b = 1, .h = 2, .tq = 1024, .tk = 1024, .d = 128, .padding = true});
    check_switch(gen);
    check_unaligned_fallback(gen);
  });
}
