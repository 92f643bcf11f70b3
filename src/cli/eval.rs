//! `elbo eval DIR`: every term of the bound on a split, each with its standard error, and the
//! importance-weighted bound L_K with --iw K. Text by default, one JSON object with --json.
//! The work is `elbo::eval::evaluate`; this file maps arguments onto it.

use std::path::PathBuf;

use clap::Args;
use elbo::data::Split;
use elbo::diffusion::ode::{Divergence, OdeOptions};
use elbo::eval::{EvalOptions, Evaluation};
use elbo::run::RunDir;

use super::{BarProgress, Global};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directory written by `elbo train`.
    pub dir: PathBuf,
    /// Data to evaluate on (default: the run's own data); must have the run's shape.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long, value_parser = super::choice::<Split>(), default_value = "test")]
    pub split: Split,
    /// Also compute the importance-weighted bound L_K with K samples (e.g. 5000; VAE).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, value_name = "K")]
    pub iw: Option<usize>,
    /// Seed of the evaluation noise (and of the fixed binarisation of the split).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<u64>, long, default_value_t = 0)]
    pub seed: u64,
    /// Evaluate only the first N examples.
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Diffusion models: evaluate the discrete-time bound with T steps (M27) instead of the
    /// continuous-time one (M28). On a DDPM schedule of T steps, --t-steps T is its own bound.
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<u64>, long, value_name = "T")]
    pub t_steps: Option<u64>,
    /// Diffusion models: time samples per example, an even number (two replicates of N/2;
    /// default: as many as a pilot round says keep the Monte-Carlo standard error of the bound
    /// ≤ 0.01 bits/dim for images, ≤ 0.01 nats otherwise).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, value_name = "N")]
    pub t_samples: Option<usize>,
    /// Also measure sample quality on N samples (default 1,000): FD-classifier (a Fréchet
    /// distance in the features of elbo's own CNN classifier of the data, not FID), the entropy
    /// of predicted classes and the mean confidence, beside the same figures for real images.
    /// The classifier is trained on the first use (about 15 s) and cached in ~/.cache/elbo.
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, value_name = "N", num_args = 0..=1, default_missing_value = "1000")]
    pub quality: Option<usize>,
    /// Diffusion models: spend at most about this many seconds on the bound's final round of
    /// time samples (the standard error reached is printed, with a warning if above the target).
    #[arg(allow_negative_numbers = true, long, value_name = "SECS", value_parser = parse_secs)]
    pub time_budget: Option<f64>,
    /// Sampler of the --quality samples (default: the run's ancestral sampler).
    #[arg(long, value_parser = super::sampler_name(), requires = "quality")]
    pub sampler: Option<String>,
    /// Sampling steps of the --quality samples (default: the run's vdm.sample_steps).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, requires = "quality")]
    pub steps: Option<usize>,
    /// DDIM's η for the --quality samples (0: deterministic).
    #[arg(
        allow_negative_numbers = true,
        long,
        default_value_t = 0.0,
        requires = "quality"
    )]
    pub eta: f64,
    /// What to compute: `elbo`, the bound term by term; `ode`, also the exact likelihood along
    /// the probability-flow ODE (M37) of a diffusion run on the same examples, beside its ELBO
    /// (costly: a forward and a backward pass per solver step; use --limit, e.g. 100 images).
    /// 8-bit images are dequantised uniformly so both are in the same bits/dim.
    #[arg(long, value_enum, default_value_t = Method::Elbo)]
    pub method: Method,
    /// --method ode: Rademacher probes per example for Hutchinson's divergence estimate (used
    /// above 16 dimensions; at or below, the divergence is exact). Their spread is the reported
    /// Monte-Carlo error (none from one probe).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 2, value_name = "K")]
    pub probes: usize,
    /// Relative tolerance of the adaptive Runge–Kutta 4(5) solver: of the likelihood ODE's state
    /// with --method ode (default 1e-3), and of the rk45 sampler of --quality samples (default
    /// 1e-3).
    #[arg(allow_negative_numbers = true, long)]
    pub rtol: Option<f64>,
    /// Absolute tolerance of the solver (defaults as --rtol's).
    #[arg(allow_negative_numbers = true, long)]
    pub atol: Option<f64>,
    /// --method ode: tolerance of the log-density per solver step, nats per example, held apart
    /// from the state's --rtol/--atol (default: 0.001 nats per dimension of the data, 0.784 on
    /// 28×28 images). The report gives the solver's own estimate of the error it left.
    #[arg(allow_negative_numbers = true, long, value_name = "NATS")]
    pub logp_tol: Option<f64>,
    /// Run even beyond elbo's limits (more than 65,536 time samples, or an estimated 4 hours
    /// of work for --iw).
    #[arg(long)]
    pub force: bool,
}

