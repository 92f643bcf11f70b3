//! The diffusion-bound evaluator (M27–M30): reconstruction, prior and diffusion terms with
//! standard errors over examples and the Monte-Carlo standard error of the bound, the number of
//! time samples chosen by a pilot round ([`super::adaptive`]), and the diffusion loss per time
//! (where along the noise axis the bound is lost).

use std::cell::RefCell;
use std::sync::Arc;

use super::adaptive::{self, Adaptive};
use super::{EvalData, EvalOptions, EvalReport, Evaluation, Progress, Unit};
use crate::data::batches::row_block;

use crate::diffusion::elbo::{ElboOptions, TimeProposal};
use crate::elbo::{to_f64, Stat};
use crate::models::Model;
use crate::rng::{chunk, streams};
use crate::{Error, Result};

/// Bins of the diffusion loss per time.
pub const TIME_BINS: usize = 50;

/// The diffusion loss per unit time in one bin of t: its mean over the samples that fell there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeBin {
    pub t_lo: f64,
    pub t_hi: f64,
    /// log SNR at the bin's middle.
    pub log_snr: f64,
    /// Nats per example per unit t (NaN for an empty bin).
    pub nats: f64,
    pub samples: usize,
}

/// One round's per-example sums, for the terms.
#[derive(Default)]
struct Terms {
    recon: Vec<f64>,
    prior: Vec<f64>,
    diff: Vec<f64>,
    /// Per plot bin: Σ w·L, Σ w and the count of time samples, w = 1/p(t) the importance
    /// weight of each draw, so that a bin's mean is the loss averaged uniformly over the bin's
    /// times, however the proposal's own bins fall across it.
    bins: Vec<(f64, f64, usize)>,
}

