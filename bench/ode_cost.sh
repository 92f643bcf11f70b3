#!/usr/bin/env bash
# The cost of the exact likelihood (`elbo eval --method ode`) before and after the solver's error
# control per quantity (BENCHMARKS.md §11, "The ODE likelihood in a third of the evaluations"):
# the default run's first N test images solved with
#   before: the previous release's defaults (commit BEFORE, rtol = atol = 1e-5 in one norm over
#           state and log-density, plain step control), built in a worktree of its own;
#   after:  this tree's defaults (state 1e-3, log-density apart to 0.001 nats per dimension per
#           step, PI step control);
#   ref:    this tree with the log-density held to 0.01 nats per step (a converged reference).
# Each line: NLL (nats and bits/dim, se over examples), NFE per solve, seconds. Same seed, so the
# same dequantisation noise and probes on every side: the differences are the solvers'.
#
#   bench/ode_cost.sh [RUN_DIR] [N]   (default: trains the default run into bench/out/ode/run; 64)
#   BEFORE_BIN=path/to/elbo bench/ode_cost.sh ...   (skip building the previous release)
# Nothing else should run meanwhile (the seconds are wall time on all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=bench/out/ode
RUN=${1:-$OUT/run}
N=${2:-64}
BEFORE=${BEFORE:-73a294a}
mkdir -p "$OUT"
cargo build --release --quiet --bin elbo
cp target/release/elbo "$OUT/elbo-after"
if [ -z "${BEFORE_BIN:-}" ]; then
  rm -rf "$OUT/before-src"
  git worktree add --force --detach "$OUT/before-src" "$BEFORE" >/dev/null
  (cd "$OUT/before-src" && CARGO_TARGET_DIR="$PWD/../before-target" cargo build --release --quiet --bin elbo)
  BEFORE_BIN="$OUT/before-target/release/elbo"
  git worktree remove --force "$OUT/before-src"
fi
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) ($(nproc) cores)" | tee "$OUT/cpu.txt"
[ -d "$RUN" ] || "$OUT/elbo-after" -q train --out "$RUN" --no-eval
one() { # label binary args...
  local label=$1 bin=$2; shift 2
  "$bin" -q eval "$RUN" --method ode --limit "$N" --t-samples 2 --json "$@" > "$OUT/$label.json"
  python3 - "$label" "$OUT/$label.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[2]))["ode"]
print("%-6s NLL %.3f nats (%.5f ± %.4f bits/dim)  NFE %.1f  %.1f s (%.2f s per image)%s" % (
    sys.argv[1], r["nll_nats"], r["per_dim"], r["per_dim_se"], r["nfe"], r["seconds"],
    r["seconds"] / r["n"],
    "  solver's estimate %.3f nats" % r["solver_err_nats"] if "solver_err_nats" in r else ""))
EOF
}
{
  one before "$BEFORE_BIN"
  one after "$OUT/elbo-after"
  one ref "$OUT/elbo-after" --logp-tol 0.01
} | tee "$OUT/table.txt"
