#!/usr/bin/env bash
# Recipes at equal work (BENCHMARKS.md §8): step-bounded runs on mnist10k (the same number of
# training images each), scored by `elbo eval --quality` (FD-classifier and friends on N samples,
# the run's ancestral sampler) beside the default VAE trained for about the same wall time; and
# the sampler study on recipe A.
#
#   bench/quality_study2.sh            # N=256
#
# Prints one Markdown row per run; the runs stay in bench/out/quality_study2/.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-256}
OUT=${OUT:-bench/out/quality_study2}
cargo build --release -q
ELBO=target/release/elbo
mkdir -p "$OUT"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $N samples"
echo "| run | steps | train s | FD-classifier | class entropy | mean confidence |"
echo "| --- | --- | --- | --- | --- | --- |"
score() {
  local dir=$1 name=$2; shift 2
  local ts="--t-samples 2"
  grep -q '"model": *"vae"' "$dir/config.json" && ts=""
  "$ELBO" -q eval "$dir" --json --quality "$N" --limit 50 $ts "$@" > "$dir/quality_eval.json"
  python3 - "$dir" "$name" <<'PY'
import json, sys
d, name = sys.argv[1], sys.argv[2]
q = json.load(open(d + "/quality_eval.json"))["quality"]; s = q["samples"]
last = [json.loads(l) for l in open(d + "/metrics.jsonl") if '"elapsed_secs"' in l][-1]
print(f"| {name} | {last['step']} | {last['elapsed_secs']:.0f} | {s['fd_classifier']:.1f} (real {q['real']['fd_classifier']:.1f}) | {s['class_entropy']:.2f} | {s['mean_confidence']:.3f} |")
PY
}
run() {
  local name=$1; shift
  local dir="$OUT/$name"
  rm -rf "$dir"
  "$ELBO" -q train --out "$dir" --set grid=0 "$@" >/dev/null 2>&1
  score "$dir" "$name"
}
R=(--set 'vdm.unet.channels=[16,32,64]' --set vdm.objective=simple --set vdm.schedule.kind=cosine)
run "A: [16,32,64], L_simple, cosine" --steps 3200 "${R[@]}"
run "B: A + attention at 7x7" --steps 3200 "${R[@]}" --set vdm.unet.attention=true
run "C: A, batch 64, lr 2e-3" --steps 1600 --batch-size 64 --set optim.lr=0.002 "${R[@]}"
run "default VAE, 93,000 steps" --model vae --steps 93000
A="$OUT/A: [16,32,64], L_simple, cosine"
score "$A" "A, ancestral 100" --steps 100
score "$A" "A, DDIM 50" --sampler ddim --steps 50
score "$A" "A, DDIM 50, eta 1" --sampler ddim --steps 50 --eta 1
