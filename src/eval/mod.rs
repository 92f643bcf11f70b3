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
pub mod guidance;
pub mod ode;
pub mod quality;
pub mod samplers;
pub mod terms;

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{self, Binarize, Dataset, Split};
use crate::elbo::Stat;
use crate::models::{Model, ModelVisitor};
use crate::train::run::RunDir;
use crate::train::{load_model, Loaded};
use crate::{Error, Result};

/// Told how far long work has come (a progress bar, or nothing).
pub trait Progress: Sync {
    /// A new stage of `total` units.
    fn start(&self, _what: &str, _total: u64) {}
    /// `n` more units done.
    fn inc(&self, _n: u64) {}
    /// The stage is over.
    fn finish(&self) {}
}

/// No progress reporting.
impl Progress for () {}

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
    /// Sampler, steps and DDIM η of the quality samples (default: the run's own).
    pub sampler: Option<crate::sample::SamplerKind>,
    pub steps: Option<usize>,
    pub eta: f64,
    /// rtol and atol of the rk45 sampler of the quality samples.
    pub sampler_tol: (f64, f64),
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
            eta: 0.0,
            sampler_tol: (1e-3, 1e-3),
            ode: None,
        }
    }
}

impl EvalOptions {
    /// How the --quality samples are drawn.
    pub fn sample_options(&self) -> crate::models::SampleOptions {
        crate::models::SampleOptions {
            sampler: self.sampler,
            steps: self.steps,
            eta: self.eta,
            rtol: self.sampler_tol.0,
            atol: self.sampler_tol.1,
            ..crate::models::SampleOptions::ancestral(self.seed, self.threads)
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

/// The unit a per-dimension figure is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// 8-bit images (discrete, or dequantised to a density): bits per 8-bit value.
    BitsPerDim,
    /// Binarised images: bits per binary pixel (not comparable with 8-bit bits/dim).
    BitsPerBinaryPixel,
    /// Other continuous data: nats per dimension.
    NatsPerDim,
}

impl Unit {
    /// Per-dimension value of `nats` per example over `dim` dimensions.
    pub fn per_dim(self, nats: f64, dim: usize) -> f64 {
        let d = dim.max(1) as f64;
        match self {
            Unit::BitsPerDim | Unit::BitsPerBinaryPixel => nats / (d * std::f64::consts::LN_2),
            Unit::NatsPerDim => nats / d,
        }
    }

    /// Its name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Unit::BitsPerDim => "bits/dim",
            Unit::BitsPerBinaryPixel => "bits per binary pixel",
            Unit::NatsPerDim => "nats/dim",
        }
    }
}

