//! The Markovian hierarchical VAE (MATH.md M10–M11): the step between the VAE (one layer) and
//! the variational diffusion model (a fixed encoder, latents of the data's size, infinitely many
//! layers).
//!
//! | code | math |
//! | --- | --- |
//! | `encoders[0]`, `encoders[l]` | q_φ(z_1 \| x), q_φ(z_{l+1} \| z_l) (diagonal Gaussians) |
//! | `decoders[0]` | p_θ(x \| z_1) (see [`crate::models::obs`]) |
//! | `decoders[l]`, l ≥ 1 | p_θ(z_l \| z_{l+1}) (diagonal Gaussian) |
//! | p(z_L) | N(0, I) |
//!
//! The negative ELBO (M11) is reported term by term, each per example in nats:
//! - `reconstruction` = −log p_θ(x | z_1),
//! - `kl_z{l}` = E_q[log q_φ(z_l | z_{l−1}) − log p_θ(z_l | z_{l+1})] for l < L, the layer's
//!   KL-like term, estimated by −H[q_φ(z_l | z_{l−1})] (exact, given z_{l−1}) − log p_θ(z_l | z_{l+1})
//!   at the sampled z,
//! - `prior` = KL(q_φ(z_L | z_{L−1}) ‖ N(0, I)), in closed form (M8) given z_{L−1}.
//!
//! The terms sum to −ELBO; the importance-weighted bound (M4) draws the whole chain.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{Binarize, DataKind, Dataset, Scaling};
use crate::diffusion::Cond;
use crate::dist::{std_normal_log_prob, DiagGaussian, LOG_2PI};
use crate::elbo::{ElboTerms, ImportanceSampled};
use crate::models::obs::{ImageLikelihood, Observation};
use crate::models::{
    count_active, warmup_weight, LatentVariableModel, LayerUnits, Model, ModelSettings, NoiseFn,
};
use crate::nn::{Activation, Mlp};
use crate::rng::{randn, Rng};
use crate::{Error, Result};

/// HVAE settings. Defaults are Burda et al. (2016)'s two-stochastic-layer model:
/// 784-200-200-100-100-100-50 with tanh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HvaeConfig {
    /// Latent widths from the bottom (z_1, next to the data) to the top (z_L) (Burda et al.:
    /// [100, 50]). At least two layers: one is `--model vae`.
    pub latents: Vec<usize>,
    /// Hidden width of the networks of each layer: the encoder into z_l and the decoder out of
    /// it (Burda et al.: [200, 100]).
    pub hidden: Vec<usize>,
    /// Hidden layers in each network (Burda et al.: 2; 0 makes every conditional linear).
    pub depth: usize,
    pub activation: Activation,
    /// Binarisation of 8-bit images for the Bernoulli decoder.
    pub binarize: Binarize,
    /// 8-bit images: `bernoulli` on binarised pixels, or `discretized` over the 256 levels.
    pub images: ImageLikelihood,
    /// KL warm-up: every KL term's weight in the training loss rises linearly from 0 to 1 over
    /// this many steps (0: none; default 10,000). The reported ELBO always has weight 1. Without
    /// it the two-layer model collapses on binarised mnist10k (8 of 150 units active, held-out
    /// −ELBO 113 at step 40,000, against 32 active and 95.6 with a 30,000-step warm-up;
    /// BENCHMARKS.md §10).
    pub kl_warmup: u64,
}

impl Default for HvaeConfig {
    fn default() -> Self {
        HvaeConfig {
            latents: vec![100, 50],
            hidden: vec![200, 100],
            depth: 2,
            activation: Activation::Tanh,
            binarize: Binarize::Dynamic,
            images: ImageLikelihood::Bernoulli,
            kl_warmup: 10_000,
        }
    }
}

impl ModelSettings for HvaeConfig {
    const IMPORTANCE_WEIGHTED: bool = true;

    fn binary_images(&self) -> bool {
        self.images.binary()
    }

    fn set_binary_images(&mut self, binary: bool) -> bool {
        self.images = ImageLikelihood::of(binary);
        true
    }

