//! A small U-Net for 28×28 images: residual blocks (GroupNorm, SiLU, 3×3 convolutions) with the
//! noise-level embedding added, down-sampling by strided convolution, nearest up-sampling, and
//! skip connections. Channel widths per level come from the config.

use crate::kernels::{conv2d, group_norm_silu, silu};
use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::embedding::{one_hot, sinusoidal};

/// U-Net settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UNetConfig {
    /// Channels per resolution level (28×28, 14×14, 7×7, …), one residual block each.
    pub channels: Vec<usize>,
    /// Size of the noise-level embedding.
    pub embed: usize,
    /// Self-attention over the positions of the deepest level (7×7 for a third level on 28×28),
    /// after its middle block (4 heads where the width allows). Off in files that predate it.
    #[serde(default)]
    pub attention: bool,
    /// Fourier features of the input (VDM, Kingma et al. 2021, App. B): sin and cos of
    /// 2ⁿ π z for n ∈ [`FOURIER_EXPONENTS`] concatenated to z, so the network sees the fine
    /// detail of single 8-bit levels (2/255 ≈ 2⁻⁷ apart in model space).
    #[serde(default)]
    pub fourier: bool,
    /// Attenuate each Fourier feature by what survives of it under the input's noise,
    /// e^{−(2ⁿπσ)²/2} = E_ε[cos(2ⁿπσε)] for z = αx + σε (MATH.md M45): at noise levels where
    /// sin(2ⁿπz) carries nothing about x the network sees zeros instead of white noise, and
    /// the features appear only where single 8-bit levels become visible. Off in files that
    /// predate it (they keep their plain features); on in new configurations.
    #[serde(default)]
    pub fourier_gate: bool,
}

/// The exponents n of the Fourier features sin(2ⁿ π z), cos(2ⁿ π z).
pub const FOURIER_EXPONENTS: [i32; 2] = [7, 8];

impl Default for UNetConfig {
    fn default() -> Self {
        // Small, because convolutions on 2 CPU cores are the bottleneck of the default run; three
        // levels (28×28, 14×14, 7×7), because the 7×7 level is what turned strokes into digits
        // at equal time (BENCHMARKS.md §7–§8). Longer runs may widen it.
        UNetConfig {
            channels: vec![16, 32, 64],
            embed: 32,
            attention: false,
            fourier: false,
            fourier_gate: true,
        }
    }
}

fn groups(c: usize) -> usize {
    [8, 4, 2, 1].into_iter().find(|g| c % g == 0).unwrap_or(1)
}

fn conv3(cin: usize, cout: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// GroupNorm → SiLU → conv, + embedding, GroupNorm → SiLU → conv, + skip (1×1 conv if widths differ).
#[derive(Module, Debug)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    /// Output channels (read from the lazy shape: nothing is allocated).
    fn width(&self) -> usize {
        self.temb.weight.lazy_shape().dims::<2>()[1]
    }

    fn new(cin: usize, cout: usize, e: usize, device: &Device) -> Self {
        ResBlock {
            norm1: GroupNormConfig::new(groups(cin), cin).init(device),
            conv1: conv3(cin, cout, 1, device),
            temb: LinearConfig::new(e, cout).init(device),
            norm2: GroupNormConfig::new(groups(cout), cout).init(device),
            conv2: conv3(cout, cout, 1, device),
            skip: (cin != cout).then(|| Conv2dConfig::new([cin, cout], [1, 1]).init(device)),
        }
    }

    /// `[B, C_in, H, W]`, `[B, E]` → `[B, C_out, H, W]`.
    fn forward(&self, x: Tensor<4>, emb: Tensor<2>) -> Tensor<4> {
        // silu(GroupNorm(·)) and silu(GroupNorm(h + t)) are one fused kernel each (crate::kernels).
        let h = conv2d(&self.conv1, group_norm_silu(&self.norm1, x.clone(), None));
        let t = self.temb.forward(emb); // [B, C], added to every pixel of its channel
        let h = conv2d(&self.conv2, group_norm_silu(&self.norm2, h, Some(t)));
        let skip = match &self.skip {
            Some(c) => conv2d(c, x),
            None => x,
        };
        skip + h
    }
}

/// GroupNorm → multi-head self-attention over the H·W positions → + input.
#[derive(Module, Debug)]
pub struct Attention {
    norm: GroupNorm,
    mha: MultiHeadAttention,
}

impl Attention {
    fn new(c: usize, device: &Device) -> Self {
        let heads = [4, 2, 1].into_iter().find(|h| c % h == 0).unwrap_or(1);
        Attention {
            norm: GroupNormConfig::new(groups(c), c).init(device),
            mha: MultiHeadAttentionConfig::new(c, heads)
                .with_dropout(0.0)
                .init(device),
        }
    }

