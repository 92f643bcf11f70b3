//! The run's side of the training loop ([`crate::optim::fit`]): metrics, held-out evaluation
//! of the EMA weights, sample grids a person can watch, checkpoints, the time budget and
//! Ctrl-C/SIGTERM, and the progress shown to the user.

use std::cell::RefCell;
use std::sync::atomic::Ordering;
use std::time::Instant;

use burn::tensor::Device;

use super::TrainOptions;
use crate::data::Binarize;
use crate::models::{elbo_rows, summarize, Model};
use crate::optim::fit::{FitHooks, StepDone, Stopped};
use crate::optim::AdamW;
use crate::params::{self, NamedParams};
use crate::progress::Progress;
use crate::rng::{derived, streams};
use crate::run::{DataInfo, RunConfig, RunDir, TrainState};
use crate::units::Unit;
use crate::{Error, Result};

/// Everything the hooks of one training need.
pub(super) struct RunHooks<'a, M: Model> {
    pub dir: &'a RunDir,
    pub cfg: &'a RunConfig,
    pub section: &'a M::Config,
    pub spec: &'a M::Spec,
    pub info: &'a DataInfo,
    pub state: &'a RefCell<TrainState>,
    pub opts: &'a TrainOptions<'a>,
    pub progress: &'a dyn Progress,
    /// Held-out rows (as the model sees them) and labels, and where they are evaluated.
    pub eval_x: Vec<f32>,
    pub eval_y: Option<Vec<u32>>,
    pub eval_n: usize,
    pub eval_device: Device,
    pub binarize: Option<Binarize>,
    pub unit: Unit,
    pub dim: usize,
    pub start_elapsed: f64,
    pub t0: Instant,
    /// loss sum, −ELBO sum, grad-norm sum, count, since, examples.
    pub window: (f64, f64, f64, usize, Instant, u64),
    pub last_rate: f64,
    pub held_out: Option<f64>,
    pub last_checkpoint: u64,
}

impl<M: Model> RunHooks<'_, M> {
    fn elapsed(&self) -> f64 {
        self.start_elapsed + self.t0.elapsed().as_secs_f64()
    }

    /// Commit a checkpoint of the current parameters and state.
    pub fn checkpoint(&mut self, params: &NamedParams, opt: &AdamW) -> Result<()> {
        let mut st = self.state.borrow_mut();
        st.elapsed_secs = self.elapsed();
        let w = opt.eval_weights(&self.cfg.optim, params);
        self.dir
            .save_checkpoint(params, opt, w, &st, self.cfg.keep_checkpoints)?;
        self.last_checkpoint = st.step;
        Ok(())
    }

    /// The held-out bound of the EMA weights: metrics, the progress message, and a grid.
    fn evaluate(&mut self, step: u64, params: &NamedParams, opt: &AdamW) -> Result<()> {
        let m = M::build(self.section, self.spec, &self.eval_device)?;
        let m = params::assign(m, opt.eval_weights(&self.cfg.optim, params))?;
        let mut erng = derived(self.cfg.seed, streams::EVAL_NOISE);
        let rows = elbo_rows(
            &m,
            &self.eval_x,
            self.eval_y.as_deref(),
            self.dim,
            250,
            &self.eval_device,
            &mut erng,
            |_| {},
        )?;
        let mut terms = serde_json::Map::new();
        for (name, s) in summarize(&rows) {
            terms.insert(name, serde_json::json!({"mean": s.mean, "se": s.se}));
        }
        self.held_out = summarize(&rows).last().map(|(_, s)| s.mean);
        let per_dim = self.held_out.map(|v| self.unit.per_dim(v, self.dim));
        self.dir.log_metrics(&serde_json::json!({
            "step": step,
            "eval": {"split": "test", "n": self.eval_n, "terms": terms,
                     "unit": self.unit, "total_per_dim": per_dim},
        }))?;
        // A small grid of samples at every evaluation: progress a person can see. Drawing it
        // is a convenience; a failure does not stop training.
        if let (true, Some((h, w))) = (self.cfg.grid > 0, self.info.image_hw()) {
            let _ = progress_grid(
                &m,
                self.dir,
                step,
                self.cfg,
                [h, w],
                self.binarize.is_some(),
            );
        }
        Ok(())
    }
}

