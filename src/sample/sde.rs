//! Score-based samplers (MATH.md M35–M36, M40) on the same time grid as the others: the reverse
//! SDE by Euler–Maruyama, the probability-flow ODE by Heun's method, and DPM-Solver++(2M). The
//! score is −ε̂/σ (M20); every step is written for z_t = α_t x + σ_t ε under either process.

use burn::tensor::Tensor;

use super::{eps_x0_at, step_pairs, Sampler};
use crate::diffusion::ode::dormand_prince;
use crate::diffusion::{Cond, Denoiser};
use crate::rng::{randn, Rng};
use crate::Result;

/// The reverse SDE dz = [f(z, t) − g(t)² ∇log p_t(z)] dt + g(t) dw̄ by Euler–Maruyama. With
/// f = ½ (d log α²/dt) z and g² = σ² dγ/dt (both processes), a step from t to s reads
/// z_s = z_t (1 − ½ log(α_t²/α_s²)) − σ_t Δγ ε̂ + σ_t √Δγ ξ, with Δγ = γ_t − γ_s (the step's
/// increments of log α² and γ standing for their derivatives times Δt). First order: it needs
/// many steps (about 1,000).
pub struct EulerMaruyama;

impl Sampler for EulerMaruyama {
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        let [b, d] = z_t.dims();
        let device = z_t.device();
        let (e, x0) = eps_x0_at(den, z_t.clone(), gamma_t, cond);
        if gamma_s == f64::NEG_INFINITY {
            return Ok(x0);
        }
        let process = den.process();
        let (alpha_t, sigma_t) = process.alpha_sigma_f64(gamma_t);
        let (alpha_s, _) = process.alpha_sigma_f64(gamma_s);
        let dg = gamma_t - gamma_s;
        let shrink = 1.0 - (alpha_t / alpha_s).ln(); // 1 − ½ log(α_t²/α_s²)
        Ok(z_t * shrink - e * (sigma_t * dg) + randn(rng, [b, d], &device) * (sigma_t * dg.sqrt()))
    }
}

/// The probability-flow ODE (M36) by Heun's second-order method. In x̄ = z/α and σ̄ = σ/α
/// = e^{γ/2} the ODE is dx̄/dσ̄ = ε̂ for either process (Karras et al. 2022); a step takes an
/// Euler predictor to s and averages the slopes at t and s. Two network evaluations per step, one
/// on the last (to σ̄ = 0, where Euler's step is x̂_0).
pub struct Heun;

impl Sampler for Heun {
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        _rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        let (e_t, x0) = eps_x0_at(den, z_t.clone(), gamma_t, cond);
        if gamma_s == f64::NEG_INFINITY {
            return Ok(x0);
        }
        let process = den.process();
        let (alpha_t, _) = process.alpha_sigma_f64(gamma_t);
        let (alpha_s, _) = process.alpha_sigma_f64(gamma_s);
        let (sb_t, sb_s) = ((0.5 * gamma_t).exp(), (0.5 * gamma_s).exp());
        let xb_t = z_t / alpha_t;
        let xb_pred = xb_t.clone() + e_t.clone() * (sb_s - sb_t);
        let (e_s, _) = eps_x0_at(den, xb_pred * alpha_s, gamma_s, cond);
        Ok((xb_t + (e_t + e_s) * (0.5 * (sb_s - sb_t))) * alpha_s)
    }

    fn nfe(&self, steps: usize) -> usize {
        2 * steps.max(1) - 1
    }
}

/// DPM-Solver++(2M) (M40): a second-order multistep solver of the probability-flow ODE in the
/// data prediction x̂_0, in λ = −γ/2 (log α/σ): with h_i = λ_i − λ_{i−1} and r = h_{i−1}/h_i,
/// z_i = (σ_i/σ_{i−1}) z_{i−1} − α_i (e^{−h_i} − 1) D_i, D_i = (1 + 1/(2r)) x̂_{i−1} − x̂_{i−2}/(2r)
/// (the first step and the last, to the clean end, use D_i = x̂_{i−1}). One network evaluation
/// per step.
pub struct DpmSolverPp2M;

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

