// Core pieces: shapes and broadcasting, bfloat16, the Philox generator, the caching allocator
// and the shared thread pool.
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <set>
#include <thread>

#include "cerberus/cerberus.hpp"
#include "support/catch.hpp"

using namespace cerberus;

TEST_CASE("shapes broadcast with NumPy rules and name both shapes on mismatch", "[core][shape]") {
  CHECK(broadcast_shapes(Shape{3, 1, 5}, Shape{4, 1}, "add") == Shape{3, 4, 5});
  CHECK(broadcast_shapes(Shape{}, Shape{2, 3}, "add") == Shape{2, 3});
  CHECK(broadcast_shapes(Shape{0, 1}, Shape{1, 7}, "add") == Shape{0, 7});
  try {
    broadcast_shapes(Shape{2, 3}, Shape{4}, "mul");
    FAIL("expected a ShapeError");
  } catch (const ShapeError& e) {
    const std::string msg = e.what();
    CHECK(msg.find("[mul]") != std::string::npos);
    CHECK(msg.find("[2, 3]") != std::string::npos);
    CHECK(msg.find("[4]") != std::string::npos);
  }
  CHECK(contiguous_strides(Shape{2, 3, 4}) == Shape{12, 4, 1});
  CHECK(Shape{2, 3}.axis(-1, "x") == 1);
  const auto too_many = [] { return Shape{1, 2, 3, 4, 5, 6, 7, 8, 9}; };
  CHECK_THROWS_AS(too_many(), ShapeError);
  const Shape two_by_three{2, 3};
  CHECK_THROWS_AS(two_by_three.axis(2, "x"), IndexError);
}

TEST_CASE("bfloat16 rounds to nearest even and round-trips its own values", "[core][bf16]") {
  // Every one of the 65536 bit patterns that is not a NaN survives float and back unchanged.
  for (std::uint32_t bits = 0; bits < 65536; ++bits) {
    const bfloat16 b = bfloat16::from_bits(static_cast<std::uint16_t>(bits));
    const float f = b;
    if (std::isnan(f)) {
      CHECK(std::isnan(static_cast<float>(bfloat16(f))));
      continue;
    }
    REQUIRE(bfloat16(f).bits == b.bits);
  }
  CHECK(static_cast<float>(bfloat16(1.0f)) == 1.0f);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
  CHECK(static_cast<float>(bfloat16(1.0f + 1.0f / 256)) == 1.0f);
  CHECK(static_cast<float>(bfloat16(1.0f + 3.0f / 256)) == 1.0f + 4.0f / 256);
  CHECK(std::isinf(static_cast<float>(bfloat16(std::numeric_limits<float>::infinity()))));
  CHECK(std::isnan(static_cast<float>(bfloat16(std::numeric_limits<float>::quiet_NaN()))));
}

TEST_CASE("Philox matches the published known-answer vectors", "[core][random]") {
  // Random123's kat_vectors for philox4x32_10 with counter (0,0,0,0) and key (0,0).
  const auto r = Philox::generate(0, 0);
  CHECK(r.v[0] == 0x6627e8d5u);
  CHECK(r.v[1] == 0xe169c58du);
  CHECK(r.v[2] == 0xbc57ac4cu);
  CHECK(r.v[3] == 0x9b00dbd8u);
}

TEST_CASE("generators are reproducible and resumable", "[core][random]") {
  Generator a(42), b(42), c(43);
  const double first = a.uniform();
  CHECK(first == b.uniform());
  CHECK(first != c.uniform());
  const auto offset = a.offset();
  const double next = a.uniform();
  Generator resumed(0);
  resumed.set_state(42, offset);
  CHECK(resumed.uniform() == next);
}

namespace {
struct Counting {
  static inline int calls = 0;
  static void* allocate(std::size_t n) {
    ++calls;
    return std::malloc(n);
  }
  static void release(void* p) { std::free(p); }
};
}  // namespace

TEST_CASE("the caching allocator reuses freed blocks of the same size class", "[core][allocator]") {
  CachingAllocator<Counting> alloc;
  void* p = alloc.allocate(100000);
  alloc.deallocate(p, 100000);
  void* q = alloc.allocate(99000);  // same size class
  CHECK(q == p);
  CHECK(Counting::calls == 1);
  CHECK(alloc.stats().cache_hits == 1);
  alloc.deallocate(q, 99000);
  CHECK(alloc.stats().bytes_cached >= 100000);
  alloc.empty_cache();
  CHECK(alloc.stats().bytes_cached == 0);
  // Size classes never undershoot and waste at most a quarter step.
  for (std::size_t n : {1u, 255u, 257u, 1000u, 4096u, 4097u, 1000000u}) {
    const auto cls = CachingAllocator<Counting>::size_class(n);
    CHECK(cls >= n);
    CHECK(cls <= std::max<std::size_t>(256, n + n / 4 + 1));
  }
}

