//! Heun's method on the straight path (MATH.md M48): in z̃ = z/(α + σ) and t̃ = sigmoid(γ/2)
//! the probability-flow ODE is dz̃/dt̃ = û = ε̂ − x̂_0 ([`super::flow_euler`]); a step takes
//! Euler's predictor to t̃_s and averages the velocities at both ends.

use burn::tensor::Tensor;

use super::flow_euler::{path_coords, velocity};
use super::{Configure, Sampler, SamplerParams};
use crate::diffusion::{Cond, Denoiser};
use crate::rng::Rng;
use crate::Result;

/// Heun's method on the straight path (two network evaluations per step, one on the last).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowHeun;

impl Configure for FlowHeun {
    fn configure(_: &SamplerParams) -> Self {
        FlowHeun
    }
    fn describe(&self) -> String {
        "Heun on the straight path".into()
    }
}

impl Sampler for FlowHeun {
    fn step(
        &self,
        den: &dyn Denoiser,
        z_t: Tensor<2>,
        gamma_t: f64,
        gamma_s: f64,
        cond: Cond,
        _rng: &mut Rng,
    ) -> Result<Tensor<2>> {
        let (u_t, x0) = velocity(den, z_t.clone(), gamma_t, cond);
        if gamma_s == f64::NEG_INFINITY {
            return Ok(x0);
        }
        let (k_t, tt) = path_coords(den, gamma_t);
        let (k_s, ts) = path_coords(den, gamma_s);
        let zt = z_t / k_t;
        let pred = zt.clone() + u_t.clone() * (ts - tt);
        let (u_s, _) = velocity(den, pred * k_s, gamma_s, cond);
        Ok((zt + (u_t + u_s) * (0.5 * (ts - tt))) * k_s)
    }

    fn nfe(&self, steps: usize) -> Option<usize> {
        Some(2 * steps.max(1) - 1)
    }
}

