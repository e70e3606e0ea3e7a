// Embedding (ops/embedding.hpp): lookup against a naive reference (2-D and 0-D ids,
// non-contiguous ids and weight, bf16), gradcheck with repeated ids, the scatter-add gradient
// against a naive double sum, padding_idx, thread-count independence, and errors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cerberus/ops/embedding.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing::gradcheck;
using cerberus::testing_support::values;
using Ids = Tensor<std::int64_t>;

namespace {

template <class T = double>
Tensor<T> rand(const Shape& shape, std::uint64_t seed) {
  Generator g(seed);
  return uniform<T>(shape, -2.0, 2.0, g);
}

Ids random_ids(const Shape& shape, Index v, std::uint64_t seed) {
  Generator g(seed);
  std::vector<std::int64_t> ids(static_cast<std::size_t>(shape.numel()));
  for (auto& x : ids) x = static_cast<std::int64_t>(g.next_u32() % static_cast<std::uint32_t>(v));
  return from_vector<std::int64_t>(ids, shape);
}

// out[k, :] = weight[ids[k], :] with ids read row-major.
template <class T>
std::vector<double> ref_lookup(const Tensor<T>& weight, const Ids& ids) {
  const auto w = values(weight);
  const Index C = weight.shape()[1];
  std::vector<double> out;
  for (const auto id : ids.to_vector())
    for (Index c = 0; c < C; ++c) out.push_back(w[static_cast<std::size_t>(id * C + c)]);
  return out;
}

// dW[v, :] = sum of dy[k, :] over k with ids[k] == v (except the padding row).
std::vector<double> ref_grad(const std::vector<double>& dy, const Ids& ids, Index V, Index C, Index padding = -1) {
  std::vector<double> dw(static_cast<std::size_t>(V * C), 0.0);
  const auto id = ids.to_vector();
  for (std::size_t k = 0; k < id.size(); ++k) {
    if (id[k] == padding) continue;
    for (Index c = 0; c < C; ++c) dw[static_cast<std::size_t>(id[k] * C + c)] += dy[k * static_cast<std::size_t>(C) + static_cast<std::size_t>(c)];
  }
  return dw;
}

double worst_ratio(const std::vector<double>& got, const std::vector<double>& want, double atol, double rtol) {
  double worst = got.size() == want.size() ? 0.0 : 1e300;
  for (std::size_t i = 0; i < got.size() && i < want.size(); ++i)
    worst = std::max(worst, std::abs(got[i] - want[i]) / (atol + rtol * std::abs(want[i])));
  return worst;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEMPLATE_TEST_CASE("embedding looks up rows", "[embedding]", float, double, bfloat16) {
  using T = TestType;
  const Tensor<T> weight = rand<T>({10, 6}, 1);
  const Ids ids = from_vector<std::int64_t>({3, 0, 9, 3, 3, 1}, {2, 3});  // [B, T] with repeats
  const Tensor<T> out = embedding(weight, ids);
  CHECK(out.shape() == Shape{2, 3, 6});
  CHECK(values(out) == ref_lookup(weight, ids));
  // Non-contiguous ids and weight.
  const Ids ids_t = ids.t();
  CHECK(values(embedding(weight, ids_t)) == ref_lookup(weight, ids_t.contiguous()));
  const Tensor<T> weight_t = rand<T>({6, 10}, 2).t();
  CHECK(values(embedding(weight_t, ids)) == ref_lookup(weight_t.contiguous(), ids));
  // A rank-0 id gives one row; no ids give an empty [0, C].
  CHECK(embedding(weight, from_vector<std::int64_t>({7}, Shape{})).shape() == Shape{6});
  CHECK(embedding(weight, Ids::empty({0})).shape() == Shape{0, 6});
  // Large: several tasks.
  const Tensor<T> big = rand<T>({1000, 96}, 3);
  const Ids many = random_ids({8, 512}, 1000, 4);
  CHECK(values(embedding(big, many)) == ref_lookup(big, many));
}

TEST_CASE("embedding gradients: gradcheck with repeated ids", "[embedding][grad]") {
  const Ids ids = from_vector<std::int64_t>({2, 2, 0, 4, 2, 0, 1, 2}, {2, 4});
  const auto r = gradcheck([ids](const std::vector<Tensor<double>>& v) { return embedding(v[0], ids); }, {rand({6, 3}, 1)});
  INFO(r.message);
  CHECK(r.ok);
  // The weight used twice (a tied embedding read by two lookups) and a transposed weight.
  const auto r2 = gradcheck([ids](const std::vector<Tensor<double>>& v) {
    return Tensor<double>(embedding(v[0], ids) * embedding(v[0].t().t(), ids.t().contiguous().t()));
  }, {rand({6, 3}, 2)});
  INFO(r2.message);
  CHECK(r2.ok);
  const auto r3 = gradcheck([ids](const std::vector<Tensor<double>>& v) { return embedding(v[0].t(), ids); }, {rand({3, 6}, 3)});
  INFO(r3.message);
  CHECK(r3.ok);
}

TEMPLATE_TEST_CASE("embedding gradient is a scatter-add, identical for 1 and 2 threads", "[embedding][grad][threads]", float, bfloat16) {
  using T = TestType;
  const Index V = 700, C = 80;
  const Ids ids = random_ids({16, 1024}, 50, 5);  // 16k ids over 50 rows: ~330 hits per row
  Generator g(6);
  const Tensor<T> dy = uniform<T>({16, 1024, C}, -1, 1, g);
  auto grad = [&] {
    auto weight = rand<T>({V, C}, 7).set_requires_grad(true);
    embedding(weight, ids).backward(dy);
    return weight.grad();
  };
  const auto one = testing_support::with_threads(1, grad), two = testing_support::with_threads(2, grad);
  CHECK(one.shape() == Shape{V, C});
  CHECK(one.to_vector() == two.to_vector());
  const auto want = ref_grad(values(dy), ids, V, C);
  // Sums of ~330 values in [-1, 1]; bf16 rounds once at the end (8 bits of mantissa).
  const double rtol = std::is_same_v<T, bfloat16> ? 1.0 / 128 : 1e-5;
  CHECK(worst_ratio(values(one), want, 1e-3, rtol) <= 1.0);
}

TEST_CASE("embedding padding_idx gets no gradient", "[embedding][grad]") {
  const Index V = 5, C = 3;
  const Ids ids = from_vector<std::int64_t>({0, 4, 4, 2, 0, 1}, {3, 2});
  const Tensor<double> dy = rand({3, 2, C}, 1);
  for (const Index padding : {Index(4), Index(-1), Index(0)}) {
    auto weight = rand({V, C}, 2).set_requires_grad(true);
    const Tensor<double> out = embedding(weight, ids, padding);
    // The forward still reads the padding row.
    CHECK(values(out) == ref_lookup(weight, ids));
    out.backward(dy);
    const Index row = padding < 0 ? padding + V : padding;
    INFO("padding_idx " << padding);
    CHECK(values(weight.grad()) == ref_grad(values(dy), ids, V, C, row));
    for (Index c = 0; c < C; ++c) CHECK(weight.grad()(row, c) == 0.0);
  }
}

TEST_CASE("embedding errors name the id, its position and the valid range", "[embedding][errors]") {
  const auto weight = rand({10, 4}, 1);
  const std::string m = message_of([&] { embedding(weight, from_vector<std::int64_t>({1, 2, 3, 4, 5, 10}, {2, 3})); });
  CHECK(contains(m, "[embedding]"));
  CHECK(contains(m, "index 10"));
  CHECK(contains(m, "position [1, 2]"));
  CHECK(contains(m, "0..9"));
  CHECK(contains(m, "[10, 4]"));
  CHECK_THROWS_AS(embedding(weight, from_vector<std::int64_t>({-1})), IndexError);
  CHECK_THROWS_AS(embedding(weight, from_vector<std::int64_t>({1}), Index(10)), IndexError);
  CHECK_THROWS_AS(embedding(weight, from_vector<std::int64_t>({1}), Index(-11)), IndexError);
  const std::string s = message_of([&] { embedding(rand({10}, 2), from_vector<std::int64_t>({1, 2}, {1, 2})); });
  CHECK(contains(s, "[embedding]"));
  CHECK(contains(s, "[10]"));
  CHECK(contains(s, "[1, 2]"));
  CHECK_THROWS_AS(embedding(rand({10}, 2), from_vector<std::int64_t>({1})), ShapeError);
}
