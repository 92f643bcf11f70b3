#!/usr/bin/env bash
# BENCHMARKS.md §11–§13: the score-based view (ODE likelihood beside the ELBO, sample quality
# against NFE, an NCSN), guidance measured, and PyTorch parity. About 1 h 30 min on 2 cores.
# Needs Fashion-MNIST (apt-get install dataset-fashion-mnist) for the guidance rows on it, and
# bench/.venv (torch, safetensors) for parity.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
E=target/release/elbo
O=bench/out/score
mkdir -p $O
# Models: the default VDM, its class-conditional twin, noisy classifiers, an NCSN, 2-D mixtures.
$E train --out $O/vdm -q
$E train --set vdm.conditional=true --out $O/vdm-cond -q
$E train --model noisy-classifier --steps 2000 --out $O/ncls -q
$E train --data fashion-mnist --out $O/fash -q
$E train --data fashion-mnist --set vdm.conditional=true --out $O/fash-cond -q
$E train --model noisy-classifier --data fashion-mnist --steps 2000 --out $O/fash-ncls -q
$E train --model ncsn --out $O/ncsn -q
for t in blobs2 ring8 grid9; do $E train --data toy:$t --out $O/$t -q; done
# §11: ELBO beside the ODE likelihood; quality against NFE; the NCSN's Langevin samples.
$E eval $O/vdm --method ode --limit 64 --t-samples 512 -q
for t in blobs2 ring8 grid9; do $E eval $O/$t --method ode --limit 1000 --t-samples 256 -q; done
$E samplers $O/vdm -n 500 -q
$E eval $O/ncsn --limit 2 --t-samples 2 --quality 500 -q
$E sample $O/ncsn -n 64 --out $O/ncsn_langevin.png
# §12: guidance against its weight, both kinds, both data sets.
$E guidance $O/vdm-cond -q
$E guidance $O/vdm --classifier $O/ncls -q
$E guidance $O/fash-cond -q
$E guidance $O/fash --classifier $O/fash-ncls -q
# §13: PyTorch parity.
$E train --model vae --steps 2000 --out $O/vae -q
$E train --model hvae --steps 2000 --out $O/hvae -q
bench/.venv/bin/python bench/parity.py $O/vae $O/hvae $O/blobs2 $O/vdm $O/vdm-cond
