// Tensor handles, views without copies, contiguous(), conversions, factories and printing.
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "support/catch.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using namespace cerberus::testing_support;

TEST_CASE("copies of a tensor share storage; clone does not", "[tensor]") {
  auto a = arange<float>(6);
  auto b = a;
  b(2) = 42;
  CHECK(a(2) == 42);
  auto c = a.clone();
  c(2) = 0;
  CHECK(a(2) == 42);
  CHECK(c.storage() != a.storage());
  CHECK_FALSE(Tensor<float>().defined());
}

TEST_CASE("views share memory and have the right shapes and strides", "[tensor][views]") {
  const auto a = arange<float>(24).reshape({2, 3, 4});
  CHECK(a.shape() == Shape{2, 3, 4});
  CHECK(a.strides() == Shape{12, 4, 1});
  CHECK(a.is_contiguous());

  const auto p = a.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p.strides() == Shape{1, 12, 4});
  CHECK(p.storage() == a.storage());
  CHECK_FALSE(p.is_contiguous());
  CHECK(p(3, 1, 2) == a(1, 2, 3));

  const auto t = a.transpose(0, 2);
  CHECK(t.shape() == Shape{4, 3, 2});
  CHECK(t(1, 2, 0) == a(0, 2, 1));

  const auto s = a.slice(2, 1, 4, 2);  // columns 1 and 3
  CHECK(s.shape() == Shape{2, 3, 2});
  CHECK(s(1, 1, 1) == a(1, 1, 3));
  CHECK(a.slice(0, -1, 100).shape() == Shape{1, 3, 4});  // Python-style clamping
  CHECK(a.slice(1, 2, 1).numel() == 0);
  CHECK_THROWS_AS(a.slice(0, 0, 1, 0), ValueError);

  const auto row = a.select(1, -1);
  CHECK(row.shape() == Shape{2, 4});
  CHECK(row(1, 2) == a(1, 2, 2));

  const auto u = a.unsqueeze(1);
  CHECK(u.shape() == Shape{2, 1, 3, 4});
  CHECK(u.unsqueeze(-1).shape() == Shape{2, 1, 3, 4, 1});
  CHECK(u.squeeze(1).shape() == a.shape());
  CHECK(u.unsqueeze(-1).squeeze().shape() == a.shape());
  CHECK_THROWS_AS(a.squeeze(0), ShapeError);

  const auto e = arange<float>(3).reshape({3, 1}).expand({2, 3, 4});
  CHECK(e.shape() == Shape{2, 3, 4});
  CHECK(e.strides() == Shape{0, 1, 0});
  CHECK(e(1, 2, 3) == 2);
  CHECK_THROWS_AS(a.expand({2, 5, 4}), ShapeError);
}

TEST_CASE("reshape views when the strides allow it and copies otherwise", "[tensor][views]") {
  const auto a = arange<float>(24).reshape({2, 3, 4});
  const auto flat = a.reshape({-1});
  CHECK(flat.shape() == Shape{24});
  CHECK(flat.storage() == a.storage());
  CHECK(a.view({6, -1}).shape() == Shape{6, 4});

  // A transposed tensor cannot be flattened without a copy: view() refuses, reshape() copies.
  const auto t = a.transpose(1, 2);
  CHECK_THROWS_AS(t.view({24}), ShapeError);
  const auto r = t.reshape({24});
  CHECK(r.storage() != a.storage());
  std::vector<double> want;
  for_each_coord(t.shape(), [&](const std::vector<Index>& c) { want.push_back(broadcast_at(t, c)); });
  CHECK(values(r) == want);

  // Splitting a dimension of a non-contiguous tensor is still a view.
  const auto sliced = arange<float>(48).reshape({4, 12}).slice(0, 0, 4, 2);  // [2, 12], row stride 24
  const auto split = sliced.view({2, 3, 4});
  CHECK(split.storage() == sliced.storage());
  CHECK(split(1, 2, 3) == sliced(1, 11));

  try {
    a.reshape({5, 5});
    FAIL("expected a ShapeError");
  } catch (const ShapeError& err) {
    const std::string msg = err.what();
    CHECK(msg.find("[reshape]") != std::string::npos);
    CHECK(msg.find("[2, 3, 4]") != std::string::npos);
    CHECK(msg.find("[5, 5]") != std::string::npos);
  }
}

TEST_CASE("contiguous copies in row-major order of the view", "[tensor]") {
  const auto a = arange<double>(12).reshape({3, 4});
  const auto c = a.t().contiguous();
  CHECK(c.is_contiguous());
  CHECK(c.shape() == Shape{4, 3});
  CHECK(c.to_vector() == std::vector<double>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11});
  CHECK(a.contiguous().storage() == a.storage());  // already contiguous: no copy
  // Large strided copies cross the threading threshold.
  const auto big = arange<float>(400 * 500).reshape({400, 500});
  const auto bt = big.t().contiguous();
  CHECK(bt(499, 399) == big(399, 499));
  CHECK(bt(123, 45) == big(45, 123));
}

