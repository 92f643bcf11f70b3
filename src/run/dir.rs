//! The run directory: what a training run writes and what `eval`, `sample`, `inspect` and
//! `--resume` read back.
//!
//! | file | holds |
//! | --- | --- |
//! | `.elbo-run` | the mark of a run directory (written first, before anything else) |
//! | `.lock` | held (`flock`) by the process training the run; holds its PID |
//! | `config.json` | the fully resolved [`RunConfig`] |
//! | `model.json` | what the model learned about its data (shape, standardisation, …) |
//! | `checkpoint.json` | which checkpoint is committed: `{"step": …, "dir": "checkpoints/step-…"}` |
//! | `checkpoints/step-N/` | a checkpoint: `model.safetensors` (EMA weights, keys are module paths), `optimizer.safetensors` (raw weights `param/…`, Adam moments `m/…`, `v/…`, EMA `ema/…`), `state.json` (step, RNG state, data order, elapsed time) |
//! | `model.safetensors` | a link to the committed checkpoint's EMA weights, for other tools |
//! | `metrics.jsonl` | one JSON object per logged step or evaluation |
//! | `samples.png`, `training_curve.png` | pictures |
//!
//! A checkpoint is one atomic commit: its folder is written in full under a temporary name,
//! flushed, renamed into place, and only then does `checkpoint.json` (replaced atomically) point
//! at it. A crash at any moment leaves the previous committed checkpoint, or the new one, and
//! nothing that `--resume` could mistake for either. Runs written before this layout (the three
//! files at the top level) are still read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::RunConfig;
use crate::data::{BatchOrder, DataKind};
use crate::fsio::{
    crash_point, load_tensors, sync_dir, take_prefix, tensor_bytes, write_atomic, write_synced,
};
use crate::models::ModelKind;
use crate::optim::AdamW;
use crate::params::NamedParams;
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
            [1 | 3, h, w] if self.is_image() => Some((*h, *w)),
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
    /// The run's configuration when the checkpoint was written: a resume checks what defines
    /// the run against it (a hand-edited or deleted `config.json` cannot change it unseen).
    /// Absent in checkpoints written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::run::RunConfig>,
    /// What training changed in the model outside its parameters (an adaptive proposal of
    /// noise levels), at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_state: Option<serde_json::Value>,
    /// The processes that train the run together (MPI ranks; 1 for an ordinary run, and in
    /// checkpoints written before it was recorded).
    #[serde(default = "one_rank", skip_serializing_if = "is_one_rank")]
    pub ranks: usize,
}

fn one_rank() -> usize {
    1
}

fn is_one_rank(n: &usize) -> bool {
    *n == 1
}

const MARKER: &str = ".elbo-run";
const LOCK: &str = ".lock";
const POINTER: &str = "checkpoint.json";
const CHECKPOINTS: &str = "checkpoints";

fn step_dir_name(step: u64) -> String {
    format!("step-{step:010}")
}

fn read_json_at<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(p, format!("invalid JSON: {e}")))
}

/// `checkpoint.json`: the committed checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pointer {
    pub step: u64,
    /// Its folder, relative to the run directory.
    pub dir: String,
}

/// What a directory is, to a training that wants to write into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirStatus {
    Missing,
    Empty,
    /// Not a run directory, holding these entries.
    Foreign(Vec<String>),
    /// A run directory whose training stopped before its first checkpoint.
    Unstarted,
    /// A run directory with a committed checkpoint at `step`.
    Run {
        step: u64,
    },
}

