#!/usr/bin/env bash
# A fingerprint of every source the GPU programs are built from (the headers, the CUDA tests,
# benchmarks/gpu), the same on any machine for the same files: prebuild.sh records it, run.sh
# compares it before using prebuilt programs.
set -eu
cd "$(dirname "$0")/../.."
find include tests/backend/cuda benchmarks/gpu -type f \
  \( -name '*.hpp' -o -name '*.cuh' -o -name '*.cu' -o -name '*.cpp' -o -name '*.h' -o -name 'CMakeLists.txt' \) -print0 |
  LC_ALL=C sort -z | xargs -0 sha1sum | sha1sum | cut -c1-40
