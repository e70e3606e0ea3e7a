// The multi-tensor launch plan of the cuda optimizers (backend/cuda/multi_tensor_plan.hpp),
// checked on the CPU: the kernel's own block -> (tensor, range) function walked over every block
// of every launch must cover each element of each tensor exactly once, whatever the sizes.
#include <cstdint>
#include <vector>

#include <cerberus/backend/cuda/multi_tensor_plan.hpp>

#include "support/catch.hpp"

namespace {

using namespace cerberus;
namespace mt = cuda_backend::multi_tensor;

// Walks a plan as the kernel does (one block per chunk, every thread of a block in turn) and
// counts how often each element of each tensor is visited.
template <int Capacity>
std::vector<std::vector<int>> visits(const std::vector<Index>& sizes, std::size_t& launches) {
  std::vector<std::vector<int>> seen;
  for (const Index n : sizes) seen.emplace_back(static_cast<std::size_t>(n), 0);
  const auto plan = mt::plan<Capacity>(sizes);
  launches = plan.size();
  std::size_t first = 0;
  for (const auto& blocks : plan) {
    REQUIRE(blocks.count >= 1);
    REQUIRE(blocks.count <= Capacity);
    for (Index b = 0; b < blocks.first_block[blocks.count]; ++b) {
      const mt::Range r = mt::block_range(blocks, b);
      REQUIRE(r.job >= 0);
      REQUIRE(r.job < blocks.count);
      REQUIRE(r.begin < r.end);
      REQUIRE(r.end - r.begin <= mt::chunk);
      REQUIRE(blocks.size[r.job] == sizes[first + static_cast<std::size_t>(r.job)]);
      for (Index i = r.begin; i < r.end; ++i) ++seen[first + static_cast<std::size_t>(r.job)][static_cast<std::size_t>(i)];
    }
    first += static_cast<std::size_t>(blocks.count);
  }
  REQUIRE(first == sizes.size());
  return seen;
}

template <int Capacity>
void check_exactly_once(const std::vector<Index>& sizes, std::size_t expected_launches) {
  std::size_t launches = 0;
  const auto seen = visits<Capacity>(sizes, launches);
  CHECK(launches == expected_launches);
  for (std::size_t t = 0; t < seen.size(); ++t)
    for (std::size_t i = 0; i < seen[t].size(); ++i)
      if (seen[t][i] != 1) FAIL("tensor " << t << " element " << i << " visited " << seen[t][i] << " times");
}

}  // namespace

TEST_CASE("multi-tensor plan: every element of every tensor exactly once", "[cuda][optim]") {
  // Sizes around the chunk's edges, a single element, and a tensor of many chunks.
  const Index c = mt::chunk;
  const std::vector<Index> sizes = {1, c - 1, c, c + 1, 3 * c, 7, 2 * c + 5, 1, 129 * 37, 300 * 64, c / 2};
  check_exactly_once<64>(sizes, 1);
  check_exactly_once<4>(sizes, 3);  // 4 + 4 + 3 tensors
  check_exactly_once<1>(sizes, sizes.size());
}

TEST_CASE("multi-tensor plan: a model's worth of parameters", "[cuda][optim]") {
  // A 16-layer GPT's tensors (norm gains, biases, projections), 200 of them.
  std::vector<Index> sizes;
  for (int layer = 0; layer < 16; ++layer)
    for (const Index n : {Index{1024}, Index{1024}, Index{3072 * 1024}, Index{3072}, Index{1024 * 1024}, Index{1024}, Index{1024},
                          Index{1024}, Index{4096 * 1024}, Index{4096}, Index{1024 * 4096}, Index{1024}})
      sizes.push_back(n);
  sizes.push_back(32000 * 1024);
  std::size_t launches = 0;
  const auto seen = visits<42>(sizes, launches);
  CHECK(launches == (sizes.size() + 41) / 42);
  std::int64_t total = 0;
  for (const auto& tensor : seen)
    for (const int v : tensor) {
      if (v != 1) FAIL("an element visited " << v << " times");
      total += v;
    }
  std::int64_t expected = 0;
  for (const Index n : sizes) expected += n;
  CHECK(total == expected);
}

TEST_CASE("multi-tensor plan: empty tensors are the caller's to drop", "[cuda][optim]") {
  CHECK_THROWS_WITH(mt::plan<8>({4, 0, 4}), "multi_tensor::plan: tensor sizes must be > 0 (drop empty tensors first)");
  CHECK(mt::plan<8>({}).empty());
}
