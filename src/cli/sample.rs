//! `elbo sample DIR`: samples from a trained run, as a PNG grid (images), a scatter plot (2-D
//! data) or a .npy array (anything; chosen by the --out extension).

use std::path::{Path, PathBuf};

use clap::Args;
use std::io::Write;

use elbo::data::npy::npy_header_f32;
use elbo::diffusion::guidance::ClassGradient;
use elbo::limits::MAX_GRID_IMAGES;
use elbo::report::grid::{save_grid, save_scatter};
use elbo::run::OpenRun;
use elbo::run::RunDir;
use elbo::sample::{SampleOptions, SamplerParams};

use super::{BarProgress, Global};

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Run directory written by `elbo train`.
    pub dir: PathBuf,
    /// Number of samples (default: 64 images, or 2,000 points of 2-D data).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, short)]
    pub n: Option<usize>,
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<u64>, long, default_value_t = 0)]
    pub seed: u64,
    /// Output file: .png (image grid, or scatter for 2-D data) or .npy (N×D float32, data units).
    /// Default: DIR/samples.png for images and 2-D data, DIR/samples.npy otherwise.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Sampler (diffusion models; the VAE samples in one decoder pass).
    #[arg(long, value_parser = super::sampler_name())]
    pub sampler: Option<String>,
    /// Sampling steps (diffusion models; default: the run's vdm.sample_steps).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long)]
    pub steps: Option<usize>,
    /// DDIM's η (0: deterministic).
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.0)]
    pub eta: f64,
    /// Signal-to-noise ratio of the predictor–corrector sampler's Langevin steps.
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.16)]
    pub snr: f64,
    /// Relative tolerance of the rk45 sampler's step control.
    #[arg(allow_negative_numbers = true, long, default_value_t = 1e-3)]
    pub rtol: f64,
    /// Absolute tolerance of the rk45 sampler's step control.
    #[arg(allow_negative_numbers = true, long, default_value_t = 1e-3)]
    pub atol: f64,
    /// EDM sampler's S_churn: noise added before each step from a level in [S_tmin, S_tmax],
    /// raising σ by the factor 1 + min(S_churn/steps, √2 − 1) (0: deterministic).
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.0)]
    pub churn: f64,
    /// EDM sampler's S_tmin: the lowest σ at which churn applies.
    #[arg(allow_negative_numbers = true, long, default_value_t = 0.05)]
    pub s_tmin: f64,
    /// EDM sampler's S_tmax: the highest σ at which churn applies.
    #[arg(allow_negative_numbers = true, long, default_value_t = 50.0)]
    pub s_tmax: f64,
    /// EDM sampler's S_noise: the inflation of churn's noise.
    #[arg(allow_negative_numbers = true, long, default_value_t = 1.003)]
    pub s_noise: f64,
    /// Class to draw, for a class-conditional model (trained with vdm.conditional = true).
    #[arg(long, value_name = "C|all", value_parser = parse_class, allow_negative_numbers = true)]
    pub class: Option<ClassChoice>,
    /// Guidance weight w ≥ 0 with --class. Classifier-free (M43), for a class-conditional run:
    /// ε̃ = (1 + w) ε(z, c) − w ε(z, ∅). With --classifier (M42): the score plus
    /// w ∇log p(c | z_t) (w = 1 is Bayes' conditional; CFG's w matches classifier w + 1).
    #[arg(
        allow_negative_numbers = true,
        long,
        value_name = "W",
        default_value_t = 0.0,
        requires = "class"
    )]
    pub guidance: f64,
    /// Classifier guidance (M42) by the noisy classifier in RUN (trained with `elbo train
    /// --model noisy-classifier` on the same data), towards --class, with weight --guidance.
    #[arg(long, value_name = "RUN", requires = "class")]
    pub classifier: Option<PathBuf>,
    /// Run even beyond elbo's limits (more than 100,000 steps, 2 GiB of samples, 10,000 images
    /// in a grid, or an estimated 4 hours of work).
    #[arg(long)]
    pub force: bool,
}

/// `--class C` or `--class all` (every class, one row each).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClassChoice {
    One(u32),
    All,
}

fn parse_class(s: &str) -> Result<ClassChoice, String> {
    if s == "all" {
        return Ok(ClassChoice::All);
    }
    s.parse::<u32>()
        .map(ClassChoice::One)
        .map_err(|_| format!("'{s}' is not a class number or 'all'"))
}

