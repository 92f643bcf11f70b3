//! EDM's sampler (MATH.md M47; Karras et al. 2022, Algorithm 2): Heun's method on the
//! probability-flow ODE dx̄/dσ̄ = ε̂ in x̄ = z/α and σ̄ = σ/α = e^{γ/2}, on the grid
//! σ̄_i = (σ̄_max^{1/ρ} + i/(N − 1) (σ̄_min^{1/ρ} − σ̄_max^{1/ρ}))^ρ, i = 0 … N − 1, then σ̄_N = 0,
//! with ρ = 7 and the model's own σ̄_max = e^{γ(1)/2} and σ̄_min = e^{γ(0)/2}. Stochastic
//! "churn": before the step from σ̄_i with S_tmin ≤ σ̄_i ≤ S_tmax, noise raises the level to
//! σ̂ = σ̄_i (1 + g), g = min(S_churn/N, √2 − 1), by adding S_noise √(σ̂² − σ̄_i²) ξ to x̄; S_churn = 0
//! is the deterministic sampler. 2N − 1 network evaluations (the last step, to σ̄ = 0, is Euler's).

use burn::tensor::Tensor;

use super::{step_pairs, Configure, Heun, Sampler, SamplerParams};
use crate::diffusion::{Cond, Denoiser};
use crate::rng::{randn, Rng};
use crate::{Error, Result};

/// EDM's grid exponent ρ.
pub const EDM_RHO: f64 = 7.0;

/// The EDM sampler with its stochasticity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdmSampler {
    /// S_churn (0: deterministic).
    pub churn: f64,
    /// S_tmin, S_tmax: the σ̄ range where churn applies.
    pub s_tmin: f64,
    pub s_tmax: f64,
    /// S_noise, the added noise's inflation.
    pub s_noise: f64,
}

impl Configure for EdmSampler {
    fn configure(p: &SamplerParams) -> Self {
        EdmSampler {
            churn: p.churn,
            s_tmin: p.s_tmin,
            s_tmax: p.s_tmax,
            s_noise: p.s_noise,
        }
    }
    fn validate(&self) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        if !(ok(self.churn) && ok(self.s_tmin) && ok(self.s_noise) && self.s_tmax >= 0.0) {
            return Err(Error::Config(
                "--churn, --s-tmin, --s-tmax and --s-noise must be non-negative numbers".into(),
            ));
        }
        Ok(())
    }
    fn describe(&self) -> String {
        if self.churn > 0.0 {
            format!(
                "EDM (Heun, ρ = 7, S_churn = {}, S_tmin = {}, S_tmax = {}, S_noise = {})",
                self.churn, self.s_tmin, self.s_tmax, self.s_noise
            )
        } else {
            "EDM (Heun, ρ = 7, deterministic)".into()
        }
    }
}

/// EDM's N levels from γ_max down to γ_min (as γ = 2 ln σ̄), ρ = 7.
pub fn edm_grid(gamma_max: f64, gamma_min: f64, n: usize) -> Vec<f64> {
    let (a, b) = (
        (gamma_max / (2.0 * EDM_RHO)).exp(),
        (gamma_min / (2.0 * EDM_RHO)).exp(),
    );
    if n <= 1 {
        return vec![gamma_max];
    }
    (0..n)
        .map(|i| {
            let r = a + (b - a) * i as f64 / (n - 1) as f64;
            2.0 * EDM_RHO * r.ln()
        })
        .collect()
}

impl EdmSampler {
    /// g of the step from level γ in a walk of `n` steps.
    fn churn_at(&self, gamma: f64, n: usize) -> f64 {
        let sb = (0.5 * gamma).exp();
        if self.churn > 0.0 && sb >= self.s_tmin && sb <= self.s_tmax {
            (self.churn / n as f64).min(std::f64::consts::SQRT_2 - 1.0)
        } else {
            0.0
        }
    }

    /// Raise z from γ_t to the churned level: returns (z at γ̂, γ̂).
    fn churn_step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        n: usize,
        rng: &mut Rng,
    ) -> (Tensor<2>, f64) {
        let g = self.churn_at(gamma_t, n);
        if g == 0.0 {
            return (z_t, gamma_t);
        }
        let process = den.process();
        let sb = (0.5 * gamma_t).exp();
        let sb_hat = sb * (1.0 + g);
        let gamma_hat = 2.0 * sb_hat.ln();
        let (alpha_t, _) = process.alpha_sigma_f64(gamma_t);
        let (alpha_hat, _) = process.alpha_sigma_f64(gamma_hat);
        let [b, d] = z_t.dims();
        let noise = randn(rng, [b, d], &z_t.device())
            * (self.s_noise * (sb_hat * sb_hat - sb * sb).sqrt());
        ((z_t / alpha_t + noise) * alpha_hat, gamma_hat)
    }
}

impl Sampler for EdmSampler {
    /// One step without churn (a walk's own steps churn; see `sample_path`).
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        Heun.step(den, z_t, gamma_t, gamma_s, cond, rng)
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
        let n = gammas.len();
        let mut z = z;
        for (k, gamma_t, gamma_s) in step_pairs(gammas) {
            let (z_hat, gamma_hat) = self.churn_step(den, z, gamma_t, n, rng);
            z = Heun.step(den, z_hat, gamma_hat, gamma_s, cond, rng)?;
            progress(k + 1);
        }
        Ok(z)
    }

    fn nfe(&self, steps: usize) -> Option<usize> {
        Some(2 * steps.max(1) - 1)
    }

    fn grid(&self, gamma_max: f64, gamma_min: f64, steps: usize) -> Option<Vec<f64>> {
        Some(edm_grid(gamma_max, gamma_min, steps.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_karras_rho_7_from_sigma_max_to_sigma_min() {
        // σ_i = (80^{1/7} + i/(N−1)(0.002^{1/7} − 80^{1/7}))^7 (EDM's Eq. 5), N = 18.
        let (smax, smin, n) = (80.0f64, 0.002f64, 18usize);
        let g = edm_grid(2.0 * smax.ln(), 2.0 * smin.ln(), n);
        assert_eq!(g.len(), n);
        for (i, gi) in g.iter().enumerate() {
            let r = smax.powf(1.0 / 7.0)
                + i as f64 / (n - 1) as f64 * (smin.powf(1.0 / 7.0) - smax.powf(1.0 / 7.0));
            let want = r.powi(7);
            let got = (0.5 * gi).exp();
            assert!((got - want).abs() < 1e-10 * want, "σ_{i}: {got} vs {want}");
        }
    }
}