/// Predictor–corrector (Song et al. 2021): an ancestral step to s (the predictor), then one
/// step of Langevin dynamics at s with the score −ε̂/σ_s (the corrector),
/// z ← z + ε ∇log p_s(z) + √(2ε) ξ, with ε = 2 (r ‖ξ‖/‖∇log p_s‖)² for the signal-to-noise ratio
/// r (`snr`; Song et al. use 0.16 on images), norms averaged over the batch's rows. Two network
/// evaluations per step, one on the last.
pub struct PredictorCorrector {
    pub snr: f64,
}

impl Sampler for PredictorCorrector {
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        let z = super::Ancestral.step(den, z_t, gamma_t, gamma_s, cond, rng)?;
        if gamma_s == f64::NEG_INFINITY {
            return Ok(z);
        }
        let [b, d] = z.dims();
        let (_, sigma_s) = den.process().alpha_sigma_f64(gamma_s);
        let (e, _) = eps_x0_at(den, z.clone(), gamma_s, cond);
        let score = e * (-1.0 / sigma_s);
        let xi = randn(rng, [b, d], &z.device());
        let norm = |t: Tensor<2>| -> f64 {
            crate::elbo::to_f64(t.square().sum_dim(1).sqrt().mean())
                .ok()
                .and_then(|v| v.first().copied())
                .unwrap_or(0.0)
        };
        let (g, n) = (norm(score.clone()), norm(xi.clone()));
        if !(g > 0.0 && g.is_finite()) {
            return Ok(z);
        }
        let eps = 2.0 * (self.snr * n / g).powi(2);
        Ok(z + score * eps + xi * (2.0 * eps).sqrt())
    }

    fn nfe(&self, steps: usize) -> usize {
        2 * steps.max(1) - 1
    }
}

/// The probability-flow ODE (M36) by the adaptive Runge–Kutta 4(5) of Dormand and Prince, with
/// error control per step: ‖y₅ − y₄‖_RMS / (atol + rtol · max(|y|, |y_new|)) ≤ 1 over the whole
/// batch. In x̄ = z/α against τ = log σ̄ (σ̄ = σ/α = e^{γ/2}) the ODE is dx̄/dτ = σ̄ ε̂(α x̄, γ),
/// integrated from the grid's first γ to its last; the last step to the clean end is x̂_0 there.
/// The grid's intermediate points are not visited: the solver chooses its own steps (the network
/// evaluations are counted by [`crate::sample::network_rows`]).
#[derive(Debug, Clone, Copy)]
pub struct Rk45 {
    pub rtol: f64,
    pub atol: f64,
}

impl Rk45 {
    /// x̄ at τ₁ from x̄ at τ₀ (τ₁ < τ₀), adaptively.
    fn integrate(
        &self,
        den: &dyn Denoiser,
        y: Tensor<2>,
        tau0: f64,
        tau1: f64,
        cond: Cond,
    ) -> Result<Tensor<2>> {
        // dx̄/dτ at τ for x̄ (a network evaluation).
        let mut f = |xb: &Tensor<2>, tau: f64| {
            let gamma = 2.0 * tau;
            let (alpha, _) = den.process().alpha_sigma_f64(gamma);
            let (e, _) = eps_x0_at(den, xb.clone() * alpha, gamma, cond);
            e * tau.exp()
        };
        Ok(dormand_prince(&mut f, y, tau0, tau1, self.rtol, self.atol)?.0)
    }
}

impl Sampler for Rk45 {
    /// One solve from γ_t to γ_s (to the clean end: x̂_0 at γ_t).
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        _rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        if gamma_s == f64::NEG_INFINITY {
            return Ok(eps_x0_at(den, z_t, gamma_t, cond).1);
        }
        let process = den.process();
        let (alpha_t, _) = process.alpha_sigma_f64(gamma_t);
        let (alpha_s, _) = process.alpha_sigma_f64(gamma_s);
        let xb = self.integrate(den, z_t / alpha_t, 0.5 * gamma_t, 0.5 * gamma_s, cond)?;
        Ok(xb * alpha_s)
    }

    fn sample_path(
        &self,
        den: &dyn Denoiser,
        gammas: &[f64],
        z: Tensor<2>,
        cond: Cond,
        rng: &mut Rng,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Tensor<2>> {
        let (Some(&first), Some(&last)) = (gammas.first(), gammas.last()) else {
            return Ok(z);
        };
        let z = self.step(den, z, first, last, cond, rng)?;
        let x0 = self.step(den, z, last, f64::NEG_INFINITY, cond, rng)?;
        progress(gammas.len());
        Ok(x0)
    }
}
