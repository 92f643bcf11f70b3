//! Samplers: a step on an immutable time grid behind one trait ([`Sampler`]), one file each, and
//! one registry of them ([`SamplerKind`], whose variants carry each sampler's own settings, as
//! diffusers' schedulers do). The [`driver`] below draws samples of any diffusion model with any
//! of them: the prior draw, chunks over threads with their own noise streams, guidance, and the
//! count of network evaluations. A new sampler is one file here and one line in the registry.
//!
//! The grid is `steps` times walked from high noise to low, then one last step to the clean end
//! (γ = −∞: α = 1, σ = 0), so sampling ends at the model's x̂_0, as diffusers does with
//! `set_alpha_to_one`. On a continuous schedule the times are t_i = i/steps (i = steps … 1); on a
//! DDPM table of T steps they are its own steps, diffusers' "leading" spacing
//! (k · ⌊T/steps⌋, k = steps − 1 … 0). A step maps z_t to z_s using γ(t), γ(s) and the denoiser's
//! process, so samplers work for variance-preserving and exploding processes alike.

pub mod driver;

use burn::tensor::{Tensor, TensorData};

pub use driver::{Drawn, SampleOptions};

use crate::diffusion::{Cond, Denoiser, Schedule};
use crate::rng::Rng;
use crate::{Error, Result};

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

    /// Network evaluations for a walk of `steps` steps (`None` where the sampler chooses its
    /// own steps, as RK45 does).
    fn nfe(&self, steps: usize) -> Option<usize> {
        Some(steps.max(1))
    }

    /// The levels of a walk of `steps` steps between the model's γ(1) and γ(0), where the
    /// sampler has its own spacing (EDM's ρ = 7); `None`: the model's schedule's grid.
    fn grid(&self, _gamma_max: f64, _gamma_min: f64, _steps: usize) -> Option<Vec<f64>> {
        None
    }
}

/// The settings a caller can give any sampler (the command line's `--eta`, `--snr`, `--rtol`,
/// `--atol`); each sampler takes the ones it has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    /// DDIM's η (0: deterministic).
    pub eta: f64,
    /// The predictor–corrector sampler's signal-to-noise ratio.
    pub snr: f64,
    /// RK45's relative and absolute tolerances.
    pub rtol: f64,
    pub atol: f64,
    /// EDM's S_churn (0: deterministic), S_tmin, S_tmax and S_noise.
    pub churn: f64,
    pub s_tmin: f64,
    pub s_tmax: f64,
    pub s_noise: f64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            eta: 0.0,
            snr: 0.16,
            rtol: 1e-3,
            atol: 1e-3,
            churn: 0.0,
            s_tmin: 0.05,
            s_tmax: 50.0,
            s_noise: 1.003,
        }
    }
}

impl SamplerParams {
    /// Refuse values no sampler could use, naming the flag (whichever sampler is chosen: a bad
    /// flag is an error, not silently unused).
    pub fn validate(&self) -> Result<()> {
        if !(self.eta >= 0.0 && self.eta.is_finite()) {
            return Err(Error::Config("--eta must be a non-negative number".into()));
        }
        if !(self.snr > 0.0 && self.snr.is_finite()) {
            return Err(Error::Config("--snr must be a positive number".into()));
        }
        EdmSampler::configure(self).validate()?;
        crate::diffusion::ode::check_tolerances(self.rtol, self.atol)
    }
}

/// A sampler as the registry holds it: made from the caller's settings, checked, described.
pub trait Configure: Sampler + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// This sampler with the caller's settings.
    fn configure(p: &SamplerParams) -> Self;
    /// Refuse settings it cannot use, naming the flag.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// Its name and settings, in words.
    fn describe(&self) -> String;
}

