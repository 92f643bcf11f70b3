//! `elbo guidance DIR`: guidance measured against its weight (accuracy of the asked class,
//! FD-classifier, diversity), as a table, JSON and one picture of every class at every weight.
//! The work is `elbo::studies::guidance::sweep`.

use std::path::PathBuf;

use clap::Args;
use elbo::run::RunDir;
use elbo::sample::{SampleOptions, SamplerParams};
use elbo::studies::guidance::{markdown, sweep, GuidanceOptions};

use super::{BarProgress, Global};

#[derive(Args, Debug)]
pub struct GuidanceArgs {
    /// A diffusion run of labelled 8-bit images: class-conditional (vdm.conditional = true) for
    /// classifier-free guidance, any variance-preserving run with --classifier.
    pub dir: PathBuf,
    /// Classifier guidance (M42) by this noisy classifier (`elbo train --model
    /// noisy-classifier`); without it, classifier-free guidance (M43).
    #[arg(long, value_name = "RUN")]
    pub classifier: Option<PathBuf>,
    /// Guidance weights, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,0.5,1,2,4")]
    pub weights: Vec<f64>,
    /// Samples of each class at each weight.
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 50)]
    pub per_class: usize,
    #[arg(long, value_parser = super::sampler_name(), default_value = "ancestral")]
    pub sampler: String,
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 100)]
    pub steps: usize,
    /// DDIM's η.
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.0)]
    pub eta: f64,
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<u64>, long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Run even beyond elbo's limits.
    #[arg(long)]
    pub force: bool,
}

/// Samples of each class per weight shown in the picture.
const SHOWN: usize = 6;

pub fn run(a: GuidanceArgs, g: &Global) -> anyhow::Result<i32> {
    let dir = RunDir::new(&a.dir);
    dir.check()?;
    let opts = GuidanceOptions {
        weights: a.weights.clone(),
        per_class: a.per_class,
        classifier: a.classifier.clone(),
        sample: SampleOptions {
            sampler: super::sampler_of(
                Some(&a.sampler),
                &SamplerParams {
                    eta: a.eta,
                    ..Default::default()
                },
            )?,
            steps: Some(a.steps),
            ..SampleOptions::ancestral(a.seed, elbo::par::default_threads())
        },
        force: a.force,
    };
    let (report, samples) = sweep(&dir, &opts, &BarProgress::new(g))?;
    let stem = format!("guidance-{}", report.kind);
    let md = markdown(&report);
    elbo::fsio::write_atomic(&dir.file(&format!("{stem}.md")), md.as_bytes())?;
    elbo::fsio::write_atomic(
        &dir.file(&format!("{stem}.json")),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    // One row per class; for each weight SHOWN samples, a blank column between weights.
    let (h, w) = dir
        .model_file()?
        .data
        .image_hw()
        .ok_or_else(|| anyhow::anyhow!("not images"))?;
    let d = h * w;
    let shown = SHOWN.min(a.per_class);
    let cols = samples.len() * (shown + 1) - 1;
    let mut grid = Vec::with_capacity(report.classes * cols * d);
    for c in 0..report.classes {
        for (k, s) in samples.iter().enumerate() {
            if k > 0 {
                grid.extend(std::iter::repeat_n(0.0f32, d));
            }
            let first = c * a.per_class;
            for i in first..first + shown {
                grid.extend(s[i * d..(i + 1) * d].iter().map(|v| v / 255.0));
            }
        }
    }
    let png = dir.file(&format!("{stem}.png"));
    elbo::report::grid::save_grid_cols(&png, &grid, report.classes * cols, cols, h, w, 2)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{md}");
        let ws: Vec<String> = a.weights.iter().map(|w| w.to_string()).collect();
        println!(
            "\npicture: {} (one row per class; blocks of {shown} samples at w = {})",
            png.display(),
            ws.join(", ")
        );
    }
    Ok(0)
}
