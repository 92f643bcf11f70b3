//! The variational diffusion model (MATH.md M25–M30): a hierarchical VAE whose encoder is the
//! fixed forward process, trained on its ELBO, every term visible.
//!
//! | code | math |
//! | --- | --- |
//! | `gamma`, `dgamma` | γ(t) = −log SNR(t), γ'(t) |
//! | `alpha`, `sigma` | α_t = √sigmoid(−γ), σ_t = √sigmoid(γ) |
//! | `z_t` | α_t x + σ_t ε |
//! | `eps_hat` | ε̂_θ(z_t; γ_t) |
//! | `recon`, `prior`, `diffusion` | −log p(x\|z_0), KL(q(z_1\|x) ‖ N(0, I)), L_T or L_∞ (M30) |
//!
//! Data enter in their own units: 8-bit images as levels k ∈ {0..255}, scaled inside to
//! x = 2k/255 − 1 and scored by a discretised Gaussian over the 256 levels (M22), so the bound is
//! on the discrete NLL and bits/dim = −ELBO/(D ln 2); continuous data are standardised inside,
//! x̃ = (x − shift)/scale, and the log-Jacobian Σ log scale is added to the reconstruction term,
//! so the bound is on the density of the data as given (nats, nats/dim).

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::param::Prediction;
use super::schedule::{NoiseSchedule, ScheduleConfig, ScheduleKind};
use super::{eps_hat, Denoiser, Schedule};
use crate::data::DataKind;
use crate::dist::{softplus, LOG_2PI};
use crate::elbo::ElboTerms;
use crate::models::LatentVariableModel;
use crate::nn::denoiser_mlp::{MlpDenoiser, MlpDenoiserConfig};
use crate::nn::monotone::LearnedSchedule;
use crate::nn::unet::{UNet, UNetConfig};
use crate::rng::{randn, Rng};
use crate::{Error, Result};

/// What the model is trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The negative ELBO itself.
    #[default]
    Elbo,
    /// DDPM's L_simple, the unweighted ε-MSE (the ELBO is still what is reported).
    Simple,
}

/// Which denoising network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkKind {
    /// From the data's shape: images → U-Net, vectors → MLP.
    #[default]
    Auto,
    Mlp,
    Unet,
}

/// VDM settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VdmConfig {
    pub schedule: ScheduleConfig,
    /// Sigmoid units of a learned schedule's monotone network (VDM: 1024; fewer suffice here).
    pub schedule_units: usize,
    /// What the network outputs; the ELBO is the same quantity whichever.
    pub prediction: Prediction,
    /// Train the discrete-time bound with this many steps (M27); 0: continuous time (M28).
    pub t_steps: u64,
    pub objective: Objective,
    pub network: NetworkKind,
    pub mlp: MlpDenoiserConfig,
    pub unet: UNetConfig,
    /// Ancestral sampling steps used at the end of training and by default in `elbo sample`.
    pub sample_steps: usize,
}

impl Default for VdmConfig {
    fn default() -> Self {
        VdmConfig {
            schedule: ScheduleConfig::default(),
            schedule_units: 64,
            prediction: Prediction::Eps,
            t_steps: 0,
            objective: Objective::Elbo,
            network: NetworkKind::Auto,
            mlp: MlpDenoiserConfig::default(),
            unet: UNetConfig::default(),
            sample_steps: 200,
        }
    }
}

impl VdmConfig {
    /// Sizes that would make a network with no units are refused with the key's name.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.unet.channels.is_empty() || self.unet.channels.contains(&0) {
            return bad("vdm.unet.channels must be a non-empty list of positive widths");
        }
        if self.mlp.hidden == 0 {
            return bad("vdm.mlp.hidden must be positive");
        }
        if self.unet.embed < 4 || self.mlp.embed < 4 {
            return bad("vdm.unet.embed and vdm.mlp.embed must be at least 4");
        }
        if self.schedule_units == 0 {
            return bad("vdm.schedule_units must be positive");
        }
        Ok(())
    }
}

/// What the VDM learned about its data before training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VdmSpec {
    pub kind: DataKind,
    pub shape: Vec<usize>,
    /// Standardisation of continuous data (empty for images).
    pub shift: Vec<f32>,
    pub scale: Vec<f32>,
}

