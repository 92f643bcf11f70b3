//! Optimisation: AdamW with warm-up, decay, clipping and EMA weights ([`adamw`]), on parameters
//! by name ([`crate::params`]), and the one training loop that every training runs ([`fit`]).

pub mod adamw;
pub mod fit;

pub use adamw::{AdamW, OptimConfig};
pub use fit::{fit, FitHooks, StepDone, StepLoss, Stopped};
