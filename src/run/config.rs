//! The run configuration: every setting of a training run in one struct, with defaults chosen so
//! that `elbo train` alone does something good. Settable from a TOML file (`--config`) and
//! `--set key=value` (dotted keys reach nested sections: `--set vae.latent=32`), and saved
//! resolved as `config.json` in the run directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::models::{ModelConfig, ModelKind};
use crate::optim::OptimConfig;
use crate::{Error, Result};

/// Every setting of a training run. In files it reads `model = "vdm"` with the model's own
/// section (`[vdm]`, `[vae]`, …); in code the kind and its section are one [`ModelConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RunConfigFile", into = "RunConfigFile")]
pub struct RunConfig {
    pub model: ModelConfig,
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
    /// Evaluate the held-out ELBO (EMA weights) and draw a small grid of samples every this many
    /// steps (0: automatic, eight times over the run).
    pub eval_every: u64,
    /// Held-out examples used by the periodic evaluation (the full test split at the end).
    pub eval_examples: usize,
    /// Write a checkpoint every this many steps (and at the start, at the end, on Ctrl-C,
    /// SIGTERM and time-out).
    pub checkpoint_every: u64,
    /// Checkpoints kept in `checkpoints/` (the newest; at least 1).
    pub keep_checkpoints: usize,
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
    /// Threads that each run forward and backward on a shard of the batch, for models whose
    /// step is large enough (the U-Net; the VAE, HVAE and MLP denoisers train as one shard whose
    /// operations use the cores) (0: `$ELBO_THREADS` or one per usable core, shared with the
    /// other MPI ranks on the machine, resolved when the run starts and saved in config.json).
    /// Results are deterministic for a given count (of threads × ranks).
    pub threads: usize,
    pub optim: OptimConfig,
}

/// A run configuration as written in files: the model's kind, the common settings, and sections
/// named by model kinds (only the chosen model's section is used; others are ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
struct RunConfigFile {
    model: ModelKind,
    data: String,
    seed: u64,
    steps: u64,
    batch_size: usize,
    max_minutes: f64,
    eval_every: u64,
    eval_examples: usize,
    checkpoint_every: u64,
    keep_checkpoints: usize,
    log_every: u64,
    dequantize: bool,
    scaling: crate::data::Scaling,
    grid: usize,
    threads: usize,
    optim: OptimConfig,
    #[serde(flatten)]
    sections: BTreeMap<String, serde_json::Value>,
}

impl Default for RunConfigFile {
    fn default() -> Self {
        RunConfig::default().into()
    }
}

impl From<RunConfig> for RunConfigFile {
    fn from(c: RunConfig) -> Self {
        let mut sections = BTreeMap::new();
        if let Ok(v) = c.model.section() {
            sections.insert(c.model.kind().name().to_string(), v);
        }
        RunConfigFile {
            model: c.model.kind(),
            data: c.data,
            seed: c.seed,
            steps: c.steps,
            batch_size: c.batch_size,
            max_minutes: c.max_minutes,
            eval_every: c.eval_every,
            eval_examples: c.eval_examples,
            checkpoint_every: c.checkpoint_every,
            keep_checkpoints: c.keep_checkpoints,
            log_every: c.log_every,
            dequantize: c.dequantize,
            scaling: c.scaling,
            grid: c.grid,
            threads: c.threads,
            optim: c.optim,
            sections,
        }
    }
}

