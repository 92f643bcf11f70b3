//! Evaluation as library code: the bound of a trained run on a split, every term with its
//! standard error, as a typed [`EvalReport`] (the JSON that `elbo eval --json` prints).
//! One evaluator per kind of bound:
//!
//! | bound | evaluator | models |
//! | --- | --- | --- |
//! | ELBO terms (M2), importance-weighted L_K (M4) | [`terms`] | VAE (and any model with `Model::importance_weighted`) |
//! | diffusion bound L_∞ or L_T (M27–M30) with adaptive time sampling | [`diffusion`] | VDM |
//!
//! [`evaluate`] reads a run directory and dispatches on its model; [`crate::report`] formats the
//! result as text.

pub mod adaptive;
pub mod diffusion;
pub mod draw;
pub mod ode;
pub mod quality;
pub mod report;
pub mod terms;

pub use report::EvalReport;
use report::Head;

use burn::tensor::{Device, Tensor};

use crate::data::{self, Binarize, Dataset, Split};
use crate::elbo::Stat;
use crate::models::{Model, ModelVisitor};
pub use crate::progress::Progress;
use crate::run::RunDir;
use crate::run::{load_model, Loaded};
pub use crate::units::Unit;
use crate::{Error, Result};

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Data spec to evaluate on (default: the run's own).
    pub data: Option<String>,
    pub split: Split,
    /// Also the importance-weighted bound L_K with K samples.
    pub iw: Option<usize>,
    /// Seed of the evaluation noise (and of the fixed binarisation of the split).
    pub seed: u64,
    /// Evaluate only the first N examples.
    pub limit: usize,
    /// Diffusion models: the discrete-time bound with T steps (M27).
    pub t_steps: Option<u64>,
    /// Diffusion models: time samples per example (even: two replicates); `None`: adaptive.
    pub t_samples: Option<usize>,
    /// Threads for chunks of work (results do not depend on the count).
    pub threads: usize,
    pub device: Device,
    /// Run even beyond the limits of `crate::limits`.
    pub force: bool,
    /// Also measure sample quality on this many samples ([`quality`]).
    pub quality: Option<usize>,
    /// Diffusion models, adaptive time samples: spend at most about this many seconds on the
    /// final round (the standard error reached is reported, and flagged if above the target).
    pub budget_secs: Option<f64>,
    /// Sampler (with its settings) and steps of the quality samples (default: the run's own).
    pub sampler: Option<crate::sample::SamplerKind>,
    pub steps: Option<usize>,
    /// Also the exact likelihood along the probability-flow ODE ([`ode`]).
    pub ode: Option<crate::diffusion::ode::OdeOptions>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            data: None,
            split: Split::Test,
            iw: None,
            seed: 0,
            limit: usize::MAX,
            t_steps: None,
            t_samples: None,
            threads: crate::par::default_threads(),
            device: Device::flex(),
            force: false,
            quality: None,
            budget_secs: None,
            sampler: None,
            steps: None,
            ode: None,
        }
    }
}

impl EvalOptions {
    /// How the --quality samples are drawn.
    pub fn sample_options(&self) -> crate::sample::SampleOptions {
        crate::sample::SampleOptions {
            sampler: self.sampler.clone(),
            steps: self.steps,
            ..crate::sample::SampleOptions::ancestral(self.seed, self.threads)
        }
    }

    /// Refuse options that cannot apply, before any work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.iw == Some(0) {
            return bad("--iw needs K ≥ 1 samples".into());
        }
        if self.limit == 0 {
            return bad("--limit must be at least 1".into());
        }
        if self.t_steps == Some(0) {
            return bad("--t-steps must be at least 1".into());
        }
        self.sample_options().validate()?;
        if let Some(o) = &self.ode {
            o.validate()?;
            if let crate::diffusion::ode::Divergence::Hutchinson { probes } = o.divergence {
                crate::limits::check(probes <= crate::limits::MAX_PROBES, self.force, || {
                    format!(
                        "--probes {probes}: every probe is one more copy of each example \
                         through the network at every solver step (the limit is {} probes; the \
                         Monte-Carlo error falls only as 1/√probes)",
                        crate::limits::MAX_PROBES
                    )
                })?;
            }
        }
        if let Some(t) = self.t_samples.filter(|t| *t < 2 || t % 2 == 1) {
            return bad(format!(
                "--t-samples {t}: needs an even number, at least 2 (two independent replicates \
                 of N/2 time samples each, whose disagreement is the Monte-Carlo error)"
            ));
        }
        let t = self.t_samples.unwrap_or(0);
        crate::limits::check(t <= crate::limits::MAX_T_SAMPLES, self.force, || {
            format!(
                "--t-samples {t}: each replicate sends {} noisy copies of an example through the \
                 network at once (the limit is {} time samples)",
                t / 2,
                crate::limits::MAX_T_SAMPLES
            )
        })?;
        Ok(())
    }
}

/// An evaluation: the report, and the diffusion loss per time where the bound has one.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub report: EvalReport,
    pub loss_by_time: Option<Vec<diffusion::TimeBin>>,
}

