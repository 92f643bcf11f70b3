//! Opening a run for training: the data loaded and the configuration resolved for them, the
//! model's memory checked before anything is written or allocated, and the run directory
//! claimed (or refused, naming what it holds) and locked; then the model, its parameters, the
//! optimiser and the training state, fresh or from the committed checkpoint.

use burn::tensor::Device;

use super::TrainOptions;
use crate::data::{self, batches, BatchOrder, DataKind, Dataset, Split};
use crate::models::Model;
use crate::optim::AdamW;
use crate::params::{self, NamedParams};
use crate::rng::{derived, streams};
use crate::run::{DataInfo, DirStatus, ModelFile, RunConfig, RunDir, TrainState};
use crate::{Error, Result};

/// A run opened for training: the directory (locked), the resolved configuration and the
/// data.
pub(super) struct Opened {
    pub dir: RunDir,
    /// Held by the rank that writes the run (none on the other ranks of an MPI run).
    pub _lock: Option<crate::run::dir::RunLock>,
    pub cfg: RunConfig,
    pub train: Dataset,
    pub test: Dataset,
    pub info: DataInfo,
    /// Whether a committed run is continued.
    pub resume: bool,
}

/// The model and its optimisation state, ready for the loop.
pub(super) struct Setup<M: Model> {
    pub spec: M::Spec,
    pub model: M,
    pub params: NamedParams,
    pub opt: AdamW,
    pub state: TrainState,
}

/// Load the data, resolve `cfg` for them, check the model's memory, and claim and lock the
/// run directory. Returns the opened run and the spec a fresh model would have.
pub(super) fn open<M: Model>(
    cfg: &RunConfig,
    section: &M::Config,
    opts: &TrainOptions,
) -> Result<(Opened, M::Spec)> {
    let dir = RunDir::new(opts.out);
    let train = data::load(&cfg.data, Split::Train)?;
    let test = data::load(&cfg.data, Split::Test)?;
    let mut cfg = cfg.clone();
    cfg.resolve_for_data(train.kind);
    cfg.resolve();
    if cfg.batch_size > train.n {
        (opts.note)(&format!(
            "batch size {} is more than the {} training examples: using {}",
            cfg.batch_size, train.n, train.n
        ));
        cfg.batch_size = train.n;
    }
    cfg.validate()?;

    // Dequantised 8-bit images are continuous data to the model.
    let dequant = cfg.dequantize && train.kind == DataKind::Image8;
    let mut spec_ds = train.clone();
    if dequant {
        spec_ds.x = batches::dequantize(&train.x, &mut derived(cfg.seed, streams::STATIC_BINARIZE));
        spec_ds.kind = DataKind::Continuous;
    }
    let info = DataInfo {
        shape: train.shape.clone(),
        kind: spec_ds.kind,
        dequantized: dequant,
    };
    // The model's size, from its configuration (a resumed run's own spec), before anything is
    // written or allocated.
    let new_spec = M::spec(section, &spec_ds, cfg.scaling)?;
    let sized_spec = match (opts.resume, crate::run::model_spec_of::<M>(&dir)) {
        (true, Ok((_, s))) => s,
        _ => new_spec.clone(),
    };
    crate::models::check_training_memory::<M>(
        section,
        &sized_spec,
        train.dim(),
        cfg.batch_size,
        opts.force,
    )?;
    if !opts.comm.is_root() {
        // Another rank of an MPI run: rank 0 claims and writes the directory; this rank reads
        // the checkpoint rank 0 committed ([`follow`]).
        return Ok((
            Opened {
                dir,
                _lock: None,
                cfg,
                train,
                test,
                info,
                resume: opts.resume,
            },
            new_spec,
        ));
    }

    // The directory: ours or refused, then locked before anything in it changes.
    let refuse = |msg: String| {
        Err(Error::Checkpoint {
            path: dir.path.clone(),
            msg,
        })
    };
    let status = dir.status()?;
    match (&status, opts.resume) {
        (DirStatus::Foreign(names), _) => {
            let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
            return refuse(format!(
                "exists and is not an elbo run directory (it holds {}{}); choose a new or empty \
                 --out directory",
                shown.join(", "),
                if names.len() > 8 { ", …" } else { "" }
            ));
        }
        (DirStatus::Missing, true) => {
            return refuse("holds no run to resume; train one with `elbo train --out DIR`".into())
        }
        (DirStatus::Empty, true) => (opts.note)(&format!(
            "{}: nothing to resume here yet (a run killed before it began?); starting it",
            dir.path.display()
        )),
        _ => {}
    }
    dir.claim()?;
    let lock = dir.lock()?;
    let resume = match dir.status()? {
        DirStatus::Run { step } if !opts.resume => {
            return refuse(format!(
                "already holds a run (at step {step}); pass --resume to continue it (with \
                 --steps N to train longer) or choose another --out"
            ))
        }
        DirStatus::Run { .. } => true,
        DirStatus::Unstarted => {
            // (A directory this invocation just created is unstarted too: no note for it.)
            if matches!(status, DirStatus::Unstarted) {
                (opts.note)(&format!(
                    "{}: the run here stopped before its first checkpoint; starting it again",
                    dir.path.display()
                ));
            }
            dir.reset()?;
            false
        }
        _ => false,
    };
    Ok((
        Opened {
            dir,
            _lock: Some(lock),
            cfg,
            train,
            test,
            info,
            resume,
        },
        new_spec,
    ))
}

