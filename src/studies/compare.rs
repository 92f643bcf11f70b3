//! `elbo compare`: the paper's argument as one table. A VAE, a hierarchical VAE, a VDM and the
//! modern family (flow matching, EDM, a latent VDM) are trained on the same data and split with
//! the same wall-clock budget (or taken from existing runs), evaluated with their bounds on the
//! same test images, and set side by side: the NLL bound and each of its terms, the exact
//! likelihood along the probability-flow ODE where a model has one, parameter count, training
//! time and speed, sample quality with its network evaluations per sample, and a figure of
//! each model's samples.
//!
//! The bound is the same quantity for every row because every model scores the same
//! representation of the images ([`Representation`]): the 8-bit levels (the VAE and HVAE with a
//! discretised logistic decoder, the VDM with its 256-level decoder; bits/dim) or binarised
//! pixels (Bernoulli decoders for all three; nats per image). One table never mixes the two.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::eval::{EvalOptions, EvalReport, Progress};
use crate::models::{ModelConfig, ModelKind, SampleOptions};
use crate::run::RunConfig;
use crate::run::RunDir;
use crate::train::TrainOptions;
use crate::{Error, Result};

/// Which representation of 8-bit images every model of a comparison scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Representation {
    /// The 256 levels: discrete likelihoods in bits/dim.
    #[serde(rename = "8bit")]
    EightBit,
    /// Dynamically binarised pixels (Bernoulli decoders): nats per image.
    Binary,
}

crate::choice!(Representation {
    EightBit = "8bit": "the 256 levels: discrete likelihoods in bits/dim",
    Binary = "binary": "dynamically binarised pixels (Bernoulli decoders): nats per image",
});

impl Representation {
    pub fn name(self) -> &'static str {
        match self {
            Representation::EightBit => "8bit",
            Representation::Binary => "binary",
        }
    }
}

/// The models of a comparison by default, in the order of the argument: the paper's three,
/// then the modern family.
pub const MODELS: [ModelKind; 6] = [
    ModelKind::Vae,
    ModelKind::Hvae,
    ModelKind::Vdm,
    ModelKind::Flow,
    ModelKind::Edm,
    ModelKind::LatentVdm,
];

/// The representation of 8-bit images a model's settings score (a dequantised run is refused
/// separately: it scores a density, not either representation).
pub fn representation_of(model: &ModelConfig) -> Representation {
    if model.binary_images() {
        Representation::Binary
    } else {
        Representation::EightBit
    }
}

/// Refuse data that are not 8-bit images (loaded once, before any model is trained).
fn check_images(data: &str) -> Result<()> {
    if crate::data::load(data, crate::data::Split::Train)?.kind != crate::data::DataKind::Image8 {
        return Err(Error::Config(format!(
            "elbo compare needs 8-bit images (its rows share one representation of them); \
             '{data}' holds continuous vectors"
        )));
    }
    Ok(())
}

/// The run configuration of one row: the model's defaults on `data` (8-bit images), set to
/// score `repr`, trained for `minutes` of wall-clock time (steps unbounded).
fn config_for(
    kind: ModelKind,
    repr: Representation,
    data: &str,
    minutes: f64,
    seed: u64,
) -> Result<RunConfig> {
    let mut cfg = RunConfig::default();
    cfg.set_model(kind);
    cfg.data = data.to_string();
    cfg.seed = seed;
    cfg.model.set_binary_images(repr == Representation::Binary);
    cfg.resolve_for_data(crate::data::DataKind::Image8);
    cfg.max_minutes = minutes;
    // The budget ends training; the step count only has to be out of reach.
    cfg.steps = 100_000_000;
    cfg.eval_every = 5_000;
    cfg.validate()?;
    Ok(cfg)
}

