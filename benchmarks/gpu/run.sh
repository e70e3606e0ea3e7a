#!/usr/bin/env bash
# The GPU check of issue 8, as ONE command on the borrowed machine, from the repository root:
#     bash benchmarks/gpu/run.sh            (OUT=<folder> for the logs; default ./out-gpu)
# Builds only the CUDA tests and the GPU benchmark (benchmarks/gpu/CMakeLists.txt: no Eigen,
# Catch2 or xsimd CMake package needed; xsimd's headers from the system or from .gpu-deps/,
# which benchmarks/gpu/prepare.sh fills here and the device call carries), runs every test with
# a time limit into $OUT/tests.log, and the benchmark (plus PyTorch peers when torch imports)
# into $OUT/bench.txt. Every step has a timeout.
# bf16 attention runs on tensor cores (include/cerberus/backend/cuda/attention_tensor_core.cuh)
# only when backend_cuda_test_attention_tensor_core passed here first: otherwise the benchmarks
# get --no-tensor-core-attention (the tested float-conversion path) and summary.txt says so.
# Stages: `run.sh` does all; `run.sh tests` builds and runs the tests only (about 8 minutes with
# 16 cores), `run.sh bench` builds (reusing build-gpu/) and runs the benchmarks only (about 7):
# two calls that each fit the device tool's 10-minute limit. With programs prebuilt here
# (benchmarks/gpu/prebuild.sh, carry [".gpu-deps", ".gpu-prebuilt"]) nothing is built there and
# `run.sh` (all) fits one call.
set -u
STAGE="${1:-all}"
case "$STAGE" in all|tests|bench) ;; *) echo "usage: run.sh [all|tests|bench]"; exit 2 ;; esac
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${OUT:-$ROOT/out-gpu}"
BUILD="$ROOT/build-gpu"
JOBS="${JOBS:-16}"
mkdir -p "$OUT"
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }
log() { echo "[run.sh $(elapsed)] $*" | tee -a "$OUT/summary.txt"; }

log "host: $(uname -m), $(nproc) cores"
if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee -a "$OUT/summary.txt"
else
  log "nvidia-smi not found"
fi

# Programs built here by benchmarks/gpu/prebuild.sh (carried in .gpu-prebuilt/) replace the build
# when they were built from exactly these sources and start on this machine's libraries.
for lib in /usr/local/cuda/lib64 /usr/local/cuda/lib; do
  [ -d "$lib" ] && export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
PREBUILT="$ROOT/.gpu-prebuilt"
use_prebuilt=0
if [ -f "$PREBUILT/FINGERPRINT" ]; then
  if [ "$(bash "$ROOT/benchmarks/gpu/fingerprint.sh")" != "$(cat "$PREBUILT/FINGERPRINT")" ]; then
    log "prebuilt programs are from other sources: building here"
  else
    timeout 60 "$PREBUILT/backend_cuda_test_streams" >"$OUT/prebuilt_probe.log" 2>&1
    probe=$?
    if [ $probe -eq 126 ] || [ $probe -eq 127 ] || grep -q "error while loading shared libraries" "$OUT/prebuilt_probe.log"; then
      log "prebuilt programs do not start here (rc $probe, prebuilt_probe.log): building here"
    else
      use_prebuilt=1
      BUILD="$PREBUILT"
      log "using the prebuilt programs (fingerprint $(cat "$PREBUILT/FINGERPRINT"); probe rc $probe)"
    fi
  fi
fi

if [ $use_prebuilt -eq 0 ]; then
NVCC="${CUDACXX:-}"
[ -z "$NVCC" ] && NVCC="$(command -v nvcc || true)"
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
if [ -z "$NVCC" ]; then log "FATAL: no nvcc"; exit 2; fi
log "nvcc: $("$NVCC" --version | tail -1)"

