#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md in sequence (about 4 h 45 min on 2 cores); logs in bench/out/.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
bench/vdm_mnist10k.sh > bench/out/vdm_mnist10k.log 2>&1
bench/vae_mnist10k.sh > bench/out/vae_mnist10k.log 2>&1
bench/vdm_toy.sh > bench/out/vdm_toy.log 2>&1
python3 bench/compare.py --rounds 3 --iters 10 > bench/out/compare.log 2>&1
bench/compare_models.sh > bench/out/compare_models.log 2>&1
bench/score_and_guidance.sh > bench/out/score_and_guidance.log 2>&1
