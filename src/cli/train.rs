//! `elbo train`: resolve the configuration (defaults < --config < flags < --set), train, then
//! evaluate on the held-out split and draw a sample grid.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use elbo::eval::EvalOptions;
use elbo::models::ModelKind;
use elbo::run::RunConfig;
use elbo::run::{default_run_dir, RunDir};
use elbo::train::{self, TrainOptions};

use super::{eval, sample, Global, EXIT_INTERRUPTED, EXIT_TERMINATED};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model to train.
    #[arg(long, value_parser = model_names())]
    pub model: Option<String>,
    /// Data spec (see `elbo data --help`); default mnist10k, embedded in the binary.
    #[arg(long)]
    pub data: Option<String>,
    /// TOML file of settings (same keys as config.json in a run directory). With --resume, its
    /// settings that a resume may change are applied, and any that would change what defines
    /// the run are refused by name.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Start from a named settings file shipped with elbo (applied before --config, flags and
    /// --set): `quality` trains a VDM that draws clean digits on mnist10k in under an hour on
    /// 2 cores (presets/quality.toml in the repository).
    #[arg(long, value_parser = super::choice::<elbo::run::config::Preset>(), conflicts_with = "resume")]
    pub preset: Option<elbo::run::config::Preset>,
    /// Override one setting, e.g. --set vae.latent=32 --set optim.lr=3e-4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Optimiser steps (default: a few minutes' worth for the model and data).
    #[arg(allow_negative_numbers = true, long, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: Option<u64>,
    /// Examples per step (default: 128 for the VAE, 32 for a VDM on images, 256 on vectors).
    #[arg(allow_negative_numbers = true, long, value_parser = parse_positive)]
    pub batch_size: Option<usize>,
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<u64>, long)]
    pub seed: Option<u64>,
    /// Stop after this many minutes of training in total (across resumes); a checkpoint is saved.
    #[arg(allow_negative_numbers = true, long, value_parser = parse_minutes)]
    pub max_minutes: Option<f64>,
    /// Run directory (default: the first free runs/<model>-<data>-N).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out DIR from its last checkpoint (flags given here override its
    /// config, e.g. --steps to train longer).
    #[arg(long)]
    pub resume: bool,
    /// Train even a model whose estimated memory (parameters with their gradients, optimiser
    /// moments and EMA, and a batch's activations) is beyond three quarters of this machine's.
    #[arg(long)]
    pub force: bool,
    /// Stop when training ends: no held-out bound and no sample grid afterwards (run `elbo eval
    /// DIR` and `elbo sample DIR` when you want them).
    #[arg(long)]
    pub no_eval: bool,
}

/// The noisy classifier's name among `--model`'s values (it is not a latent-variable model of
/// the registry: it guides diffusion models).
const NOISY_CLASSIFIER: &str = "noisy-classifier";

/// `--model`'s values: every model of the registry, and the noisy classifier.
fn model_names() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    use elbo::choice::Choice;
    clap::builder::PossibleValuesParser::new(
        ModelKind::ALL
            .iter()
            .map(|k| PossibleValue::new(k.name()).help(Choice::help(*k)))
            .chain([PossibleValue::new(NOISY_CLASSIFIER).help(
                "a classifier of noisy inputs z_t over a diffusion's noise levels, for \
                 classifier guidance (elbo sample DIR --classifier RUN --class C --guidance W; \
                 MATH.md M42); takes --data, --steps, --batch-size, --seed and --out only",
            )]),
    )
}

/// Seconds the held-out bound at the end of training may spend on its final round.
const END_EVAL_BUDGET_SECS: f64 = 60.0;

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{s}' is not a positive whole number")),
    }
}

fn parse_minutes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(m) if m.is_finite() && m >= 0.0 => Ok(m),
        _ => Err(format!(
            "'{s}' is not a number of minutes (a finite number ≥ 0; 0 means no limit)"
        )),
    }
}

