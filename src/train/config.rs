//! The run configuration: every setting of a training run in one struct, with defaults chosen so
//! that `elbo train` alone does something good. Settable from a TOML file (`--config`) and
//! `--set key=value` (dotted keys reach nested sections: `--set vae.latent=32`), and saved
//! resolved as `config.json` in the run directory.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::optim::OptimConfig;
use crate::models::diffusion::vdm::VdmConfig;
use crate::models::vae::VaeConfig;
use crate::{Error, Result};

/// Which model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Variational autoencoder (MATH.md §2).
    Vae,
    /// Variational diffusion model (MATH.md §4–§6).
    #[default]
    Vdm,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Vae => "vae",
            ModelKind::Vdm => "vdm",
        })
    }
}

/// Every setting of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelKind,
    /// Data spec (see `elbo data --help`); mnist10k is embedded in the binary.
    pub data: String,
    /// Seeds initialisation, data order, binarisation and every noise draw.
    pub seed: u64,
    /// Optimiser steps (0: chosen for the model and data so that a default run takes about five
    /// minutes on 2 cores: VAE 20,000; VDM on images 640; VDM on vectors 20,000).
    pub steps: u64,
    /// Examples per step (0: VAE 128; VDM on images 32, whose U-Net step is costly on a CPU; VDM
    /// on vectors 256).
    pub batch_size: usize,
    /// Stop after this many minutes of training in total, across resumes (0: no limit).
    pub max_minutes: f64,
    /// Evaluate the held-out ELBO (EMA weights) every this many steps.
    pub eval_every: u64,
    /// Held-out examples used by the periodic evaluation (the full test split at the end).
    pub eval_examples: usize,
    /// Write a checkpoint every this many steps (and at the end, on Ctrl-C and on time-out).
    pub checkpoint_every: u64,
    /// Append a training line to metrics.jsonl every this many steps.
    pub log_every: u64,
    /// Model 8-bit images as continuous data by uniform dequantisation, y = k + u (a fresh u per
    /// batch; the test split gets one fixed draw). Likelihoods stay in bits/dim over the 256
    /// levels, as an upper bound on the discrete NLL. Off: the VAE binarises 8-bit images and the
    /// VDM scores them with its discrete decoder (M22).
    pub dequantize: bool,
    /// How models map continuous (or dequantised) data into their own space: `standardize`
    /// (per dimension, zero mean and unit variance) or `minus-one-one` (the training data's range
    /// onto [−1, 1]). The map's log-Jacobian is in every reported likelihood.
    pub scaling: crate::data::Scaling,
    /// Images in the grid written at the end of training (0: none; 2-D data always gets a
    /// scatter plot of 2,000 points unless this is 0).
    pub grid: usize,
    /// Threads that each run forward and backward on a shard of the batch (0: `$ELBO_THREADS`
    /// or one per core, at most 8, resolved when the run starts and saved in config.json).
    /// Results are deterministic for a given count.
    pub threads: usize,
    pub optim: OptimConfig,
    pub vae: VaeConfig,
    pub vdm: VdmConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: ModelKind::Vdm,
            data: "mnist10k".into(),
            seed: 0,
            steps: 0,
            batch_size: 0,
            max_minutes: 0.0,
            eval_every: 2_000,
            eval_examples: 500,
            checkpoint_every: 2_000,
            log_every: 50,
            dequantize: false,
            scaling: crate::data::Scaling::Standardize,
            grid: 64,
            threads: 0,
            optim: OptimConfig::default(),
            vae: VaeConfig::default(),
            vdm: VdmConfig::default(),
        }
    }
}

impl RunConfig {
    /// Read a TOML file of settings on top of the defaults.
    pub fn from_toml_file(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid config: {}", e.message())))
    }

    /// Apply `key=value` (dotted key; value parsed as JSON when it parses, as a string otherwise).
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--set '{assignment}': expected key=value")))?;
        let key = key.trim();
        let mut root = serde_json::to_value(&*self).map_err(|e| Error::Config(e.to_string()))?;
        let mut node = &mut root;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            let obj = node.as_object_mut().ok_or_else(|| {
                Error::Config(format!(
                    "--set {key}: '{}' is not a section",
                    parts[..i].join(".")
                ))
            })?;
            if !obj.contains_key(*p) {
                let known: Vec<_> = obj.keys().cloned().collect();
                return Err(Error::Config(format!(
                    "--set {key}: unknown setting '{p}' (known here: {})",
                    known.join(", ")
                )));
            }
            node = obj
                .get_mut(*p)
                .ok_or_else(|| Error::Config(key.to_string()))?;
        }
        let v = value.trim();
        *node =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        *self = serde_json::from_value(root)
            .map_err(|e| Error::Config(format!("--set {key}={v}: {e}")))?;
        Ok(())
    }

    /// Replace the automatic (0) step count and batch size by their values for this model on
    /// data of this kind.
    pub fn resolve_for_data(&mut self, kind: crate::data::DataKind) {
        use crate::data::DataKind::{Continuous, Image8};
        let (steps, batch) = match (self.model, kind) {
            (ModelKind::Vae, _) => (20_000, 128),
            (ModelKind::Vdm, Image8) => (640, 32),
            (ModelKind::Vdm, Continuous) => (20_000, 256),
        };
        if self.steps == 0 {
            self.steps = steps;
        }
        if self.batch_size == 0 {
            self.batch_size = batch;
        }
    }

    /// Replace "automatic" settings by their values on this machine.
    pub fn resolve(&mut self) {
        if self.threads == 0 {
            self.threads = crate::par::default_threads();
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 {
            return Err(Error::Config(
                "steps and batch_size must be positive once resolved (0 means automatic)".into(),
            ));
        }
        if self.eval_every == 0 || self.checkpoint_every == 0 || self.log_every == 0 {
            return Err(Error::Config(
                "eval_every, checkpoint_every and log_every must be positive".into(),
            ));
        }
        if !(self.max_minutes >= 0.0 && self.max_minutes.is_finite()) {
            return Err(Error::Config(
                "max_minutes must be 0 (no limit) or a positive number".into(),
            ));
        }
        self.optim.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_reaches_nested_fields_and_rejects_unknown() {
        let mut c = RunConfig::default();
        c.set("vae.latent=32").unwrap();
        c.set("optim.lr=0.0005").unwrap();
        c.set("data=toy:ring8").unwrap();
        c.set("vae.hidden=[64,64]").unwrap();
        assert_eq!(c.vae.latent, 32);
        assert_eq!(c.optim.lr, 0.0005);
        assert_eq!(c.data, "toy:ring8");
        assert_eq!(c.vae.hidden, vec![64, 64]);
        assert!(c
            .set("vae.latnet=3")
            .unwrap_err()
            .to_string()
            .contains("unknown setting 'latnet'"));
        assert!(c.set("vae.latent=abc").is_err());
        assert!(c.set("novalue").is_err());
    }

    #[test]
    fn toml_round_trip_and_unknown_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "steps = 10\n[vae]\nlatent = 8\n").unwrap();
        let c = RunConfig::from_toml_file(&p).unwrap();
        assert_eq!((c.steps, c.vae.latent, c.batch_size), (10, 8, 0));
        std::fs::write(&p, "stpes = 10\n").unwrap();
        let e = RunConfig::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("stpes"), "{e}");
    }
}