impl VdmSpec {
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The decoder p(x | z_0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// 8-bit levels, x = 2k/255 − 1: Gaussian mass of each level's bin (M22).
    Discrete256,
    /// Continuous: N(x; z_0/α_0, σ_0²/α_0²).
    Gaussian,
}

/// How to estimate the bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElboOptions {
    /// `Some(T)`: the discrete-time bound with T steps (M27); `None`: continuous time (M28).
    pub t_steps: Option<u64>,
    /// Time samples per example (stratified; antithetic across the batch).
    pub t_samples: usize,
}

/// A per-example estimate of the VDM's negative ELBO, in nats, in model space (no Jacobian).
pub struct DiffusionEstimate {
    /// −log p(x | z_0), `[B]`.
    pub recon: Tensor<1>,
    /// KL(q(z_1 | x) ‖ N(0, I)), `[B]`.
    pub prior: Tensor<1>,
    /// L_T or L_∞ per example (mean over its time samples), `[B]`.
    pub diffusion: Tensor<1>,
    /// Each time sample's diffusion estimate, `[B, N]`.
    pub samples: Tensor<2>,
    /// The time of each sample, row-major `[B, N]`.
    pub times: Vec<f64>,
    /// ‖ε − ε̂‖² per sample, `[B·N]` (for L_simple).
    pub mse: Tensor<1>,
}

fn standard_normal_cdf(x: Tensor<2>) -> Tensor<2> {
    (x * std::f64::consts::FRAC_1_SQRT_2).erf() * 0.5 + 0.5
}

/// (M30) The negative ELBO of a denoiser under a schedule, per example, for a model-space batch
/// `x` `[B, D]`: reconstruction + prior + diffusion (M27 with T steps, or M28).
pub fn diffusion_elbo<D: Denoiser + ?Sized>(
    den: &D,
    sched: &Schedule,
    x: Tensor<2>,
    decoder: Decoder,
    opts: ElboOptions,
    rng: &mut Rng,
) -> Result<DiffusionEstimate> {
    let device = x.device();
    let [b, d] = x.dims();
    let n = opts.t_samples.max(1);
    let rows = b * n;

    // Times: one stratified grid over all rows, row (b, j) at (u + (j·B + b)/(B·N)) mod 1, so each
    // example's N times are spread over N strata and the batch is antithetic (M28).
    let u: f64 = rng.gen();
    let mut times = vec![0.0; rows];
    for bi in 0..b {
        for j in 0..n {
            let v = (u + (j * b + bi) as f64 / rows as f64).fract();
            times[bi * n + j] = v;
        }
    }
    let t_steps = opts.t_steps.filter(|&t| t > 0);
    if let Some(tt) = t_steps {
        // (M27) t uniform on {1/T, …, 1}.
        let tf = tt as f64;
        for v in times.iter_mut() {
            *v = ((*v * tf).ceil().max(1.0)) / tf;
        }
    }

    // Diffusion term on the B·N rows.
    let x_rep = x
        .clone()
        .unsqueeze_dim::<3>(1)
        .repeat_dim(1, n)
        .reshape([rows, d]);
    let eps = randn(rng, [rows, d], &device);
    let (gamma, dgamma) = sched.gamma(&times, &device);
    let (alpha, sigma) = super::alpha_sigma(gamma.clone());
    let z_t = x_rep * alpha + eps.clone() * sigma;
    let e_hat = eps_hat(den, z_t, gamma);
    let mse = (eps - e_hat).square().sum_dim(1).squeeze_dim::<1>(1); // [B·N]
    let per_sample = match t_steps {
        // (M27) (T/2) expm1(γ(t) − γ(s)) ‖ε − ε̂‖², s = t − 1/T.
        Some(tt) => {
            let s: Vec<f64> = times.iter().map(|&v| v - 1.0 / tt as f64).collect();
            sched.expm1_diff(&times, &s, &device) * mse.clone() * (tt as f64 / 2.0)
        }
        // (M28) ½ γ'(t) ‖ε − ε̂‖².
        None => dgamma * mse.clone() * 0.5,
    };
    let samples = per_sample.reshape([b, n]);
    let diffusion = samples.clone().mean_dim(1).squeeze_dim::<1>(1);

    // Endpoints.
    let (g0, g1) = sched.endpoints(&device);
    let recon = match decoder {
        Decoder::Discrete256 => {
            let (alpha0, sigma0) = super::alpha_sigma(g0.clone()); // [1, 1]
            let eps0 = randn(rng, [b, d], &device);
            let z0 = x.clone() * alpha0.clone() + eps0 * sigma0;
            let mean = z0 / alpha0;
            let s = (g0.clone() * 0.5).exp().unsqueeze_dim::<2>(1); // σ_0/α_0 = e^{γ_0/2}
                                                                    // (M22) P(k | z_0) = Φ((x + 1/255 − μ)/s) − Φ((x − 1/255 − μ)/s), end bins to ±∞.
            let half = 1.0 / 255.0;
            let upper = standard_normal_cdf((x.clone() + half - mean.clone()) / s.clone())
                .mask_fill(x.clone().greater_elem(1.0 - half), 1.0);
            let lower = standard_normal_cdf((x.clone() - half - mean) / s)
                .mask_fill(x.clone().lower_elem(-1.0 + half), 0.0);
            -((upper - lower)
                .clamp_min(1e-12)
                .log()
                .sum_dim(1)
                .squeeze_dim::<1>(1))
        }
        Decoder::Gaussian => {
            // −log N(x; z_0/α_0, s²) with z_0/α_0 = x + s ε_0: its residual is exactly s ε_0, so
            // its expectation over ε_0 is ½ D (log 2π + γ_0 + 1) (log s² = γ_0) whatever x is:
            // computed exactly rather than sampled (no Monte-Carlo noise in this term).
            (g0.clone() + LOG_2PI + 1.0).repeat_dim(0, b) * (0.5 * d as f64)
        }
    };
    // KL(N(α_1 x, σ_1²) ‖ N(0, 1)) = ½ Σ (σ_1² + α_1² x² − 1 − log σ_1²); log σ_1² = −softplus(−γ_1).
    let (alpha1, sigma1) = super::alpha_sigma(g1.clone());
    let log_s1 = -softplus(-g1).unsqueeze_dim::<2>(1);
    let prior = ((x.square() * alpha1.square() + sigma1.square() - 1.0 - log_s1) * 0.5)
        .sum_dim(1)
        .squeeze_dim::<1>(1);
    Ok(DiffusionEstimate {
        recon,
        prior,
        diffusion,
        samples,
        times,
        mse,
    })
}