XSIMD=""
if [ -f /usr/include/xsimd/xsimd.hpp ]; then XSIMD=""
elif [ -f "$ROOT/.gpu-deps/include/xsimd/xsimd.hpp" ]; then XSIMD="$ROOT/.gpu-deps/include"
else log "FATAL: xsimd headers missing: run benchmarks/gpu/prepare.sh here and carry .gpu-deps"; exit 2; fi
log "xsimd: ${XSIMD:-system}"

GEN=(); command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
log "configure"
timeout 120 cmake -S "$ROOT/benchmarks/gpu" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES=90 -DCERBERUS_XSIMD_INCLUDE="$XSIMD" >"$OUT/build.log" 2>&1 \
  || { log "FATAL: configure failed (see build.log)"; tail -30 "$OUT/build.log"; exit 2; }
log "build (-j$JOBS): benchmarks first, then the tests"
KEEP_GOING=(); [ ${#GEN[@]} -gt 0 ] && KEEP_GOING=(-- -k 0)  # ninja: build every target it can
# The two benchmarks build alone first, so that a test build that runs out of time still leaves
# the timings; then the 18 test units (the multi-task ones take the longest).
fail=0; missing=0
if [ "$STAGE" != tests ]; then
  timeout "${BENCH_BUILD_TIMEOUT:-150}" cmake --build "$BUILD" --target bench_gemm_attention bench_gpt backend_cuda_test_attention_tensor_core \
    -j "$JOBS" "${KEEP_GOING[@]}" >>"$OUT/build.log" 2>&1
  log "benchmarks built, rc $?"
fi
if [ "$STAGE" != bench ]; then
timeout "${BUILD_TIMEOUT:-300}" cmake --build "$BUILD" --target gpu_tests -j "$JOBS" "${KEEP_GOING[@]}" >>"$OUT/build.log" 2>&1
build_rc=$?
log "tests built, rc $build_rc"
[ $build_rc -ne 0 ] && grep -E "error|Error" "$OUT/build.log" | head -40
fi
fi  # building here

if [ "$STAGE" != bench ]; then

: >"$OUT/tests.log"
pass=0; fail=0; skip=0; missing=0
tc_rc=""  # exit status of backend_cuda_test_attention_tensor_core, for the bench stage
for src in "$ROOT"/tests/backend/cuda/test_*.cu; do
  name="backend_cuda_$(basename "$src" .cu)"
  exe="$BUILD/$name"
  if [ ! -x "$exe" ]; then log "$name: NOT BUILT"; missing=$((missing + 1)); continue; fi
  echo "==== $name" >>"$OUT/tests.log"
  timeout "${TEST_TIMEOUT:-90}" "$exe" >>"$OUT/tests.log" 2>&1
  rc=$?
  [ "$name" = backend_cuda_test_attention_tensor_core ] && tc_rc=$rc
  case $rc in
    0) pass=$((pass + 1)); log "$name: passed" ;;
    77) skip=$((skip + 1)); log "$name: skipped (no device)" ;;
    124) fail=$((fail + 1)); log "$name: TIMEOUT" ;;
    *) fail=$((fail + 1)); log "$name: FAILED (rc $rc)"; grep -E "^\[FAIL\]|uncaught" <(sed -n "/==== $name/,\$p" "$OUT/tests.log") | head -20 | tee -a "$OUT/summary.txt" ;;
  esac
done
log "tests: $pass passed, $fail failed, $skip skipped, $missing not built (details: tests.log)"
grep -E "^\[(pass|FAIL)\]" "$OUT/tests.log" | sed -E 's/^(\[[a-zA-Z]+\]) (.*): max rel error ([^ ]+).*/\1 \3  \2/' >"$OUT/errors.txt" 2>/dev/null || true

fi  # tests stage