pub fn run(a: SampleArgs, g: &Global) -> anyhow::Result<i32> {
    let dir = RunDir::new(&a.dir);
    dir.check()?;
    if a.n == Some(0) {
        anyhow::bail!("--n must be at least 1");
    }
    // Check every flag before any loading.
    sample_options(
        &a,
        match a.class {
            Some(ClassChoice::One(c)) => Some(c),
            Some(ClassChoice::All) => Some(0),
            None => None,
        },
    )?;
    // The run and the classifier, each loaded once (the classifier on the autodiff device its
    // input gradients need).
    let run = elbo::run::open(&dir, &elbo::device::device(g.device, false)?)?;
    let classifier = match &a.classifier {
        Some(c) => Some(elbo::models::noisy_classifier::load(
            c,
            &elbo::device::device(g.device, true)?,
        )?),
        None => None,
    };
    let guide = classifier.as_ref().map(|c| c as &dyn ClassGradient);
    if a.class == Some(ClassChoice::All) {
        return sample_every_class(&a, run.as_ref(), guide, &dir, g);
    }
    let opts = sample_options(
        &a,
        match a.class {
            Some(ClassChoice::One(c)) => Some(c),
            _ => None,
        },
    )?;
    let n =
        a.n.unwrap_or(if run.file().data.dim() == 2 { 2000 } else { 64 });
    let (p, nfe, sampler) = write_samples(
        run.as_ref(),
        &dir,
        n,
        a.out.as_deref(),
        &opts,
        guide,
        a.force,
        g,
    )?;
    eprintln!("{sampler}: {nfe:.0} network evaluations (NFE) per sample");
    println!("{}", p.display());
    Ok(0)
}

/// The sampler settings of the flags, for `class`, checked.
fn sample_options(a: &SampleArgs, class: Option<u32>) -> anyhow::Result<SampleOptions> {
    let params = SamplerParams {
        eta: a.eta,
        snr: a.snr,
        rtol: a.rtol,
        atol: a.atol,
        churn: a.churn,
        s_tmin: a.s_tmin,
        s_tmax: a.s_tmax,
        s_noise: a.s_noise,
    };
    params.validate()?;
    // The churn flags are the EDM sampler's: they choose it, and no other takes them.
    let churned = a.churn > 0.0;
    let name = match a.sampler.as_deref() {
        Some(s) if churned && s != "edm" => {
            anyhow::bail!("--churn applies to the EDM sampler (--sampler edm), not to {s}")
        }
        None if churned => Some("edm"),
        s => s,
    };
    let opts = SampleOptions {
        sampler: super::sampler_of(name, &params)?,
        steps: a.steps,
        seed: a.seed,
        threads: elbo::par::default_threads(),
        class,
        guidance: a.guidance,
        first_chunk: 0,
    };
    opts.validate()?;
    Ok(opts)
}

/// `--class all`: `--n` samples (default 8) of every class of a class-conditional run, one row
/// per class in a PNG grid (or class after class in a .npy); the run and the classifier loaded
/// once.
fn sample_every_class(
    a: &SampleArgs,
    run: &dyn OpenRun,
    classifier: Option<&dyn ClassGradient>,
    dir: &RunDir,
    g: &Global,
) -> anyhow::Result<i32> {
    let mf = run.file();
    let classes = match classifier {
        Some(c) => c.classes(),
        None => mf.spec.get("classes").and_then(|c| c.as_u64()).unwrap_or(0) as usize,
    };
    if classes == 0 {
        anyhow::bail!(
            "{}: --class needs a class-conditional run (trained with --set vdm.conditional=true)",
            dir.path.display()
        );
    }
    let per = a.n.unwrap_or(8);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| dir.file("samples_by_class.png"));
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let hw = mf.data.image_hw();
    if ext != "npy" && (ext != "png" || hw.is_none()) {
        anyhow::bail!(
            "{}: --class all writes a .png (images) or a .npy",
            out.display()
        );
    }
    elbo::fsio::check_output_file(&out)?;
    elbo::limits::check(
        ext != "png" || per * classes <= MAX_GRID_IMAGES,
        a.force,
        || {
            format!("--n {per} for each of {classes} classes: {} images in one PNG (the limit is {MAX_GRID_IMAGES})", per * classes)
        },
    )?;
    let mut values = Vec::new();
    let mut evaluations = 0.0;
    for c in 0..classes as u32 {
        let opts = sample_options(a, Some(c))?;
        let s = elbo::eval::draw::draw(run, per, &opts, classifier, a.force, &BarProgress::new(g))?;
        evaluations += s.nfe * per as f64;
        values.extend(s.values);
    }
    let n = per * classes;
    if ext == "npy" {
        let d = mf.data.dim();
        let mut bytes = npy_header_f32(n, d);
        for v in &values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        elbo::fsio::write_atomic(&out, &bytes)?;
    } else if let Some((h, w)) = hw {
        let white = run.white();
        let v: Vec<f32> = values.iter().map(|x| x / white).collect();
        elbo::report::grid::save_grid_cols(&out, &v, n, per, h, w, 2)?;
    }
    eprintln!(
        "{classes} classes × {per} samples (one row per class, guidance w = {}): {:.0} network evaluations (NFE) per sample",
        a.guidance,
        evaluations / n.max(1) as f64
    );
    println!("{}", out.display());
    Ok(0)
}