    const SIZE_KEYS: &'static [&'static str] = &["latents", "hidden", "depth"];

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.latents.len() < 2 {
            return bad(format!(
                "hvae.latents needs at least two layers (got {:?}); one layer is `--model vae`",
                self.latents
            ));
        }
        if self.latents.contains(&0) {
            return bad("hvae.latents widths must be positive".into());
        }
        if self.hidden.len() != self.latents.len() {
            return bad(format!(
                "hvae.hidden needs one width per layer: {} for hvae.latents = {:?}, got {:?}",
                self.latents.len(),
                self.latents,
                self.hidden
            ));
        }
        if self.depth > 0 && self.hidden.contains(&0) {
            return bad("hvae.hidden widths must be positive".into());
        }
        Ok(())
    }

    /// 20,000 steps of 128, as the VAE.
    fn defaults_for(_kind: DataKind) -> (u64, usize) {
        (20_000, 128)
    }
}

/// What the HVAE knows about its data, saved with the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HvaeSpec {
    #[serde(flatten)]
    pub obs: Observation,
    pub latents: Vec<usize>,
}

/// The HVAE's networks: `encoders[l]` gives (μ, log σ²) of z_{l+1}, `decoders[0]` the data's
/// likelihood from z_1, `decoders[l]` (μ, log σ²) of z_l from z_{l+1}.
#[derive(Module, Debug)]
pub struct Hvae {
    pub encoders: Vec<Mlp>,
    pub decoders: Vec<Mlp>,
    #[module(skip)]
    pub spec: HvaeSpec,
    /// Every KL term's weight in the training loss (warm-up); 1 outside training.
    #[module(skip)]
    pub kl_weight: f64,
    #[module(skip)]
    pub kl_warmup: u64,
}

/// −H[N(μ, diag σ²)] = −½ Σ (1 + log 2π + log σ²) per row, `[B]`.
fn neg_entropy(q: &DiagGaussian) -> Tensor<1> {
    ((q.log_var.clone() + (1.0 + LOG_2PI)) * -0.5)
        .sum_dim(1)
        .squeeze_dim::<1>(1)
}

/// A diagonal Gaussian from a network output (μ, log σ²) of width 2 d.
fn split(h: Tensor<2>, d: usize) -> DiagGaussian {
    DiagGaussian::new(h.clone().narrow(1, 0, d), h.narrow(1, d, d))
}

impl Hvae {
    pub fn new(cfg: &HvaeConfig, spec: HvaeSpec, device: &Device) -> Result<Self> {
        cfg.validate()?;
        spec.obs.check()?;
        let l = cfg.latents.len();
        let hid = |i: usize| vec![cfg.hidden[i]; cfg.depth];
        let mut encoders = Vec::with_capacity(l);
        let mut decoders = Vec::with_capacity(l);
        let d = spec.obs.data_dim;
        for i in 0..l {
            let input = if i == 0 { d } else { cfg.latents[i - 1] };
            encoders.push(Mlp::new(
                input,
                &hid(i),
                2 * cfg.latents[i],
                cfg.activation,
                device,
            ));
            decoders.push(if i == 0 {
                Mlp::new(
                    cfg.latents[0],
                    &hid(0),
                    spec.obs.out_dim(),
                    cfg.activation,
                    device,
                )
            } else {
                Mlp::new(
                    cfg.latents[i],
                    &hid(i),
                    2 * cfg.latents[i - 1],
                    cfg.activation,
                    device,
                )
            });
        }
        Ok(Hvae {
            encoders,
            decoders,
            spec: HvaeSpec {
                latents: cfg.latents.clone(),
                ..spec
            },
            kl_weight: 1.0,
            kl_warmup: cfg.kl_warmup,
        })
    }

    /// Stochastic layers, L.
    pub fn layers(&self) -> usize {
        self.spec.latents.len()
    }

    fn device(&self) -> Device {
        self.encoders[0].layers[0].weight.val().device()
    }

    /// q_φ(z_{l+1} | input): input is x in model space for l = 0, z_l otherwise (0-based l).
    pub fn q(&self, l: usize, input: Tensor<2>) -> DiagGaussian {
        split(self.encoders[l].forward(input), self.spec.latents[l])
    }

    /// p_θ(z_l | z_{l+1}) for 1 ≤ l < L (1-based l; `decoders[l]`).
    pub fn p_below(&self, l: usize, z_above: Tensor<2>) -> DiagGaussian {
        split(self.decoders[l].forward(z_above), self.spec.latents[l - 1])
    }

    /// One draw of the chain z_1 … z_L ~ q_φ(· | x) for x in data units: each layer's
    /// q and its draw.
    fn chain(&self, x: Tensor<2>, rng: &mut Rng) -> Vec<(DiagGaussian, Tensor<2>, Tensor<2>)> {
        let dev = x.device();
        self.chain_noised(x, &mut |_, dims| randn(rng, dims, &dev))
    }

