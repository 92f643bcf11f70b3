//! `elbo sample DIR`: samples from a trained run, as a PNG grid (images), a scatter plot (2-D
//! data) or a .npy array (anything; chosen by the --out extension).

use std::path::{Path, PathBuf};

use clap::Args;
use elbo::data::npy::encode_npy_f32;
use elbo::models::vae::Vae;
use elbo::report::grid::{save_grid, save_scatter};
use elbo::train::checkpoint::write_atomic;
use elbo::train::run::RunDir;
use elbo::train::{self, ModelKind, Trainable};

use super::Global;

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Run directory written by `elbo train`.
    pub dir: PathBuf,
    /// Number of samples.
    #[arg(long, short, default_value_t = 64)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file: .png (image grid, or scatter for 2-D data) or .npy (N×D float32).
    /// Default: DIR/samples.png for images and 2-D data, DIR/samples.npy otherwise.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Sampler (diffusion models; the VAE samples in one decoder pass).
    #[arg(long)]
    pub sampler: Option<String>,
    /// Sampling steps (diffusion models).
    #[arg(long)]
    pub steps: Option<usize>,
}

pub fn run(a: SampleArgs, g: &Global) -> anyhow::Result<i32> {
    let dir = RunDir::new(&a.dir);
    dir.check()?;
    if a.n == 0 {
        anyhow::bail!("--n must be at least 1");
    }
    let cfg = dir.config()?;
    if cfg.model == ModelKind::Vae && (a.sampler.is_some() || a.steps.is_some()) {
        anyhow::bail!(
            "--sampler and --steps apply to diffusion models; a VAE samples in one decoder pass"
        );
    }
    let p = match cfg.model {
        ModelKind::Vae => write_samples::<Vae>(&dir, a.n, a.seed, a.out.as_deref(), g)?,
    };
    println!("{}", p.display());
    Ok(0)
}

/// Samples into the default file of the run.
pub fn write_default_samples<M: Trainable>(
    dir: &RunDir,
    n: usize,
    seed: u64,
    g: &Global,
) -> anyhow::Result<PathBuf> {
    write_samples::<M>(dir, n, seed, None, g)
}

fn write_samples<M: Trainable>(
    dir: &RunDir,
    n: usize,
    seed: u64,
    out: Option<&Path>,
    g: &Global,
) -> anyhow::Result<PathBuf> {
    let device = elbo::device::device(g.device, false)?;
    let (_cfg, mf, model) = train::load_model::<M>(dir, &device)?;
    let hw = mf.data.image_hw();
    let d = mf.data.dim();
    let out = match out {
        Some(p) => p.to_path_buf(),
        None if hw.is_some() || d == 2 => dir.file("samples.png"),
        None => dir.file("samples.npy"),
    };
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext != "png" && ext != "npy" {
        anyhow::bail!("{}: the output must end in .png or .npy", out.display());
    }
    let mut rng = elbo::rng::derived(seed, 0x5a);
    let x = model.sample(n, &mut rng)?;
    let values: Vec<f32> = x
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if ext == "npy" {
        write_atomic(&out, &encode_npy_f32(n, d, &values))?;
        return Ok(out);
    }
    match hw {
        Some((h, w)) => {
            // Samples are in data units: 8-bit levels for images (or probabilities in [0, 1]).
            let max = values.iter().cloned().fold(0.0f32, f32::max);
            let scale = if max > 1.5 { 1.0 / 255.0 } else { 1.0 };
            let v: Vec<f32> = values.iter().map(|x| x * scale).collect();
            save_grid(&out, &v, n, h, w, 2)?
        }
        None if d == 2 => save_scatter(&out, &values, 600)?,
        None => anyhow::bail!(
            "{}: a PNG needs image or 2-D data; use a .npy file",
            out.display()
        ),
    }
    Ok(out)
}
