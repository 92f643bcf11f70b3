//! `elbo eval DIR`: every term of the ELBO on a split, each with its standard error, and the
//! importance-weighted bound L_K with --iw K. Text by default, one JSON object with --json.

use std::path::PathBuf;

use clap::Args;
use elbo::data::{self, DataKind, Split};
use elbo::elbo::Stat;
use elbo::models::vae::Vae;
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
    let report = match cfg.model {
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
    let rows = train::eval_rows(&ds, binarize, seed);
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
        let mut vals = Vec::with_capacity(ds.n);
        let mut start = 0;
        while start < ds.n {
            let n = batch.min(ds.n - start);
            let x = burn::tensor::Tensor::<2>::from_data(
                burn::tensor::TensorData::new(
                    rows[start * dim..(start + n) * dim].to_vec(),
                    [n, dim],
                ),
                &device,
            );
            let v = model.importance_weighted(x, k, &mut rng).ok_or_else(|| {
                anyhow::anyhow!(
                    "--iw: the {} model has no importance-weighted bound",
                    cfg.model
                )
            })??;
            vals.extend(v.into_iter().map(|l| -l));
            start += n;
            b.set_position(start as u64);
        }
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
    let image = mf.data.kind == DataKind::Image8;
    if image {
        j["bits_per_dim"] = json!(per_dim.mean / ln2);
        j["bits_per_dim_se"] = json!(per_dim.se / ln2);
    } else {
        j["nats_per_dim"] = json!(per_dim.mean);
        j["nats_per_dim_se"] = json!(per_dim.se);
    }
    if let Some(m) = &ds.mixture {
        let true_nll: Vec<f64> =
            ds.x.chunks_exact(dim)
                .map(|r| -m.log_density(&r.iter().map(|&v| v as f64).collect::<Vec<_>>()))
                .collect();
        let t = Stat::of(&true_nll);
        j["true_nll_nats"] = json!(t.mean);
        j["gap_nats"] = json!(nll.mean - t.mean);
    }

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
