// Indexing and shape ops (ops/indexing.hpp): concat, stack, split, index_select, gather against
// naive coordinate-by-coordinate references (every axis, negative axes, non-contiguous inputs,
// bf16, int64), gradchecks of every op (a tensor used twice, unused split parts, repeated
// indices), thread-count independence of the scatter-adds, and error messages.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "cerberus/ops/indexing.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing::gradcheck;
using cerberus::testing_support::broadcast_at;
using cerberus::testing_support::for_each_coord;
using cerberus::testing_support::values;
using Inputs = std::vector<Tensor<double>>;
using Ids = Tensor<std::int64_t>;

namespace {

template <class T = double>
Tensor<T> rand(const Shape& shape, std::uint64_t seed) {
  Generator g(seed);
  return uniform<T>(shape, -2.0, 2.0, g);
}

// Indices in 0..n-1, drawn so that repeats are common.
Ids random_ids(const Shape& shape, Index n, std::uint64_t seed) {
  Generator g(seed);
  std::vector<std::int64_t> v(static_cast<std::size_t>(shape.numel()));
  for (auto& x : v) x = static_cast<std::int64_t>(g.next_u32() % static_cast<std::uint32_t>(n));
  return from_vector<std::int64_t>(v, shape);
}

void expect_gradients_match(const std::string& what, const cerberus::testing::DifferentiableFn& fn, const Inputs& inputs) {
  const auto r = gradcheck(fn, inputs);
  INFO(what << ": " << r.message);
  CHECK(r.ok);
}

template <class T>
std::vector<double> ref_concat(const std::vector<Tensor<T>>& parts, int a) {
  Shape out = parts[0].shape();
  out[a] = 0;
  for (const auto& p : parts) out[a] += p.shape()[a];
  std::vector<double> r;
  for_each_coord(out, [&](const std::vector<Index>& c) {
    std::vector<Index> local = c;
    std::size_t i = 0;
    while (local[static_cast<std::size_t>(a)] >= parts[i].shape()[a]) local[static_cast<std::size_t>(a)] -= parts[i++].shape()[a];
    r.push_back(broadcast_at(parts[i], local));
  });
  return r;
}

template <class T>
std::vector<double> ref_stack(const std::vector<Tensor<T>>& parts, int a) {
  Shape out = parts[0].shape();
  out.insert(a, static_cast<Index>(parts.size()));
  std::vector<double> r;
  for_each_coord(out, [&](const std::vector<Index>& c) {
    std::vector<Index> local = c;
    const Index i = local[static_cast<std::size_t>(a)];
    local.erase(local.begin() + a);
    r.push_back(broadcast_at(parts[static_cast<std::size_t>(i)], local));
  });
  return r;
}

template <class T>
std::vector<double> ref_index_select(const Tensor<T>& x, int a, const std::vector<std::int64_t>& idx) {
  Shape out = x.shape();
  out[a] = static_cast<Index>(idx.size());
  std::vector<double> r;
  for_each_coord(out, [&](const std::vector<Index>& c) {
    std::vector<Index> src = c;
    src[static_cast<std::size_t>(a)] = idx[static_cast<std::size_t>(c[static_cast<std::size_t>(a)])];
    r.push_back(broadcast_at(x, src));
  });
  return r;
}

template <class T>
std::vector<double> ref_gather(const Tensor<T>& x, int a, const Ids& index) {
  std::vector<double> r;
  for_each_coord(index.shape(), [&](const std::vector<Index>& c) {
    std::vector<Index> src = c;
    src[static_cast<std::size_t>(a)] = static_cast<Index>(broadcast_at(index, c));
    r.push_back(broadcast_at(x, src));
  });
  return r;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

// ---- forward ---------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("concat joins parts along every axis, matching a naive reference", "[indexing][concat]", float, double, bfloat16) {
  using T = TestType;
  const std::vector<Tensor<T>> parts = {rand<T>({2, 3, 4}, 1), rand<T>({2, 3, 4}, 2), rand<T>({2, 3, 4}, 3)};
  for (int axis = -3; axis < 3; ++axis) {
    // Different extents along the joined axis, one part non-contiguous (a transposed view).
    Shape s0 = parts[0].shape(), s1 = s0;
    const int a = axis < 0 ? axis + 3 : axis;
    s1[a] = 1;
    std::vector<Tensor<T>> ps = {parts[0], rand<T>(s1, 4), parts[2].permute({2, 1, 0}).contiguous().permute({2, 1, 0})};
    ps.push_back(rand<T>({4, 3, 2}, 5).permute({2, 1, 0}));  // strided
    const Tensor<T> y = concat(ps, axis);
    INFO("axis " << axis);
    CHECK(values(y) == ref_concat(ps, a));
  }
  // Initializer-list form and a part with extent 0 along the axis.
  const Tensor<T> y = concat({parts[0], Tensor<T>::empty({2, 0, 4}), parts[1]}, 1);
  CHECK(y.shape() == Shape{2, 6, 4});
  CHECK(values(y) == ref_concat(std::vector<Tensor<T>>{parts[0], parts[1]}, 1));
}

TEST_CASE("concat, stack, index_select and gather work for int64 tensors", "[indexing][int64]") {
  const Ids a = from_vector<std::int64_t>({1, 2, 3, 4}, {2, 2}), b = from_vector<std::int64_t>({5, 6}, {2, 1});
  CHECK(concat({a, b}, -1).to_vector() == std::vector<std::int64_t>{1, 2, 5, 3, 4, 6});
  CHECK(stack({a, a}, 1).to_vector() == std::vector<std::int64_t>{1, 2, 1, 2, 3, 4, 3, 4});
  CHECK(index_select(a, 0, from_vector<std::int64_t>({1, 1, 0})).to_vector() == std::vector<std::int64_t>{3, 4, 3, 4, 1, 2});
  CHECK(gather(a, 1, from_vector<std::int64_t>({1, 0, 0, 0}, {2, 2})).to_vector() == std::vector<std::int64_t>{2, 1, 3, 3});
  const auto parts = split(a, Index(1), 1);
  REQUIRE(parts.size() == 2);
  CHECK(parts[1].to_vector() == std::vector<std::int64_t>{2, 4});
}

TEMPLATE_TEST_CASE("stack inserts a new axis at every position", "[indexing][stack]", float, double, bfloat16) {
  using T = TestType;
  const std::vector<Tensor<T>> ps = {rand<T>({3, 4}, 1), rand<T>({4, 3}, 2).t(), rand<T>({3, 4}, 3)};
  for (int axis = -3; axis <= 2; ++axis) {
    const int a = axis < 0 ? axis + 3 : axis;
    const Tensor<T> y = stack(ps, axis);
    Shape want = ps[0].shape();
    want.insert(a, 3);
    INFO("axis " << axis);
    CHECK(y.shape() == want);
    CHECK(values(y) == ref_stack(ps, a));
  }
}

TEST_CASE("split returns views of the right slices", "[indexing][split]") {
  const auto x = rand({4, 7, 3}, 1);
  const auto parts = split(x, std::vector<Index>{2, 0, 5}, -2);
  REQUIRE(parts.size() == 3);
  CHECK(parts[0].shape() == Shape{4, 2, 3});
  CHECK(parts[1].shape() == Shape{4, 0, 3});
  CHECK(parts[2].shape() == Shape{4, 5, 3});
  CHECK(values(parts[0]) == values(x.slice(1, 0, 2)));
  CHECK(values(parts[2]) == values(x.slice(1, 2, 7)));
  // Views: same storage, no copy.
  CHECK(parts[2].storage() == x.storage());
  CHECK(parts[2].data() == x.data() + 2 * x.strides()[1]);

  const auto chunks = split(x, Index(3), 1);  // 3 + 3 + 1
  REQUIRE(chunks.size() == 3);
  CHECK(chunks[2].shape() == Shape{4, 1, 3});
  CHECK(values(chunks[2]) == values(x.slice(1, 6, 7)));
  CHECK(values(concat(chunks, 1)) == values(x));
  // A non-contiguous input splits into views with its strides.
  const auto xt = x.transpose(0, 2);
  const auto tparts = split(xt, Index(2), 0);
  REQUIRE(tparts.size() == 2);
  CHECK(values(tparts[1]) == values(xt.slice(0, 2, 3)));
  // An empty axis gives one empty part.
  CHECK(split(Tensor<double>::empty({0, 3}), Index(2), 0).size() == 1);
}

TEMPLATE_TEST_CASE("index_select picks entries along every axis, repeats included", "[indexing][index_select]", float, double, bfloat16) {
  using T = TestType;
  const Tensor<T> x = rand<T>({5, 6, 7}, 1);
  const std::vector<std::int64_t> idx = {4, 0, 4, 2, 2, 1, 3};
  for (int axis = -3; axis < 3; ++axis) {
    const int a = axis < 0 ? axis + 3 : axis;
    std::vector<std::int64_t> in_range;
    for (const auto i : idx)
      if (i < x.shape()[a]) in_range.push_back(i);
    INFO("axis " << axis);
    CHECK(values(index_select(x, axis, from_vector<std::int64_t>(in_range))) == ref_index_select(x, a, in_range));
    const Tensor<T> xt = x.permute({2, 0, 1});  // non-contiguous
    CHECK(values(index_select(xt, axis, from_vector<std::int64_t>(in_range))) == ref_index_select(xt, a, in_range));
  }
  // A rank-0 index keeps the axis with extent 1; an empty index gives extent 0.
  const auto one = index_select(x, 1, from_vector<std::int64_t>({3}, Shape{}));
  CHECK(one.shape() == Shape{5, 1, 7});
  CHECK(values(one) == ref_index_select(x, 1, {3}));
  CHECK(index_select(x, 2, Ids::empty({0})).shape() == Shape{5, 6, 0});
  // Large enough for several tasks.
  const Tensor<T> big = rand<T>({300, 257}, 2);
  const Ids many = random_ids({500}, 300, 3);
  CHECK(values(index_select(big, 0, many)) == ref_index_select(big, 0, many.to_vector()));
  const Ids cols = random_ids({400}, 257, 4);
  CHECK(values(index_select(big, 1, cols)) == ref_index_select(big, 1, cols.to_vector()));
}

TEMPLATE_TEST_CASE("gather follows an index tensor along every axis", "[indexing][gather]", float, double, bfloat16) {
  using T = TestType;
  const Tensor<T> x = rand<T>({4, 5, 6}, 1);
  for (int axis = -3; axis < 3; ++axis) {
    const int a = axis < 0 ? axis + 3 : axis;
    // Index smaller than x off the axis, longer along it, with repeats.
    Shape is = {3, 4, 5};
    is[a] = 9;
    const Ids index = random_ids(is, x.shape()[a], 10 + static_cast<std::uint64_t>(a));
    INFO("axis " << axis);
    CHECK(values(gather(x, axis, index)) == ref_gather(x, a, index));
    const Tensor<T> xt = rand<T>({6, 5, 4}, 2).permute({2, 1, 0});  // non-contiguous x
    CHECK(values(gather(xt, axis, index)) == ref_gather(xt, a, index));
    // A non-contiguous index.
    const Ids it = index.permute({1, 0, 2}).contiguous().permute({1, 0, 2});
    CHECK(values(gather(x, axis, it)) == ref_gather(x, a, index));
  }
  const Tensor<T> big = rand<T>({64, 700}, 3);
  const Ids index = random_ids({64, 900}, 700, 4);
  CHECK(values(gather(big, 1, index)) == ref_gather(big, 1, index));
  CHECK(values(gather(big, 0, random_ids({100, 700}, 64, 5))) == ref_gather(big, 0, random_ids({100, 700}, 64, 5)));
}

// ---- gradients -------------------------------------------------------------------------------

TEST_CASE("concat and stack: gradients reach every part", "[indexing][grad]") {
  const auto a = rand({2, 3}, 1), b = rand({2, 4}, 2), c = rand({2, 1}, 3);
  expect_gradients_match("concat axis -1", [](const Inputs& v) { return concat({v[0], v[1], v[2]}, -1); }, {a, b, c});
  expect_gradients_match("concat axis 0", [](const Inputs& v) { return concat({v[0], v[1].t()}, 0); }, {rand({3, 3}, 4), rand({3, 4}, 5)});
  expect_gradients_match("concat([x, x]) uses x twice",
                         [](const Inputs& v) { return Tensor<double>(concat({v[0], v[0]}, 1) * concat({v[0], v[0]}, 1)); }, {a});
  const auto constant = rand({2, 2}, 6);  // a part that does not require grad
  expect_gradients_match("concat with a constant part", [constant](const Inputs& v) { return concat({constant, v[0], constant}, 1); },
                         {a});
  expect_gradients_match("stack axis 1", [](const Inputs& v) { return stack({v[0], v[1], v[0]}, 1); }, {rand({3, 4}, 7), rand({3, 4}, 8)});
  expect_gradients_match("stack axis -1 of strided parts", [](const Inputs& v) { return stack({v[0].t(), v[1]}, -1); },
                         {rand({4, 3}, 9), rand({3, 4}, 10)});
}

TEST_CASE("split: each part's gradient lands in its slice, unused parts count as zeros", "[indexing][grad]") {
  const auto x = rand({3, 7}, 1);
  expect_gradients_match("all parts used", [](const Inputs& v) {
    const auto p = split(v[0], std::vector<Index>{2, 4, 1}, 1);
    return concat({Tensor<double>(p[2] * 3.0), Tensor<double>(exp(p[0])), p[1]}, 1);
  }, {x});
  expect_gradients_match("only the middle part used", [](const Inputs& v) {
    const auto p = split(v[0], Index(3), -1);
    return Tensor<double>(p[1] * p[1]);
  }, {x});
  expect_gradients_match("a part used twice and one unused", [](const Inputs& v) {
    const auto p = split(v[0], std::vector<Index>{1, 2}, 0);
    return Tensor<double>(p[1] * 2.0 + p[1] * p[1]);
  }, {x});
  expect_gradients_match("split of a transposed input", [](const Inputs& v) {
    const auto p = split(v[0].t(), Index(2), 0);
    return Tensor<double>(p[0] - p[3].expand({2, 3}));
  }, {x});
  // Only some parts used: the rest of the gradient is exactly zero.
  auto leaf = rand({2, 6}, 2).set_requires_grad(true);
  const auto parts = split(leaf, Index(2), 1);
  Tensor<double>(parts[1] * 5.0).backward(ones<double>({2, 2}));
  CHECK(leaf.grad().to_vector() == std::vector<double>{0, 0, 5, 5, 0, 0, 0, 0, 5, 5, 0, 0});
}

TEST_CASE("index_select and gather: gradients accumulate over repeated indices", "[indexing][grad]") {
  const auto x = rand({4, 5}, 1);
  const Ids rows = from_vector<std::int64_t>({3, 0, 3, 3, 1});
  expect_gradients_match("index_select axis 0", [rows](const Inputs& v) { return index_select(v[0], 0, rows); }, {x});
  expect_gradients_match("index_select axis -1", [](const Inputs& v) {
    return index_select(v[0], -1, from_vector<std::int64_t>({4, 4, 0, 2}));
  }, {x});
  expect_gradients_match("index_select of a transposed input", [rows](const Inputs& v) { return index_select(v[0].t(), 1, rows); },
                         {rand({5, 4}, 2)});
  expect_gradients_match("index_select used twice", [rows](const Inputs& v) {
    return Tensor<double>(index_select(v[0], 0, rows) * index_select(v[0], 0, rows));
  }, {x});
  const auto y = rand({3, 4, 5}, 3);
  for (int axis = 0; axis < 3; ++axis) {
    Shape is = {2, 3, 4};
    is[axis] = 6;
    const Ids index = random_ids(is, y.shape()[axis], 20 + static_cast<std::uint64_t>(axis));
    expect_gradients_match("gather axis " + std::to_string(axis), [index, axis](const Inputs& v) { return gather(v[0], axis, index); },
                           {y});
  }
  expect_gradients_match("gather of a permuted input", [](const Inputs& v) {
    return gather(v[0].permute({1, 0}), 0, from_vector<std::int64_t>({0, 2, 2, 1, 0, 0}, {3, 2}));
  }, {rand({4, 3}, 4)});
}

TEST_CASE("scatter-add backward is exact and independent of the thread count", "[indexing][grad][threads]") {
  const auto run = [] {
    auto x = rand<float>({500, 64}, 1).set_requires_grad(true);
    const Ids rows = random_ids({20000}, 500, 2);
    Generator g(3);
    const auto w = uniform<float>({20000, 64}, -1, 1, g);
    index_select(x, 0, rows).backward(w);
    auto z = rand<float>({64, 300}, 4).set_requires_grad(true);
    gather(z, 1, random_ids({64, 2000}, 300, 5)).backward(uniform<float>({64, 2000}, -1, 1, g));
    return std::make_pair(x.grad().to_vector(), z.grad().to_vector());
  };
  const auto one = testing_support::with_threads(1, run), two = testing_support::with_threads(2, run);
  CHECK(one.first == two.first);
  CHECK(one.second == two.second);
  // Against a naive double-precision scatter-add.
  const Ids rows = random_ids({20000}, 500, 2);
  Generator g(3);
  const auto w = uniform<float>({20000, 64}, -1, 1, g).to_vector();
  std::vector<double> want(500 * 64, 0.0);
  const auto r = rows.to_vector();
  for (std::size_t j = 0; j < r.size(); ++j)
    for (std::size_t i = 0; i < 64; ++i) want[static_cast<std::size_t>(r[j]) * 64 + i] += w[j * 64 + i];
  const auto got = one.first;
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]) / (1e-4 + 1e-5 * std::abs(want[i])));
  CHECK(worst <= 1.0);
}

