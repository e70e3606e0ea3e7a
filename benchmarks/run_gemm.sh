#!/usr/bin/env bash
# Runs the GEMM benchmark once per OpenBLAS kernel family: OpenBLAS reads OPENBLAS_CORETYPE when
# the library loads, so each setting needs its own process. Haswell = its AVX2 kernels,
# Cooperlake = its AVX-512 ones (the fastest it has for these Xeons).
# Usage: benchmarks/run_gemm.sh [path/to/bench_gemm] [threads...]   (default: build/release, 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/release/benchmarks/bench_gemm}
[ $# -gt 0 ] && shift
for core in Haswell Cooperlake; do
  echo "== OPENBLAS_CORETYPE=$core =="
  OPENBLAS_CORETYPE=$core "$bin" "$@"
  echo
done
