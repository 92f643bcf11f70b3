//! Progressive distillation (MATH.md M50; Salimans & Ho 2022): a student that takes in one
//! DDIM step what its teacher takes in two, from a trained diffusion run, halving the steps
//! each round (N₀ → N₀/2 → … → N_min). Each round starts the student from its teacher and
//! trains it on the teacher's two deterministic steps from t = i/N through t − 1/(2N) to
//! t − 1/N (the last to the clean end at i = 1; times scaled by t_top, the top of the uniform
//! grid, below a DDPM table's last steps where α ≈ 0): the target x̃ is the x̂ that makes one DDIM step
//! from z_t land where the teacher's two did,
//!
//! x̃ = (z_{t''} − (σ_{t''}/σ_t) z_t) / (α_{t''} − (σ_{t''}/σ_t) α_t),
//!
//! and the loss max(SNR_t, 1) ‖x̃ − x̂_θ(z_t)‖² (their "truncated SNR" weighting). Each round's
//! student becomes the next round's teacher, and is saved as a complete run (`OUT/steps-N`) that
//! samples in N steps on the grid it was trained on (`vdm.sample_grid = uniform`), by ancestral
//! steps on its unclipped x̂ ([`STUDENT_SAMPLER`]; `--sampler ddim` gives the deterministic
//! student): a distilled student is still a model, so `elbo eval` reports its ELBO like any other.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::data::{self, batches, BatchOrder, Binarize, DataKind, Split};
use crate::diffusion::Denoiser;
use crate::models::vdm::Vdm;
use crate::models::{Model, ModelVisitor};
use crate::optim::adamw::LrSchedule;
use crate::optim::fit::{fit, FitHooks, StepDone, StepLoss, Stopped};
use crate::optim::{AdamW, OptimConfig};
use crate::params::{self, NamedParams};
use crate::progress::Progress;
use crate::rng::{derived, streams, Rng};
use crate::run::{RunConfig, RunDir, TrainState};
use crate::sample::eps_x0_rows;
use crate::{Error, Result};

/// The sampler a student is saved with: ancestral steps, DDIM with η = 1, on the student's x̂
/// (Salimans and Ho's stochastic sampling of distilled models). A student's deterministic DDIM
/// can at best reach its teacher's probability-flow ODE, and on a CPU-trained teacher that flow
/// samples far worse than the teacher's ancestral sampler (on the default run, DDIM at 16–32
/// steps scores FD-classifier 118 where ancestral-200 scores 49); the fresh noise of each
/// ancestral step corrects what the deterministic flow carries to the end. Nor is x̂ clipped to
/// the data's range: a student's x̂ is the point that makes one DDIM step land where two of its
/// teacher's did, an extrapolation that leaves [−1, 1] at high noise, and clipping it moves the
/// step off what was trained (BENCHMARKS §16 measures both).
pub const STUDENT_SAMPLER: &str = "ancestral";

/// How to distil.
pub struct DistillOptions<'a> {
    /// Where the students go (`OUT/steps-N`, with `OUT/distill.json`); new or empty.
    pub out: &'a Path,
    /// The teacher's DDIM steps that the first student halves.
    pub from_steps: usize,
    /// The last student's steps (`from_steps` divided by a power of two).
    pub to_steps: usize,
    /// Training iterations per round.
    pub iters: u64,
    /// Batch size (0: the run's).
    pub batch: usize,
    /// Peak learning rate of each round (cosine decay to a tenth, after a short warm-up).
    pub lr: f64,
    pub seed: u64,
    /// Autodiff device for the student; the teacher runs on its inner device.
    pub device: Device,
    pub progress: &'a dyn Progress,
    /// Set by a signal handler: stop after the current iteration, keeping finished rounds.
    pub stop: &'a AtomicBool,
}

/// One round's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// The student's steps.
    pub steps: usize,
    pub iters: u64,
    /// Mean loss over the first and the last tenth of the round's iterations.
    pub loss_first: f64,
    pub loss_last: f64,
    pub seconds: f64,
    /// The student's run directory.
    pub dir: String,
}

/// What a distillation did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistillReport {
    pub teacher: String,
    pub from_steps: usize,
    pub rounds: Vec<Round>,
    /// Whether a stop request ended it before its last round.
    pub interrupted: bool,
}

