// scaled_dot_product_attention (ops/attention.hpp): forward and backward against a naive double
// reference (the full probability matrix) for sizes crossing the query and key blocks and every
// SIMD width, causal and padding masks, Tq != Tk both ways; gradcheck in double for q, k and v;
// fully masked rows; permuted and broadcast operands; bf16; large scores; shape errors.
// Segments (sequence packing): equal to attending each segment on its own, forward and the three
// gradients, causal or not, with padding, across tiles (some skipped); gradcheck in double.
// The CPU tile kernels (backend/cpu/attention_kernel.hpp): the product against a double loop for
// every row and column remainder and both operand layouts, the transpose exactly. Operands in
// [B, T, H, D] memory (as nn's attention passes them): results and gradients come back in that
// layout, equal to the reference at the GPT head sizes and edge lengths (either side of the
// few-queries dot-product path), bitwise equal to the same op on contiguous copies (masks,
// segments, bf16), and bitwise equal on 1 and 2 threads.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cerberus/backend/cpu/attention_kernel.hpp"
#include "cerberus/ops/attention.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using cerberus::testing::gradcheck;
using cerberus::testing_support::compare;
using cerberus::testing_support::random_uniform;
using cerberus::testing_support::values;
using Inputs = std::vector<Tensor<double>>;

namespace {


struct Dims {
  Index b, h, tq, tk, d, dv;
};

// [B, Tk] with the last `padded[b]` keys of batch entry b padded.
Tensor<std::uint8_t> padding(Index b, Index tk, const std::vector<Index>& padded) {
  std::vector<std::uint8_t> m(static_cast<std::size_t>(b * tk), 0);
  for (Index i = 0; i < b; ++i)
    for (Index j = tk - padded[static_cast<std::size_t>(i)]; j < tk; ++j) m[static_cast<std::size_t>(i * tk + j)] = 1;
  return from_vector<std::uint8_t>(m, Shape{b, tk});
}

struct Reference {
  std::vector<double> out, dq, dk, dv;
};

// The textbook computation in double with the whole probability matrix: P = softmax(scale q k^T
// + mask) (a row with no visible key is all zeros), out = P v, and the gradients for upstream dout.
Reference reference(const Dims& s, const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                    const std::vector<double>& dout, bool causal, const std::vector<std::uint8_t>& pad, double scale) {
  Reference r;
  r.out.assign(static_cast<std::size_t>(s.b * s.h * s.tq * s.dv), 0.0);
  r.dq.assign(static_cast<std::size_t>(s.b * s.h * s.tq * s.d), 0.0);
  r.dk.assign(static_cast<std::size_t>(s.b * s.h * s.tk * s.d), 0.0);
  r.dv.assign(static_cast<std::size_t>(s.b * s.h * s.tk * s.dv), 0.0);
  auto at = [](Index bh, Index t, Index T, Index i, Index X) { return static_cast<std::size_t>((bh * T + t) * X + i); };
  for (Index b = 0; b < s.b; ++b)
    for (Index h = 0; h < s.h; ++h) {
      const Index bh = b * s.h + h;
      std::vector<double> p(static_cast<std::size_t>(s.tq * s.tk), 0.0);
      for (Index i = 0; i < s.tq; ++i) {
        std::vector<double> sc(static_cast<std::size_t>(s.tk), -std::numeric_limits<double>::infinity());
        double m = -std::numeric_limits<double>::infinity();
        for (Index j = 0; j < s.tk; ++j) {
          const bool visible = (!causal || j <= i + s.tk - s.tq) && (pad.empty() || !pad[static_cast<std::size_t>(b * s.tk + j)]);
          if (!visible) continue;
          double dot = 0;
          for (Index c = 0; c < s.d; ++c) dot += q[at(bh, i, s.tq, c, s.d)] * k[at(bh, j, s.tk, c, s.d)];
          sc[static_cast<std::size_t>(j)] = scale * dot;
          m = std::max(m, scale * dot);
        }
        if (m == -std::numeric_limits<double>::infinity()) continue;
        double sum = 0;
        for (Index j = 0; j < s.tk; ++j) sum += std::exp(sc[static_cast<std::size_t>(j)] - m);
        for (Index j = 0; j < s.tk; ++j) p[static_cast<std::size_t>(i * s.tk + j)] = std::exp(sc[static_cast<std::size_t>(j)] - m) / sum;
      }
      for (Index i = 0; i < s.tq; ++i) {
        std::vector<double> dp(static_cast<std::size_t>(s.tk), 0.0);
        double row = 0;
        for (Index j = 0; j < s.tk; ++j) {
          const double pij = p[static_cast<std::size_t>(i * s.tk + j)];
          for (Index c = 0; c < s.dv; ++c) {
            r.out[at(bh, i, s.tq, c, s.dv)] += pij * v[at(bh, j, s.tk, c, s.dv)];
            dp[static_cast<std::size_t>(j)] += dout[at(bh, i, s.tq, c, s.dv)] * v[at(bh, j, s.tk, c, s.dv)];
            r.dv[at(bh, j, s.tk, c, s.dv)] += pij * dout[at(bh, i, s.tq, c, s.dv)];
          }
          row += pij * dp[static_cast<std::size_t>(j)];
        }
        for (Index j = 0; j < s.tk; ++j) {
          const double ds = p[static_cast<std::size_t>(i * s.tk + j)] * (dp[static_cast<std::size_t>(j)] - row) * scale;
          for (Index c = 0; c < s.d; ++c) {
            r.dq[at(bh, i, s.tq, c, s.d)] += ds * k[at(bh, j, s.tk, c, s.d)];
            r.dk[at(bh, j, s.tk, c, s.d)] += ds * q[at(bh, i, s.tq, c, s.d)];
          }
        }
      }
    }
  return r;
}

// Runs the op with gradients on T inputs and compares output and gradients with the reference.
template <class T>
void check_against_reference(const Dims& s, bool causal, const std::vector<Index>& padded, double tol, std::uint64_t seed) {
  const auto qd = random_uniform<double>({s.b, s.h, s.tq, s.d}, -1.5, 1.5, seed);
  const auto kd = random_uniform<double>({s.b, s.h, s.tk, s.d}, -1.5, 1.5, seed + 1);
  const auto vd = random_uniform<double>({s.b, s.h, s.tk, s.dv}, -1, 1, seed + 2);
  const auto gd = random_uniform<double>({s.b, s.h, s.tq, s.dv}, -1, 1, seed + 3);
  Tensor<T> q = qd.to<T>(), k = kd.to<T>(), v = vd.to<T>();
  q.set_requires_grad();
  k.set_requires_grad();
  v.set_requires_grad();
  AttentionOptions o{.causal = causal};
  if (!padded.empty()) o.key_padding = padding(s.b, s.tk, padded);
  const auto out = scaled_dot_product_attention(q, k, v, o);
  REQUIRE(out.shape() == Shape{s.b, s.h, s.tq, s.dv});
  out.backward(gd.to<T>());
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.d));
  const auto ref = reference(s, values(q), values(k), values(v), values(gd.to<T>()), causal,
                             o.key_padding.defined() ? o.key_padding.to_vector() : std::vector<std::uint8_t>{}, scale);
  const std::pair<const char*, std::pair<std::vector<double>, const std::vector<double>*>> checks[] = {
      {"out", {values(out), &ref.out}}, {"dq", {values(q.grad()), &ref.dq}}, {"dk", {values(k.grad()), &ref.dk}},
      {"dv", {values(v.grad()), &ref.dv}}};
  for (const auto& [what, pair] : checks) {
    const auto c = compare(pair.first, *pair.second, tol, tol);
    INFO(what << " [" << s.b << ", " << s.h << ", Tq " << s.tq << ", Tk " << s.tk << ", D " << s.d << ", Dv " << s.dv
              << "] causal " << causal << ", padded " << !padded.empty() << ": " << c.describe());
    CHECK(c.ok());
  }
}

