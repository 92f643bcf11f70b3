//! The sampling driver: samples of any diffusion model by any sampler of the registry. The
//! model supplies what only it knows ([`DiffusionSource`]: its denoiser and process, its prior,
//! its data space, and the γ grid a sampler walks on it); the driver owns the rest: the prior
//! draw, chunks spread over threads, each with its own noise stream (so the samples depend on
//! the seed, never on the thread count), classifier-free guidance (M43) and guidance by any
//! classifier of noisy inputs (M42, through [`ClassGradient`]), and the count of network
//! evaluations, which it returns with the samples.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{Device, Tensor};

use super::SamplerKind;
use crate::data::DataSpace;
use crate::diffusion::guidance::{ClassGradient, ClassifierGuided, Guided};
use crate::diffusion::{Cond, Denoiser, Prediction, Process};
use crate::rng::{randn, Rng};
use crate::{Error, Result};

/// How samples are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOptions {
    /// The sampler with its settings (`None`: the model's default).
    pub sampler: Option<SamplerKind>,
    /// Sampler steps (`None`: the model's default).
    pub steps: Option<usize>,
    pub seed: u64,
    pub threads: usize,
    /// The class to draw, for a conditional model or a classifier's guidance (`None`:
    /// unconditional).
    pub class: Option<u32>,
    /// Guidance weight w ≥ 0: classifier-free (M43; 0: the conditional model as trained), or
    /// the classifier's (M42) when one is given.
    pub guidance: f64,
    /// Index of the first chunk: drawing samples in blocks with consecutive offsets gives the
    /// same samples as one call.
    pub first_chunk: u64,
}

impl SampleOptions {
    /// The model's default sampler and step count.
    pub fn ancestral(seed: u64, threads: usize) -> Self {
        SampleOptions {
            sampler: None,
            steps: None,
            seed,
            threads,
            class: None,
            guidance: 0.0,
            first_chunk: 0,
        }
    }

    /// Refuse settings no sampler can use, naming the flag.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.steps == Some(0) {
            return bad("--steps must be at least 1");
        }
        if !(self.guidance >= 0.0 && self.guidance.is_finite()) {
            return bad("--guidance must be a non-negative number");
        }
        if self.class.is_none() && self.guidance != 0.0 {
            return bad("--guidance needs --class");
        }
        if let Some(s) = &self.sampler {
            s.validate()?;
        }
        Ok(())
    }
}

/// Samples, with what drew them.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    /// Row-major `[n, D]`, in data units.
    pub values: Vec<f32>,
    /// Network evaluations per sample, counted (CFG's two per step are two).
    pub nfe: f64,
    /// The sampler and its grid, in words.
    pub sampler: String,
}

/// A sampler and the γ grid it walks (high noise to low; the clean end follows the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub sampler: SamplerKind,
    pub gammas: Vec<f64>,
}

impl Plan {
    /// The plan in words: the sampler and its steps.
    pub fn describe(&self) -> String {
        format!("{}, {} steps", self.sampler.describe(), self.gammas.len())
    }
}

/// What a diffusion model supplies the driver.
pub trait DiffusionSource: Denoiser + Clone + Send + Sync {
    /// The sampler (`None`: the model's default) with what only the model knows filled in,
    /// and its γ grid for `steps` (`None`: the model's default); a sampler the model cannot
    /// use is refused with the reason.
    fn plan(&self, sampler: Option<&SamplerKind>, steps: Option<usize>) -> Result<Plan>;
    /// The variance of the prior p(z_1) = N(0, v I).
    fn prior_var(&self) -> f64;
    /// What the data are (their shape, and the classes of a conditional model).
    fn data_space(&self) -> &DataSpace;
    /// Model space → data units.
    fn to_data(&self, x0: Tensor<2>) -> Tensor<2>;
    /// Where its tensors live.
    fn device(&self) -> Device;
    /// Rows drawn together (a chunk): 16 images of 28×28, more for smaller examples (at most
    /// 512).
    fn chunk_rows(&self) -> usize {
        (12_544 / self.data_space().dim().max(1)).clamp(1, 512)
    }
}

/// A denoiser that counts the rows it is asked about: network evaluations, counted where
/// they happen (inside guidance, which asks twice).
struct Counted<'a> {
    den: &'a dyn Denoiser,
    rows: &'a AtomicU64,
}

impl Denoiser for Counted<'_> {
    fn prediction(&self) -> Prediction {
        self.den.prediction()
    }
    fn process(&self) -> Process {
        self.den.process()
    }
    fn x0_bounds(&self) -> Option<(f64, f64)> {
        self.den.x0_bounds()
    }
    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>, cond: Cond) -> Tensor<2> {
        self.rows.fetch_add(z_t.dims()[0] as u64, Ordering::Relaxed);
        self.den.predict(z_t, gamma, cond)
    }
}

