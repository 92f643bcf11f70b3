#!/usr/bin/env bash
# The modern family on the 2-D mixtures (BENCHMARKS.md §16): the default VDM, flow matching and
# EDM, each trained with its defaults (20,000 steps of 256), then on 1,000 test points the ELBO
# (256 time samples) and the probability-flow ODE likelihood (RK45, rtol = atol = 1e-5, exact
# divergence), beside the true NLL. One JSON line per run in OUT/results.jsonl.
#   [SETS="ring8 grid9 blobs2"] [MODELS="vdm flow edm"] bench/modern_toy.sh [STEPS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-20000}
OUT=${2:-bench/out/modern_toy}
cargo build --release --quiet
bin=target/release/elbo
mkdir -p "$OUT"
for set in ${SETS:-ring8 grid9 blobs2}; do
  for model in ${MODELS:-vdm flow edm}; do
    run="$OUT/$model-$set"
    rm -rf "$run"
    start=$(date +%s.%N)
    $bin -q train --model "$model" --data "toy:$set" --steps "$steps" --batch-size 256 \
      --out "$run" --set eval_every=5000 > /dev/null
    secs=$(python3 -c "import time; print(round(time.time() - $start, 1))")
    $bin -q eval "$run" --json --method ode --limit 1000 --t-samples 256 > "$run/eval_ode.json"
    python3 - "$run" "$set" "$model" "$secs" >> "$OUT/results.jsonl" <<'PY'
import json, sys
run, data, model, secs = sys.argv[1:]
j = json.load(open(run + "/eval_ode.json"))
o = j.get("ode") or {}
print(json.dumps({
    "data": data, "model": model, "train_secs": float(secs),
    "true_nll": j.get("true_nll_nats"), "neg_elbo": j["nll_nats"], "elbo_se": j.get("mc_se"),
    "gap": j.get("gap_nats"), "gap_se": j.get("gap_se"),
    "ode_nll": o.get("nll_nats"), "ode_se": o.get("nll_se"), "ode_gap": o.get("gap_nats"),
    "ode_gap_se": o.get("gap_se"), "ode_nfe": o.get("nfe"),
}))
PY
    tail -1 "$OUT/results.jsonl"
  done
done