void expect_gradients_match(const std::string& what, const cerberus::testing::DifferentiableFn& fn, const Inputs& inputs) {
  const auto r = gradcheck(fn, inputs);
  INFO(what << ": " << r.message);
  CHECK(r.ok);
}

}  // namespace

TEMPLATE_TEST_CASE("attention forward and backward match the full-matrix reference", "[attention]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-11;
  const std::vector<Dims> sizes = {
      {1, 1, 1, 1, 1, 1},     {2, 3, 5, 9, 7, 16},   {2, 2, 9, 5, 33, 7},      // Tq < Tk, Tq > Tk, odd widths
      {1, 2, 70, 300, 16, 33}, {2, 1, 130, 130, 64, 64}, {1, 1, 1, 513, 32, 32},  // across query and key blocks; decoding
  };
  for (const auto& s : sizes)
    for (const bool causal : {false, true}) {
      check_against_reference<T>(s, causal, {}, tol, 10);
      std::vector<Index> padded(static_cast<std::size_t>(s.b), 0);
      padded[0] = s.tk / 3;  // entry 0 pads its last third; others none
      if (s.b > 1) padded[1] = s.tk - 1;
      check_against_reference<T>(s, causal, padded, tol, 20);
    }
}

TEST_CASE("attention: gradients match finite differences in double", "[attention][grad]") {
  const auto q = random_uniform<double>({2, 2, 3, 4}, -1, 1, 31), k = random_uniform<double>({2, 2, 5, 4}, -1, 1, 32), v = random_uniform<double>({2, 2, 5, 3}, -1, 1, 33);
  const auto pad = padding(2, 5, {1, 3});
  const std::vector<std::pair<std::string, AttentionOptions>> cases = {
      {"plain", {}},
      {"causal", {.causal = true}},
      {"key padding", {.key_padding = pad}},
      {"causal + key padding", {.causal = true, .key_padding = pad}},
      {"scale 0.3", {.scale = 0.3}},
  };
  for (const auto& [what, o] : cases) {
    expect_gradients_match(what + ", Tq < Tk", [&o = o](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2], o); },
                           {q, k, v});
    // Tq > Tk: with causal, query 0 sees no key (zeros, no gradient).
    expect_gradients_match(what + ", Tq > Tk", [&o = o](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2], o); },
                           {random_uniform<double>({2, 2, 7, 4}, -1, 1, 34), k, v});
  }
  // Operands from a [B, T, H, D] projection, permuted to [B, H, T, D] (strided, not copied).
  expect_gradients_match("permuted operands",
                         [](const Inputs& x) {
                           return scaled_dot_product_attention(x[0].permute({0, 2, 1, 3}), x[1].permute({0, 2, 1, 3}),
                                                               x[2].permute({0, 2, 1, 3}), {.causal = true});
                         },
                         {random_uniform<double>({2, 4, 3, 5}, -1, 1, 35), random_uniform<double>({2, 4, 3, 5}, -1, 1, 36), random_uniform<double>({2, 4, 3, 2}, -1, 1, 37)});
  // 25 queries: the transposed-keys path (the cases above have fewer than
  // attention_transpose_min_queries queries and take dot products), operands in [B, T, H, D].
  expect_gradients_match("transposed keys, causal",
                         [](const Inputs& x) {
                           return scaled_dot_product_attention(x[0].permute({0, 2, 1, 3}), x[1].permute({0, 2, 1, 3}),
                                                               x[2].permute({0, 2, 1, 3}), {.causal = true});
                         },
                         {random_uniform<double>({1, 25, 2, 3}, -1, 1, 41), random_uniform<double>({1, 25, 2, 3}, -1, 1, 42),
                          random_uniform<double>({1, 25, 2, 2}, -1, 1, 43)});
  // Keys and values shared by every head (multi-query attention through expand: stride 0).
  expect_gradients_match("keys broadcast over heads",
                         [](const Inputs& x) {
                           return scaled_dot_product_attention(x[0], x[1].expand({2, 3, 4, 5}), x[2].expand({2, 3, 4, 2}), {});
                         },
                         {random_uniform<double>({2, 3, 4, 5}, -1, 1, 38), random_uniform<double>({2, 1, 4, 5}, -1, 1, 39), random_uniform<double>({2, 1, 4, 2}, -1, 1, 40)});
}

