//! The forward process: the [`Process`] object that gives α_t and σ_t of z_t = α_t x + σ_t ε
//! from γ_t = −log SNR(t), variance preserving (M25) or exploding (M35); and the DDPM posterior as
//! small pure functions (MATH.md M12–M17), in DDPM notation: α_t = 1 − β_t, ᾱ_t = Π α_i.
//!
//! | code | math |
//! | --- | --- |
//! | `alpha` | α_t |
//! | `alpha_bar`, `alpha_bar_prev` | ᾱ_t, ᾱ_{t−1} |
//! | `x0`, `x_t`, `eps` | x_0, x_t, ε |

use burn::tensor::activation::sigmoid as sigmoid_t;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::dist::softplus;

/// sigmoid(x) = 1/(1 + e^{−x}), stable for any x.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The forward process q(z_t | x) = N(α_t x, σ_t² I), with SNR = α_t²/σ_t² = e^{−γ_t} either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Process {
    /// (M25) α_t² = sigmoid(−γ_t), σ_t² = sigmoid(γ_t): α² + σ² = 1, prior N(0, I).
    #[default]
    VariancePreserving,
    /// (M35) α_t = 1, σ_t² = e^{γ_t}: the variance grows, prior N(0, σ_1² I).
    VarianceExploding,
    /// (M48) The straight path of flow matching, z_t = (1 − t) x + t ε: α = sigmoid(−γ/2),
    /// σ = sigmoid(γ/2) (so α + σ = 1 and t = σ), prior N(0, σ_1² I) with σ_1 just below 1.
    Linear,
}

impl Process {
    /// The variance of the prior p(z_1) = N(0, v_1 I) at the noise end γ_1: 1 (VP) or
    /// σ_1² = e^{γ_1} (VE).
    pub fn prior_var(self, gamma1: f64) -> f64 {
        match self {
            Process::VariancePreserving => 1.0,
            Process::VarianceExploding => gamma1.exp(),
            Process::Linear => sigmoid(0.5 * gamma1).powi(2),
        }
    }

    /// α and σ of noise levels γ `[B]`, as `[B, 1]` columns.
    pub fn alpha_sigma(self, gamma: Tensor<1>) -> (Tensor<2>, Tensor<2>) {
        let g = gamma.unsqueeze_dim::<2>(1);
        match self {
            Process::VariancePreserving => (sigmoid_t(-g.clone()).sqrt(), sigmoid_t(g).sqrt()),
            Process::VarianceExploding => (g.clone().ones_like(), (g * 0.5).exp()),
            Process::Linear => (sigmoid_t(-g.clone() * 0.5), sigmoid_t(g * 0.5)),
        }
    }

    /// α and σ at one noise level, in f64. γ = −∞ is the clean end: (1, 0).
    pub fn alpha_sigma_f64(self, gamma: f64) -> (f64, f64) {
        match self {
            Process::VariancePreserving => (sigmoid(-gamma).sqrt(), sigmoid(gamma).sqrt()),
            Process::VarianceExploding => (1.0, (0.5 * gamma).exp()),
            Process::Linear => (sigmoid(-0.5 * gamma), sigmoid(0.5 * gamma)),
        }
    }

    /// log σ² of noise levels γ `[N]`, without cancellation: −softplus(−γ) (VP) or γ (VE).
    pub fn log_sigma2(self, gamma: Tensor<1>) -> Tensor<1> {
        match self {
            Process::VariancePreserving => -softplus(-gamma),
            Process::VarianceExploding => gamma,
            // log σ² = 2 log sigmoid(γ/2) = −2 softplus(−γ/2).
            Process::Linear => -softplus(-gamma * 0.5) * 2.0,
        }
    }

    /// log of the prior variance of z_1 given γ_1 `[1]`: 0 (VP, N(0, I)) or log σ_1² (VE).
    pub fn prior_log_var(self, gamma1: Tensor<1>) -> Tensor<1> {
        match self {
            Process::VariancePreserving => gamma1.zeros_like(),
            Process::VarianceExploding => gamma1,
            Process::Linear => -softplus(-gamma1 * 0.5) * 2.0,
        }
    }

