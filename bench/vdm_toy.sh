#!/usr/bin/env bash
# The 2-D benchmark of BENCHMARKS.md: the default MLP VDM on toy mixtures with exact densities;
# the gap between its NLL bound on the test split and the true NLL, in nats.
#   [SETS="ring8 grid9"] bench/vdm_toy.sh [STEPS]      (default: all three sets, 20000 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-20000}
cargo build --release --quiet
bin=target/release/elbo
for set in ${SETS:-ring8 grid9 blobs2}; do
  out=bench/out/vdm_toy_$set
  rm -rf "$out"
  $bin -q train --data toy:$set --steps "$steps" --batch-size 256 --out "$out" --set eval_every=5000 >/dev/null
  $bin -q eval "$out" --json > "$out/eval.json"
  python3 -c "import json,sys; j=json.load(open('$out/eval.json')); print('$set', 'bound %.4f true %.4f gap %.4f mc_se %.4f' % (j['nll_nats'], j['true_nll_nats'], j['gap_nats'], j['mc_se']))"
done