macro_rules! samplers {
    ($( $(#[$doc:meta])* $variant:ident($module:ident :: $ty:ident) = $name:literal, )*) => {
        $(
            pub mod $module;
            pub use $module::$ty;
        )*

        /// A sampler with its settings: one variant per sampler of the registry.
        #[derive(Debug, Clone, PartialEq)]
        pub enum SamplerKind {
            $( $(#[$doc])* $variant($module::$ty), )*
        }

        impl SamplerKind {
            /// Every sampler's name, in registry order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// Its name (`--sampler NAME`).
            pub fn name(&self) -> &'static str {
                match self {
                    $(SamplerKind::$variant(_) => $name,)*
                }
            }

            /// The sampler named `name`, with the caller's settings.
            pub fn from_name(name: &str, p: &SamplerParams) -> Option<SamplerKind> {
                $(
                    if name == $name {
                        return Some(SamplerKind::$variant(<$module::$ty as Configure>::configure(p)));
                    }
                )*
                None
            }

            /// The sampler itself.
            pub fn sampler(&self) -> &(dyn Sampler + Sync) {
                match self {
                    $(SamplerKind::$variant(s) => s,)*
                }
            }

            /// Refuse settings it cannot use, naming the flag.
            pub fn validate(&self) -> Result<()> {
                match self {
                    $(SamplerKind::$variant(s) => s.validate(),)*
                }
            }

            /// Its name and settings, in words.
            pub fn describe(&self) -> String {
                match self {
                    $(SamplerKind::$variant(s) => s.describe(),)*
                }
            }
        }
    };
}

// The samplers. A new sampler: its file in this folder, and one line here (which also declares
// its module and names its type in this one).
samplers! {
    /// Ancestral sampling from p_θ(z_s | z_t) (M38).
    Ancestral(ancestral::Ancestral) = "ancestral",
    /// DDIM (M39); deterministic at η = 0.
    Ddim(ddim::Ddim) = "ddim",
    /// The reverse SDE by Euler–Maruyama (M35; first order: about 1,000 steps).
    EulerMaruyama(euler_maruyama::EulerMaruyama) = "euler-maruyama",
    /// Predictor–corrector: ancestral steps, each followed by one Langevin corrector step.
    Pc(pc::PredictorCorrector) = "pc",
    /// The probability-flow ODE (M36) by Heun's method (2 network evaluations per step).
    Heun(heun::Heun) = "heun",
    /// DPM-Solver++(2M) (M40): second-order multistep on the probability-flow ODE.
    DpmSolverPp(dpm_solver::DpmSolverPp2M) = "dpm-solver++",
    /// The probability-flow ODE (M36) by adaptive Runge–Kutta 4(5), which chooses its own steps.
    Rk45(rk45::Rk45) = "rk45",
    /// Annealed Langevin dynamics (M34) at an ncsn run's noise levels.
    AnnealedLangevin(langevin::AnnealedLangevin) = "annealed-langevin",
    /// Euler's method on the straight path (M48; equal to DDIM with η = 0).
    FlowEuler(flow_euler::FlowEuler) = "flow-euler",
    /// Heun's method on the straight path (M48; 2 network evaluations per step).
    FlowHeun(flow_heun::FlowHeun) = "flow-heun",
    /// EDM's sampler (M47): Heun on its ρ = 7 grid of σ, with optional churn (--churn).
    Edm(edm::EdmSampler) = "edm",
}

impl SamplerKind {
    /// The sampler named `name` with default settings.
    pub fn named(name: &str) -> Option<SamplerKind> {
        Self::from_name(name, &SamplerParams::default())
    }

    /// The sampler named `name`, or an error listing the names.
    pub fn parse(name: &str, p: &SamplerParams) -> Result<SamplerKind> {
        Self::from_name(name, p).ok_or_else(|| {
            Error::Config(format!(
                "no sampler '{name}'; the samplers are {}",
                Self::NAMES.join(", ")
            ))
        })
    }

    /// Network evaluations of a walk of `steps` steps (`None`: the sampler chooses its own
    /// steps, or they depend on the model; `elbo sample` reports the count it measured).
    pub fn nfe(&self, steps: usize) -> Option<usize> {
        self.sampler().nfe(steps)
    }
}

/// A sampler is written and read by its name (its settings are the caller's flags).
impl serde::Serialize for SamplerKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for SamplerKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        SamplerKind::named(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("no sampler '{name}'")))
    }
}

/// The steps of a walk over `gammas`: (index, γ_t, γ_s), the last with γ_s = −∞ (the clean end).
pub fn step_pairs(gammas: &[f64]) -> impl Iterator<Item = (usize, f64, f64)> + '_ {
    gammas.iter().enumerate().map(|(k, &gamma_t)| {
        let gamma_s = gammas.get(k + 1).copied().unwrap_or(f64::NEG_INFINITY);
        (k, gamma_t, gamma_s)
    })
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

/// [`eps_x0_at`] with a noise level per row (`gammas`, one per row of `z_t`, all finite): ε̂ and
/// the clipped x̂_0 with ε̂ recomputed from it, as every sampler step sees them.
pub fn eps_x0_rows(
    den: &dyn Denoiser,
    z_t: Tensor<2>,
    gammas: &[f64],
    cond: Cond,
) -> (Tensor<2>, Tensor<2>) {
    let b = gammas.len();
    let g = Tensor::from_data(
        TensorData::new(gammas.iter().map(|&v| v as f32).collect::<Vec<_>>(), [b]),
        &z_t.device(),
    );
    let e = crate::diffusion::eps_hat(den, z_t.clone(), g.clone(), cond);
    let (alpha, sigma) = den.process().alpha_sigma(g);
    let x0 = (z_t.clone() - e.clone() * sigma.clone()) / alpha.clone();
    match den.x0_bounds() {
        Some((lo, hi)) => {
            let x0 = x0.clamp(lo, hi);
            ((z_t - x0.clone() * alpha) / sigma, x0)
        }
        None => (e, x0),
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