fn resolve(a: &TrainArgs) -> anyhow::Result<(RunConfig, PathBuf)> {
    let mut saved = None;
    // A run killed before it wrote its configuration holds nothing to resume: --resume then
    // starts it again from the settings given here (the library says so).
    // A run whose config.json was deleted continues with the configuration its checkpoint
    // recorded (said so), never with defaults.
    let recorded = a
        .out
        .as_ref()
        .filter(|o| a.resume && !RunDir::new(o).file("config.json").is_file())
        .and_then(|o| RunDir::new(o).recorded_config());
    if let (Some(_), Some(o)) = (&recorded, &a.out) {
        eprintln!(
            "note: {} has no config.json; continuing with the configuration its checkpoint \
             recorded (and writing it back)",
            o.display()
        );
    }
    if let (true, None, Some(o)) = (a.resume, &recorded, &a.out) {
        let d = RunDir::new(o);
        if !d.file("config.json").is_file() && d.committed().ok().flatten().is_some() {
            anyhow::bail!(
                "{}: has a checkpoint but no config.json, and the checkpoint (written by an \
                 older elbo) does not record the configuration; restore config.json to resume",
                o.display()
            );
        }
    }
    let no_saved_config = a.resume
        && recorded.is_none()
        && a.out.as_ref().is_some_and(|o| {
            let d = RunDir::new(o);
            !d.file("config.json").is_file()
                && (d.is_run() || d.status().ok() == Some(elbo::run::DirStatus::Empty))
        });
    let (mut cfg, out) = if a.resume && !no_saved_config {
        let out = a
            .out
            .clone()
            .context("--resume needs --out DIR, the run to continue")?;
        let dir = RunDir::new(&out);
        if !dir.is_run() {
            dir.check()?;
        }
        let mut c = match recorded {
            Some(c) => c,
            None => dir.config()?,
        };
        saved = Some(c.clone());
        if let Some(p) = &a.config {
            c.apply_file(p)?;
        }
        (c, out)
    } else {
        let cfg = match (&a.preset, &a.config) {
            (Some(preset), Some(p)) => {
                let mut c = preset.config()?;
                c.apply_file(p)?;
                c
            }
            (Some(preset), None) => preset.config()?,
            (None, Some(p)) => RunConfig::from_toml_file(p)?,
            (None, None) => RunConfig::default(),
        };
        (cfg, PathBuf::new())
    };
    if let Some(m) = a.model.as_deref().and_then(ModelKind::from_name) {
        cfg.set_model(m);
    }
    if let Some(d) = &a.data {
        cfg.data = d.clone();
    }
    if let Some(s) = a.steps {
        cfg.steps = s;
    }
    if let Some(b) = a.batch_size {
        cfg.batch_size = b;
    }
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    if let Some(m) = a.max_minutes {
        cfg.max_minutes = m;
    }
    for s in &a.set {
        cfg.set(s)?;
    }
    cfg.resolve();
    if cfg.steps == 0 || cfg.batch_size == 0 || cfg.eval_every == 0 {
        cfg.resolve_for_data(elbo::data::load(&cfg.data, elbo::data::Split::Train)?.kind);
    }
    cfg.validate()?;
    if let Some(saved) = &saved {
        // The saved batch size is the one used (clamped to the data, if it was).
        if a.batch_size.is_none() {
            cfg.batch_size = saved.batch_size;
        }
    }
    if let Some(saved) = saved {
        cfg.check_resume(&saved)
            .with_context(|| format!("resuming {}", out.display()))?;
    }
    let out = if a.resume && !no_saved_config {
        out
    } else if a.resume {
        a.out
            .clone()
            .context("--resume needs --out DIR, the run to continue")?
    } else {
        a.out
            .clone()
            .unwrap_or_else(|| default_run_dir(cfg.model.kind(), &cfg.data))
    };
    Ok((cfg, out))
}

pub fn run(a: TrainArgs, g: &Global) -> anyhow::Result<i32> {
    if a.model.as_deref() == Some(NOISY_CLASSIFIER) {
        return train_noisy_classifier(&a, g);
    }
    // One process, or one rank of `mpirun -np N elbo train …` (a build with `--features mpi`).
    let comm = elbo::comm::from_launch()?;
    let (cfg, out) = resolve(&a)?;
    // Every rank trains into rank 0's directory (a default name is chosen once, by rank 0).
    let mut name = out.to_string_lossy().into_owned().into_bytes();
    elbo::comm::broadcast_bytes(&*comm, &mut name);
    let out = std::path::PathBuf::from(String::from_utf8_lossy(&name).into_owned());
    let code = train_run(&cfg, &out, a.resume, a.force, a.no_eval, g, &*comm);
    if comm.size() > 1 {
        if let Err(e) = &code {
            // The other ranks wait in a collective call for this one: end them all.
            eprintln!("error (rank {} of {}): {e:#}", comm.rank(), comm.size());
            comm.abort(1);
        }
    }
    code
}

