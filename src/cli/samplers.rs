//! `elbo samplers DIR`: sample quality against network evaluations for every sampler of a
//! diffusion run (a table, JSON and a plot in the run directory). The work is
//! `elbo::studies::samplers::sweep`.

use std::path::PathBuf;

use clap::Args;
use elbo::run::RunDir;
use elbo::studies::samplers::{default_settings, markdown, plot, sweep, Setting};

use super::{BarProgress, Global};

#[derive(Args, Debug)]
pub struct SamplersArgs {
    /// A diffusion run of 8-bit images.
    pub dir: PathBuf,
    /// Samples per setting (FD-classifier on fewer than about 500 is biased upwards).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, short, default_value_t = 500)]
    pub n: usize,
    /// Only these samplers (comma-separated; default: all seven, each at 3–5 step counts from
    /// about 10 to 500 NFE).
    #[arg(long, value_parser = super::sampler_name(), value_delimiter = ',')]
    pub only: Vec<String>,
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<u64>, long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(a: SamplersArgs, g: &Global) -> anyhow::Result<i32> {
    let dir = RunDir::new(&a.dir);
    dir.check()?;
    let settings: Vec<Setting> = default_settings()
        .into_iter()
        .filter(|s| a.only.is_empty() || a.only.iter().any(|o| o == s.sampler.name()))
        .collect();
    if settings.is_empty() {
        anyhow::bail!("--only: none of these samplers has settings in the sweep");
    }
    let s = sweep(
        &dir,
        &settings,
        a.n,
        a.seed,
        elbo::par::default_threads(),
        &BarProgress::new(g),
    )?;
    let md = markdown(&s);
    elbo::fsio::write_atomic(&dir.file("samplers.md"), md.as_bytes())?;
    elbo::fsio::write_atomic(
        &dir.file("samplers.json"),
        serde_json::to_string_pretty(&s)?.as_bytes(),
    )?;
    let png = dir.file("samplers.png");
    plot(&s, &png)?;
    print!("{md}");
    println!("\nplot: {}", png.display());
    Ok(0)
}
