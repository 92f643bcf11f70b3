//! Samplers: a step on an immutable time grid behind one trait, and one loop for all.
//!
//! The grid is `steps` times walked from high noise to low, then one last step to the clean end
//! (γ = −∞: α = 1, σ = 0), so sampling ends at the model's x̂_0, as diffusers does with
//! `set_alpha_to_one`. On a continuous schedule the times are t_i = i/steps (i = steps … 1); on a
//! DDPM table of T steps they are its own steps, diffusers' "leading" spacing
//! (k · ⌊T/steps⌋, k = steps − 1 … 0). A step maps z_t to z_s using γ(t), γ(s) and the denoiser's
//! process, so samplers work for variance-preserving and exploding processes alike.

pub mod ancestral;
pub mod ddim;
pub mod langevin;
pub mod sde;

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub use ancestral::Ancestral;
pub use ddim::Ddim;
pub use langevin::AnnealedLangevin;
pub use sde::{DpmSolverPp2M, EulerMaruyama, Heun, PredictorCorrector, Rk45};

use crate::diffusion::{Cond, Denoiser, Schedule};
use crate::rng::Rng;
use crate::Result;

/// One step of a reverse process.
pub trait Sampler {
    /// z_s from z_t, given γ(t) and γ(s) with s < t (γ(s) = −∞: the clean end, x̂_0).
    ///
    /// # Shapes
    /// `z_t`: `[B, D]` → `[B, D]`.
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<Tensor<2>>;

    /// The whole walk over `gammas` (high noise to low; the clean end follows the last), from
    /// z at the first. By default one `step` after another; multistep solvers override it.
    fn sample_path(
        &self,
        den: &dyn Denoiser,
        gammas: &[f64],
        z: Tensor<2>,
        cond: Cond,
        rng: &mut Rng,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Tensor<2>> {
        let mut z = z;
        for (k, gamma_t, gamma_s) in step_pairs(gammas) {
            z = self.step(den, z, gamma_t, gamma_s, cond, rng)?;
            progress(k + 1);
        }
        Ok(z)
    }

    /// Network evaluations for a walk of `steps` steps.
    fn nfe(&self, steps: usize) -> usize {
        steps.max(1)
    }
}

/// The steps of a walk over `gammas`: (index, γ_t, γ_s), the last with γ_s = −∞ (the clean end).
pub fn step_pairs(gammas: &[f64]) -> impl Iterator<Item = (usize, f64, f64)> + '_ {
    gammas.iter().enumerate().map(|(k, &gamma_t)| {
        let gamma_s = gammas.get(k + 1).copied().unwrap_or(f64::NEG_INFINITY);
        (k, gamma_t, gamma_s)
    })
}

/// Sampler choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    /// Ancestral sampling from p_θ(z_s | z_t) (M38).
    Ancestral,
    /// DDIM (M39); deterministic at η = 0.
    Ddim,
    /// The reverse SDE by Euler–Maruyama (M35; first order: about 1,000 steps).
    EulerMaruyama,
    /// Predictor–corrector: ancestral steps, each followed by one Langevin corrector step
    /// (signal-to-noise ratio `--snr`; 2 network evaluations per step).
    Pc,
    /// The probability-flow ODE (M36) by Heun's method (2 network evaluations per step).
    Heun,
    /// DPM-Solver++(2M) (M40): second-order multistep on the probability-flow ODE (10–50 steps).
    #[value(name = "dpm-solver++")]
    #[serde(rename = "dpm-solver++")]
    DpmSolverPp,
    /// The probability-flow ODE (M36) by adaptive Runge–Kutta 4(5) (Dormand–Prince) with
    /// `--rtol/--atol`; it chooses its own steps (`--steps` sets only where it starts and ends).
    Rk45,
    /// Annealed Langevin dynamics (M34) at an ncsn run's noise levels, `--steps` Langevin steps
    /// at each (default: the run's ncsn.langevin_steps).
    AnnealedLangevin,
}

impl SamplerKind {
    /// Network evaluations of a walk of `steps` steps by this sampler (`None` for RK45, which
    /// chooses its own steps; `elbo sample` reports the count it measured).
    pub fn nfe(self, steps: usize) -> Option<usize> {
        match self {
            SamplerKind::Heun => Some(Heun.nfe(steps)),
            SamplerKind::Pc => Some(PredictorCorrector { snr: 0.16 }.nfe(steps)),
            SamplerKind::Rk45 | SamplerKind::AnnealedLangevin => None,
            _ => Some(steps.max(1)),
        }
    }

    /// Its name, in words.
    pub fn describe(self, eta: f64) -> String {
        match self {
            SamplerKind::Ancestral => "ancestral".into(),
            SamplerKind::Ddim => format!("DDIM (η = {eta})"),
            SamplerKind::EulerMaruyama => "Euler–Maruyama (reverse SDE)".into(),
            SamplerKind::Heun => "Heun (probability-flow ODE)".into(),
            SamplerKind::Pc => "predictor–corrector (ancestral + Langevin)".into(),
            SamplerKind::DpmSolverPp => "DPM-Solver++(2M)".into(),
            SamplerKind::Rk45 => "RK45 (probability-flow ODE, adaptive)".into(),
            SamplerKind::AnnealedLangevin => "annealed Langevin dynamics".into(),
        }
    }
}

