//! Pictures and logs people look at, for any caller: sample grids and strips, line plots, and
//! TensorBoard event files. Knows nothing of models, runs or evaluations.

pub mod grid;
pub mod plot;
pub mod tensorboard;
