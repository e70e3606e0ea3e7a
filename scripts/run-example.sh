#!/usr/bin/env bash
# The README's main command: installs what is needed (with what fetching data needs), fetches the
# real data, builds the flagship example and runs it: a small language model pre-trained on real
# text (when runs/instruct/<mode>/pretrained/ does not hold one yet), then instruction-tuned jointly
# to translate into French, summarize and judge sentiment, with a results table against baselines
# and predictions for held-out inputs and the seed's "This is a test sentence.".
# About 9 minutes on 2 cores (at most 15); `scripts/run-example.sh --quick` takes under two. Extra arguments go
# to the example (see examples/instruction_tuning.cpp: --quick, --steps N, --stop-after N, --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --data
scripts/fetch-data.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build/release -j "$(nproc)" --target instruction_tuning
./build/release/examples/instruction_tuning "$@"
