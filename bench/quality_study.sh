#!/usr/bin/env bash
# Sample quality against wall-clock time: VDM recipes on mnist10k, each trained for the same
# minutes, then scored by `elbo eval --quality` (FD-classifier and friends, on N samples drawn
# with the run's ancestral sampler) beside its bound.
#
#   bench/quality_study.sh                 # MINUTES=4 N=256
#   MINUTES=10 N=1000 bench/quality_study.sh
#
# Prints one Markdown row per recipe; the runs stay in bench/out/quality_study/.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${MINUTES:-4}
N=${N:-256}
OUT=${OUT:-bench/out/quality_study}
cargo build --release -q
ELBO=target/release/elbo
mkdir -p "$OUT"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; $MINUTES min of training each, $N samples"
echo "| recipe | steps | bits/dim (200 test images) | FD-classifier | class entropy | mean confidence |"
echo "| --- | --- | --- | --- | --- | --- |"
run() {
  local name=$1; shift
  local dir="$OUT/$name"
  rm -rf "$dir"
  "$ELBO" -q train --out "$dir" --steps 1000000 --max-minutes "$MINUTES" --set grid=0 "$@" >/dev/null 2>&1
  "$ELBO" -q eval "$dir" --json --quality "$N" --limit 200 --t-samples 4 > "$dir/quality.json"
  python3 - "$dir" "$name" <<'PY'
import json, sys
j = json.load(open(sys.argv[1] + "/quality.json")); q = j["quality"]; s = q["samples"]
steps = json.load(open(sys.argv[1] + "/checkpoint.json"))["step"]
print(f"| {sys.argv[2]} | {steps} | {j['bits_per_dim']:.3f} | {s['fd_classifier']:.1f} (real {q['real']['fd_classifier']:.1f}) | {s['class_entropy']:.2f} | {s['mean_confidence']:.3f} |")
PY
}
run "default: U-Net [16, 32], ELBO, linear γ" 
run "[16, 32], L_simple" --set vdm.objective=simple
run "[16, 32, 64] (7×7 level), ELBO" --set 'vdm.unet.channels=[16,32,64]'
run "[16, 32, 64], L_simple" --set 'vdm.unet.channels=[16,32,64]' --set vdm.objective=simple
run "[16, 32, 64], L_simple, cosine" --set 'vdm.unet.channels=[16,32,64]' --set vdm.objective=simple --set vdm.schedule.kind=cosine
run "[32, 64, 64], L_simple, cosine" --set 'vdm.unet.channels=[32,64,64]' --set vdm.objective=simple --set vdm.schedule.kind=cosine