    /// The chain with each layer's ε from `noise` (named `eps.l`, 0-based).
    fn chain_noised(
        &self,
        x: Tensor<2>,
        noise: &mut NoiseFn,
    ) -> Vec<(DiagGaussian, Tensor<2>, Tensor<2>)> {
        let mut input = self.spec.obs.to_model_space(x);
        let mut out = Vec::with_capacity(self.layers());
        for l in 0..self.layers() {
            let q = self.q(l, input);
            let eps = noise(&format!("eps.{l}"), q.mean.dims());
            let z = q.rsample_with(eps.clone());
            input = z.clone();
            out.push((q, eps, z));
        }
        out
    }
}

impl LatentVariableModel for Hvae {
    /// (M11) with one draw of the chain; see the module's documentation for each term.
    fn elbo(&self, x: Tensor<2>, _cond: Cond, rng: &mut Rng) -> Result<ElboTerms> {
        let dev = x.device();
        self.elbo_noised(x, &mut |_, dims| randn(rng, dims, &dev))
    }

    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        self.sample_chain(n, rng)
    }
}

impl Hvae {
    /// (M11) with one draw of the chain, its ε from `noise`; see the module's documentation
    /// for each term.
    pub fn elbo_noised(&self, x: Tensor<2>, noise: &mut NoiseFn) -> Result<ElboTerms> {
        let chain = self.chain_noised(x.clone(), noise);
        let top = self.layers() - 1;
        let reconstruction = -self
            .spec
            .obs
            .log_prob(self.decoders[0].forward(chain[0].2.clone()), x);
        let mut layers = Vec::with_capacity(top);
        for l in 0..top {
            let p = self.p_below(l + 1, chain[l + 1].2.clone());
            let term = neg_entropy(&chain[l].0) - p.log_prob(chain[l].2.clone());
            layers.push((format!("kl_z{}", l + 1), term));
        }
        let prior = chain[top].0.kl_standard_normal();
        Ok(ElboTerms {
            reconstruction,
            prior,
            layers,
        })
    }

    /// Ancestral: z_L ~ N(0, I), z_l ~ p_θ(z_l | z_{l+1}), then the observation model's picture.
    /// Ancestral samples of the generative chain z_L → … → z_1 → x.
    fn sample_chain(&self, n: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        let dev = self.device();
        let mut z = randn(rng, [n, self.spec.latents[self.layers() - 1]], &dev);
        for l in (1..self.layers()).rev() {
            z = self.p_below(l, z).rsample(rng);
        }
        Ok(self.spec.obs.sample(self.decoders[0].forward(z), rng))
    }
}

impl ImportanceSampled for Hvae {
    /// log p(x, z_{1:L}) − log q(z_{1:L} | x) over the whole chain, `[B, k]`; log q exactly from
    /// the draws' ε.
    fn log_weights(&self, x: Tensor<2>, k: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        let [b, d] = x.dims();
        let xr = x.unsqueeze_dim::<3>(1).repeat_dim(1, k).reshape([b * k, d]);
        let chain = self.chain(xr.clone(), rng);
        let top = self.layers() - 1;
        let mut lw = self
            .spec
            .obs
            .log_prob(self.decoders[0].forward(chain[0].2.clone()), xr)
            + std_normal_log_prob(chain[top].2.clone());
        for (l, (q, eps, z)) in chain.iter().enumerate() {
            let log_q = ((eps.clone().square() + q.log_var.clone() + LOG_2PI) * -0.5)
                .sum_dim(1)
                .squeeze_dim::<1>(1);
            lw = lw - log_q;
            if l < top {
                lw = lw
                    + self
                        .p_below(l + 1, chain[l + 1].2.clone())
                        .log_prob(z.clone());
            }
        }
        Ok(lw.reshape([b, k]))
    }
}

/// Draws of the chain averaged for E_q[z_l | x] of the layers above the first.
const ACTIVE_UNIT_DRAWS: usize = 16;

impl Model for Hvae {
    type Config = HvaeConfig;
    type Spec = HvaeSpec;

    fn spec(cfg: &HvaeConfig, train: &Dataset, scaling: Scaling) -> Result<HvaeSpec> {
        Ok(HvaeSpec {
            obs: Observation::for_data(train, scaling, cfg.images),
            latents: cfg.latents.clone(),
        })
    }

