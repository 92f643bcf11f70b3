//! Training: one loop for every model ([`crate::optim::fit`]), AdamW with warm-up and
//! clipping, EMA weights for evaluation, seeded and deterministic (N steps + resume + N steps =
//! 2N steps), periodic held-out evaluation, atomic checkpoints, `metrics.jsonl`, progress, and a
//! clean stop on a NaN loss (naming the step) or on Ctrl-C (saving first).
//!
//! [`open`] opens the run (data, configuration, memory, directory) and sets up the model and
//! its state; [`step`] computes a step's loss and gradients; [`hooks`] is the run's side of the
//! loop (metrics, evaluation, grids, checkpoints).

pub mod distill;
mod hooks;
pub mod noisy_classifier;
mod open;
pub mod step;

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use burn::tensor::Device;

pub use step::{choose_ops, loss_and_grads, step_grads, step_grads_across, Ops, StepGrads};

use crate::comm::Comm;
use crate::data::{batches, Binarize};
use crate::models::{Model, ModelVisitor};
use crate::optim::fit::{fit, FitHooks, StepDone, StepLoss, Stopped};
use crate::optim::AdamW;
use crate::params::NamedParams;
use crate::progress::Progress;
use crate::rng::{derived, streams};
use crate::run::RunConfig;
use crate::units::Unit;
use crate::Result;

/// Options of one training invocation beyond the config.
pub struct TrainOptions<'a> {
    pub out: &'a Path,
    pub resume: bool,
    /// Set by a signal handler (Ctrl-C, SIGTERM): save a checkpoint and stop.
    pub stop: &'a AtomicBool,
    /// Told how far training has come (a progress bar, or `&()` for nothing).
    pub progress: &'a dyn Progress,
    pub device: Device,
    /// Told what the user should know and would not expect (a clamped batch size, a run
    /// started again because it had no checkpoint).
    pub note: &'a dyn Fn(&str),
    /// Train even a model whose estimated memory is beyond [`crate::limits::memory_limit`].
    pub force: bool,
    /// The processes training this run together ([`crate::comm::Solo`] for one): rank 0 writes
    /// the run, every rank computes its share of each batch.
    pub comm: &'a dyn Comm,
    /// Several GPUs of this process, one shard of each step on each, their gradients summed by
    /// the devices' all-reduce ([`crate::device::devices`]); empty: `device` alone.
    pub devices: Vec<Device>,
}

/// How a training invocation ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub step: u64,
    pub interrupted: bool,
    pub timed_out: bool,
    pub examples_per_sec: f64,
    /// Seconds per step spent in collective operations across ranks (0 for one process).
    pub comm_secs_per_step: f64,
}

/// Train (or resume) the model `cfg` names: the dispatch from a configuration to its model type.
pub fn train(cfg: &RunConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    struct Train<'a>(&'a RunConfig, &'a TrainOptions<'a>);
    impl ModelVisitor for Train<'_> {
        type Output = Result<TrainOutcome>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            train_model::<M>(self.0, section, self.1)
        }
    }
    cfg.model.visit(Train(cfg, opts))
}

