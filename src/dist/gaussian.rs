//! Diagonal Gaussians: reparameterised sampling (M7), log-density, and KL (M8).
//!
//! | code | math |
//! | --- | --- |
//! | `mean` | μ |
//! | `log_var` | log σ² |
//! | `eps` | ε ~ N(0, I) |

use burn::tensor::Tensor;

use crate::rng::{randn, Rng};

/// log(2π).
pub const LOG_2PI: f64 = 1.837_877_066_409_345_3;

/// N(μ, diag σ²) for a batch.
///
/// # Shapes
/// `mean`, `log_var`: `[B, d]`.
#[derive(Debug, Clone)]
pub struct DiagGaussian {
    pub mean: Tensor<2>,
    pub log_var: Tensor<2>,
}

impl DiagGaussian {
    pub fn new(mean: Tensor<2>, log_var: Tensor<2>) -> Self {
        DiagGaussian { mean, log_var }
    }

    /// (M7) z = μ + σ ⊙ ε, differentiable in μ and σ. Returns `[B, d]`.
    pub fn rsample(&self, rng: &mut Rng) -> Tensor<2> {
        let eps = randn(rng, self.mean.dims(), &self.mean.device());
        self.rsample_with(eps)
    }

    /// (M7) with a given ε `[B, d]`.
    pub fn rsample_with(&self, eps: Tensor<2>) -> Tensor<2> {
        self.mean.clone() + (self.log_var.clone() * 0.5).exp() * eps
    }

    /// log N(z; μ, σ²) summed over dimensions. `z`: `[B, d]` → `[B]`.
    pub fn log_prob(&self, z: Tensor<2>) -> Tensor<1> {
        let d = (z.clone() - self.mean.clone()).square();
        let per = (d * (-self.log_var.clone()).exp() + self.log_var.clone() + LOG_2PI) * -0.5;
        per.sum_dim(1).squeeze_dim(1)
    }

    /// (M8) KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (σ² + μ² − 1 − log σ²). `[B]`.
    pub fn kl_standard_normal(&self) -> Tensor<1> {
        let per =
            self.log_var.clone().exp() + self.mean.clone().square() - self.log_var.clone() - 1.0;
        (per * 0.5).sum_dim(1).squeeze_dim(1)
    }

    /// (M8) KL(self ‖ other) = Σ [log(σ2/σ1) + (σ1² + (μ1−μ2)²)/(2σ2²) − ½]. `[B]`.
    pub fn kl(&self, other: &DiagGaussian) -> Tensor<1> {
        let inv_var2 = (-other.log_var.clone()).exp();
        let per = (other.log_var.clone() - self.log_var.clone()) * 0.5
            + (self.log_var.clone().exp() + (self.mean.clone() - other.mean.clone()).square())
                * inv_var2
                * 0.5
            - 0.5;
        per.sum_dim(1).squeeze_dim(1)
    }
}

/// log N(z; 0, I) summed over dimensions. `[B, d]` → `[B]`.
pub fn std_normal_log_prob(z: Tensor<2>) -> Tensor<1> {
    let d = z.dims()[1] as f64;
    (z.square().sum_dim(1).squeeze_dim(1) * -0.5) - 0.5 * d * LOG_2PI
}

/// (M8) for one dimension, in f64: KL(N(μ1, v1) ‖ N(μ2, v2)).
pub fn kl_scalar(mu1: f64, v1: f64, mu2: f64, v2: f64) -> f64 {
    0.5 * (v2 / v1).ln() + (v1 + (mu1 - mu2).powi(2)) / (2.0 * v2) - 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(v: Vec<f32>, s: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, s), &Device::flex())
    }

    fn normal_pdf(x: f64, mu: f64, v: f64) -> f64 {
        (-(x - mu).powi(2) / (2.0 * v)).exp() / (std::f64::consts::TAU * v).sqrt()
    }

    #[test]
    fn kl_matches_numerical_integration() {
        // (M8) against ∫ q log(q/p) dx by the midpoint rule on ±12 sd, step 1e-3 sd: error < 1e-6.
        for &(m1, v1, m2, v2) in &[
            (0.3, 0.5, -1.0, 2.0),
            (0.0, 1.0, 0.0, 1.0),
            (2.0, 0.01, 0.0, 1.0),
        ] {
            let sd = f64::sqrt(v1);
            let (lo, hi) = (m1 - 12.0 * sd, m1 + 12.0 * sd);
            let n = 24_000;
            let h = (hi - lo) / n as f64;
            let mut num = 0.0;
            for i in 0..n {
                let x = lo + (i as f64 + 0.5) * h;
                let q = normal_pdf(x, m1, v1);
                if q > 0.0 {
                    num += q * (q.ln() - normal_pdf(x, m2, v2).ln()) * h;
                }
            }
            let closed = kl_scalar(m1, v1, m2, v2);
            assert!((num - closed).abs() < 1e-6, "{num} vs {closed}");
            // The tensor version, two identical dimensions: twice the scalar.
            let q = DiagGaussian::new(
                t(vec![m1 as f32; 2], [1, 2]),
                t(vec![(v1.ln()) as f32; 2], [1, 2]),
            );
            let p = DiagGaussian::new(
                t(vec![m2 as f32; 2], [1, 2]),
                t(vec![(v2.ln()) as f32; 2], [1, 2]),
            );
            let kt: f32 = q.kl(&p).into_scalar();
            assert!(
                (kt as f64 - 2.0 * closed).abs() < 1e-5 * (1.0 + closed),
                "{kt}"
            );
            if m2 == 0.0 && v2 == 1.0 {
                let ks: f32 = q.kl_standard_normal().into_scalar();
                assert!((ks as f64 - 2.0 * closed).abs() < 1e-5 * (1.0 + closed));
            }
        }
    }

    #[test]
    fn log_prob_matches_formula() {
        let q = DiagGaussian::new(
            t(vec![1.0, -2.0], [1, 2]),
            t(vec![0.0, (4.0f32).ln()], [1, 2]),
        );
        let lp: f32 = q.log_prob(t(vec![0.0, 0.0], [1, 2])).into_scalar();
        let want = normal_pdf(0.0, 1.0, 1.0).ln() + normal_pdf(0.0, -2.0, 4.0).ln();
        assert!((lp as f64 - want).abs() < 1e-5);
        let s: f32 = std_normal_log_prob(t(vec![1.0, 0.0], [1, 2])).into_scalar();
        let want = normal_pdf(1.0, 0.0, 1.0).ln() + normal_pdf(0.0, 0.0, 1.0).ln();
        assert!((s as f64 - want).abs() < 1e-5);
    }
}
