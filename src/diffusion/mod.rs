//! Diffusion mathematics shared by every diffusion model, estimator and sampler (MATH.md §4–§7):
//! noise schedules, the forward process (variance preserving or exploding), the four
//! parameterisations, the diffusion ELBO, and analytic oracles. Nothing here knows a model or the
//! training loop: models (`models::vdm`) and samplers (`sample`) are built on it.
//!
//! | code | math |
//! | --- | --- |
//! | `gamma` | γ_t = −log SNR(t) (M25) |
//! | `alpha`, `sigma` | α_t, σ_t of z_t = α_t x + σ_t ε, from the [`Process`] |
//! | `cond` | class labels of the rows, or none (M41–M43) |

pub mod elbo;
pub mod guidance;
pub mod ode;
pub mod oracle;
pub mod param;
pub mod process;
pub mod schedule;
pub mod weighting;

use burn::tensor::Tensor;

pub use param::Prediction;
pub use process::Process;
pub use schedule::{NoiseSchedule, Schedule, ScheduleConfig, ScheduleKind};

/// Conditioning of a batch: one class label per row, or none (unconditional). A conditional
/// network reads a missing label as its null class.
pub type Cond<'a> = Option<&'a [u32]>;

/// Something that predicts from a noisy z_t at noise level γ_t: a network, or an analytic
/// oracle whose right answer is known (M31, M32), so every estimator and sampler can be run on it.
pub trait Denoiser {
    /// What `predict` returns.
    fn prediction(&self) -> Prediction;

    /// The forward process z_t = α_t x + σ_t ε the prediction refers to.
    fn process(&self) -> Process {
        Process::VariancePreserving
    }

    /// # Shapes
    /// `z_t`: `[B, D]`, `gamma` (γ_t = −log SNR per row): `[B]`, `cond`: B labels or none
    /// → `[B, D]`.
    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>, cond: Cond) -> Tensor<2>;

    /// Where the data live in model space, if bounded (8-bit images: [−1, 1]). Samplers clip
    /// their x̂_0 to it (DDPM's `clip_denoised`); the ELBO never does.
    fn x0_bounds(&self) -> Option<(f64, f64)> {
        None
    }
}

/// ε̂ from any denoiser (its output converted exactly, M18–M21, with its process's α and σ).
pub fn eps_hat<D: Denoiser + ?Sized>(
    den: &D,
    z_t: Tensor<2>,
    gamma: Tensor<1>,
    cond: Cond,
) -> Tensor<2> {
    let out = den.predict(z_t.clone(), gamma.clone(), cond);
    let (alpha, sigma) = den.process().alpha_sigma(gamma);
    den.prediction().to_eps(out, z_t, alpha, sigma)
}

/// expm1(d) = e^d − 1 without cancellation for small d: 2 sinh(d/2) e^{d/2} (exact identity).
pub fn expm1_tensor(d: Tensor<1>) -> Tensor<1> {
    let h = d * 0.5;
    h.clone().sinh() * h.exp() * 2.0
}

/// Labels repeated for `n` consecutive rows each (the layout of `repeat` over time samples).
pub fn repeat_labels(cond: Cond, n: usize) -> Option<Vec<u32>> {
    cond.map(|l| l.iter().flat_map(|&y| std::iter::repeat_n(y, n)).collect())
}