impl<M: Model> FitHooks for RunHooks<'_, M> {
    fn before(&mut self, _done: u64) -> Option<Stopped> {
        if self.opts.stop.load(Ordering::SeqCst) {
            return Some(Stopped::Interrupted);
        }
        let budget = (self.cfg.max_minutes > 0.0).then_some(self.cfg.max_minutes * 60.0);
        match budget {
            Some(b) if self.elapsed() >= b => Some(Stopped::TimedOut),
            _ => None,
        }
    }

    fn after(&mut self, s: &StepDone, params: &NamedParams, opt: &AdamW) -> Result<()> {
        {
            let mut st = self.state.borrow_mut();
            st.step = s.step;
            st.examples_seen += s.examples as u64;
        }
        let w = &mut self.window;
        w.0 += s.loss;
        w.1 += s.report;
        w.2 += s.grad_norm;
        w.3 += 1;
        w.5 += s.examples as u64;
        let cfg = self.cfg;
        if s.step % cfg.log_every == 0 || s.step == cfg.steps {
            let secs = self.window.4.elapsed().as_secs_f64().max(1e-9);
            self.last_rate = self.window.5 as f64 / secs;
            let k = self.window.3 as f64;
            let (mean_loss, mean_elbo) = (self.window.0 / k, self.window.1 / k);
            self.dir.log_metrics(&serde_json::json!({
                "step": s.step,
                "loss": mean_loss,
                "neg_elbo": mean_elbo,
                "grad_norm": self.window.2 / k,
                "lr": s.lr,
                "examples_per_sec": self.last_rate,
                "elapsed_secs": self.elapsed(),
            }))?;
            // The held-out bound is the plain ELBO whatever the objective: the bound being
            // traded (or not) for a weighted objective shows here.
            let ho = self
                .held_out
                .map(|h| {
                    format!(
                        " | held-out −ELBO {:.4} {}",
                        self.unit.per_dim(h, self.dim),
                        self.unit.label()
                    )
                })
                .unwrap_or_default();
            self.progress.message(&format!(
                "−ELBO {mean_elbo:.2}{ho} | {:.0} ex/s",
                self.last_rate
            ));
            self.window = (0.0, 0.0, 0.0, 0, Instant::now(), 0);
        }
        self.progress.inc(1);
        let last = s.step == cfg.steps;
        if s.step % cfg.eval_every == 0 || last {
            self.evaluate(s.step, params, opt)?;
        }
        if s.step % cfg.checkpoint_every == 0 || last {
            self.checkpoint(params, opt)?;
        }
        Ok(())
    }

    fn last_checkpoint(&self) -> u64 {
        self.last_checkpoint
    }
}

/// Sixteen samples of the EMA model by its own sampler (a VDM: ancestral in 100 steps, since on
/// mnist10k DDIM's 50 deterministic steps drew FD-classifier 222 where these draw 107,
/// BENCHMARKS.md §8; an NCSN: annealed Langevin at 20 steps per level) as
/// `DIR/progress/step-N.png`, and the strip of those grids over training as
/// `DIR/samples_over_training.png` (at most ten, evenly spaced, left to right).
fn progress_grid<M: Model>(
    m: &M,
    dir: &RunDir,
    step: u64,
    cfg: &RunConfig,
    hw: [usize; 2],
    binary: bool,
) -> Result<()> {
    // The model's own sampler, at the steps it names for a preview.
    let opts = crate::sample::SampleOptions {
        steps: m.preview_steps(),
        ..crate::sample::SampleOptions::ancestral(cfg.seed, cfg.threads)
    };
    let n = 16;
    let v = m.draw(n, &opts, None, &|| ())?.values;
    let white = if binary { 1.0 } else { 255.0 };
    let v: Vec<f32> = v.iter().map(|x| x / white).collect();
    let pdir = dir.file("progress");
    std::fs::create_dir_all(&pdir).map_err(|e| Error::io(&pdir, e))?;
    let png = pdir.join(format!("step-{step:010}.png"));
    crate::report::grid::save_grid(&png, &v, n, hw[0], hw[1], 1)?;
    // The grid for TensorBoard too.
    let bytes = std::fs::read(&png).map_err(|e| Error::io(&png, e))?;
    let hd = crate::raster::header(&png)?;
    let (width, height) = (hd.width, hd.height);
    crate::report::tensorboard::append(
        &dir.path,
        step,
        &[(
            "samples".into(),
            crate::report::tensorboard::Value::Image {
                png: bytes,
                height,
                width,
            },
        )],
    )?;
    let mut grids: Vec<std::path::PathBuf> = std::fs::read_dir(&pdir)
        .map_err(|e| Error::io(&pdir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    grids.sort();
    let k = grids.len();
    let picked: Vec<&std::path::PathBuf> = if k <= 10 {
        grids.iter().collect()
    } else {
        (0..10).map(|i| &grids[i * (k - 1) / 9]).collect()
    };
    crate::report::grid::save_strip(&dir.file("samples_over_training.png"), &picked)
}