/// The denoising network (one per model, so the size difference of the variants costs nothing).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Network {
    Mlp(MlpDenoiser),
    Unet(UNet),
}

/// A fixed schedule shared by clones of the model.
#[derive(Clone)]
pub struct FixedSchedule(pub Arc<dyn NoiseSchedule + Send + Sync>);

impl std::fmt::Debug for FixedSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FixedSchedule(γ(0) = {:.3}, γ(1) = {:.3})",
            self.0.gamma(0.0),
            self.0.gamma(1.0)
        )
    }
}

/// The VDM: a denoising network, a schedule (fixed or learned), and what it knows of its data.
#[derive(Module, Debug)]
pub struct Vdm {
    pub net: Network,
    pub learned: Option<LearnedSchedule>,
    #[module(skip)]
    pub fixed: FixedSchedule,
    #[module(skip)]
    pub cfg: VdmConfig,
    #[module(skip)]
    pub spec: VdmSpec,
}

impl Vdm {
    pub fn new(cfg: &VdmConfig, spec: VdmSpec, device: &Device) -> Result<Self> {
        let d = spec.dim();
        if d == 0 {
            return Err(Error::Config("the data have no dimensions".into()));
        }
        cfg.validate()?;
        let fixed = FixedSchedule(Arc::from(cfg.schedule.fixed()?));
        // Images ([C, H, W], discrete or dequantised) → U-Net; vectors → MLP; unless named.
        let net = match (cfg.network, spec.shape.as_slice()) {
            (NetworkKind::Mlp, _) => Network::Mlp(MlpDenoiser::new(d, &cfg.mlp, device)),
            (_, [c, h, w]) => Network::Unet(UNet::new([*c, *h, *w], &cfg.unet, device)),
            (NetworkKind::Unet, s) => {
                return Err(Error::Config(format!(
                    "vdm.network = unet needs image data [C, H, W]; these have shape {s:?}"
                )))
            }
            (NetworkKind::Auto, _) => Network::Mlp(MlpDenoiser::new(d, &cfg.mlp, device)),
        };
        let learned = (cfg.schedule.kind == ScheduleKind::Learned).then(|| {
            LearnedSchedule::new(
                cfg.schedule.gamma_min,
                cfg.schedule.gamma_max,
                cfg.schedule_units,
                device,
            )
        });
        Ok(Vdm {
            net,
            learned,
            fixed,
            cfg: cfg.clone(),
            spec,
        })
    }