impl TryFrom<RunConfigFile> for RunConfig {
    type Error = Error;
    fn try_from(f: RunConfigFile) -> Result<Self> {
        let mut section = None;
        for (k, v) in f.sections {
            match ModelKind::from_name(&k) {
                Some(kind) if kind == f.model => section = Some(v),
                Some(_) => {} // another model's settings: not this run's
                None => {
                    let known: Vec<&str> = ModelKind::ALL.iter().map(|m| m.name()).collect();
                    return Err(Error::Config(format!(
                        "unknown setting '{k}' (settings are the keys of config.json; model \
                         sections: {})",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(RunConfig {
            model: ModelConfig::from_section(f.model, section)?,
            data: f.data,
            seed: f.seed,
            steps: f.steps,
            batch_size: f.batch_size,
            max_minutes: f.max_minutes,
            eval_every: f.eval_every,
            eval_examples: f.eval_examples,
            checkpoint_every: f.checkpoint_every,
            keep_checkpoints: f.keep_checkpoints,
            log_every: f.log_every,
            dequantize: f.dequantize,
            scaling: f.scaling,
            grid: f.grid,
            threads: f.threads,
            optim: f.optim,
        })
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: ModelConfig::default(),
            data: "mnist10k".into(),
            seed: 0,
            steps: 0,
            batch_size: 0,
            max_minutes: 0.0,
            eval_every: 0,
            eval_examples: 500,
            checkpoint_every: 2_000,
            keep_checkpoints: 2,
            log_every: 50,
            dequantize: false,
            scaling: crate::data::Scaling::Standardize,
            grid: 64,
            threads: 0,
            optim: OptimConfig::default(),
        }
    }
}

/// Named settings files shipped inside the binary (`presets/*.toml` in the repository).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// A VDM that draws clean digits on mnist10k in under an hour on 2 CPU cores
    /// (presets/quality.toml; BENCHMARKS.md §8).
    Quality,
    /// The tightest bound of the weighted-ELBO study, trained for about half an hour
    /// (presets/likelihood.toml; BENCHMARKS.md §15: 1.156 bits/dim in 28 minutes).
    Likelihood,
}

crate::choice!(Preset {
    Quality = "quality": "a VDM that draws clean digits on mnist10k in under an hour on 2 CPU cores (presets/quality.toml)",
    Likelihood = "likelihood": "the tightest bound: the ELBO, gated Fourier features, adaptive noise levels, about half an hour on 2 CPU cores (presets/likelihood.toml)",
});

impl Preset {
    /// The preset's TOML text.
    pub fn toml(self) -> &'static str {
        match self {
            Preset::Quality => include_str!("../../presets/quality.toml"),
            Preset::Likelihood => include_str!("../../presets/likelihood.toml"),
        }
    }

    /// Its settings on top of the defaults.
    pub fn config(self) -> Result<RunConfig> {
        toml::from_str(self.toml())
            .map_err(|e| Error::Config(format!("preset {self:?}: invalid config: {}", e.message())))
    }
}

impl RunConfig {
    /// Read a TOML file of settings on top of the defaults.
    pub fn from_toml_file(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid config: {}", e.message())))
    }

    /// Apply every setting a TOML file names (and only those) on top of this configuration:
    /// what `--resume --config FILE` does before the resume's own checks.
    pub fn apply_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| Error::format(path, format!("invalid config: {}", e.message())))?;
        let v = serde_json::to_value(table).map_err(|e| Error::format(path, e.to_string()))?;
        fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
            match v.as_object() {
                // Sections are walked into: every leaf is one `--set key=value`.
                Some(o) => {
                    for (k, x) in o {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        leaves(&key, x, out);
                    }
                }
                None => out.push((prefix.to_string(), v.clone())),
            }
        }
        let mut all = Vec::new();
        leaves("", &v, &mut all);
        // `model` first: the other keys may belong to its section.
        all.sort_by_key(|(k, _)| k != "model");
        for (k, x) in all {
            self.set(&format!("{k}={x}"))
                .map_err(|e| Error::format(path, e.to_string()))?;
        }
        Ok(())
    }