/// The rows a model is evaluated on, with what the report says of them.
struct EvalData {
    ds: Dataset,
    rows: Vec<f32>,
    binarize: Option<Binarize>,
    unit: Unit,
    head: Head,
}

/// Evaluate the EMA weights of the run in `dir`.
pub fn evaluate(dir: &RunDir, opts: &EvalOptions, progress: &dyn Progress) -> Result<Evaluation> {
    opts.validate()?;
    dir.check()?;
    let cfg = dir.config()?;
    if opts.iw.is_some() && !cfg.model.has_importance_weighted() {
        return Err(Error::Config(format!(
            "--iw: {} is a {} run, which has no importance-weighted bound (the VAE and HVAE \
             have one)",
            dir.path.display(),
            cfg.model.kind()
        )));
    }
    if opts.ode.is_some() && !cfg.model.has_ode() {
        return Err(Error::Config(format!(
            "--method ode needs a diffusion model (or a diffusion prior); {} is a {} run",
            dir.path.display(),
            cfg.model.kind()
        )));
    }
    struct Visit<'a>(&'a RunDir, &'a EvalOptions, &'a dyn Progress);
    impl ModelVisitor for Visit<'_> {
        type Output = Result<Evaluation>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            let loaded = load_model::<M>(self.0, section, &self.1.device)?;
            let data = eval_data(self.0, &loaded, self.1)?;
            let head_truth = data.head.true_rows.clone();
            let spec = data.head.data.clone();
            let units = active_units(&loaded.model, &data, self.1)?;
            let unconditional = null_class_bound(&loaded.model, &data, self.1)?;
            let ode = match &self.1.ode {
                Some(o) => Some(ode::evaluate::<M>(
                    self.0, section, &data, o, self.1, self.2,
                )?),
                None => None,
            };
            let mut e = match loaded.model.diffusion() {
                Some(_) => diffusion::evaluate(&loaded.model, data, self.1, self.2),
                None => terms::evaluate(&loaded.model, data, self.1, self.2),
            }?;
            e.report.active_units = units;
            e.report.objective = crate::models::ModelSettings::objective_note(section);
            e.report.ode = ode;
            if let Some(v) = unconditional {
                let s = Stat::of(&v);
                e.report.unconditional_nll_nats = Some(s.mean);
                e.report.unconditional_nll_se = Some(s.se);
                if let Some(g) = paired_gap(&v, head_truth.as_deref()) {
                    e.report.unconditional_gap_nats = Some(g.mean);
                    e.report.unconditional_gap_se = Some(g.se);
                }
            }
            if let Some(n) = self.1.quality {
                e.report.quality = Some(sample_quality(&loaded, &spec, n, self.1, self.2)?);
            }
            Ok(e)
        }
    }
    cfg.model.visit(Visit(dir, opts, progress))
}

/// The gap of per-example values to the truth at the same examples: mean and standard error of
/// the paired differences (`None` without a truth, or for unmatched lengths).
pub(crate) fn paired_gap(values: &[f64], truth: Option<&[f64]>) -> Option<Stat> {
    let t = truth?;
    (t.len() == values.len() && !t.is_empty()).then(|| {
        let d: Vec<f64> = values.iter().zip(t).map(|(v, t)| v - t).collect();
        Stat::of(&d)
    })
}

/// Time samples per example of the null-class bound (a fixed count: it is a companion figure).
const NULL_CLASS_T_SAMPLES: usize = 16;

/// For a class-conditional diffusion model, the continuous-time bound of the same network with
/// every label dropped to the null class (M43): what the label is worth, in nats.
fn null_class_bound<M: Model>(
    model: &M,
    d: &EvalData,
    opts: &EvalOptions,
) -> Result<Option<Vec<f64>>> {
    let Some(dm) = model.diffusion() else {
        return Ok(None);
    };
    if dm.classes() == 0 || d.ds.n == 0 {
        return Ok(None);
    }
    let dim = d.ds.dim();
    let per = (4096 / NULL_CLASS_T_SAMPLES).max(1);
    let chunks = d.ds.n.div_ceil(per);
    let parts = crate::par::map_chunks(
        crate::par::replicas(model, opts.threads, chunks),
        chunks,
        |m, i| {
            let start = i * per;
            let b = per.min(d.ds.n - start);
            let x = crate::data::batches::row_block(&d.rows, start, b, dim, &opts.device);
            let mut rng = crate::rng::chunk(
                opts.seed,
                crate::rng::streams::EVAL_NOISE ^ 0x4E11,
                i as u64,
            );
            let dm = m
                .diffusion()
                .ok_or_else(|| Error::Invalid("not a diffusion model".into()))?;
            let e = dm.estimate(
                x,
                crate::diffusion::elbo::ElboOptions {
                    t_steps: opts.t_steps,
                    t_samples: NULL_CLASS_T_SAMPLES,
                    proposal: None,
                },
                None,
                &mut rng,
            )?;
            crate::elbo::to_f64(e.recon + e.prior + e.diffusion)
        },
    )?;
    Ok(Some(parts.concat()))
}

/// Examples the active units are measured on (Burda et al. use the test set; 1,000 keep the
/// chain's 16 draws per example within memory).
const ACTIVE_UNIT_EXAMPLES: usize = 1000;

