// How one kernel launch updates many tensors (an optimizer step on cuda updates every parameter
// in one launch per update rule, not one launch per parameter): each tensor of a launch is cut
// into chunks of `chunk` elements, one thread block per chunk, and a block finds its tensor by
// binary search over the tensors' first blocks.
//   Legend: J = tensors in one launch (at most Capacity), chunk = elements per block
//   Blocks<Capacity>: count = J, first_block[j] = blocks before tensor j (first_block[J] = the
//   launch's grid size), size[j] = elements of tensor j (> 0)
// Plain host/device code without CUDA headers, so the CPU tests check the planning and walk
// every block of a plan (each element covered exactly once) without a device.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <vector>

#include "cerberus/core/config.hpp"

namespace cerberus::cuda_backend::multi_tensor {

// 256 threads x 4 elements each: long enough to amortise the block's search, short enough that
// a model's small tensors (biases, norm gains) do not leave most of a block idle.
inline constexpr Index chunk = 1024;
// CUDA's limit on gridDim.x.
inline constexpr Index max_blocks = (Index{1} << 31) - 1;

template <int Capacity>
struct Blocks {
  int count = 0;
  Index first_block[Capacity + 1] = {};
  Index size[Capacity] = {};
};

// The elements [begin, end) of tensor `job` that block `block` updates.
struct Range {
  int job;
  Index begin;
  Index end;
};

template <int Capacity>
CERBERUS_HOST_DEVICE inline Range block_range(const Blocks<Capacity>& b, Index block) {
  int lo = 0, hi = b.count - 1;  // the last tensor whose first block is <= block
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (b.first_block[mid] <= block) lo = mid;
    else hi = mid - 1;
  }
  const Index begin = (block - b.first_block[lo]) * chunk;
  const Index end = begin + chunk < b.size[lo] ? begin + chunk : b.size[lo];
  return {lo, begin, end};
}

// The launches for tensors of the given sizes (all > 0; the caller drops empty tensors), in
// order: each launch takes the next tensors while it has room (Capacity tensors, max_blocks
// blocks), so tensor j of launch k is tensor (launches[0].count + ... + launches[k-1].count) + j.
template <int Capacity>
std::vector<Blocks<Capacity>> plan(const std::vector<Index>& sizes) {
  std::vector<Blocks<Capacity>> launches;
  for (const Index n : sizes) {
    if (n <= 0) throw std::invalid_argument("multi_tensor::plan: tensor sizes must be > 0 (drop empty tensors first)");
    const Index blocks = (n + chunk - 1) / chunk;
    if (blocks > max_blocks) throw std::invalid_argument("multi_tensor::plan: a tensor of more than 2^31 chunks");
    if (launches.empty() || launches.back().count == Capacity ||
        launches.back().first_block[launches.back().count] + blocks > max_blocks)
      launches.emplace_back();
    auto& l = launches.back();
    l.size[l.count] = n;
    l.first_block[l.count + 1] = l.first_block[l.count] + blocks;
    ++l.count;
  }
  return launches;
}

}  // namespace cerberus::cuda_backend::multi_tensor
