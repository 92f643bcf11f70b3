//! DPM-Solver++(2M) (MATH.md M40) on the probability-flow ODE.

use burn::tensor::Tensor;

use super::{eps_x0_at, step_pairs, Configure, Sampler, SamplerParams};
use crate::diffusion::{Cond, Denoiser};
use crate::rng::Rng;
use crate::Result;

/// DPM-Solver++(2M) (M40): a second-order multistep solver of the probability-flow ODE in the
/// data prediction x̂_0, in λ = −γ/2 (log α/σ): with h_i = λ_i − λ_{i−1} and r = h_{i−1}/h_i,
/// z_i = (σ_i/σ_{i−1}) z_{i−1} − α_i (e^{−h_i} − 1) D_i, D_i = (1 + 1/(2r)) x̂_{i−1} − x̂_{i−2}/(2r)
/// (the first step and the last, to the clean end, use D_i = x̂_{i−1}). One network evaluation
/// per step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpmSolverPp2M;

impl Configure for DpmSolverPp2M {
    fn configure(_: &SamplerParams) -> Self {
        DpmSolverPp2M
    }
    fn describe(&self) -> String {
        "DPM-Solver++(2M)".into()
    }
}

impl Sampler for DpmSolverPp2M {
    /// A single step (first order: DDIM η = 0); `sample_path` carries the history that makes
    /// it second order.
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        _rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        let (_, x0) = eps_x0_at(den, z_t.clone(), gamma_t, cond);
        Ok(first_order(den, z_t, x0, gamma_t, gamma_s))
    }

    fn sample_path(
        &self,
        den: &dyn Denoiser,
        gammas: &[f64],
        z: Tensor<2>,
        cond: Cond,
        _rng: &mut Rng,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Tensor<2>> {
        let mut z = z;
        let mut prev: Option<(Tensor<2>, f64)> = None; // (x̂ at the previous node, its h)
        for (k, gamma_t, gamma_s) in step_pairs(gammas) {
            let (_, x0) = eps_x0_at(den, z.clone(), gamma_t, cond);
            // h = λ_s − λ_t with λ = −γ/2 (infinite at the clean end, whose step is x̂_0).
            let h = 0.5 * (gamma_t - gamma_s);
            let d = match &prev {
                Some((x_prev, h_prev)) if h.is_finite() => {
                    let r = h_prev / h;
                    x0.clone() * (1.0 + 0.5 / r) - x_prev.clone() * (0.5 / r)
                }
                _ => x0.clone(),
            };
            z = first_order(den, z, d, gamma_t, gamma_s);
            prev = Some((x0, h));
            progress(k + 1);
        }
        Ok(z)
    }
}

/// z_s = (σ_s/σ_t) z_t − α_s (e^{−h} − 1) x̂_0, h = (γ_t − γ_s)/2: the first-order step of the
/// data-prediction solver (identical to DDIM with η = 0); x̂_0 itself at the clean end.
fn first_order(
    den: &dyn Denoiser,
    z_t: Tensor<2>,
    x0: Tensor<2>,
    gamma_t: f64,
    gamma_s: f64,
) -> Tensor<2> {
    if gamma_s == f64::NEG_INFINITY {
        return x0;
    }
    let process = den.process();
    let (_, sigma_t) = process.alpha_sigma_f64(gamma_t);
    let (alpha_s, sigma_s) = process.alpha_sigma_f64(gamma_s);
    let h = 0.5 * (gamma_t - gamma_s);
    z_t * (sigma_s / sigma_t) - x0 * (alpha_s * (-h).exp_m1())
}
