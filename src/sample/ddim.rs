//! DDIM (MATH.md M39), in DDPM notation with ᾱ = α² = sigmoid(−γ):
//! x_{t−1} = √ᾱ_{t−1} x̂_0 + √(1 − ᾱ_{t−1} − σ_t²) ε̂ + σ_t z,
//! σ_t = η √((1−ᾱ_{t−1})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t−1}). η = 0 is deterministic and may skip steps.

use burn::tensor::Tensor;

use super::{eps_at, Sampler};
use crate::models::diffusion::schedule::sigmoid;
use crate::models::diffusion::Denoiser;
use crate::rng::{randn, Rng};

/// DDIM with stochasticity η.
pub struct Ddim {
    pub eta: f64,
}

/// (M39) σ_t of DDIM.
pub fn ddim_sigma(alpha_bar: f64, alpha_bar_prev: f64, eta: f64) -> f64 {
    eta * ((1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).sqrt()
        * (1.0 - alpha_bar / alpha_bar_prev).max(0.0).sqrt()
}

/// (M39) One DDIM step from x_t and ε̂: returns (x̂_0, x_{t−1}). `noise` is required when η > 0.
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
        rng: &mut Rng,
    ) -> Tensor<2> {
        let [b, d] = z_t.dims();
        let device = z_t.device();
        let e = eps_at(den, z_t.clone(), gamma_t);
        let noise = (self.eta > 0.0).then(|| randn(rng, [b, d], &device));
        ddim_step(
            z_t,
            e,
            sigmoid(-gamma_t),
            sigmoid(-gamma_s),
            self.eta,
            noise,
        )
        .1
    }
}
