#!/usr/bin/env bash
# Runs the transformer-ops benchmark (softmax, layer_norm, cross_entropy against LibTorch 1.13)
# under each LibTorch setting worth comparing. LibTorch reads ATEN_CPU_CAPABILITY, and glibc its
# MALLOC_* variables, when the process starts, so every setting is its own run; transformer_ops
# starts the LibTorch peer as a child process, which inherits the setting.
#   as installed      ATen dispatches to its AVX2 kernels on these AVX-512 machines
#   avx512            ATEN_CPU_CAPABILITY=avx512 OPENBLAS_CORETYPE=Cooperlake: its AVX-512 kernels,
#                     and OpenBLAS's (the LM head's products; this environment forces OpenBLAS
#                     onto its AVX2 kernels otherwise, /work/shared/peers/README.md)
#   malloc            MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736: glibc keeps freed
#                     memory, so LibTorch's large temporaries stop paying first-touch page faults
#                     (about 12 us per 4 KiB page here; /work/shared/peers/README.md)
#   avx512 + malloc   both
# cerberus is unaffected by either setting (its CPU kernels are chosen at compile time, and its
# caching allocator already keeps memory).
# Usage: benchmarks/run_transformer_ops.sh [path/to/transformer_ops] [threads...]
#        (default: build/release/benchmarks/transformer_ops, threads 1 2)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/release/benchmarks/transformer_ops}
[ $# -gt 0 ] && shift
keep_memory="MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736"
run() {
  echo "== LibTorch $1 =="
  shift
  env "$@" "$bin" "${threads[@]}"
  echo
}
threads=("$@")
run "as installed"
run "ATEN_CPU_CAPABILITY=avx512 OPENBLAS_CORETYPE=Cooperlake" ATEN_CPU_CAPABILITY=avx512 OPENBLAS_CORETYPE=Cooperlake
run "$keep_memory" $keep_memory
run "ATEN_CPU_CAPABILITY=avx512 OPENBLAS_CORETYPE=Cooperlake $keep_memory" ATEN_CPU_CAPABILITY=avx512 OPENBLAS_CORETYPE=Cooperlake $keep_memory