/// What `elbo eval` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// The ELBO (or L_K), term by term.
    Elbo,
    /// The ELBO and the exact likelihood along the probability-flow ODE (diffusion runs).
    Ode,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

pub fn run(a: EvalArgs, g: &Global) -> anyhow::Result<i32> {
    let dir = RunDir::new(&a.dir);
    if a.method == Method::Ode {
        if a.probes == 0 {
            anyhow::bail!("--probes must be at least 1");
        }
        elbo::limits::check(a.probes <= elbo::limits::MAX_PROBES, a.force, || {
            format!(
                "--probes {}: every probe is one more copy of each example through the network \
                 at every solver step (the limit is {} probes)",
                a.probes,
                elbo::limits::MAX_PROBES
            )
        })?;
    }
    let opts = EvalOptions {
        data: a.data,
        split: a.split,
        iw: a.iw,
        seed: a.seed,
        limit: a.limit.unwrap_or(usize::MAX),
        t_steps: a.t_steps,
        t_samples: a.t_samples,
        threads: elbo::par::default_threads(),
        device: elbo::device::device(g.device, false)?,
        force: a.force,
        quality: a.quality,
        budget_secs: a.time_budget,
        sampler: super::sampler_of(
            a.sampler.as_deref(),
            &elbo::sample::SamplerParams {
                eta: a.eta,
                rtol: a.rtol.unwrap_or(1e-3),
                atol: a.atol.unwrap_or(1e-3),
                ..Default::default()
            },
        )?,
        steps: a.steps,
        ode: (a.method == Method::Ode).then(|| {
            let dim = dir.model_file().map(|f| f.data.dim()).unwrap_or(usize::MAX);
            let d = OdeOptions::for_data(dim, Divergence::for_dim(dim, a.probes));
            OdeOptions {
                rtol: a.rtol.unwrap_or(d.rtol),
                atol: a.atol.unwrap_or(d.atol),
                logp_tol: a.logp_tol.or(d.logp_tol),
                ..d
            }
        }),
    };
    let e = evaluate(&dir, &opts, g)?;
    if a.json {
        println!("{}", serde_json::to_string(&e.report)?);
    } else {
        print_report(&e);
    }
    Ok(0)
}

/// Evaluate and write the pictures that go with the bound (the diffusion loss per time).
pub fn evaluate(dir: &RunDir, opts: &EvalOptions, g: &Global) -> anyhow::Result<Evaluation> {
    let mut e = elbo::eval::evaluate(dir, opts, &BarProgress::new(g))?;
    let dim = dir.model_file()?.data.dim();
    elbo::eval::report::write_loss_by_time(&dir.path, &mut e, dim)?;
    if let Some(q) = &e.report.quality {
        // The latest measurement, for `elbo inspect`.
        let path = dir.file("quality.json");
        elbo::fsio::write_atomic(&path, serde_json::to_string_pretty(q)?.as_bytes())?;
    }
    Ok(e)
}

pub fn print_report(e: &Evaluation) {
    for l in elbo::eval::report::lines(&e.report) {
        println!("{l}");
    }
}
