#!/usr/bin/env bash
# Compile time of a 3-task model per sharing strategy (issue 5; docs/performance.md).
# Usage: benchmarks/run_mtl_compile_time.sh [out-dir]   (run from the repository root)
set -euo pipefail
out=${1:-build-compile-time}
mkdir -p "$out"
names=(Hard Hierarchical Soft Adapters MMoE CGC CrossStitch)
for i in 1 2 3 4 5 6 7; do
  printf '%-13s ' "${names[$((i - 1))]}"
  /usr/bin/time -f "%U s %M KB" g++ -std=c++20 -O2 -march=native -Iinclude -DSTRATEGY=$i -c benchmarks/mtl_compile_time.cpp \
    -o "$out/strategy_$i.o" 2>&1 | tail -1
done
