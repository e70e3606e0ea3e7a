#!/usr/bin/env bash
# Installs what is needed, builds the main example and runs it. Extra arguments go to the example.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build/release -j "$(nproc)" --target tour
./build/release/examples/tour "$@"
