#!/usr/bin/env python3
"""Speed of elbo beside PyTorch, case by case, interleaved in one run.

    python3 bench/compare.py [--cases vae-train,vdm-unet-train,...] [--threads 1,2] [--rounds 3] [--iters 20]
    python3 bench/compare.py --quality-minutes 7 [--quality-n 500] [--quality-seeds 0,1]   # time to quality

The second form trains elbo's default run and its PyTorch twin for the same minutes each and
scores both by elbo's own classifier (FD-classifier; BENCHMARKS.md §8).

On first use it creates bench/.venv and installs torch and numpy there (a large download); it
never runs in CI. Each round runs the Rust case (`cargo bench --bench throughput -- CASE`, its own
warm-up, then the median of N iterations) and then its PyTorch twin the same way; the report is the
median over rounds of each and their ratio (elbo / PyTorch throughput: above 1 means elbo is faster),
at each thread count (1, 2, 4, 8 up to the cores; `--threads`). Each side runs in its own process,
so its peak resident memory is its own (VmHWM, read by each side at its end); the PyTorch twin's FLOPs per step are counted
(torch.utils.flop_counter) and give both sides' achieved GFLOP/s, beside the machine's peak
measured in the same run by a 1024³ GEMM.

To add a case: a name in benches/throughput.rs (CASES and build) and a function in TWINS here
returning (step, examples per step), with the same network, batch and loss.
"""
import argparse
import gzip
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "bench", ".venv")


def ensure_torch():
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    py = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.executable) != os.path.abspath(py):
        if not os.path.exists(py):
            print("creating bench/.venv with torch and numpy (first use only; large download)", file=sys.stderr)
            subprocess.check_call([sys.executable, "-m", "venv", VENV])
            subprocess.check_call([py, "-m", "pip", "install", "--quiet", "torch", "numpy", "safetensors"])
        os.execv(py, [py] + sys.argv)
    raise SystemExit("torch is not importable even in bench/.venv")


ensure_torch()
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# The twins are elbo's own PyTorch package (python/elbo_torch), the modules `elbo export` loads into.
sys.path.insert(0, os.path.join(ROOT, "python"))
import elbo_torch  # noqa: E402
from elbo_torch.nets import MlpDenoiser, sinusoidal  # noqa: E402,F401

THREADS = os.cpu_count() or 1
torch.set_num_threads(THREADS)
torch.manual_seed(0)


def mnist_images(n):
    with gzip.open(os.path.join(ROOT, "assets", "mnist10k", "images-idx3-ubyte.gz"), "rb") as f:
        data = f.read()
    _, count, h, w = struct.unpack(">IIII", data[:16])
    x = torch.frombuffer(bytearray(data[16:16 + n * h * w]), dtype=torch.uint8).float()
    return x.view(n, h * w)


def adamw_step_factory(model, clip=100.0, ema_decay=0.999, lr=1e-4):
    """AdamW (decay 0), global-norm clipping and an EMA of the weights: what elbo's step does."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in model.parameters()]

    def step(loss):
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(model.parameters()), 1 - ema_decay)

    return step


# ----- VAE 784-200-200-50, tanh (Burda et al. 2016): elbo_torch.Vae -----
class Vae(elbo_torch.Vae):
    def __init__(self):
        super().__init__({"hidden": [200, 200], "activation": "tanh"},
                         {"data_dim": 784, "latent": 50, "likelihood": "bernoulli"})
        self.enc, self.dec = self.encoder, self.decoder

    def loss(self, x):
        t = self.elbo(x)
        return (t["reconstruction"] + t["prior"]).mean()


def twin_vae_train():
    m = Vae()
    step = adamw_step_factory(m)
    x = (mnist_images(128) > 127).float()
    return (lambda: step(m.loss(x))), 128.0


# ----- VDM pieces, as src/models/diffusion/vdm.rs and src/nn -----
G_MIN, G_MAX = -13.3, 5.0


def UNet(channels=(32, 64), embed=64, attention=False):
    """elbo_torch's U-Net on 28×28 digits, its output layer zeroed."""
    net = elbo_torch.UNet((1, 28, 28), channels, embed, attention)
    nn.init.zeros_(net.conv_out.weight)
    nn.init.zeros_(net.conv_out.bias)
    return net


