// rotary_embedding (ops/rope.hpp): against a naive double reference (rotate-half pairing), the
// offset, relative-position invariance of q . k, gradcheck in double, table and shape errors;
// per-token positions (sequence packing) against the offset form, gradcheck and errors.
#include <cmath>
#include <string>
#include <vector>

#include "cerberus/ops/rope.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using cerberus::testing::gradcheck;
using cerberus::testing_support::compare;
using cerberus::testing_support::message_of;
using cerberus::testing_support::random_uniform;
using cerberus::testing_support::values;

namespace {

// y[b, t, h, i] with angle (offset + t) * theta^(-2i/D), element i paired with i + D/2.
std::vector<double> reference(const Tensor<double>& x, Index offset, double theta) {
  const Index B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  std::vector<double> y(static_cast<std::size_t>(x.numel()));
  for (Index b = 0; b < B; ++b)
    for (Index t = 0; t < T; ++t)
      for (Index h = 0; h < H; ++h)
        for (Index i = 0; i < D; ++i) {
          const Index j = i % half;
          const double a = static_cast<double>(offset + t) * std::pow(theta, -2.0 * static_cast<double>(j) / static_cast<double>(D));
          const double xi = x(b, t, h, i), partner = i < half ? -x(b, t, h, i + half) : x(b, t, h, i - half);
          y[static_cast<std::size_t>(((b * T + t) * H + h) * D + i)] = xi * std::cos(a) + partner * std::sin(a);
        }
  return y;
}

}  // namespace

TEST_CASE("rotary_embedding matches the rotate-half reference, with and without an offset") {
  const auto table = rotary_table<double>(20, 8, 10000.0);
  const auto x = random_uniform<double>(Shape{2, 5, 3, 8}, -1, 1, 1);
  for (Index offset : {0, 7}) {
    const auto r = compare(values(rotary_embedding(x, table, offset)), reference(x, offset, 10000.0), 1e-13, 1e-13);
    INFO(r.describe());
    CHECK(r.ok());
  }
  const auto table_f = rotary_table<float>(20, 8, 500.0);
  const auto xf = random_uniform<float>(Shape{1, 4, 2, 8}, -1, 1, 2);
  const auto r = compare(values(rotary_embedding(xf, table_f, 3)), reference(xf.to<double>(), 3, 500.0), 1e-5, 1e-6);
  INFO(r.describe());
  CHECK(r.ok());
}

TEST_CASE("rotary_embedding: a non-contiguous input reads through its strides") {
  const auto table = rotary_table<double>(8, 4);
  const auto base = random_uniform<double>(Shape{2, 3, 6, 4}, -1, 1, 3);
  const auto x = base.permute({0, 2, 1, 3}).slice(1, 0, 6, 2).permute({0, 2, 1, 3});  // [2, 3, 3, 4], strided
  REQUIRE_FALSE(x.is_contiguous());
  CHECK(compare(values(rotary_embedding(x, table, 1)), reference(x.contiguous(), 1, 10000.0), 1e-13, 1e-13).ok());
}

TEST_CASE("rotary_embedding: q . k depends only on the distance between positions") {
  const auto table = rotary_table<double>(64, 8);
  const auto q = random_uniform<double>(Shape{1, 1, 1, 8}, -1, 1, 4);
  const auto k = random_uniform<double>(Shape{1, 1, 1, 8}, -1, 1, 5);
  auto dot = [&](Index pq, Index pk) {
    const auto a = values(rotary_embedding(q, table, pq)), b = values(rotary_embedding(k, table, pk));
    double s = 0;
    for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
  };
  CHECK(dot(5, 2) == Approx(dot(40, 37)).epsilon(1e-12));
  CHECK(dot(9, 9) == Approx(dot(0, 0)).epsilon(1e-12));
  CHECK(dot(5, 2) != Approx(dot(5, 3)).epsilon(1e-6));
}