    pub fn device(&self) -> Device {
        match &self.net {
            Network::Mlp(m) => m.devices()[0].clone(),
            Network::Unet(u) => u.devices()[0].clone(),
        }
    }

    /// The schedule as the estimators use it.
    pub fn schedule(&self) -> Schedule<'_> {
        match &self.learned {
            Some(l) => Schedule::Learned(l),
            None => Schedule::Fixed(self.fixed.0.as_ref()),
        }
    }

    pub fn decoder(&self) -> Decoder {
        match self.spec.kind {
            DataKind::Image8 => Decoder::Discrete256,
            DataKind::Continuous => Decoder::Gaussian,
        }
    }

    fn row(&self, v: &[f32], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), device)
    }

    /// Data units → model space: x = 2k/255 − 1 (images, M22) or (x − shift)/scale.
    pub fn to_model_space(&self, x: Tensor<2>) -> Tensor<2> {
        match self.spec.kind {
            DataKind::Image8 => x * (2.0 / 255.0) - 1.0,
            DataKind::Continuous => {
                let dev = x.device();
                (x - self.row(&self.spec.shift, &dev)) / self.row(&self.spec.scale, &dev)
            }
        }
    }

    /// Model space → data units (images: the nearest of the 256 levels).
    pub fn to_data_space(&self, x: Tensor<2>) -> Tensor<2> {
        match self.spec.kind {
            DataKind::Image8 => ((x + 1.0) * 127.5).clamp(0.0, 255.0).round(),
            DataKind::Continuous => {
                let dev = x.device();
                x * self.row(&self.spec.scale, &dev) + self.row(&self.spec.shift, &dev)
            }
        }
    }

    /// Σ log scale, the log-Jacobian of standardisation (0 for images: their likelihood is discrete).
    pub fn log_jacobian(&self) -> f64 {
        self.spec.scale.iter().map(|s| (*s as f64).ln()).sum()
    }

    /// The estimate for a batch in data units, with the Jacobian in the reconstruction term.
    pub fn estimate(
        &self,
        x: Tensor<2>,
        opts: ElboOptions,
        rng: &mut Rng,
    ) -> Result<DiffusionEstimate> {
        let mut e = diffusion_elbo(
            self,
            &self.schedule(),
            self.to_model_space(x),
            self.decoder(),
            opts,
            rng,
        )?;
        if self.spec.kind == DataKind::Continuous {
            e.recon = e.recon + self.log_jacobian();
        }
        Ok(e)
    }

    /// `n` samples in data units, row-major `[n, D]`, drawn in chunks spread over `threads`
    /// threads. Chunk i draws its noise from `rng::chunk(seed, SAMPLE_NOISE, i)` and chunk sizes
    /// depend on `n` and D only, so the samples depend on the seed, never on the thread count.
    /// `progress` is called once per sampler step of each chunk (`chunks × steps` in all).
    pub fn sample_chunked(
        &self,
        n: usize,
        sampler: &(dyn crate::sample::Sampler + Sync),
        steps: usize,
        seed: u64,
        threads: usize,
        progress: &(dyn Fn() + Sync),
    ) -> Result<Vec<f32>> {
        let per = Self::sample_chunk_rows(self.spec.dim());
        let chunks = n.div_ceil(per);
        let parts = crate::par::map_chunks(
            crate::par::replicas(self, threads, chunks),
            chunks,
            |m, i| {
                let rows = per.min(n - i * per);
                let mut rng =
                    crate::rng::chunk(seed, crate::train::streams::SAMPLE_NOISE, i as u64);
                let x = m.sample_with(rows, sampler, steps, &mut rng, &mut |_| progress())?;
                crate::elbo::to_f32(x)
            },
        )?;
        Ok(parts.concat())
    }

    /// Rows per sampling chunk: 16 images of 28×28, more for smaller examples (at most 512).
    pub fn sample_chunk_rows(dim: usize) -> usize {
        (12_544 / dim.max(1)).clamp(1, 512)
    }

    /// `n` samples by a sampler over `steps` steps, in data units `[n, D]`.
    pub fn sample_with(
        &self,
        n: usize,
        sampler: &dyn crate::sample::Sampler,
        steps: usize,
        rng: &mut Rng,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Tensor<2>> {
        let device = self.device();
        let sched = self.schedule();
        let z1 = randn(rng, [n, self.spec.dim()], &device);
        let z0 = crate::sample::sample_loop(sampler, self, &sched, z1, steps, rng, progress)?;
        // The decoder's mean, z_0/α_0; images then take the nearest level (M22).
        let g0 = sched.gamma_f64(0.0);
        let alpha0 = super::schedule::sigmoid(-g0).sqrt();
        let mut x = z0 / alpha0;
        if self.spec.kind == DataKind::Continuous {
            x = x + randn(rng, [n, self.spec.dim()], &device) * (0.5 * g0).exp();
        }
        Ok(self.to_data_space(x))
    }
}

