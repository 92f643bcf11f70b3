#!/usr/bin/env bash
# Crash-and-resume soak: a training killed with `kill -9` at KILLS random moments, resumed each
# time with `--resume`. Reports how many kills could be resumed, whether the final weights equal
# an uninterrupted run's bit for bit, and the checkpoint's cost per step (time and bytes).
#
#   bench/crash_soak.sh                       # the binary of this checkout (cargo build --release)
#   ELBO=/path/to/elbo KILLS=200 bench/crash_soak.sh
#   COST_ONLY=1 bench/crash_soak.sh           # only the checkpoint's cost
#
# The run: Burda's VAE on mnist10k, one thread (deterministic), 30,000 steps of 128 with a
# checkpoint every 10 steps, so kills land in checkpoints often. Kill times are uniform on
# [0, MAX_MS] ms after each start (process start-up and data loading included).
set -euo pipefail
cd "$(dirname "$0")/.."
ELBO=${ELBO:-target/release/elbo}
KILLS=${KILLS:-200}
MAX_MS=${MAX_MS:-1500}
STEPS=${STEPS:-30000}
OUT=${OUT:-bench/out/crash_soak}
if [ "$ELBO" = target/release/elbo ]; then cargo build --release -q; fi
rm -rf "$OUT"; mkdir -p "$OUT"
ARGS=(--model vae --steps "$STEPS" --set threads=1 --set checkpoint_every=10 --set grid=0
      --set eval_every=1000000 --set eval_examples=100 -q)

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), binary: $ELBO"

# The committed checkpoint's files: checkpoint.json's folder (this layout) or the top level (the
# layout before it).
committed() {
  if [ -f "$1/checkpoint.json" ]; then
    echo "$1/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dir"])' "$1/checkpoint.json")"
  else
    echo "$1"
  fi
}

if [ -z "${COST_ONLY:-}" ]; then
"$ELBO" train --out "$OUT/reference" "${ARGS[@]}" 2>/dev/null >/dev/null

RUN="$OUT/soak"
resumed=0; failed=0; lost_runs=0
for i in $(seq 1 "$KILLS"); do
  if [ -d "$RUN" ]; then mode=(--resume); else mode=(); fi
  "$ELBO" train --out "$RUN" "${ARGS[@]}" "${mode[@]}" > "$OUT/last.log" 2>&1 &
  pid=$!
  sleep "$(python3 -c "import random; print(random.uniform(0, $MAX_MS) / 1000)")"
  if kill -9 "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; code=137; else wait "$pid" && code=0 || code=$?; fi
  if [ "${#mode[@]}" -gt 0 ]; then
    # Did this --resume get going (killed while working, or finished), or refuse at once?
    if [ "$code" -eq 137 ] || [ "$code" -eq 0 ]; then resumed=$((resumed + 1)); else
      failed=$((failed + 1)); echo "  kill $i: --resume failed: $(tail -1 "$OUT/last.log")"
      rm -rf "$RUN"; lost_runs=$((lost_runs + 1))
    fi
  fi
  if [ "$code" -eq 0 ]; then break; fi
done
# Finish the run.
until "$ELBO" train --out "$RUN" "${ARGS[@]}" --resume >/dev/null 2>"$OUT/last.log"; do
  echo "  final --resume failed: $(tail -1 "$OUT/last.log")"; rm -rf "$RUN"; lost_runs=$((lost_runs + 1))
  "$ELBO" train --out "$RUN" "${ARGS[@]}" >/dev/null 2>&1 && break
done
# Tensors compared by name and bytes (the files' metadata order may differ between processes).
same_tensors() {
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
def tensors(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n]); h.pop("__metadata__", None)
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
sys.exit(0 if tensors(sys.argv[1]) == tensors(sys.argv[2]) else 1)
PY
}
same=yes
for f in model.safetensors optimizer.safetensors; do
  same_tensors "$(committed "$OUT/reference")/$f" "$(committed "$RUN")/$f" || same=no
done
echo "kills: $i, resumes attempted: $((resumed + failed)), resumed: $resumed, refused: $failed, runs lost: $lost_runs"
echo "final weights and optimizer state equal to the uninterrupted run's: $same"
fi

# Cost per checkpoint: the same 200 steps with a checkpoint every step and with none but the
# first and last, three times each (median), and the bytes of one checkpoint.
cost() {
  local every=$1 best=()
  for r in 1 2 3; do
    rm -rf "$OUT/cost"
    local t0; t0=$(date +%s.%N)
    "$ELBO" train --out "$OUT/cost" --model vae --steps 200 --set threads=1 --set grid=0 \
      --set eval_every=1000000 --set eval_examples=10 --set checkpoint_every="$every" -q >/dev/null 2>&1
    best+=("$(python3 -c "import time; print(time.time() - $t0)")")
  done
  printf '%s\n' "${best[@]}" | sort -n | sed -n 2p
}
t1=$(cost 1); tn=$(cost 1000000)
bytes=$(du -sb "$(committed "$OUT/cost")" | cut -f1)
if [ -f "$OUT/cost/checkpoint.json" ]; then bytes=$(du -sb "$(committed "$OUT/cost")" | cut -f1);
else bytes=$(du -cb "$OUT/cost/model.safetensors" "$OUT/cost/optimizer.safetensors" "$OUT/cost/state.json" | tail -1 | cut -f1); fi
python3 -c "print(f'checkpoint cost: {($t1 - $tn) / 200 * 1000:.1f} ms per checkpoint ({$t1:.2f} s with one per step, {$tn:.2f} s without), {$bytes / 1e6:.2f} MB each')"
