#!/usr/bin/env bash
# Sample quality against network evaluations (NFE) for every sampler of a diffusion run
# (ONLY="ddim rk45" runs only those samplers' rows)
# (BENCHMARKS.md §11). Usage: bench/samplers.sh RUN_DIR [SAMPLES] > table.md
# FD-classifier on SAMPLES samples (default 500) per row; NFE as `elbo sample` reports it
# (RK45 chooses its own steps: measured on 64 samples, the mean over chunks of 16).
set -euo pipefail
run=${1:?usage: bench/samplers.sh RUN_DIR [SAMPLES]}
n=${2:-500}
elbo=${ELBO:-target/release/elbo}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo
echo "| sampler | steps | NFE | FD-classifier | class entropy | mean confidence | seconds |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
row() { # sampler steps [extra flags]
  local s=$1 k=$2; shift 2
  local nfe
  nfe=$("$elbo" sample "$run" -n 64 --sampler "$s" --steps "$k" "$@" -q --out /tmp/elbo-bench-nfe.png 2>&1 \
        | grep -o '[0-9.]* network evaluations' | head -1 | cut -d' ' -f1)
  local t0=$(date +%s.%N)
  local j
  j=$("$elbo" eval "$run" --json -q --limit 2 --t-samples 2 --quality "$n" --sampler "$s" --steps "$k" "$@")
  local t1=$(date +%s.%N)
  python3 - "$s" "$k" "$nfe" "$j" "$t0" "$t1" "$*" <<'PY'
import json, sys
s, k, nfe, j, t0, t1, extra = sys.argv[1:]
q = json.loads(j)["quality"]["samples"]
name = s + (f" ({extra})" if extra else "")
print(f"| {name} | {k} | {nfe} | {q['fd_classifier']:.1f} | {q['class_entropy']:.3f} | {q['mean_confidence']:.3f} | {float(t1)-float(t0):.0f} |")
PY
}
only=${ONLY:-ancestral ddim euler-maruyama pc heun dpm-solver++ rk45}
for s in $only; do
  case $s in
    ancestral) for k in 10 20 50 100 200; do row ancestral $k; done ;;
    ddim) for k in 10 20 50 100 200; do row ddim $k; done ;;
    euler-maruyama) for k in 20 50 100 200 500; do row euler-maruyama $k; done ;;
    pc) for k in 10 25 50 100; do row pc $k; done ;;
    heun) for k in 5 10 25 50; do row heun $k; done ;;
    dpm-solver++) for k in 10 20 50; do row dpm-solver++ $k; done ;;
    rk45) for tol in 1e-2 1e-3 1e-4; do row rk45 100 --rtol $tol --atol $tol; done ;;
  esac
done
