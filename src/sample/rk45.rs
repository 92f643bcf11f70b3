//! The probability-flow ODE (MATH.md M36) by adaptive Runge–Kutta 4(5).

use burn::tensor::Tensor;

use super::{eps_x0_at, Configure, Sampler, SamplerParams};
use crate::diffusion::ode::dormand_prince;
use crate::diffusion::{Cond, Denoiser};
use crate::rng::Rng;
use crate::Result;

/// The probability-flow ODE (M36) by the adaptive Runge–Kutta 4(5) of Dormand and Prince, with
/// error control per step: ‖y₅ − y₄‖_RMS / (atol + rtol · max(|y|, |y_new|)) ≤ 1 over the whole
/// batch. In x̄ = z/α against τ = log σ̄ (σ̄ = σ/α = e^{γ/2}) the ODE is dx̄/dτ = σ̄ ε̂(α x̄, γ),
/// integrated from the grid's first γ to its last; the last step to the clean end is x̂_0 there.
/// The grid's intermediate points are not visited: the solver chooses its own steps (the network
/// evaluations are counted by [`crate::sample::network_rows`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rk45 {
    pub rtol: f64,
    pub atol: f64,
}

impl Configure for Rk45 {
    fn configure(p: &SamplerParams) -> Self {
        Rk45 {
            rtol: p.rtol,
            atol: p.atol,
        }
    }
    fn validate(&self) -> Result<()> {
        crate::diffusion::ode::check_tolerances(self.rtol, self.atol)
    }
    fn describe(&self) -> String {
        format!(
            "RK45 (probability-flow ODE, adaptive; rtol {:e}, atol {:e})",
            self.rtol, self.atol
        )
    }
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

    fn nfe(&self, _steps: usize) -> Option<usize> {
        None
    }
}