    fn build(cfg: &HvaeConfig, spec: &HvaeSpec, device: &Device) -> Result<Self> {
        Hvae::new(cfg, spec.clone(), device)
    }

    fn parity(
        &self,
        x: Tensor<2>,
        _cond: Cond,
        rng: &mut Rng,
    ) -> Option<Result<Vec<(String, Tensor<2>)>>> {
        let dev = x.device();
        Some(crate::models::parity_block(&dev, rng, |noise| {
            self.elbo_noised(x, noise)
        }))
    }

    fn binarize(cfg: &HvaeConfig, spec: &HvaeSpec) -> Option<Binarize> {
        spec.obs.binarize(cfg.binarize)
    }

    fn at_step(&mut self, step: u64) {
        self.kl_weight = warmup_weight(step, self.kl_warmup);
    }

    /// The negative ELBO with every KL term weighted by the warm-up (weight 1 after it).
    fn loss(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<(Tensor<1>, ElboTerms)> {
        let t = self.elbo(x, cond, rng)?;
        Ok((t.latent_weighted(self.kl_weight).mean(), t))
    }

    fn importance_weighted(
        &self,
        x: Tensor<2>,
        k: usize,
        rng: &mut Rng,
    ) -> Option<Result<Vec<f64>>> {
        Some(crate::elbo::importance_weighted_chunked(self, x, k, rng))
    }

    /// E_q[z_1 | x] is the encoder's mean; E_q[z_l | x] above it averages the mean of
    /// q(z_l | z_{l−1}) over 16 draws of the chain below.
    fn active_units(&self, x: Tensor<2>, rng: &mut Rng) -> Option<Result<Vec<LayerUnits>>> {
        let [b, d] = x.dims();
        let s = ACTIVE_UNIT_DRAWS;
        let xr = x.unsqueeze_dim::<3>(1).repeat_dim(1, s).reshape([b * s, d]);
        let chain = self.chain(xr, rng);
        let means = chain
            .into_iter()
            .enumerate()
            .map(|(l, (q, _, _))| {
                let w = self.spec.latents[l];
                q.mean.reshape([b, s, w]).mean_dim(1).reshape([b, w])
            })
            .collect();
        Some(count_active(means))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;
    use burn::tensor::TensorData;

    #[test]
    fn refuses_one_layer_and_mismatched_widths() {
        let one = HvaeConfig {
            latents: vec![10],
            hidden: vec![20],
            ..Default::default()
        };
        assert!(one
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--model vae"));
        let mismatch = HvaeConfig {
            latents: vec![10, 5],
            hidden: vec![20],
            ..Default::default()
        };
        assert!(mismatch
            .validate()
            .unwrap_err()
            .to_string()
            .contains("hvae.hidden"));
    }

    #[test]
    fn layer_terms_estimate_the_same_bound_as_the_log_weights() {
        // The per-layer decomposition (closed-form entropies and top KL) and the plain
        // Monte-Carlo mean of log p(x, z) − log q(z | x) estimate the same −ELBO; over 20,000
        // draws each their means agree within 4 combined standard errors.
        let dev = Device::flex();
        let cfg = HvaeConfig {
            latents: vec![3, 2],
            hidden: vec![8, 6],
            depth: 1,
            ..Default::default()
        };
        let spec = HvaeSpec {
            obs: Observation {
                likelihood: crate::models::obs::Likelihood::Bernoulli,
                data_dim: 4,
                shift: vec![],
                scale: vec![],
            },
            latents: vec![],
        };
        let m = Hvae::new(&cfg, spec, &dev).unwrap();
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 1.0, 1.0], [1, 4]), &dev);
        let n = 20_000;
        let mut rng = seeded(3);
        let lw = crate::elbo::to_f64(m.log_weights(x.clone(), n, &mut rng).unwrap().reshape([n]))
            .unwrap();
        let t = m.elbo(x.repeat_dim(0, n), None, &mut rng).unwrap();
        let tot = crate::elbo::to_f64(t.total()).unwrap();
        let a = crate::elbo::Stat::of(&lw);
        let b = crate::elbo::Stat::of(&tot);
        let se = (a.se.powi(2) + b.se.powi(2)).sqrt();
        assert!(
            (a.mean + b.mean).abs() < 4.0 * se,
            "MC ELBO {} ± {}, −(terms) {} ± {}",
            a.mean,
            a.se,
            -b.mean,
            b.se
        );
        assert_eq!(t.layers.len(), 1);
        assert_eq!(t.layers[0].0, "kl_z1");
    }
}
