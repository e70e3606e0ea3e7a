// The one thread pool behind every parallel CPU kernel (elementwise, reductions, GEMM).
// parallel_for and the GEMM deal their tasks out in lanes (run_in_lanes): each thread keeps the
// same rows of its tensors from one op to the next, in its own L2.
// Idle workers sleep on a condition variable, after a short bounded spin: a worker that has just
// left a region watches for the next one for up to spin_limit (200 us) before it sleeps, and the
// caller watches for the region's end as long before it sleeps on done_. A futex wake costs
// 30-50 us on these VMs (measured: a sleeping worker joins a region that late), and a training
// step runs ~300 regions back to back. Measured on a 2-core Zen 4 VM, two threads, medians of 5
// alternations (transformer_train --one): tiny inference 121.5 -> 119.6 ms and training 397 ->
// 383 ms in a quiet hour; 125.6 -> 121.9 and 392.6 -> 392.0 (small inference 594.7 -> 594.5) in
// a noisy one; ~2% more CPU time. It stays bounded, never an open-ended spin: two pools spinning
// without limit against the threads doing work made 2 threads slower than 1 on these machines.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "cerberus/core/config.hpp"

namespace cerberus::cpu_backend {

class ThreadPool {
 public:
  // `threads` counts the calling thread: a pool of 2 starts one worker.
  explicit ThreadPool(int threads) { start(threads); }
  ~ThreadPool() { stop(); }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Replaces the workers; not to be called while a parallel region runs.
  void resize(int threads) {
    std::lock_guard submit(submit_mutex_);
    stop();
    start(threads);
  }

