#!/usr/bin/env bash
# Installs what is needed, builds everything and runs every test through ctest.
# This is the README's test command, and exactly what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --data
# The real data: the flagship example's end-to-end test (example_instruction_tuning_quick) trains
# on it. Configured only where it exists, so it is fetched first.
scripts/fetch-data.sh
jobs=$(nproc)
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DCERBERUS_BUILD_DOCS=ON
cmake --build build/release -j "$jobs"
ctest --test-dir build/release --output-on-failure -j "$jobs"
