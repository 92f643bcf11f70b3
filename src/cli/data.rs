//! `elbo data SPEC`: what is in a data set.

use std::collections::BTreeMap;

use clap::Args;
use elbo::data::{self, Split};

#[derive(Args, Debug)]
pub struct DataArgs {
    /// Data spec: mnist10k (embedded) | fashion-mnist | idx:IMAGES[,LABELS] | npy:FILE | csv:FILE |
    /// toy:ring8|grid9|blobs2|gaussian.
    pub spec: String,
    /// Which split (single files: the last 10% of rows is the test split).
    #[arg(long, value_parser = super::choice::<Split>(), default_value = "all")]
    pub split: Split,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: DataArgs) -> anyhow::Result<i32> {
    let ds = data::load(&a.spec, a.split)?;
    let (mut lo, mut hi, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0.0f64);
    for &v in &ds.x {
        lo = lo.min(v);
        hi = hi.max(v);
        sum += v as f64;
    }
    let mean = sum / ds.x.len().max(1) as f64;
    let labels: Option<BTreeMap<u32, usize>> = ds.labels.as_ref().map(|l| {
        let mut m = BTreeMap::new();
        for &v in l {
            *m.entry(v).or_insert(0) += 1;
        }
        m
    });
    if a.json {
        let v = serde_json::json!({
            "spec": a.spec, "split": a.split.to_string(), "n": ds.n, "shape": ds.shape,
            "kind": ds.kind, "min": lo, "max": hi, "mean": mean, "labels": labels,
        });
        println!("{v}");
        return Ok(0);
    }
    println!("data    {} ({} split)", a.spec, a.split);
    println!("count   {}", super::thousands(ds.n as u64));
    println!("shape   {:?} per example ({} values)", ds.shape, ds.dim());
    println!(
        "kind    {}",
        match ds.kind {
            data::DataKind::Image8 => "8-bit images (likelihoods in bits/dim over 256 levels)",
            data::DataKind::Continuous => "continuous vectors (likelihoods in nats, nats/dim)",
        }
    );
    println!("values  min {lo}, max {hi}, mean {mean:.4}");
    if let Some(m) = &ds.mixture {
        println!(
            "density exact: mixture of {} Gaussians (true NLL is computable)",
            m.weights.len()
        );
    }
    match labels {
        Some(l) => {
            let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            println!("labels  {}", parts.join(" "));
        }
        None => println!("labels  none"),
    }
    Ok(0)
}
