//! `elbo`: train, evaluate and sample likelihood-based generative models (VAEs, hierarchical VAEs,
//! variational diffusion models) as what they all are: latent-variable models trained by
//! maximising the evidence lower bound, each reporting an honest bound on log p(x), term by term.
//!
//! Equations are cited by their numbers in `docs/MATH.md` (M1…M43).

pub mod compare;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod dist;
pub mod elbo;
pub mod error;
pub mod eval;
pub mod kernels;
pub mod limits;
pub mod models;
pub mod nn;
pub mod par;
pub mod report;
pub mod rng;
pub mod sample;
pub mod tour;
pub mod train;

pub use error::{Error, Result};
