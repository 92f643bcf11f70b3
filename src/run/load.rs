//! A run's model: its configuration, `model.json`, spec and EMA weights, loaded from the run
//! directory (its parameters checked name by name and shape by shape before any is allocated).

use burn::tensor::Device;

use super::dir::{ModelFile, RunDir};
use super::RunConfig;
use crate::models::Model;
use crate::params;
use crate::{Error, Result};

/// A run's `model.json` and the model spec in it.
pub fn model_spec_of<M: Model>(dir: &RunDir) -> Result<(ModelFile, M::Spec)> {
    let mf = dir.model_file()?;
    let spec: M::Spec = serde_json::from_value(mf.spec.clone()).map_err(|e| {
        Error::format(
            dir.file("model.json"),
            format!("model spec does not fit: {e}"),
        )
    })?;
    Ok((mf, spec))
}

/// A run's model, loaded: its configuration, `model.json`, spec, and EMA weights.
pub struct Loaded<M: Model> {
    pub cfg: RunConfig,
    pub file: ModelFile,
    pub spec: M::Spec,
    pub section: M::Config,
    pub model: M,
}

/// Load the evaluation (EMA) weights of a run into a model on `device`, with the settings
/// `section` (the run's own, as its [`crate::models::ModelConfig`] holds them).
pub fn load_model<M: Model>(
    dir: &RunDir,
    section: &M::Config,
    device: &Device,
) -> Result<Loaded<M>> {
    dir.check()?;
    let cfg = dir.config()?;
    let (file, spec) = crate::run::model_spec_of::<M>(dir)?;
    let model = M::build(section, &spec, device)?;
    let model = params::assign(model, &dir.model_weights()?).map_err(|e| Error::Checkpoint {
        path: dir.file("model.safetensors"),
        msg: e.to_string(),
    })?;
    Ok(Loaded {
        cfg,
        file,
        spec,
        section: section.clone(),
        model,
    })
}