impl Denoiser for Vdm {
    fn prediction(&self) -> Prediction {
        self.cfg.prediction
    }

    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>) -> Tensor<2> {
        // The network sees γ normalised to [0, 1] over the configured range.
        let (lo, hi) = (self.cfg.schedule.gamma_min, self.cfg.schedule.gamma_max);
        let u = (gamma - lo) / (hi - lo);
        match &self.net {
            Network::Mlp(m) => m.forward(z_t, u),
            Network::Unet(m) => m.forward(z_t, u),
        }
    }
}

impl LatentVariableModel for Vdm {
    fn elbo(&self, x: Tensor<2>, rng: &mut Rng) -> Result<ElboTerms> {
        let opts = ElboOptions {
            t_steps: (self.cfg.t_steps > 0).then_some(self.cfg.t_steps),
            t_samples: 1,
        };
        let e = self.estimate(x, opts, rng)?;
        Ok(ElboTerms {
            reconstruction: e.recon,
            prior: e.prior,
            layers: vec![("diffusion".into(), e.diffusion)],
        })
    }

    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        self.sample_with(
            n,
            &crate::sample::Ancestral,
            self.cfg.sample_steps.max(1),
            rng,
            &mut |_| {},
        )
    }
}

impl crate::train::Trainable for Vdm {
    type Spec = VdmSpec;

    fn spec(cfg: &crate::train::RunConfig, train: &crate::data::Dataset) -> Result<VdmSpec> {
        Ok(match train.kind {
            DataKind::Image8 => VdmSpec {
                kind: DataKind::Image8,
                shape: train.shape.clone(),
                shift: vec![],
                scale: vec![],
            },
            DataKind::Continuous => {
                let (shift, scale) = train.affine(cfg.scaling);
                VdmSpec {
                    kind: DataKind::Continuous,
                    shape: train.shape.clone(),
                    shift,
                    scale,
                }
            }
        })
    }

    fn build(cfg: &crate::train::RunConfig, spec: &VdmSpec, device: &Device) -> Result<Self> {
        Vdm::new(&cfg.vdm, spec.clone(), device)
    }

    fn binarize(_cfg: &crate::train::RunConfig, _spec: &VdmSpec) -> Option<crate::data::Binarize> {
        None
    }

    /// Several stratified time samples per example (8 for vectors, 2 for images, whose network is
    /// costlier): the held-out number in the progress bar and metrics.jsonl is then steadier.
    fn eval_terms(&self, x: Tensor<2>, rng: &mut Rng) -> Result<ElboTerms> {
        let t_samples = if self.spec.kind == DataKind::Image8 {
            2
        } else {
            8
        };
        let opts = ElboOptions {
            t_steps: (self.cfg.t_steps > 0).then_some(self.cfg.t_steps),
            t_samples,
        };
        let e = self.estimate(x, opts, rng)?;
        Ok(ElboTerms {
            reconstruction: e.recon,
            prior: e.prior,
            layers: vec![("diffusion".into(), e.diffusion)],
        })
    }

    fn loss(&self, x: Tensor<2>, rng: &mut Rng) -> Result<(Tensor<1>, ElboTerms)> {
        let opts = ElboOptions {
            t_steps: (self.cfg.t_steps > 0).then_some(self.cfg.t_steps),
            t_samples: 1,
        };
        let e = self.estimate(x, opts, rng)?;
        let terms = ElboTerms {
            reconstruction: e.recon,
            prior: e.prior,
            layers: vec![("diffusion".into(), e.diffusion)],
        };
        let loss = match self.cfg.objective {
            Objective::Elbo => terms.total().mean(),
            Objective::Simple => e.mse.mean() / self.spec.dim() as f64,
        };
        Ok((loss, terms))
    }
}
