//! What people read and look at: evaluation reports as text, sample grids, training curves and
//! the diffusion loss per time.

pub mod eval;
pub mod grid;
pub mod plot;
pub mod tensorboard;