def vdm_loss(net, x, discrete):
    """Continuous-time negative ELBO (M28, M30), linear γ, ε-prediction, as vdm.rs."""
    b, d = x.shape
    t = (torch.rand(()) + torch.arange(b) / b) % 1.0
    gamma = G_MIN + (G_MAX - G_MIN) * t
    alpha, sigma = torch.sigmoid(-gamma).sqrt()[:, None], torch.sigmoid(gamma).sqrt()[:, None]
    eps = torch.randn_like(x)
    z = alpha * x + sigma * eps
    eps_hat = net(z, (gamma - G_MIN) / (G_MAX - G_MIN))
    diffusion = 0.5 * (G_MAX - G_MIN) * ((eps - eps_hat) ** 2).sum(1)
    g0, g1 = torch.tensor(G_MIN), torch.tensor(G_MAX)
    if discrete:
        a0, s0 = torch.sigmoid(-g0).sqrt(), torch.sigmoid(g0).sqrt()
        mean = (a0 * x + s0 * torch.randn_like(x)) / a0
        s = torch.exp(0.5 * g0)
        cdf = lambda v: 0.5 * (1 + torch.erf(v / math.sqrt(2)))
        up = torch.where(x > 1 - 1 / 255, torch.ones_like(x), cdf((x + 1 / 255 - mean) / s))
        lo = torch.where(x < -1 + 1 / 255, torch.zeros_like(x), cdf((x - 1 / 255 - mean) / s))
        recon = -torch.log((up - lo).clamp_min(1e-12)).sum(1)
    else:
        recon = 0.5 * d * (g0 + math.log(2 * math.pi) + 1) * torch.ones(b)
    a1, s1 = torch.sigmoid(-g1), torch.sigmoid(g1)
    prior = 0.5 * (s1 + a1 * x * x - 1 - torch.log(s1)).sum(1)
    return (recon + prior + diffusion).mean()


def twin_vdm_unet_train():
    net = UNet()
    step = adamw_step_factory(net)
    x = mnist_images(64) * (2 / 255) - 1
    return (lambda: step(vdm_loss(net, x, True))), 64.0


def twin_vdm_unet_sample():
    net = UNet()
    z = torch.randn(64, 784)

    def one():
        with torch.no_grad():
            gt, gs = 0.0, -0.1
            u = torch.full((64,), (gt - G_MIN) / (G_MAX - G_MIN))
            e = net(z, u)
            c = -math.expm1(gs - gt)
            a2t, a2s = 1 / (1 + math.exp(gt)), 1 / (1 + math.exp(gs))
            st = math.sqrt(1 / (1 + math.exp(-gt)))
            mean = (z - e * st * c) * math.sqrt(a2s / a2t)
            return mean + torch.randn_like(z) * math.sqrt((1 / (1 + math.exp(-gs))) * c)

    return one, 64.0 / 200.0


def twin_vdm_mlp_train():
    net = MlpDenoiser(2)
    step = adamw_step_factory(net)
    x = torch.randn(256, 2)
    return (lambda: step(vdm_loss(net, x, False))), 256.0


def twin_vdm_unet_default_train():
    """elbo's default recipe: U-Net [16, 32, 64] (embed 32), L_simple on the cosine table, batch 32."""
    net = UNet((16, 32, 64), 32, False)
    step = adamw_step_factory(net)
    table = cosine_gamma_table()
    x = mnist_images(32) * (2 / 255) - 1

    def one():
        t = (torch.rand(()) + torch.arange(32) / 32) % 1.0
        g = gamma_at(table, t).float()
        alpha, sigma = torch.sigmoid(-g).sqrt()[:, None], torch.sigmoid(g).sqrt()[:, None]
        eps = torch.randn_like(x)
        eps_hat = net(alpha * x + sigma * eps, (g - G_MIN) / (G_MAX - G_MIN))
        step(((eps - eps_hat) ** 2).mean())

    return one, 32.0


