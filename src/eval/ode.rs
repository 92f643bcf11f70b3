//! `elbo eval --method ode`: the exact likelihood of a diffusion run along its probability-flow
//! ODE (MATH.md M36, M37), beside the ELBO of the same model on the same examples.
//!
//! The ODE defines a density of its own (the prior pushed through a deterministic flow); its NLL
//! is exact up to the solver's tolerance and, in high dimension, Hutchinson's Monte-Carlo error,
//! which is reported. It is not a bound on the ELBO's model, which is a different (stochastic)
//! decoder of the same network; a well-trained network makes the two close.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{EvalData, EvalOptions, Progress, Unit};
use crate::data::batches::row_block;
use crate::diffusion::ode::{Divergence, OdeOptions};
use crate::elbo::Stat;
use crate::models::Model;
use crate::rng::{chunk, streams};
use crate::run::load_model;
use crate::run::RunDir;
use crate::{Error, Result};

/// What `elbo eval --method ode` adds to the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OdeReport {
    /// Examples integrated.
    pub n: usize,
    /// −log p(x), nats per example, and its standard error over examples (data and probes).
    pub nll_nats: f64,
    pub nll_se: f64,
    /// The part of the error from Hutchinson's probes alone (0 when exact).
    pub mc_se: f64,
    pub unit: Unit,
    /// −log p(x) per dimension in `unit`, with its standard errors.
    pub per_dim: f64,
    pub per_dim_se: f64,
    pub per_dim_mc_se: f64,
    pub rtol: f64,
    pub atol: f64,
    /// The log-density's own tolerance per solver step (nats per example), if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logp_tol: Option<f64>,
    /// The solver's estimate of its error in the mean NLL (nats; the mean over examples of the
    /// sums of each step's local error estimates, conservative), when `logp_tol` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver_err_nats: Option<f64>,
    /// The same per dimension, in `unit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver_err_per_dim: Option<f64>,
    /// How the divergence was computed, in words.
    pub divergence: String,
    /// Mean evaluations of the ODE's right-hand side per solve (a forward and a backward pass).
    pub nfe: f64,
    /// How discrete data were made continuous, if they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dequantization: Option<String>,
    pub seconds: f64,
    /// For data with a known density (toy sets): the ODE's NLL minus the true value of what it
    /// estimates (−log p(x | y) for a conditional run), nats, with the standard error of the
    /// paired differences over examples. The ODE's density is a normalised density, so its
    /// expected NLL under the data is at least the truth (cross-entropy ≥ entropy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_nats: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap_se: Option<f64>,
}

/// Rows per solve: about 64 network inputs once replicated (D per row if exact, K probes
/// otherwise), at least one row.
fn rows_per_solve(dim: usize, div: Divergence) -> usize {
    let per_row = match div {
        Divergence::Exact => dim,
        Divergence::Hutchinson { probes } => probes,
    };
    let inputs = if dim >= 256 { 32 } else { 1024 };
    (inputs / per_row.max(1)).max(1)
}

/// The ODE likelihood of the evaluated rows (the model reloaded on an autodiff device, its
/// parameters constant).
pub(super) fn evaluate<M: Model>(
    dir: &RunDir,
    section: &M::Config,
    d: &EvalData,
    ode: &OdeOptions,
    opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<OdeReport> {
    ode.validate()?;
    if d.binarize.is_some() {
        return Err(Error::Config(
            "--method ode: the ODE gives a density over continuous values, and this run models \
             binarised images (its likelihood is the Bernoulli decoder's; use --method elbo)"
                .into(),
        ));
    }
    let device = opts.device.clone().autodiff();
    let l = load_model::<M>(dir, section, &device)?;
    let model = l.model.no_grad();
    if !l.cfg.model.has_ode() {
        return Err(Error::Config(format!(
            "--method ode needs a diffusion model (or a diffusion prior); this run is a {}",
            l.cfg.model.kind()
        )));
    }
    let dim = d.ds.dim();
    let n = d.ds.n;
    let per = rows_per_solve(dim, ode.divergence);
    let chunks = n.div_ceil(per);
    let labels = d.ds.labels.as_deref();
    let started = Instant::now();
    progress.start("ODE likelihood", n as u64);
    let parts = crate::par::map_chunks(
        crate::par::replicas(&model, opts.threads, chunks),
        chunks,
        |m, i| {
            let start = i * per;
            let b = per.min(n - start);
            let x = row_block(&d.rows, start, b, dim, &device);
            let y = labels.map(|l| &l[start..start + b]);
            let mut rng = chunk(opts.seed, streams::EVAL_NOISE ^ 0x0DE, i as u64);
            let r = m
                .ode_nll(x, y, ode, &mut rng)
                .ok_or_else(|| Error::Invalid("the model has no ODE likelihood".into()))??;
            progress.inc(b as u64);
            Ok(r)
        },
    )?;
    progress.finish();
    let nll: Vec<f64> = parts.iter().flat_map(|p| p.nll.iter().copied()).collect();
    if let Some(bad) = nll.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "the ODE likelihood of example {bad} is not finite (the network's output overflowed \
             along the solve)"
        )));
    }
    let mc_var: f64 = parts.iter().flat_map(|p| p.se.iter()).map(|s| s * s).sum();
    let mc_se = mc_var.sqrt() / n.max(1) as f64;
    let nfe = parts.iter().map(|p| p.nfe as f64).sum::<f64>() / parts.len().max(1) as f64;
    let s = Stat::of(&nll);
    let solver_err = ode.logp_tol.map(|_| {
        let e: Vec<f64> = parts
            .iter()
            .flat_map(|p| p.solver_err.iter().copied())
            .collect();
        e.iter().sum::<f64>() / e.len().max(1) as f64
    });
    let gap = super::paired_gap(&nll, d.head.target_rows.as_deref());
    let dequantization = (d.unit == Unit::BitsPerDim && !l.file.data.dequantized).then(|| {
        "uniform: each 8-bit value k read as k + u, u ~ U(−½, ½), and the density times the \
         bin width 2/255 per value (a bound on the discrete NLL, comparable with the ELBO)"
            .to_string()
    });
    Ok(OdeReport {
        n,
        nll_nats: s.mean,
        nll_se: s.se,
        mc_se,
        unit: d.unit,
        per_dim: d.unit.per_dim(s.mean, dim),
        per_dim_se: d.unit.per_dim(s.se, dim),
        per_dim_mc_se: d.unit.per_dim(mc_se, dim),
        rtol: ode.rtol,
        atol: ode.atol,
        logp_tol: ode.logp_tol,
        solver_err_nats: solver_err,
        solver_err_per_dim: solver_err.map(|e| d.unit.per_dim(e, dim)),
        divergence: ode.divergence.describe(),
        nfe,
        dequantization,
        seconds: started.elapsed().as_secs_f64(),
        gap_nats: gap.as_ref().map(|g| g.mean),
        gap_se: gap.as_ref().map(|g| g.se),
    })
}
