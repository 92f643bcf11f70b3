//! The run directory: what a training run writes and what `eval`, `sample`, `inspect` and
//! `--resume` read back.
//!
//! | file | holds |
//! | --- | --- |
//! | `config.json` | the fully resolved [`RunConfig`] |
//! | `model.json` | what the model learned about its data (shape, standardisation, …) |
//! | `model.safetensors` | the weights to use: the EMA weights (keys are module paths) |
//! | `optimizer.safetensors` | raw weights (`param/…`), Adam moments (`m/…`, `v/…`) |
//! | `state.json` | step, RNG state, data order, elapsed time |
//! | `metrics.jsonl` | one JSON object per logged step or evaluation |
//! | `samples.png`, `training_curve.png` | pictures |

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checkpoint::{load_tensors, save_tensors, take_prefix, write_atomic};
use super::config::RunConfig;
use super::optim::AdamW;
use super::params::NamedParams;
use crate::data::{BatchOrder, DataKind};
use crate::models::ModelKind;
use crate::rng::Rng;
use crate::{Error, Result};

/// Shape and kind of the data a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    pub shape: Vec<usize>,
    /// The kind the model sees (continuous for dequantised images).
    pub kind: DataKind,
    /// 8-bit images dequantised to k + u: evaluated likewise and reported in bits/dim.
    #[serde(default)]
    pub dequantized: bool,
}

impl DataInfo {
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn image_hw(&self) -> Option<(usize, usize)> {
        match self.shape.as_slice() {
            [1, h, w] if self.is_image() => Some((*h, *w)),
            _ => None,
        }
    }

    /// 8-bit images, discrete or dequantised: likelihoods are reported in bits/dim.
    pub fn is_image(&self) -> bool {
        self.kind == DataKind::Image8 || self.dequantized
    }

    /// The rows a model sees when evaluating `ds`: binarised or dequantised once with `seed`.
    pub fn eval_rows(
        &self,
        ds: &crate::data::Dataset,
        binarize: Option<crate::data::Binarize>,
        seed: u64,
    ) -> Vec<f32> {
        if self.dequantized {
            crate::data::batches::dequantize(
                &ds.x,
                &mut crate::rng::derived(seed, crate::rng::streams::EVAL_BINARIZE),
            )
        } else {
            crate::data::batches::eval_rows(ds, binarize, seed)
        }
    }
}

/// `model.json`: the model kind, its data, and its data-derived spec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelFile {
    pub model: ModelKind,
    pub data: DataInfo,
    pub spec: serde_json::Value,
    pub num_params: usize,
}

/// `state.json`: everything besides tensors needed to continue exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    pub rng: Rng,
    pub order: BatchOrder,
    pub elapsed_secs: f64,
    pub examples_seen: u64,
}

/// Paths inside a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir { path: path.into() }
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Check that this is a run directory, with a message saying what is missing.
    pub fn check(&self) -> Result<()> {
        if !self.path.is_dir() {
            return Err(Error::Checkpoint {
                path: self.path.clone(),
                msg: "no such run directory".into(),
            });
        }
        for f in ["config.json", "model.json", "model.safetensors"] {
            if !self.file(f).is_file() {
                return Err(Error::Checkpoint {
                    path: self.path.clone(),
                    msg: format!(
                        "not a run directory (no {f}); train one with `elbo train --out DIR`"
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let p = self.file(name);
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_str(&text).map_err(|e| Error::format(&p, format!("invalid JSON: {e}")))
    }

    pub fn write_json<T: Serialize>(&self, name: &str, v: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(v).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&self.file(name), text.as_bytes())
    }

    pub fn config(&self) -> Result<RunConfig> {
        self.read_json("config.json")
    }

    pub fn model_file(&self) -> Result<ModelFile> {
        self.read_json("model.json")
    }

    /// The weights to use (EMA).
    pub fn model_weights(&self) -> Result<NamedParams> {
        Ok(load_tensors(&self.file("model.safetensors"))?.0)
    }

    /// Save a full checkpoint: tensors first, state last (its step says which checkpoint is whole).
    pub fn save_checkpoint(
        &self,
        params: &NamedParams,
        opt: &AdamW,
        eval_weights: &NamedParams,
        state: &TrainState,
    ) -> Result<()> {
        let meta = |kind: &str| -> HashMap<String, String> {
            [
                ("step".to_string(), state.step.to_string()),
                ("content".to_string(), kind.to_string()),
            ]
            .into()
        };
        save_tensors(
            &self.file("model.safetensors"),
            &[("", eval_weights)],
            meta("ema weights"),
        )?;
        let mut m = meta("raw weights, Adam moments, EMA");
        m.insert("adam_t".into(), opt.t.to_string());
        save_tensors(
            &self.file("optimizer.safetensors"),
            &[
                ("param/", params),
                ("m/", &opt.m),
                ("v/", &opt.v),
                ("ema/", &opt.ema),
            ],
            m,
        )?;
        self.write_json("state.json", state)
    }

    /// Load what `save_checkpoint` wrote, checking that its parts belong to the same step.
    pub fn load_checkpoint(&self) -> Result<(NamedParams, AdamW, TrainState)> {
        let state: TrainState = self.read_json("state.json")?;
        let p = self.file("optimizer.safetensors");
        let (all, meta) = load_tensors(&p)?;
        let step: Option<u64> = meta.get("step").and_then(|s| s.parse().ok());
        if step != Some(state.step) {
            return Err(Error::Checkpoint {
                path: p,
                msg: format!(
                    "belongs to step {step:?} but state.json is at step {}; the checkpoint is incomplete",
                    state.step
                ),
            });
        }
        let t = meta
            .get("adam_t")
            .and_then(|s| s.parse().ok())
            .unwrap_or(state.step);
        let opt = AdamW {
            t,
            m: take_prefix(&all, "m/"),
            v: take_prefix(&all, "v/"),
            ema: take_prefix(&all, "ema/"),
        };
        Ok((take_prefix(&all, "param/"), opt, state))
    }

    /// Drop metrics lines logged after `step` (they belong to work lost before a resume).
    pub fn truncate_metrics(&self, step: u64) -> Result<()> {
        let p = self.file("metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&p) else {
            return Ok(());
        };
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                    .is_some_and(|s| s <= step)
            })
            .collect();
        let mut out = kept.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        write_atomic(&p, out.as_bytes())
    }

    /// Append one JSON line to metrics.jsonl.
    pub fn log_metrics(&self, v: &serde_json::Value) -> Result<()> {
        use std::io::Write;
        let p = self.file("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        writeln!(f, "{v}").map_err(|e| Error::io(&p, e))
    }

    /// All lines of metrics.jsonl.
    pub fn metrics(&self) -> Result<Vec<serde_json::Value>> {
        let p = self.file("metrics.jsonl");
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io(&p, e)),
        };
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

/// The first free `runs/<model>-<data>-N` directory.
pub fn default_run_dir(model: ModelKind, data: &str) -> PathBuf {
    let clean: String = data
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-').chars().take(40).collect::<String>();
    (1..)
        .map(|i| Path::new("runs").join(format!("{model}-{clean}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| PathBuf::from("runs/run"))
}
