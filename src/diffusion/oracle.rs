//! Analytic denoisers whose right answer is known (MATH.md M31, M32). They implement
//! [`Denoiser`], so the ELBO estimators and samplers can be checked against closed forms.

use burn::tensor::{Tensor, TensorData};

use super::param::Prediction;
use super::{Cond, Denoiser, Process};
use crate::data::toy::Mixture;

/// (M31) Data N(0, s² I): the best ε̂ is E[ε | z_t] = σ z / (α² s² + σ²), for either process.
pub struct GaussianOracle {
    pub s2: f64,
    pub process: Process,
}

impl GaussianOracle {
    /// The oracle of the variance-preserving process.
    pub fn vp(s2: f64) -> Self {
        GaussianOracle {
            s2,
            process: Process::VariancePreserving,
        }
    }
}

impl Denoiser for GaussianOracle {
    fn prediction(&self) -> Prediction {
        Prediction::Eps
    }
    fn process(&self) -> Process {
        self.process
    }
    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>, _cond: Cond) -> Tensor<2> {
        let (alpha, sigma) = self.process.alpha_sigma(gamma);
        let denom = alpha.square() * self.s2 + sigma.clone().square();
        z_t * sigma / denom
    }
}

/// (M32) Data Σ_k π_k N(m_k, s_k² I): the exact posterior mean E[x | z_t] through the
/// responsibilities r_k(z); predicts x̂_0.
pub struct MixtureOracle {
    pub mixture: Mixture,
    pub process: Process,
}

impl Denoiser for MixtureOracle {
    fn prediction(&self) -> Prediction {
        Prediction::X0
    }
    fn process(&self) -> Process {
        self.process
    }
    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>, _cond: Cond) -> Tensor<2> {
        let m = &self.mixture;
        let device = z_t.device();
        let [b, d] = z_t.dims();
        let (alpha, sigma) = self.process.alpha_sigma(gamma); // [B, 1]
        let a2 = alpha.clone().square();
        let s2 = sigma.square();
        let mut logits = Vec::new();
        let mut means = Vec::new();
        for k in 0..m.weights.len() {
            let mk = Tensor::<2>::from_data(
                TensorData::new(
                    m.means[k].iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    [1, d],
                ),
                &device,
            );
            let sk2 = m.stds[k] * m.stds[k];
            let var = a2.clone() * sk2 + s2.clone(); // [B, 1]: α² s_k² + σ²
            let diff = z_t.clone() - mk.clone() * alpha.clone(); // z − α m_k
                                                                 // log π_k + log N(z; α m_k, var I)
            let lp = (diff.clone().square().sum_dim(1) / var.clone()) * -0.5
                - var.clone().log() * (0.5 * d as f64)
                + m.weights[k].ln();
            logits.push(lp);
            // E[x | z, k] = m_k + α s_k² (z − α m_k) / var
            means.push(mk + diff * alpha.clone() * sk2 / var);
        }
        let logits = Tensor::cat(logits, 1); // [B, K]
        let r = burn::tensor::activation::softmax(logits, 1);
        let mut x0 = Tensor::<2>::zeros([b, d], &device);
        for (k, mk) in means.into_iter().enumerate() {
            x0 = x0 + mk * r.clone().narrow(1, k, 1);
        }
        x0
    }
}
