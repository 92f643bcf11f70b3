//! The probability-flow ODE (MATH.md M36) by Heun's second-order method.

use burn::tensor::Tensor;

use super::{eps_x0_at, Configure, Sampler, SamplerParams};
use crate::diffusion::{Cond, Denoiser};
use crate::rng::Rng;
use crate::Result;

/// The probability-flow ODE (M36) by Heun's second-order method. In x̄ = z/α and σ̄ = σ/α
/// = e^{γ/2} the ODE is dx̄/dσ̄ = ε̂ for either process (Karras et al. 2022); a step takes an
/// Euler predictor to s and averages the slopes at t and s. Two network evaluations per step, one
/// on the last (to σ̄ = 0, where Euler's step is x̂_0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Heun;

impl Configure for Heun {
    fn configure(_: &SamplerParams) -> Self {
        Heun
    }
    fn describe(&self) -> String {
        "Heun (probability-flow ODE)".into()
    }
}

impl Sampler for Heun {
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        _rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        let (e_t, x0) = eps_x0_at(den, z_t.clone(), gamma_t, cond);
        if gamma_s == f64::NEG_INFINITY {
            return Ok(x0);
        }
        let process = den.process();
        let (alpha_t, _) = process.alpha_sigma_f64(gamma_t);
        let (alpha_s, _) = process.alpha_sigma_f64(gamma_s);
        let (sb_t, sb_s) = ((0.5 * gamma_t).exp(), (0.5 * gamma_s).exp());
        let xb_t = z_t / alpha_t;
        let xb_pred = xb_t.clone() + e_t.clone() * (sb_s - sb_t);
        let (e_s, _) = eps_x0_at(den, xb_pred * alpha_s, gamma_s, cond);
        Ok((xb_t + (e_t + e_s) * (0.5 * (sb_s - sb_t))) * alpha_s)
    }

    fn nfe(&self, steps: usize) -> Option<usize> {
        Some(2 * steps.max(1) - 1)
    }
}
