//! Training: one loop for every model. AdamW with warm-up and clipping, EMA weights for
//! evaluation, seeded and deterministic (N steps + resume + N steps = 2N steps), periodic
//! held-out evaluation, atomic checkpoints, `metrics.jsonl`, a progress bar, and a clean stop on
//! a NaN loss (naming the step) or on Ctrl-C (saving first).

pub mod noisy_classifier;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};

use crate::optim::AdamW;
use crate::params::{self, NamedParams};
use crate::run::{DataInfo, DirStatus, ModelFile, RunConfig, RunDir, TrainState};

use crate::data::{self, batches, BatchOrder, Binarize, DataKind, Split};
use crate::models::{elbo_rows, summarize, Model, ModelVisitor};
use crate::rng::{derived, streams, Rng};
use crate::{Error, Result};

/// The batch's training loss, its −ELBO (the same unless the objective is another, e.g. L_simple),
/// and the gradients of the loss. With `threads` > 1 the batch is split into that many
/// shards, each run forward and backward on its own thread (with its own noise, drawn from a
/// seed taken from `rng`, so the result is deterministic for a given thread count), and the
/// gradients are combined with weights n_shard / B: the gradient of the full-batch mean.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads<M: Model>(
    model: &M,
    params: &NamedParams,
    rows: Vec<f32>,
    labels: Option<Vec<u32>>,
    b: usize,
    dim: usize,
    device: &Device,
    rng: &mut Rng,
    threads: usize,
) -> Result<(f64, f64, NamedParams)> {
    // One shard: (loss, −ELBO, gradients of the loss) of the model on these rows.
    fn shard<M: Model>(
        m: &M,
        rows: Vec<f32>,
        labels: Option<&[u32]>,
        n: usize,
        dim: usize,
        device: &Device,
        rng: &mut Rng,
    ) -> Result<(f64, f64, NamedParams)> {
        let x = Tensor::<2>::from_data(TensorData::new(rows, [n, dim]), device);
        let (loss, terms) = m.loss(x, labels, rng)?;
        let v: f32 = loss.clone().into_scalar();
        let e: f32 = terms.total().mean().into_scalar();
        let grads = loss.backward();
        Ok((v as f64, e as f64, params::collect_grads(m, &grads)?))
    }
    let shards = threads.clamp(1, b);
    if shards == 1 {
        return shard(model, rows, labels.as_deref(), b, dim, device, rng);
    }
    let seeds: Vec<u64> = (0..shards).map(|_| rand::Rng::gen(rng)).collect();
    let sizes: Vec<usize> = (0..shards)
        .map(|i| b / shards + usize::from(i < b % shards))
        .collect();
    let mut parts = Vec::new();
    let mut start = 0;
    for &n in &sizes {
        let y = labels.as_ref().map(|l| l[start..start + n].to_vec());
        parts.push((rows[start * dim..(start + n) * dim].to_vec(), y));
        start += n;
    }
    let results: Vec<Result<(f64, f64, NamedParams)>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .zip(&seeds)
            .zip(&sizes)
            .map(|(((part, y), &seed), &n)| {
                let m = model.clone();
                let device = device.clone();
                s.spawn(move || -> Result<(f64, f64, NamedParams)> {
                    // Fresh leaf tensors: threads must not share autodiff graph nodes.
                    let m = params::assign(m, params)?;
                    let mut r = derived(seed, streams::TRAIN_NOISE);
                    shard(&m, part, y.as_deref(), n, dim, &device, &mut r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Invalid("a training thread panicked".into())))
            })
            .collect()
    });
    let (mut loss, mut neg_elbo) = (0.0, 0.0);
    let mut total: Option<NamedParams> = None;
    for (r, &n) in results.into_iter().zip(&sizes) {
        let (l, e, g) = r?;
        let w = n as f32 / b as f32;
        loss += l * w as f64;
        neg_elbo += e * w as f64;
        match &mut total {
            None => {
                let mut g = g;
                g.values_mut()
                    .for_each(|p| p.data.iter_mut().for_each(|x| *x *= w));
                total = Some(g);
            }
            Some(t) => {
                for (k, p) in t.iter_mut() {
                    if let Some(q) = g.get(k) {
                        p.data
                            .iter_mut()
                            .zip(&q.data)
                            .for_each(|(a, b)| *a += w * b);
                    }
                }
            }
        }
    }
    Ok((loss, neg_elbo, total.unwrap_or_default()))
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
    let (width, height) = image::image_dimensions(&png)
        .map_err(|e| Error::io(&png, std::io::Error::other(e.to_string())))?;
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