/// What a comparison does.
pub struct CompareOptions<'a> {
    pub data: String,
    pub representation: Representation,
    /// Training budget per model, minutes.
    pub minutes: f64,
    /// Directory of the comparison: its runs (`vae/`, `hvae/`, `vdm/`), table and figure.
    pub out: PathBuf,
    /// The rows' models, in order (the given runs' kinds must be among them).
    pub models: Vec<ModelKind>,
    /// Existing runs to use instead of training (one of each kind at most).
    pub runs: Vec<PathBuf>,
    /// Test images whose exact likelihood along the probability-flow ODE is also measured, for
    /// the diffusion models of 8-bit images (0: none; it costs about 1,500 network evaluations
    /// each).
    pub ode: usize,
    /// Importance samples K of L_K for the VAE and HVAE (0: the ELBO only).
    pub iw: usize,
    /// Samples for the quality figures (0: none).
    pub quality: usize,
    /// Test examples evaluated (usize::MAX: the whole split).
    pub limit: usize,
    /// Seconds for a VDM bound's final round of time samples.
    pub budget_secs: f64,
    pub seed: u64,
    /// The training device (with autodiff); evaluation uses its inner device.
    pub device: burn::tensor::Device,

    pub stop: &'a AtomicBool,
    pub note: &'a dyn Fn(&str),
}

/// One model's line of the table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompareRow {
    pub model: String,
    pub dir: String,
    pub params: usize,
    pub steps: u64,
    pub train_secs: f64,
    pub examples_per_sec: f64,
    /// The full evaluation: every term, the bound in nats and per dimension, quality.
    pub eval: EvalReport,
    /// The probability-flow ODE's likelihood on the first `ode` test images, where measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ode: Option<crate::eval::ode::OdeReport>,
}

/// The table: rows over one data set, split and representation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompareReport {
    pub data: String,
    pub split: String,
    pub representation: Representation,
    /// The unit of `per_dim` figures.
    pub unit: String,
    /// Training budget per model, minutes (0 where every row came from an existing run).
    pub minutes: f64,
    pub rows: Vec<CompareRow>,
    /// The samples figure, left to right in row order.
    pub samples_png: Option<String>,
}

