#!/usr/bin/env bash
# BENCHMARKS.md §10: `elbo compare` on mnist10k, VAE, two-layer HVAE and VDM with 20 minutes of
# training each, on binarised digits (beside Burda et al. 2016) and on the 8-bit levels.
# Each run is pinned to one core (taskset -c 0) so that the three models get the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
mkdir -p bench/out
PIN="taskset -c 0"
command -v taskset >/dev/null || PIN=""
$PIN target/release/elbo compare --representation binary --minutes "${MINUTES:-20}" \
  --out bench/out/compare-binary --iw 5000 --quality 1000
$PIN target/release/elbo compare --representation 8bit --minutes "${MINUTES_8BIT:-20}" \
  --out bench/out/compare-8bit --iw 1000 --quality 1000
