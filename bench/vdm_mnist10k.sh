#!/usr/bin/env bash
# The VDM benchmark of BENCHMARKS.md: the U-Net VDM (continuous-time ELBO, linear γ from
# −13.3 to 5, ε-prediction) on mnist10k for 30 minutes of wall-clock training, then the test
# bound in bits/dim in continuous time and with T = 1000 steps, every term, and samples.
#   bench/vdm_mnist10k.sh [OUT_DIR] [MINUTES]      (default bench/out/vdm_mnist10k, 30)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/out/vdm_mnist10k}
minutes=${2:-30}
rm -rf "$out"; mkdir -p "$(dirname "$out")"
cargo build --release --quiet
bin=target/release/elbo
# A wider U-Net than the 5-minute default: [32, 64] channels, a 64-wide noise embedding.
$bin -q train --model vdm --data mnist10k --steps 100000000 --max-minutes "$minutes" --out "$out" \
  --set 'vdm.unet.channels=[32,64]' --set vdm.unet.embed=64
$bin -q eval "$out" --json > "$out/eval_continuous.json"
$bin -q eval "$out" --t-steps 1000 --json > "$out/eval_T1000.json"
$bin -q sample "$out" --n 64 --steps 200 --out "$out/samples_ancestral200.png"
$bin -q sample "$out" --n 64 --sampler ddim --steps 50 --out "$out/samples_ddim50.png"
cat "$out"/eval_continuous.json "$out"/eval_T1000.json