/// The result of an evaluation; its JSON is the contract of `elbo eval --json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    pub model: String,
    pub data: String,
    pub split: String,
    /// Examples evaluated.
    pub n: usize,
    /// K of the importance-weighted bound, if computed.
    pub iw: Option<usize>,
    /// The training step of the weights.
    pub step: Option<u64>,
    /// The reported bound on −log p(x), nats per example (L_K when computed, else −ELBO).
    pub nll_nats: f64,
    pub nll_se: f64,
    pub neg_elbo_nats: f64,
    pub neg_elbo_se: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neg_iw_bound_nats: Option<f64>,
    /// Each term of the negative ELBO, nats per example.
    pub terms: BTreeMap<String, f64>,
    pub terms_se: BTreeMap<String, f64>,
    /// The order in which the terms are printed.
    #[serde(default)]
    pub term_order: Vec<String>,
    pub unit: Unit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_dim: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_dim_se: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_dim_mc_se: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_binary_pixel: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_binary_pixel_se: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_per_dim: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_per_dim_se: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_per_dim_mc_se: Option<f64>,
    /// Diffusion bounds: Monte-Carlo standard error of the bound (nats per example).
    pub mc_se: Option<f64>,
    /// Diffusion bounds: T of the discrete-time bound, or null for continuous time.
    pub t_steps: Option<u64>,
    /// Diffusion bounds: time samples per example (both replicates).
    pub t_samples: Option<usize>,
    /// What bound this is, in words.
    pub bound: String,
    /// The decoder p(x | z_0) or p(x | z), in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder: Option<String>,
    /// Binary inputs were binarised once with the evaluation seed.
    #[serde(default)]
    pub binarized: bool,
    /// The bound's final Monte-Carlo standard error is above its target.
    #[serde(default)]
    pub mc_target_missed: bool,
    /// The target of the Monte-Carlo standard error, nats per example (diffusion bounds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mc_target: Option<f64>,
    /// What the bound bounds: `−log p(x)`, or `−log p(x | y)` for a class-conditional model
    /// evaluated with its labels.
    #[serde(default = "unconditional_target")]
    pub bounds: String,
    /// For data with a known density (toy sets): the true value of what the bound bounds
    /// (−log p(x | y) for a conditional run) and the bound's gap to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_nll_nats: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_nats: Option<f64>,
    /// A conditional run on data with a known density: the true −log p(x), and the gap of the
    /// null-class bound (which bounds it) to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_unconditional_nll_nats: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconditional_gap_nats: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconditional_gap_se: Option<f64>,
    /// The standard error of `gap_nats` over examples, from the paired differences
    /// bound(x) − (true value at x) (Monte-Carlo noise included): a bound is not below the truth
    /// beyond a few of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_se: Option<f64>,
    /// Where the diffusion loss per time was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diffusion_loss_by_time: Option<String>,
    /// Active units per stochastic layer (VAE, HVAE; Burda et al. 2016 §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_units: Option<Vec<crate::models::LayerUnits>>,
    /// Sample quality, with `--quality`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<quality::Quality>,
    /// A class-conditional diffusion model: the bound of the same network given no label (its
    /// null class, M43), nats per example, with its standard error over examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconditional_nll_nats: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconditional_nll_se: Option<f64>,
    /// The likelihood along the probability-flow ODE, with `--method ode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ode: Option<ode::OdeReport>,
}

impl EvalReport {
    /// A report with the bound `nll` (and `mc_se`, for Monte-Carlo bounds) in `unit` over `dim`
    /// dimensions, and the terms in order; the per-dimension figures are computed here only.
    #[allow(clippy::too_many_arguments)]
    fn new(
        head: Head,
        nll: Stat,
        neg_elbo: Stat,
        terms: &[(String, Stat)],
        unit: Unit,
        dim: usize,
        mc_se: Option<f64>,
        bound: String,
    ) -> EvalReport {
        let per = |v: f64| unit.per_dim(v, dim);
        let bounds = head.bounds().to_string();
        let (true_target, true_nll, conditional) =
            (head.true_target(), head.true_nll, head.conditional);
        let mut r = EvalReport {
            model: head.model,
            data: head.data,
            split: head.split.to_string(),
            n: head.n,
            iw: None,
            step: head.step,
            nll_nats: nll.mean,
            nll_se: nll.se,
            neg_elbo_nats: neg_elbo.mean,
            neg_elbo_se: neg_elbo.se,
            neg_iw_bound_nats: None,
            terms: terms.iter().map(|(k, s)| (k.clone(), s.mean)).collect(),
            terms_se: terms.iter().map(|(k, s)| (k.clone(), s.se)).collect(),
            term_order: terms.iter().map(|(k, _)| k.clone()).collect(),
            unit,
            bits_per_dim: None,
            bits_per_dim_se: None,
            bits_per_dim_mc_se: None,
            bits_per_binary_pixel: None,
            bits_per_binary_pixel_se: None,
            nats_per_dim: None,
            nats_per_dim_se: None,
            nats_per_dim_mc_se: None,
            mc_se,
            t_steps: None,
            t_samples: None,
            bound,
            decoder: None,
            binarized: false,
            mc_target_missed: false,
            mc_target: None,
            bounds,
            true_nll_nats: None,
            gap_nats: None,
            true_unconditional_nll_nats: None,
            unconditional_gap_nats: None,
            unconditional_gap_se: None,
            gap_se: None,
            diffusion_loss_by_time: None,
            active_units: None,
            quality: None,
            unconditional_nll_nats: None,
            unconditional_nll_se: None,
            ode: None,
        };
        let (v, se, mc) = (Some(per(nll.mean)), Some(per(nll.se)), mc_se.map(per));
        match unit {
            Unit::BitsPerDim => {
                (r.bits_per_dim, r.bits_per_dim_se, r.bits_per_dim_mc_se) = (v, se, mc)
            }
            Unit::BitsPerBinaryPixel => {
                (r.bits_per_binary_pixel, r.bits_per_binary_pixel_se) = (v, se)
            }
            Unit::NatsPerDim => {
                (r.nats_per_dim, r.nats_per_dim_se, r.nats_per_dim_mc_se) = (v, se, mc)
            }
        }
        if let Some(t) = true_target {
            r.true_nll_nats = Some(t);
            r.gap_nats = Some(nll.mean - t);
        }
        if conditional {
            r.true_unconditional_nll_nats = true_nll;
        }
        r
    }

