//! Samplers: a step on an immutable time grid behind one trait, and one loop for all.
//!
//! The grid has `steps` intervals, t_i = i/steps, walked from t = 1 down to t = 0; a step maps
//! z_t to z_s (s < t) using γ(t) and γ(s). The result is z_0.

pub mod ancestral;
pub mod ddim;

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub use ancestral::Ancestral;
pub use ddim::Ddim;

use crate::models::diffusion::{Denoiser, Schedule};
use crate::rng::Rng;
use crate::Result;

/// One step of a reverse process.
pub trait Sampler {
    /// z_s from z_t, given γ(t) and γ(s) with s < t.
    ///
    /// # Shapes
    /// `z_t`: `[B, D]` → `[B, D]`.
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        rng: &mut Rng,
    ) -> Tensor<2>;
}

/// Sampler choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    /// Ancestral sampling from p_θ(z_s | z_t) (M38).
    Ancestral,
    /// DDIM (M39); deterministic at η = 0.
    Ddim,
}

/// ε̂ for a whole batch at one noise level γ.
pub fn eps_at(den: &dyn Denoiser, z_t: Tensor<2>, gamma: f64) -> Tensor<2> {
    let b = z_t.dims()[0];
    let g = Tensor::from_data(TensorData::new(vec![gamma as f32; b], [b]), &z_t.device());
    crate::models::diffusion::eps_hat(den, z_t, g)
}

/// Walk z from t = 1 to t = 0 in `steps` equal steps; `progress` is told each step done.
pub fn sample_loop(
    sampler: &dyn Sampler,
    den: &dyn Denoiser,
    sched: &Schedule,
    z1: Tensor<2>,
    steps: usize,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize),
) -> Result<Tensor<2>> {
    let n = steps.max(1);
    let gammas: Vec<f64> = (0..=n)
        .map(|i| sched.gamma_f64(i as f64 / n as f64))
        .collect();
    let mut z = z1;
    for (k, i) in (1..=n).rev().enumerate() {
        z = sampler.step(den, z, gammas[i], gammas[i - 1], rng);
        progress(k + 1);
    }
    Ok(z)
}
