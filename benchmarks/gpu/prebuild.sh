#!/usr/bin/env bash
# Run HERE (not on the device), before a GPU call, to spare the device's minutes the build:
# builds the CUDA tests and the GPU benchmarks with this machine's nvcc for sm_90 (libstdc++ and
# libgcc linked in statically, so that the device image's older or newer ones do not matter),
# strips them into .gpu-prebuilt/ (git-ignored) with a fingerprint of the sources they were
# built from. benchmarks/gpu/run.sh runs them instead of building when the fingerprint matches
# the tree it runs on and a prebuilt program starts there (else it builds, as before). Then call
# the device tool with carry [".gpu-deps", ".gpu-prebuilt"].
# Takes about as long as the CUDA part of the normal build (2 cores: ~15-20 minutes).
set -eu
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BUILD="$ROOT/build-gpu-host"
DEST="$ROOT/.gpu-prebuilt"
NVCC="${CUDACXX:-/usr/local/cuda/bin/nvcc}"
bash "$ROOT/benchmarks/gpu/prepare.sh" >/dev/null
GEN=(); command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
cmake -S "$ROOT/benchmarks/gpu" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$NVCC" \
  -DCMAKE_CUDA_ARCHITECTURES=90 -DCERBERUS_XSIMD_INCLUDE="$ROOT/.gpu-deps/include" \
  "-DCMAKE_EXE_LINKER_FLAGS=-static-libstdc++ -static-libgcc" >/dev/null
cmake --build "$BUILD" --target gpu_all -j "${JOBS:-$(nproc)}"
rm -rf "$DEST"
mkdir -p "$DEST"
for exe in "$BUILD"/backend_cuda_test_* "$BUILD"/bench_gemm_attention "$BUILD"/bench_gpt; do
  [ -x "$exe" ] && [ -f "$exe" ] || continue
  strip -o "$DEST/$(basename "$exe")" "$exe"
done
bash "$ROOT/benchmarks/gpu/fingerprint.sh" >"$DEST/FINGERPRINT"
echo "prebuilt $(ls "$DEST" | grep -vc FINGERPRINT) programs, $(du -sh "$DEST" | cut -f1), fingerprint $(cat "$DEST/FINGERPRINT")"