    /// Apply `key=value` (dotted key; value parsed as JSON when it parses, as a string otherwise).
    ///
    /// ```
    /// let mut cfg = elbo::run::RunConfig::default(); // a VDM on mnist10k
    /// cfg.set("vdm.unet.channels=[32,64]")?;
    /// cfg.set("steps=1000")?;
    /// assert_eq!(cfg.steps, 1000);
    /// // Unknown keys are refused with the known ones named.
    /// assert!(cfg.set("vdm.colour=red").unwrap_err().to_string().contains("unknown setting"));
    /// # Ok::<(), elbo::Error>(())
    /// ```
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--set '{assignment}': expected key=value")))?;
        let key = key.trim();
        if key == "data.size" {
            // The size is part of the folder's data spec (folder:PATH?size=N), so that every
            // command reading the run's data resizes it the same way.
            let n = value.trim();
            let Some(path) = self.data.strip_prefix("folder:") else {
                return Err(Error::Config(format!(
                    "--set data.size={n}: resizing applies to folder: data (this run's data is \
                     '{}'); give --data folder:PATH first",
                    self.data
                )));
            };
            let base = path.rsplit_once("?size=").map_or(path, |(p, _)| p);
            let spec = format!("folder:{base}?size={n}");
            crate::data::folder::parse_folder(&spec["folder:".len()..])?;
            self.data = spec;
            return Ok(());
        }
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
            if i == 0 && !obj.contains_key(*p) {
                if let Some(kind) = ModelKind::from_name(p) {
                    return Err(Error::Config(format!(
                        "--set {key}: {p}.* settings belong to model {kind}; this run's model is \
                         {} (choose it with --model {kind} or --set model={kind} first)",
                        self.model.kind()
                    )));
                }
            }
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

    /// Replace the automatic (0) step count and batch size, and the model's settings left to
    /// the data, by their values for this model on data of this kind.
    pub fn resolve_for_data(&mut self, kind: crate::data::DataKind) {
        self.model.resolve_for_data(kind);
        let (steps, batch) = self.model.defaults_for(kind);
        if self.steps == 0 {
            self.steps = steps;
        }
        if self.batch_size == 0 {
            self.batch_size = batch;
        }
        if self.eval_every == 0 {
            self.eval_every = self.steps.div_ceil(8).max(1);
        }
    }

    /// Switch to another model kind (its default settings, unless it is the current kind).
    pub fn set_model(&mut self, kind: ModelKind) {
        if self.model.kind() != kind {
            self.model = ModelConfig::default_for(kind);
        }
    }

