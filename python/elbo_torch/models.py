"""elbo's models in PyTorch: the VAE (M6–M8), the hierarchical VAE (M11) and the VDM (M25–M30),
each with its per-example negative-ELBO terms, computed exactly as elbo computes them given the
same noise (`terms(x, noise)`), or with fresh noise (`elbo(x)`); and the VDM's ancestral sampler
(M38). Built from a run's `config.json` and `model.json` (see `elbo_torch.load`)."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .nets import Mlp, MlpDenoiser, UNet

LOG_2PI = math.log(2 * math.pi)


def bernoulli_nll(logits, x):
    """−log Bernoulli(x; sigmoid(logits)) summed over dimensions."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)


def gaussian_log_prob(x, mean, log_var):
    return (-0.5 * ((x - mean) ** 2 * torch.exp(-log_var) + log_var + LOG_2PI)).sum(1)


def kl_standard_normal(mean, log_var):
    return 0.5 * (log_var.exp() + mean**2 - 1 - log_var).sum(1)


def _bernoulli_only(spec, kind):
    lik = spec.get("likelihood", "bernoulli")
    if lik != "bernoulli":
        raise NotImplementedError(f"{kind} with a {lik} likelihood: elbo_torch has the Bernoulli one")


class Vae(nn.Module):
    """q(z|x) = N(μ, diag exp(log σ²)) from `encoder`, p(x|z) Bernoulli from `decoder`."""

    def __init__(self, cfg, spec):
        super().__init__()
        _bernoulli_only(spec, "vae")
        d, dz = spec["data_dim"], spec["latent"]
        hidden, act = cfg["hidden"], cfg["activation"]
        self.latent = dz
        self.encoder = Mlp([d, *hidden, 2 * dz], act)
        self.decoder = Mlp([dz, *hidden[::-1], d], act)

    def terms(self, x, eps):
        """Per-example reconstruction and prior (KL) terms for binary x `[B, D]` and ε `[B, dz]`."""
        h = self.encoder(x)
        mean, log_var = h[:, : self.latent], h[:, self.latent :]
        z = mean + torch.exp(0.5 * log_var) * eps
        return {"reconstruction": bernoulli_nll(self.decoder(z), x), "prior": kl_standard_normal(mean, log_var)}

    def elbo(self, x):
        return self.terms(x, torch.randn(x.shape[0], self.latent))


class Hvae(nn.Module):
    """src/models/hvae.rs: `encoders[l]` gives q(z_{l+1} | ·), `decoders[0]` p(x | z_1),
    `decoders[l]` p(z_l | z_{l+1}); the KL of layer l is −H[q_l] − log p(z_l | z_{l+1}) at the
    drawn z, the top one KL(q_L ‖ N(0, I))."""

    def __init__(self, cfg, spec):
        super().__init__()
        _bernoulli_only(spec, "hvae")
        d, lat, hid, depth, act = spec["data_dim"], cfg["latents"], cfg["hidden"], cfg["depth"], cfg["activation"]
        self.latents = lat
        self.encoders, self.decoders = nn.ModuleList(), nn.ModuleList()
        for i, dz in enumerate(lat):
            inp = d if i == 0 else lat[i - 1]
            self.encoders.append(Mlp([inp, *([hid[i]] * depth), 2 * dz], act))
            out = d if i == 0 else 2 * lat[i - 1]
            self.decoders.append(Mlp([dz, *([hid[i]] * depth), out], act))

    def terms(self, x, eps):
        """`eps`: one `[B, d_l]` draw per layer."""
        chain, inp = [], x
        for l, dz in enumerate(self.latents):
            h = self.encoders[l](inp)
            mean, log_var = h[:, :dz], h[:, dz:]
            z = mean + torch.exp(0.5 * log_var) * eps[l]
            chain.append((mean, log_var, z))
            inp = z
        out = {"reconstruction": bernoulli_nll(self.decoders[0](chain[0][2]), x)}
        for l in range(len(self.latents) - 1):
            h = self.decoders[l + 1](chain[l + 1][2])
            dz = self.latents[l]
            neg_entropy = (-0.5 * (chain[l][1] + 1 + LOG_2PI)).sum(1)
            out[f"kl_z{l + 1}"] = neg_entropy - gaussian_log_prob(chain[l][2], h[:, :dz], h[:, dz:])
        out["prior"] = kl_standard_normal(chain[-1][0], chain[-1][1])
        return out

    def elbo(self, x):
        return self.terms(x, [torch.randn(x.shape[0], dz) for dz in self.latents])


