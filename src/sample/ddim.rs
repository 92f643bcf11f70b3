//! DDIM (MATH.md M39). In DDPM notation with ᾱ = α² = sigmoid(−γ):
//! x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ_t²) ε̂ + σ_t z,
//! σ_t = η √((1−ᾱ_{t−1})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t−1}). For any process z_t = α_t x + σ_t ε the
//! same step reads z_s = α_s x̂_0 + √(σ_s² − s²) ε̂ + s z with s² = η² σ_s² c,
//! c = 1 − SNR(t)/SNR(s) (for VP, s is DDIM's σ_t exactly). η = 0 is deterministic.

use burn::tensor::Tensor;

use super::{eps_x0_at, Configure, Sampler, SamplerParams};
use crate::diffusion::{Cond, Denoiser};
use crate::rng::{randn, Rng};
use crate::Result;

/// DDIM with stochasticity η.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ddim {
    pub eta: f64,
}

impl Configure for Ddim {
    fn configure(p: &SamplerParams) -> Self {
        Ddim { eta: p.eta }
    }
    fn validate(&self) -> Result<()> {
        if !(self.eta >= 0.0 && self.eta.is_finite()) {
            return Err(crate::Error::Config(
                "--eta must be a non-negative number".into(),
            ));
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("DDIM (η = {})", self.eta)
    }
}

/// (M39) σ_t of DDIM.
pub fn ddim_sigma(alpha_bar: f64, alpha_bar_prev: f64, eta: f64) -> f64 {
    eta * ((1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).sqrt()
        * (1.0 - alpha_bar / alpha_bar_prev).max(0.0).sqrt()
}

/// (M39) One DDIM step from x_t and ε̂ in DDPM notation: returns (x̂_0, x_{t−1}). `noise` is
/// required when η > 0.
///
/// # Shapes
/// `x_t`, `eps_hat`, `noise`: `[B, D]`.
pub fn ddim_step(
    x_t: Tensor<2>,
    eps_hat: Tensor<2>,
    alpha_bar: f64,
    alpha_bar_prev: f64,
    eta: f64,
    noise: Option<Tensor<2>>,
) -> (Tensor<2>, Tensor<2>) {
    // (M19) x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t
    let x0_hat = (x_t - eps_hat.clone() * (1.0 - alpha_bar).sqrt()) / alpha_bar.sqrt();
    let sigma = ddim_sigma(alpha_bar, alpha_bar_prev, eta);
    let dir = (1.0 - alpha_bar_prev - sigma * sigma).max(0.0).sqrt();
    let mut x_prev = x0_hat.clone() * alpha_bar_prev.sqrt() + eps_hat * dir;
    if let (Some(z), true) = (noise, sigma > 0.0) {
        x_prev = x_prev + z * sigma;
    }
    (x0_hat, x_prev)
}

impl Sampler for Ddim {
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
        let (e, x0_hat) = eps_x0_at(den, z_t, gamma_t, cond);
        let (alpha_s, sigma_s) = process.alpha_sigma_f64(gamma_s);
        let c = -(gamma_s - gamma_t).exp_m1();
        // η > 1 adds more noise than ancestral sampling, up to a full renoising (s = σ_s).
        let s2 = (self.eta * self.eta * c).min(1.0) * sigma_s * sigma_s;
        let dir = (sigma_s * sigma_s - s2).max(0.0).sqrt();
        let z_s = x0_hat * alpha_s + e * dir;
        Ok(if s2 > 0.0 {
            z_s + randn(rng, [b, d], &device) * s2.sqrt()
        } else {
            z_s
        })
    }
}
