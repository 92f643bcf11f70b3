//! `elbo quality SAMPLES.npy`: score samples from any model (elbo's, or another tool's) with the
//! same figures as `elbo eval DIR --quality`, so results from elsewhere can be put beside a run's.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use elbo::data::{self, DataKind, Split};
use elbo::eval::quality::{quality, ClassifierSettings};

#[derive(Args, Debug)]
pub struct QualityArgs {
    /// Samples: a .npy of N examples (float32 or uint8, shape [N, D] or [N, C, H, W]) in the
    /// data's own units (8-bit images: levels 0–255).
    pub samples: PathBuf,
    /// The data they imitate, whose labelled splits train the classifier and whose test split
    /// is the reference (an 8-bit image set: mnist10k, fashion-mnist, idx:…).
    #[arg(long, default_value = "mnist10k")]
    pub data: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: QualityArgs) -> anyhow::Result<i32> {
    let spec = format!("npy:{}", a.samples.display());
    let s = data::load(&spec, Split::All)
        .with_context(|| format!("reading samples {}", a.samples.display()))?;
    let reference = data::load(&a.data, Split::Test)?;
    if reference.kind != DataKind::Image8 {
        anyhow::bail!(
            "--data {}: sample quality is measured on labelled 8-bit images (its classifier is \
             a CNN of images)",
            a.data
        );
    }
    if s.dim() != reference.dim() {
        anyhow::bail!(
            "{}: examples of {} values (shape {:?}); {} has {} ({:?})",
            a.samples.display(),
            s.dim(),
            s.shape,
            a.data,
            reference.dim(),
            reference.shape
        );
    }
    if s.n < 2 {
        anyhow::bail!("{}: needs at least 2 samples", a.samples.display());
    }
    if let Some(v) = s.x.iter().find(|v| !(0.0..=255.0).contains(*v)) {
        anyhow::bail!(
            "{}: a value {v} is outside the 8-bit range 0–255 (samples must be in the data's \
             own units)",
            a.samples.display()
        );
    }
    let q = quality(&a.data, &s.x, ClassifierSettings::default())?;
    if a.json {
        println!("{}", serde_json::to_string(&q)?);
        return Ok(0);
    }
    let what = format!("{} samples of {}", q.samples.n, a.data);
    for l in elbo::eval::report::quality_lines(&q, &what) {
        println!("{l}");
    }
    println!("  ({})", q.note);
    Ok(0)
}