    /// The bound per dimension in its unit.
    pub fn per_dim(&self) -> f64 {
        self.bits_per_dim
            .or(self.bits_per_binary_pixel)
            .or(self.nats_per_dim)
            .unwrap_or(f64::NAN)
    }
}

fn unconditional_target() -> String {
    "−log p(x)".into()
}

/// What every report states about the evaluated run and data.
struct Head {
    model: String,
    data: String,
    split: Split,
    n: usize,
    step: Option<u64>,
    /// Data of known density: the mean true −log p(x).
    true_nll: Option<f64>,
    /// Per example, −log p(x) (data of known density): what the null-class bound's gap pairs
    /// with.
    true_rows: Option<Vec<f64>>,
    /// Per example, the true value of what the bound bounds.
    target_rows: Option<Vec<f64>>,
    /// The run is class-conditional and evaluated with the data's labels: its bounds are on
    /// −log p(x | y).
    conditional: bool,
    /// Data of known density with labels: the mean true −log p(x | y).
    true_cond_nll: Option<f64>,
}

impl Head {
    /// What the run's bound (and ODE likelihood) bound.
    fn bounds(&self) -> &'static str {
        if self.conditional {
            "−log p(x | y)"
        } else {
            "−log p(x)"
        }
    }

    /// The true value of what the bound bounds, where the data's density is known.
    fn true_target(&self) -> Option<f64> {
        if self.conditional {
            self.true_cond_nll
        } else {
            self.true_nll
        }
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
    if opts.ode.is_some() && !cfg.model.is_diffusion() {
        return Err(Error::Config(format!(
            "--method ode needs a diffusion model; {} is a {} run",
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
    progress.start("samples for quality", l.model.sample_work(n, &so));
    let mut v = l.model.draw(n, &so, &|| progress.inc(1))?;
    progress.finish();
    // Bernoulli means of binarised images are grey levels in [0, 1]: as 8-bit levels.
    if M::binarize(&l.section, &l.spec).is_some() {
        v.iter_mut().for_each(|x| *x *= 255.0);
    }
    let mut q = quality::quality(spec, &v, quality::ClassifierSettings::default())?;
    if l.model.diffusion().is_some() {
        let name = opts
            .sampler
            .or(l.model.default_sampler())
            .unwrap_or(crate::sample::SamplerKind::Ancestral)
            .describe(opts.eta);
        q.sampler = Some(match opts.steps {
            Some(s) => format!("{name}, {s} steps"),
            None => format!("{name}, the run's default steps"),
        });
    }
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
    let unit = if binarize.is_some() {
        Unit::BitsPerBinaryPixel
    } else if l.file.data.is_image() {
        Unit::BitsPerDim
    } else {
        Unit::NatsPerDim
    };
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
