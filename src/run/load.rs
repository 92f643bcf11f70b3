//! A run's model: its configuration, `model.json`, spec and EMA weights, loaded from the run
//! directory (its parameters checked name by name and shape by shape before any is allocated).

use burn::tensor::Device;

use super::dir::{ModelFile, RunDir};
use super::RunConfig;
use crate::diffusion::guidance::ClassGradient;
use crate::models::{Model, ModelVisitor};
use crate::params;
use crate::sample::{Drawn, SampleOptions};
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

/// A run opened once and drawn from many times: its model, whatever its kind, behind one
/// interface (the sweeps and `elbo sample --class all` load each run once).
pub trait OpenRun {
    /// The run's configuration and `model.json`.
    fn config(&self) -> &RunConfig;
    fn file(&self) -> &ModelFile;
    /// The value of a white pixel in its samples: 1 for the Bernoulli means of binarised
    /// images, 255 for 8-bit levels.
    fn white(&self) -> f32;
    /// Samples drawn together with one noise stream (blocks of whole chunks draw the same
    /// samples as one call).
    fn chunk_rows(&self) -> usize;
    /// Units of work (calls of `tick`) of a draw.
    fn draw_work(&self, n: usize, opts: &SampleOptions) -> Result<u64>;
    /// `n` samples (see [`Model::draw`]).
    fn draw(
        &self,
        n: usize,
        opts: &SampleOptions,
        classifier: Option<&dyn ClassGradient>,
        tick: &(dyn Fn() + Sync),
    ) -> Result<Drawn>;
}

impl<M: Model> OpenRun for Loaded<M> {
    fn config(&self) -> &RunConfig {
        &self.cfg
    }
    fn file(&self) -> &ModelFile {
        &self.file
    }
    fn white(&self) -> f32 {
        if M::binarize(&self.section, &self.spec).is_some() {
            1.0
        } else {
            255.0
        }
    }
    fn chunk_rows(&self) -> usize {
        self.model.draw_chunk_rows()
    }
    fn draw_work(&self, n: usize, opts: &SampleOptions) -> Result<u64> {
        self.model.draw_work(n, opts)
    }
    fn draw(
        &self,
        n: usize,
        opts: &SampleOptions,
        classifier: Option<&dyn ClassGradient>,
        tick: &(dyn Fn() + Sync),
    ) -> Result<Drawn> {
        self.model.draw(n, opts, classifier, tick)
    }
}

/// Open the run in `dir` for drawing: its EMA weights loaded once onto `device`.
pub fn open(dir: &RunDir, device: &Device) -> Result<Box<dyn OpenRun>> {
    dir.check()?;
    let cfg = dir.config()?;
    struct Open<'a>(&'a RunDir, &'a Device);
    impl ModelVisitor for Open<'_> {
        type Output = Result<Box<dyn OpenRun>>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            Ok(Box::new(load_model::<M>(self.0, section, self.1)?))
        }
    }
    cfg.model.visit(Open(dir, device))
}