TEST_CASE("attention: rows whose keys are all masked give zeros and zero gradients, never NaN", "[attention]") {
  Tensor<float> q = random_uniform<float>({2, 2, 4, 8}, -1, 1, 41), k = random_uniform<float>({2, 2, 6, 8}, -1, 1, 42), v = random_uniform<float>({2, 2, 6, 8}, -1, 1, 43);
  q.set_requires_grad();
  k.set_requires_grad();
  v.set_requires_grad();
  const auto out = scaled_dot_product_attention(q, k, v, {.key_padding = padding(2, 6, {6, 0})});  // entry 0: every key padded
  out.backward(ones<float>(out.shape()));
  const auto o = out.to_vector(), dq = q.grad().to_vector(), dk = k.grad().to_vector(), dv = v.grad().to_vector();
  for (std::size_t i = 0; i < o.size() / 2; ++i) CHECK(o[i] == 0.0f);  // entry 0
  for (std::size_t i = 0; i < dq.size() / 2; ++i) CHECK(dq[i] == 0.0f);
  for (std::size_t i = 0; i < dk.size() / 2; ++i) CHECK((dk[i] == 0.0f && dv[i] == 0.0f));
  for (const float x : o) CHECK(std::isfinite(x));
  for (const float x : dq) CHECK(std::isfinite(x));

  // Causal with more queries than keys: the first Tq - Tk queries see nothing.
  const auto c = scaled_dot_product_attention(random_uniform<float>({1, 1, 5, 4}, -1, 1, 44), random_uniform<float>({1, 1, 2, 4}, -1, 1, 45),
                                              random_uniform<float>({1, 1, 2, 4}, -1, 1, 46), {.causal = true});
  const auto cv = c.to_vector();
  for (std::size_t i = 0; i < 12; ++i) CHECK(cv[i] == 0.0f);
  for (std::size_t i = 12; i < cv.size(); ++i) CHECK(cv[i] != 0.0f);
}

TEST_CASE("attention: decoding one query with causal equals attending every key", "[attention]") {
  const auto q = random_uniform<float>({2, 3, 1, 16}, -1, 1, 51), k = random_uniform<float>({2, 3, 40, 16}, -1, 1, 52), v = random_uniform<float>({2, 3, 40, 8}, -1, 1, 53);
  const auto a = scaled_dot_product_attention(q, k, v, {.causal = true});
  const auto b = scaled_dot_product_attention(q, k, v);
  CHECK(a.to_vector() == b.to_vector());
}

TEST_CASE("attention: large scores stay finite (online softmax keeps a running max)", "[attention][stability]") {
  const auto q = random_uniform<float>({1, 2, 70, 16}, -1, 1, 61), k = random_uniform<float>({1, 2, 300, 16}, -1, 1, 62), v = random_uniform<float>({1, 2, 300, 16}, -1, 1, 63);
  Tensor<float> qs = Tensor<float>(q * 400.0f);  // scores up to ~1e3 after scaling
  qs.set_requires_grad();
  const auto out = scaled_dot_product_attention(qs, k, v, {.causal = true});
  out.backward(ones<float>(out.shape()));
  for (const float x : out.to_vector()) REQUIRE(std::isfinite(x));
  for (const float x : qs.grad().to_vector()) REQUIRE(std::isfinite(x));
  const auto want = reference({1, 2, 70, 300, 16, 16}, values(qs), values(k), values(v), values(ones<float>(out.shape())), true, {}, 0.25);
  const auto c = compare(values(out), want.out, 1e-4, 1e-4);
  INFO(c.describe());
  CHECK(c.ok());
}

