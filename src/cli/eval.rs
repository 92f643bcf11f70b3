//! `elbo eval DIR`: every term of the ELBO on a split, each with its standard error, and the
//! importance-weighted bound L_K with --iw K. Text by default, one JSON object with --json.

use std::path::PathBuf;

use clap::Args;
use elbo::data::{self, Split};
use elbo::elbo::Stat;
use elbo::models::diffusion::vdm::{ElboOptions, Vdm};
use elbo::models::vae::Vae;
use elbo::report::plot::{line_plot, Series};
use elbo::train::run::RunDir;
use elbo::train::{self, ModelKind, Trainable};
use serde_json::json;

use super::Global;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directory written by `elbo train`.
    pub dir: PathBuf,
    /// Data to evaluate on (default: the run's own data); must have the run's shape.
    #[arg(long)]
    pub data: Option<String>,
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// Also compute the importance-weighted bound L_K with K samples (e.g. 5000; VAE).
    #[arg(long, value_name = "K")]
    pub iw: Option<usize>,
    /// Seed of the evaluation noise (and of the fixed binarisation of the split).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Evaluate only the first N examples.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Diffusion models: evaluate the discrete-time bound with T steps (M27) instead of the
    /// continuous-time one (M28).
    #[arg(long, value_name = "T")]
    pub t_steps: Option<u64>,
    /// Diffusion models: time samples per example, an even number (two replicates of N/2;
    /// default: as many as keep the Monte-Carlo standard error of the bound ≤ 0.01 bits/dim for
    /// images, ≤ 0.01 nats otherwise).
    #[arg(long, value_name = "N")]
    pub t_samples: Option<usize>,
}

/// An evaluation's results.
pub struct Report {
    pub json: serde_json::Value,
    pub lines: Vec<String>,
}

pub fn run(a: EvalArgs, g: &Global) -> anyhow::Result<i32> {
    let dir = RunDir::new(&a.dir);
    dir.check()?;
    if a.iw == Some(0) {
        anyhow::bail!("--iw needs K ≥ 1 samples");
    }
    let cfg = dir.config()?;
    if cfg.model != ModelKind::Vdm && (a.t_steps.is_some() || a.t_samples.is_some()) {
        anyhow::bail!("--t-steps and --t-samples apply to diffusion models");
    }
    if a.limit == Some(0) {
        anyhow::bail!("--limit must be at least 1");
    }
    if a.t_steps == Some(0) {
        anyhow::bail!("--t-steps must be at least 1");
    }
    if let Some(t) = a.t_samples.filter(|t| *t < 2 || t % 2 == 1) {
        anyhow::bail!(
            "--t-samples {t}: needs an even number, at least 2 (two independent replicates of \
             N/2 time samples each, whose disagreement is the Monte-Carlo error)"
        );
    }
    let report = match cfg.model {
        ModelKind::Vdm => {
            if a.iw.is_some() {
                anyhow::bail!("--iw: the importance-weighted bound is for the VAE; diffusion models report L_T or L_∞");
            }
            let o = VdmEvalOptions {
                data: a.data.clone(),
                split: a.split,
                t_steps: a.t_steps,
                t_samples: a.t_samples,
                seed: a.seed,
                limit: a.limit.unwrap_or(usize::MAX),
            };
            evaluate_vdm(&dir, &o, g)?
        }
        ModelKind::Vae => evaluate::<Vae>(
            &dir,
            a.data.as_deref(),
            a.split,
            a.iw,
            a.seed,
            a.limit.unwrap_or(usize::MAX),
            g,
        )?,
    };
    if a.json {
        println!("{}", report.json);
    } else {
        print_report(&report);
    }
    Ok(0)
}

pub fn print_report(r: &Report) {
    for l in &r.lines {
        println!("{l}");
    }
}