/// Rows evaluated by denoising networks in this process (every sampler step of every chunk):
/// network evaluations per sample are a difference of two readings divided by the samples.
static NETWORK_ROWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    static UNCOUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Count `rows` rows through a denoising network (called by the networks' `predict`).
pub fn count_network_rows(rows: usize) {
    if !UNCOUNTED.with(|u| u.get()) {
        NETWORK_ROWS.fetch_add(rows as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Run `f` on this thread without counting its network rows (a timing probe).
pub fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    UNCOUNTED.with(|u| u.set(true));
    let r = f();
    UNCOUNTED.with(|u| u.set(false));
    r
}

/// Rows evaluated by denoising networks so far.
pub fn network_rows() -> u64 {
    NETWORK_ROWS.load(std::sync::atomic::Ordering::Relaxed)
}

/// ε̂ for a whole batch at one noise level γ.
pub fn eps_at(den: &dyn Denoiser, z_t: Tensor<2>, gamma: f64, cond: Cond) -> Tensor<2> {
    let b = z_t.dims()[0];
    let g = Tensor::from_data(TensorData::new(vec![gamma as f32; b], [b]), &z_t.device());
    crate::diffusion::eps_hat(den, z_t, g, cond)
}

/// ε̂ and x̂_0 = (z_t − σ_t ε̂)/α_t at one noise level (M19). When the denoiser states bounds
/// for its data (8-bit images: [−1, 1]), x̂_0 is clipped to them and ε̂ recomputed from the clipped
/// x̂_0, ε̂ = (z_t − α_t x̂_0)/σ_t, so every sampler step stays consistent with the clipped
/// prediction (DDPM's `clip_denoised`; it changes samples, never the bound).
pub fn eps_x0_at(
    den: &dyn Denoiser,
    z_t: Tensor<2>,
    gamma: f64,
    cond: Cond,
) -> (Tensor<2>, Tensor<2>) {
    let e = eps_at(den, z_t.clone(), gamma, cond);
    let (alpha, sigma) = den.process().alpha_sigma_f64(gamma);
    let x0 = (z_t.clone() - e.clone() * sigma) / alpha;
    match den.x0_bounds() {
        Some((lo, hi)) if sigma > 0.0 => {
            let x0 = x0.clamp(lo, hi);
            let e = (z_t - x0.clone() * alpha) / sigma;
            (e, x0)
        }
        _ => (e, x0),
    }
}

/// The times a sampler visits, from high noise to low (the final step to the clean end follows
/// the last): `steps` of them, on the table's own steps for a DDPM schedule of T steps (at most T).
pub fn time_grid(table_steps: Option<usize>, steps: usize) -> Vec<f64> {
    let n = steps.max(1);
    match table_steps {
        Some(t) if t >= 2 => {
            let n = n.min(t);
            let ratio = t / n;
            (0..n)
                .rev()
                .map(|k| (k * ratio) as f64 / (t - 1) as f64)
                .collect()
        }
        _ => (1..=n).rev().map(|i| i as f64 / n as f64).collect(),
    }
}

/// Walk z from the first time of the grid to the clean end in `steps` steps; returns x̂_0 in model
/// space. `progress` is told each step done.
///
/// ```
/// use burn::tensor::Device;
/// use elbo::diffusion::oracle::GaussianOracle;
/// use elbo::diffusion::{schedule::LinearGamma, Schedule};
/// use elbo::sample::{sample_loop, DpmSolverPp2M};
///
/// // The exact denoiser of N(0, 0.5 I) data: DPM-Solver++ in 25 steps draws variance ≈ 0.5.
/// let mut rng = elbo::rng::seeded(0);
/// let z = elbo::rng::randn(&mut rng, [4000, 2], &Device::flex());
/// let sched = LinearGamma { gamma_min: -10.0, gamma_max: 10.0 };
/// let x = sample_loop(&DpmSolverPp2M, &GaussianOracle::vp(0.5), &Schedule::Fixed(&sched),
///                     z, 25, None, &mut rng, &mut |_| {})?;
/// let v = elbo::elbo::to_f32(x)?;
/// let var = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64;
/// assert!((var - 0.5).abs() < 0.04, "{var}");
/// # Ok::<(), elbo::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn sample_loop(
    sampler: &dyn Sampler,
    den: &dyn Denoiser,
    sched: &Schedule,
    z1: Tensor<2>,
    steps: usize,
    cond: Cond,
    rng: &mut Rng,
    progress: &mut dyn FnMut(usize),
) -> Result<Tensor<2>> {
    let grid = time_grid(sched.table_steps(), steps);
    let gammas: Vec<f64> = grid.iter().map(|&t| sched.gamma_f64(t)).collect();
    sampler.sample_path(den, &gammas, z1, cond, rng, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_walk_down_to_the_last_step() {
        assert_eq!(time_grid(None, 4), vec![1.0, 0.75, 0.5, 0.25]);
        // DDPM table of 1000 steps, 50 sampling steps: 980, 960, …, 0 (as node t = i/999).
        let g = time_grid(Some(1000), 50);
        assert_eq!(g.len(), 50);
        assert_eq!((g[0] * 999.0).round(), 980.0);
        assert_eq!(g[49], 0.0);
        // More sampling steps than the table has: every step once.
        assert_eq!(time_grid(Some(10), 50).len(), 10);
    }
}