TEST_CASE("attention: bf16 computes in float and rounds once", "[attention]") {
  const auto qf = random_uniform<float>({2, 2, 20, 16}, -1, 1, 71), kf = random_uniform<float>({2, 2, 30, 16}, -1, 1, 72), vf = random_uniform<float>({2, 2, 30, 8}, -1, 1, 73);
  Tensor<bfloat16> q = qf.to<bfloat16>(), k = kf.to<bfloat16>(), v = vf.to<bfloat16>();
  q.set_requires_grad();
  const auto out = scaled_dot_product_attention(q, k, v, {.causal = true});
  out.backward(ones<bfloat16>(out.shape()));
  const Dims s{2, 2, 20, 30, 16, 8};
  const auto ref = reference(s, values(q), values(k), values(v), values(ones<float>(out.shape())), true, {}, 0.25);
  CHECK(compare(values(out), ref.out, 1e-2, 1e-2).ok());
  const auto c = compare(values(q.grad()), ref.dq, 2e-2, 2e-2);
  INFO(c.describe());
  CHECK(c.ok());
}

TEST_CASE("attention: results do not depend on the thread count", "[attention]") {
  const auto q = random_uniform<float>({2, 4, 100, 32}, -1, 1, 81), k = random_uniform<float>({2, 4, 100, 32}, -1, 1, 82), v = random_uniform<float>({2, 4, 100, 32}, -1, 1, 83);
  auto run = [&] {
    Tensor<float> qq = q.clone();
    qq.set_requires_grad();
    const auto out = scaled_dot_product_attention(qq, k, v, {.causal = true});
    out.backward(ones<float>(out.shape()));
    return std::pair{out.to_vector(), qq.grad().to_vector()};
  };
  const auto one = testing_support::with_threads(1, run), two = testing_support::with_threads(2, run);
  CHECK(one == two);
}

namespace {

// Segment ids [B, Tk] from per-row segment lengths (each row's lengths sum to Tk).
Tensor<std::int64_t> segment_ids(const std::vector<std::vector<Index>>& lengths, Index tk) {
  std::vector<std::int64_t> ids;
  for (const auto& row : lengths) {
    Index n = 0;
    for (std::size_t s = 0; s < row.size(); ++s)
      for (Index j = 0; j < row[s]; ++j, ++n) ids.push_back(static_cast<std::int64_t>(s));
    REQUIRE(n == tk);
  }
  return from_vector<std::int64_t>(ids, Shape{static_cast<Index>(lengths.size()), tk});
}

// Attention with segments against attending each segment of each batch row on its own: the
// segment's keys [a, e) and the queries at key positions in [a, e) (a suffix of the segment,
// since the queries are the last Tq keys), with the segment's slice of the padding. Forward and
// the gradients of q, k and v for one upstream gradient.
template <class T>
void check_segments_against_separate_runs(const Dims& s, const std::vector<std::vector<Index>>& lengths, bool causal,
                                          const std::vector<Index>& padded, double tol) {
  const auto seed = static_cast<std::uint64_t>(s.tq * 7 + s.tk + (causal ? 1000 : 0));
  auto leaf = [](Tensor<T> t) {
    t.set_requires_grad();
    return t;
  };
  const Tensor<T> q = leaf(random_uniform<double>({s.b, s.h, s.tq, s.d}, -1.5, 1.5, seed).to<T>());
  const Tensor<T> k = leaf(random_uniform<double>({s.b, s.h, s.tk, s.d}, -1.5, 1.5, seed + 1).to<T>());
  const Tensor<T> v = leaf(random_uniform<double>({s.b, s.h, s.tk, s.dv}, -1, 1, seed + 2).to<T>());
  const Tensor<T> g = random_uniform<double>({s.b, s.h, s.tq, s.dv}, -1, 1, seed + 3).to<T>();
  AttentionOptions o{.causal = causal, .segments = segment_ids(lengths, s.tk)};
  if (!padded.empty()) o.key_padding = padding(s.b, s.tk, padded);
  const auto packed = scaled_dot_product_attention(q, k, v, o);
  packed.backward(g);
  const auto out_packed = values(packed), dq_packed = values(q.grad()), dk_packed = values(k.grad()), dv_packed = values(v.grad());

  const Tensor<T> q2 = leaf(q.detach().clone()), k2 = leaf(k.detach().clone()), v2 = leaf(v.detach().clone());
  std::vector<double> out_separate(out_packed.size(), 0.0);
  const Index shift = s.tk - s.tq;
  for (Index b = 0; b < s.b; ++b) {
    Index a = 0;
    for (const Index len : lengths[static_cast<std::size_t>(b)]) {
      const Index e = a + len, qa = std::max<Index>(a - shift, 0), qe = e - shift;
      if (qe > qa) {
        AttentionOptions so{.causal = causal};
        if (o.key_padding.defined()) so.key_padding = o.key_padding.slice(0, b, b + 1).slice(1, a, e).contiguous();
        const auto part = scaled_dot_product_attention(q2.slice(0, b, b + 1).slice(2, qa, qe), k2.slice(0, b, b + 1).slice(2, a, e),
                                                       v2.slice(0, b, b + 1).slice(2, a, e), so);
        part.backward(g.slice(0, b, b + 1).slice(2, qa, qe).contiguous());
        const auto pv = values(part);
        for (Index h = 0; h < s.h; ++h)
          for (Index i = qa; i < qe; ++i)
            for (Index c = 0; c < s.dv; ++c)
              out_separate[static_cast<std::size_t>(((b * s.h + h) * s.tq + i) * s.dv + c)] = pv[static_cast<std::size_t>((h * (qe - qa) + i - qa) * s.dv + c)];
      }
      a = e;
    }
  }
  // Keys no query can see (a segment before the first query) get no gradient in either run.
  const auto zero_if_undefined = [](const Tensor<T>& grad, std::size_t n) { return grad.defined() ? values(grad) : std::vector<double>(n, 0.0); };
  const std::pair<const char*, std::pair<std::vector<double>, std::vector<double>>> checks[] = {
      {"out", {out_packed, out_separate}},
      {"dq", {dq_packed, zero_if_undefined(q2.grad(), dq_packed.size())}},
      {"dk", {dk_packed, zero_if_undefined(k2.grad(), dk_packed.size())}},
      {"dv", {dv_packed, zero_if_undefined(v2.grad(), dv_packed.size())}}};
  for (const auto& [what, pair] : checks) {
    const auto c = compare(pair.first, pair.second, tol, tol);
    INFO(what << " [" << s.b << ", " << s.h << ", Tq " << s.tq << ", Tk " << s.tk << "] causal " << causal << ", padded " << !padded.empty()
              << ": " << c.describe());
    CHECK(c.ok());
  }
}

}  // namespace