# ----- diffusion -----


class LinearGamma:
    def __init__(self, g0, g1):
        self.g0, self.g1 = g0, g1

    def gamma(self, t):
        return self.g0 + (self.g1 - self.g0) * t

    def dgamma(self, t):
        return torch.full_like(t, self.g1 - self.g0)


class CosineTable:
    """The DDPM cosine table of T steps (M24), γ interpolated linearly in t between its steps;
    γ' by central difference (h = 1e-5), as src/diffusion/schedule.rs."""

    def __init__(self, steps):
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        ab, p = [], 1.0
        for i in range(1, steps + 1):
            p *= 1.0 - min(1.0 - f(i / steps) / f((i - 1) / steps), 0.999)
            ab.append(p)
        self.g = torch.tensor([math.log(1 - a) - math.log(a) for a in ab], dtype=torch.float64)

    def _gamma64(self, t):
        n = len(self.g)
        x = t.double().clamp(0, 1) * (n - 1)
        i = x.floor().long().clamp(max=n - 2)
        f = x - i
        return self.g[i] * (1 - f) + self.g[i + 1] * f

    def gamma(self, t):
        return self._gamma64(t).float()

    def dgamma(self, t):
        t = t.double()
        a, b = (t - 1e-5).clamp(min=0), (t + 1e-5).clamp(max=1)
        return ((self._gamma64(b) - self._gamma64(a)) / (b - a)).float()


class CosineLogSnr:
    """The cosine schedule in continuous time over [γ_min, γ_max]: u runs linearly over
    (2/π) atan(e^{γ/2}) at the ends, γ = 2 log tan(π u/2), γ' = 2π (u_1 − u_0)/sin(π u) (in float64,
    as src/diffusion/schedule.rs)."""

    def __init__(self, g0, g1):
        u = lambda g: 2 / math.pi * math.atan(math.exp(0.5 * g))
        self.u0, self.u1 = u(g0), u(g1)

    def _u(self, t):
        return self.u0 + (self.u1 - self.u0) * t.double().clamp(0, 1)

    def gamma(self, t):
        return (2 * torch.log(torch.tan(math.pi / 2 * self._u(t)))).float()

    def dgamma(self, t):
        return (2 * math.pi * (self.u1 - self.u0) / torch.sin(math.pi * self._u(t))).float()


class LinearPath:
    """Flow matching's time (M48): s = sigmoid(γ/2) runs linearly over [s(γ_min), s(γ_max)],
    γ = 2 logit(s), γ' = 2 (s_1 − s_0)/(s (1 − s))."""

    def __init__(self, g0, g1):
        s = lambda g: 1 / (1 + math.exp(-0.5 * g))
        self.s0, self.s1 = s(g0), s(g1)

    def _s(self, t):
        return self.s0 + (self.s1 - self.s0) * t.double().clamp(0, 1)

    def gamma(self, t):
        s = self._s(t)
        return (2 * torch.log(s / (1 - s))).float()

    def dgamma(self, t):
        s = self._s(t)
        return (2 * (self.s1 - self.s0) / (s * (1 - s))).float()


def schedule_of(cfg):
    s = cfg["schedule"]
    if s["kind"] == "linear-gamma":
        return LinearGamma(s["gamma_min"], s["gamma_max"])
    if s["kind"] == "cosine":
        return CosineTable(s["steps"])
    if s["kind"] == "cosine-log-snr":
        return CosineLogSnr(s["gamma_min"], s["gamma_max"])
    if s["kind"] == "linear-path":
        return LinearPath(s["gamma_min"], s["gamma_max"])
    raise NotImplementedError(
        f"schedule {s['kind']}: elbo_torch has linear-gamma, cosine, cosine-log-snr and linear-path")


EDM_SIGMA_DATA = 0.5


def eps_from(prediction, out, z, a, s):
    """The network's output as ε̂ (M18–M21, M47, M48), a and s columns `[B, 1]`."""
    if prediction == "eps":
        return out
    if prediction == "x0":
        return (z - a * out) / s
    if prediction == "score":
        return -s * out
    if prediction == "v":
        return (s * z + a * out) / (a**2 + s**2)
    if prediction == "flow":
        return (z + a * out) / (a + s)
    if prediction == "edm":
        sb = s / a
        d2 = sb**2 + EDM_SIGMA_DATA**2
        return (z / a * sb - out * d2.sqrt() * EDM_SIGMA_DATA) / d2
    raise NotImplementedError(f"prediction {prediction}")


