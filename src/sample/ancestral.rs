//! Ancestral sampling (MATH.md M38): z_s ~ p_θ(z_s | z_t) = q(z_s | z_t, x = x̂_θ(z_t)), whose
//! variance is the posterior variance σ_q² of M16. In VDM notation, with c = −expm1(γ_s − γ_t)
//! = 1 − SNR(t)/SNR(s):
//! μ = √(α_s²/α_t²) (z_t − σ_t c ε̂), var = σ_s² c.

use burn::tensor::Tensor;

use super::{eps_at, Sampler};
use crate::models::diffusion::schedule::sigmoid;
use crate::models::diffusion::Denoiser;
use crate::rng::{randn, Rng};

/// The ancestral (DDPM) sampler.
pub struct Ancestral;

impl Sampler for Ancestral {
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        rng: &mut Rng,
    ) -> Tensor<2> {
        let [b, d] = z_t.dims();
        let device = z_t.device();
        let e = eps_at(den, z_t.clone(), gamma_t);
        let c = -(gamma_s - gamma_t).exp_m1();
        let (a2_t, a2_s) = (sigmoid(-gamma_t), sigmoid(-gamma_s));
        let sigma_t = sigmoid(gamma_t).sqrt();
        let mean = (z_t - e * (sigma_t * c)) * (a2_s / a2_t).sqrt();
        let var = sigmoid(gamma_s) * c;
        mean + randn(rng, [b, d], &device) * var.max(0.0).sqrt()
    }
}