TEMPLATE_TEST_CASE("attention with segments equals attending each segment on its own", "[attention][segments]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-11;
  for (const bool causal : {false, true}) {
    // Small: segments of one key, Tq = Tk and Tq < Tk (the first segment holds no query).
    check_segments_against_separate_runs<T>({2, 2, 9, 9, 8, 5}, {{3, 1, 5}, {9}}, causal, {}, tol);
    check_segments_against_separate_runs<T>({2, 2, 6, 10, 8, 8}, {{4, 4, 2}, {1, 2, 3, 4}}, causal, {}, tol);
    // Padding inside the last segment, and a row whose last segment is all padding.
    check_segments_against_separate_runs<T>({2, 1, 12, 12, 16, 16}, {{5, 7}, {6, 3, 3}}, causal, {4, 3}, tol);
    // Across query and key blocks (64 x 256): tiles whose segments cannot meet are skipped.
    check_segments_against_separate_runs<T>({1, 2, 300, 600, 16, 16}, {{100, 250, 3, 47, 200}}, causal, {}, tol);
    check_segments_against_separate_runs<T>({2, 1, 520, 520, 8, 8}, {{520}, {64, 64, 128, 200, 64}}, causal, {10, 0}, tol);
  }
}

TEST_CASE("attention with segments: gradients match finite differences in double", "[attention][segments][grad]") {
  const auto q = random_uniform<double>({2, 2, 4, 4}, -1, 1, 51), k = random_uniform<double>({2, 2, 6, 4}, -1, 1, 52),
             v = random_uniform<double>({2, 2, 6, 3}, -1, 1, 53);
  // Row 0 packs three examples; row 1 interleaves its ids (the mask does not need contiguous segments).
  const auto seg = from_vector<std::int64_t>({0, 0, 1, 1, 1, 2, 0, 1, 0, 1, 1, 0}, Shape{2, 6});
  const auto pad = padding(2, 6, {1, 0});
  const std::vector<std::pair<std::string, AttentionOptions>> cases = {
      {"segments", {.segments = seg}},
      {"segments + causal", {.causal = true, .segments = seg}},
      {"segments + causal + key padding", {.causal = true, .key_padding = pad, .segments = seg}},
  };
  for (const auto& [what, o] : cases)
    expect_gradients_match(what, [&o = o](const Inputs& x) { return scaled_dot_product_attention(x[0], x[1], x[2], o); }, {q, k, v});
}

TEST_CASE("attention with one segment per row equals attention without segments", "[attention][segments]") {
  const auto q = random_uniform<float>({2, 2, 70, 8}, -1, 1, 61), k = random_uniform<float>({2, 2, 300, 8}, -1, 1, 62),
             v = random_uniform<float>({2, 2, 300, 8}, -1, 1, 63);
  const auto plain = scaled_dot_product_attention(q, k, v, {.causal = true});
  const auto one = scaled_dot_product_attention(q, k, v, {.causal = true, .segments = full<std::int64_t>(Shape{2, 300}, 7)});
  CHECK(plain.to_vector() == one.to_vector());
}

TEST_CASE("attention: a query whose segment has only padded keys gets zeros, never NaN", "[attention][segments]") {
  Tensor<float> q = random_uniform<float>({1, 1, 4, 8}, -1, 1, 71), k = random_uniform<float>({1, 1, 4, 8}, -1, 1, 72),
                v = random_uniform<float>({1, 1, 4, 8}, -1, 1, 73);
  q.set_requires_grad();
  const auto seg = from_vector<std::int64_t>({0, 0, 1, 1}, Shape{1, 4});
  const auto out = scaled_dot_product_attention(q, k, v, {.key_padding = padding(1, 4, {2}), .segments = seg});
  out.backward(ones<float>(out.shape()));
  const auto o = out.to_vector(), dq = q.grad().to_vector();
  for (std::size_t i = 0; i < o.size(); ++i) CHECK(std::isfinite(o[i]));
  for (std::size_t i = 16; i < 32; ++i) CHECK((o[i] == 0.0f && dq[i] == 0.0f));  // queries 2, 3: segment 1 is all padding
}