fn train_run(
    cfg: &RunConfig,
    out: &std::path::Path,
    resume: bool,
    force: bool,
    no_eval: bool,
    g: &Global,
    comm: &dyn elbo::comm::Comm,
) -> anyhow::Result<i32> {
    if !comm.is_root() {
        // Rank r > 0 of an MPI run: its share of every step, silently; rank 0 reports and
        // writes.
        // Ctrl-C and SIGTERM reach every rank; rank 0 saves and tells the others when to stop.
        let stop = Arc::new(AtomicBool::new(false));
        use signal_hook::consts::{SIGINT, SIGTERM};
        let _ = signal_hook::flag::register(SIGINT, Arc::clone(&stop));
        let _ = signal_hook::flag::register(SIGTERM, Arc::clone(&stop));
        let opts = TrainOptions {
            out,
            resume,
            stop: &stop,
            progress: &(),
            device: elbo::device::device(g.device, true)?,
            note: &|_| {},
            force,
            comm,
            devices: train_devices(g)?,
        };
        let o = train::train(cfg, &opts)?;
        return Ok(if o.interrupted { EXIT_INTERRUPTED } else { 0 });
    }
    // Ctrl-C and SIGTERM (a scheduler's or container's stop) both ask the loop to save a
    // checkpoint and stop; a second Ctrl-C quits at once.
    let stop = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    use signal_hook::consts::{SIGINT, SIGTERM};
    let _ = signal_hook::flag::register_conditional_shutdown(
        SIGINT,
        EXIT_INTERRUPTED,
        Arc::clone(&stop),
    );
    let _ = signal_hook::flag::register(SIGINT, Arc::clone(&stop));
    let _ = signal_hook::flag::register(SIGTERM, Arc::clone(&stop));
    let _ = signal_hook::flag::register(SIGTERM, Arc::clone(&term));
    let device = elbo::device::device(g.device, true)?;
    eprintln!(
        "{} {} on {} for {} steps of {} → {}",
        if resume { "resuming" } else { "training" },
        cfg.model.kind(),
        cfg.data,
        super::thousands(cfg.steps),
        cfg.batch_size,
        out.display()
    );
    if comm.size() > 1 {
        eprintln!(
            "data parallel over {} MPI ranks, {} thread{} each: each rank computes its share of \
             every batch of {}",
            comm.size(),
            cfg.threads,
            if cfg.threads == 1 { "" } else { "s" },
            cfg.batch_size
        );
    }
    let note = |m: &str| eprintln!("note: {m}");
    let opts = TrainOptions {
        out,
        resume,
        stop: &stop,
        progress: &super::BarProgress::new(g),
        device,
        note: &note,
        force,
        comm,
        devices: train_devices(g)?,
    };
    let outcome = train::train(cfg, &opts)?;
    // Training is committed: from here on Ctrl-C and SIGTERM end the process at once (the
    // evaluation and pictures that follow can be made again with `elbo eval` and `elbo sample`).
    let now = Arc::new(AtomicBool::new(true));
    let _ = signal_hook::flag::register_conditional_shutdown(
        SIGINT,
        EXIT_INTERRUPTED,
        Arc::clone(&now),
    );
    let _ = signal_hook::flag::register_conditional_shutdown(SIGTERM, EXIT_TERMINATED, now);
    let dir = RunDir::new(out);
    if outcome.interrupted {
        let terminated = term.load(Ordering::SeqCst);
        eprintln!(
            "{} at step {}; checkpoint saved. Continue with: elbo train --resume --out {}",
            if terminated {
                "terminated (SIGTERM)"
            } else {
                "interrupted"
            },
            outcome.step,
            out.display()
        );
        return Ok(if terminated {
            EXIT_TERMINATED
        } else {
            EXIT_INTERRUPTED
        });
    }
    if outcome.timed_out {
        eprintln!(
            "time limit ({} min) reached at step {}; checkpoint saved (continue with --resume --max-minutes M)",
            cfg.max_minutes,
            outcome.step
        );
    } else {
        eprintln!(
            "trained {} steps ({:.0} examples/s)",
            outcome.step, outcome.examples_per_sec
        );
    }
    if comm.size() > 1 {
        eprintln!(
            "communication across the {} ranks: {:.1} ms per step (all-reduce of the gradient, \
             waiting included)",
            comm.size(),
            1e3 * outcome.comm_secs_per_step
        );
    }
    if no_eval {
        eprintln!(
            "evaluate with: elbo eval {0}; samples: elbo sample {0}",
            out.display()
        );
        return Ok(0);
    }
    // Held-out evaluation of the EMA weights, and pictures.
    // A time budget keeps the bound from outlasting training on schedules whose time integrand
    // is hard to sample (`elbo eval DIR` afterwards has none).
    let eval_opts = EvalOptions {
        device: elbo::device::device(g.device, false)?,
        budget_secs: Some(END_EVAL_BUDGET_SECS),
        ..EvalOptions::default()
    };
    let report = eval::evaluate(&dir, &eval_opts, g)?;
    eval::print_report(&report);
    if cfg.grid > 0 {
        match sample::write_default_samples(&dir, cfg.grid, cfg.seed, g) {
            Ok(p) => eprintln!("samples: {}", p.display()),
            Err(e) => eprintln!("samples not written: {e:#}"),
        }
    }
    if let Ok(p) = super::inspect::write_curve(&dir) {
        eprintln!("training curve: {}", p.display());
    }
    Ok(0)
}