/// Evaluate the run's EMA weights on `split` of `data` (default the run's own).
pub fn evaluate<M: Trainable>(
    dir: &RunDir,
    data_spec: Option<&str>,
    split: Split,
    iw: Option<usize>,
    seed: u64,
    limit: usize,
    g: &Global,
) -> anyhow::Result<Report> {
    let device = elbo::device::device(g.device, false)?;
    let (cfg, mf, model) = train::load_model::<M>(dir, &device)?;
    let spec_str = data_spec.unwrap_or(&cfg.data).to_string();
    let ds = data::load(&spec_str, split)?.head(limit);
    if ds.shape != mf.data.shape {
        anyhow::bail!(
            "data '{spec_str}' has examples of shape {:?}, the run was trained on {:?}",
            ds.shape,
            mf.data.shape
        );
    }
    let spec: M::Spec = serde_json::from_value(mf.spec.clone())?;
    let binarize = M::binarize(&cfg, &spec);
    let rows = mf.data.eval_rows(&ds, binarize, seed);
    let dim = ds.dim();
    let mut rng = elbo::rng::derived(seed, train::streams::EVAL_NOISE);
    let b = super::bar(g, ds.n as u64, "ELBO");
    let terms = train::elbo_rows(&model, &rows, dim, 250, &device, &mut rng, |k| {
        b.set_position(k as u64)
    })?;
    b.finish_and_clear();
    let stats = train::summarize(&terms);
    let total = stats.last().map(|s| s.1).unwrap_or(Stat {
        mean: f64::NAN,
        se: f64::NAN,
    });

    let mut iw_stat = None;
    if let Some(k) = iw {
        let b = super::bar(g, ds.n as u64, &format!("L_{k}"));
        // Small batches keep K samples per example within memory.
        let batch = (20_000 / k).clamp(1, 100);
        let chunks = ds.n.div_ceil(batch);
        let states = elbo::par::replicas(&model, elbo::par::default_threads(), chunks);
        let model_name = cfg.model.to_string();
        // Chunks spread over threads, each with its own noise stream (`rng::chunk`): the bound
        // depends on the seed only.
        let parts = elbo::par::map_chunks(states, chunks, |m, i| {
            let start = i * batch;
            let n = batch.min(ds.n - start);
            let x = train::row_block(&rows, start, n, dim, &device);
            let mut rng = elbo::rng::chunk(seed, train::streams::EVAL_IW, i as u64);
            let v = m.importance_weighted(x, k, &mut rng).ok_or_else(|| {
                elbo::Error::Invalid(format!(
                    "--iw: the {model_name} model has no importance-weighted bound"
                ))
            })??;
            b.inc(n as u64);
            Ok(v)
        })?;
        let vals: Vec<f64> = parts.concat().into_iter().map(|l| -l).collect();
        b.finish_and_clear();
        iw_stat = Some(Stat::of(&vals));
    }

    let nll = iw_stat.unwrap_or(total);
    let ln2 = std::f64::consts::LN_2;
    let per_dim = nll.scale(1.0 / dim as f64);
    let mut terms_json = serde_json::Map::new();
    let mut se_json = serde_json::Map::new();
    for (n, s) in &stats {
        if n != "total" {
            terms_json.insert(n.clone(), json!(s.mean));
            se_json.insert(n.clone(), json!(s.se));
        }
    }
    let state: Option<serde_json::Value> = dir.read_json("state.json").ok();
    let step = state.as_ref().and_then(|s| s.get("step")).cloned();
    let mut j = json!({
        "model": cfg.model.to_string(),
        "data": spec_str,
        "split": split.to_string(),
        "n": ds.n,
        "iw": iw,
        "step": step,
        "nll_nats": nll.mean,
        "nll_se": nll.se,
        "neg_elbo_nats": total.mean,
        "neg_elbo_se": total.se,
        "terms": terms_json,
        "terms_se": se_json,
    });
    if let Some(s) = iw_stat {
        j["neg_iw_bound_nats"] = json!(s.mean);
    }
    let image = mf.data.is_image();
    if image {
        j["bits_per_dim"] = json!(per_dim.mean / ln2);
        j["bits_per_dim_se"] = json!(per_dim.se / ln2);
    } else {
        j["nats_per_dim"] = json!(per_dim.mean);
        j["nats_per_dim_se"] = json!(per_dim.se);
    }
    add_true_nll(&mut j, &ds, nll.mean);

    let mut lines = vec![format!(
        "{} on {} ({} split, {} examples){}",
        cfg.model,
        spec_str,
        split,
        ds.n,
        if binarize.is_some() {
            ", binarised once with the eval seed"
        } else {
            ""
        }
    )];
    lines.push(format!(
        "  {:<16} {:>12} {:>10}",
        "term (nats)", "mean", "± se"
    ));
    for (n, s) in &stats {
        let name = if n == "total" { "−ELBO" } else { n };
        lines.push(format!("  {:<16} {:>12.4} {:>10.4}", name, s.mean, s.se));
    }
    if let (Some(s), Some(k)) = (iw_stat, iw) {
        lines.push(format!(
            "  {:<16} {:>12.4} {:>10.4}",
            format!("−L_{k}"),
            s.mean,
            s.se
        ));
    }
    lines.push(format!(
        "NLL bound: {:.3} ± {:.3} nats{}",
        nll.mean,
        nll.se,
        if image {
            format!(" ({:.4} bits/dim)", per_dim.mean / ln2)
        } else {
            format!(" ({:.4} nats/dim)", per_dim.mean)
        }
    ));
    if let Some(t) = j.get("true_nll_nats").and_then(|v| v.as_f64()) {
        lines.push(format!(
            "true NLL of this data: {t:.4} nats; gap {:.4} nats",
            nll.mean - t
        ));
    }
    Ok(Report { json: j, lines })
}

