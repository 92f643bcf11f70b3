//! The reverse SDE (MATH.md M35) by Euler–Maruyama.

use burn::tensor::Tensor;

use super::{eps_x0_at, Configure, Sampler, SamplerParams};
use crate::diffusion::{Cond, Denoiser};
use crate::rng::{randn, Rng};
use crate::Result;

/// The reverse SDE dz = [f(z, t) − g(t)² ∇log p_t(z)] dt + g(t) dw̄ by Euler–Maruyama. With
/// f = ½ (d log α²/dt) z and g² = σ² dγ/dt (both processes), a step from t to s reads
/// z_s = z_t (1 − ½ log(α_t²/α_s²)) − σ_t Δγ ε̂ + σ_t √Δγ ξ, with Δγ = γ_t − γ_s (the step's
/// increments of log α² and γ standing for their derivatives times Δt). First order: it needs
/// many steps (about 1,000).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EulerMaruyama;

impl Configure for EulerMaruyama {
    fn configure(_: &SamplerParams) -> Self {
        EulerMaruyama
    }
    fn describe(&self) -> String {
        "Euler–Maruyama (reverse SDE)".into()
    }
}

impl Sampler for EulerMaruyama {
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
        let (e, x0) = eps_x0_at(den, z_t.clone(), gamma_t, cond);
        if gamma_s == f64::NEG_INFINITY {
            return Ok(x0);
        }
        let process = den.process();
        let (alpha_t, sigma_t) = process.alpha_sigma_f64(gamma_t);
        let (alpha_s, _) = process.alpha_sigma_f64(gamma_s);
        let dg = gamma_t - gamma_s;
        let shrink = 1.0 - (alpha_t / alpha_s).ln(); // 1 − ½ log(α_t²/α_s²)
        Ok(z_t * shrink - e * (sigma_t * dg) + randn(rng, [b, d], &device) * (sigma_t * dg.sqrt()))
    }
}