    /// `[B, C, H, W]` → `[B, C, H, W]`.
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let seq = self
            .norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2); // [B, HW, C]
        let out = self.mha.forward(MhaInput::self_attn(seq)).context;
        x + out.swap_dims(1, 2).reshape([b, c, h, w])
    }
}

/// The U-Net: `[B, D]` (D = C·H·W) and a noise level → `[B, D]`.
#[derive(Module, Debug)]
pub struct UNet {
    conv_in: Conv2d,
    temb1: Linear,
    temb2: Linear,
    down: Vec<ResBlock>,
    downsample: Vec<Conv2d>,
    mid: ResBlock,
    attn: Option<Attention>,
    up: Vec<ResBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    /// Class embedding (classes + 1 rows, the last the null class), for conditional models.
    class: Option<Linear>,
    #[module(skip)]
    shape: [usize; 3],
    #[module(skip)]
    embed: usize,
    #[module(skip)]
    classes: usize,
    #[module(skip)]
    fourier: bool,
    #[module(skip)]
    fourier_gate: bool,
}

impl UNet {
    /// Floats of activations one example keeps for the backward pass (an estimate within a
    /// small factor): at each level, the down block, its skip and the up block (with the skip
    /// concatenated) hold about 24 maps of the level's width; attention holds its (H·W)² scores
    /// per head.
    pub fn activations_per_example(&self) -> f64 {
        let [_, h, w] = self.shape;
        let mut total = 0.0;
        let (mut hh, mut ww) = (h as f64, w as f64);
        let mut deepest = (hh, ww, 0.0);
        for blk in &self.down {
            let width = blk.width() as f64;
            total += 24.0 * width * hh * ww;
            deepest = (hh, ww, width);
            hh = (hh / 2.0).ceil();
            ww = (ww / 2.0).ceil();
        }
        let (dh, dw, width) = deepest;
        total += 12.0 * width * dh * dw;
        if self.attn.is_some() {
            total += 4.0 * 2.0 * (dh * dw).powi(2) + 6.0 * width * dh * dw;
        }
        total
    }

