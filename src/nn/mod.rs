//! Network building blocks.

pub mod mlp;

pub use mlp::{Activation, Mlp};