    /// Settings of the run (besides the model's own section) that define what it is: a resumed
    /// run keeps them.
    pub const FIXED_ON_RESUME: &'static [&'static str] = &[
        "model",
        "data",
        "seed",
        "batch_size",
        "dequantize",
        "scaling",
    ];

    /// Refuse a resumed configuration that changes what defines the run: the keys of
    /// [`RunConfig::FIXED_ON_RESUME`] and every key of the model's section except those its
    /// model declares changeable. Names the first setting that differs.
    pub fn check_resume(&self, saved: &RunConfig) -> Result<()> {
        let (was, now) = (
            serde_json::to_value(saved).map_err(|e| Error::Config(e.to_string()))?,
            serde_json::to_value(self).map_err(|e| Error::Config(e.to_string()))?,
        );
        let refuse = |k: &str, a: &serde_json::Value, b: &serde_json::Value| {
            Err(Error::Config(format!(
                "--resume continues the run as it was configured: '{k}' cannot change ({a} → \
                 {b}); start a new run in another --out directory"
            )))
        };
        for &k in Self::FIXED_ON_RESUME {
            if was[k] != now[k] {
                return refuse(k, &was[k], &now[k]);
            }
        }
        let name = saved.model.kind().name();
        let free = saved.model.changeable_on_resume();
        let (a, b) = (&was[name], &now[name]);
        let keys: std::collections::BTreeSet<&String> = a
            .as_object()
            .into_iter()
            .chain(b.as_object())
            .flat_map(|o| o.keys())
            .collect();
        for k in keys {
            if !free.contains(&k.as_str()) && a.get(k) != b.get(k) {
                let null = serde_json::Value::Null;
                return refuse(
                    &format!("{name}.{k}"),
                    a.get(k).unwrap_or(&null),
                    b.get(k).unwrap_or(&null),
                );
            }
        }
        Ok(())
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
                "eval_every, checkpoint_every and log_every must be positive once resolved (0 \
                 means automatic for eval_every)"
                    .into(),
            ));
        }
        if self.keep_checkpoints == 0 {
            return Err(Error::Config(
                "keep_checkpoints must be at least 1 (the committed checkpoint)".into(),
            ));
        }
        if !(self.max_minutes >= 0.0 && self.max_minutes.is_finite()) {
            return Err(Error::Config(
                "max_minutes must be 0 (no limit) or a positive number".into(),
            ));
        }
        self.model.validate()?;
        self.optim.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_presets_are_valid_configurations() {
        // A typo in presets/*.toml (an unknown key, a bad value) must fail here, not for a user.
        for p in <Preset as crate::choice::Choice>::ALL {
            let mut c = p.config().unwrap();
            c.resolve();
            c.resolve_for_data(crate::data::DataKind::Image8);
            c.validate().unwrap();
            assert_eq!(c.model.kind(), crate::models::ModelKind::Vdm, "{p:?}");
            assert!(c.steps > 0 && c.batch_size > 0, "{p:?} names its length");
        }
    }

    #[test]
    fn set_reaches_nested_fields_and_rejects_unknown() {
        let mut c = RunConfig::default();
        assert!(c
            .set("vae.latent=32")
            .unwrap_err()
            .to_string()
            .contains("belong to model vae"));
        c.set("model=vae").unwrap();
        c.set("vae.latent=32").unwrap();
        c.set("optim.lr=0.0005").unwrap();
        c.set("data=toy:ring8").unwrap();
        c.set("vae.hidden=[64,64]").unwrap();
        let ModelConfig::Vae(v) = &c.model else {
            panic!("model=vae did not switch: {:?}", c.model)
        };
        assert_eq!(v.latent, 32);
        assert_eq!(c.optim.lr, 0.0005);
        assert_eq!(c.data, "toy:ring8");
        assert_eq!(v.hidden, vec![64, 64]);
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
        std::fs::write(&p, "model = \"vae\"\nsteps = 10\n[vae]\nlatent = 8\n").unwrap();
        let c = RunConfig::from_toml_file(&p).unwrap();
        let ModelConfig::Vae(v) = &c.model else {
            panic!("{:?}", c.model)
        };
        assert_eq!((c.steps, v.latent, c.batch_size), (10, 8, 0));
        // Saved and read back: the same configuration.
        let back: RunConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        // A typo inside a model's section is named too.
        std::fs::write(&p, "model = \"vae\"\n[vae]\nlatnet = 8\n").unwrap();
        let e = RunConfig::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("latnet"), "{e}");
        std::fs::write(&p, "stpes = 10\n").unwrap();
        let e = RunConfig::from_toml_file(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("stpes"), "{e}");
    }
}

#[cfg(test)]
mod resume_tests {
    use super::*;

    #[test]
    fn a_resume_may_change_only_what_the_model_allows() {
        let saved = RunConfig::default();
        let mut c = saved.clone();
        c.steps = 99;
        c.set("vdm.sample_steps=7").unwrap();
        assert!(
            c.check_resume(&saved).is_ok(),
            "steps and vdm.sample_steps may change"
        );
        c.set("vdm.prediction=v").unwrap();
        let e = c.check_resume(&saved).unwrap_err().to_string();
        assert!(e.contains("'vdm.prediction'"), "{e}");
        let mut d = saved.clone();
        d.scaling = crate::data::Scaling::MinusOneOne;
        assert!(d
            .check_resume(&saved)
            .unwrap_err()
            .to_string()
            .contains("'scaling'"));
    }
}