/// Evaluate a diffusion model on the prepared rows.
pub(super) fn evaluate<M: Model>(
    model: &M,
    d: EvalData,
    opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<Evaluation> {
    let dm = model
        .diffusion()
        .ok_or_else(|| Error::Invalid("not a diffusion model".into()))?;
    if opts.iw.is_some() {
        return Err(Error::Config(
            "--iw: the importance-weighted bound is for models with an encoder (VAE); diffusion \
             models report L_T or L_∞"
                .into(),
        ));
    }
    let (n, dim) = (d.ds.n, d.ds.dim());
    // Target Monte-Carlo standard error of the mean bound, nats per example: 0.01 bits/dim for
    // images, 0.01 nats otherwise.
    let target = match d.unit {
        Unit::NatsPerDim => 0.01,
        _ => 0.01 * dim as f64 * std::f64::consts::LN_2,
    };
    let image = d.unit != Unit::NatsPerDim;
    // On a DDPM table of T steps, --t-steps T is the table's own bound: its T − 1 intervals
    // between the table's steps (node i at t = (i − 1)/(T − 1)).
    let (t_eff, bound) = match (opts.t_steps, dm.table_steps()) {
        (Some(t), Some(tab)) if t as usize == tab => (
            Some(t - 1),
            format!(
                "DDPM's own {t}-step bound: every diffusion term on the β table's steps (M27), \
                 the decoder at its first step"
            ),
        ),
        (Some(t), Some(tab)) => (
            Some(t),
            format!(
                "discrete-time bound, T = {t}, on γ interpolated between the {tab} steps of the \
                 DDPM table (--t-steps {tab} gives the table's own bound)"
            ),
        ),
        (Some(t), None) => (Some(t), format!("discrete-time bound, T = {t} (M27)")),
        (None, _) => (None, "continuous-time bound L_∞ (M28)".to_string()),
    };
    let labels = d.ds.labels.as_deref();
    // Rows per forward pass: about 256 (images) or 4096 (vectors) network inputs.
    let rows_per_pass = if image { 256 } else { 4096 };
    let pilot = if image { 2 } else { 8 };
    let last = RefCell::new(Terms::default());
    // Continuous time: the pilot draws t uniformly and keeps every (t, L(t)); the final round
    // importance-samples t from the density ∝ √E[L(t)²] they measure (unbiased whatever the
    // density; lower variance, so fewer samples meet the target).
    let pilot_draws: RefCell<Vec<(f64, f64)>> = RefCell::new(Vec::new());
    let proposal: RefCell<Option<Arc<TimeProposal>>> = RefCell::new(None);
    let round = |per_rep: usize, round: u64| -> Result<[Vec<f64>; 2]> {
        let prop = proposal.borrow().clone();
        let batch = (rows_per_pass / per_rep).max(1);
        let per_rep_chunks = n.div_ceil(batch);
        progress.start(
            &format!(
                "{} 2 × {per_rep} t/example",
                if round == 0 { "pilot," } else { "ELBO," }
            ),
            2 * n as u64,
        );
        // Chunks of both replicates spread over threads; chunk noise from `rng::chunk`, so the
        // estimate depends on the seed only.
        let states = crate::par::replicas(model, opts.threads, 2 * per_rep_chunks);
        let parts = crate::par::map_chunks(states, 2 * per_rep_chunks, |m, c| {
            let (rep, i) = (c / per_rep_chunks, c % per_rep_chunks);
            let start = i * batch;
            let b = batch.min(n - start);
            let mut rng = chunk(
                opts.seed,
                streams::EVAL_NOISE,
                (round << 40) | ((rep as u64) << 32) | i as u64,
            );
            let x = row_block(&d.rows, start, b, dim, &opts.device);
            let y = labels.map(|l| &l[start..start + b]);
            let dm = m
                .diffusion()
                .ok_or_else(|| Error::Invalid("not a diffusion model".into()))?;
            let e = dm.estimate(
                x,
                ElboOptions {
                    t_steps: t_eff,
                    t_samples: per_rep,
                    proposal: prop.clone(),
                },
                y,
                &mut rng,
            )?;
            let out = (
                rep,
                start,
                to_f64(e.recon)?,
                to_f64(e.prior)?,
                to_f64(e.samples.reshape([b * per_rep]))?,
                e.times,
                e.weights,
            );
            progress.inc(b as u64);
            Ok(out)
        })?;
        progress.finish();
        let w = per_rep as f64;
        let mut est = [vec![0.0; n], vec![0.0; n]];
        let mut t = Terms {
            recon: vec![0.0; n],
            prior: vec![0.0; n],
            diff: vec![0.0; n],
            bins: vec![(0.0, 0.0, 0); TIME_BINS],
        };
        let keep_pilot = round == 0 && t_eff.is_none();
        for (rep, start, recon, prior, samples, times, weights) in parts {
            for i in 0..recon.len() {
                let k = start + i;
                let mut d_mean = 0.0;
                for j in 0..per_rep {
                    let v = samples[i * per_rep + j];
                    let iw = weights.as_ref().map_or(1.0, |ws| ws[i * per_rep + j]);
                    d_mean += v * iw / w;
                    if keep_pilot {
                        pilot_draws.borrow_mut().push((times[i * per_rep + j], v));
                    }
                    add_to_bin(&mut t.bins, times[i * per_rep + j], v, iw);
                }
                t.recon[k] += recon[i] / 2.0;
                t.prior[k] += prior[i] / 2.0;
                t.diff[k] += d_mean / 2.0;
                est[rep][k] = recon[i] + prior[i] + d_mean;
            }
        }
        *last.borrow_mut() = t;
        Ok(est)
    };
    let fixed = opts.t_samples.map(|t| (t / 2).max(1));
    let Adaptive {
        per_replicate,
        mc_se,
        estimates,
        above_target,
    } = adaptive::estimate(fixed, pilot, target, opts.budget_secs, round, || {
        let draws = pilot_draws.take();
        // Bins with about 16 draws each on average (at most TIME_BINS), a tenth of the density
        // kept uniform so no time is starved.
        let k = (draws.len() / 16).clamp(1, TIME_BINS);
        match TimeProposal::from_draws(&draws, k, 0.1) {
            Some((p, ratio)) if k > 1 => {
                *proposal.borrow_mut() = Some(Arc::new(p));
                ratio
            }
            _ => 1.0,
        }
    })?;
    let t = last.into_inner();
    let totals: Vec<f64> = (0..n)
        .map(|k| 0.5 * (estimates[0][k] + estimates[1][k]))
        .collect();
    let total = Stat::of(&totals);
    let terms = vec![
        ("reconstruction".to_string(), Stat::of(&t.recon)),
        ("prior".to_string(), Stat::of(&t.prior)),
        ("diffusion".to_string(), Stat::of(&t.diff)),
    ];
    let truth = d.head.target_rows.clone();
    let mut r = EvalReport::new(
        d.head,
        total,
        total,
        &terms,
        d.unit,
        dim,
        Some(mc_se),
        bound,
    );
    if let Some(g) = super::paired_gap(&totals, truth.as_deref()) {
        (r.gap_nats, r.gap_se) = (Some(g.mean), Some(g.se));
    }
    r.t_steps = opts.t_steps;
    r.t_samples = Some(2 * per_replicate);
    r.decoder = Some(dm.decoder().to_string());
    r.mc_target_missed = above_target;
    r.mc_target = Some(target);
    let bins = t
        .bins
        .iter()
        .enumerate()
        .map(|(i, &(sum, wsum, c))| {
            let (lo, hi) = (
                i as f64 / TIME_BINS as f64,
                (i + 1) as f64 / TIME_BINS as f64,
            );
            TimeBin {
                t_lo: lo,
                t_hi: hi,
                log_snr: -dm.gamma_at(0.5 * (lo + hi)),
                nats: bin_mean(sum, wsum, c),
                samples: c,
            }
        })
        .collect();
    Ok(Evaluation {
        report: r,
        loss_by_time: Some(bins),
    })
}

/// Add a time sample (time t, loss v, importance weight iw = 1/p(t)) to its plot bin.
fn add_to_bin(bins: &mut [(f64, f64, usize)], t: f64, v: f64, iw: f64) {
    let k = bins.len();
    let bin = ((t * k as f64) as usize).min(k - 1);
    bins[bin].0 += iw * v;
    bins[bin].1 += iw;
    bins[bin].2 += 1;
}

/// A bin's loss averaged uniformly over its times: Σ w·L / Σ w (NaN for an empty bin).
fn bin_mean(sum: f64, wsum: f64, count: usize) -> f64 {
    if count > 0 && wsum > 0.0 {
        sum / wsum
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    #[test]
    fn loss_by_time_bins_are_unbiased_when_the_proposal_splits_a_bin() {
        // One plot bin [0, 1) (k = 1) and a proposal with density 1.8 on [0, ½) and 0.2 on
        // [½, 1): its own bins split the plot's bin. The loss L(t) = t has the uniform mean ½
        // over the bin. Weighted by 1/p(t) the bin's mean is ½; unweighted it is the proposal's
        // mean of t, 0.9·¼ + 0.1·¾ = 0.3. 200,000 draws: the weighted mean's sd is about
        // 0.002, so 0.01 is 5 sd, and the unweighted 0.3 is 100 sd away.
        let mut rng = crate::rng::seeded(3);
        let mut bins = vec![(0.0, 0.0, 0usize); 1];
        let mut plain = (0.0, 0usize);
        for _ in 0..200_000 {
            let u: f64 = rng.gen();
            let (t, p) = if u < 0.9 {
                (rng.gen::<f64>() * 0.5, 1.8)
            } else {
                (0.5 + rng.gen::<f64>() * 0.5, 0.2)
            };
            add_to_bin(&mut bins, t, t, 1.0 / p);
            plain.0 += t;
            plain.1 += 1;
        }
        let (s, w, c) = bins[0];
        let m = bin_mean(s, w, c);
        assert!((m - 0.5).abs() < 0.01, "weighted {m}");
        assert!((plain.0 / plain.1 as f64 - 0.3).abs() < 0.01);
        assert!(bin_mean(0.0, 0.0, 0).is_nan());
    }
}
