//! The run store: a run directory and everything in it, which training writes and evaluation,
//! sampling, interop and the studies read. [`dir`]: the directory, its status and lock, atomic
//! checkpoints and metrics (with their TensorBoard mirror); [`config`]: the resolved
//! configuration (`config.json`); [`load`]: a run's model with its EMA weights.

pub mod config;
pub mod dir;
pub mod load;

pub use config::RunConfig;
pub use dir::{data_slug, default_run_dir, DataInfo, DirStatus, ModelFile, RunDir, TrainState};
pub use load::{load_model, model_spec_of, open, Loaded, OpenRun};