/// For data with a known density (toy sets): the true NLL and the bound's gap to it.
fn add_true_nll(j: &mut serde_json::Value, ds: &data::Dataset, bound: f64) {
    if let Some(m) = &ds.mixture {
        let true_nll: Vec<f64> =
            ds.x.chunks_exact(ds.dim())
                .map(|r| -m.log_density(&r.iter().map(|&v| v as f64).collect::<Vec<_>>()))
                .collect();
        let t = Stat::of(&true_nll);
        j["true_nll_nats"] = json!(t.mean);
        j["gap_nats"] = json!(bound - t.mean);
    }
}

/// Options of a diffusion-model evaluation.
pub struct VdmEvalOptions {
    pub data: Option<String>,
    pub split: Split,
    pub t_steps: Option<u64>,
    pub t_samples: Option<usize>,
    pub seed: u64,
    pub limit: usize,
}

impl Default for VdmEvalOptions {
    fn default() -> Self {
        VdmEvalOptions {
            data: None,
            split: Split::Test,
            t_steps: None,
            t_samples: None,
            seed: 0,
            limit: usize::MAX,
        }
    }
}

/// Per-example sums over rounds, each round's values weighted by its time samples per replicate:
/// the terms (both replicates), and each replicate's total estimate.
struct Acc {
    recon: Vec<f64>,
    prior: Vec<f64>,
    diff: Vec<f64>,
    est: [Vec<f64>; 2],
}

const TIME_BINS: usize = 50;