/// Active units of each stochastic layer on (the first 1,000 of) the evaluated rows.
fn active_units<M: Model>(
    model: &M,
    data: &EvalData,
    opts: &EvalOptions,
) -> Result<Option<Vec<crate::models::LayerUnits>>> {
    let d = data.ds.dim();
    let n = data.ds.n.min(ACTIVE_UNIT_EXAMPLES);
    if n < 2 {
        return Ok(None);
    }
    let x = Tensor::<2>::from_data(
        burn::tensor::TensorData::new(data.rows[..n * d].to_vec(), [n, d]),
        &opts.device,
    );
    let mut rng = crate::rng::derived(opts.seed, crate::rng::streams::EVAL_NOISE ^ 0xA17);
    model.active_units(x, &mut rng).transpose()
}

/// Draw `n` samples of a loaded run (its default sampler unless the options name one) and
/// measure their quality.
fn sample_quality<M: Model>(
    l: &Loaded<M>,
    spec: &str,
    n: usize,
    opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<quality::Quality> {
    if n < 2 {
        return Err(Error::Config("--quality needs at least 2 samples".into()));
    }
    let so = opts.sample_options();
    progress.start("samples for quality", l.model.draw_work(n, &so)?);
    let d = l.model.draw(n, &so, None, &|| progress.inc(1))?;
    progress.finish();
    let mut v = d.values;
    // Bernoulli means of binarised images are grey levels in [0, 1]: as 8-bit levels.
    if M::binarize(&l.section, &l.spec).is_some() {
        v.iter_mut().for_each(|x| *x *= 255.0);
    }
    let mut q = quality::quality(spec, &v, quality::ClassifierSettings::default())?;
    if d.nfe > 1.0 {
        q.sampler = Some(d.sampler);
    }
    q.nfe = Some(d.nfe);
    Ok(q)
}

/// Load the split, check its shape against the run, and prepare the rows as the model sees
/// them (binarised or dequantised once with the evaluation seed).
fn eval_data<M: Model>(dir: &RunDir, l: &Loaded<M>, opts: &EvalOptions) -> Result<EvalData> {
    let spec = opts.data.clone().unwrap_or_else(|| l.cfg.data.clone());
    let ds = data::load(&spec, opts.split)?.head(opts.limit);
    if ds.shape != l.file.data.shape {
        return Err(Error::Invalid(format!(
            "data '{spec}' has examples of shape {:?}, the run was trained on {:?}",
            ds.shape, l.file.data.shape
        )));
    }
    let binarize = M::binarize(&l.section, &l.spec);
    let rows = l.file.data.eval_rows(&ds, binarize, opts.seed);
    let unit = Unit::of(l.file.data.is_image(), binarize.is_some());
    let rows64 = |r: &[f32]| r.iter().map(|&v| v as f64).collect::<Vec<_>>();
    let true_rows: Option<Vec<f64>> = ds.mixture.as_ref().map(|m| {
        ds.x.chunks_exact(ds.dim())
            .map(|r| -m.log_density(&rows64(r)))
            .collect()
    });
    let true_nll = true_rows.as_ref().map(|v| Stat::of(v).mean);
    let conditional = ds.labels.is_some() && l.model.diffusion().is_some_and(|d| d.classes() > 0);
    let cond_rows: Option<Vec<f64>> = match (&ds.mixture, &ds.labels) {
        (Some(m), Some(y)) if conditional => Some(
            ds.x.chunks_exact(ds.dim())
                .zip(y)
                .map(|(r, &k)| -m.log_density_given(&rows64(r), k as usize))
                .collect(),
        ),
        _ => None,
    };
    let true_cond_nll = cond_rows.as_ref().map(|v| Stat::of(v).mean);
    let target_rows = if conditional {
        cond_rows
    } else {
        true_rows.clone()
    };
    let step = dir.state().ok().map(|s| s.step);
    let head = Head {
        model: l.cfg.model.kind().to_string(),
        data: spec,
        split: opts.split,
        n: ds.n,
        step,
        true_nll,
        true_rows,
        target_rows,
        conditional,
        true_cond_nll,
    };
    Ok(EvalData {
        ds,
        rows,
        binarize,
        unit,
        head,
    })
}

/// γ(t) of a diffusion run's schedule (learned or fixed) at `times`.
pub fn schedule_of(dir: &RunDir, times: &[f64], device: &Device) -> Result<Vec<f64>> {
    dir.check()?;
    let cfg = dir.config()?;
    struct Visit<'a>(&'a RunDir, &'a [f64], &'a Device);
    impl ModelVisitor for Visit<'_> {
        type Output = Result<Vec<f64>>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            let l = load_model::<M>(self.0, section, self.2)?;
            let d = l.model.diffusion().ok_or_else(|| {
                Error::Config(format!(
                    "{}: a {} run has no noise schedule",
                    self.0.path.display(),
                    l.cfg.model.kind()
                ))
            })?;
            Ok(self.1.iter().map(|&t| d.gamma_at(t)).collect())
        }
    }
    cfg.model.visit(Visit(dir, times, device))
}
