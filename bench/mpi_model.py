"""The tables of BENCHMARKS.md §17 from bench/mpi_scaling.sh's measurements: the measured
throughput by configuration (median of rounds), and, on paper, where data-parallel scaling of the
default recipe flattens as ranks are added.

The model (stated, not measured beyond N = 2): a step on N ranks costs
    t(N) = t_1 / N + T_ar(N, P)
where t_1 is the measured one-core step at the global batch (the work splits evenly by examples),
and T_ar is a ring all-reduce of P f32 gradients:
    T_ar(N, P) = 2 (N − 1) / N · 4 P / BW + 2 (N − 1) · α,
with BW and α a network's bandwidth and latency. N = 2 on this machine is shared memory, and its
measured per-parameter cost is printed beside the model. Efficiency = t_1 / (N · t(N)).
"""

import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out/mpi")
rows = [l.split("\t") for l in (out / "runs.tsv").read_text().splitlines() if l.strip()]
params = int((out / "params.txt").read_text())
by = {}
for cfg, _round, ranks, threads, rate, comm in rows:
    by.setdefault(cfg, []).append((float(rate), float(comm)))
print((out / "cpu.txt").read_text().strip())
print(f"default U-Net: {params:,} parameters; batch 32")
print("\n| configuration | images/s (median) | rounds | vs one core | communication ms/step |")
print("| --- | ---: | --- | ---: | ---: |")
base = statistics.median(r for r, _ in by["1x1"])
LABEL = {
    "1x1": "1 process, 1 thread, pinned to one core",
    "1x1ops": "1 process, 1 shard, operations on both cores",
    "1x2": "1 process, 2 threads (2 shards)",
    "2x1": "2 MPI ranks × 1 thread (2 shards)",
}
for cfg in ["1x1", "1x1ops", "1x2", "2x1"]:
    if cfg not in by:
        continue
    rates = [r for r, _ in by[cfg]]
    comms = [c for _, c in by[cfg]]
    r = statistics.median(rates)
    print(
        f"| {LABEL[cfg]} | {r:.0f} | {', '.join(f'{x:.0f}' for x in rates)} "
        f"| {r / base:.2f}× | {statistics.median(comms):.1f} |"
    )

ar = [l.split("\t") for l in (out / "allreduce.tsv").read_text().splitlines()[1:] if l.strip()]
print("\nall-reduce on this machine (2 ranks, shared memory), median of 20:")
print("| floats | seconds | ns per parameter |")
print("| ---: | ---: | ---: |")
for _ranks, floats, sec, ns in ar:
    print(f"| {int(floats):,} | {float(sec):.6f} | {float(ns):.3f} |")

t1 = 32 / base  # seconds per step on one core at the global batch
print(f"\nOn paper: t_1 = {t1 * 1e3:.0f} ms per step of 32 on one core (measured above).")
nets = [("shared memory (measured here, N = 2)", None, None),
        ("100 Gb/s InfiniBand (12.5 GB/s, α = 2 µs)", 12.5e9, 2e-6),
        ("10 Gb/s Ethernet (1.25 GB/s, α = 20 µs)", 1.25e9, 20e-6)]
measured = {int(f): float(s) for _r, f, s, _ns in ar}
near = min(measured, key=lambda f: abs(f - params))
per_param = measured[near] / near
for label, bw, alpha in nets[1:]:
    print(f"\n{label}: efficiency t_1 / (N · t(N)) for the global batch of 32 and of 256 "
          "(t_1 scaled ×8)")
    print("| N | 1 | 2 | 4 | 8 | 16 | 32 | 64 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for batch in (32, 256):
        t = t1 * batch / 32
        cells = []
        for n in (1, 2, 4, 8, 16, 32, 64):
            if n > batch:
                cells.append("—")
                continue
            ar_t = 0.0 if n == 1 else 2 * (n - 1) / n * 4 * params / bw + 2 * (n - 1) * alpha
            cells.append(f"{t / (n * (t / n + ar_t)):.2f}")
        print(f"| batch {batch} | " + " | ".join(cells) + " |")
print(f"\nMeasured all-reduce near the U-Net's size ({near:,} floats, 2 ranks, shared memory): "
      f"{per_param * 1e9:.2f} ns per parameter, {measured[near] * 1e3:.2f} ms per step.")
print("Width does not move these numbers at a fixed image size (compute and parameters both grow "
      "as channels²); larger images (compute per parameter ∝ pixels) and larger batches per rank "
      "push the flattening point out in proportion.")