/// Samples into the default file of the run.
pub fn write_default_samples(
    dir: &RunDir,
    n: usize,
    seed: u64,
    g: &Global,
) -> anyhow::Result<PathBuf> {
    let opts = SampleOptions::ancestral(seed, elbo::par::default_threads());
    let run = elbo::run::open(dir, &elbo::device::device(g.device, false)?)?;
    let n = if run.file().data.dim() == 2 { 2000 } else { n };
    Ok(write_samples(run.as_ref(), dir, n, None, &opts, None, false, g)?.0)
}

/// Samples of an opened run into `out` (default: the run's samples.png or samples.npy); returns
/// the file, the network evaluations per sample and the sampler in words.
#[allow(clippy::too_many_arguments)]
fn write_samples(
    run: &dyn OpenRun,
    dir: &RunDir,
    n: usize,
    out: Option<&Path>,
    opts: &SampleOptions,
    classifier: Option<&dyn ClassGradient>,
    force: bool,
    g: &Global,
) -> anyhow::Result<(PathBuf, f64, String)> {
    let mf = run.file();
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
    elbo::fsio::check_output_file(&out)?;
    if ext == "png" && hw.is_none() && d != 2 {
        anyhow::bail!(
            "{}: a PNG needs image or 2-D data; use a .npy file",
            out.display()
        );
    }
    elbo::limits::check(
        ext != "png" || hw.is_none() || n <= MAX_GRID_IMAGES,
        force,
        || {
            format!("--n {n}: a grid of {n} images in one PNG (the limit is {MAX_GRID_IMAGES}; a .npy takes any number)")
        },
    )?;
    if ext == "npy" {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        elbo::limits::check_disk(
            parent,
            (n as u64) * (d as u64) * 4 + 128,
            &format!("--n {n}"),
        )?;
        // Written block by block into a temporary file, renamed into place when whole.
        let tmp = out.with_extension("npy.partial");
        let _cleanup = super::RemoveOnSignal::new(&tmp)?;
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&tmp).map_err(|e| elbo::Error::io(&tmp, e))?,
        );
        f.write_all(&npy_header_f32(n, d))
            .map_err(|e| elbo::Error::io(&tmp, e))?;
        let mut sink = |block: &[f32]| -> elbo::Result<()> {
            for v in block {
                f.write_all(&v.to_le_bytes())
                    .map_err(|e| elbo::Error::io(&tmp, e))?;
            }
            Ok(())
        };
        let r = elbo::eval::draw::draw_blocks(
            run,
            n,
            opts,
            classifier,
            force,
            &BarProgress::new(g),
            &mut sink,
        );
        let finished = r.and_then(|drawn| {
            f.flush().map_err(|e| elbo::Error::io(&tmp, e))?;
            drop(f);
            std::fs::rename(&tmp, &out).map_err(|e| elbo::Error::io(&out, e))?;
            Ok(drawn)
        });
        if finished.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        let (nfe, sampler) = finished?;
        return Ok((out, nfe, sampler));
    }
    let s = elbo::eval::draw::draw(run, n, opts, classifier, force, &BarProgress::new(g))?;
    let full = s.white;
    match hw {
        Some((h, w)) => {
            let v: Vec<f32> = s.values.iter().map(|x| x / full).collect();
            save_grid(&out, &v, n, h, w, 2)?
        }
        None => save_scatter(&out, &s.values, 600)?,
    }
    Ok((out, s.nfe, s.sampler))
}