/// Train (or take) each model, evaluate it, and write `compare.md`, `compare.json` and
/// `samples.png` into `opts.out`.
pub fn compare(opts: &CompareOptions, progress: &dyn Progress) -> Result<CompareReport> {
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::Io {
        path: opts.out.clone(),
        error: e,
    })?;
    // Existing runs by kind; each must be on the same data and representation.
    let mut given: Vec<(ModelKind, PathBuf)> = Vec::new();
    for dir in &opts.runs {
        let rd = RunDir::new(dir);
        rd.check()?;
        let cfg = rd.config()?;
        let kind = cfg.model.kind();
        if given.iter().any(|(k, _)| *k == kind) {
            return Err(Error::Config(format!(
                "--runs names two {kind} runs; a comparison has one of each model"
            )));
        }
        if cfg.data != opts.data {
            return Err(Error::Config(format!(
                "{}: trained on '{}', the comparison is on '{}' (--data)",
                dir.display(),
                cfg.data,
                opts.data
            )));
        }
        let r = representation_of(&cfg.model);
        if r != opts.representation || cfg.dequantize {
            return Err(Error::Config(format!(
                "{}: this {kind} run scores {} images, the comparison {} (--representation): \
                 its numbers would not be of the same data",
                dir.display(),
                if cfg.dequantize {
                    "dequantised"
                } else {
                    r.name()
                },
                opts.representation.name()
            )));
        }
        if !opts.models.contains(&kind) {
            return Err(Error::Config(format!(
                "{}: a {kind} run, and {kind} is not among the compared models (--models)",
                dir.display()
            )));
        }
        given.push((kind, dir.clone()));
    }
    if opts.models.is_empty() {
        return Err(Error::Config("--models names no model".into()));
    }
    if given.len() < opts.models.len() {
        check_images(&opts.data)?;
    }
    let mut rows = Vec::new();
    let mut grids = Vec::new();
    for &kind in &opts.models {
        let dir = match given.iter().find(|(k, _)| *k == kind) {
            Some((_, d)) => d.clone(),
            None => {
                let d = opts.out.join(kind.name());
                let cfg = config_for(
                    kind,
                    opts.representation,
                    &opts.data,
                    opts.minutes,
                    opts.seed,
                )?;
                let resume = RunDir::new(&d).is_run();
                (opts.note)(&format!(
                    "{} {kind} on {} ({} images) for {} min → {}",
                    if resume { "continuing" } else { "training" },
                    opts.data,
                    opts.representation.name(),
                    opts.minutes,
                    d.display()
                ));
                let outcome = crate::train::train(
                    &cfg,
                    &TrainOptions {
                        out: &d,
                        resume,
                        stop: opts.stop,
                        progress,
                        device: opts.device.clone(),
                        note: opts.note,
                        force: false,
                        comm: &crate::comm::Solo,
                        devices: vec![],
                    },
                )?;
                if outcome.interrupted {
                    return Err(Error::Interrupted { step: outcome.step });
                }
                d
            }
        };
        let (row, grid) = evaluate_row(&dir, opts, progress)?;
        rows.push(row);
        if let Some(g) = grid {
            grids.push(g);
        }
    }
    let samples_png = if grids.len() == rows.len() && !grids.is_empty() {
        let path = opts.out.join("samples.png");
        let refs: Vec<&PathBuf> = grids.iter().collect();
        crate::report::grid::save_strip(&path, &refs)?;
        Some(path.display().to_string())
    } else {
        None
    };
    let unit = rows
        .first()
        .map(|r| r.eval.unit.label().to_string())
        .unwrap_or_default();
    let report = CompareReport {
        data: opts.data.clone(),
        split: "test".into(),
        representation: opts.representation,
        unit,
        minutes: if given.len() == opts.models.len() {
            0.0
        } else {
            opts.minutes
        },
        rows,
        samples_png,
    };
    let write =
        |name: &str, text: &str| crate::fsio::write_atomic(&opts.out.join(name), text.as_bytes());
    write(
        "compare.json",
        &serde_json::to_string_pretty(&report).map_err(|e| Error::Invalid(e.to_string()))?,
    )?;
    write("compare.md", &markdown(&report))?;
    Ok(report)
}

/// Evaluate one run for the table, and draw its panel of the samples figure.
fn evaluate_row(
    dir: &Path,
    opts: &CompareOptions,
    progress: &dyn Progress,
) -> Result<(CompareRow, Option<PathBuf>)> {
    let rd = RunDir::new(dir);
    let mf = rd.model_file()?;
    let state = rd.state()?;
    let kind = mf.model;
    let image = mf.data.image_hw();
    let eo = EvalOptions {
        data: Some(opts.data.clone()),
        iw: (rd.config()?.model.has_importance_weighted() && opts.iw > 0).then_some(opts.iw),
        seed: opts.seed,
        limit: opts.limit,
        device: opts.device.clone(),
        quality: (opts.quality > 0 && image.is_some()).then_some(opts.quality),
        budget_secs: Some(opts.budget_secs),
        ..EvalOptions::default()
    };
    let eval_device = eo.device.clone().inner();
    let eo = EvalOptions {
        device: eval_device.clone(),
        ..eo
    };
    let ode_opts = EvalOptions {
        limit: opts.ode,
        quality: None,
        iw: None,
        ode: Some(crate::diffusion::ode::OdeOptions::for_data(
            mf.data.dim(),
            crate::diffusion::ode::Divergence::for_dim(mf.data.dim(), 2),
        )),
        ..eo.clone()
    };
    let e = crate::eval::evaluate(&rd, &eo, progress)?;
    // The exact likelihood where the model has one (a diffusion model of the 8-bit levels).
    let has_ode = rd.config()?.model.has_ode() && !rd.config()?.model.binary_images();
    let ode = if opts.ode > 0 && has_ode {
        crate::eval::evaluate(&rd, &ode_opts, progress)?.report.ode
    } else {
        None
    };
    let grid = match image {
        Some((h, w)) => {
            let so = SampleOptions::ancestral(opts.seed, crate::par::default_threads());
            let run = crate::run::open(&rd, &eval_device)?;
            let s = crate::eval::draw::draw(run.as_ref(), 36, &so, None, false, progress)?;
            let v: Vec<f32> = s.values.iter().map(|x| x / s.white).collect();
            let path = opts.out.join(format!("samples-{}.png", kind.name()));
            crate::report::grid::save_grid(&path, &v, 36, h, w, 2)?;
            Some(path)
        }
        None => None,
    };
    let row = CompareRow {
        model: kind.name().to_string(),
        dir: dir.display().to_string(),
        params: mf.num_params,
        steps: state.step,
        train_secs: state.elapsed_secs,
        examples_per_sec: state.examples_seen as f64 / state.elapsed_secs.max(1e-9),
        eval: e.report,
        ode,
    };
    Ok((row, grid))
}

