#!/usr/bin/env bash
# The IWAE benchmark of BENCHMARKS.md: Burda et al.'s one-stochastic-layer VAE (784-200-200-50,
# tanh; elbo's default VAE) on dynamically binarised mnist10k, trained for 10 and then 30 minutes
# of wall-clock time, with the test NLL estimated by L_5000 after each.
#   bench/vae_mnist10k.sh [OUT_DIR]      (default bench/out/vae_mnist10k)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/out/vae_mnist10k}
rm -rf "$out"; mkdir -p "$(dirname "$out")"
cargo build --release --quiet
bin=target/release/elbo
$bin -q train --model vae --data mnist10k --steps 100000000 --max-minutes 10 --out "$out" --set eval_every=5000 --set checkpoint_every=5000
$bin -q eval "$out" --iw 5000 --json > "$out/eval_10min.json"
$bin -q train --resume --out "$out" --max-minutes 30
$bin -q eval "$out" --iw 5000 --json > "$out/eval_30min.json"
cat "$out"/eval_10min.json "$out"/eval_30min.json