impl DistillOptions<'_> {
    /// The students' step counts, largest first; refused unless `from_steps` halves to
    /// `to_steps` at least once.
    pub fn rounds(&self) -> Result<Vec<usize>> {
        let (mut n, to) = (self.from_steps, self.to_steps);
        if to == 0 || n <= to {
            return Err(Error::Config(format!(
                "--from-steps ({n}) must be above --to-steps ({to}), which must be at least 1"
            )));
        }
        let mut v = Vec::new();
        while n > to {
            if n % 2 != 0 {
                return Err(Error::Config(format!(
                    "--from-steps ({}) must be --to-steps ({to}) times a power of two: each \
                     round halves the steps",
                    self.from_steps
                )));
            }
            n /= 2;
            v.push(n);
        }
        if n != to {
            return Err(Error::Config(format!(
                "--from-steps ({}) must be --to-steps ({to}) times a power of two",
                self.from_steps
            )));
        }
        if self.iters == 0 {
            return Err(Error::Config("--iters must be at least 1".into()));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::Config("--lr must be a positive number".into()));
        }
        Ok(v)
    }
}

/// Distil the run in `teacher` (a vdm, flow or edm run) as `opts` say.
pub fn distill(teacher: &RunDir, opts: &DistillOptions) -> Result<DistillReport> {
    teacher.check()?;
    let rounds = opts.rounds()?;
    let cfg = teacher.config()?;
    let out = RunDir::new(opts.out);
    match std::fs::read_dir(opts.out) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::Checkpoint {
                    path: opts.out.into(),
                    msg: "exists and is not empty; choose a new or empty --out directory".into(),
                });
            }
        }
        Err(_) => std::fs::create_dir_all(opts.out).map_err(|e| Error::io(opts.out, e))?,
    }
    struct Visit<'a>(&'a RunDir, &'a RunDir, &'a DistillOptions<'a>, &'a [usize]);
    impl ModelVisitor for Visit<'_> {
        type Output = Result<DistillReport>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            distill_model::<M>(self.0, self.1, section, self.2, self.3)
        }
    }
    cfg.model.visit(Visit(teacher, &out, opts, &rounds))
}

/// The loop's side: progress, the stop flag, and the losses of the round.
struct Hooks<'a> {
    progress: &'a dyn Progress,
    stop: &'a AtomicBool,
    losses: Vec<f64>,
}

impl FitHooks for Hooks<'_> {
    fn before(&mut self, _done: u64) -> Option<Stopped> {
        self.stop
            .load(Ordering::SeqCst)
            .then_some(Stopped::Interrupted)
    }
    fn after(&mut self, s: &StepDone, _p: &NamedParams, _o: &AdamW) -> Result<()> {
        self.losses.push(s.loss);
        self.progress.inc(1);
        if s.step % 20 == 0 {
            let k = self.losses.len().min(50);
            let recent = self.losses[self.losses.len() - k..].iter().sum::<f64>() / k as f64;
            self.progress.message(&format!("loss {recent:.4}"));
        }
        Ok(())
    }
}

