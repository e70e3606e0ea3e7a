#!/usr/bin/env bash
# Installs what building cerberus needs on Debian 12 (bookworm). Safe to run again.
#   scripts/install-deps.sh            the library, tests and examples
#   scripts/install-deps.sh --bench    also the benchmark peers (OpenBLAS, LibTorch 1.13)
set -euo pipefail

packages=(
  ca-certificates g++ cmake ninja-build pkg-config git
  libeigen3-dev libxsimd-dev xtl-dev     # core: Eigen 3.4, xsimd 8.1
  catch2                                 # tests: Catch2 2.13
  libsentencepiece-dev sentencepiece     # tokenizer component
  libopenblas-dev                        # GEMM peer in benchmarks
)
[[ "${1:-}" == "--bench" ]] && packages+=(libtorch-dev)

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
