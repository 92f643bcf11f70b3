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
#[derive(Clone)]
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

impl MixtureOracle {
    /// Score ∇log p(z_t | k) = −(z − α m_k)/(α² s_k² + σ²) of each component and the
    /// responsibilities r_k(z) (M32), for rows `[B, D]`.
    fn component_scores(&self, z_t: &Tensor<2>, gamma: Tensor<1>) -> (Vec<Tensor<2>>, Tensor<2>) {
        let m = &self.mixture;
        let device = z_t.device();
        let d = z_t.dims()[1];
        let (alpha, sigma) = self.process.alpha_sigma(gamma);
        let (a2, s2) = (alpha.clone().square(), sigma.square());
        let mut scores = Vec::new();
        let mut logits = Vec::new();
        for k in 0..m.weights.len() {
            let mk = Tensor::<2>::from_data(
                TensorData::new(
                    m.means[k].iter().map(|&v| v as f32).collect::<Vec<_>>(),
                    [1, d],
                ),
                &device,
            );
            let var = a2.clone() * (m.stds[k] * m.stds[k]) + s2.clone();
            let diff = z_t.clone() - mk * alpha.clone();
            logits.push(
                (diff.clone().square().sum_dim(1) / var.clone()) * -0.5
                    - var.clone().log() * (0.5 * d as f64)
                    + m.weights[k].ln(),
            );
            scores.push(-diff / var);
        }
        let r = burn::tensor::activation::softmax(Tensor::cat(logits, 1), 1);
        (scores, r)
    }
}

/// (M32, M41) The mixture's components as classes: with label k < K the exact conditional
/// denoiser of component k, with the null label K (or none) the whole mixture's. The oracle of
/// classifier-free guidance.
pub struct LabelledMixtureOracle(pub MixtureOracle);

impl Denoiser for LabelledMixtureOracle {
    fn prediction(&self) -> Prediction {
        Prediction::Eps
    }
    fn process(&self) -> Process {
        self.0.process
    }
    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>, cond: Cond) -> Tensor<2> {
        let (scores, r) = self.0.component_scores(&z_t, gamma.clone());
        let (_, sigma) = self.0.process.alpha_sigma(gamma);
        let k = scores.len();
        let b = z_t.dims()[0];
        let device = z_t.device();
        // The score of the row's own component, or the responsibility-weighted mixture score.
        let mut score = Tensor::<2>::zeros(z_t.dims(), &device);
        for (j, s) in scores.into_iter().enumerate() {
            let w: Vec<f32> = (0..b)
                .map(|i| match cond.map(|l| l[i] as usize) {
                    Some(c) if c < k => f32::from(c == j),
                    _ => -1.0,
                })
                .collect();
            let w = Tensor::<2>::from_data(TensorData::new(w, [b, 1]), &device);
            // −1 marks "mixture": use r_j there.
            let mix = w.clone().lower_elem(0.0).float();
            let weight = w.clamp_min(0.0) + mix * r.clone().narrow(1, j, 1);
            score = score + s * weight;
        }
        -(score * sigma)
    }
}

/// (M32, M41) The exact ∇log p(k | z_t) = ∇log p(z_t | k) − ∇log p(z_t) of a mixture's
/// components: the oracle of classifier guidance.
#[derive(Clone)]
pub struct MixtureClassOracle(pub MixtureOracle);

impl crate::diffusion::guidance::ClassGradient for MixtureClassOracle {
    fn grad_log_prob(&self, z_t: Tensor<2>, gamma: Tensor<1>, labels: &[u32]) -> Tensor<2> {
        let (scores, r) = self.0.component_scores(&z_t, gamma);
        let b = z_t.dims()[0];
        let device = z_t.device();
        let mut g = Tensor::<2>::zeros(z_t.dims(), &device);
        for (j, s) in scores.into_iter().enumerate() {
            let own: Vec<f32> = labels.iter().map(|&c| f32::from(c as usize == j)).collect();
            let own = Tensor::<2>::from_data(TensorData::new(own, [b, 1]), &device);
            g = g + s * (own - r.clone().narrow(1, j, 1));
        }
        g
    }

    fn classes(&self) -> usize {
        self.0.mixture.weights.len()
    }

    fn replica(&self) -> Box<dyn crate::diffusion::guidance::ClassGradient> {
        Box::new(self.clone())
    }
}
