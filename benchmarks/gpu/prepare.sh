#!/usr/bin/env bash
# Run HERE (not on the device) before the GPU call: copies xsimd's headers, which the device
# image lacks, into .gpu-deps/include (git-ignored). Then call the device tool with
# carry [".gpu-deps"] and command "bash benchmarks/gpu/run.sh".
set -eu
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
mkdir -p "$ROOT/.gpu-deps/include"
rm -rf "$ROOT/.gpu-deps/include/xsimd"
cp -r /usr/include/xsimd "$ROOT/.gpu-deps/include/"
du -sh "$ROOT/.gpu-deps"