    /// `classes` > 0 adds a class embedding (conditional model); 0 makes an unconditional one.
    pub fn new(shape: [usize; 3], cfg: &UNetConfig, classes: usize, device: &Device) -> Self {
        let [c, _, _] = shape;
        let ch = if cfg.channels.is_empty() {
            vec![32]
        } else {
            cfg.channels.clone()
        };
        let e = cfg.embed.max(4);
        let et = 2 * e;
        let mut down = Vec::new();
        let mut downsample = Vec::new();
        let mut prev = ch[0];
        for (i, &w) in ch.iter().enumerate() {
            down.push(ResBlock::new(prev, w, et, device));
            if i + 1 < ch.len() {
                downsample.push(conv3(w, w, 2, device));
            }
            prev = w;
        }
        let last = *ch.last().unwrap_or(&32);
        let mid = ResBlock::new(last, last, et, device);
        // Up path: from the deepest level back to the first, each block taking the skip too.
        let mut up = Vec::new();
        let mut cur = last;
        for &w in ch.iter().rev() {
            up.push(ResBlock::new(cur + w, w, et, device));
            cur = w;
        }
        let c_in = if cfg.fourier {
            c * (1 + 2 * FOURIER_EXPONENTS.len())
        } else {
            c
        };
        UNet {
            conv_in: conv3(c_in, ch[0], 1, device),
            temb1: LinearConfig::new(e, et).init(device),
            temb2: LinearConfig::new(et, et).init(device),
            down,
            downsample,
            mid,
            attn: cfg.attention.then(|| Attention::new(last, device)),
            up,
            norm_out: GroupNormConfig::new(groups(ch[0]), ch[0]).init(device),
            // Zero output layer: the untrained network predicts 0, a calm start.
            conv_out: Conv2dConfig::new([ch[0], c], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_initializer(Initializer::Zeros)
                .init(device),
            class: (classes > 0).then(|| {
                LinearConfig::new(classes + 1, et)
                    .with_bias(false)
                    .init(device)
            }),
            shape,
            embed: e,
            classes,
            fourier: cfg.fourier,
            fourier_gate: cfg.fourier_gate,
        }
    }

    /// # Shapes
    /// `z`: `[B, C·H·W]`, `u` (normalised γ): `[B]`, `labels`: B or none, `noise_std`: the
    /// standard deviation of the noise in `z` per example, `[B]` (for the Fourier features'
    /// gate; none leaves them ungated) → `[B, C·H·W]`.
    pub fn forward(
        &self,
        z: Tensor<2>,
        u: Tensor<1>,
        labels: Option<&[u32]>,
        noise_std: Option<Tensor<1>>,
    ) -> Tensor<2> {
        let [c, hh, ww] = self.shape;
        let b = z.dims()[0];
        let mut emb = self
            .temb2
            .forward(silu(self.temb1.forward(sinusoidal(u, self.embed))));
        if let Some(cl) = &self.class {
            emb = emb + cl.forward(one_hot(labels, b, self.classes, &z.device()));
        }
        let z = z.reshape([b, c, hh, ww]);
        let z = if self.fourier {
            let mut parts = vec![z.clone()];
            let gate_std = noise_std
                .filter(|_| self.fourier_gate)
                .map(|s| s.reshape([b, 1, 1, 1]));
            for n in FOURIER_EXPONENTS {
                let f = 2f64.powi(n) * std::f64::consts::PI;
                let a = z.clone() * f;
                let (sin, cos) = (a.clone().sin(), a.cos());
                match &gate_std {
                    Some(s) => {
                        // e^{−(fσ)²/2}, in (0, 1]; underflows to 0 at high noise, as it should.
                        let g = (s.clone() * f).square().mul_scalar(-0.5).exp();
                        parts.push(sin * g.clone());
                        parts.push(cos * g);
                    }
                    None => {
                        parts.push(sin);
                        parts.push(cos);
                    }
                }
            }
            Tensor::cat(parts, 1)
        } else {
            z
        };
        let mut h = conv2d(&self.conv_in, z);
        let mut skips = Vec::new();
        for (i, blk) in self.down.iter().enumerate() {
            h = blk.forward(h, emb.clone());
            skips.push(h.clone());
            if let Some(ds) = self.downsample.get(i) {
                h = conv2d(ds, h);
            }
        }
        h = self.mid.forward(h, emb.clone());
        if let Some(a) = &self.attn {
            h = a.forward(h);
        }
        // One skip per level, consumed deepest first.
        for (i, (blk, s)) in self.up.iter().zip(skips.into_iter().rev()).enumerate() {
            let [_, _, sh, sw] = s.dims();
            if i > 0 {
                h = interpolate(
                    h,
                    InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([sh, sw]),
                );
            }
            h = blk.forward(Tensor::cat(vec![h, s], 1), emb.clone());
        }
        conv2d(&self.conv_out, group_norm_silu(&self.norm_out, h, None)).reshape([b, c * hh * ww])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Distribution, TensorData};

    fn vals(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec().unwrap_or_default()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn fourier_gate_hides_the_features_at_high_noise_and_passes_them_at_none() {
        // With the gate, an input whose noise std is 1 (e^{−(2⁷π)²/2} = 0 in f32) must not
        // depend on the Fourier channels' input weights at all; with noise std 0 the gate is 1
        // and the output equals the ungated network's. The output layer is re-initialised
        // (it starts at zero, which would make every comparison vacuous).
        let d = Device::flex();
        let cfg = UNetConfig {
            channels: vec![8, 16],
            embed: 8,
            attention: false,
            fourier: true,
            fourier_gate: true,
        };
        let mut net = UNet::new([1, 8, 8], &cfg, 0, &d);
        net.conv_out = conv3(8, 1, 1, &d);
        let z = Tensor::<2>::random([3, 64], Distribution::Normal(0.0, 1.0), &d);
        let u = Tensor::<1>::from_data(TensorData::new(vec![0.2f32, 0.5, 0.9], [3]), &d);
        let std = |v: f32| Tensor::<1>::from_data(TensorData::new(vec![v; 3], [3]), &d);

        // A second network, identical but for the weights that read the Fourier channels.
        let mut other = net.clone();
        let w = other.conv_in.weight.val();
        let [o, _, kh, kw] = w.dims();
        let fresh = Tensor::<4>::random([o, 4, kh, kw], Distribution::Normal(0.0, 1.0), &d);
        other.conv_in.weight =
            Param::from_tensor(w.slice_assign([0..o, 1..5, 0..kh, 0..kw], fresh));

        let hi_a = vals(net.forward(z.clone(), u.clone(), None, Some(std(1.0))));
        let hi_b = vals(other.forward(z.clone(), u.clone(), None, Some(std(1.0))));
        assert!(
            hi_a.iter().any(|v| v.abs() > 1e-4),
            "output is identically zero"
        );
        assert!(max_diff(&hi_a, &hi_b) < 1e-6, "{}", max_diff(&hi_a, &hi_b));

        // At no noise the Fourier weights matter, and the gate is the identity.
        let lo_a = vals(net.forward(z.clone(), u.clone(), None, Some(std(0.0))));
        let lo_b = vals(other.forward(z.clone(), u.clone(), None, Some(std(0.0))));
        assert!(max_diff(&lo_a, &lo_b) > 1e-3, "{}", max_diff(&lo_a, &lo_b));
        let ungated = vals(net.forward(z, u, None, None));
        assert!(max_diff(&lo_a, &ungated) < 1e-6);
    }
}