    /// (M2 prior term) KL(q(z_1 | x) ‖ p(z_1)) per example for a model-space batch `x` `[B, D]`
    /// and γ_1 `[1]`: ½ Σ [(σ_1² + α_1² x²)/v − 1 − log(σ_1²/v)], v the prior variance.
    pub fn prior_kl(self, x: Tensor<2>, gamma1: Tensor<1>) -> Tensor<1> {
        let (alpha1, _) = self.alpha_sigma(gamma1.clone());
        let log_v = self.prior_log_var(gamma1.clone()).unsqueeze_dim::<2>(1);
        let log_ratio = self.log_sigma2(gamma1).unsqueeze_dim::<2>(1) - log_v.clone();
        let inv_v = (-log_v).exp();
        ((x.square() * alpha1.square() * inv_v + log_ratio.clone().exp() - 1.0 - log_ratio) * 0.5)
            .sum_dim(1)
            .squeeze_dim::<1>(1)
    }
}

/// (M13) x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε. `[B, D]`.
pub fn q_sample(x0: Tensor<2>, eps: Tensor<2>, alpha_bar: f64) -> Tensor<2> {
    x0 * alpha_bar.sqrt() + eps * (1.0 - alpha_bar).sqrt()
}

/// (M12) q(x_t | x_{t−1}) = N(√α_t x_{t−1}, (1 − α_t)): its mean and variance for a scalar.
pub fn q_step(x_prev: f64, alpha: f64) -> (f64, f64) {
    (alpha.sqrt() * x_prev, 1.0 - alpha)
}

/// (M14) SNR = ᾱ / (1 − ᾱ).
pub fn snr(alpha_bar: f64) -> f64 {
    alpha_bar / (1.0 - alpha_bar)
}

/// (M16) Coefficients of μ_q = c_xt · x_t + c_x0 · x_0.
pub fn posterior_mean_coefs(alpha: f64, alpha_bar: f64, alpha_bar_prev: f64) -> (f64, f64) {
    let c_xt = alpha.sqrt() * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar);
    let c_x0 = alpha_bar_prev.sqrt() * (1.0 - alpha) / (1.0 - alpha_bar);
    (c_xt, c_x0)
}

/// (M16) μ_q(x_t, x_0). `[B, D]`.
pub fn posterior_mean(
    x_t: Tensor<2>,
    x0: Tensor<2>,
    alpha: f64,
    alpha_bar: f64,
    alpha_bar_prev: f64,
) -> Tensor<2> {
    let (a, b) = posterior_mean_coefs(alpha, alpha_bar, alpha_bar_prev);
    x_t * a + x0 * b
}

/// (M16) σ_q²(t) = (1 − α_t)(1 − ᾱ_{t−1}) / (1 − ᾱ_t).
pub fn posterior_variance(alpha: f64, alpha_bar: f64, alpha_bar_prev: f64) -> f64 {
    (1.0 - alpha) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
}

/// (M17) A denoising-matching term ‖μ_q − μ_θ‖² / (2σ_q²), per example `[B]`.
pub fn denoising_term(mu_q: Tensor<2>, mu_theta: Tensor<2>, sigma2_q: f64) -> Tensor<1> {
    ((mu_q - mu_theta).square().sum_dim(1) / (2.0 * sigma2_q)).squeeze_dim(1)
}

/// (M18) Weight of ‖x_0 − x̂_0‖² in the denoising term: ½ (SNR(t−1) − SNR(t)).
pub fn weight_x0(alpha_bar: f64, alpha_bar_prev: f64) -> f64 {
    0.5 * (snr(alpha_bar_prev) - snr(alpha_bar))
}