def twin_vae_iwae():
    """L_5000 of 16 binarised images, in chunks of 1,000 samples per image (as elbo)."""
    m = Vae()
    x = (mnist_images(16) > 127).float()

    def one():
        with torch.no_grad():
            h = m.enc(x)
            mu, logvar = h[:, :50], h[:, 50:]
            parts = []
            for _ in range(5):
                eps = torch.randn(16, 1000, 50)
                z = mu[:, None] + torch.exp(0.5 * logvar)[:, None] * eps
                logits = m.dec(z.reshape(-1, 50)).view(16, 1000, 784)
                lpx = -F.binary_cross_entropy_with_logits(logits, x[:, None].expand(-1, 1000, -1), reduction="none").sum(2)
                lpz = -0.5 * (z * z + math.log(2 * math.pi)).sum(2)
                lq = -0.5 * (eps * eps + math.log(2 * math.pi) + logvar[:, None]).sum(2)
                parts.append(lpx + lpz - lq)
            return torch.logsumexp(torch.cat(parts, 1), 1) - math.log(5000)

    return one, 16.0


def twin_gemm():
    a = torch.randn(1024, 1024)
    b = a.t().contiguous()
    return (lambda: torch.mm(a, b)), 1.0


TWINS = {
    "vdm-unet-default-train": twin_vdm_unet_default_train,
    "vae-iwae": twin_vae_iwae,
    "gemm": twin_gemm,
    "vae-train": twin_vae_train,
    "vdm-unet-train": twin_vdm_unet_train,
    "vdm-unet-sample": twin_vdm_unet_sample,
    "vdm-mlp-train": twin_vdm_mlp_train,
}


# ----- Time to quality: the default recipe trained for the same minutes on each side -----
def cosine_gamma_table(t_steps=1000):
    """(M24) γ_i = log((1 − ᾱ_i)/ᾱ_i) of the cosine schedule, in float64, as schedule.rs."""
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    ab, g = 1.0, []
    for i in range(1, t_steps + 1):
        beta = min(1 - f(i / t_steps) / f((i - 1) / t_steps), 0.999)
        ab *= 1 - beta
        g.append(math.log1p(-ab) - math.log(ab))
    return torch.tensor(g, dtype=torch.float64)


def gamma_at(table, t):
    """Linear interpolation of the table at continuous t ∈ [0, 1] (node i at t = i/(T − 1))."""
    n = table.shape[0]
    x = t.double().clamp(0, 1) * (n - 1)
    i = x.floor().long().clamp(max=n - 2)
    f = x - i
    return table[i] * (1 - f) + table[i + 1] * f