class Vdm(nn.Module):
    """The VDM (and flow matching and EDM, which are VDMs with other settings): `net` predicts
    from z_t and u = (γ − γ_min)/(γ_max − γ_min) what `prediction` names, converted to ε̂; the
    process is variance preserving (α² = sigmoid(−γ)), exploding (α = 1, σ² = e^γ; z_t scaled by
    1/√(σ² + 1), or EDM's c_in = 1/√(σ² + σ_d²)) or the straight path (α = sigmoid(−γ/2),
    σ = sigmoid(γ/2))."""

    def __init__(self, cfg, spec):
        super().__init__()
        if cfg["t_steps"] != 0:
            raise NotImplementedError("elbo_torch's VDM is the continuous-time one")
        self.cfg, self.spec = cfg, spec
        self.sched = schedule_of(cfg)
        shape, classes = spec["shape"], spec.get("classes", 0)
        d = math.prod(shape)
        net = cfg["network"]
        if net == "unet" or (net == "auto" and len(shape) == 3):
            u = cfg["unet"]
            self.net = UNet(shape, u["channels"], u["embed"], u.get("attention", False), classes,
                            u.get("fourier", False))
        else:
            m = cfg["mlp"]
            self.net = MlpDenoiser(d, m["hidden"], m["blocks"], m["embed"], classes)
        self.image = spec["kind"] == "image8"
        self.process = cfg["process"]
        self.ve = self.process == "variance-exploding"
        self.prediction = cfg["prediction"]

    def alpha_sigma(self, gamma):
        if self.ve:
            return torch.ones_like(gamma), torch.exp(0.5 * gamma)
        if self.process == "linear":
            return torch.sigmoid(-0.5 * gamma), torch.sigmoid(0.5 * gamma)
        return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()

    def log_sigma2(self, gamma):
        if self.ve:
            return gamma
        if self.process == "linear":
            return -2 * F.softplus(-0.5 * gamma)
        return -F.softplus(-gamma)

    def prior_log_var(self, g1):
        if self.process == "variance-preserving":
            return torch.zeros(())
        return self.log_sigma2(g1)

    def to_model_space(self, x):
        if self.image:
            return x * (2 / 255) - 1
        shift = torch.tensor(self.spec["shift"])
        scale = torch.tensor(self.spec["scale"])
        return (x - shift) / scale

    def eps_hat(self, z, gamma, labels=None):
        lo, hi = self.cfg["schedule"]["gamma_min"], self.cfg["schedule"]["gamma_max"]
        zin = z
        if self.ve:
            d2 = EDM_SIGMA_DATA**2 if self.prediction == "edm" else 1.0
            zin = z / torch.sqrt(torch.exp(gamma) + d2)[:, None]
        out = self.net(zin, (gamma - lo) / (hi - lo), labels)
        a, s = self.alpha_sigma(gamma)
        return eps_from(self.prediction, out, z, a[:, None], s[:, None])

    def endpoints(self):
        t = torch.tensor([0.0, 1.0])
        g = self.sched.gamma(t)
        return g[0], g[1]

    def terms(self, x, t, eps, eps0, labels=None):
        """Per-example terms (M28, M30) for x in data units, times t `[B]`, ε `[B, D]`, and ε_0
        `[B, D]` of the decoder's draw: reconstruction, prior, diffusion (½ γ'(t) ‖ε − ε̂‖²)."""
        xm = self.to_model_space(x)
        gamma, dgamma = self.sched.gamma(t), self.sched.dgamma(t)
        a, s = self.alpha_sigma(gamma)
        e = self.eps_hat(a[:, None] * xm + s[:, None] * eps, gamma, labels)
        diffusion = 0.5 * dgamma * ((eps - e) ** 2).sum(1)
        g0, g1 = self.endpoints()
        d = xm.shape[1]
        if self.image:
            dec = self.cfg["decoder"]
            if dec != "softmax":
                raise NotImplementedError(f"decoder {dec}: elbo_torch has the softmax one")
            # Kingma et al.'s decoder: a softmax over the 256 levels of −½ (μ − level)²/s²,
            # μ = x + s ε_0, s² = e^{γ_0}.
            s0 = torch.exp(0.5 * g0)
            mean = xm + s0 * eps0
            levels = torch.arange(256, dtype=torch.float32) * (2 / 255) - 1
            logits = -0.5 * (mean[:, :, None] - levels) ** 2 / s0**2
            k = torch.round((xm + 1) * 127.5).long().clamp(0, 255)
            logp = torch.log_softmax(logits, dim=2).gather(2, k[:, :, None]).squeeze(2)
            recon = -logp.sum(1)
        else:
            # Gaussian decoder, its expectation over ε_0 exact; plus the standardisation's
            # log-Jacobian.
            jac = sum(math.log(v) for v in self.spec["scale"])
            recon = torch.full((x.shape[0],), 0.5 * d * (float(g0) + LOG_2PI + 1) + jac)
        a1, _ = self.alpha_sigma(g1)
        log_v = self.prior_log_var(g1)
        log_ratio = self.log_sigma2(g1) - log_v
        prior = (0.5 * ((xm**2) * a1**2 * torch.exp(-log_v) + log_ratio.exp() - 1 - log_ratio)).sum(1)
        return {"reconstruction": recon, "prior": prior, "diffusion": diffusion}

    def elbo(self, x, labels=None):
        b, d = x.shape
        return self.terms(x, torch.rand(b), torch.randn(b, d), torch.randn(b, d), labels)

    @torch.no_grad()
    def sample(self, n, steps=200, labels=None):
        """Ancestral sampling (M38) on t_i = i/steps, ending at x̂_0, in data units."""
        d = math.prod(self.spec["shape"])
        g1 = self.endpoints()[1]
        z = torch.randn(n, d) * float(torch.exp(0.5 * self.prior_log_var(g1)))
        ts = [i / steps for i in range(steps, 0, -1)]
        for k, t in enumerate(ts):
            gt = self.sched.gamma(torch.tensor([t]))
            e = self.eps_hat(z, gt.expand(n), labels)
            at, st = self.alpha_sigma(gt)
            x0 = (z - st * e) / at
            if self.image:
                x0 = x0.clamp(-1, 1)
                e = (z - at * x0) / st
            if k + 1 == len(ts):
                z = x0
                break
            gs = self.sched.gamma(torch.tensor([ts[k + 1]]))
            c = -torch.expm1(gs - gt)
            as_, ss = self.alpha_sigma(gs)
            z = (as_ / at) * (z - st * c * e) + ss * c.sqrt() * torch.randn_like(z)
        if self.image:
            return ((z + 1) * 127.5).clamp(0, 255).round()
        return z * torch.tensor(self.spec["scale"]) + torch.tensor(self.spec["shift"])


