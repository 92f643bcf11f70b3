//! The report of an evaluation ([`EvalReport`]: its JSON is the contract of `elbo eval
//! --json`), as text, and the diffusion loss per time as a CSV and a plot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diffusion::TimeBin;
use super::quality::Quality;
use super::Evaluation;
use crate::data::Split;
use crate::elbo::Stat;
use crate::fsio::write_atomic;
use crate::report::plot::{line_plot, Series};
use crate::units::Unit;
use crate::Result;

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
    pub quality: Option<Quality>,
    /// A class-conditional diffusion model: the bound of the same network given no label (its
    /// null class, M43), nats per example, with its standard error over examples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconditional_nll_nats: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconditional_nll_se: Option<f64>,
    /// The training objective, where it is not the ELBO itself (a weighting, whether it is
    /// monotone, the proposal of noise levels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<String>,
    /// The likelihood along the probability-flow ODE, with `--method ode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ode: Option<super::ode::OdeReport>,
}

impl EvalReport {
    /// A report with the bound `nll` (and `mc_se`, for Monte-Carlo bounds) in `unit` over `dim`
    /// dimensions, and the terms in order; the per-dimension figures are computed here only.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
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
            objective: None,
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

pub(super) fn unconditional_target() -> String {
    "−log p(x)".into()
}

/// What every report states about the evaluated run and data.
pub(super) struct Head {
    pub(super) model: String,
    pub(super) data: String,
    pub(super) split: Split,
    pub(super) n: usize,
    pub(super) step: Option<u64>,
    /// Data of known density: the mean true −log p(x).
    pub(super) true_nll: Option<f64>,
    /// Per example, −log p(x) (data of known density): what the null-class bound's gap pairs
    /// with.
    pub(super) true_rows: Option<Vec<f64>>,
    /// Per example, the true value of what the bound bounds.
    pub(super) target_rows: Option<Vec<f64>>,
    /// The run is class-conditional and evaluated with the data's labels: its bounds are on
    /// −log p(x | y).
    pub(super) conditional: bool,
    /// Data of known density with labels: the mean true −log p(x | y).
    pub(super) true_cond_nll: Option<f64>,
}

impl Head {
    /// What the run's bound (and ODE likelihood) bound.
    pub(super) fn bounds(&self) -> &'static str {
        if self.conditional {
            "−log p(x | y)"
        } else {
            "−log p(x)"
        }
    }

    /// The true value of what the bound bounds, where the data's density is known.
    pub(super) fn true_target(&self) -> Option<f64> {
        if self.conditional {
            self.true_cond_nll
        } else {
            self.true_nll
        }
    }
}

