#!/usr/bin/env python3
"""PyTorch parity: the same weights give the same per-example ELBO terms in elbo and in
python/elbo_torch. For each run: `elbo export RUN --parity N` stores N test examples, the noise of
one ELBO draw and elbo's terms from it; elbo_torch loads the weights, recomputes every term from the
same noise, and the largest difference must stay within 1e-3 nats relative to 1 + |term|
(both sides in float32; the networks sum in different orders).

    bench/.venv/bin/python bench/parity.py RUN_DIR [RUN_DIR ...]   (needs torch, safetensors)
"""

import os
import subprocess
import sys

import torch
from safetensors import safe_open

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import elbo_torch  # noqa: E402

ELBO = os.environ.get("ELBO", os.path.join(HERE, "..", "target", "release", "elbo"))
TOL = 1e-3


def check(run, n=16):
    out = os.path.join(run, "parity.safetensors")
    subprocess.run([ELBO, "export", run, "--out", out, "--parity", str(n)], check=True, capture_output=True)
    model, config, _ = elbo_torch.load(out)
    model.eval()
    with safe_open(out, framework="pt") as f:
        p = {k[len("parity."):]: f.get_tensor(k) for k in f.keys() if k.startswith("parity.")}
    kind = config["model"]
    with torch.no_grad():
        if kind == "vae":
            got = model.terms(p["x"], p["eps.0"])
        elif kind == "hvae":
            got = model.terms(p["x"], [p[f"eps.{i}"] for i in range(len(model.latents))])
        elif kind == "latent-vdm":
            got = model.terms(p["x"], p["eps.0"], p["t"][:, 0], p["eps"])
        else:  # vdm, ncsn, flow, edm
            labels = p["labels"][:, 0].long() if "labels" in p else None
            got = model.terms(p["x"], p["t"][:, 0], p["eps"], p["eps0"], labels)
    worst = 0.0
    rows = []
    for name, want in sorted((k[len("term."):], v[:, 0]) for k, v in p.items() if k.startswith("term.")):
        g = got[name]
        err = ((g - want).abs() / (1 + want.abs())).max().item()
        worst = max(worst, err)
        rows.append(f"{name} {want.mean().item():.3f} vs {g.mean().item():.3f} (max rel. diff {err:.1e})")
    print(f"| {run} | {kind} | {'; '.join(rows)} | {'ok' if worst <= TOL else 'FAIL'} |")
    return worst <= TOL


if __name__ == "__main__":
    print(f"torch {torch.__version__}; tolerance {TOL} relative to 1 + |term|\n")
    print("| run | model | terms: elbo vs elbo_torch (mean over examples) | |\n| --- | --- | --- | --- |")
    ok = all([check(r) for r in sys.argv[1:]])
    sys.exit(0 if ok else 1)
