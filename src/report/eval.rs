//! An [`EvalReport`] as text, and the diffusion loss per time as a CSV and a plot.

use std::path::{Path, PathBuf};

use super::plot::{line_plot, Series};
use crate::eval::diffusion::TimeBin;
use crate::eval::quality::Quality;
use crate::eval::{EvalReport, Evaluation, Unit};
use crate::train::checkpoint::write_atomic;
use crate::Result;

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
        out.push(format!(
            "  solver: adaptive RK45, rtol {:e}, atol {:e}, {:.0} evaluations per solve (NFE), \
             {:.1} s; divergence: {}",
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
