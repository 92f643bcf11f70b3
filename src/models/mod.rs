//! The models, each a latent-variable model trained by its ELBO (MATH.md §1–§6).

pub mod diffusion;
pub mod vae;

use burn::tensor::Tensor;

use crate::elbo::ElboTerms;
use crate::rng::Rng;
use crate::Result;

/// A latent-variable model: per-example terms of its ELBO, and samples. VAE, HVAE and VDM all
/// implement it: the unified perspective in code.
pub trait LatentVariableModel {
    /// (M2) Per-example terms of the negative ELBO, in nats, of a model-space batch.
    ///
    /// # Shapes
    /// `x`: `[B, D]` → each term `[B]`.
    fn elbo(&self, x: Tensor<2>, rng: &mut Rng) -> Result<ElboTerms>;

    /// `n` samples in data units, `[n, D]` (for binary images: pixel probabilities).
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor<2>>;
}
