//! `elbo inspect DIR`: the run's configuration, parameter count and training history, with the
//! curve saved as DIR/training_curve.png.

use std::path::PathBuf;

use clap::Args;
use elbo::eval::Unit;
use elbo::report::plot::{line_plot, Series};
use elbo::run::RunDir;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Run directory written by `elbo train`.
    pub dir: PathBuf,
}

pub fn run(a: InspectArgs) -> anyhow::Result<i32> {
    let dir = RunDir::new(&a.dir);
    dir.check()?;
    let cfg = dir.config()?;
    let mf = dir.model_file()?;
    let state: Option<serde_json::Value> =
        dir.state().ok().and_then(|s| serde_json::to_value(s).ok());
    println!("run        {}", dir.path.display());
    println!(
        "model      {} on {} (examples of shape {:?})",
        cfg.model.kind(),
        cfg.data,
        mf.data.shape
    );
    println!("parameters {}", super::thousands(mf.num_params as u64));
    if let Some(s) = &state {
        let step = s.get("step").and_then(|v| v.as_u64()).unwrap_or(0);
        let secs = s
            .get("elapsed_secs")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        println!(
            "trained    {} of {} steps in {:.1} min",
            super::thousands(step),
            super::thousands(cfg.steps),
            secs / 60.0
        );
    }
    println!(
        "config     {}",
        serde_json::to_string_pretty(&cfg)?.replace('\n', "\n           ")
    );
    let metrics = dir.metrics()?;
    let evals: Vec<(u64, f64)> = eval_points(&metrics);
    if !evals.is_empty() {
        let unit = per_dim_unit(&dir, &metrics);
        println!(
            "held-out −ELBO by step (nats{}):",
            unit.map(|(u, _)| format!("; {}", u.label()))
                .unwrap_or_default()
        );
        let stride = evals.len().div_ceil(12).max(1);
        for (i, (s, v)) in evals.iter().enumerate() {
            if i % stride == 0 || i + 1 == evals.len() {
                let per = unit
                    .map(|(_, f)| format!("  {:.4}", v * f))
                    .unwrap_or_default();
                println!("  {:>9}  {v:.3}{per}", super::thousands(*s));
            }
        }
    }
    // The last `elbo eval DIR --quality` of this run.
    if let Some(q) = std::fs::read(dir.file("quality.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<elbo::eval::quality::Quality>(&b).ok())
    {
        println!(
            "quality    FD-classifier {:.1} (real images {:.1}), class entropy {:.2} (real {:.2}), \
             mean confidence {:.3} (real {:.3}); {} samples{} (from the last eval --quality)",
            q.samples.fd_classifier,
            q.real.fd_classifier,
            q.samples.class_entropy,
            q.real.class_entropy,
            q.samples.mean_confidence,
            q.real.mean_confidence,
            q.samples.n,
            q.sampler.map(|s| format!(", {s}")).unwrap_or_default()
        );
    }
    if dir.file("samples_over_training.png").is_file() {
        println!(
            "samples    {}",
            dir.file("samples_over_training.png").display()
        );
    }
    match write_curve(&dir) {
        Ok(p) => println!("curve      {}", p.display()),
        Err(e) => println!("curve      not drawn: {e}"),
    }
    let layers = kl_by_layer(&metrics);
    if !layers.is_empty() {
        let last: Vec<String> = layers
            .iter()
            .filter_map(|(n, pts)| pts.last().map(|(_, v)| format!("{n} {v:.2}")))
            .collect();
        println!(
            "KL/layer   {} (nats, last held-out evaluation)",
            last.join(", ")
        );
        match write_kl_plot(&dir, &layers) {
            Ok(p) => println!("           {}", p.display()),
            Err(e) => println!("           not drawn: {e}"),
        }
    }
    Ok(0)
}

/// Each stochastic layer's KL term over training, from the held-out evaluations of a VAE or
/// HVAE: `prior` is the top layer's KL, `kl_z{l}` the layers below it. Named `z1` … `zL` (or
/// `z` for one layer); empty for other models.
fn kl_by_layer(metrics: &[serde_json::Value]) -> Vec<(String, Vec<(f64, f64)>)> {
    let terms_at =
        |m: &serde_json::Value| -> Option<(u64, serde_json::Map<String, serde_json::Value>)> {
            Some((
                m.get("step")?.as_u64()?,
                m.get("eval")?.get("terms")?.as_object()?.clone(),
            ))
        };
    let evals: Vec<_> = metrics.iter().filter_map(terms_at).collect();
    let Some((_, first)) = evals.first() else {
        return vec![];
    };
    // Only models whose terms are layer KLs (no diffusion term).
    if first.contains_key("diffusion") || !first.contains_key("prior") {
        return vec![];
    }
    let below: Vec<String> = {
        let mut k: Vec<String> = first
            .keys()
            .filter(|k| k.starts_with("kl_z"))
            .cloned()
            .collect();
        k.sort_by_key(|n| n[4..].parse::<usize>().unwrap_or(0));
        k
    };
    let top = if below.is_empty() {
        "z".to_string()
    } else {
        format!("z{}", below.len() + 1)
    };
    let mut out: Vec<(String, Vec<(f64, f64)>)> = below
        .iter()
        .map(|k| (k[3..].to_string(), k.clone()))
        .chain(std::iter::once((top, "prior".to_string())))
        .map(|(name, key)| {
            let pts = evals
                .iter()
                .filter_map(|(s, t)| Some((*s as f64, t.get(&key)?.get("mean")?.as_f64()?)))
                .collect();
            (name, pts)
        })
        .collect();
    out.retain(|(_, p)| !p.is_empty());
    out
}

/// DIR/kl_by_layer.png: each layer's KL against step (a layer at 0 has collapsed).
fn write_kl_plot(dir: &RunDir, layers: &[(String, Vec<(f64, f64)>)]) -> anyhow::Result<PathBuf> {
    let p = dir.file("kl_by_layer.png");
    let names: Vec<String> = layers.iter().map(|(n, _)| format!("KL of {n}")).collect();
    let series: Vec<Series> = layers
        .iter()
        .zip(&names)
        .map(|((_, pts), name)| Series {
            name,
            points: pts.clone(),
            markers: true,
        })
        .collect();
    line_plot(
        &p,
        "KL term per stochastic layer (held-out; 0 means the layer collapsed)",
        "step",
        "nats per example",
        &series,
        false,
    )?;
    Ok(p)
}

fn eval_points(metrics: &[serde_json::Value]) -> Vec<(u64, f64)> {
    metrics
        .iter()
        .filter_map(|m| {
            let s = m.get("step")?.as_u64()?;
            let v = m
                .get("eval")?
                .get("terms")?
                .get("total")?
                .get("mean")?
                .as_f64()?;
            Some((s, v))
        })
        .collect()
}

/// The unit the run's evaluations report per dimension, and the factor from nats per example.
fn per_dim_unit(dir: &RunDir, metrics: &[serde_json::Value]) -> Option<(Unit, f64)> {
    let unit: Unit = metrics
        .iter()
        .find_map(|m| m.get("eval")?.get("unit").cloned())
        .and_then(|u| serde_json::from_value(u).ok())?;
    let dim = dir.model_file().ok()?.data.dim();
    Some((unit, unit.per_dim(1.0, dim)))
}

/// Draw training and held-out −ELBO against step into DIR/training_curve.png, per dimension
/// (bits/dim for 8-bit images) where the run says its unit, else in nats per example.
pub fn write_curve(dir: &RunDir) -> anyhow::Result<PathBuf> {
    let metrics = dir.metrics()?;
    let (unit_label, factor) = match per_dim_unit(dir, &metrics) {
        Some((u, f)) => (u.label().to_string(), f),
        None => ("nats per example".to_string(), 1.0),
    };
    let train: Vec<(f64, f64)> = metrics
        .iter()
        .filter_map(|m| {
            let v = m.get("neg_elbo").or_else(|| m.get("loss"))?.as_f64()?;
            Some((m.get("step")?.as_u64()? as f64, v * factor))
        })
        .collect();
    let evals: Vec<(f64, f64)> = eval_points(&metrics)
        .into_iter()
        .map(|(s, v)| (s as f64, v * factor))
        .collect();
    if train.is_empty() {
        anyhow::bail!("no training metrics yet");
    }
    // Skip the first 5% of logged points: the initial loss dwarfs the rest of the curve.
    let skip = train.len() / 20;
    let p = dir.file("training_curve.png");
    line_plot(
        &p,
        &format!("training curve ({unit_label})"),
        "step",
        &format!("−ELBO, {unit_label}"),
        &[
            Series {
                name: "training −ELBO (batches)",
                points: train[skip..].to_vec(),
                markers: false,
            },
            Series {
                name: "held-out −ELBO (EMA weights)",
                points: evals,
                markers: true,
            },
        ],
        false,
    )?;
    Ok(p)
}