TEST_CASE("attention names the op and the shapes in its errors", "[attention][errors]") {
  const auto q = zeros<float>({2, 3, 4, 8}), k = zeros<float>({2, 3, 5, 8}), v = zeros<float>({2, 3, 5, 6});
  try {
    (void)scaled_dot_product_attention(q, zeros<float>({2, 3, 5, 7}), v);
    FAIL("no exception");
  } catch (const ShapeError& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.find("[scaled_dot_product_attention]") != std::string::npos);
    CHECK(m.find("[2, 3, 4, 8]") != std::string::npos);
    CHECK(m.find("[2, 3, 5, 7]") != std::string::npos);
  }
  CHECK_THROWS_AS(scaled_dot_product_attention(q, k, zeros<float>({2, 3, 4, 6})), ShapeError);  // v's Tk
  CHECK_THROWS_AS(scaled_dot_product_attention(q, zeros<float>({2, 2, 5, 8}), zeros<float>({2, 2, 5, 6})), ShapeError);
  CHECK_THROWS_AS(scaled_dot_product_attention(zeros<float>({3, 4, 8}), k, v), ShapeError);
  try {
    (void)scaled_dot_product_attention(q, k, v, {.key_padding = zeros<std::uint8_t>({2, 4})});
    FAIL("no exception");
  } catch (const ShapeError& e) {
    const std::string m = e.what();
    CHECK(m.find("key_padding") != std::string::npos);
    CHECK(m.find("[2, 4]") != std::string::npos);
  }
  // Segments: [B, Tk] (int64 is the type of the option, so a wrong dtype does not compile).
  try {
    (void)scaled_dot_product_attention(q, k, v, {.segments = zeros<std::int64_t>({2, 4})});
    FAIL("no exception");
  } catch (const ShapeError& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(m.find("[scaled_dot_product_attention] segments") != std::string::npos);
    CHECK(m.find("[2, 4]") != std::string::npos);
    CHECK(m.find("[2, 3, 4, 8]") != std::string::npos);
    CHECK(m.find("[2, 3, 5, 8]") != std::string::npos);
  }
  // Tq > Tk: queries have no key position, hence no segment.
  CHECK_THROWS_AS(scaled_dot_product_attention(zeros<float>({2, 3, 6, 8}), k, v, {.segments = zeros<std::int64_t>({2, 5})}), ShapeError);
}

// ---- the CPU tile kernels and the [B, T, H, D] result layout ----------------------------------

namespace {

// c (+)= alpha * A B in double, for A read through (a_rs, a_ks) and B through b_ks.
template <class C>
std::vector<double> naive_product(Index m, Index n, Index depth, double alpha, const std::vector<C>& a, Index a_rs, Index a_ks,
                                  const std::vector<C>& b, Index b_ks, const std::vector<C>& c, Index c_rs, bool accumulate) {
  std::vector<double> r(c.begin(), c.end());
  for (Index i = 0; i < m; ++i)
    for (Index j = 0; j < n; ++j) {
      double sum = 0;
      for (Index p = 0; p < depth; ++p)
        sum += static_cast<double>(a[static_cast<std::size_t>(i * a_rs + p * a_ks)]) * static_cast<double>(b[static_cast<std::size_t>(p * b_ks + j)]);
      double& out = r[static_cast<std::size_t>(i * c_rs + j)];
      out = accumulate ? out + alpha * sum : alpha * sum;
    }
  return r;
}

template <class C>
std::vector<C> random_values(std::size_t n, std::uint64_t seed) {
  const auto t = random_uniform<double>({static_cast<Index>(n)}, -1, 1, seed);
  std::vector<C> r;
  for (const double x : values(t)) r.push_back(static_cast<C>(x));
  return r;
}

}  // namespace

TEMPLATE_TEST_CASE("attention tile product matches a double loop for every remainder and layout", "[attention][kernel]", float, double) {
  using C = TestType;
  const double tol = std::is_same_v<C, float> ? 1e-5 : 1e-13;
  namespace ak = cpu_backend::attention_kernel;
  // Rows: every remainder of the row block; columns: below one vector, vector tails, several
  // column blocks (80 = 5 vectors of float: a 4-vector block plus a 1-vector block).
  for (const Index m : {Index{1}, Index{5}, Index{6}, Index{7}, Index{13}, Index{64}})
    for (const Index n : {Index{1}, Index{3}, Index{8}, Index{16}, Index{17}, Index{64}, Index{80}, Index{130}})
      for (const Index depth : {Index{1}, Index{16}, Index{67}})
        for (const bool transposed_a : {false, true})
          for (const bool accumulate : {false, true}) {
            // A [m, depth] inside a padded buffer: rows contiguous (q, P) or columns contiguous (P^T).
            const Index a_rs = transposed_a ? 1 : depth + 3, a_ks = transposed_a ? m + 2 : 1;
            const Index b_ks = n + 5, c_rs = n + 7;
            const auto a = random_values<C>(static_cast<std::size_t>(transposed_a ? depth * a_ks : m * a_rs), 100 + m);
            const auto b = random_values<C>(static_cast<std::size_t>(depth * b_ks), 200 + n);
            auto c = random_values<C>(static_cast<std::size_t>(m * c_rs), 300 + depth);
            const auto want = naive_product(m, n, depth, 0.37, a, a_rs, a_ks, b, b_ks, c, c_rs, accumulate);
            ak::tile_product<C>(m, n, depth, C(0.37), a.data(), a_rs, a_ks, b.data(), b_ks, c.data(), c_rs, accumulate);
            // Padding between C's rows is never written.
            std::vector<double> got(c.begin(), c.end());
            const auto r = compare(got, want, tol, tol);
            INFO("m " << m << ", n " << n << ", depth " << depth << ", A transposed " << transposed_a << ", accumulate " << accumulate << ": "
                      << r.describe());
            CHECK(r.ok());
          }
}

