//! Ancestral sampling (MATH.md M38): z_s ~ p_θ(z_s | z_t) = q(z_s | z_t, x = x̂_θ(z_t)), whose
//! variance is the posterior variance σ_q² of M16. For z_t = α_t x + σ_t ε under either process,
//! with c = −expm1(γ_s − γ_t) = 1 − SNR(t)/SNR(s):
//! μ = (α_s/α_t) (z_t − σ_t c ε̂), var = σ_s² c. At the clean end (γ_s = −∞) this is x̂_0.

use burn::tensor::Tensor;

use super::{eps_x0_at, Configure, Sampler, SamplerParams};
use crate::diffusion::{Cond, Denoiser};
use crate::rng::{randn, Rng};
use crate::Result;

/// The ancestral (DDPM) sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ancestral;

impl Configure for Ancestral {
    fn configure(_: &SamplerParams) -> Self {
        Ancestral
    }
    fn describe(&self) -> String {
        "ancestral".into()
    }
}

impl Sampler for Ancestral {
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        let [b, d] = z_t.dims();
        let device = z_t.device();
        let process = den.process();
        let (e, x0) = eps_x0_at(den, z_t.clone(), gamma_t, cond);
        if gamma_s == f64::NEG_INFINITY {
            return Ok(x0);
        }
        let c = -(gamma_s - gamma_t).exp_m1();
        let (alpha_t, sigma_t) = process.alpha_sigma_f64(gamma_t);
        let (alpha_s, sigma_s) = process.alpha_sigma_f64(gamma_s);
        let mean = (z_t - e * (sigma_t * c)) * (alpha_s / alpha_t);
        let var = sigma_s * sigma_s * c;
        Ok(if var > 0.0 {
            mean + randn(rng, [b, d], &device) * var.sqrt()
        } else {
            mean
        })
    }
}
