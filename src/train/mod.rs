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

pub use step::{loss_and_grads, step_grads, StepGrads};

use crate::data::{batches, Binarize};
use crate::models::{Model, ModelVisitor};
use crate::optim::fit::{fit, StepLoss, Stopped};
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
}

/// How a training invocation ended.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub step: u64,
    pub interrupted: bool,
    pub timed_out: bool,
    pub examples_per_sec: f64,
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
    let (run, new_spec) = open::open::<M>(cfg, section, opts)?;
    let open::Setup {
        spec,
        mut model,
        mut params,
        mut opt,
        state,
    } = open::setup::<M>(&run, section, new_spec, &device)?;
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
    let mut hooks = hooks::RunHooks::<M> {
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
        let mut rows = batches::gather(&train_rows, dim, &idx);
        let labels = train_ds
            .labels
            .as_ref()
            .map(|l| idx.iter().map(|&i| l[i]).collect::<Vec<u32>>());
        if binarize == Some(Binarize::Dynamic) {
            rows = batches::binarize(&rows, &mut st.rng);
        }
        if dequant {
            rows = batches::dequantize(&rows, &mut st.rng);
        }
        let b = idx.len();
        model.at_step(step);
        let s = step_grads(
            &model,
            p,
            rows,
            labels,
            b,
            dim,
            &device,
            &mut st.rng,
            model.train_shards(cfg.threads),
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
    let ended = fit(
        &mut params,
        &mut opt,
        &cfg.optim,
        start,
        cfg.steps,
        step_loss,
        &mut hooks,
    );
    let (step, stopped) = match ended {
        Ok(r) => r,
        Err(e) => {
            opts.progress.finish();
            return Err(e);
        }
    };
    if stopped.is_some() {
        hooks.checkpoint(&params, &opt)?;
    } else {
        state.borrow_mut().elapsed_secs = start_elapsed + hooks.t0.elapsed().as_secs_f64();
    }
    opts.progress.finish();
    Ok(TrainOutcome {
        step,
        interrupted: stopped == Some(Stopped::Interrupted),
        timed_out: stopped == Some(Stopped::TimedOut),
        examples_per_sec: hooks.last_rate,
    })
}
