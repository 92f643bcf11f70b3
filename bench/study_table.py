#!/usr/bin/env python3
"""The weighted-ELBO study as a table and a picture (BENCHMARKS.md §15): reads the JSON lines of
`bench/weighted_study.sh`, prints a markdown table (bits/dim, its terms, FD-classifier, steps, and
whether each configuration is on the Pareto front of bits/dim against FD-classifier), and draws
bits/dim against FD-classifier with the front joined.

    bench/.venv/bin/python bench/study_table.py bench/out/study/results.jsonl docs/img/study_10min.png
"""

import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
# The newest line of each name wins (a configuration rerun replaces its older line).
by_name = {}
for r in rows:
    by_name[r["name"]] = r
rows = list(by_name.values())


def dominated(r):
    return any(
        o is not r
        and o["bits_per_dim"] <= r["bits_per_dim"]
        and o["fd_classifier"] <= r["fd_classifier"]
        and (o["bits_per_dim"] < r["bits_per_dim"] or o["fd_classifier"] < r["fd_classifier"])
        for o in rows
    )


print("| configuration | steps | bits/dim (MC se) | reconstruction | diffusion | prior | FD-classifier | Pareto |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |")
for r in sorted(rows, key=lambda r: r["bits_per_dim"]):
    t = r["terms"]
    print(
        f"| {r['name']} | {r['step']:,} | {r['bits_per_dim']:.3f} ({r['mc_se']:.3f}) | "
        f"{t.get('reconstruction', 0):.1f} | {t.get('diffusion', 0):.1f} | {t.get('prior', 0):.2f} | "
        f"{r['fd_classifier']:.1f} | {'' if dominated(r) else 'yes'} |"
    )
print(f"\nreal test images: FD-classifier {rows[0]['real_fd']:.1f}")

if len(sys.argv) > 2:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for r in rows:
        ax.scatter(r["fd_classifier"], r["bits_per_dim"], color="#2060b0" if not dominated(r) else "#999999")
        ax.annotate(r["name"], (r["fd_classifier"], r["bits_per_dim"]), fontsize=8,
                    xytext=(4, 3), textcoords="offset points")
    front = sorted((r for r in rows if not dominated(r)), key=lambda r: r["fd_classifier"])
    ax.plot([r["fd_classifier"] for r in front], [r["bits_per_dim"] for r in front], color="#2060b0", lw=1)
    ax.axvline(rows[0]["real_fd"], color="#60a060", ls=":", lw=1)
    ax.text(rows[0]["real_fd"], ax.get_ylim()[1], " real images", fontsize=8, va="top", color="#60a060")
    ax.set_xscale("log")
    ticks = [25, 50, 100, 200, 400]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("FD-classifier of 500 samples (lower is better)")
    ax.set_ylabel("bits/dim on 1,000 test images (lower is better)")
    ax.set_title(f"{rows[0]['data']}, {rows[0]['minutes']:g} minutes of training each, 2 cores")
    fig.tight_layout()
    fig.savefig(sys.argv[2])