/// The report's lines: what was evaluated, each term ± se, the bound in nats and per dimension.
pub fn lines(r: &EvalReport) -> Vec<String> {
    let mut notes = vec![format!("{} examples", r.n), r.bound.clone()];
    if let Some(t) = r.t_samples {
        notes.push(format!("{t} time samples per example"));
    }
    if let Some(d) = &r.decoder {
        notes.push(d.clone());
    }
    if r.binarized {
        notes.push("binarised once with the eval seed".into());
    }
    let mut out = vec![format!(
        "{} on {} ({} split; {})",
        r.model,
        r.data,
        r.split,
        notes.join("; ")
    )];
    out.push(format!(
        "  {:<16} {:>12} {:>10}",
        "term (nats)", "mean", "± se"
    ));
    for k in &r.term_order {
        let (m, s) = (r.terms.get(k), r.terms_se.get(k));
        if let (Some(m), Some(s)) = (m, s) {
            out.push(format!("  {k:<16} {m:>12.4} {s:>10.4}"));
        }
    }
    out.push(format!(
        "  {:<16} {:>12.4} {:>10.4}",
        "−ELBO", r.neg_elbo_nats, r.neg_elbo_se
    ));
    if let (Some(k), Some(v)) = (r.iw, r.neg_iw_bound_nats) {
        out.push(format!(
            "  {:<16} {v:>12.4} {:>10.4}",
            format!("−L_{k}"),
            r.nll_se
        ));
    }
    let unit = r.unit.label();
    let what = format!("bound on {}", r.bounds);
    out.push(match (r.mc_se, r.unit) {
        (Some(mc), Unit::NatsPerDim | Unit::BitsPerBinaryPixel) => format!(
            "NLL {what}: {:.4} ± {:.4} nats ({:.4} {unit}; Monte-Carlo se {mc:.4} nats)",
            r.nll_nats,
            r.nll_se,
            r.per_dim()
        ),
        (Some(_), _) => format!(
            "NLL {what}: {:.4} {unit} (Monte-Carlo se {:.4}; over examples {:.4})",
            r.per_dim(),
            r.bits_per_dim_mc_se.unwrap_or(f64::NAN),
            r.bits_per_dim_se.unwrap_or(f64::NAN)
        ),
        (None, _) => format!(
            "NLL {what}: {:.3} ± {:.3} nats ({:.4} {unit})",
            r.nll_nats,
            r.nll_se,
            r.per_dim()
        ),
    });
    if let Some(o) = &r.objective {
        out.push(format!("note: {o}"));
    }
    if r.mc_target_missed {
        out.push(format!(
            "warning: the bound's Monte-Carlo standard error, {:.4} nats, is above its target of \
             {:.4} nats ({} time samples per example); `elbo eval DIR --t-samples N` with a \
             larger N lowers it",
            r.mc_se.unwrap_or(f64::NAN),
            r.mc_target.unwrap_or(f64::NAN),
            r.t_samples.unwrap_or(0)
        ));
    }
    if let (Some(t), Some(g)) = (r.true_nll_nats, r.gap_nats) {
        out.push(format!(
            "true {} of this data: {t:.4} nats; gap {g:.4}{} nats",
            r.bounds,
            r.gap_se.map(|s| format!(" ± {s:.4}")).unwrap_or_default()
        ));
    }
    if let (Some(u), Some(se)) = (r.unconditional_nll_nats, r.unconditional_nll_se) {
        out.push(format!(
            "the same network without labels (its null class, M43), a bound on −log p(x): \
             −ELBO {u:.4} ± {se:.4} nats ({:.4} {}); the label is worth {:.4} nats{}",
            r.unit.per_dim(u, dim_of_report(r)),
            r.unit.label(),
            u - r.neg_elbo_nats,
            match (r.true_unconditional_nll_nats, r.unconditional_gap_nats) {
                (Some(t), Some(g)) => format!(
                    "; true −log p(x) {t:.4} nats, gap {g:.4}{} nats",
                    r.unconditional_gap_se
                        .map(|s| format!(" ± {s:.4}"))
                        .unwrap_or_default()
                ),
                _ => String::new(),
            }
        ));
    }
    if let Some(o) = &r.ode {
        let unit = o.unit.label();
        out.push(format!(
            "ODE likelihood (probability-flow ODE, M37) on the same {} examples: {} = \
             {:.4} ± {:.4} nats ({:.4} ± {:.4} {unit}{})",
            o.n,
            r.bounds,
            o.nll_nats,
            o.nll_se,
            o.per_dim,
            o.per_dim_se,
            if o.per_dim_mc_se > 0.0 {
                format!(
                    "; of which the probes' Monte-Carlo se {:.4} {unit}",
                    o.per_dim_mc_se
                )
            } else {
                String::new()
            }
        ));
        out.push(format!(
            "  beside −ELBO {:.4} nats ({:.4} {unit}): −ELBO − ODE NLL = {:+.4} nats{}",
            r.neg_elbo_nats,
            r.per_dim(),
            r.neg_elbo_nats - o.nll_nats,
            o.gap_nats
                .map(|g| format!(
                    "; ODE − true {} = {g:+.4}{} nats",
                    r.bounds,
                    o.gap_se.map(|s| format!(" ± {s:.4}")).unwrap_or_default()
                ))
                .unwrap_or_default()
        ));
        let logp = match (o.logp_tol, o.solver_err_nats, o.solver_err_per_dim) {
            (Some(t), Some(e), Some(ed)) => format!(
                "; log-density to {t:e} nats per step, its estimated error {e:.3} nats \
                 ({ed:.5} {unit})"
            ),
            _ => String::new(),
        };
        out.push(format!(
            "  solver: adaptive RK45, state rtol {:e}, atol {:e}{logp}; {:.0} evaluations per \
             solve (NFE), {:.1} s; divergence: {}",
            o.rtol, o.atol, o.nfe, o.seconds, o.divergence
        ));
        if let Some(dq) = &o.dequantization {
            out.push(format!("  dequantisation: {dq}"));
        }
    }
    if let Some(units) = &r.active_units {
        let parts: Vec<String> = units
            .iter()
            .map(|u| format!("{} {}/{}", u.layer, u.active, u.total))
            .collect();
        out.push(format!(
            "active units (Cov_x E_q[u|x] > 0.01, Burda et al. 2016 §5): {}",
            parts.join(", ")
        ));
    }
    if let Some(q) = &r.quality {
        let what = format!(
            "{} samples{}",
            q.samples.n,
            q.sampler
                .as_ref()
                .map(|s| format!(" drawn by {s}"))
                .unwrap_or_default()
        );
        out.extend(quality_lines(q, &what));
    }
    if let Some(p) = &r.diffusion_loss_by_time {
        out.push(format!("diffusion loss by time: {p} (and .png)"));
    }
    out
}

