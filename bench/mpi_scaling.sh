#!/usr/bin/env bash
# Data-parallel scaling on this machine (BENCHMARKS.md §17): the default recipe (U-Net VDM on
# mnist10k, batch 32) trained STEPS steps in four configurations (below), ROUNDS interleaved
# rounds; training images/s and the communication
# time per step as `elbo train` reports them; then the all-reduce cost by size
# (examples/allreduce.rs) and the on-paper table of where scaling flattens (bench/mpi_model.py).
# Needs Open MPI and libclang (`apt-get install libopenmpi-dev openmpi-bin libclang-dev`).
#
#   bench/mpi_scaling.sh [OUT_DIR]     (default bench/out/mpi; nothing else should run meanwhile)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/out/mpi}
STEPS=${STEPS:-200}
ROUNDS=${ROUNDS:-2}
mkdir -p "$OUT"
cargo build --release --quiet --features mpi --bin elbo --example allreduce
ELBO=target/release/elbo
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores)" | tee "$OUT/cpu.txt"
ARGS="train --no-eval --steps $STEPS --set eval_every=1000000 --set checkpoint_every=1000000 --set grid=0"
: > "$OUT/runs.tsv"
# 1x1: one process pinned to one core (taskset), one shard; 1x1ops: one shard whose operations
# use both cores (the model's own choice for small networks); 1x2: two shards on two threads;
# 2x1: two MPI ranks of one shard each (Open MPI binds each to a core).
for round in $(seq 1 "$ROUNDS"); do
  for cfg in 1x1 1x1ops 1x2 2x1; do
    dir="$OUT/run-$cfg-$round"
    rm -rf "$dir"
    case $cfg in
      1x1) ranks=1; threads=1; ELBO_THREADS=1 taskset -c 0 $ELBO -q $ARGS --out "$dir" 2> "$dir.log" > /dev/null ;;
      1x1ops) ranks=1; threads=1; ELBO_THREADS=1 $ELBO -q $ARGS --out "$dir" 2> "$dir.log" > /dev/null ;;
      1x2) ranks=1; threads=2; ELBO_THREADS=2 $ELBO -q $ARGS --out "$dir" 2> "$dir.log" > /dev/null ;;
      2x1) ranks=2; threads=1; ELBO_THREADS=1 mpirun -np 2 $ELBO -q $ARGS --out "$dir" 2> "$dir.log" > /dev/null ;;
    esac
    rate=$(grep -o 'trained [0-9]* steps ([0-9.]* examples/s)' "$dir.log" | grep -o '([0-9.]*' | tr -d '(')
    comm=$(grep -o 'communication across the [0-9]* ranks: [0-9.]* ms' "$dir.log" | grep -o '[0-9.]* ms' | cut -d' ' -f1 || true)
    params=$(python3 -c "import json;print(json.load(open('$dir/model.json'))['num_params'])")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$cfg" "$round" "$ranks" "$threads" "$rate" "${comm:-0}" | tee -a "$OUT/runs.tsv"
    echo "$params" > "$OUT/params.txt"
  done
done
mpirun -np 2 target/release/examples/allreduce | tee "$OUT/allreduce.tsv"
python3 bench/mpi_model.py "$OUT"
