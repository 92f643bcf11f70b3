//! Euler's method on the straight path (MATH.md M48; Lipman et al. 2022, Liu et al. 2022). For
//! any process z_t = α x + σ ε, the rescaled z̃ = z/(α + σ) = (1 − t̃) x + t̃ ε lies on the straight
//! path at t̃ = σ/(α + σ) = sigmoid(γ/2), and the probability-flow ODE reads dz̃/dt̃ = û with
//! û = E[ε − x | z] = ε̂ − x̂_0: a flow-matching model's own velocity, and any diffusion model's
//! through the exact conversions. Euler's step on it is DDIM's (η = 0) exactly (Heun's is in
//! [`super::flow_heun`]).

use burn::tensor::Tensor;

use super::{eps_x0_at, Configure, Sampler, SamplerParams};
use crate::diffusion::{Cond, Denoiser};
use crate::rng::Rng;
use crate::Result;

/// (α + σ, t̃ = σ/(α + σ)) at γ: z̃ = z/(α + σ).
pub(super) fn path_coords(den: &dyn Denoiser, gamma: f64) -> (f64, f64) {
    let (a, s) = den.process().alpha_sigma_f64(gamma);
    (a + s, s / (a + s))
}

/// The velocity û = ε̂ − x̂_0 at z_t (x̂_0 clipped where the denoiser bounds its data), and x̂_0.
pub(super) fn velocity(
    den: &dyn Denoiser,
    z_t: Tensor<2>,
    gamma: f64,
    cond: Cond,
) -> (Tensor<2>, Tensor<2>) {
    let (e, x0) = eps_x0_at(den, z_t, gamma, cond);
    (e - x0.clone(), x0)
}

/// Euler's method on the straight path (one network evaluation per step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowEuler;

impl Configure for FlowEuler {
    fn configure(_: &SamplerParams) -> Self {
        FlowEuler
    }
    fn describe(&self) -> String {
        "Euler on the straight path".into()
    }
}

impl Sampler for FlowEuler {
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        _rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        let (u, x0) = velocity(den, z_t.clone(), gamma_t, cond);
        if gamma_s == f64::NEG_INFINITY {
            return Ok(x0);
        }
        let (k_t, tt) = path_coords(den, gamma_t);
        let (k_s, ts) = path_coords(den, gamma_s);
        Ok((z_t / k_t + u * (ts - tt)) * k_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::Mixture;
    use crate::diffusion::oracle::MixtureOracle;
    use crate::diffusion::schedule::LinearPath;
    use crate::diffusion::{Process, Schedule};
    use crate::sample::{sample_loop, Ddim};
    use burn::tensor::Device;

    #[test]
    fn euler_on_the_straight_path_is_ddim_for_every_process() {
        // Exact arithmetic makes the two steps one map (M48: z̃_s = x̂ + t̃_s û and
        // z̃_t = x̂ + t̃_t û); in f32 they agree to rounding, 1e-4 over 20 steps.
        let m = Mixture::named("ring8").unwrap();
        for process in [
            Process::VariancePreserving,
            Process::VarianceExploding,
            Process::Linear,
        ] {
            let oracle = MixtureOracle {
                mixture: m.clone(),
                process,
            };
            let sched = LinearPath {
                gamma_min: -10.0,
                gamma_max: 8.0,
            };
            let mut rng = crate::rng::seeded(3);
            let z = crate::rng::randn(&mut rng, [256, 2], &Device::flex());
            let z = z * process.prior_var(8.0).sqrt();
            let run = |s: &dyn Sampler| {
                let x = sample_loop(
                    s,
                    &oracle,
                    &Schedule::Fixed(&sched),
                    z.clone(),
                    20,
                    None,
                    &mut crate::rng::seeded(4),
                    &mut |_| {},
                )
                .unwrap();
                crate::elbo::to_f32(x).unwrap()
            };
            let (a, b) = (run(&FlowEuler), run(&Ddim { eta: 0.0 }));
            let worst = a
                .iter()
                .zip(&b)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{process:?}: Euler vs DDIM differ by {worst}");
        }
    }
}