/// (M19) Weight of ‖ε − ε̂‖²: (1 − α_t)² / (2 σ_q² (1 − ᾱ_t) α_t).
pub fn weight_eps(alpha: f64, alpha_bar: f64, alpha_bar_prev: f64) -> f64 {
    let s2 = posterior_variance(alpha, alpha_bar, alpha_bar_prev);
    (1.0 - alpha).powi(2) / (2.0 * s2 * (1.0 - alpha_bar) * alpha)
}

/// (M20) Weight of ‖s_θ − ∇log p(x_t)‖²: (1 − α_t)² / (2 σ_q² α_t).
pub fn weight_score(alpha: f64, alpha_bar: f64, alpha_bar_prev: f64) -> f64 {
    let s2 = posterior_variance(alpha, alpha_bar, alpha_bar_prev);
    (1.0 - alpha).powi(2) / (2.0 * s2 * alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal_pdf(x: f64, m: f64, v: f64) -> f64 {
        (-(x - m).powi(2) / (2.0 * v)).exp() / (std::f64::consts::TAU * v).sqrt()
    }

    #[test]
    fn m16_posterior_matches_bayes_numerically() {
        // q(x_{t−1} | x_t, x_0) ∝ q(x_t | x_{t−1}) q(x_{t−1} | x_0): integrate on a grid and compare
        // its normalised mean and variance with M16. Grid step 1e-4 over ±10 sd: error < 1e-7.
        for &(alpha, ab_prev, x0, xt) in &[
            (0.98f64, 0.6f64, 0.7f64, -0.2f64),
            (0.9, 0.05, -1.0, 1.5),
            (0.999, 0.99, 0.3, 0.31),
        ] {
            let ab = ab_prev * alpha;
            let (m_prev, v_prev) = (ab_prev.sqrt() * x0, 1.0 - ab_prev);
            let sd = v_prev.sqrt();
            let (lo, hi) = (m_prev - 10.0 * sd, m_prev + 10.0 * sd);
            let n = 200_000;
            let h = (hi - lo) / n as f64;
            let (mut z, mut m1, mut m2) = (0.0, 0.0, 0.0);
            for i in 0..n {
                let x = lo + (i as f64 + 0.5) * h;
                let (mu, v) = q_step(x, alpha);
                let w = normal_pdf(xt, mu, v) * normal_pdf(x, m_prev, v_prev);
                z += w;
                m1 += w * x;
                m2 += w * x * x;
            }
            let mean = m1 / z;
            let var = m2 / z - mean * mean;
            let (a, b) = posterior_mean_coefs(alpha, ab, ab_prev);
            let pv = posterior_variance(alpha, ab, ab_prev);
            assert!(
                (mean - (a * xt + b * x0)).abs() < 1e-6 * (1.0 + mean.abs()),
                "mean {mean}"
            );
            assert!((var - pv).abs() < 1e-6 * pv.max(1e-3), "var {var} vs {pv}");
        }
    }

    #[test]
    fn m18_m19_m20_weights_agree() {
        // With x_0 = (x_t − √(1−ᾱ) ε)/√ᾱ, the x_0-, ε- and score-weighted errors are one quantity:
        // w_x0 ‖Δx_0‖² = w_eps ‖Δε‖² = w_score ‖Δs‖², with Δx_0 = √((1−ᾱ)/ᾱ) Δε, Δs = Δε/√(1−ᾱ).
        let (alpha, ab_prev) = (0.97f64, 0.4f64);
        let ab = alpha * ab_prev;
        let d_eps = 0.37f64;
        let d_x0 = ((1.0 - ab) / ab).sqrt() * d_eps;
        let d_s = d_eps / (1.0 - ab).sqrt();
        let a = weight_x0(ab, ab_prev) * d_x0 * d_x0;
        let b = weight_eps(alpha, ab, ab_prev) * d_eps * d_eps;
        let c = weight_score(alpha, ab, ab_prev) * d_s * d_s;
        assert!(
            (a - b).abs() < 1e-12 && (b - c).abs() < 1e-12,
            "{a} {b} {c}"
        );
    }
}
