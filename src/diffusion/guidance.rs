//! Classifier-free guidance (MATH.md M43): a conditional denoiser steered towards its class,
//! ε̃(z, c) = (1 + w) ε̂(z, c) − w ε̂(z, ∅), where ∅ is the network's null class. At w = 0 it is
//! the conditional model itself. It is a [`Denoiser`], so every sampler uses it unchanged.

use burn::tensor::Tensor;

use super::{eps_hat, Cond, Denoiser, Prediction, Process};

/// A conditional denoiser with classifier-free guidance of weight `w` ≥ 0.
pub struct Guided<'a> {
    pub den: &'a dyn Denoiser,
    pub w: f64,
    /// The network's null class (the label that stands for "no label").
    pub null: u32,
}

impl Denoiser for Guided<'_> {
    fn prediction(&self) -> Prediction {
        Prediction::Eps
    }

    fn process(&self) -> Process {
        self.den.process()
    }

    fn x0_bounds(&self) -> Option<(f64, f64)> {
        self.den.x0_bounds()
    }

    /// # Shapes
    /// `z_t`: `[B, D]`, `gamma`: `[B]`, `cond`: B labels (none: the null class, unguided).
    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>, cond: Cond) -> Tensor<2> {
        let Some(labels) = cond else {
            return eps_hat(self.den, z_t, gamma, None);
        };
        let e_c = eps_hat(self.den, z_t.clone(), gamma.clone(), cond);
        if self.w == 0.0 {
            return e_c;
        }
        let null = vec![self.null; labels.len()];
        let e_u = eps_hat(self.den, z_t, gamma, Some(&null));
        e_c * (1.0 + self.w) - e_u * self.w
    }
}