TEST_CASE("bf16 gradients of index_select accumulate in float", "[indexing][grad][bf16]") {
  // 256 hits of 1.0 on one row: in bf16 a running sum stalls at 256 only if rounded each step
  // (256 + 1 is not representable); summed in float and rounded once it is exact.
  auto x = zeros<bfloat16>({2, 3}).set_requires_grad(true);
  const Ids rows = from_vector<std::int64_t>(std::vector<std::int64_t>(300, 1));
  index_select(x, 0, rows).backward(ones<bfloat16>({300, 3}));
  const auto g = x.grad().to_vector();
  CHECK(static_cast<float>(g[0]) == 0.0f);
  CHECK(static_cast<float>(g[3]) == static_cast<float>(bfloat16(300.0f)));
}

// ---- errors ----------------------------------------------------------------------------------

TEST_CASE("out-of-range indices name the op, the index, its position and the valid range", "[indexing][errors]") {
  const auto x = rand({3, 4}, 1);
  const std::string m1 = message_of([&] { index_select(x, 1, from_vector<std::int64_t>({0, 3, 4, 1})); });
  CHECK(contains(m1, "[index_select]"));
  CHECK(contains(m1, "index 4"));
  CHECK(contains(m1, "position [2]"));
  CHECK(contains(m1, "0..3"));
  CHECK(contains(m1, "[3, 4]"));
  CHECK_THROWS_AS(index_select(x, 0, from_vector<std::int64_t>({-1})), IndexError);

  const std::string m2 = message_of([&] { gather(x, 0, from_vector<std::int64_t>({0, 1, 2, 0, 1, 7}, {2, 3})); });
  CHECK(contains(m2, "[gather]"));
  CHECK(contains(m2, "index 7"));
  CHECK(contains(m2, "position [1, 2]"));
  CHECK(contains(m2, "0..2"));
  CHECK_THROWS_AS(gather(x, 1, from_vector<std::int64_t>({-2}, {1, 1})), IndexError);
  CHECK_THROWS_AS(gather(Tensor<double>::empty({2, 0}), 1, Ids::empty({2, 1})), IndexError);
  CHECK_THROWS_AS(concat({x, x}, 2), IndexError);
  CHECK_THROWS_AS(stack({x, x}, 3), IndexError);
  CHECK_THROWS_AS(split(x, Index(2), -3), IndexError);
}

