//! `elbo sample DIR`: samples from a trained run, as a PNG grid (images), a scatter plot (2-D
//! data) or a .npy array (anything; chosen by the --out extension).

use std::path::{Path, PathBuf};

use clap::Args;
use elbo::data::npy::encode_npy_f32;
use elbo::models::diffusion::vdm::Vdm;
use elbo::models::vae::Vae;
use elbo::models::LatentVariableModel;
use elbo::report::grid::{save_grid, save_scatter};
use elbo::sample::{Ancestral, Ddim, SamplerKind};
use elbo::train::checkpoint::write_atomic;
use elbo::train::run::RunDir;
use elbo::train::{self, ModelKind};

use super::Global;

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Run directory written by `elbo train`.
    pub dir: PathBuf,
    /// Number of samples (default: 64 images, or 2,000 points of 2-D data).
    #[arg(long, short)]
    pub n: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file: .png (image grid, or scatter for 2-D data) or .npy (N×D float32, data units).
    /// Default: DIR/samples.png for images and 2-D data, DIR/samples.npy otherwise.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Sampler (diffusion models; the VAE samples in one decoder pass).
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerKind>,
    /// Sampling steps (diffusion models; default: the run's vdm.sample_steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM's η (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
}

/// How a diffusion model samples.
pub struct How {
    pub sampler: SamplerKind,
    pub steps: Option<usize>,
    pub eta: f64,
}

pub fn run(a: SampleArgs, g: &Global) -> anyhow::Result<i32> {
    let dir = RunDir::new(&a.dir);
    dir.check()?;
    if a.n == Some(0) {
        anyhow::bail!("--n must be at least 1");
    }
    let cfg = dir.config()?;
    if cfg.model == ModelKind::Vae && (a.sampler.is_some() || a.steps.is_some()) {
        anyhow::bail!(
            "--sampler and --steps apply to diffusion models; a VAE samples in one decoder pass"
        );
    }
    if !(a.eta >= 0.0 && a.eta.is_finite()) {
        anyhow::bail!("--eta must be a non-negative number");
    }
    if a.steps == Some(0) {
        anyhow::bail!("--steps must be at least 1");
    }
    let how = How {
        sampler: a.sampler.unwrap_or(SamplerKind::Ancestral),
        steps: a.steps,
        eta: a.eta,
    };
    let n = a.n.unwrap_or(if dir.model_file()?.data.dim() == 2 {
        2000
    } else {
        64
    });
    let p = write_samples(&dir, n, a.seed, a.out.as_deref(), &how, g)?;
    println!("{}", p.display());
    Ok(0)
}

/// Samples into the default file of the run.
pub fn write_default_samples(
    dir: &RunDir,
    n: usize,
    seed: u64,
    g: &Global,
) -> anyhow::Result<PathBuf> {
    let how = How {
        sampler: SamplerKind::Ancestral,
        steps: None,
        eta: 0.0,
    };
    let n = if dir.model_file()?.data.dim() == 2 {
        2000
    } else {
        n
    };
    write_samples(dir, n, seed, None, &how, g)
}

/// Draw `n` samples; returns them in data units `[n, D]` with the value of a white pixel.
pub fn draw(
    dir: &RunDir,
    n: usize,
    seed: u64,
    how: &How,
    g: &Global,
) -> anyhow::Result<(train::run::ModelFile, Vec<f32>, f32)> {
    let device = elbo::device::device(g.device, false)?;
    let cfg = dir.config()?;
    let (mf, values, full) = match cfg.model {
        ModelKind::Vae => {
            let (_c, mf, model) = train::load_model::<Vae>(dir, &device)?;
            // Bernoulli means for binarised images: a white pixel is 1 (255 when dequantised).
            let full = if mf.data.dequantized { 255.0 } else { 1.0 };
            let mut rng = elbo::rng::derived(seed, train::streams::SAMPLE_NOISE);
            (mf, elbo::elbo::to_f32(model.sample(n, &mut rng)?)?, full)
        }
        ModelKind::Vdm => {
            let (_c, mf, model) = train::load_model::<Vdm>(dir, &device)?;
            let steps = how.steps.unwrap_or(model.cfg.sample_steps).max(1);
            let chunks = n.div_ceil(Vdm::sample_chunk_rows(mf.data.dim()));
            let b = super::bar(g, (chunks * steps) as u64, "sampling");
            let tick = || b.inc(1);
            let threads = elbo::par::default_threads();
            let ancestral = Ancestral;
            let ddim = Ddim { eta: how.eta };
            let sampler: &(dyn elbo::sample::Sampler + Sync) = match how.sampler {
                SamplerKind::Ancestral => &ancestral,
                SamplerKind::Ddim => &ddim,
            };
            let v = model.sample_chunked(n, sampler, steps, seed, threads, &tick)?;
            b.finish_and_clear();
            (mf, v, 255.0)
        }
    };
    Ok((mf, values, full))
}

fn write_samples(
    dir: &RunDir,
    n: usize,
    seed: u64,
    out: Option<&Path>,
    how: &How,
    g: &Global,
) -> anyhow::Result<PathBuf> {
    let mf = dir.model_file()?;
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
    if ext == "png" && hw.is_none() && d != 2 {
        anyhow::bail!(
            "{}: a PNG needs image or 2-D data; use a .npy file",
            out.display()
        );
    }
    let (_, values, full) = draw(dir, n, seed, how, g)?;
    if ext == "npy" {
        write_atomic(&out, &encode_npy_f32(n, d, &values))?;
        return Ok(out);
    }
    match hw {
        Some((h, w)) => {
            let v: Vec<f32> = values.iter().map(|x| x / full).collect();
            save_grid(&out, &v, n, h, w, 2)?
        }
        None => save_scatter(&out, &values, 600)?,
    }
    Ok(out)
}
