#!/usr/bin/env bash
# The bound against sample quality at equal wall time, for the weightings, proposals and
# Fourier features of MATH.md M44–M45 (BENCHMARKS.md §15). Each configuration trains for
# MINUTES minutes on DATA, then `elbo eval --quality 500` reports bits/dim on the test split
# (1,000 images for mnist10k) and FD-classifier on 500 samples (200 ancestral steps).
#
#   bench/weighted_study.sh [MINUTES] [DATA] [OUT_DIR]    (defaults: 10 mnist10k bench/out/study)
#
# One JSON line per configuration in OUT_DIR/results.jsonl; nothing else should run meanwhile.
# ONLY=name,name runs some of the configurations; EVAL_ARGS adds flags to `elbo eval` (for
# Fashion-MNIST, whose test split has 10,000 images: EVAL_ARGS="--limit 1000").
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=${1:-10}
DATA=${2:-mnist10k}
OUT=${3:-bench/out/study}
mkdir -p "$OUT"
cargo build --release --quiet
ELBO=target/release/elbo
UNGATED="--set vdm.unet.fourier_gate=false"  # the plain features, as first measured
NOFEAT="--set vdm.unet.fourier=false"         # no Fourier features (the default has them now)
. bench/previous_default.sh                   # PREVIOUS_DEFAULT
BOUND="--set vdm.schedule.kind=cosine-log-snr --set vdm.schedule.gamma_min=-13.3 --set vdm.schedule.gamma_max=6"
declare -a NAMES=(
  "default"   # the previous default (the table's first row)
  "elbo"
  "sigmoid-adaptive"
  "sigmoid-adaptive-fourier"
  "edm"
  "elbo-adaptive-fourier"
  "simple-floor-fourier"
  "simple-floor-adaptive-fourier"
  "simple-floor-small"
  "simple-floor-small-gated"
  "simple-floor-mid-gated"
  "elbo-adaptive-gated"
)
declare -a ARGS=(
  "$PREVIOUS_DEFAULT"
  "--set vdm.objective=elbo $NOFEAT $BOUND"
  "--set vdm.objective=sigmoid --set vdm.proposal=adaptive $NOFEAT $BOUND"
  "--set vdm.objective=sigmoid --set vdm.proposal=adaptive --set vdm.unet.fourier=true $UNGATED $BOUND"
  "--set vdm.objective=edm --set vdm.proposal=edm $NOFEAT $BOUND"
  "--set vdm.objective=elbo --set vdm.proposal=adaptive --set vdm.unet.fourier=true $UNGATED $BOUND"
  "--set vdm.objective=simple --set vdm.elbo_weight=0.1 --set vdm.unet.fourier=true $UNGATED $BOUND"
  "--set vdm.objective=simple --set vdm.elbo_weight=0.1 --set vdm.proposal=adaptive --set vdm.unet.fourier=true $UNGATED $BOUND"
  "--set vdm.objective=simple --set vdm.elbo_weight=0.003 $NOFEAT $BOUND"
  "--set vdm.objective=simple --set vdm.elbo_weight=0.003 --set vdm.unet.fourier=true $BOUND"
  "--set vdm.objective=simple --set vdm.elbo_weight=0.03 --set vdm.unet.fourier=true $BOUND"
  "--set vdm.objective=elbo --set vdm.proposal=adaptive --set vdm.unet.fourier=true $BOUND"
)
ONLY=${ONLY:-}
for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]}
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
  run="$OUT/$DATA-$MIN-$name"
  rm -rf "$run"
  # shellcheck disable=SC2086
  $ELBO -q train --data "$DATA" --out "$run" --max-minutes "$MIN" --steps 1000000 \
    --set eval_every=2000 --set grid=16 ${ARGS[$i]} > /dev/null 2> "$run.train.log" || true
  # shellcheck disable=SC2086
  $ELBO eval "$run" --json --quality 500 ${EVAL_ARGS:-} > "$run.eval.json" 2> "$run.eval.log"
  python3 - "$run" "$name" "$MIN" "$DATA" >> "$OUT/results.jsonl" <<'PY'
import json, sys
run, name, minutes, data = sys.argv[1:]
e = json.load(open(run + ".eval.json"))
st = json.load(open(run + "/checkpoint.json"))
print(json.dumps({
    "name": name, "data": data, "minutes": float(minutes), "step": st["step"],
    "bits_per_dim": e.get("bits_per_dim"), "mc_se": e.get("bits_per_dim_mc_se"),
    "terms": e["terms"], "fd_classifier": e["quality"]["samples"]["fd_classifier"],
    "real_fd": e["quality"]["real"]["fd_classifier"], "objective": e.get("objective"),
    "n": e.get("n"),
}))
PY
  tail -1 "$OUT/results.jsonl"
done