TEST_CASE("shape mismatches name the op and every shape", "[indexing][errors]") {
  const auto a = rand({2, 3}, 1), b = rand({3, 3}, 2), c = rand({2, 5}, 3);
  const std::string m1 = message_of([&] { concat({a, c, b}, 1); });
  CHECK(contains(m1, "[concat]"));
  CHECK(contains(m1, "part 2"));
  CHECK(contains(m1, "[2, 3], [2, 5], [3, 3]"));
  CHECK_THROWS_AS(concat({a, rand({2, 3, 1}, 4)}, 0), ShapeError);
  const std::string m2 = message_of([&] { stack({a, a, c}, 0); });
  CHECK(contains(m2, "[stack]"));
  CHECK(contains(m2, "[2, 3], [2, 3], [2, 5]"));
  const std::string m3 = message_of([&] { split(a, std::vector<Index>{1, 1}, 1); });
  CHECK(contains(m3, "[split]"));
  CHECK(contains(m3, "[1, 1]"));
  CHECK(contains(m3, "[2, 3]"));
  const std::string m4 = message_of([&] { gather(a, 1, Ids::empty({3, 1})); });
  CHECK(contains(m4, "[gather]"));
  CHECK(contains(m4, "[3, 1]"));
  CHECK(contains(m4, "[2, 3]"));
  CHECK_THROWS_AS(gather(a, 1, Ids::empty({2})), ShapeError);
  const std::string m5 = message_of([&] { index_select(a, 0, Ids::empty({1, 1})); });
  CHECK(contains(m5, "[index_select]"));
  CHECK(contains(m5, "[1, 1]"));
  CHECK(contains(m5, "[2, 3]"));
  CHECK_THROWS_AS(concat(std::vector<Tensor<double>>{}, 0), ValueError);
  CHECK_THROWS_AS(split(a, Index(0), 0), ValueError);
}