/// `n` samples of `den` by `plan`: z_1 from `src`'s prior, the sampler's walk to x̂_0, mapped
/// to data units. `tick` is told each step done.
#[allow(clippy::too_many_arguments)]
pub fn walk<S: DiffusionSource>(
    src: &S,
    den: &dyn Denoiser,
    plan: &Plan,
    n: usize,
    cond: Cond,
    rng: &mut Rng,
    tick: &mut dyn FnMut(usize),
) -> Result<Tensor<2>> {
    let z1 = randn(rng, [n, src.data_space().dim()], &src.device()) * src.prior_var().sqrt();
    let x0 = plan
        .sampler
        .sampler()
        .sample_path(den, &plan.gammas, z1, cond, rng, tick)?;
    Ok(src.to_data(x0))
}

/// Units of work (calls of `tick` in [`draw`]) for `n` samples: a step of a chunk each.
pub fn work<S: DiffusionSource>(src: &S, n: usize, opts: &SampleOptions) -> Result<u64> {
    let plan = src.plan(opts.sampler.as_ref(), opts.steps)?;
    Ok((n.div_ceil(src.chunk_rows().max(1)) * plan.gammas.len().max(1)) as u64)
}

/// Refuse a class or a classifier the model cannot use, naming the flag.
fn check_guidance<S: DiffusionSource>(
    src: &S,
    opts: &SampleOptions,
    classifier: Option<&dyn ClassGradient>,
) -> Result<()> {
    let classes = src.data_space().classes;
    match (classifier, opts.class) {
        (Some(_), None) => Err(Error::Config(
            "--classifier needs --class C (the class to steer towards)".into(),
        )),
        (Some(c), Some(k)) => {
            if k as usize >= c.classes() {
                return Err(Error::Config(format!(
                    "--class {k}: the classifier knows classes 0 to {}",
                    c.classes().saturating_sub(1)
                )));
            }
            c.check_compatible(src.data_space(), src.process())
        }
        (None, Some(_)) if classes == 0 => Err(Error::Config(
            "--class needs a class-conditional model (trained with vdm.conditional = true)".into(),
        )),
        (None, Some(k)) if k as usize >= classes => Err(Error::Config(format!(
            "--class {k}: this model knows classes 0 to {}",
            classes - 1
        ))),
        _ => Ok(()),
    }
}

/// `n` samples of `src` as `opts` says, in data units, in chunks spread over threads: chunk i
/// draws its noise from `rng::chunk(seed, SAMPLE_NOISE, first_chunk + i)`, and chunk sizes
/// depend on `n` and D only. With `opts.class` and `opts.guidance` > 0, classifier-free
/// guidance (M43); with a `classifier`, its guidance of weight `opts.guidance` (M42) towards
/// `opts.class`. `tick` is told each step of each chunk.
pub fn draw<S: DiffusionSource>(
    src: &S,
    n: usize,
    opts: &SampleOptions,
    classifier: Option<&dyn ClassGradient>,
    tick: &(dyn Fn() + Sync),
) -> Result<Drawn> {
    opts.validate()?;
    let plan = src.plan(opts.sampler.as_ref(), opts.steps)?;
    plan.sampler.validate()?;
    check_guidance(src, opts, classifier)?;
    let per = src.chunk_rows().max(1);
    let chunks = n.div_ceil(per);
    let threads = opts.threads.clamp(1, chunks.max(1));
    // One copy of the model (and of the classifier) per thread.
    let states: Vec<(S, Option<Box<dyn ClassGradient>>)> = (0..threads)
        .map(|_| (src.clone(), classifier.map(|c| c.replica())))
        .collect();
    let rows_counted = AtomicU64::new(0);
    let null = src.data_space().classes as u32;
    let parts = crate::par::map_chunks(states, chunks, |(m, clf), i| {
        let rows = per.min(n - i * per);
        let labels = opts.class.map(|c| vec![c; rows]);
        let mut rng = crate::rng::chunk(
            opts.seed,
            crate::rng::streams::SAMPLE_NOISE,
            opts.first_chunk + i as u64,
        );
        let net = Counted {
            den: &*m,
            rows: &rows_counted,
        };
        let guided_by_classifier;
        let classifier_free;
        let den: &dyn Denoiser = match &*clf {
            Some(c) => {
                guided_by_classifier = ClassifierGuided {
                    den: &net,
                    classifier: c.as_ref(),
                    w: opts.guidance,
                };
                &guided_by_classifier
            }
            None if opts.guidance > 0.0 => {
                classifier_free = Guided {
                    den: &net,
                    w: opts.guidance,
                    null,
                };
                &classifier_free
            }
            None => &net,
        };
        let x = walk(
            &*m,
            den,
            &plan,
            rows,
            labels.as_deref(),
            &mut rng,
            &mut |_| tick(),
        )?;
        crate::elbo::to_f32(x)
    })?;
    Ok(Drawn {
        values: parts.concat(),
        nfe: rows_counted.load(Ordering::Relaxed) as f64 / n.max(1) as f64,
        sampler: plan.describe(),
    })
}