def torch_time_to_quality(recipe, minutes, n, out, seed=0):
    """Train the twin of elbo's L_simple recipe for `minutes` of wall time, then draw `n` samples
    with the same ancestral sampler (x̂_0 clipped to [−1, 1]) and write them as levels to `out`."""
    torch.manual_seed(seed)
    table = cosine_gamma_table()
    net = UNet(recipe["channels"], recipe["embed"], recipe["attention"])
    lr, warm, batch = recipe["lr"], 200, recipe["batch"]
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0, eps=1e-8)
    ema = [p.detach().clone() for p in net.parameters()]
    data = mnist_images(9000) * (2 / 255) - 1
    step, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < minutes * 60:
        idx = torch.randint(0, data.shape[0], (batch,))
        x = data[idx]
        t = (torch.rand(()) + torch.arange(batch) / batch) % 1.0
        g = gamma_at(table, t).float()
        alpha, sigma = torch.sigmoid(-g).sqrt()[:, None], torch.sigmoid(g).sqrt()[:, None]
        eps = torch.randn_like(x)
        eps_hat = net(alpha * x + sigma * eps, (g - G_MIN) / (G_MAX - G_MIN))
        loss = ((eps - eps_hat) ** 2).mean()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warm)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 100.0)
        opt.step()
        d = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(net.parameters()), 1 - d)
        step += 1
    train_secs = time.perf_counter() - t0
    with torch.no_grad():
        for p, e in zip(net.parameters(), ema):
            p.copy_(e)
        steps, T = recipe["sample_steps"], table.shape[0]
        ratio = T // steps
        grid = [k * ratio / (T - 1) for k in range(steps - 1, -1, -1)]
        gammas = [float(gamma_at(table, torch.tensor([v]))[0]) for v in grid] + [-math.inf]
        z = torch.randn(n, 784)
        for k in range(steps):
            gt, gs = gammas[k], gammas[k + 1]
            a_t, s_t = math.sqrt(1 / (1 + math.exp(gt))), math.sqrt(1 / (1 + math.exp(-gt)))
            u = torch.full((n,), (gt - G_MIN) / (G_MAX - G_MIN))
            e = net(z, u)
            x0 = ((z - s_t * e) / a_t).clamp(-1, 1)
            if gs == -math.inf:
                z = x0
                break
            e = (z - a_t * x0) / s_t
            c = -math.expm1(gs - gt)
            a_s, s_s = math.sqrt(1 / (1 + math.exp(gs))), math.sqrt(1 / (1 + math.exp(-gs)))
            z = (z - e * s_t * c) * (a_s / a_t) + torch.randn_like(z) * math.sqrt(s_s * s_s * c)
    levels = ((z + 1) * 127.5).clamp(0, 255).round().numpy().astype("float32")
    import numpy as np
    np.save(out, levels)
    return {"steps": step, "train_secs": train_secs, "examples_per_sec": step * batch / train_secs}


def previous_default_flags():
    """The previous default recipe (L_simple on the cosine table, plain input) as `elbo train`
    flags, from bench/previous_default.sh: the recipe the PyTorch twin implements."""
    text = open(os.path.join(ROOT, "bench", "previous_default.sh")).read()
    line = [l for l in text.splitlines() if l.startswith("PREVIOUS_DEFAULT=")][0]
    return line.split("=", 1)[1].strip().strip('"').split()