/// Options of one training invocation beyond the config.
pub struct TrainOptions<'a> {
    pub out: &'a Path,
    pub resume: bool,
    /// Set by a signal handler (Ctrl-C, SIGTERM): save a checkpoint and stop.
    pub stop: &'a AtomicBool,
    /// Show a progress bar.
    pub progress: bool,
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

/// Train (or resume) a model as `cfg` says, writing the run directory.
fn train_model<M: Model>(
    cfg: &RunConfig,
    section: &M::Config,
    opts: &TrainOptions,
) -> Result<TrainOutcome> {
    let dir = RunDir::new(opts.out);
    let device = opts.device.clone();
    let train_ds = data::load(&cfg.data, Split::Train)?;
    let test_ds = data::load(&cfg.data, Split::Test)?;
    let mut cfg = cfg.clone();
    cfg.resolve_for_data(train_ds.kind);
    cfg.resolve();
    if cfg.batch_size > train_ds.n {
        (opts.note)(&format!(
            "batch size {} is more than the {} training examples: using {}",
            cfg.batch_size, train_ds.n, train_ds.n
        ));
        cfg.batch_size = train_ds.n;
    }
    cfg.validate()?;
    let cfg = &cfg;

    let dim = train_ds.dim();
    // Dequantised 8-bit images are continuous data to the model.
    let dequant = cfg.dequantize && train_ds.kind == DataKind::Image8;
    let mut spec_ds = train_ds.clone();
    if dequant {
        spec_ds.x = batches::dequantize(
            &train_ds.x,
            &mut derived(cfg.seed, streams::STATIC_BINARIZE),
        );
        spec_ds.kind = DataKind::Continuous;
    }
    let info = DataInfo {
        shape: train_ds.shape.clone(),
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
        dim,
        cfg.batch_size,
        opts.force,
    )?;

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
    let _lock = dir.lock()?;
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

    let (spec, mut model, mut params, mut opt, mut state) = if resume {
        dir.clean_uncommitted(cfg.keep_checkpoints)?;
        let (mf, spec) = crate::run::model_spec_of::<M>(&dir)?;
        if mf.data != info {
            return Err(Error::Checkpoint {
                path: dir.file("model.json"),
                msg: format!(
                    "the run was trained on data of shape {:?}; '{}' has {:?}",
                    mf.data.shape, cfg.data, info.shape
                ),
            });
        }
        let (params, opt, mut state) = dir.load_checkpoint()?;
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
        let model = M::build(section, &spec, &device)?;
        let model = params::assign(model, &params)?;
        dir.truncate_metrics(state.step)?;
        // The resumed configuration (what a resume may change: steps, minutes, …).
        dir.write_json("config.json", cfg)?;
        (spec, model, params, opt, state)
    } else {
        dir.write_json("config.json", cfg)?;
        let spec = new_spec;
        device.seed(cfg.seed);
        let model = M::build(section, &spec, &device)?;
        let params = params::collect(&model)?; // also fixes the lazy initialisation order
        let opt = AdamW::new(&params);
        let state = TrainState {
            step: 0,
            rng: derived(cfg.seed, streams::TRAIN_NOISE),
            order: BatchOrder::new(cfg.seed),
            elapsed_secs: 0.0,
            examples_seen: 0,
            config: Some(cfg.clone()),
        };
        let mf = ModelFile {
            model: cfg.model.kind(),
            data: info.clone(),
            spec: serde_json::to_value(&spec).map_err(|e| Error::Invalid(e.to_string()))?,
            num_params: params::count(&params),
        };
        dir.write_json("model.json", &mf)?;
        // Step 0 committed at once: from here on a killed run can always be resumed.
        dir.save_checkpoint(&params, &opt, &params, &state, cfg.keep_checkpoints)?;
        (spec, model, params, opt, state)
    };
    let mut last_checkpoint = state.step;

    let binarize = M::binarize(section, &spec);
    let train_rows = match binarize {
        Some(Binarize::Static) => batches::binarize(
            &train_ds.x,
            &mut derived(cfg.seed, streams::STATIC_BINARIZE),
        ),
        _ => train_ds.x.clone(),
    };
    let unit = crate::units::Unit::of(info.is_image(), binarize.is_some());
    let eval_ds = test_ds.head(cfg.eval_examples);
    let eval_x = info.eval_rows(&eval_ds, binarize, cfg.seed);
    let eval_y = eval_ds.labels.clone();
    let eval_device = device.clone().inner();

    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(cfg.steps);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:28.cyan/blue} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_position(state.step);
        b
    } else {
        indicatif::ProgressBar::hidden()
    };

    let budget = (cfg.max_minutes > 0.0).then_some(cfg.max_minutes * 60.0);
    let start_elapsed = state.elapsed_secs;
    let t0 = Instant::now();
    // loss sum, grad-norm sum, count, since, examples, −ELBO sum
    let mut window = (0.0f64, 0.0f64, 0usize, Instant::now(), 0u64, 0.0f64);
    let mut last_rate = 0.0;
    let mut held_out: Option<f64> = None;
    let mut interrupted = false;
    let mut timed_out = false;
    let n_train = train_ds.n;

    while state.step < cfg.steps {
        if opts.stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        if let Some(b) = budget {
            if start_elapsed + t0.elapsed().as_secs_f64() >= b {
                timed_out = true;
                break;
            }
        }
        let idx = state.order.next_batch(n_train, cfg.batch_size);
        let mut rows = batches::gather(&train_rows, dim, &idx);
        let labels = train_ds
            .labels
            .as_ref()
            .map(|l| idx.iter().map(|&i| l[i]).collect::<Vec<u32>>());
        if binarize == Some(Binarize::Dynamic) {
            rows = batches::binarize(&rows, &mut state.rng);
        }
        if dequant {
            rows = batches::dequantize(&rows, &mut state.rng);
        }
        let b = idx.len();
        model.at_step(state.step);
        let (loss_v, elbo_v, g) = loss_and_grads(
            &model,
            &params,
            rows,
            labels,
            b,
            dim,
            &device,
            &mut state.rng,
            model.train_shards(cfg.threads),
        )?;
        let step_no = state.step + 1;
        if !loss_v.is_finite() || !elbo_v.is_finite() {
            bar.abandon();
            return Err(Error::NonFinite {
                step: step_no,
                value: if loss_v.is_finite() { elbo_v } else { loss_v },
                checkpoint: last_checkpoint,
            });
        }
        let lr = cfg.optim.lr_at(state.step, cfg.steps);
        let norm = opt.step(&cfg.optim, lr, &mut params, &g);
        if !norm.is_finite() {
            bar.abandon();
            return Err(Error::NonFinite {
                step: step_no,
                value: norm,
                checkpoint: last_checkpoint,
            });
        }
        model = params::assign(model, &params)?;
        state.step = step_no;
        state.examples_seen += b as u64;
        window.0 += loss_v;
        window.5 += elbo_v;
        window.1 += norm;
        window.2 += 1;
        window.4 += b as u64;

        if state.step % cfg.log_every == 0 || state.step == cfg.steps {
            let secs = window.3.elapsed().as_secs_f64().max(1e-9);
            last_rate = window.4 as f64 / secs;
            let mean_loss = window.0 / window.2 as f64;
            let mean_elbo = window.5 / window.2 as f64;
            dir.log_metrics(&serde_json::json!({
                "step": state.step,
                "loss": mean_loss,
                "neg_elbo": mean_elbo,
                "grad_norm": window.1 / window.2 as f64,
                "lr": lr,
                "examples_per_sec": last_rate,
                "elapsed_secs": start_elapsed + t0.elapsed().as_secs_f64(),
            }))?;
            let ho = held_out
                .map(|h| format!(" | held-out −ELBO {h:.2}"))
                .unwrap_or_default();
            bar.set_message(format!("−ELBO {mean_elbo:.2}{ho} | {last_rate:.0} ex/s"));
            window = (0.0, 0.0, 0, Instant::now(), 0, 0.0);
        }
        bar.set_position(state.step);

        let last = state.step == cfg.steps;
        if state.step % cfg.eval_every == 0 || last {
            let m = M::build(section, &spec, &eval_device)?;
            let m = params::assign(m, opt.eval_weights(&cfg.optim, &params))?;
            let mut erng = derived(cfg.seed, streams::EVAL_NOISE);
            let rows = elbo_rows(
                &m,
                &eval_x,
                eval_y.as_deref(),
                dim,
                250,
                &eval_device,
                &mut erng,
                |_| {},
            )?;
            let mut terms = serde_json::Map::new();
            for (name, s) in summarize(&rows) {
                terms.insert(name, serde_json::json!({"mean": s.mean, "se": s.se}));
            }
            held_out = summarize(&rows).last().map(|(_, s)| s.mean);
            let per_dim = held_out.map(|v| unit.per_dim(v, dim));
            dir.log_metrics(&serde_json::json!({
                "step": state.step,
                "eval": {"split": "test", "n": eval_ds.n, "terms": terms,
                         "unit": unit, "total_per_dim": per_dim},
            }))?;
            // A small grid of samples at every evaluation: progress a person can see. Drawing
            // it is a convenience; a failure does not stop training.
            if let (true, Some((h, w))) = (cfg.grid > 0, info.image_hw()) {
                let _ = progress_grid(&m, &dir, state.step, cfg, [h, w], binarize.is_some());
            }
        }
        if state.step % cfg.checkpoint_every == 0 || last {
            state.elapsed_secs = start_elapsed + t0.elapsed().as_secs_f64();
            let w = opt.eval_weights(&cfg.optim, &params);
            dir.save_checkpoint(&params, &opt, w, &state, cfg.keep_checkpoints)?;
            last_checkpoint = state.step;
        }
    }
    state.elapsed_secs = start_elapsed + t0.elapsed().as_secs_f64();
    if interrupted || timed_out {
        let w = opt.eval_weights(&cfg.optim, &params);
        dir.save_checkpoint(&params, &opt, w, &state, cfg.keep_checkpoints)?;
    }
    bar.finish_and_clear();
    let total_secs = t0.elapsed().as_secs_f64();
    let rate = if total_secs > 0.0 && last_rate == 0.0 {
        0.0
    } else {
        last_rate
    };
    Ok(TrainOutcome {
        step: state.step,
        interrupted,
        timed_out,
        examples_per_sec: rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Dataset, Scaling};
    use crate::diffusion::Cond;
    use crate::elbo::ElboTerms;
    use crate::models::{LatentVariableModel, ModelSettings};
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use serde::{Deserialize, Serialize};

    /// A model with a noiseless loss, so that one thread and several see the same function:
    /// ‖W x + b − x‖² per example (as a "reconstruction" term).
    #[derive(Module, Debug)]
    struct Affine {
        l: Linear,
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct AffineConfig;

    impl ModelSettings for AffineConfig {
        fn defaults_for(_: DataKind) -> (u64, usize) {
            (1, 1)
        }
    }

    impl LatentVariableModel for Affine {
        fn elbo(&self, x: Tensor<2>, _cond: Cond, _rng: &mut Rng) -> Result<ElboTerms> {
            let r = (self.l.forward(x.clone()) - x)
                .square()
                .sum_dim(1)
                .squeeze_dim::<1>(1);
            Ok(ElboTerms {
                prior: r.zeros_like(),
                reconstruction: r,
                layers: vec![],
            })
        }
        fn sample(&self, _n: usize, _rng: &mut Rng) -> Result<Tensor<2>> {
            Err(Error::Invalid("no sampling".into()))
        }
    }

    impl Model for Affine {
        type Config = AffineConfig;
        type Spec = usize;
        fn spec(_: &AffineConfig, train: &Dataset, _: Scaling) -> Result<usize> {
            Ok(train.dim())
        }
        fn build(_: &AffineConfig, d: &usize, device: &Device) -> Result<Self> {
            Ok(Affine {
                l: LinearConfig::new(*d, *d).init(device),
            })
        }
    }

    #[test]
    fn threaded_gradient_equals_the_single_thread_gradient() {
        // B = 7 over 3 shards (3, 2, 2 examples, weights 3/7, 2/7, 2/7): the combined gradient is
        // the full-batch gradient to f32 rounding (relative 1e-5).
        let device = Device::flex().autodiff();
        device.seed(5);
        let m = Affine::build(&AffineConfig, &3, &device).unwrap();
        let params = params::collect(&m).unwrap();
        let rows: Vec<f32> = crate::rng::normal_vec(&mut crate::rng::seeded(6), 7 * 3);
        let run = |threads| {
            let mut rng = crate::rng::seeded(7);
            loss_and_grads(
                &m,
                &params,
                rows.clone(),
                None,
                7,
                3,
                &device,
                &mut rng,
                threads,
            )
            .unwrap()
        };
        let (l1, e1, g1) = run(1);
        for t in [2, 3] {
            let (lt, et, gt) = run(t);
            assert!(
                (l1 - lt).abs() < 1e-5 * l1.abs(),
                "loss {l1} vs {lt} ({t} threads)"
            );
            assert!((e1 - et).abs() < 1e-5 * e1.abs());
            assert_eq!(g1.keys().collect::<Vec<_>>(), gt.keys().collect::<Vec<_>>());
            for (k, p) in &g1 {
                let q = &gt[k];
                let scale = p.data.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-6);
                for (a, b) in p.data.iter().zip(&q.data) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{k}: {a} vs {b} with {t} threads"
                    );
                }
            }
        }
    }
}
