#!/usr/bin/env bash
# The GPU route in one command, on a machine with an NVIDIA GPU and its driver (README, "GPUs"):
#   1. build with --features cuda (Burn's CUDA backend through cubecl/cudarc; the build downloads
#      an LLVM bundle from github.com/tracel-ai/tracel-llvm into ~/.local/share/tracel, and the
#      program loads the NVIDIA driver's libcuda, NVRTC and, for several GPUs, NCCL at run time);
#   2. the GPU-relevant tests (tests/gpu.rs: a run trained on the GPU against the CPU, two GPUs'
#      all-reduced gradients against two CPU shards, and the CPU's refusal of --devices);
#   3. throughput of the default recipe: training images/s on the CPU, on one GPU and on every
#      GPU (--devices N), 200 steps each, with the CPU and GPU models printed beside the table.
#
#   bench/gpu_check.sh [OUT_DIR]      (default bench/out/gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/out/gpu}
STEPS=${STEPS:-200}
mkdir -p "$OUT"
command -v nvidia-smi >/dev/null || { echo "error: no nvidia-smi: this machine has no NVIDIA driver" >&2; exit 1; }
nvidia-smi -L | tee "$OUT/gpus.txt"
NGPU=$(grep -c '^GPU ' "$OUT/gpus.txt" || true)
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores)" | tee "$OUT/cpu.txt"

cargo build --release --features cuda
cargo test --release --features cuda --test gpu -- --nocapture 2>&1 | tee "$OUT/tests.log"

ELBO=target/release/elbo
ARGS="train --no-eval --steps $STEPS --set eval_every=1000000 --set checkpoint_every=1000000 --set grid=0"
printf 'device\timages_per_s\n' > "$OUT/throughput.tsv"
run() {
  local name=$1; shift
  rm -rf "$OUT/run-$name"
  # shellcheck disable=SC2086
  $ELBO -q "$@" $ARGS --out "$OUT/run-$name" 2> "$OUT/run-$name.log" > /dev/null
  rate=$(grep -o 'trained [0-9]* steps ([0-9.]* examples/s)' "$OUT/run-$name.log" | grep -o '([0-9.]*' | tr -d '(')
  printf '%s\t%s\n' "$name" "$rate" | tee -a "$OUT/throughput.tsv"
}
run cpu --device cpu
run cuda-1 --device cuda
if [ "$NGPU" -gt 1 ]; then
  run "cuda-$NGPU" --device cuda --devices "$NGPU"
fi
echo "results in $OUT (tests.log, throughput.tsv)"