/// The lock of a run directory, held while a process trains it.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    fn take(dir: &Path) -> Result<RunLock> {
        use std::io::{Read, Seek, Write};
        let p = dir.join(LOCK);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| Error::io(&p, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a descriptor we own; released when the file is closed.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r != 0 {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(Error::Checkpoint {
                    path: dir.to_path_buf(),
                    msg: format!(
                        "in use by another elbo process (PID {}): a run directory is trained by \
                         one process at a time; wait for it to finish or choose another --out",
                        if pid.is_empty() { "unknown" } else { pid }
                    ),
                });
            }
        }
        f.set_len(0).map_err(|e| Error::io(&p, e))?;
        f.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::io(&p, e))?;
        writeln!(f, "{}", std::process::id()).map_err(|e| Error::io(&p, e))?;
        Ok(RunLock { _file: f })
    }
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

    /// Check that this is a run directory with a committed checkpoint, with a message saying
    /// what is missing.
    pub fn check(&self) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::Checkpoint {
                path: self.path.clone(),
                msg,
            })
        };
        if !self.path.is_dir() {
            return bad("no such run directory".into());
        }
        if !self.is_run() {
            return bad(
                "not a run directory (no config.json and model.json); train one with \
                 `elbo train --out DIR`"
                    .into(),
            );
        }
        if self.committed()?.is_none() {
            return bad(
                "the run here has no checkpoint yet (its training stopped before the first one); \
                 start it again with `elbo train --out DIR`"
                    .into(),
            );
        }
        Ok(())
    }

    /// An `elbo` run directory: marked, or written before the mark existed (config.json and
    /// model.json).
    pub fn is_run(&self) -> bool {
        self.file(MARKER).is_file()
            || (self.file("config.json").is_file() && self.file("model.json").is_file())
    }

    /// What the directory is, for a training that wants to write into it.
    pub fn status(&self) -> Result<DirStatus> {
        if !self.path.exists() {
            return Ok(DirStatus::Missing);
        }
        if !self.path.is_dir() {
            return Ok(DirStatus::Foreign(vec![
                "(it is a file, not a directory)".into()
            ]));
        }
        if self.is_run() {
            return Ok(match self.committed()? {
                Some((step, _)) => DirStatus::Run { step },
                None => DirStatus::Unstarted,
            });
        }
        // The mark's own temporary file (a run killed while marking the directory) is ours.
        let mark_tmp = format!(".{MARKER}.tmp");
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .map_err(|e| Error::io(&self.path, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
            .filter(|n| *n != mark_tmp)
            .collect();
        names.sort();
        Ok(if names.is_empty() {
            DirStatus::Empty
        } else {
            DirStatus::Foreign(names)
        })
    }

    /// Create the directory (if needed) and mark it as a run directory.
    pub fn claim(&self) -> Result<()> {
        std::fs::create_dir_all(&self.path).map_err(|e| Error::io(&self.path, e))?;
        if !self.file(MARKER).is_file() {
            write_atomic(
                &self.file(MARKER),
                b"an elbo run directory: see config.json; `elbo inspect DIR` shows it\n",
            )?;
        }
        Ok(())
    }

    /// Take the directory's lock for as long as the returned guard lives. A second process on
    /// the same directory fails at once, naming the holder's PID.
    pub fn lock(&self) -> Result<RunLock> {
        RunLock::take(&self.path)
    }

    /// Forget a run that never reached its first checkpoint (its metrics, partial checkpoints),
    /// so that a new training starts clean in its place.
    pub fn reset(&self) -> Result<()> {
        for f in [
            "metrics.jsonl",
            POINTER,
            "model.safetensors",
            "state.json",
            "optimizer.safetensors",
        ] {
            let p = self.file(f);
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
        }
        let c = self.file(CHECKPOINTS);
        if c.exists() {
            std::fs::remove_dir_all(&c).map_err(|e| Error::io(&c, e))?;
        }
        for e in std::fs::read_dir(&self.path)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
            {
                let p = e.path();
                std::fs::remove_file(&p).map_err(|err| Error::io(&p, err))?;
            }
        }
        Ok(())
    }

    /// The committed checkpoint: its step and the folder holding its files (the run directory
    /// itself for runs of the older layout); `None` when there is none.
    pub fn committed(&self) -> Result<Option<(u64, PathBuf)>> {
        let p = self.file(POINTER);
        if p.is_file() {
            let ptr: Pointer = self.read_json(POINTER)?;
            let dir = self.path.join(&ptr.dir);
            if ptr.dir.contains("..") || !dir.is_dir() {
                return Err(Error::Checkpoint {
                    path: p,
                    msg: format!(
                        "points at '{}', which is not a checkpoint folder here",
                        ptr.dir
                    ),
                });
            }
            return Ok(Some((ptr.step, dir)));
        }
        if self.file("state.json").is_file() && self.file("optimizer.safetensors").is_file() {
            let st: TrainState = self.read_json("state.json")?;
            return Ok(Some((st.step, self.path.clone())));
        }
        Ok(None)
    }

    /// The committed training state.
    pub fn state(&self) -> Result<TrainState> {
        let (_, dir) = self.committed()?.ok_or_else(|| Error::Checkpoint {
            path: self.path.clone(),
            msg: "no checkpoint yet".into(),
        })?;
        read_json_at(&dir.join("state.json"))
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

    /// The configuration the committed checkpoint recorded, if it has one.
    pub fn recorded_config(&self) -> Option<RunConfig> {
        self.state().ok().and_then(|s| s.config)
    }

    pub fn config(&self) -> Result<RunConfig> {
        self.read_json("config.json")
    }

    pub fn model_file(&self) -> Result<ModelFile> {
        self.read_json("model.json")
    }

    /// The weights to use (EMA), from the committed checkpoint.
    pub fn model_weights(&self) -> Result<NamedParams> {
        let dir = match self.committed()? {
            Some((_, d)) => d,
            None => self.path.clone(),
        };
        Ok(load_tensors(&dir.join("model.safetensors"))?.0)
    }

    /// The file holding the weights `model_weights` reads (for messages).
    pub fn model_weights_path(&self) -> PathBuf {
        match self.committed() {
            Ok(Some((_, d))) => d.join("model.safetensors"),
            _ => self.file("model.safetensors"),
        }
    }

    /// Commit a full checkpoint (see the module): returns the bytes written. Keeps the newest
    /// `keep` checkpoints (at least the committed one).
    pub fn save_checkpoint(
        &self,
        params: &NamedParams,
        opt: &AdamW,
        eval_weights: &NamedParams,
        state: &TrainState,
        keep: usize,
    ) -> Result<u64> {
        if let Some((step, _)) = self.committed()? {
            if step == state.step && self.file(POINTER).is_file() {
                return Ok(0); // this very step is committed already
            }
        }
        let meta = |kind: &str| -> HashMap<String, String> {
            [
                ("step".to_string(), state.step.to_string()),
                ("content".to_string(), kind.to_string()),
            ]
            .into()
        };
        let cdir = self.file(CHECKPOINTS);
        std::fs::create_dir_all(&cdir).map_err(|e| Error::io(&cdir, e))?;
        let name = step_dir_name(state.step);
        let tmp = cdir.join(format!(".{name}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let model_path = tmp.join("model.safetensors");
        let model = tensor_bytes(&model_path, &[("", eval_weights)], meta("ema weights"))?;
        write_synced(&model_path, &model)?;
        let mut m = meta("raw weights, Adam moments, EMA");
        m.insert("adam_t".into(), opt.t.to_string());
        let opt_path = tmp.join("optimizer.safetensors");
        let optb = tensor_bytes(
            &opt_path,
            &[
                ("param/", params),
                ("m/", &opt.m),
                ("v/", &opt.v),
                ("ema/", &opt.ema),
            ],
            m,
        )?;
        write_synced(&opt_path, &optb)?;
        let st = serde_json::to_vec_pretty(state).map_err(|e| Error::Invalid(e.to_string()))?;
        write_synced(&tmp.join("state.json"), &st)?;
        sync_dir(&tmp)?;
        let fin = cdir.join(&name);
        if fin.exists() {
            // An uncommitted folder of this step, left by a crash: never the committed one.
            std::fs::remove_dir_all(&fin).map_err(|e| Error::io(&fin, e))?;
        }
        std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
        crash_point();
        sync_dir(&cdir)?;
        // The commit.
        let ptr = Pointer {
            step: state.step,
            dir: format!("{CHECKPOINTS}/{name}"),
        };
        self.write_json(POINTER, &ptr)?;
        // After the commit, housekeeping that a crash may interrupt harmlessly.
        self.link_top_level(&fin.join("model.safetensors"))?;
        self.prune(state.step, keep.max(1))?;
        for legacy in ["state.json", "optimizer.safetensors"] {
            let p = self.file(legacy);
            if p.is_file() {
                std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
                crash_point();
            }
        }
        Ok((model.len() + optb.len() + st.len()) as u64)
    }

    /// `DIR/model.safetensors` as a hard link to the committed weights (a copy where the file
    /// system has no links), replaced atomically.
    fn link_top_level(&self, target: &Path) -> Result<()> {
        let tmp = self.file(".model.safetensors.tmp");
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        if std::fs::hard_link(target, &tmp).is_err() {
            std::fs::copy(target, &tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        crash_point();
        let top = self.file("model.safetensors");
        std::fs::rename(&tmp, &top).map_err(|e| Error::io(&top, e))?;
        crash_point();
        sync_dir(&self.path)
    }

    /// Remove checkpoint folders but the newest `keep` up to the committed `step`, those past it
    /// (uncommitted, left by a crash) and temporary folders.
    fn prune(&self, step: u64, keep: usize) -> Result<()> {
        let cdir = self.file(CHECKPOINTS);
        let Ok(rd) = std::fs::read_dir(&cdir) else {
            return Ok(());
        };
        let mut steps: Vec<(u64, PathBuf)> = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let path = e.path();
            if name.starts_with('.') && name.ends_with(".tmp") {
                std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
                crash_point();
            } else if let Some(n) = name
                .strip_prefix("step-")
                .and_then(|n| n.parse::<u64>().ok())
            {
                steps.push((n, path));
            }
        }
        steps.sort();
        let kept: Vec<u64> = steps
            .iter()
            .filter(|(n, _)| *n <= step)
            .rev()
            .take(keep)
            .map(|(n, _)| *n)
            .collect();
        for (n, path) in steps {
            if !kept.contains(&n) {
                std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
                crash_point();
            }
        }
        Ok(())
    }

    /// Remove what a crashed training left past the committed checkpoint.
    pub fn clean_uncommitted(&self, keep: usize) -> Result<()> {
        if let Some((step, _)) = self.committed()? {
            self.prune(step, keep.max(1))?;
        }
        Ok(())
    }

    /// Load the committed checkpoint, checking that its parts belong to the same step.
    pub fn load_checkpoint(&self) -> Result<(NamedParams, AdamW, TrainState)> {
        let (_, dir) = self.committed()?.ok_or_else(|| Error::Checkpoint {
            path: self.path.clone(),
            msg: "no checkpoint to resume from".into(),
        })?;
        let state: TrainState = read_json_at(&dir.join("state.json"))?;
        let p = dir.join("optimizer.safetensors");
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

    /// Drop metrics lines (and TensorBoard events) logged after `step` (they belong to work lost
    /// before a resume).
    pub fn truncate_metrics(&self, step: u64) -> Result<()> {
        crate::report::tensorboard::truncate(&self.path, step)?;
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
        writeln!(f, "{v}").map_err(|e| Error::io(&p, e))?;
        // The same numbers for TensorBoard.
        let step = v.get("step").and_then(|s| s.as_u64()).unwrap_or(0);
        crate::report::tensorboard::append(
            &self.path,
            step,
            &crate::report::tensorboard::scalars(v),
        )
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

/// A data spec as part of a directory name: letters, digits and dashes, at most 40.
pub fn data_slug(data: &str) -> String {
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
    clean.trim_matches('-').chars().take(40).collect()
}

/// The first free `runs/<model>-<data>-N` directory.
pub fn default_run_dir(model: ModelKind, data: &str) -> PathBuf {
    let clean = data_slug(data);
    (1..)
        .map(|i| Path::new("runs").join(format!("{model}-{clean}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| PathBuf::from("runs/run"))
}