/// The devices of `--devices N` (N > 1; GPUs), or none: the one `--device`.
fn train_devices(g: &Global) -> anyhow::Result<Vec<burn::tensor::Device>> {
    Ok(if g.devices == 1 {
        vec![]
    } else {
        elbo::device::devices(g.device, g.devices, true)?
    })
}

/// `elbo train --model noisy-classifier`: its own short loop (no ELBO, no checkpoints: a few
/// minutes at most), then its accuracy at five noise levels.
fn train_noisy_classifier(a: &TrainArgs, g: &Global) -> anyhow::Result<i32> {
    use elbo::models::noisy_classifier as nc;
    use elbo::train::noisy_classifier as ncl;
    if a.resume
        || a.config.is_some()
        || a.preset.is_some()
        || !a.set.is_empty()
        || a.max_minutes.is_some()
    {
        anyhow::bail!(
            "--model noisy-classifier takes --data, --steps, --batch-size, --seed and --out \
             (not --resume, --config, --preset, --set or --max-minutes)"
        );
    }
    let data = a.data.clone().unwrap_or_else(|| "mnist10k".into());
    let mut cfg = nc::NoisyClassifierConfig::new(&data);
    if let Some(s) = a.steps {
        cfg.steps = s;
    }
    if let Some(b) = a.batch_size {
        cfg.batch = b;
    }
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    let out = a.out.clone().unwrap_or_else(|| ncl::default_dir(&data));
    if out.join(nc::META_FILE).exists() {
        anyhow::bail!(
            "{}: holds a noisy classifier already; choose another --out",
            out.display()
        );
    }
    eprintln!(
        "training a noisy classifier on {data} for {} steps of {} → {}",
        super::thousands(cfg.steps),
        cfg.batch,
        out.display()
    );
    let m = ncl::train(&cfg, &out, &super::BarProgress::new(g))?;
    let acc: Vec<String> = m
        .meta
        .accuracy_by_t
        .iter()
        .map(|(t, a)| format!("t = {t}: {:.1}%", 100.0 * a))
        .collect();
    eprintln!("test accuracy on noisy inputs: {}", acc.join(", "));
    eprintln!(
        "guide a diffusion run of the same data with: elbo sample RUN --classifier {} --class C --guidance W",
        out.display()
    );
    println!("{}", out.display());
    Ok(0)
}
