//! Probability distributions used by the models, as per-example log-densities and KLs
//! (summed over dimensions, shape `[B]`), plus the linear-Gaussian model whose evidence is exact.

pub mod bernoulli;
pub mod discretized;
pub mod gaussian;
pub mod linear_gaussian;

pub use bernoulli::{bernoulli_log_prob, softplus};
pub use gaussian::{std_normal_log_prob, DiagGaussian, LOG_2PI};