/// The model, its parameters, the optimiser and the state: from the committed checkpoint of a
/// resumed run (its recorded configuration checked against this one), or fresh, with
/// `config.json`, `model.json` and the step-0 checkpoint written at once.
pub(super) fn setup<M: Model>(
    run: &Opened,
    section: &M::Config,
    new_spec: M::Spec,
    device: &Device,
    ranks: usize,
) -> Result<Setup<M>> {
    let (dir, cfg) = (&run.dir, &run.cfg);
    if run.resume {
        dir.clean_uncommitted(cfg.keep_checkpoints)?;
        let (mf, spec) = crate::run::model_spec_of::<M>(dir)?;
        if mf.data != run.info {
            return Err(Error::Checkpoint {
                path: dir.file("model.json"),
                msg: format!(
                    "the run was trained on data of shape {:?}; '{}' has {:?}",
                    mf.data.shape, cfg.data, run.info.shape
                ),
            });
        }
        let (params, opt, mut state) = dir.load_checkpoint()?;
        if state.ranks != ranks {
            // The shards of a step, and so the run's numbers, depend on the number of
            // processes: continuing under another count would silently make a different run.
            return Err(Error::Checkpoint {
                path: dir.path.clone(),
                msg: format!(
                    "the run was trained by {} process{} and this resume has {ranks}: resume it \
                     as it was trained ({}), or train a new run",
                    state.ranks,
                    if state.ranks == 1 {
                        ""
                    } else {
                        "es (MPI ranks)"
                    },
                    if state.ranks == 1 {
                        "without mpirun".to_string()
                    } else {
                        format!("`mpirun -np {} elbo train --resume …`", state.ranks)
                    }
                ),
            });
        }
        if let Some(recorded) = &state.config {
            cfg.check_resume(recorded).map_err(|e| Error::Checkpoint {
                path: dir.path.clone(),
                msg: format!(
                    "its checkpoint of step {} records the configuration the run was trained \
                     with, and this resume differs from it (was config.json edited?): {e}",
                    state.step
                ),
            })?;
        }
        state.config = Some(cfg.clone());
        if cfg.steps < state.step {
            return Err(Error::Config(format!(
                "--steps {} is below the run's step {}: a run cannot be shortened (its checkpoint \
                 stays as it is); pass --steps {} or more",
                cfg.steps, state.step, state.step
            )));
        }
        let model = restored::<M>(dir, section, &spec, &params, &state, device)?;
        dir.truncate_metrics(state.step)?;
        // The resumed configuration (what a resume may change: steps, minutes, …).
        dir.write_json("config.json", cfg)?;
        Ok(Setup {
            spec,
            model,
            params,
            opt,
            state,
        })
    } else {
        let spec = new_spec;
        device.seed(cfg.seed);
        let mut model = M::build(section, &spec, device)?;
        let mut params = params::collect(&model)?; // also fixes the lazy initialisation order
        if let Some(w) = crate::models::ModelSettings::warm_start(section) {
            // Before anything is written: a run that cannot start leaves nothing behind.
            warm_start(&w, cfg, section, &run.info, &spec, &mut params)?;
            model = params::assign(model, &params)?;
        }
        dir.write_json("config.json", cfg)?;
        let opt = AdamW::new(&params);
        let state = TrainState {
            step: 0,
            rng: derived(cfg.seed, streams::TRAIN_NOISE),
            order: BatchOrder::new(cfg.seed),
            elapsed_secs: 0.0,
            examples_seen: 0,
            config: Some(cfg.clone()),
            model_state: model.train_state(),
            ranks,
        };
        let mf = ModelFile {
            model: cfg.model.kind(),
            data: run.info.clone(),
            spec: serde_json::to_value(&spec).map_err(|e| Error::Invalid(e.to_string()))?,
            num_params: params::count(&params),
        };
        dir.write_json("model.json", &mf)?;
        // Step 0 committed at once: from here on a killed run can always be resumed.
        dir.save_checkpoint(&params, &opt, &params, &state, cfg.keep_checkpoints)?;
        Ok(Setup {
            spec,
            model,
            params,
            opt,
            state,
        })
    }
}

