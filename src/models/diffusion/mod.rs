//! Diffusion as a hierarchical VAE with a fixed encoder (MATH.md §4–§6): schedules, the forward
//! process, parameterisations, the VDM and its ELBO, and analytic oracles.

pub mod oracle;
pub mod param;
pub mod process;
pub mod schedule;
pub mod vdm;

use burn::tensor::{Device, Tensor, TensorData};

pub use param::Prediction;
pub use schedule::{NoiseSchedule, ScheduleConfig, ScheduleKind};

use crate::nn::monotone::LearnedSchedule;

/// Something that predicts from a noisy z_t at noise level γ_t: a network, or an analytic
/// oracle whose right answer is known (M31, M32), so every estimator and sampler can be run on it.
pub trait Denoiser {
    /// What `predict` returns.
    fn prediction(&self) -> Prediction;

    /// # Shapes
    /// `z_t`: `[B, D]`, `gamma` (γ_t = −log SNR per row): `[B]` → `[B, D]`.
    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>) -> Tensor<2>;
}

/// (M25) α = √sigmoid(−γ), σ = √sigmoid(γ), as `[B, 1]` columns.
pub fn alpha_sigma(gamma: Tensor<1>) -> (Tensor<2>, Tensor<2>) {
    use burn::tensor::activation::sigmoid;
    let g = gamma.unsqueeze_dim::<2>(1);
    (sigmoid(-g.clone()).sqrt(), sigmoid(g).sqrt())
}

/// ε̂ from any denoiser (its output converted exactly, M18–M21).
pub fn eps_hat<D: Denoiser + ?Sized>(den: &D, z_t: Tensor<2>, gamma: Tensor<1>) -> Tensor<2> {
    let out = den.predict(z_t.clone(), gamma.clone());
    let (alpha, sigma) = alpha_sigma(gamma);
    den.prediction().to_eps(out, z_t, alpha, sigma)
}

/// expm1(d) = e^d − 1 without cancellation for small d: 2 sinh(d/2) e^{d/2} (exact identity).
pub fn expm1_tensor(d: Tensor<1>) -> Tensor<1> {
    let h = d * 0.5;
    h.clone().sinh() * h.exp() * 2.0
}

/// A schedule as the ELBO needs it on a batch: fixed (f64, as constants) or learned (tensors
/// with gradients).
pub enum Schedule<'a> {
    Fixed(&'a dyn NoiseSchedule),
    Learned(&'a LearnedSchedule),
}

fn col(v: Vec<f64>, device: &Device) -> Tensor<1> {
    let n = v.len();
    Tensor::from_data(
        TensorData::new(v.into_iter().map(|x| x as f32).collect::<Vec<_>>(), [n]),
        device,
    )
}

impl Schedule<'_> {
    /// γ(t) and γ'(t) for times `t`, `[N]` each.
    pub fn gamma(&self, t: &[f64], device: &Device) -> (Tensor<1>, Tensor<1>) {
        match self {
            Schedule::Fixed(s) => (
                col(t.iter().map(|&u| s.gamma(u)).collect(), device),
                col(t.iter().map(|&u| s.dgamma_dt(u)).collect(), device),
            ),
            Schedule::Learned(l) => l.gamma(col(t.to_vec(), device)),
        }
    }

    /// expm1(γ(t) − γ(s)) for pairs of times, `[N]`: in f64 for fixed schedules.
    pub fn expm1_diff(&self, t: &[f64], s: &[f64], device: &Device) -> Tensor<1> {
        match self {
            Schedule::Fixed(sc) => col(
                t.iter()
                    .zip(s)
                    .map(|(&a, &b)| (sc.gamma(a) - sc.gamma(b)).exp_m1())
                    .collect(),
                device,
            ),
            Schedule::Learned(_) => {
                let (gt, _) = self.gamma(t, device);
                let (gs, _) = self.gamma(s, device);
                expm1_tensor(gt - gs)
            }
        }
    }

    /// γ(0) and γ(1), `[1]` each.
    pub fn endpoints(&self, device: &Device) -> (Tensor<1>, Tensor<1>) {
        match self {
            Schedule::Fixed(s) => (
                col(vec![s.gamma(0.0)], device),
                col(vec![s.gamma(1.0)], device),
            ),
            Schedule::Learned(l) => l.endpoints(),
        }
    }

    /// γ(t) as a number (for samplers and reports).
    pub fn gamma_f64(&self, t: f64) -> f64 {
        match self {
            Schedule::Fixed(s) => s.gamma(t),
            Schedule::Learned(l) => {
                let d = Device::flex();
                let (g, _) = l.gamma(col(vec![t], &d));
                let v: f32 = g.into_scalar();
                v as f64
            }
        }
    }
}
