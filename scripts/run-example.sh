#!/usr/bin/env bash
# Installs what is needed (with what fetching data needs), fetches the real text, builds the
# examples and runs them: the short tour, then the pre-training example in its quick mode (a small
# GPT trained on State of the Union addresses and Moby-Dick, under two minutes on 2 cores).
# Extra arguments go to pretrain, e.g. --resume or --steps N (see examples/pretrain.cpp).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --data
scripts/fetch-data.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build/release -j "$(nproc)" --target tour pretrain
./build/release/examples/tour
./build/release/examples/pretrain --quick "$@"
