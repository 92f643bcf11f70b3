//! Annealed Langevin dynamics (MATH.md M34; Song & Ermon 2019, Algorithm 1): at each noise
//! level σ_i of the walk, from the largest down, `per_level` steps of
//! z ← z + c_i ∇log p_{σ_i}(z) + √(2 c_i) ξ with c_i = η σ_i² / σ_L², the score from the
//! denoiser by M20 (∇log p = −ε̂/σ); then x̂_0 at the last level (the denoising step of
//! Song & Ermon 2020, which the other samplers end with too).

use burn::tensor::Tensor;

use super::{eps_at, eps_x0_at, Configure, Sampler, SamplerParams};
use crate::diffusion::{Cond, Denoiser};
use crate::rng::{randn, Rng};
use crate::Result;

/// Annealed Langevin dynamics over the walk's levels. Its settings come from the model whose
/// levels it walks (an ncsn run fills them in when it plans a draw); made from the caller's
/// flags alone it has none yet (`per_level` 0: the model's default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnnealedLangevin {
    /// Langevin steps at each level (T; Song & Ermon: 100).
    pub per_level: usize,
    /// η of the step size c_i = η σ_i²/σ_L² (Song & Ermon: 2e-5 with σ_L = 0.01 on [0, 1] data).
    pub eta: f64,
    /// σ_L, the smallest level's noise (in the process's σ).
    pub sigma_last: f64,
}

impl Sampler for AnnealedLangevin {
    /// `per_level` Langevin steps at γ_t (γ_s is not visited: the next level starts there);
    /// at the clean end, x̂_0 at γ_t.
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        if gamma_s == f64::NEG_INFINITY {
            return Ok(eps_x0_at(den, z_t, gamma_t, cond).1);
        }
        Ok(self.level(den, z_t, gamma_t, cond, rng))
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
        let mut z = z;
        for (k, &gamma) in gammas.iter().enumerate() {
            z = self.level(den, z, gamma, cond, rng);
            progress(k + 1);
        }
        Ok(match gammas.last() {
            Some(&g) => eps_x0_at(den, z, g, cond).1,
            None => z,
        })
    }

    /// T steps per level and the final x̂_0.
    fn nfe(&self, steps: usize) -> Option<usize> {
        Some(steps.max(1) * self.per_level + 1)
    }
}

impl Configure for AnnealedLangevin {
    fn configure(_: &SamplerParams) -> Self {
        AnnealedLangevin {
            per_level: 0,
            eta: 0.0,
            sigma_last: 0.0,
        }
    }
    fn describe(&self) -> String {
        if self.per_level == 0 {
            "annealed Langevin dynamics".into()
        } else {
            format!(
                "annealed Langevin dynamics ({} steps per level)",
                self.per_level
            )
        }
    }
}

impl AnnealedLangevin {
    /// The Langevin steps at one level.
    fn level(
        &self,
        den: &dyn Denoiser,
        mut z: Tensor<2>,
        gamma: f64,
        cond: Cond,
        rng: &mut Rng,
    ) -> Tensor<2> {
        let [b, d] = z.dims();
        let device = z.device();
        let (_, sigma) = den.process().alpha_sigma_f64(gamma);
        let c = self.eta * (sigma / self.sigma_last).powi(2);
        for _ in 0..self.per_level {
            // c ∇log p = −(c/σ) ε̂ (M20).
            let e = eps_at(den, z.clone(), gamma, cond);
            z = z - e * (c / sigma) + randn(rng, [b, d], &device) * (2.0 * c).sqrt();
        }
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::Mixture;
    use crate::diffusion::oracle::MixtureOracle;
    use crate::diffusion::Process;
    use burn::tensor::Device;

    /// The fraction of samples whose most responsible component (at the data's own density) is
    /// each component.
    fn assignments(m: &Mixture, x: &[f32]) -> Vec<f64> {
        let mut counts = vec![0.0; m.weights.len()];
        let n = x.len() / 2;
        for r in x.chunks(2) {
            let best = (0..m.weights.len())
                .max_by(|&a, &b| {
                    let lp = |k: usize| {
                        let s2 = m.stds[k] * m.stds[k];
                        let d2 = (r[0] as f64 - m.means[k][0]).powi(2)
                            + (r[1] as f64 - m.means[k][1]).powi(2);
                        m.weights[k].ln() - d2 / (2.0 * s2) - s2.ln()
                    };
                    lp(a).total_cmp(&lp(b))
                })
                .unwrap_or(0);
            counts[best] += 1.0 / n as f64;
        }
        counts
    }

    #[test]
    fn annealed_langevin_with_the_oracle_score_recovers_the_mixing_weights() {
        // Song & Ermon's point: Langevin at one small σ cannot move mass between separated modes,
        // so it keeps the weights of wherever it starts; annealed from σ = 5 down to 0.01 it
        // recovers them. 2,000 samples from the VE prior N(0, 25 I), L = 10 levels, T = 100,
        // c_i = 0.2 σ_i² (η = 0.2 σ_L²). Each assigned fraction is within 0.04 of its weight:
        // ≥ 3.9 binomial standard errors (√(0.21/2000) = 0.010 for blobs2, 0.0074 for ring8),
        // with room for the dynamics' own bias.
        let dev = Device::flex();
        for name in ["blobs2", "ring8"] {
            let m = Mixture::named(name).unwrap();
            let oracle = MixtureOracle {
                mixture: m.clone(),
                process: Process::VarianceExploding,
            };
            let (s1, sl, levels) = (5.0f64, 0.01f64, 10);
            let gammas: Vec<f64> = (0..levels)
                .map(|i| {
                    let s = s1 * (sl / s1).powf(i as f64 / (levels - 1) as f64);
                    2.0 * s.ln()
                })
                .collect();
            let sampler = AnnealedLangevin {
                per_level: 100,
                eta: 0.2 * sl * sl,
                sigma_last: sl,
            };
            let mut rng = crate::rng::seeded(11);
            let z = randn(&mut rng, [2000, 2], &dev) * s1;
            let x = sampler
                .sample_path(&oracle, &gammas, z, None, &mut rng, &mut |_| {})
                .unwrap();
            let x: Vec<f32> = x.into_data().try_to_vec::<f32>().unwrap();
            let got = assignments(&m, &x);
            for (k, (g, w)) in got.iter().zip(&m.weights).enumerate() {
                assert!((g - w).abs() < 0.04, "{name} component {k}: {g:.3} vs {w}");
            }
            // and the samples are at the modes' own spread, not the prior's
            let var = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
            assert!(var < 6.0, "{name}: second moment {var}");
        }
        assert_eq!(
            AnnealedLangevin {
                per_level: 100,
                eta: 1.0,
                sigma_last: 1.0
            }
            .nfe(10),
            Some(1001)
        );
    }
}