class Ncsn(nn.Module):
    """src/models/ncsn.rs: the variance-exploding VDM of a linear log σ² schedule from σ_L
    (t = 0) to σ_1 (t = 1), trained by denoising score matching at L geometric levels (M33) and
    sampled by annealed Langevin dynamics (M34). Its bound is the VE VDM's (`vdm.terms`)."""

    def __init__(self, cfg, spec):
        super().__init__()
        image = spec["kind"] == "image8"
        self.sigma_max = cfg["sigma_max"] or (2.0 if image else 3.0)
        self.sigma_min = cfg["sigma_min"] or (0.02 if image else 0.01)
        self.levels, self.steps = cfg["levels"], cfg["langevin_steps"]
        self.eta = cfg["step_size"] or 0.1 * self.sigma_min**2
        vcfg = {
            "schedule": {"kind": "linear-gamma", "gamma_min": 2 * math.log(self.sigma_min),
                         "gamma_max": 2 * math.log(self.sigma_max), "steps": 1000},
            "process": "variance-exploding", "prediction": "eps", "t_steps": 0, "decoder": "softmax",
            "network": cfg["network"], "mlp": cfg["mlp"], "unet": cfg["unet"],
        }
        self.vdm = Vdm(vcfg, spec)

    def level_gammas(self):
        lo, hi, n = math.log(self.sigma_min), math.log(self.sigma_max), self.levels
        return [2 * (hi + (lo - hi) * i / (n - 1)) for i in range(n)]

    def terms(self, *args, **kw):
        return self.vdm.terms(*args, **kw)

    def elbo(self, x):
        return self.vdm.elbo(x)

    def dsm(self, x):
        """(M33) ½ ‖ε − ε̂(x + σ_i ε, σ_i)‖² per dimension, one random level per example."""
        g = torch.tensor(self.level_gammas())[torch.randint(self.levels, (x.shape[0],))]
        eps = torch.randn_like(x)
        z = self.vdm.to_model_space(x) + torch.exp(0.5 * g)[:, None] * eps
        return 0.5 * ((eps - self.vdm.eps_hat(z, g)) ** 2).mean()

    @torch.no_grad()
    def sample(self, n, steps=None):
        """Annealed Langevin dynamics at the levels, `steps` per level, then x̂_0; data units."""
        d = math.prod(self.vdm.spec["shape"])
        z = torch.randn(n, d) * self.sigma_max
        gs = self.level_gammas()
        for g in gs:
            s = math.exp(0.5 * g)
            c = self.eta * (s / self.sigma_min) ** 2
            for _ in range(steps or self.steps):
                e = self.vdm.eps_hat(z, torch.full((n,), g))
                z = z - (c / s) * e + math.sqrt(2 * c) * torch.randn_like(z)
        e = self.vdm.eps_hat(z, torch.full((n,), gs[-1]))
        x0 = z - math.exp(0.5 * gs[-1]) * e
        if self.vdm.image:
            return ((x0.clamp(-1, 1) + 1) * 127.5).round()
        return x0 * torch.tensor(self.vdm.spec["scale"]) + torch.tensor(self.vdm.spec["shift"])