TEST_CASE("rotary_embedding gradcheck (double), plain and at an offset") {
  const auto table = rotary_table<double>(16, 6, 100.0);
  for (Index offset : {0, 9}) {
    const auto r = gradcheck([&](const std::vector<Tensor<double>>& in) { return rotary_embedding(in[0], table, offset); },
                             {random_uniform<double>(Shape{2, 4, 2, 6}, -1, 1, 6)});
    INFO(r.message);
    CHECK(r.ok);
  }
  // Through a permuted input, as attention code would hand it.
  const auto r = gradcheck([&](const std::vector<Tensor<double>>& in) { return rotary_embedding(in[0].permute({0, 2, 1, 3}), table, 2); },
                           {random_uniform<double>(Shape{1, 3, 5, 6}, -1, 1, 7)});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("rotary_embedding and rotary_table errors name the op and the shapes") {
  const auto table = rotary_table<float>(8, 4);
  CHECK(message_of([&] { rotary_embedding(zeros<float>(Shape{2, 3, 4}), table); }) ==
        "[rotary_embedding] x must be [B, T, H, D], got [2, 3, 4] (table [8, 2])");
  CHECK(message_of([&] { rotary_embedding(zeros<float>(Shape{1, 3, 2, 6}), table); }).find("head size 6") != std::string::npos);
  CHECK(message_of([&] { rotary_embedding(zeros<float>(Shape{1, 3, 2, 4}), table, 6); }) ==
        "[rotary_embedding] positions 6..8 of x [1, 3, 2, 4] exceed the table's 8 positions");
  CHECK_THROWS_AS(rotary_table<float>(8, 5), ValueError);
}

TEST_CASE("rotary_embedding with per-token positions rotates each token by its own position") {
  const auto table = rotary_table<double>(16, 6, 100.0);
  const auto x = random_uniform<double>(Shape{2, 5, 3, 6}, -1, 1, 11);
  // Row 0: two packed examples (positions restart); row 1: positions 4.. as with offset 4.
  const auto pos = from_vector<std::int64_t>({0, 1, 2, 0, 1, 4, 5, 6, 7, 8}, Shape{2, 5});
  const auto y = values(rotary_embedding(x, table, pos));
  const auto row = [&](const Tensor<double>& t, Index b, Index t0, Index t1) { return t.slice(0, b, b + 1).slice(1, t0, t1).contiguous(); };
  const auto expect_rows = [&](Index b, Index t0, Index t1, Index offset) {
    const auto want = values(rotary_embedding(row(x, b, t0, t1), table, offset));
    std::vector<double> got;
    for (Index t = t0; t < t1; ++t)
      for (Index i = 0; i < 3 * 6; ++i) got.push_back(y[static_cast<std::size_t>(((b * 5 + t) * 3) * 6 + i)]);
    const auto c = compare(got, want, 1e-15, 1e-15);
    INFO("row " << b << ", tokens " << t0 << ".." << t1 << ": " << c.describe());
    CHECK(c.ok());
  };
  expect_rows(0, 0, 3, 0);
  expect_rows(0, 3, 5, 0);
  expect_rows(1, 0, 5, 4);
  // Gradients, in double, through a permuted input too.
  for (const bool permuted : {false, true}) {
    const auto r = gradcheck(
        [&](const std::vector<Tensor<double>>& in) {
          return rotary_embedding(permuted ? in[0].permute({0, 2, 1, 3}) : in[0], table, pos);
        },
        {permuted ? random_uniform<double>(Shape{2, 3, 5, 6}, -1, 1, 12) : x});
    INFO(r.message);
    CHECK(r.ok);
  }
}

TEST_CASE("rotary_embedding with positions: errors name the op and the shapes") {
  const auto table = rotary_table<float>(8, 4);
  const auto x = zeros<float>(Shape{2, 3, 2, 4});
  CHECK(message_of([&] { rotary_embedding(x, table, zeros<std::int64_t>(Shape{2, 4})); }) ==
        "[rotary_embedding] positions must be int64 [B, T] = [2, 3] for x [2, 3, 2, 4], got [2, 4]");
  CHECK(message_of([&] { rotary_embedding(x, table, full<std::int64_t>(Shape{2, 3}, 8)); }) ==
        "[rotary_embedding] position 8 (token 0 of positions [2, 3]) is outside the table [8, 2]");
}
