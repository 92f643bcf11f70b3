//! The variational autoencoder (MATH.md M6–M9).
//!
//! | code | math |
//! | --- | --- |
//! | `q` | q_φ(z\|x) = N(μ_φ(x), diag σ²_φ(x)) (M7) |
//! | `z` | latent, reparameterised z = μ + σ ⊙ ε |
//! | `logits` | Bernoulli decoder output (M9) |
//! | `shift`, `scale` | standardisation of continuous data, x̃ = (x − shift)/scale |
//!
//! ELBO (M6) = E_q[log p_θ(x|z)] − KL(q_φ(z|x) ‖ p(z)), the KL in closed form (M8). For continuous
//! data the decoder is a diagonal Gaussian on the standardised x̃, and the log-Jacobian −Σ log scale
//! is added so that the likelihood is in the units of the data as given.

use burn::module::Module;
#[cfg(test)]
use burn::tensor::TensorData;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{Binarize, DataKind, Dataset, Scaling};
use crate::diffusion::Cond;
use crate::dist::{std_normal_log_prob, DiagGaussian, LOG_2PI};
use crate::elbo::{ElboTerms, ImportanceSampled};
use crate::models::{count_active, warmup_weight, LayerUnits};
use crate::models::{LatentVariableModel, Model, ModelSettings, NoiseFn};
use crate::nn::{Activation, Mlp};
use crate::rng::{randn, Rng};
use crate::{Error, Result};

pub use crate::models::obs::{ImageLikelihood, Likelihood, Observation};

/// VAE settings. Defaults are Burda et al. (2016)'s one-stochastic-layer model:
/// 784-200-200-50 with tanh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeConfig {
    /// Latent dimension d_z (Burda et al.: 50).
    pub latent: usize,
    /// Hidden widths of the encoder; the decoder mirrors them (Burda et al.: [200, 200]).
    pub hidden: Vec<usize>,
    /// Nonlinearity (Burda et al.: tanh).
    pub activation: Activation,
    /// Binarisation of 8-bit images for the Bernoulli decoder: dynamic (a fresh draw per batch,
    /// the usual choice, less overfitting) or static.
    pub binarize: Binarize,
    /// 8-bit images: `bernoulli` on binarised pixels, or `discretized` over the 256 levels
    /// (bits/dim, the VDM's unit).
    pub images: ImageLikelihood,
    /// KL warm-up: the KL term's weight in the training loss rises linearly from 0 to 1 over
    /// this many steps (0: none). The reported ELBO always has weight 1.
    pub kl_warmup: u64,
}

impl ModelSettings for VaeConfig {
    const IMPORTANCE_WEIGHTED: bool = true;

    fn binary_images(&self) -> bool {
        self.images.binary()
    }

    fn set_binary_images(&mut self, binary: bool) -> bool {
        self.images = ImageLikelihood::of(binary);
        true
    }

    const SIZE_KEYS: &'static [&'static str] = &["latent", "hidden"];

    fn validate(&self) -> Result<()> {
        if self.latent == 0 {
            return Err(Error::Config("vae.latent must be positive".into()));
        }
        if self.hidden.contains(&0) {
            return Err(Error::Config("vae.hidden widths must be positive".into()));
        }
        Ok(())
    }

    /// 20,000 steps of 128: about three minutes on 2 cores.
    fn defaults_for(_kind: DataKind) -> (u64, usize) {
        (20_000, 128)
    }
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            latent: 50,
            hidden: vec![200, 200],
            activation: Activation::Tanh,
            binarize: Binarize::Dynamic,
            images: ImageLikelihood::Bernoulli,
            kl_warmup: 0,
        }
    }
}

/// What the VAE needs to know about its data, saved with the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeSpec {
    #[serde(flatten)]
    pub obs: Observation,
    pub latent: usize,
}

/// The VAE: encoder D → 2 d_z (μ, log σ²), decoder d_z → D (logits) or 2D (μ, log σ²).
#[derive(Module, Debug)]
pub struct Vae {
    pub encoder: Mlp,
    pub decoder: Mlp,
    #[module(skip)]
    pub spec: VaeSpec,
    /// The KL term's weight in the training loss (KL warm-up); 1 outside training.
    #[module(skip)]
    pub kl_weight: f64,
    #[module(skip)]
    pub kl_warmup: u64,
}

impl Vae {
    pub fn new(cfg: &VaeConfig, spec: VaeSpec, device: &Device) -> Result<Self> {
        spec.obs.check()?;
        cfg.validate()?;
        let d = spec.obs.data_dim;
        let mut rev = cfg.hidden.clone();
        rev.reverse();
        Ok(Vae {
            encoder: Mlp::new(d, &cfg.hidden, 2 * cfg.latent, cfg.activation, device),
            decoder: Mlp::new(cfg.latent, &rev, spec.obs.out_dim(), cfg.activation, device),
            spec: VaeSpec {
                latent: cfg.latent,
                ..spec
            },
            kl_weight: 1.0,
            kl_warmup: cfg.kl_warmup,
        })
    }

    /// (M7) q_φ(z|x) for a batch in data units `[B, D]`.
    pub fn encode(&self, x: Tensor<2>) -> DiagGaussian {
        let h = self.encoder.forward(self.spec.obs.to_model_space(x));
        let dz = self.spec.latent;
        let mean = h.clone().narrow(1, 0, dz);
        let log_var = h.narrow(1, dz, dz);
        DiagGaussian::new(mean, log_var)
    }

    /// (M6) with ε of the reparameterised draw from `noise` (named `eps.0`).
    pub fn elbo_noised(&self, x: Tensor<2>, noise: &mut NoiseFn) -> Result<ElboTerms> {
        let q = self.encode(x.clone());
        let z = q.rsample_with(noise("eps.0", q.mean.dims()));
        let reconstruction = -self.log_likelihood(x, z);
        let prior = q.kl_standard_normal();
        Ok(ElboTerms {
            reconstruction,
            prior,
            layers: vec![],
        })
    }