  // Runs body(task) for task in [0, tasks), spread over the pool; the caller takes part and
  // returns when all tasks are done. Called from inside a task, or while another thread owns
  // the pool, it runs the tasks inline: nesting never deadlocks and never oversubscribes.
  void run(Index tasks, const std::function<void(Index)>& body) {
    if (tasks <= 0) return;
    std::unique_lock submit(submit_mutex_, std::try_to_lock);
    if (tasks == 1 || workers_.empty() || inside_task() || !submit.owns_lock()) {
      for (Index t = 0; t < tasks; ++t) body(t);
      return;
    }
    {
      std::lock_guard lock(mutex_);
      body_ = &body;
      tasks_ = tasks;
      next_.store(0, std::memory_order_relaxed);
      pending_ = tasks;
      generation_.fetch_add(1, std::memory_order_release);
      finished_.store(false, std::memory_order_relaxed);
    }
    wake_.notify_all();
    work_through(body, false);
    spin_briefly([&] { return finished_.load(std::memory_order_acquire); });
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0 && active_ == 0; });
    body_ = nullptr;
    // A task that threw on any thread rethrows here, on the caller's thread.
    if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
  }

  // As run(), but the tasks are dealt out in contiguous lanes, one per thread of the pool in a
  // fixed order: the caller starts on lane 0 (the first tasks), worker i on lane i, and a thread
  // whose lane is done takes the next tasks of the other lanes. Kernels number their tasks along
  // the rows of their output, so from one op to the next each thread works on the same rows,
  // which its own L2 still holds (1 MiB per core on a Zen 4 VM, where dealing tasks to
  // whichever thread came first left 2-thread products with N = 256 at 0.83x OpenBLAS). The
  // helping keeps a late or slowed thread (a vCPU the host took away) from holding a region up.
  void run_in_lanes(Index tasks, const std::function<void(Index)>& body) {
    constexpr Index max_lanes = 64;
    const Index lanes = std::min({static_cast<Index>(size()), tasks, max_lanes});
    if (lanes <= 1) {
      run(tasks, body);
      return;
    }
    std::array<std::atomic<Index>, max_lanes> next;  // the next unclaimed task of each lane
    const auto lane_begin = [&](Index lane) { return lane * tasks / lanes; };
    for (Index lane = 0; lane < lanes; ++lane) next[static_cast<std::size_t>(lane)].store(lane_begin(lane), std::memory_order_relaxed);
    run(lanes, [&](Index) {
      const Index first = thread_index() % lanes;
      for (Index k = 0; k < lanes; ++k) {
        const Index lane = (first + k) % lanes, end = lane_begin(lane + 1);
        for (Index t; (t = next[static_cast<std::size_t>(lane)].fetch_add(1, std::memory_order_relaxed)) < end;) body(t);
      }
    });
  }

 private:
  // This thread's place in the pool: 0 for the caller (any thread that is not a worker), i for
  // worker i (1 .. size() - 1).
  static int& thread_index() {
    thread_local int index = 0;
    return index;
  }

  static bool& inside_task() {
    thread_local bool flag = false;
    return flag;
  }

  // Claims tasks until none are left, then books them as done.
  void work_through(const std::function<void(Index)>& body, bool is_worker) {
    const bool was_inside = inside_task();
    inside_task() = true;
    Index ran = 0;
    std::exception_ptr failure;
    for (Index t; (t = next_.fetch_add(1, std::memory_order_relaxed)) < tasks_; ++ran) {
      try {
        body(t);
      } catch (...) {
        failure = std::current_exception();
      }
    }
    inside_task() = was_inside;
    std::lock_guard lock(mutex_);
    if (failure && !failure_) failure_ = failure;
    pending_ -= ran;
    if (is_worker) --active_;
    if (pending_ == 0 && active_ == 0) {
      finished_.store(true, std::memory_order_release);
      done_.notify_all();
    }
  }

  // Polls `ready` for up to spin_limit, then returns either way: the caller then takes the lock
  // and the condition variable's own predicate decides (the spin is only a shortcut to it).
  template <class Ready>
  static void spin_briefly(Ready&& ready) {
    static constexpr auto spin_limit = std::chrono::microseconds(200);
    const auto start = std::chrono::steady_clock::now();
    while (!ready()) {
      for (int i = 0; i < 32; ++i) pause_cpu();
      if (std::chrono::steady_clock::now() - start > spin_limit) return;
    }
  }
  static void pause_cpu() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();  // lets the sibling hyper-thread run and eases the memory-order exit
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }

  void worker_loop() {
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<void(Index)>* body;
      spin_briefly([&] { return generation_.load(std::memory_order_acquire) != seen || quit_.load(std::memory_order_relaxed); });
      {
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return quit_ || (generation_ != seen && body_ != nullptr); });
        if (quit_) return;
        seen = generation_;
        body = body_;
        ++active_;  // the region cannot end, nor the next begin, until this worker leaves it
      }
      work_through(*body, true);
    }
  }

  void start(int threads) {
    quit_ = false;
    for (int i = 1; i < std::max(threads, 1); ++i)
      workers_.emplace_back([this, i] {
        thread_index() = i;
        worker_loop();
      });
  }
  void stop() {
    {
      std::lock_guard lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::mutex submit_mutex_;  // one parallel region at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(Index)>* body_ = nullptr;
  Index tasks_ = 0;
  std::atomic<Index> next_{0};
  Index pending_ = 0;
  int active_ = 0;
  std::exception_ptr failure_;  // workers inside the current region
  // Written under mutex_, atomic so that the spins (spin_briefly) may read them without it.
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> quit_{false};
  // Whether the latest region has ended (pending_ == 0 && active_ == 0), for the caller's spin.
  std::atomic<bool> finished_{true};
};

// Threads to use by default: CERBERUS_NUM_THREADS if set, else the hardware's count.
inline int default_thread_count() {
  if (const char* env = std::getenv("CERBERUS_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

inline ThreadPool& thread_pool() {
  static ThreadPool pool(default_thread_count());
  return pool;
}

}  // namespace cerberus::cpu_backend

namespace cerberus {

// Number of threads the CPU kernels use (the caller included).
inline int num_threads() { return cpu_backend::thread_pool().size(); }
inline void set_num_threads(int threads) { cpu_backend::thread_pool().resize(threads); }

// Splits [begin, end) into chunks of at least `grain` items, one task per chunk, and runs
// body(chunk_begin, chunk_end) over the shared pool.
template <class Body>
void parallel_for(Index begin, Index end, Index grain, Body&& body) {
  const Index n = end - begin;
  if (n <= 0) return;
  const Index threads = num_threads();
  Index chunks = std::min<Index>(threads * 4, (n + std::max<Index>(grain, 1) - 1) / std::max<Index>(grain, 1));
  if (chunks <= 1) {
    body(begin, end);
    return;
  }
  // Chunks are a multiple of the thread count so that each thread gets an equal share.
  chunks = std::max<Index>(threads, chunks - chunks % threads);
  const Index step = (n + chunks - 1) / chunks;
  chunks = (n + step - 1) / step;
  cpu_backend::thread_pool().run_in_lanes(chunks, [&](Index c) {
    const Index b = begin + c * step;
    body(b, std::min(end, b + step));
  });
}

}  // namespace cerberus