TEMPLATE_TEST_CASE("attention transpose lays keys out exactly, zero-padded", "[attention][kernel]", float, double) {
  using C = TestType;
  for (const Index rows : {Index{1}, Index{7}, Index{8}, Index{13}, Index{64}, Index{130}})
    for (const Index cols : {Index{1}, Index{5}, Index{8}, Index{20}, Index{64}, Index{80}}) {
      const Index rs = cols + 3, padded = (rows + 15) / 16 * 16, ld = padded + 4;
      const auto src = random_values<C>(static_cast<std::size_t>(rows * rs), 400 + rows * cols);
      std::vector<C> dst(static_cast<std::size_t>(cols * ld), C(-7));
      cpu_backend::attention_kernel::transpose_rows(dst.data(), ld, src.data(), rs, rows, cols, padded);
      bool exact = true;
      for (Index c = 0; c < cols; ++c)
        for (Index r = 0; r < ld; ++r) {
          const C want = r < rows ? src[static_cast<std::size_t>(r * rs + c)] : r < padded ? C(0) : C(-7);  // past `padded`: untouched
          exact = exact && dst[static_cast<std::size_t>(c * ld + r)] == want;
        }
      INFO("rows " << rows << ", cols " << cols);
      CHECK(exact);
    }
}

namespace {

// q, k, v as a model passes them: [B, T, H, X] leaves viewed as [B, H, T, X].
template <class T>
struct HeadsInner {
  Tensor<T> q, k, v;  // leaves, [B, T, H, X]
  Tensor<T> qv() const { return q.permute({0, 2, 1, 3}); }
  Tensor<T> kv() const { return k.permute({0, 2, 1, 3}); }
  Tensor<T> vv() const { return v.permute({0, 2, 1, 3}); }
};

template <class T>
HeadsInner<T> heads_inner(const Dims& s, std::uint64_t seed) {
  HeadsInner<T> r{random_uniform<double>({s.b, s.tq, s.h, s.d}, -1.5, 1.5, seed).to<T>(),
                  random_uniform<double>({s.b, s.tk, s.h, s.d}, -1.5, 1.5, seed + 1).to<T>(),
                  random_uniform<double>({s.b, s.tk, s.h, s.dv}, -1, 1, seed + 2).to<T>()};
  r.q.set_requires_grad();
  r.k.set_requires_grad();
  r.v.set_requires_grad();
  return r;
}

// t [B, H, T, X] laid out as [B, T, H, X]: permuting it back is a contiguous tensor, so a
// reshape to [B, T, H * X] (the output projection's input) is a view.
template <class T>
bool in_heads_inner_layout(const Tensor<T>& t) {
  return t.permute({0, 2, 1, 3}).is_contiguous() && !t.is_contiguous();
}

}  // namespace

TEMPLATE_TEST_CASE("attention on [B, T, H, D] operands returns results and gradients in that layout, matching the reference",
                   "[attention][layout]", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 3e-5 : 1e-11;
  // The GPT shapes' head size 64 and the other common ones; T not a multiple of the 64-query or
  // 256-key blocks, and T = 1 (decoding: one query).
  // Tq below attention_transpose_min_queries (24) takes the dot-product path for few queries,
  // the others the transposed keys.
  static_assert(cpu_backend::attention_transpose_min_queries == 24, "the sizes below straddle it");
  const std::vector<Dims> sizes = {{2, 3, 1, 1, 64, 64},     {2, 3, 1, 300, 64, 64},   {2, 2, 23, 40, 64, 64},    {2, 2, 24, 40, 64, 64},
                                   {1, 2, 130, 130, 16, 16}, {2, 2, 77, 77, 32, 32},   {1, 4, 129, 129, 64, 64},  {1, 2, 65, 300, 80, 80},
                                   {1, 2, 100, 100, 128, 128}};
  for (const auto& s : sizes)
    for (const bool causal : {false, true})
      for (const bool padded : {false, true}) {
        const auto x = heads_inner<T>(s, 500 + s.d + s.tq);
        AttentionOptions o{.causal = causal};
        if (padded) o.key_padding = padding(s.b, s.tk, std::vector<Index>(static_cast<std::size_t>(s.b), s.tk / 3));
        const auto gd = random_uniform<double>({s.b, s.h, s.tq, s.dv}, -1, 1, 600);
        const auto out = scaled_dot_product_attention(x.qv(), x.kv(), x.vv(), o);
        out.backward(gd.to<T>());
        INFO("[" << s.b << ", " << s.h << ", Tq " << s.tq << ", Tk " << s.tk << ", D " << s.d << "] causal " << causal << ", padded " << padded);
        if (s.tq > 1) CHECK(in_heads_inner_layout(out));
        // The gradients arrive at the [B, T, H, X] leaves without a transpose in between.
        CHECK(x.q.grad().is_contiguous());
        CHECK(x.k.grad().is_contiguous());
        CHECK(x.v.grad().is_contiguous());
        const auto ref = reference(s, values(x.qv()), values(x.kv()), values(x.vv()), values(gd.to<T>()), causal,
                                   o.key_padding.defined() ? o.key_padding.to_vector() : std::vector<std::uint8_t>{},
                                   1.0 / std::sqrt(static_cast<double>(s.d)));
        const std::pair<const char*, std::pair<std::vector<double>, const std::vector<double>*>> checks[] = {
            {"out", {values(out), &ref.out}},
            {"dq", {values(x.q.grad().permute({0, 2, 1, 3})), &ref.dq}},
            {"dk", {values(x.k.grad().permute({0, 2, 1, 3})), &ref.dk}},
            {"dv", {values(x.v.grad().permute({0, 2, 1, 3})), &ref.dv}}};
        for (const auto& [what, pair] : checks) {
          const auto c = compare(pair.first, *pair.second, tol, tol);
          INFO(what << ": " << c.describe());
          CHECK(c.ok());
        }
      }
}