/// The setup of a rank other than 0 in an MPI run, once rank 0's [`setup`] has committed the
/// checkpoint: the model, parameters, optimiser and state read from it, nothing written. Every
/// rank then starts from the same bits.
pub(super) fn follow<M: Model>(
    run: &Opened,
    section: &M::Config,
    device: &Device,
) -> Result<Setup<M>> {
    let dir = &run.dir;
    let (_, spec) = crate::run::model_spec_of::<M>(dir)?;
    let (params, opt, state) = dir.load_checkpoint()?;
    let model = restored::<M>(dir, section, &spec, &params, &state, device)?;
    Ok(Setup {
        spec,
        model,
        params,
        opt,
        state,
    })
}

/// The model of a checkpoint: built from its spec, its parameters written in, and what training
/// changed outside them (an adaptive proposal) restored.
fn restored<M: Model>(
    dir: &RunDir,
    section: &M::Config,
    spec: &M::Spec,
    params: &NamedParams,
    state: &TrainState,
    device: &Device,
) -> Result<M> {
    let mut model = params::assign(M::build(section, spec, device)?, params)?;
    if let Some(v) = &state.model_state {
        model.set_train_state(v).map_err(|e| Error::Checkpoint {
            path: dir.path.clone(),
            msg: format!("its checkpoint's model state: {e}"),
        })?;
    }
    Ok(model)
}

/// Overwrite the parameters under `w.prefix` with the evaluation weights of the trained run
/// `w.run`, after checking that it is a run of `w.kind` on the same data whose spec is the
/// submodule's; every parameter under the prefix must be there with its shape.
fn warm_start<C: serde::Serialize, S: serde::Serialize>(
    w: &crate::models::WarmStart,
    cfg: &RunConfig,
    section: &C,
    info: &DataInfo,
    spec: &S,
    params: &mut NamedParams,
) -> Result<()> {
    let src = RunDir::new(&w.run);
    let refuse = |msg: String| Error::Config(format!("{} = {}: {msg}", w.key, w.run.display()));
    src.check().map_err(|e| refuse(e.to_string()))?;
    let file = src.model_file().map_err(|e| refuse(e.to_string()))?;
    if file.model.name() != w.kind {
        return Err(refuse(format!(
            "a {} run; this needs a trained {} run",
            file.model.name(),
            w.kind
        )));
    }
    let src_cfg = src.config().map_err(|e| refuse(e.to_string()))?;
    if &file.data != info || src_cfg.data != cfg.data {
        return Err(refuse(format!(
            "trained on other data ({} as {:?}); this run's are {} as {:?}",
            src_cfg.data, file.data, cfg.data, info
        )));
    }
    // The settings that shape the submodule, key by key, named where they differ.
    let json =
        |v: serde_json::Result<serde_json::Value>| v.map_err(|e| Error::Invalid(e.to_string()));
    let (theirs, ours) = (
        json(serde_json::to_value(&src_cfg))?,
        json(serde_json::to_value(section))?,
    );
    let (theirs, ours) = (&theirs[w.kind], &ours[w.prefix]);
    if let (Some(t), Some(o)) = (theirs.as_object(), ours.as_object()) {
        let differ: Vec<String> = t
            .iter()
            .filter(|(k, v)| {
                o.get(*k).is_some_and(|ov| ov != *v) && !w.free_keys.contains(&k.as_str())
            })
            .map(|(k, v)| format!("{}.{k} = {v} there, {} here", w.prefix, o[k]))
            .collect();
        if !differ.is_empty() {
            return Err(refuse(format!(
                "its {} settings differ from this run's: {}; set them as it was trained",
                w.kind,
                differ.join(", ")
            )));
        }
    }
    let ours = serde_json::to_value(spec).map_err(|e| Error::Invalid(e.to_string()))?;
    if ours.get(w.prefix) != Some(&file.spec) {
        return Err(refuse(format!(
            "its {} differs from this run's (its spec {}, this run's {}): give this run the \
             same {} settings as it was trained with",
            w.kind,
            file.spec,
            ours.get(w.prefix).cloned().unwrap_or_default(),
            w.kind
        )));
    }
    let weights = src.model_weights().map_err(|e| refuse(e.to_string()))?;
    let head = format!("{}.", w.prefix);
    let mut used = 0;
    for (name, p) in params.iter_mut() {
        let Some(rest) = name.strip_prefix(&head) else {
            continue;
        };
        match weights.get(rest) {
            Some(v) if v.shape == p.shape => {
                *p = v.clone();
                used += 1;
            }
            Some(v) => {
                return Err(refuse(format!(
                    "its parameter {rest} has shape {:?}, this run's {:?}: give this run the same \
                     {} settings as it was trained with",
                    v.shape, p.shape, w.kind
                )))
            }
            None => return Err(refuse(format!("it has no parameter {rest}"))),
        }
    }
    if used != weights.len() {
        return Err(refuse(format!(
            "it has {} parameters, this run's {} has {used}",
            weights.len(),
            w.prefix
        )));
    }
    Ok(())
}