    /// log p_θ(x|z) in data units, `[N]`, for `x` `[N, D]` (data units) and `z` `[N, d_z]`.
    pub fn log_likelihood(&self, x: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
        self.spec.obs.log_prob(self.decoder.forward(z), x)
    }
}

impl LatentVariableModel for Vae {
    /// (M6) with the analytic KL (M8) and one reparameterised sample for the reconstruction.
    fn elbo(&self, x: Tensor<2>, _cond: Cond, rng: &mut Rng) -> Result<ElboTerms> {
        let dev = x.device();
        self.elbo_noised(x, &mut |_, dims| randn(rng, dims, &dev))
    }

    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        let dev = self.encoder.layers[0].weight.val().device();
        let z = randn(rng, [n, self.spec.latent], &dev);
        Ok(self.spec.obs.sample(self.decoder.forward(z), rng))
    }
}

impl ImportanceSampled for Vae {
    /// log p(x, z_k) − log q(z_k|x) = log p(x|z_k) + log p(z_k) − log q(z_k|x), `[B, k]`.
    fn log_weights(&self, x: Tensor<2>, k: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        let [b, d] = x.dims();
        let dz = self.spec.latent;
        let q = self.encode(x.clone());
        // [B, dz] → [B·k, dz], each example's row repeated k times in a block.
        let rep =
            |t: Tensor<2>, w: usize| t.unsqueeze_dim::<3>(1).repeat_dim(1, k).reshape([b * k, w]);
        let mean = rep(q.mean, dz);
        let log_var = rep(q.log_var, dz);
        let eps = randn(rng, [b * k, dz], &mean.device());
        let z = mean + (log_var.clone() * 0.5).exp() * eps.clone();
        // log q(z|x) = −½ Σ (ε² + log 2π + log σ²), exactly, from ε.
        let log_q = ((eps.square() + log_var + LOG_2PI) * -0.5)
            .sum_dim(1)
            .squeeze_dim::<1>(1);
        let log_pz = std_normal_log_prob(z.clone());
        let log_px = self.log_likelihood(rep(x, d), z);
        Ok((log_px + log_pz - log_q).reshape([b, k]))
    }
}

impl Model for Vae {
    type Config = VaeConfig;
    type Spec = VaeSpec;

    fn spec(cfg: &VaeConfig, train: &Dataset, scaling: Scaling) -> Result<VaeSpec> {
        Ok(VaeSpec {
            obs: Observation::for_data(train, scaling, cfg.images),
            latent: cfg.latent,
        })
    }

    fn build(cfg: &VaeConfig, spec: &VaeSpec, device: &Device) -> Result<Self> {
        Vae::new(cfg, spec.clone(), device)
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

    fn binarize(cfg: &VaeConfig, spec: &VaeSpec) -> Option<Binarize> {
        spec.obs.binarize(cfg.binarize)
    }

    fn at_step(&mut self, step: u64) {
        self.kl_weight = warmup_weight(step, self.kl_warmup);
    }

    /// The negative ELBO with the KL term weighted by the warm-up (weight 1 after it).
    fn loss(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<(Tensor<1>, ElboTerms)> {
        let t = self.elbo(x, cond, rng)?;
        Ok((t.latent_weighted(self.kl_weight).mean(), t))
    }

    fn active_units(&self, x: Tensor<2>, _rng: &mut Rng) -> Option<Result<Vec<LayerUnits>>> {
        let mean = self.encode(x).mean;
        Some(count_active(vec![mean]))
    }

    fn importance_weighted(
        &self,
        x: Tensor<2>,
        k: usize,
        rng: &mut Rng,
    ) -> Option<Result<Vec<f64>>> {
        Some(crate::elbo::importance_weighted_chunked(self, x, k, rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;

    fn tiny(lik: Likelihood) -> Vae {
        let d = Device::flex();
        let (shift, scale) = match lik {
            Likelihood::Bernoulli => (vec![], vec![]),
            Likelihood::Gaussian => (vec![1.0; 3], vec![2.0; 3]),
            Likelihood::Discretized => (vec![], vec![]),
        };
        let cfg = VaeConfig {
            latent: 2,
            hidden: vec![8],
            ..Default::default()
        };
        Vae::new(
            &cfg,
            VaeSpec {
                obs: Observation {
                    likelihood: lik,
                    data_dim: 3,
                    shift,
                    scale,
                },
                latent: 2,
            },
            &d,
        )
        .unwrap()
    }

    #[test]
    fn one_sample_log_weight_agrees_with_elbo_terms_in_expectation() {
        // The analytic-KL ELBO and the Monte Carlo ELBO estimate the same quantity: with 20,000
        // samples their means agree to well within 0.05 nats on this tiny model.
        for lik in [Likelihood::Bernoulli, Likelihood::Gaussian] {
            let m = tiny(lik);
            let x = Tensor::<2>::from_data(
                TensorData::new(vec![1.0f32, 0.0, 1.0], [1, 3]),
                &Device::flex(),
            );
            let mut rng = seeded(1);
            let mc = crate::elbo::monte_carlo_elbo(&m, x.clone(), 20_000, &mut rng).unwrap()[0];
            let xs = x.repeat_dim(0, 20_000);
            let t = m.elbo(xs, None, &mut rng).unwrap();
            let an = -crate::elbo::to_f64(t.total().mean()).unwrap()[0];
            assert!((mc - an).abs() < 0.05, "{lik:?}: MC {mc} vs analytic {an}");
        }
    }
}