/// The table as Markdown: one line per model, every column of one data and unit.
pub fn markdown(r: &CompareReport) -> String {
    let per = |v: f64| format!("{v:.4}");
    let mut s = format!(
        "Comparison on {} ({} split, {} images, {} examples); NLL bound per dimension in {}; \
         every row is a bound on the same −log p(x).\n\n",
        r.data,
        r.split,
        r.representation.name(),
        r.rows.first().map_or(0, |x| x.eval.n),
        r.unit
    );
    s.push_str(
        "| model | params | steps | train time | examples/s | −ELBO (nats) | −L_K (nats) | NLL bound | ODE NLL | terms (nats) | active units | FD-classifier | NFE per sample | class entropy | confidence |\n",
    );
    s.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |\n");
    for row in &r.rows {
        let e = &row.eval;
        let terms: Vec<String> = e
            .term_order
            .iter()
            .filter_map(|k| e.terms.get(k).map(|v| format!("{k} {v:.2}")))
            .collect();
        let iw = match (e.iw, e.neg_iw_bound_nats) {
            (Some(k), Some(v)) => format!("{v:.2} (K = {k})"),
            _ => "–".into(),
        };
        let units = e.active_units.as_ref().map_or("–".to_string(), |u| {
            u.iter()
                .map(|l| format!("{} {}/{}", l.layer, l.active, l.total))
                .collect::<Vec<_>>()
                .join(", ")
        });
        let (fd, nfe, ent, conf) = match &e.quality {
            Some(q) => (
                format!("{:.1}", q.samples.fd_classifier),
                q.nfe.map_or("–".to_string(), |n| format!("{n:.0}")),
                format!("{:.3}", q.samples.class_entropy),
                format!("{:.3}", q.samples.mean_confidence),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let ode = row.ode.as_ref().map_or("–".to_string(), |o| {
            format!("{:.4} ± {:.4} ({} images)", o.per_dim, o.per_dim_se, o.n)
        });
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} min | {:.0} | {:.2} ± {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.model,
            row.params,
            row.steps,
            row.train_secs / 60.0,
            row.examples_per_sec,
            e.neg_elbo_nats,
            e.neg_elbo_se,
            iw,
            per(e.per_dim()),
            ode,
            terms.join("; "),
            units,
            fd,
            nfe,
            ent,
            conf
        ));
    }
    if let Some(q) = r.rows.iter().find_map(|x| x.eval.quality.as_ref()) {
        s.push_str(&format!(
            "\nReal training images score FD-classifier {:.1}, class entropy {:.3}, confidence {:.3} \
             ({}).\n",
            q.real.fd_classifier, q.real.class_entropy, q.real.mean_confidence, q.note
        ));
    }
    if let Some(p) = &r.samples_png {
        s.push_str(&format!(
            "\nSamples, left to right {}: {p}\n",
            r.rows
                .iter()
                .map(|x| x.model.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s
}