if [ "$STAGE" != tests ]; then
: >"$OUT/bench.txt"
# Tensor-core bf16 attention only once its test passed on this machine (the tests stage's run, or
# one here).
if [ -z "${tc_rc:-}" ]; then
  tc_test="$BUILD/backend_cuda_test_attention_tensor_core"
  if [ -x "$tc_test" ]; then
    timeout "${TC_TEST_TIMEOUT:-90}" "$tc_test" >"$OUT/tensor_core_test.log" 2>&1
    tc_rc=$?
  else
    tc_rc="not built"
  fi
fi
TC_FLAG=()
if [ "$tc_rc" = 0 ]; then
  log "tensor-core attention test passed: bf16 attention on tensor cores in the benchmarks"
else
  TC_FLAG=(--no-tensor-core-attention)
  log "tensor-core attention test FAILED (rc $tc_rc; tests.log or tensor_core_test.log): benchmarks run with --no-tensor-core-attention (bf16 attention through the float conversion)"
  [ -f "$OUT/tensor_core_test.log" ] && grep -E "^\[FAIL\]|uncaught" "$OUT/tensor_core_test.log" | head -10 | tee -a "$OUT/summary.txt"
fi
if [ -x "$BUILD/bench_gemm_attention" ]; then
  log "benchmark ${TC_FLAG[*]}"
  timeout "${BENCH_TIMEOUT:-90}" "$BUILD/bench_gemm_attention" "${TC_FLAG[@]}" >>"$OUT/bench.txt" 2>&1
  log "benchmark rc $?"
fi
if [ -x "$BUILD/bench_gpt" ]; then
  log "GPT training-step benchmark ${TC_FLAG[*]}"
  timeout "${GPT_TIMEOUT:-120}" "$BUILD/bench_gpt" "${TC_FLAG[@]}" >>"$OUT/bench.txt" 2>&1
  log "bench_gpt rc $?"
fi
if timeout 60 python3 -c "import torch; assert torch.cuda.is_available()" >/dev/null 2>&1; then
  log "PyTorch peers"
  timeout "${TORCH_TIMEOUT:-150}" python3 "$ROOT/benchmarks/gpu/bench_torch.py" >>"$OUT/bench.txt" 2>&1
  log "torch rc $?"
  python3 - "$OUT/bench.txt" <<'PY' | tee -a "$OUT/bench.txt"
import re, sys
r = {}
for line in open(sys.argv[1]):
    m = re.match(r"RESULT (.*?)\s+([0-9.]+) (?:TFLOP/s|tokens/s)", line)
    if m: r[m.group(1).strip()] = float(m.group(2))
print("ratio cerberus / torch (TFLOP/s, or tokens/s for the GPT steps; same name after the first word):")
for a in r:
    if not a.startswith("cerberus "): continue
    b = "torch " + a[len("cerberus "):]
    if b in r and r[b] > 0: print(f"  {a[len('cerberus '):]:<46s} {r[a]:10.1f} vs {r[b]:10.1f}  = {r[a] / r[b]:.2f}x")
print("ratio cerberus bf16 attention on tensor cores / through the float conversion (TFLOP/s):")
for a in r:
    if a.startswith("cerberus attn bf16 "):
        b = a.replace("attn bf16 ", "attn bf16-via-float ", 1)
        if b in r and r[b] > 0: print(f"  {a[len('cerberus '):]:<46s} {r[a]:10.1f} vs {r[b]:10.1f}  = {r[a] / r[b]:.2f}x")
print("ratio cerberus flash attention / naive materialising reference (TFLOP/s):")
for a in r:
    b = "naive " + a[len("cerberus "):]
    if a.startswith("cerberus ") and b in r and r[b] > 0: print(f"  {a[len('cerberus '):]:<46s} {r[a]:10.1f} vs {r[b]:10.1f}  = {r[a] / r[b]:.2f}x")
PY
else
  log "no usable torch: peers skipped"
fi
cat "$OUT/bench.txt"
fi  # bench stage
log "done"
[ $fail -eq 0 ] && [ $missing -eq 0 ]