fn distill_model<M: Model>(
    teacher_dir: &RunDir,
    out: &RunDir,
    section: &M::Config,
    opts: &DistillOptions,
    rounds: &[usize],
) -> Result<DistillReport> {
    let infer = opts.device.clone().inner();
    let loaded = crate::run::load_model::<M>(teacher_dir, section, &infer)?;
    let kind = loaded.cfg.model.kind();
    if loaded.model.vdm().is_none() {
        return Err(Error::Config(format!(
            "{}: a {kind} run; distillation needs a diffusion run (vdm, flow, edm)",
            teacher_dir.path.display()
        )));
    }
    // The students sample on the uniform grid they are trained on, by ancestral steps (DDIM
    // with η = 1) on their unclipped x̂: see `STUDENT_SAMPLER`.
    let mut student_cfg = loaded.cfg.clone();
    for kv in [
        &format!("sampler=\"{STUDENT_SAMPLER}\"") as &str,
        "sample_grid=\"uniform\"",
        "clip_x0=false",
    ] {
        student_cfg
            .set(&format!("{}.{kv}", kind.name()))
            .map_err(|_| {
                Error::Config(format!(
                    "a {kind} run samples by its own rule; distillation needs a run sampled by \
                     DDIM steps (vdm, flow, edm)"
                ))
            })?;
    }
    let cfg = &loaded.cfg;
    let train = data::load(&cfg.data, Split::Train)?;
    let dim = train.dim();
    let batch = (if opts.batch > 0 {
        opts.batch
    } else {
        cfg.batch_size
    })
    .clamp(1, train.n);
    let binarize = M::binarize(section, &loaded.spec);
    let dequant = cfg.dequantize && train.kind == DataKind::Image8;
    let rows = match binarize {
        Some(Binarize::Static) => {
            batches::binarize(&train.x, &mut derived(cfg.seed, streams::STATIC_BINARIZE))
        }
        _ => train.x.clone(),
    };
    let weights = params::collect(&loaded.model)?;
    let mut teacher = loaded.model;
    let mut student = params::assign(M::build(section, &loaded.spec, &opts.device)?, &weights)?;
    let mut rng = derived(opts.seed, streams::TRAIN_NOISE);
    let mut order = BatchOrder::new(opts.seed);
    let total = opts.iters * rounds.len() as u64;
    opts.progress.start("distilling", total);
    let mut report = DistillReport {
        teacher: teacher_dir.path.display().to_string(),
        from_steps: opts.from_steps,
        rounds: vec![],
        interrupted: false,
    };
    for (r, &steps) in rounds.iter().enumerate() {
        opts.progress.message(&format!(
            "round {} of {}: {} → {steps} steps",
            r + 1,
            rounds.len(),
            2 * steps
        ));
        let ocfg = OptimConfig {
            lr: opts.lr,
            warmup_steps: (opts.iters / 20).min(100),
            schedule: LrSchedule::Cosine,
            ..cfg.optim.clone()
        };
        let mut p = params::collect(&student)?;
        let mut opt = AdamW::new(&p);
        let mut hooks = Hooks {
            progress: opts.progress,
            stop: opts.stop,
            losses: vec![],
        };
        let t0 = Instant::now();
        let step_loss = |_: u64, p: &NamedParams| -> Result<StepLoss> {
            student = params::assign(student.clone(), p)?;
            let idx = order.next_batch(train.n, batch);
            let mut x = batches::gather(&rows, dim, &idx);
            if binarize == Some(Binarize::Dynamic) {
                x = batches::binarize(&x, &mut rng);
            }
            if dequant {
                x = batches::dequantize(&x, &mut rng);
            }
            let (t, s) = (vdm_of(&teacher)?, vdm_of(&student)?);
            let loss = distill_loss(t, s, &x, idx.len(), dim, steps, &mut rng)?;
            let v: f32 = loss.clone().into_scalar();
            let grads = params::collect_grads(&student, &loss.backward())?;
            Ok(StepLoss {
                loss: v as f64,
                report: v as f64,
                grads,
                examples: idx.len(),
            })
        };
        let (done, stopped) = fit(
            &mut p, &mut opt, &ocfg, 0, opts.iters, step_loss, &mut hooks,
        )?;
        if stopped.is_some() || done < opts.iters {
            report.interrupted = true;
            break;
        }
        // The round's student (its EMA weights) teaches the next round.
        let w = opt.eval_weights(&ocfg, &p).clone();
        teacher = params::assign(teacher, &w)?;
        student = params::assign(student, &w)?;
        let dir = out.path.join(format!("steps-{steps}"));
        let mut scfg = student_cfg.clone();
        scfg.set(&format!("{}.sample_steps={steps}", kind.name()))?;
        save_student(&RunDir::new(&dir), teacher_dir, &scfg, &w, opts.iters)?;
        let tenth = (hooks.losses.len() / 10).max(1);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        report.rounds.push(Round {
            steps,
            iters: opts.iters,
            loss_first: mean(&hooks.losses[..tenth]),
            loss_last: mean(&hooks.losses[hooks.losses.len() - tenth..]),
            seconds: t0.elapsed().as_secs_f64(),
            dir: dir.display().to_string(),
        });
        out.write_json("distill.json", &report)?;
    }
    opts.progress.finish();
    out.write_json("distill.json", &report)?;
    Ok(report)
}

fn vdm_of<M: Model>(m: &M) -> Result<&Vdm> {
    m.vdm()
        .ok_or_else(|| Error::Config("distillation needs a diffusion model".into()))
}

/// A column `[B, 1]` of per-row values.
fn column(v: &[f64], device: &Device) -> Tensor<2> {
    let b = v.len();
    Tensor::from_data(
        TensorData::new(v.iter().map(|&a| a as f32).collect::<Vec<_>>(), [b, 1]),
        device,
    )
}

/// The same values on another device.
fn moved(t: Tensor<2>, device: &Device) -> Result<Tensor<2>> {
    let dims = t.dims();
    Ok(Tensor::from_data(
        TensorData::new(crate::elbo::to_f32(t)?, dims),
        device,
    ))
}