TEST_CASE("attention: the [B, T, H, D] layout changes no value (masks, segments, bf16)", "[attention][layout]") {
  // The kernels read and write through strides only: the same op on contiguous copies of the
  // operands gives bitwise the same output and gradients.
  const Dims s{2, 3, 150, 150, 64, 64};
  const auto seg = segment_ids({{40, 60, 50}, {150}}, 150);
  const std::vector<std::pair<std::string, AttentionOptions>> cases = {
      {"causal", {.causal = true}},
      {"padding", {.key_padding = padding(2, 150, {20, 0})}},
      {"causal + segments + padding", {.causal = true, .key_padding = padding(2, 150, {0, 7}), .segments = seg}},
  };
  const auto check_same = [](const auto& inner, const auto& plain) {
    return values(inner.permute({0, 2, 1, 3}).contiguous()) == values(plain.permute({0, 2, 1, 3}).contiguous());
  };
  for (const auto& [what, o] : cases) {
    INFO(what);
    const auto x = heads_inner<float>(s, 700);
    Tensor<float> q = x.qv().detach().contiguous(), k = x.kv().detach().contiguous(), v = x.vv().detach().contiguous();
    q.set_requires_grad();
    k.set_requires_grad();
    v.set_requires_grad();
    const auto g = random_uniform<float>({s.b, s.h, s.tq, s.dv}, -1, 1, 701);
    const auto inner = scaled_dot_product_attention(x.qv(), x.kv(), x.vv(), o);
    const auto plain = scaled_dot_product_attention(q, k, v, o);
    CHECK(in_heads_inner_layout(inner));
    CHECK(plain.is_contiguous());
    inner.backward(g);
    plain.backward(g);
    CHECK(values(inner) == values(plain));
    CHECK(check_same(x.q.grad().permute({0, 2, 1, 3}), q.grad()));
    CHECK(check_same(x.k.grad().permute({0, 2, 1, 3}), k.grad()));
    CHECK(check_same(x.v.grad().permute({0, 2, 1, 3}), v.grad()));
  }
  // bf16: converted to float, computed, rounded once, and still returned in the operands' layout.
  const auto x = heads_inner<bfloat16>({2, 2, 40, 40, 32, 32}, 710);
  const auto out = scaled_dot_product_attention(x.qv(), x.kv(), x.vv(), {.causal = true});
  CHECK(in_heads_inner_layout(out));
  out.backward(ones<bfloat16>(out.shape()));
  CHECK(x.q.grad().is_contiguous());
  const auto plain = scaled_dot_product_attention(x.qv().detach().contiguous(), x.kv().detach().contiguous(), x.vv().detach().contiguous(),
                                                  {.causal = true});
  CHECK(values(out) == values(plain));
}

TEST_CASE("attention on [B, T, H, D] operands does not depend on the thread count", "[attention][layout]") {
  // Few heads and long sequences: the forward cuts each head into runs of query blocks by the
  // thread count (1 thread: 2 runs of 5 blocks per head; 2 threads: 4 runs of 3, 3, 3, 1), which
  // must change only how often keys are transposed.
  const Dims s{1, 2, 600, 600, 64, 64};
  const auto seg = segment_ids({{200, 250, 150}}, 600);
  for (const bool segmented : {false, true}) {
    auto run = [&] {
      const auto x = heads_inner<float>(s, 800);
      AttentionOptions o{.causal = true};
      if (segmented) o.segments = seg;
      const auto out = scaled_dot_product_attention(x.qv(), x.kv(), x.vv(), o);
      out.backward(random_uniform<float>({s.b, s.h, s.tq, s.dv}, -1, 1, 801));
      return std::vector<std::vector<float>>{out.to_vector(), x.q.grad().to_vector(), x.k.grad().to_vector(), x.v.grad().to_vector()};
    };
    const auto one = testing_support::with_threads(1, run), two = testing_support::with_threads(2, run);
    INFO("segments " << segmented);
    CHECK(one == two);
  }
}
