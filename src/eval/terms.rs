//! The ELBO evaluator (M2): every term per example with its standard error, and with `--iw K`
//! the importance-weighted bound L_K (M4), drawn in chunks spread over threads, each chunk with
//! its own noise stream (`rng::chunk`), so the bound depends on the seed only.

use super::{EvalData, EvalOptions, EvalReport, Evaluation, Progress};
use crate::data::batches::row_block;
use crate::elbo::Stat;
use crate::limits::{self, MAX_SECONDS};
use crate::models::Model;
use crate::models::{elbo_rows, summarize};
use crate::rng::{chunk, derived, streams};
use crate::{Error, Result};

/// Evaluate an ELBO-bound model on the prepared rows.
pub(super) fn evaluate<M: Model>(
    model: &M,
    d: EvalData,
    opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<Evaluation> {
    if opts.t_steps.is_some() || opts.t_samples.is_some() {
        return Err(Error::Config(
            "--t-steps and --t-samples apply to diffusion models".into(),
        ));
    }
    let (ds, rows, dim) = (&d.ds, &d.rows, d.ds.dim());
    let labels = ds.labels.as_deref();
    let mut rng = derived(opts.seed, streams::EVAL_NOISE);
    progress.start("ELBO", ds.n as u64);
    let mut done = 0;
    let per = elbo_rows(model, rows, labels, dim, 250, &opts.device, &mut rng, |k| {
        progress.inc((k - done) as u64);
        done = k;
    })?;
    progress.finish();
    let total_rows = per.last().map(|(_, v)| v.clone()).unwrap_or_default();
    let mut stats = summarize(&per);
    let total = stats.pop().map(|(_, s)| s).unwrap_or(Stat {
        mean: f64::NAN,
        se: f64::NAN,
    });

    let iw = match opts.iw {
        None => None,
        Some(k) => Some(importance_weighted(model, rows, dim, k, opts, progress)?),
    };
    let gap_rows = iw.clone().unwrap_or(total_rows);
    let iw = iw.map(|v| Stat::of(&v));
    let target = d.head.target_rows.clone();
    let bound = match opts.iw {
        Some(k) => format!("importance-weighted bound L_{k} (M4)"),
        None => "ELBO (M2)".to_string(),
    };
    let mut r = EvalReport::new(
        d.head,
        iw.unwrap_or(total),
        total,
        &stats,
        d.unit,
        dim,
        None,
        bound,
    );
    if let Some(g) = super::paired_gap(&gap_rows, target.as_deref()) {
        (r.gap_nats, r.gap_se) = (Some(g.mean), Some(g.se));
    }
    r.iw = opts.iw;
    r.neg_iw_bound_nats = iw.map(|s| s.mean);
    r.binarized = d.binarize.is_some();
    Ok(Evaluation {
        report: r,
        loss_by_time: None,
    })
}

/// −L_K per example, summarised.
fn importance_weighted<M: Model>(
    model: &M,
    rows: &[f32],
    dim: usize,
    k: usize,
    opts: &EvalOptions,
    progress: &dyn Progress,
) -> Result<Vec<f64>> {
    let n = rows.len() / dim.max(1);
    if !opts.force && n > 0 {
        // The rate of this model on one example, from a probe of up to 200 samples.
        let probe = k.min(200);
        let t0 = std::time::Instant::now();
        let x = row_block(rows, 0, 1, dim, &opts.device);
        let mut rng = chunk(opts.seed, streams::EVAL_IW, u64::MAX);
        model.importance_weighted(x, probe, &mut rng).transpose()?;
        let per_sample = t0.elapsed().as_secs_f64() / probe as f64;
        let secs = per_sample * k as f64 * n as f64 / opts.threads.max(1) as f64;
        limits::check(secs <= MAX_SECONDS, false, || {
            format!(
                "--iw {k} on {n} examples would take about {} at the rate just measured ({:.1} µs \
                 per sample; the limit is {})",
                limits::duration(secs),
                per_sample * 1e6,
                limits::duration(MAX_SECONDS)
            )
        })?;
    }
    progress.start(&format!("L_{k}"), n as u64);
    // Small batches keep K samples per example within memory.
    let batch = (20_000 / k).clamp(1, 100);
    let chunks = n.div_ceil(batch);
    let states = crate::par::replicas(model, opts.threads, chunks);
    let parts = crate::par::map_chunks(states, chunks, |m, i| {
        let start = i * batch;
        let b = batch.min(n - start);
        let x = row_block(rows, start, b, dim, &opts.device);
        let mut rng = chunk(opts.seed, streams::EVAL_IW, i as u64);
        let v = m.importance_weighted(x, k, &mut rng).ok_or_else(|| {
            Error::Config("--iw: this model has no importance-weighted bound".into())
        })??;
        progress.inc(b as u64);
        Ok(v)
    })?;
    progress.finish();
    Ok(parts.concat().into_iter().map(|l| -l).collect())
}
