"""The networks of elbo, module for module, with elbo's parameter names (as `elbo export` writes
them): the MLP of the VAE and HVAE, the MLP denoiser and the U-Net of the VDM."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "silu": F.silu, "softplus": F.softplus}


class Mlp(nn.Module):
    """Linear layers with an activation between them (src/nn/mlp.rs): `layers.i`."""

    def __init__(self, sizes, activation="tanh"):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = ACTIVATIONS[activation]

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = self.act(x)
        return x


def sinusoidal(u, dim):
    """src/nn/embedding.rs: sin and cos of 1000·u at geometric frequencies 1 … 1/10,000."""
    half = max(dim // 2, 2)
    k = torch.arange(half, dtype=torch.float32, device=u.device)
    freqs = torch.exp(-math.log(10000.0) * k / (half - 1))
    arg = (u[:, None] * 1000.0) * freqs[None, :]
    return torch.cat([arg.sin(), arg.cos()], dim=1)


def one_hot(labels, rows, classes, device):
    """Labels as one-hot rows over classes + 1 (the last: the null class, used when none)."""
    out = torch.zeros(rows, classes + 1, device=device)
    if labels is None:
        out[:, classes] = 1.0
    else:
        out[torch.arange(rows), labels.clamp(max=classes).long()] = 1.0
    return out


class _Block(nn.Module):
    def __init__(self, hidden, embed):
        super().__init__()
        self.l1, self.l2, self.t = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(embed, hidden)


class MlpDenoiser(nn.Module):
    """src/nn/denoiser_mlp.rs: h = input(z) + temb(e); h += l2(silu(l1(silu(h)) + t(e))); out(silu(h))."""

    def __init__(self, d, hidden=256, blocks=3, embed=64, classes=0):
        super().__init__()
        self.embed, self.classes = embed, classes
        self.input = nn.Linear(d, hidden)
        self.temb = nn.Linear(embed, hidden)
        self.blocks = nn.ModuleList(_Block(hidden, embed) for _ in range(blocks))
        self.out = nn.Linear(hidden, d)
        # elbo's name for the class embedding is `class` (a Python keyword: set by name).
        self.add_module("class", nn.Linear(classes + 1, embed, bias=False) if classes > 0 else None)

    def forward(self, z, u, labels=None):
        emb = sinusoidal(u, self.embed)
        cl = getattr(self, "class")
        if cl is not None:
            emb = emb + cl(one_hot(labels, z.shape[0], self.classes, z.device))
        h = self.input(z) + self.temb(emb)
        for b in self.blocks:
            h = h + b.l2(F.silu(b.l1(F.silu(h)) + b.t(emb)))
        return self.out(F.silu(h))


def groups(c):
    return next(g for g in (8, 4, 2, 1) if c % g == 0)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, e):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(e, cout)
        self.norm2 = nn.GroupNorm(groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h + self.temb(emb)[:, :, None, None])))
        return (self.skip(x) if self.skip is not None else x) + h


class _Mha(nn.Module):
    """Burn's multi-head attention: query, key, value and output Linear layers."""

    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value, self.output = (nn.Linear(c, c) for _ in range(4))

    def forward(self, x):
        b, n, c = x.shape
        hd = c // self.heads
        split = lambda t: t.view(b, n, self.heads, hd).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        return self.output((att @ v).transpose(1, 2).reshape(b, n, c))


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        heads = next(h for h in (4, 2, 1) if c % h == 0)
        self.norm = nn.GroupNorm(groups(c), c)
        self.mha = _Mha(c, heads)

    def forward(self, x):
        b, c, h, w = x.shape
        seq = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        return x + self.mha(seq).transpose(1, 2).reshape(b, c, h, w)


class UNet(nn.Module):
    """src/nn/unet.rs: residual blocks per level, strided down-sampling, nearest up-sampling."""

    # Fourier features of the input: sin and cos of 2^n pi z for these n (unet.fourier).
    FOURIER_EXPONENTS = (7, 8)

    def __init__(self, shape, channels=(16, 32, 64), embed=32, attention=False, classes=0, fourier=False):
        super().__init__()
        c = shape[0]
        e, et = max(embed, 4), 2 * max(embed, 4)
        self.shape, self.embed, self.classes, self.fourier = tuple(shape), e, classes, fourier
        c_in = c * (1 + 2 * len(self.FOURIER_EXPONENTS)) if fourier else c
        self.conv_in = nn.Conv2d(c_in, channels[0], 3, padding=1)
        self.temb1, self.temb2 = nn.Linear(e, et), nn.Linear(et, et)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        prev = channels[0]
        for i, w in enumerate(channels):
            self.down.append(ResBlock(prev, w, et))
            if i + 1 < len(channels):
                self.downsample.append(nn.Conv2d(w, w, 3, stride=2, padding=1))
            prev = w
        self.mid = ResBlock(channels[-1], channels[-1], et)
        self.attn = Attention(channels[-1]) if attention else None
        self.up = nn.ModuleList()
        cur = channels[-1]
        for w in reversed(channels):
            self.up.append(ResBlock(cur + w, w, et))
            cur = w
        self.norm_out = nn.GroupNorm(groups(channels[0]), channels[0])
        self.conv_out = nn.Conv2d(channels[0], c, 3, padding=1)
        self.add_module("class", nn.Linear(classes + 1, et, bias=False) if classes > 0 else None)

    def forward(self, z, u, labels=None):
        b = z.shape[0]
        emb = self.temb2(F.silu(self.temb1(sinusoidal(u, self.embed))))
        cl = getattr(self, "class")
        if cl is not None:
            emb = emb + cl(one_hot(labels, b, self.classes, z.device))
        z = z.view(b, *self.shape)
        if self.fourier:
            parts = [z]
            for n in self.FOURIER_EXPONENTS:
                a = z * (2.0**n * math.pi)
                parts += [torch.sin(a), torch.cos(a)]
            z = torch.cat(parts, 1)
        h = self.conv_in(z)
        skips = []
        for i, blk in enumerate(self.down):
            h = blk(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        for i, blk in enumerate(self.up):
            s = skips.pop()
            if i > 0:
                h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
            h = blk(torch.cat([h, s], 1), emb)
        return self.conv_out(F.silu(self.norm_out(h))).reshape(b, -1)
