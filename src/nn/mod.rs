//! Network building blocks.

pub mod cnn;
pub mod denoiser_mlp;
pub mod embedding;
pub mod mlp;
pub mod monotone;
pub mod unet;

pub use mlp::{Activation, Mlp};
