//! An MLP denoiser for vectors and 2-D data: residual SiLU blocks with the noise-level
//! embedding added in every block.

use crate::kernels::silu;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::embedding::{one_hot, sinusoidal};

/// MLP denoiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpDenoiserConfig {
    /// Width of the hidden layers.
    pub hidden: usize,
    /// Residual blocks.
    pub blocks: usize,
    /// Size of the noise-level embedding.
    pub embed: usize,
}

impl Default for MlpDenoiserConfig {
    fn default() -> Self {
        // Enough for 2-D mixtures (measured: the ring8 bound gets within a few hundredths of a nat).
        MlpDenoiserConfig {
            hidden: 256,
            blocks: 3,
            embed: 64,
        }
    }
}

#[derive(Module, Debug)]
pub struct ResBlock {
    l1: Linear,
    l2: Linear,
    t: Linear,
}

/// `[B, D]` and a noise level → `[B, D]`.
#[derive(Module, Debug)]
pub struct MlpDenoiser {
    input: Linear,
    temb: Linear,
    blocks: Vec<ResBlock>,
    out: Linear,
    /// Class embedding (classes + 1 rows, the last the null class), for conditional models.
    class: Option<Linear>,
    #[module(skip)]
    embed: usize,
    #[module(skip)]
    classes: usize,
}

impl MlpDenoiser {
    /// `classes` > 0 adds a class embedding (conditional model); 0 makes an unconditional one.
    pub fn new(d: usize, cfg: &MlpDenoiserConfig, classes: usize, device: &Device) -> Self {
        let h = cfg.hidden;
        let e = cfg.embed.max(4);
        MlpDenoiser {
            input: LinearConfig::new(d, h).init(device),
            temb: LinearConfig::new(e, h).init(device),
            blocks: (0..cfg.blocks)
                .map(|_| ResBlock {
                    l1: LinearConfig::new(h, h).init(device),
                    l2: LinearConfig::new(h, h).init(device),
                    t: LinearConfig::new(e, h).init(device),
                })
                .collect(),
            out: LinearConfig::new(h, d).init(device),
            class: (classes > 0).then(|| {
                LinearConfig::new(classes + 1, e)
                    .with_bias(false)
                    .init(device)
            }),
            embed: e,
            classes,
        }
    }

    /// # Shapes
    /// `z`: `[B, D]`, `u` (normalised γ): `[B]`, `labels`: B or none → `[B, D]`.
    pub fn forward(&self, z: Tensor<2>, u: Tensor<1>, labels: Option<&[u32]>) -> Tensor<2> {
        let b = z.dims()[0];
        let mut emb = sinusoidal(u, self.embed);
        if let Some(c) = &self.class {
            emb = emb + c.forward(one_hot(labels, b, self.classes, &z.device()));
        }
        let mut h = self.input.forward(z) + self.temb.forward(emb.clone());
        for b in &self.blocks {
            let r = b.l1.forward(silu(h.clone())) + b.t.forward(emb.clone());
            h = h + b.l2.forward(silu(r));
        }
        self.out.forward(silu(h))
    }
}
