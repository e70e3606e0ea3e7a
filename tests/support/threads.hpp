// with_threads(n, fn): fn() run with the library's pool at n threads, the previous count restored
// afterwards (also when fn throws or a REQUIRE inside it fails), for the tests that compare the
// bits of one computation on 1 and 2 threads.
#pragma once

#include <utility>

#include "cerberus/backend/cpu/thread_pool.hpp"

namespace cerberus::testing_support {

template <class Fn>
auto with_threads(int n, Fn&& fn) {
  struct Restore {
    int threads = num_threads();
    ~Restore() { set_num_threads(threads); }
  } restore;
  set_num_threads(n);
  return std::forward<Fn>(fn)();
}

}  // namespace cerberus::testing_support