/// (M50) The distillation loss of a batch `x` (data units, `b` rows of `dim`) for a student of
/// `steps` steps: one step of i ~ U{1 … steps} per row, the teacher's two DDIM steps (with its
/// x̂_0 clipping, as its sampler takes them), the target x̃ and the weight max(SNR_t, 1).
pub fn distill_loss(
    teacher: &Vdm,
    student: &Vdm,
    x: &[f32],
    b: usize,
    dim: usize,
    steps: usize,
    rng: &mut Rng,
) -> Result<Tensor<1>> {
    let tdev = teacher.device();
    let sdev = student.device();
    let sched = teacher.schedule();
    // The uniform grid the student samples on: t_i = (i/N) t_top.
    let n = steps as f64 / teacher.uniform_top();
    let idx: Vec<usize> = (0..b).map(|_| rng.gen_range(1..=steps)).collect();
    let g = |t: f64| sched.gamma_f64(t);
    let g_t: Vec<f64> = idx.iter().map(|&i| g(i as f64 / n)).collect();
    let g_mid: Vec<f64> = idx
        .iter()
        .map(|&i| g((2 * i - 1) as f64 / (2.0 * n)))
        .collect();
    let process = Denoiser::process(teacher);
    let a_s = |gs: &[f64]| -> (Vec<f64>, Vec<f64>) {
        gs.iter().map(|&v| process.alpha_sigma_f64(v)).unzip()
    };
    let (a_t, s_t) = a_s(&g_t);
    let (a_mid, s_mid) = a_s(&g_mid);
    // The end of the two steps: (i − 1)/N, the clean end (α = 1, σ = 0) at i = 1.
    let (a_end, s_end): (Vec<f64>, Vec<f64>) = idx
        .iter()
        .map(|&i| {
            if i == 1 {
                (1.0, 0.0)
            } else {
                process.alpha_sigma_f64(g((i - 1) as f64 / n))
            }
        })
        .unzip();
    let x = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [b, dim]), &tdev);
    let x = teacher.to_model_space(x);
    let eps = crate::rng::randn(rng, [b, dim], &tdev);
    let z_t = x * column(&a_t, &tdev) + eps * column(&s_t, &tdev);
    // The teacher's two DDIM steps (η = 0): z_s = α_s x̂_0 + σ_s ε̂.
    let (e1, x1) = eps_x0_rows(teacher, z_t.clone(), &g_t, None);
    let z_mid = x1 * column(&a_mid, &tdev) + e1 * column(&s_mid, &tdev);
    let (e2, x2) = eps_x0_rows(teacher, z_mid, &g_mid, None);
    let z_end = x2 * column(&a_end, &tdev) + e2 * column(&s_end, &tdev);
    // x̃ = (z_end − r z_t)/(α_end − r α_t), r = σ_end/σ_t.
    let r: Vec<f64> = s_end.iter().zip(&s_t).map(|(e, s)| e / s).collect();
    let den: Vec<f64> = a_end
        .iter()
        .zip(&r)
        .zip(&a_t)
        .map(|((ae, r), at)| ae - r * at)
        .collect();
    let target = (z_end - z_t.clone() * column(&r, &tdev)) / column(&den, &tdev);
    // The student's x̂_0 at z_t, unclipped, on its own (autodiff) device.
    let z_s = moved(z_t, &sdev)?;
    let target = moved(target, &sdev)?;
    let gt = Tensor::<1>::from_data(
        TensorData::new(g_t.iter().map(|&v| v as f32).collect::<Vec<_>>(), [b]),
        &sdev,
    );
    let e = crate::diffusion::eps_hat(student, z_s.clone(), gt, None);
    let x_hat = (z_s - e * column(&s_t, &sdev)) / column(&a_t, &sdev);
    let w: Vec<f64> = g_t.iter().map(|&v| (-v).exp().max(1.0)).collect();
    let per_row = (target - x_hat).square().mean_dim(1) * column(&w, &sdev);
    Ok(per_row.mean())
}

/// Write a student as a complete run in `dir`: the teacher's `model.json`, the student's
/// configuration, and its weights as the committed checkpoint.
fn save_student(
    dir: &RunDir,
    teacher: &RunDir,
    cfg: &RunConfig,
    w: &NamedParams,
    iters: u64,
) -> Result<()> {
    std::fs::create_dir_all(&dir.path).map_err(|e| Error::io(&dir.path, e))?;
    dir.claim()?;
    dir.write_json("config.json", cfg)?;
    let mf = teacher.model_file()?;
    dir.write_json("model.json", &mf)?;
    let state = TrainState {
        step: iters,
        rng: derived(cfg.seed, streams::TRAIN_NOISE),
        order: BatchOrder::new(cfg.seed),
        elapsed_secs: 0.0,
        examples_seen: 0,
        config: Some(cfg.clone()),
        model_state: None,
        ranks: 1,
    };
    dir.save_checkpoint(w, &AdamW::new(w), w, &state, 1)?;
    Ok(())
}

/// The student run directories a distillation wrote, smallest step count first.
pub fn students(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let r: DistillReport = RunDir::new(out).read_json("distill.json")?;
    let mut v: Vec<(usize, PathBuf)> = r
        .rounds
        .iter()
        .map(|r| (r.steps, PathBuf::from(&r.dir)))
        .collect();
    v.sort();
    Ok(v)
}
