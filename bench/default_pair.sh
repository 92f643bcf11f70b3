#!/usr/bin/env bash
# The default run against the one it replaced (BENCHMARKS.md §14–§15): each trains as a new user
# runs it (its own steps, no time limit), then `elbo eval --quality 500` gives bits/dim on the
# 1,000 test images and FD-classifier of 500 ancestral samples (200 steps). The old recipe is the
# previous defaults written out: L_simple on the cosine table (γ_0 = −10.1), plain U-Net input,
# 3,200 steps.
#
#   bench/default_pair.sh [OUT_DIR]    (default bench/out/default_pair; nothing else should run
#                                       meanwhile if the wall times are to be quoted)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/out/default_pair}
mkdir -p "$OUT"
cargo build --release --quiet
ELBO=target/release/elbo
. bench/previous_default.sh
OLD="--steps 3200 $PREVIOUS_DEFAULT"
for name in new old; do
  [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ] && continue
  args=""
  [ "$name" = old ] && args=$OLD
  rm -rf "$OUT/$name"
  start=$(date +%s)
  # shellcheck disable=SC2086
  $ELBO -q train --out "$OUT/$name" $args > "$OUT/$name.train.out" 2> "$OUT/$name.train.log"
  wall=$(( $(date +%s) - start ))
  $ELBO eval "$OUT/$name" --json --quality 500 > "$OUT/$name.eval.json" 2> "$OUT/$name.eval.log"
  python3 - "$OUT/$name" "$name" "$wall" <<'PY'
import json, sys
run, name, wall = sys.argv[1:]
e = json.load(open(run + ".eval.json"))
st = json.load(open(run + "/checkpoint.json"))
print(json.dumps({"name": name, "step": st["step"], "wall_s": int(wall),
                  "bits_per_dim": e["bits_per_dim"], "terms": e["terms"],
                  "fd_classifier": e["quality"]["samples"]["fd_classifier"],
                  "real_fd": e["quality"]["real"]["fd_classifier"]}))
PY
done