TEST_CASE("element types convert and bfloat16 stores two bytes", "[tensor][dtype]") {
  const auto a = from_vector<double>({1.5, -2.25, 3.0});
  CHECK(a.to<float>().to_vector() == std::vector<float>{1.5f, -2.25f, 3.0f});
  const auto b = a.to<bfloat16>();
  CHECK(sizeof(*b.data()) == 2);
  CHECK(b.to<double>().to_vector() == a.to_vector());
  CHECK(a.to<std::int64_t>().to_vector() == std::vector<std::int64_t>{1, -2, 3});
  const auto ids = from_vector<std::int64_t>({3, 1, 2}, {3, 1});
  CHECK(ids.to<float>().reshape({3}).to_vector() == std::vector<float>{3, 1, 2});
}

TEST_CASE("factories fill, count and draw reproducibly", "[tensor][factories]") {
  CHECK(zeros<float>({2, 2}).to_vector() == std::vector<float>(4, 0.0f));
  CHECK(ones<double>({3}).to_vector() == std::vector<double>(3, 1.0));
  CHECK(full<float>({2}, 7.5f).to_vector() == std::vector<float>{7.5f, 7.5f});
  CHECK(arange<float>(0.0, 1.0, 0.25).to_vector() == std::vector<float>{0, 0.25f, 0.5f, 0.75f});
  CHECK(arange<float>(3.0, 0.0, -1.0).to_vector() == std::vector<float>{3, 2, 1});
  CHECK(arange<float>(5.0, 0.0).numel() == 0);
  CHECK_THROWS_AS(arange<float>(0.0, 1.0, 0.0), ValueError);
  CHECK_THROWS_AS(from_vector<float>({1, 2, 3}, {2, 2}), ShapeError);

  Generator g1(7), g2(7);
  const auto u1 = uniform<float>({100001}, -2, 3, g1);
  const auto u2 = uniform<float>({100001}, -2, 3, g2);
  CHECK(u1.to_vector() == u2.to_vector());
  double mn = 1e9, mx = -1e9, mean = 0;
  for (float v : u1.to_vector()) mn = std::min<double>(mn, v), mx = std::max<double>(mx, v), mean += v;
  mean /= 100001;
  CHECK(mn >= -2);
  CHECK(mx < 3);
  CHECK(mean == Approx(0.5).margin(0.02));

  // The same numbers whatever the thread count.
  Generator g3(11), g4(11);
  const auto n1 = with_threads(1, [&] { return normal<float>({50001}, 1.0, 2.0, g3); });
  const auto n2 = with_threads(std::max(2, num_threads()), [&] { return normal<float>({50001}, 1.0, 2.0, g4); });
  CHECK(n1.to_vector() == n2.to_vector());
  double m = 0, v = 0;
  const auto nv = n1.to_vector();
  for (float x : nv) m += x;
  m /= static_cast<double>(nv.size());
  for (float x : nv) v += (x - m) * (x - m);
  v /= static_cast<double>(nv.size());
  CHECK(m == Approx(1.0).margin(0.05));
  CHECK(std::sqrt(v) == Approx(2.0).margin(0.05));
  // A generator moves on: the next draw differs.
  CHECK(normal<float>({4}, 0, 1, g3).to_vector() != normal<float>({4}, 0, 1, g3).to_vector());
}

TEST_CASE("tensors print readably and elide long dimensions", "[tensor][print]") {
  const auto a = arange<float>(6).reshape({2, 3});
  CHECK(to_string(a) == "tensor([[0, 1, 2],\n        [3, 4, 5]], shape=[2, 3], dtype=F32, device=cpu)");
  CHECK(to_string(arange<float>(10)) == "tensor([0, 1, 2, ..., 7, 8, 9], shape=[10], dtype=F32, device=cpu)");
  CHECK(to_string(full<double>({}, 2.5)) == "tensor(2.5, shape=[], dtype=F64, device=cpu)");
  CHECK(to_string(Tensor<float>()) == "tensor(undefined)");
}

TEST_CASE("element access checks rank and bounds", "[tensor][index]") {
  const auto a = zeros<float>({2, 3});
  CHECK_THROWS_AS(a(0), IndexError);
  CHECK_THROWS_AS(a(2, 0), IndexError);
  a(-1, -1) = 5;
  CHECK(a(1, 2) == 5);
  CHECK_THROWS_AS(a.item(), ShapeError);
  CHECK(a.slice(1, 2, 3).slice(0, 1, 2).item() == 5);
}