class LatentVdm(nn.Module):
    """src/models/latent_vdm.rs (M49): a VAE (Bernoulli or Gaussian decoder) with a VDM prior
    over its latent. Terms at z = μ + σ ε_z: the decoder's reconstruction, the encoder's negative
    entropy, and the prior VDM's reconstruction, prior and diffusion terms at z."""

    def __init__(self, cfg, spec):
        super().__init__()
        vae, obs = cfg["vae"], spec["vae"]
        self.likelihood = obs.get("likelihood", "bernoulli")
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise NotImplementedError(f"latent-vdm with a {self.likelihood} likelihood")
        d, dz = obs["data_dim"], vae["latent"]
        hidden, act = vae["hidden"], vae["activation"]
        self.latent, self.obs = dz, obs
        out = d if self.likelihood == "bernoulli" else 2 * d
        self.vae = nn.Module()
        self.vae.encoder = Mlp([d, *hidden, 2 * dz], act)
        self.vae.decoder = Mlp([dz, *hidden[::-1], out], act)
        prior = dict(cfg["prior"])
        prior["network"] = "mlp"
        self.prior = Vdm(prior, spec["prior"])

    def _to_model_space(self, x):
        if self.likelihood == "bernoulli":
            return x
        return (x - torch.tensor(self.obs["shift"])) / torch.tensor(self.obs["scale"])

    def terms(self, x, eps_z, t, eps):
        xm = self._to_model_space(x)
        h = self.vae.encoder(xm)
        mean, log_var = h[:, : self.latent], h[:, self.latent :]
        z = mean + torch.exp(0.5 * log_var) * eps_z
        out = self.vae.decoder(z)
        if self.likelihood == "bernoulli":
            recon = bernoulli_nll(out, x)
        else:
            d = x.shape[1]
            jac = sum(math.log(v) for v in self.obs["scale"])
            recon = -gaussian_log_prob(xm, out[:, :d], out[:, d:]) + jac
        p = self.prior.terms(z, t, eps, torch.zeros_like(eps))
        return {
            "reconstruction": recon,
            "prior": p["prior"],
            "neg_entropy": (-0.5 * (log_var + 1 + LOG_2PI)).sum(1),
            "latent_reconstruction": p["reconstruction"],
            "diffusion": p["diffusion"],
        }

    def elbo(self, x):
        b = x.shape[0]
        return self.terms(x, torch.randn(b, self.latent), torch.rand(b), torch.randn(b, self.latent))


class VdmFamily(nn.Module):
    """A model that is a VDM with other defaults (flow matching, EDM): elbo stores it as a VDM in
    the field `vdm`, so its parameter names are the VDM's under `vdm.`."""

    def __init__(self, cfg, spec):
        super().__init__()
        self.vdm = Vdm(cfg, spec)

    def terms(self, *args, **kwargs):
        return self.vdm.terms(*args, **kwargs)

    def sample(self, *args, **kwargs):
        return self.vdm.sample(*args, **kwargs)