/// The data's dimension, from the report's bound and its per-dimension figure.
fn dim_of_report(r: &EvalReport) -> usize {
    let pd = r.per_dim();
    let one = r.unit.per_dim(r.nll_nats, 1);
    if pd.is_finite() && pd.abs() > 0.0 {
        (one / pd).round().max(1.0) as usize
    } else {
        1
    }
}

/// Sample-quality figures beside the real images' (`what`: which samples, in words).
pub fn quality_lines(q: &Quality, what: &str) -> Vec<String> {
    let mut out = vec![
        format!(
            "sample quality ({what}, beside {} real training images; classifier test accuracy \
             {:.1}%):",
            q.real.n,
            100.0 * q.classifier_test_accuracy
        ),
        format!("  {:<22} {:>10} {:>10}", "", "samples", "real"),
    ];
    for (name, a, b) in [
        (
            "FD-classifier",
            q.samples.fd_classifier,
            q.real.fd_classifier,
        ),
        (
            "class entropy (nats)",
            q.samples.class_entropy,
            q.real.class_entropy,
        ),
        (
            "mean confidence",
            q.samples.mean_confidence,
            q.real.mean_confidence,
        ),
    ] {
        out.push(format!("  {name:<22} {a:>10.3} {b:>10.3}"));
    }
    out
}

/// Write the diffusion loss per time as `DIR/diffusion_loss_by_time.csv` and `.png` and name
/// the CSV in the report; nothing for bounds without one.
pub fn write_loss_by_time(dir: &Path, e: &mut Evaluation, dim: usize) -> Result<Option<PathBuf>> {
    let Some(bins) = &e.loss_by_time else {
        return Ok(None);
    };
    let csv_path = dir.join("diffusion_loss_by_time.csv");
    write_atomic(&csv_path, loss_csv(bins, dim).as_bytes())?;
    let pts: Vec<(f64, f64)> = bins
        .iter()
        .map(|b| (0.5 * (b.t_lo + b.t_hi), b.nats))
        .collect();
    // The picture is a convenience: a plotting failure leaves the CSV and the report intact.
    let _ = line_plot(
        &dir.join("diffusion_loss_by_time.png"),
        "where the bound is lost: diffusion loss per unit time",
        "t (0 = data, 1 = noise)",
        "nats per example per unit t",
        &[Series {
            name: "diffusion integrand",
            points: pts,
            markers: false,
        }],
        false,
    );
    e.report.diffusion_loss_by_time = Some(csv_path.display().to_string());
    Ok(Some(csv_path))
}

/// The CSV of the loss per time.
pub fn loss_csv(bins: &[TimeBin], dim: usize) -> String {
    let mut csv =
        String::from("t_lo,t_hi,t_mid,log_snr,diffusion_nats,diffusion_bits_per_dim,samples\n");
    for b in bins {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            b.t_lo,
            b.t_hi,
            0.5 * (b.t_lo + b.t_hi),
            b.log_snr,
            b.nats,
            b.nats / (dim as f64 * std::f64::consts::LN_2),
            b.samples
        ));
    }
    csv
}