/// Evaluate a VDM run: reconstruction, prior and diffusion terms with Monte-Carlo standard
/// errors, bits/dim or nats/dim, and the diffusion loss per time (CSV and PNG in the run dir).
pub fn evaluate_vdm(dir: &RunDir, o: &VdmEvalOptions, g: &Global) -> anyhow::Result<Report> {
    let device = elbo::device::device(g.device, false)?;
    let (cfg, mf, model) = train::load_model::<Vdm>(dir, &device)?;
    let spec_str = o.data.clone().unwrap_or_else(|| cfg.data.clone());
    let ds = data::load(&spec_str, o.split)?.head(o.limit);
    if ds.shape != mf.data.shape {
        anyhow::bail!(
            "data '{spec_str}' has examples of shape {:?}, the run was trained on {:?}",
            ds.shape,
            mf.data.shape
        );
    }
    let dim = ds.dim();
    let image = mf.data.is_image();
    let ln2 = std::f64::consts::LN_2;
    // Target Monte-Carlo standard error of the mean bound, in nats per example.
    let target = if image { 0.01 * dim as f64 * ln2 } else { 0.01 };
    // Time samples per replicate; each round runs two independent replicates, whose disagreement
    // measures the Monte-Carlo error of the stratified estimate (the iid formula would overstate
    // it many times over for a smooth integrand).
    // Rounds add time samples until the target is met, doubling the total each time and keeping
    // what earlier rounds measured; a round's replicate estimate is stratified over its samples.
    let mut per_rep = o
        .t_samples
        .map_or(if image { 2 } else { 8 }, |t| (t / 2).max(1));
    let adaptive = o.t_samples.is_none();
    let rows_x = mf.data.eval_rows(&ds, None, o.seed);
    let threads = elbo::par::default_threads();
    let n = ds.n;
    // Rows per forward pass: about 256 (images) or 4096 (vectors) network inputs.
    let rows = if image { 256 } else { 4096 };
    let mut acc = Acc {
        recon: vec![0.0; n],
        prior: vec![0.0; n],
        diff: vec![0.0; n],
        est: [vec![0.0; n], vec![0.0; n]],
    };
    let mut bins = vec![(0.0f64, 0usize); TIME_BINS];
    let mut done_per_rep = 0usize;
    let mut round = 0u64;
    let mc_se = loop {
        let batch = (rows / per_rep).max(1);
        let b = super::bar(
            g,
            2 * n as u64,
            &format!("ELBO, 2 × {} t/example", done_per_rep + per_rep),
        );
        // Chunks of both replicates spread over threads; chunk noise from `rng::chunk`, so the
        // estimate depends on the seed only.
        let per_rep_chunks = n.div_ceil(batch);
        let states = elbo::par::replicas(&model, threads, 2 * per_rep_chunks);
        let chunk_results = elbo::par::map_chunks(states, 2 * per_rep_chunks, |m, c| {
            let (rep, i) = (c / per_rep_chunks, c % per_rep_chunks);
            let start = i * batch;
            let rows = batch.min(n - start);
            let mut rng = elbo::rng::chunk(
                o.seed,
                train::streams::EVAL_NOISE,
                (round << 40) | ((rep as u64) << 32) | i as u64,
            );
            let x = train::row_block(&rows_x, start, rows, dim, &device);
            let e = m.estimate(
                x,
                ElboOptions {
                    t_steps: o.t_steps,
                    t_samples: per_rep,
                },
                &mut rng,
            )?;
            let recon = elbo::elbo::to_f64(e.recon)?;
            let prior = elbo::elbo::to_f64(e.prior)?;
            let samples = elbo::elbo::to_f64(e.samples.reshape([rows * per_rep]))?;
            b.inc(rows as u64);
            Ok((rep, start, recon, prior, samples, e.times))
        })?;
        let w = per_rep as f64;
        for (rep, start, recon, prior, samples, times) in chunk_results {
            for i in 0..recon.len() {
                let k = start + i;
                let mut d_mean = 0.0;
                for j in 0..per_rep {
                    let d = samples[i * per_rep + j];
                    d_mean += d / w;
                    let t = times[i * per_rep + j];
                    let bin = ((t * TIME_BINS as f64) as usize).min(TIME_BINS - 1);
                    bins[bin].0 += d;
                    bins[bin].1 += 1;
                }
                acc.recon[k] += w * recon[i] / 2.0;
                acc.prior[k] += w * prior[i] / 2.0;
                acc.diff[k] += w * d_mean / 2.0;
                acc.est[rep][k] += w * (recon[i] + prior[i] + d_mean);
            }
        }
        b.finish_and_clear();
        done_per_rep += per_rep;
        round += 1;
        // Var of the two replicates' average, per example: (a − b)²/4; summed over examples as
        // if they were independent. Examples of one chunk share the stratified time offset
        // (antithetic t), which spreads their times evenly and lowers the variance of their
        // sum for similar integrands, so this errs on the side of a larger standard error.
        let d = done_per_rep as f64;
        let var_sum: f64 = (0..n)
            .map(|k| ((acc.est[0][k] - acc.est[1][k]) / d).powi(2) / 4.0)
            .sum();
        let mc_se = var_sum.sqrt() / n as f64;
        if !adaptive || mc_se <= target || done_per_rep >= 256 {
            break mc_se;
        }
        per_rep = done_per_rep;
    };
    let d = done_per_rep as f64;
    let mean_of = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x / d).collect() };
    let (recon, prior, diff) = (
        Stat::of(&mean_of(&acc.recon)),
        Stat::of(&mean_of(&acc.prior)),
        Stat::of(&mean_of(&acc.diff)),
    );
    let totals: Vec<f64> = (0..n)
        .map(|k| 0.5 * (acc.est[0][k] + acc.est[1][k]) / d)
        .collect();
    let total = Stat::of(&totals);
    let total_samples = 2 * done_per_rep;
    let per_dim = total.scale(1.0 / dim as f64);

    // Diffusion loss per time: the integrand whose integral over t ∈ [0, 1] is the diffusion term.
    let mut csv =
        String::from("t_lo,t_hi,t_mid,log_snr,diffusion_nats,diffusion_bits_per_dim,samples\n");
    let mut pts = Vec::new();
    let sched = model.schedule();
    for (i, (sum, c)) in bins.iter().enumerate() {
        let (lo, hi) = (
            i as f64 / TIME_BINS as f64,
            (i + 1) as f64 / TIME_BINS as f64,
        );
        let mid = 0.5 * (lo + hi);
        let v = if *c > 0 { sum / *c as f64 } else { f64::NAN };
        let log_snr = -sched.gamma_f64(mid);
        csv.push_str(&format!(
            "{lo},{hi},{mid},{log_snr},{v},{},{c}\n",
            v / (dim as f64 * ln2)
        ));
        pts.push((mid, v));
    }
    let csv_path = dir.file("diffusion_loss_by_time.csv");
    elbo::train::checkpoint::write_atomic(&csv_path, csv.as_bytes())?;
    let png_path = dir.file("diffusion_loss_by_time.png");
    let plotted = line_plot(
        &png_path,
        "where the bound is lost: diffusion loss per unit time",
        "t (0 = data, 1 = noise)",
        "nats per example per unit t",
        &[Series {
            name: "diffusion integrand",
            points: pts,
        }],
        false,
    )
    .is_ok();

    let state: Option<serde_json::Value> = dir.read_json("state.json").ok();
    let step = state.as_ref().and_then(|s| s.get("step")).cloned();
    let mut j = json!({
        "model": "vdm",
        "data": spec_str,
        "split": o.split.to_string(),
        "n": n,
        "iw": null,
        "step": step,
        "t_steps": o.t_steps,
        "t_samples": total_samples,
        "nll_nats": total.mean,
        "nll_se": total.se,
        "mc_se": mc_se,
        "neg_elbo_nats": total.mean,
        "terms": {"reconstruction": recon.mean, "prior": prior.mean, "diffusion": diff.mean},
        "terms_se": {"reconstruction": recon.se, "prior": prior.se, "diffusion": diff.se},
        "diffusion_loss_by_time": csv_path.display().to_string(),
    });
    if image {
        j["bits_per_dim"] = json!(per_dim.mean / ln2);
        j["bits_per_dim_se"] = json!(per_dim.se / ln2);
        j["bits_per_dim_mc_se"] = json!(mc_se / (dim as f64 * ln2));
    } else {
        j["nats_per_dim"] = json!(per_dim.mean);
        j["nats_per_dim_se"] = json!(per_dim.se);
        j["nats_per_dim_mc_se"] = json!(mc_se / dim as f64);
    }
    add_true_nll(&mut j, &ds, total.mean);
    let bound = match o.t_steps {
        Some(t) => format!("discrete-time bound, T = {t}"),
        None => "continuous-time bound".to_string(),
    };
    let mut lines = vec![format!(
        "vdm on {spec_str} ({} split, {n} examples; {bound}; {total_samples} time samples per example)",
        o.split
    )];
    lines.push(format!(
        "  {:<16} {:>12} {:>10}",
        "term (nats)", "mean", "± se"
    ));
    for (name, s) in [
        ("reconstruction", recon),
        ("prior", prior),
        ("diffusion", diff),
        ("−ELBO", total),
    ] {
        lines.push(format!("  {name:<16} {:>12.4} {:>10.4}", s.mean, s.se));
    }
    lines.push(if image {
        format!(
            "NLL bound: {:.4} bits/dim (Monte-Carlo se {:.4}; over examples {:.4})",
            per_dim.mean / ln2,
            mc_se / (dim as f64 * ln2),
            per_dim.se / ln2
        )
    } else {
        format!(
            "NLL bound: {:.4} nats ({:.4} nats/dim; Monte-Carlo se {:.4} nats)",
            total.mean, per_dim.mean, mc_se
        )
    });
    if let Some(t) = j.get("true_nll_nats").and_then(|v| v.as_f64()) {
        lines.push(format!(
            "true NLL of this data: {t:.4} nats; gap {:.4} nats",
            total.mean - t
        ));
    }
    lines.push(format!(
        "diffusion loss by time: {}{}",
        csv_path.display(),
        if plotted {
            format!(" and {}", png_path.display())
        } else {
            String::new()
        }
    ));
    Ok(Report { json: j, lines })
}