/// Train (or resume) a model as `cfg` says, writing the run directory: open the run, set up the
/// model and its state, and run the loop with the run's hooks.
fn train_model<M: Model>(
    cfg: &RunConfig,
    section: &M::Config,
    opts: &TrainOptions,
) -> Result<TrainOutcome> {
    let device = opts.device.clone();
    let comm = opts.comm;
    let (run, new_spec) = open::open::<M>(cfg, section, opts)?;
    // Rank 0 writes (or reads, on resume) the committed checkpoint; the other ranks wait for it
    // and read it: every rank starts from the same bits.
    let setup = if comm.is_root() {
        let s = open::setup::<M>(&run, section, new_spec, &device, comm.size())?;
        comm.barrier();
        s
    } else {
        comm.barrier();
        open::follow::<M>(&run, section, &device)?
    };
    let open::Setup {
        spec,
        mut model,
        mut params,
        mut opt,
        state,
    } = setup;
    // Shards per rank: one per device where there are several, else per thread as the model
    // chooses; rank 0's choice, so that every rank cuts the batch the same way.
    let devices = &opts.devices;
    let _collectives = crate::device::collectives(devices);
    let mut shards_per_rank = [if devices.len() > 1 {
        devices.len()
    } else {
        model.train_shards(run.cfg.threads)
    } as u64];
    comm.broadcast_u64(&mut shards_per_rank);
    let shards_per_rank = shards_per_rank[0] as usize;
    let comm_at_start = comm.seconds();
    let cfg = &run.cfg;
    let (train_ds, test_ds, info) = (&run.train, &run.test, &run.info);
    let dim = train_ds.dim();
    let dequant = info.dequantized;

    let binarize = M::binarize(section, &spec);
    let train_rows = match binarize {
        Some(Binarize::Static) => batches::binarize(
            &train_ds.x,
            &mut derived(cfg.seed, streams::STATIC_BINARIZE),
        ),
        _ => train_ds.x.clone(),
    };
    let eval_ds = test_ds.head(cfg.eval_examples);
    let start = state.step;
    let start_elapsed = state.elapsed_secs;
    let state = RefCell::new(state);
    let mut run_hooks = comm.is_root().then(|| hooks::RunHooks::<M> {
        dir: &run.dir,
        cfg,
        section,
        spec: &spec,
        info,
        state: &state,
        opts,
        progress: opts.progress,
        eval_x: info.eval_rows(&eval_ds, binarize, cfg.seed),
        eval_y: eval_ds.labels.clone(),
        eval_n: eval_ds.n,
        eval_device: device.clone().inner(),
        binarize,
        unit: Unit::of(info.is_image(), binarize.is_some()),
        dim,
        start_elapsed,
        t0: Instant::now(),
        window: (0.0, 0.0, 0.0, 0, Instant::now(), 0),
        last_rate: 0.0,
        held_out: None,
        last_checkpoint: start,
    });
    // A step's batch as the model sees it: binarised or dequantised with `rng`'s noise.
    let prepare = |rows: Vec<f32>, rng: &mut crate::rng::Rng| {
        let rows = match binarize {
            Some(Binarize::Dynamic) => batches::binarize(&rows, rng),
            _ => rows,
        };
        if dequant {
            batches::dequantize(&rows, rng)
        } else {
            rows
        }
    };
    // A small one-shard network may run faster with its operations on one thread (measured
    // here, on this machine, on a trial batch with noise of its own; the result is the same
    // either way). A failed trial leaves the default: the step itself reports any error.
    let ops = if comm.size() == 1 && devices.len() <= 1 {
        let b = cfg.batch_size.min(train_ds.n);
        let rows = prepare(
            train_rows[..b * dim].to_vec(),
            &mut derived(cfg.seed, streams::OPS_TRIAL),
        );
        step::choose_ops(
            &model,
            &params,
            &rows,
            train_ds.labels.as_deref(),
            b,
            dim,
            &device,
            shards_per_rank,
        )
        .unwrap_or_default()
    } else {
        step::Ops::AllThreads
    };
    opts.progress.start("training", cfg.steps);
    opts.progress.set_position(start);
    let n_train = train_ds.n;
    // One step: a batch in the run's data order, binarised or dequantised with the run's noise,
    // the model's loss and its gradient (the batch split over threads where that pays).
    let step_loss = |step: u64, p: &crate::params::NamedParams| -> Result<StepLoss> {
        if step > start {
            model = crate::params::assign(model.clone(), p)?;
        }
        let mut st = state.borrow_mut();
        let idx = st.order.next_batch(n_train, cfg.batch_size);
        let rows = prepare(batches::gather(&train_rows, dim, &idx), &mut st.rng);
        let labels = train_ds
            .labels
            .as_ref()
            .map(|l| idx.iter().map(|&i| l[i]).collect::<Vec<u32>>());
        let b = idx.len();
        model.at_step(step);
        let s = step_grads_across(
            &model,
            p,
            rows,
            labels,
            b,
            dim,
            &device,
            &mut st.rng,
            shards_per_rank,
            comm,
            devices,
            ops,
        )?;
        if !s.draws.is_empty() {
            model.learn(&s.draws);
            st.model_state = model.train_state();
        }
        Ok(StepLoss {
            loss: s.loss,
            report: s.neg_elbo,
            grads: s.grads,
            examples: b,
        })
    };
    let mut no_hooks = ();
    let mut agreed = Agreed {
        inner: match &mut run_hooks {
            Some(h) => h,
            None => &mut no_hooks,
        },
        comm,
    };
    let ended = fit(
        &mut params,
        &mut opt,
        &cfg.optim,
        start,
        cfg.steps,
        step_loss,
        &mut agreed,
    );
    let (step, stopped) = match ended {
        Ok(r) => r,
        Err(e) => {
            opts.progress.finish();
            return Err(e);
        }
    };
    let mut rate = 0.0;
    if let Some(hooks) = &mut run_hooks {
        if stopped.is_some() {
            hooks.checkpoint(&params, &opt)?;
        } else {
            state.borrow_mut().elapsed_secs = start_elapsed + hooks.t0.elapsed().as_secs_f64();
        }
        rate = hooks.last_rate;
    }
    opts.progress.finish();
    Ok(TrainOutcome {
        step,
        interrupted: stopped == Some(Stopped::Interrupted),
        timed_out: stopped == Some(Stopped::TimedOut),
        examples_per_sec: rate,
        comm_secs_per_step: (comm.seconds() - comm_at_start) / (step - start).max(1) as f64,
    })
}

/// The hooks of a run shared by ranks: rank 0's decision to stop (Ctrl-C, the time budget)
/// is every rank's, so all of them stop before the same step; the rest is rank 0's own.
struct Agreed<'a> {
    inner: &'a mut dyn FitHooks,
    comm: &'a dyn Comm,
}

impl FitHooks for Agreed<'_> {
    fn before(&mut self, done: u64) -> Option<Stopped> {
        let mine = self.inner.before(done);
        if self.comm.size() == 1 {
            return mine;
        }
        let mut v = [match mine {
            None => 0,
            Some(Stopped::Interrupted) => 1,
            Some(Stopped::TimedOut) => 2,
        }];
        self.comm.broadcast_u64(&mut v);
        match v[0] {
            1 => Some(Stopped::Interrupted),
            2 => Some(Stopped::TimedOut),
            _ => None,
        }
    }
    fn after(&mut self, s: &StepDone, params: &NamedParams, opt: &AdamW) -> Result<()> {
        self.inner.after(s, params, opt)
    }
    fn last_checkpoint(&self) -> u64 {
        self.inner.last_checkpoint()
    }
}