TEST_CASE("tensors reuse cached memory instead of asking the system again", "[core][allocator]") {
  { auto t = zeros<float>({1 << 20}); }
  const auto before = cpu_memory_stats();
  { auto t = zeros<float>({1 << 20}); }
  const auto after = cpu_memory_stats();
  CHECK(after.system_allocations == before.system_allocations);
  CHECK(after.cache_hits == before.cache_hits + 1);
}

TEST_CASE("the thread pool runs every task once, nests inline and reports exceptions", "[core][threads]") {
  const int saved = num_threads();
  set_num_threads(4);
  std::vector<std::atomic<int>> hits(1000);
  parallel_for(0, 1000, 1, [&](Index b, Index e) {
    for (Index i = b; i < e; ++i) hits[static_cast<std::size_t>(i)]++;
    // Nested regions run inline and still cover their range.
    std::atomic<int> inner{0};
    parallel_for(0, 10, 1, [&](Index ib, Index ie) { inner += static_cast<int>(ie - ib); });
    REQUIRE(inner == 10);
  });
  for (auto& h : hits) REQUIRE(h == 1);
  CHECK_THROWS_AS(parallel_for(0, 100, 1,
                               [](Index b, Index) {
                                 if (b > 50) throw ValueError("boom");
                               }),
                  ValueError);
  // The pool still works after an exception.
  std::atomic<Index> sum{0};
  parallel_for(0, 100, 1, [&](Index b, Index e) { sum += e - b; });
  CHECK(sum == 100);
  set_num_threads(saved);
}

TEST_CASE("run_in_lanes runs every task once on any pool size, nested or not, and rethrows", "[core][threads]") {
  // Lanes are contiguous runs of tasks, one per thread, and threads that finish help the others:
  // whatever the pool size and however the threads arrive, each task must run exactly once.
  const int saved = num_threads();
  for (const int threads : {1, 2, 3, 4, 7}) {
    set_num_threads(threads);
    for (const Index tasks : {Index{1}, Index{2}, Index{5}, Index{64}, Index{1000}}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(tasks));
      cpu_backend::thread_pool().run_in_lanes(tasks, [&](Index t) {
        hits[static_cast<std::size_t>(t)]++;
        // A nested call runs inline on this thread and still covers its range.
        std::atomic<int> inner{0};
        cpu_backend::thread_pool().run_in_lanes(3, [&](Index) { ++inner; });
        if (inner != 3) throw ValueError("nested run_in_lanes ran " + std::to_string(inner.load()) + " of 3 tasks");
      });
      for (Index t = 0; t < tasks; ++t)
        if (hits[static_cast<std::size_t>(t)] != 1)
          FAIL(threads << " threads, " << tasks << " tasks: task " << t << " ran " << hits[static_cast<std::size_t>(t)] << " times");
    }
    CHECK_THROWS_AS(cpu_backend::thread_pool().run_in_lanes(100,
                                                            [](Index t) {
                                                              if (t == 77) throw ValueError("boom");
                                                            }),
                    ValueError);
  }
  set_num_threads(saved);
}

TEST_CASE("back-to-back regions each run every task once, whether workers spin or sleep", "[core][threads]") {
  // Regions follow each other with no gap (workers still spinning from the last one), a short
  // gap, and one longer than the 200 us spin (workers asleep on the condition variable); each
  // region's writes must all be visible when run() returns.
  const int saved = num_threads();
  for (const int threads : {2, 4}) {
    set_num_threads(threads);
    std::vector<int> cells(64, 0);
    for (int region = 0; region < 600; ++region) {
      const int gap_us = region % 3 == 0 ? 0 : region % 3 == 1 ? 20 : 400;
      const auto start = std::chrono::steady_clock::now();
      while (std::chrono::steady_clock::now() - start < std::chrono::microseconds(gap_us)) {
      }
      cpu_backend::thread_pool().run(static_cast<Index>(cells.size()), [&](Index t) { cells[static_cast<std::size_t>(t)] += 1; });
      for (const int c : cells)
        if (c != region + 1) FAIL("region " << region << " with " << threads << " threads: a cell was written " << c << " times");
    }
  }
  set_num_threads(saved);
}
