//! Optimisation: AdamW with warm-up, decay, clipping and EMA weights ([`adamw`]), on parameters
//! by name ([`crate::params`]).

pub mod adamw;

pub use adamw::{AdamW, OptimConfig};