def time_to_quality(minutes, n, seeds):
    """elbo's run of the L_simple recipe and its PyTorch twin, each trained for `minutes` per
    seed, scored by elbo's own classifier (FD-classifier on n samples against the test split).
    The twin implements the previous default recipe (L_simple on the cosine table, plain input),
    so both sides train that recipe: the comparison is of speed on one recipe."""
    out = os.path.join(ROOT, "bench", "out", "time_to_quality")
    os.makedirs(out, exist_ok=True)
    exe = os.path.join(ROOT, "target", "release", "elbo")
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    rows = []
    for seed in seeds:
        run = os.path.join(out, f"elbo-seed{seed}")
        subprocess.run(["rm", "-rf", run], check=True)
        subprocess.run([exe, "-q", "train", "--out", run, "--steps", "100000000", "--max-minutes", str(minutes),
                        "--seed", str(seed), "--set", "grid=0"] + previous_default_flags(),
                       check=True, capture_output=True)
        config = json.load(open(os.path.join(run, "config.json")))
        v = config["vdm"]
        recipe = {"channels": v["unet"]["channels"], "embed": v["unet"]["embed"], "attention": v["unet"].get("attention", False),
                  "lr": config["optim"]["lr"], "batch": config["batch_size"], "sample_steps": v["sample_steps"]}
        assert v["objective"] == "simple" and v["schedule"]["kind"] == "cosine" and v["clip_x0"], \
            "the twin implements the L_simple + cosine + clipped-x̂0 recipe"
        state = json.load(open(os.path.join(run, "checkpoint.json")))
        ev = subprocess.run([exe, "-q", "eval", run, "--json", "--quality", str(n), "--limit", "100", "--t-samples", "2",
                             "--seed", str(seed)], check=True, capture_output=True, text=True).stdout
        qe = json.loads(ev)["quality"]
        npy = os.path.join(out, f"torch_samples_seed{seed}.npy")
        tr = torch_time_to_quality(recipe, minutes, n, npy, seed)
        qt = json.loads(subprocess.run([exe, "quality", npy, "--json"], check=True, capture_output=True, text=True).stdout)
        rows.append((seed, state["step"], state["step"] * recipe["batch"] / (minutes * 60), qe, tr, qt))
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"time to quality: {minutes} min of training each, {n} samples, recipe {recipe} "
          f"(the previous default's flags: {' '.join(previous_default_flags())})")
    print(f"{'side':<6} {'seed':>4} {'steps':>7} {'images/s':>9} {'FD-classifier':>14} {'entropy':>8} {'confidence':>11}")
    for seed, steps, ips, qe, tr, qt in rows:
        print(f"{'elbo':<6} {seed:>4} {steps:>7} {ips:>9.1f} "
              f"{qe['samples']['fd_classifier']:>14.1f} {qe['samples']['class_entropy']:>8.2f} {qe['samples']['mean_confidence']:>11.3f}")
        print(f"{'torch':<6} {seed:>4} {tr['steps']:>7} {tr['examples_per_sec']:>9.1f} "
              f"{qt['samples']['fd_classifier']:>14.1f} {qt['samples']['class_entropy']:>8.2f} {qt['samples']['mean_confidence']:>11.3f}")
    fe = [r[3]["samples"]["fd_classifier"] for r in rows]
    ft = [r[5]["samples"]["fd_classifier"] for r in rows]
    print(f"real images: FD-classifier {rows[0][3]['real']['fd_classifier']:.1f}")
    print(f"FD-classifier, mean over seeds: elbo {statistics.mean(fe):.1f} (range {min(fe):.1f}-{max(fe):.1f}), "
          f"torch {statistics.mean(ft):.1f} (range {min(ft):.1f}-{max(ft):.1f}); ratio elbo/torch "
          f"{statistics.mean(fe) / statistics.mean(ft):.3f} (below 1: elbo's samples are closer to the data)")


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def torch_worker(case, iters, warmup, threads):
    """Run in a child process: time one twin at `threads` threads, count its FLOPs per step."""
    torch.set_num_threads(threads)
    step, per = TWINS[case]()
    for _ in range(warmup):
        step()
    flops = None
    try:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as fc:
            step()
        flops = fc.get_total_flops()
    except Exception:  # noqa: BLE001 (an older torch without the counter)
        pass
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t)
    med = statistics.median(ts)
    print(json.dumps({"median_ms": med * 1e3, "per_sec": per / med, "flops_per_iter": flops, "per_iter": per,
                      "peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib():
    """This process's peak resident memory (VmHWM), MiB: reset by exec, so a child's own."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def peak_rss_of(cmd, env=None):
    """(result JSON, peak RSS MiB) of a child process; the child reports its own VmHWM (the
    rusage of a forked child would include this parent's memory at the fork)."""
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with {p.returncode}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return r, r.get("peak_rss_mib", float("nan"))


def bench_exe():
    """The throughput bench's executable (built by `cargo bench --no-run`)."""
    out = subprocess.run(["cargo", "bench", "--bench", "throughput", "--no-run", "--message-format=json", "-q"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    exe = None
    for line in out.splitlines():
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "throughput" and m.get("executable"):
            exe = m["executable"]
    if exe is None:
        raise SystemExit("could not find the throughput bench executable")
    return exe


def time_rust(exe, case, iters, warmup, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), ELBO_THREADS=str(threads))
    return peak_rss_of([exe, case, "--iters", str(iters), "--warmup", str(warmup), "--threads", str(threads)], env)


def time_torch(case, iters, warmup, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return peak_rss_of([sys.executable, os.path.abspath(__file__), "--torch-worker", case, "--iters", str(iters),
                        "--warmup", str(warmup), "--threads", str(threads)], env)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(TWINS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default=None,
                    help="comma-separated thread counts (default: 1 and every power of two up to the cores)")
    ap.add_argument("--torch-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--quality-minutes", type=float, default=None,
                    help="instead of throughput: train elbo's default run and its PyTorch twin for this many minutes each and compare FD-classifier")
    ap.add_argument("--quality-n", type=int, default=1000)
    ap.add_argument("--quality-seeds", default="0",
                    help="comma-separated seeds: one run a side per seed, to show the spread")
    a = ap.parse_args()
    if a.torch_worker is not None:
        torch_worker(a.torch_worker, a.iters, a.warmup, int(a.threads or 1))
        return
    print(f"CPU: {cpu_model()}, {THREADS} cores")
    if a.quality_minutes is not None:
        time_to_quality(a.quality_minutes, a.quality_n, [int(v) for v in a.quality_seeds.split(",")])
        return
    threads = [int(t) for t in a.threads.split(",")] if a.threads else \
        sorted({1} | {2 ** k for k in range(1, 4) if 2 ** k <= THREADS})
    exe = bench_exe()
    print(f"torch {torch.__version__}; each side in its own process; ratio = elbo/torch throughput "
          f"(above 1: elbo faster); medians over {a.rounds} interleaved rounds of {a.iters} iterations")
    # The machine's peak: the large GEMM of the same run, per thread count (best of the two sides).
    results = {}
    peak = {}
    for t in threads:
        r, _ = time_rust(exe, "gemm", 10, 2, t)
        p, _ = time_torch("gemm", 10, 2, t)
        g = 2 * 1024 ** 3
        peak[t] = max(r["per_sec"], p["per_sec"]) * g / 1e9
        results[f"gemm@{t}"] = {"elbo_gflops": r["per_sec"] * g / 1e9, "torch_gflops": p["per_sec"] * g / 1e9}
        print(f"GEMM 1024³ at {t} thread(s): elbo (gemm crate) {r['per_sec'] * g / 1e9:.0f} GFLOP/s, "
              f"torch {p['per_sec'] * g / 1e9:.0f} GFLOP/s; peak taken as {peak[t]:.0f}")
    print(f"{'case':<24} {'thr':>3} {'elbo /s':>10} {'torch /s':>10} {'ratio':>6} {'elbo GF/s':>9} {'torch GF/s':>10} "
          f"{'%peak e/t':>10} {'RSS MiB e/t':>13}")
    for case in [c for c in a.cases.split(",") if c != "gemm"]:
        for t in threads:
            r, p, rm, pm, flops = [], [], [], [], None
            for _ in range(a.rounds):
                x, m = time_rust(exe, case, a.iters, a.warmup, t)
                r.append(x["per_sec"]); rm.append(m)
                y, m = time_torch(case, a.iters, a.warmup, t)
                p.append(y["per_sec"]); pm.append(m)
                if y.get("flops_per_iter"):
                    flops = y["flops_per_iter"] / y["per_iter"]  # FLOPs per example
            mr, mp = statistics.median(r), statistics.median(p)
            ge = mr * flops / 1e9 if flops else float("nan")
            gt = mp * flops / 1e9 if flops else float("nan")
            results[f"{case}@{t}"] = {"elbo_per_sec": mr, "torch_per_sec": mp, "ratio": mr / mp,
                                     "elbo_gflops": ge, "torch_gflops": gt, "peak_gflops": peak[t],
                                     "elbo_peak_rss_mib": max(rm), "torch_peak_rss_mib": max(pm),
                                     "flops_per_example": flops}
            print(f"{case:<24} {t:>3} {mr:>10.1f} {mp:>10.1f} {mr / mp:>6.2f} {ge:>9.1f} {gt:>10.1f} "
                  f"{100 * ge / peak[t]:>4.0f}/{100 * gt / peak[t]:<4.0f} {max(rm):>6.0f}/{max(pm):<6.0f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
