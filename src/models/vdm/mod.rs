//! The variational diffusion model (MATH.md M25–M30): a hierarchical VAE whose encoder is the
//! fixed forward process, trained on its ELBO, every term visible.
//!
//! | code | math |
//! | --- | --- |
//! | `gamma`, `dgamma` | γ(t) = −log SNR(t), γ'(t) |
//! | `alpha`, `sigma` | α_t, σ_t of the process: √sigmoid(∓γ) (VP) or 1, e^{γ/2} (VE) |
//! | `z_t` | α_t x + σ_t ε |
//! | `eps_hat` | ε̂_θ(z_t; γ_t) |
//! | `recon`, `prior`, `diffusion` | −log p(x\|z_0), KL(q(z_1\|x) ‖ N(0, I)), L_T or L_∞ (M30) |
//!
//! Data enter in their own units: 8-bit images as levels k ∈ {0..255}, scaled inside to
//! x = 2k/255 − 1 and scored by a decoder over the 256 levels (M22: Kingma et al.'s softmax by
//! default, or Ho et al.'s bin masses; `vdm.decoder`), so the bound is
//! on the discrete NLL and bits/dim = −ELBO/(D ln 2); continuous data are standardised inside,
//! x̃ = (x − shift)/scale, and the log-Jacobian Σ log scale is added to the reconstruction term,
//! so the bound is on the density of the data as given (nats, nats/dim).

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng as _;

use crate::data::{DataKind, Dataset, Scaling};
use crate::diffusion::elbo::{
    diffusion_elbo, Decoder, DiffusionEstimate, ElboOptions, ImageDecoder,
};
use crate::diffusion::guidance::ClassGradient;
use crate::diffusion::weighting::{
    edm_proposal, over_proposal, weighted_integrand, AdaptiveState, ProposalKind, Weighting,
};
use crate::diffusion::{
    Cond, Denoiser, NoiseSchedule, Prediction, Process, Schedule, ScheduleKind,
};
use crate::elbo::ElboTerms;
use crate::models::{DiffusionModel, LatentVariableModel, Model, ModelSettings, SampleOptions};
use crate::nn::denoiser_mlp::MlpDenoiser;
use crate::nn::monotone::LearnedSchedule;
use crate::nn::unet::UNet;
use crate::rng::{randn, Rng};
use crate::sample::driver::{DiffusionSource, Drawn, Plan};
use crate::sample::SamplerKind;
use crate::{Error, Result};

mod config;
pub use config::{
    diffusion_defaults_for, NetworkKind, Objective, SampleGrid, VdmConfig, IMAGE_ELBO_WEIGHT,
    IMAGE_GAMMA_MAX,
};

/// What the VDM learned about its data before training: its data space.
pub type VdmSpec = crate::data::DataSpace;

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
    /// The adaptive proposal's running state (`vdm.proposal = adaptive`; saved with each
    /// checkpoint through [`Model::train_state`]).
    #[module(skip)]
    pub adaptive: AdaptiveState,
}

impl Vdm {
    pub fn new(cfg: &VdmConfig, spec: VdmSpec, device: &Device) -> Result<Self> {
        let d = spec.dim();
        if d == 0 {
            return Err(Error::Config("the data have no dimensions".into()));
        }
        cfg.validate()?;
        let mut cfg = cfg.clone();
        cfg.resolve_for_data(spec.kind);
        let cfg = &cfg;
        let fixed = FixedSchedule(Arc::from(cfg.schedule.fixed()?));
        let classes = spec.classes;
        // Images ([C, H, W], discrete or dequantised) → U-Net; vectors → MLP; unless named.
        let net = match (cfg.network, spec.shape.as_slice()) {
            (NetworkKind::Mlp, _) => Network::Mlp(MlpDenoiser::new(d, &cfg.mlp, classes, device)),
            (_, [c, h, w]) => Network::Unet(UNet::new([*c, *h, *w], &cfg.unet, classes, device)),
            (NetworkKind::Unet, s) => {
                return Err(Error::Config(format!(
                    "vdm.network = unet needs image data [C, H, W]; these have shape {s:?}"
                )))
            }
            (NetworkKind::Auto, _) => Network::Mlp(MlpDenoiser::new(d, &cfg.mlp, classes, device)),
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
            adaptive: AdaptiveState::default(),
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

    fn row(&self, v: &[f32], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), device)
    }

    /// Binarised images (the Bernoulli decoder): data in {0, 1}, model space {−1, 1}.
    pub fn binary(&self) -> bool {
        self.spec.kind == DataKind::Image8 && self.cfg.decoder == ImageDecoder::Bernoulli
    }

    /// Data units → model space: x = 2k/255 − 1 (images, M22), 2b − 1 (binarised images) or
    /// (x − shift)/scale.
    pub fn to_model_space(&self, x: Tensor<2>) -> Tensor<2> {
        if self.binary() {
            return x * 2.0 - 1.0;
        }
        match self.spec.kind {
            DataKind::Image8 => x * (2.0 / 255.0) - 1.0,
            DataKind::Continuous => {
                let dev = x.device();
                (x - self.row(&self.spec.shift, &dev)) / self.row(&self.spec.scale, &dev)
            }
        }
    }

    /// Model space → data units (images: the nearest of the 256 levels; binarised images: the
    /// grey level in [0, 1], shown as a pixel probability is).
    pub fn to_data_space(&self, x: Tensor<2>) -> Tensor<2> {
        if self.binary() {
            return ((x + 1.0) * 0.5).clamp(0.0, 1.0);
        }
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

    /// The decoder p(x | z_0) of this model's data.
    pub fn decoder_kind(&self) -> Decoder {
        match self.spec.kind {
            DataKind::Image8 => self.cfg.decoder.decoder(),
            DataKind::Continuous => Decoder::Gaussian,
        }
    }

    /// The estimate for a batch in data units, with the Jacobian in the reconstruction term.
    pub fn estimate(
        &self,
        x: Tensor<2>,
        opts: ElboOptions,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<DiffusionEstimate> {
        let mut e = diffusion_elbo(
            self,
            &self.schedule(),
            self.to_model_space(x),
            self.decoder_kind(),
            opts,
            cond,
            rng,
        )?;
        if self.spec.kind == DataKind::Continuous {
            e.recon = e.recon + self.log_jacobian();
        }
        Ok(e)
    }

    /// The parity block: one time per example drawn uniformly, ε and ε_0, and the terms this
    /// model's estimator computes from exactly them (with the Jacobian, as [`Vdm::estimate`]).
    pub fn parity_block(
        &self,
        x: Tensor<2>,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<Vec<(String, Tensor<2>)>> {
        let dev = x.device();
        let [b, d] = x.dims();
        let t: Vec<f64> = (0..b).map(|_| rng.gen::<f64>()).collect();
        let eps = randn(rng, [b, d], &dev);
        let eps0 = randn(rng, [b, d], &dev);
        let decoder = self.decoder_kind();
        let mut e = crate::diffusion::elbo::diffusion_elbo_given(
            self,
            &self.schedule(),
            self.to_model_space(x),
            decoder,
            None,
            crate::diffusion::elbo::ElboNoise {
                times: t.clone(),
                weights: None,
                eps: eps.clone(),
                eps0: (decoder != Decoder::Gaussian).then(|| eps0.clone()),
            },
            cond,
        )?;
        if self.spec.kind == DataKind::Continuous {
            e.recon = e.recon + self.log_jacobian();
        }
        let rows = |v: Vec<f32>, c: usize| Tensor::<2>::from_data(TensorData::new(v, [b, c]), &dev);
        let mut out = vec![
            (
                "t".to_string(),
                rows(t.iter().map(|&v| v as f32).collect(), 1),
            ),
            ("eps".to_string(), eps),
            ("eps0".to_string(), eps0),
        ];
        out.extend(crate::models::term_columns(Self::terms(e)));
        Ok(out)
    }

    fn terms(e: DiffusionEstimate) -> ElboTerms {
        ElboTerms {
            reconstruction: e.recon,
            prior: e.prior,
            layers: vec![("diffusion".into(), e.diffusion)],
        }
    }

    /// Training's proposal of noise levels as a density of t (`None`: uniform t).
    fn training_proposal(&self) -> Option<Arc<crate::diffusion::elbo::TimeProposal>> {
        match self.cfg.proposal {
            ProposalKind::Uniform => None,
            ProposalKind::Edm => edm_proposal(self.fixed.0.as_ref()).map(Arc::new),
            ProposalKind::Adaptive => self.adaptive.proposal().map(Arc::new),
        }
    }

    fn train_opts(&self, t_samples: usize) -> ElboOptions {
        ElboOptions {
            t_steps: (self.cfg.t_steps > 0).then_some(self.cfg.t_steps),
            t_samples,
            proposal: None,
        }
    }

    /// The γ grid of a walk of `steps` steps on this model's schedule (high noise to low): the
    /// table's own steps for a DDPM table, t_i = i/steps otherwise or with `vdm.sample_grid =
    /// uniform` (a distilled student's).
    pub fn gammas(&self, steps: usize) -> Vec<f64> {
        let sched = self.schedule();
        let (table, top) = match self.cfg.sample_grid {
            SampleGrid::Schedule => (sched.table_steps(), 1.0),
            SampleGrid::Uniform => (None, self.uniform_top()),
        };
        crate::sample::time_grid(table, steps)
            .iter()
            .map(|&t| sched.gamma_f64(t * top))
            .collect()
    }

    /// The top t_top of the uniform grid (`SampleGrid::Uniform`): 1 where γ(1) ≤ 8, else the
    /// t where γ(t) = 8 (bisection; γ is increasing).
    pub fn uniform_top(&self) -> f64 {
        const CAP: f64 = 8.0;
        let sched = self.schedule();
        if sched.gamma_f64(1.0) <= CAP {
            return 1.0;
        }
        let (mut lo, mut hi) = (0.0f64, 1.0f64);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if sched.gamma_f64(mid) <= CAP {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The γ grid a sampler walks in `steps` steps: its own spacing between γ(1) and γ(0)
    /// where it has one (EDM's), the schedule's otherwise.
    pub fn walk_gammas(&self, sampler: &SamplerKind, steps: usize) -> Vec<f64> {
        let sched = self.schedule();
        sampler
            .sampler()
            .grid(sched.gamma_f64(1.0), sched.gamma_f64(0.0), steps)
            .unwrap_or_else(|| self.gammas(steps))
    }

    /// `n` samples by the model's default sampler (ancestral, `vdm.sample_steps` steps), in
    /// data units.
    fn sample_default(&self, n: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        let plan = DiffusionSource::plan(self, None, None)?;
        crate::sample::driver::walk(self, self, &plan, n, None, rng, &mut |_| {})
    }
}

impl Denoiser for Vdm {
    fn prediction(&self) -> Prediction {
        self.cfg.prediction
    }

    fn process(&self) -> Process {
        self.cfg.process
    }

    fn x0_bounds(&self) -> Option<(f64, f64)> {
        (self.spec.kind == DataKind::Image8 && self.cfg.clip_x0).then_some((-1.0, 1.0))
    }

    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>, cond: Cond) -> Tensor<2> {
        // The network sees γ normalised to [0, 1] over the configured range (for EDM's
        // preconditioning an affine map of its c_noise = ¼ ln σ̄ = γ/8, M47); under the exploding
        // process z_t is scaled to unit variance first (z_t/√(1 + σ²), or EDM's c_in =
        // 1/√(σ̄² + σ_d²) with its own prediction); VP and the straight path need no scaling
        // (their z_t has variance between ½ and 1 for unit-variance data).
        let (lo, hi) = (self.cfg.schedule.gamma_min, self.cfg.schedule.gamma_max);
        let fourier = self.cfg.unet.fourier && self.cfg.unet.fourier_gate;
        // The noise's standard deviation in the units the network sees (for the Fourier
        // features' gate).
        let (z_in, noise_std) = match (self.cfg.process, self.cfg.prediction) {
            (Process::VariancePreserving | Process::Linear, _) => {
                let std = fourier.then(|| (self.cfg.process.log_sigma2(gamma.clone()) * 0.5).exp());
                (z_t, std)
            }
            (Process::VarianceExploding, p) => {
                let (_, sigma) = Process::VarianceExploding.alpha_sigma(gamma.clone());
                let d2 = if p == Prediction::Edm {
                    crate::diffusion::param::EDM_SIGMA_DATA.powi(2)
                } else {
                    1.0
                };
                let scale = (sigma.clone().square() + d2).sqrt();
                let b = sigma.dims()[0];
                let std = fourier.then(|| (sigma / scale.clone()).reshape([b]));
                (z_t / scale, std)
            }
        };
        let u = (gamma - lo) / (hi - lo);
        match &self.net {
            Network::Mlp(m) => m.forward(z_in, u, cond),
            Network::Unet(m) => m.forward(z_in, u, cond, noise_std),
        }
    }
}

impl LatentVariableModel for Vdm {
    fn elbo(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<ElboTerms> {
        Ok(Self::terms(self.estimate(
            x,
            self.train_opts(1),
            cond,
            rng,
        )?))
    }

    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        self.sample_default(n, rng)
    }
}

impl DiffusionModel for Vdm {
    fn estimate(
        &self,
        x: Tensor<2>,
        opts: ElboOptions,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<DiffusionEstimate> {
        Vdm::estimate(self, x, opts, cond, rng)
    }

    fn gamma_at(&self, t: f64) -> f64 {
        self.schedule().gamma_f64(t)
    }

    fn table_steps(&self) -> Option<usize> {
        self.schedule().table_steps()
    }

    fn decoder(&self) -> Decoder {
        self.decoder_kind()
    }

    fn classes(&self) -> usize {
        self.spec.classes
    }

    /// The ODE from γ(0) to γ(1) with the model's prior. 8-bit images are dequantised
    /// uniformly within their level's bin (Δ = 2/255 in model space; Song et al. 2021), so
    /// −log p(k + u) − D log Δ bounds the discrete NLL as the ELBO does; continuous data add the
    /// standardisation's log-Jacobian Σ log scale, as the ELBO's reconstruction term does.
    fn ode_nll(
        &self,
        x: Tensor<2>,
        cond: Cond,
        opts: &crate::diffusion::ode::OdeOptions,
        rng: &mut Rng,
    ) -> Result<crate::diffusion::ode::OdeNll> {
        if self.binary() {
            return Err(Error::Config(
                "the ODE likelihood is a density over continuous values; this run models \
                 binarised images with a Bernoulli decoder (use the ELBO, --method elbo)"
                    .into(),
            ));
        }
        let sched = self.schedule();
        let (g0, g1) = (sched.gamma_f64(0.0), sched.gamma_f64(1.0));
        match self.spec.kind {
            DataKind::Image8 => crate::diffusion::ode::image8_nll(self, x, g0, g1, cond, opts, rng),
            DataKind::Continuous => {
                let offset = self.log_jacobian();
                let xm = self.to_model_space(x);
                let r = crate::diffusion::ode::log_density(self, xm, g0, g1, cond, opts, rng)?;
                Ok(crate::diffusion::ode::OdeNll {
                    nll: r.log_p.iter().map(|lp| offset - lp).collect(),
                    se: r.se,
                    nfe: r.nfe,
                    solver_err: r.solver_err,
                })
            }
        }
    }
}

impl Model for Vdm {
    type Config = VdmConfig;
    type Spec = VdmSpec;

    fn spec(cfg: &VdmConfig, train: &Dataset, scaling: Scaling) -> Result<VdmSpec> {
        let classes = if cfg.conditional {
            if train.labels.is_none() {
                return Err(Error::Config(format!(
                    "vdm.conditional needs labelled data; '{}' has no labels",
                    train.spec
                )));
            }
            crate::data::DataSpace::classes_of(train)
        } else {
            0
        };
        Ok(crate::data::DataSpace::of(train, scaling, classes))
    }

    fn build(cfg: &VdmConfig, spec: &VdmSpec, device: &Device) -> Result<Self> {
        Vdm::new(cfg, spec.clone(), device)
    }

    /// The U-Net's step (tens of milliseconds) splits well over threads; the MLP's does not.
    fn shards_pay(&self) -> bool {
        matches!(self.net, Network::Unet(_))
    }

    fn binarize(cfg: &VdmConfig, spec: &VdmSpec) -> Option<crate::data::Binarize> {
        (spec.kind == DataKind::Image8 && cfg.decoder == ImageDecoder::Bernoulli)
            .then_some(crate::data::Binarize::Dynamic)
    }

    /// Several stratified time samples per example (8 for vectors, 2 for images, whose network is
    /// costlier): the held-out number in the progress bar and metrics.jsonl is then steadier.
    fn eval_terms(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<ElboTerms> {
        let t_samples = if self.spec.kind == DataKind::Image8 {
            2
        } else {
            8
        };
        Ok(Self::terms(self.estimate(
            x,
            self.train_opts(t_samples),
            cond,
            rng,
        )?))
    }

    /// The objective on a batch; a conditional model first drops each label to the null class
    /// with probability p_uncond (M43), so one network learns both ε(z, c) and ε(z, ∅).
    fn loss(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<(Tensor<1>, ElboTerms)> {
        let (l, t, _) = self.loss_draws(x, cond, rng)?;
        Ok((l, t))
    }

    /// The objective on a batch: the ELBO's integrand at noise levels drawn from the proposal,
    /// weighted by w(λ)/p (M44–M45). L_simple and the ELBO with uniform t are the original
    /// estimators. A conditional model first drops each label to the null class with
    /// probability p_uncond (M43), so one network learns both ε(z, c) and ε(z, ∅).
    fn loss_draws(
        &self,
        x: Tensor<2>,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<(Tensor<1>, ElboTerms, Vec<(f64, f64)>)> {
        let dropped: Option<Vec<u32>> = match cond {
            Some(l) if self.spec.classes > 0 && self.cfg.p_uncond > 0.0 => Some(
                l.iter()
                    .map(|&y| {
                        if rng.gen::<f64>() < self.cfg.p_uncond {
                            self.spec.classes as u32
                        } else {
                            y
                        }
                    })
                    .collect(),
            ),
            _ => None,
        };
        let cond = dropped.as_deref().or(cond);
        let mut opts = self.train_opts(1);
        opts.proposal = self.training_proposal();
        let e = self.estimate(x, opts, cond, rng)?;
        let dim = self.spec.dim() as f64;
        let weighting = self.cfg.weighting();
        let adaptive = self.cfg.proposal == ProposalKind::Adaptive;
        // The weighted integrand of each draw (before 1/p).
        let sched = self.schedule();
        let mut integrand = weighted_integrand(&e, weighting, |t| sched.gamma_f64(t));
        // (M46) The ELBO floor κ: w(λ) + κ, and κ times the endpoint terms.
        let kappa = match weighting {
            Some(Weighting::Elbo) => 0.0,
            _ => self.cfg.elbo_weight,
        };
        let n_draws = e.times.len();
        if kappa > 0.0 {
            integrand = integrand + e.samples.clone().reshape([n_draws]) * kappa;
        }
        let ends = (e.recon.clone() + e.prior.clone()) * kappa;
        let draws = if adaptive {
            let v = crate::elbo::to_f64(integrand.clone().detach())?;
            e.times.iter().copied().zip(v).collect()
        } else {
            vec![]
        };
        let iw = e.weights.clone();
        let terms = Self::terms(e);
        let loss = match weighting {
            // The ELBO (importance-weighted where the proposal is not uniform: `terms` is).
            Some(Weighting::Elbo) => terms.total().mean(),
            _ if kappa > 0.0 => {
                (over_proposal(integrand, iw.as_deref()).mean() + ends.mean()) / dim
            }
            _ => over_proposal(integrand, iw.as_deref()).mean() / dim,
        };
        Ok((loss, terms, draws))
    }

    fn learn(&mut self, draws: &[(f64, f64)]) {
        if self.cfg.proposal == ProposalKind::Adaptive {
            self.adaptive.update(draws);
        }
    }

    fn train_state(&self) -> Option<serde_json::Value> {
        (self.cfg.proposal == ProposalKind::Adaptive)
            .then(|| serde_json::to_value(&self.adaptive).ok())
            .flatten()
    }

    fn set_train_state(&mut self, state: &serde_json::Value) -> Result<()> {
        if self.cfg.proposal == ProposalKind::Adaptive {
            self.adaptive = serde_json::from_value(state.clone())
                .map_err(|e| Error::Config(format!("the adaptive proposal's state: {e}")))?;
        }
        Ok(())
    }

    fn size_keys(&self) -> &'static [&'static str] {
        match &self.net {
            Network::Unet(_) => &["unet.channels", "unet.embed", "unet.attention"],
            Network::Mlp(_) => &["mlp.hidden", "mlp.blocks", "mlp.embed"],
        }
    }

    fn activations_per_example(&self) -> f64 {
        match &self.net {
            Network::Unet(u) => u.activations_per_example(),
            Network::Mlp(_) => crate::models::dense_activations(self),
        }
    }

    fn diffusion(&self) -> Option<&dyn DiffusionModel> {
        Some(self)
    }

    fn vdm(&self) -> Option<&Vdm> {
        Some(self)
    }

    /// 100 ancestral steps (on mnist10k DDIM's 50 deterministic steps drew FD-classifier 222
    /// where these draw 107, BENCHMARKS.md §8); another default sampler takes its own steps.
    fn preview_steps(&self) -> Option<usize> {
        matches!(self.cfg.sampler, SamplerKind::Ancestral(_)).then_some(100)
    }

    fn parity(
        &self,
        x: Tensor<2>,
        cond: Cond,
        rng: &mut Rng,
    ) -> Option<Result<Vec<(String, Tensor<2>)>>> {
        Some(self.parity_block(x, cond, rng))
    }

    fn draw_chunk_rows(&self) -> usize {
        DiffusionSource::chunk_rows(self)
    }

    fn draw_work(&self, n: usize, opts: &SampleOptions) -> Result<u64> {
        crate::sample::driver::work(self, n, opts)
    }

    fn draw(
        &self,
        n: usize,
        opts: &SampleOptions,
        classifier: Option<&dyn ClassGradient>,
        tick: &(dyn Fn() + Sync),
    ) -> Result<Drawn> {
        crate::sample::driver::draw(self, n, opts, classifier, tick)
    }
}

impl DiffusionSource for Vdm {
    /// Any sampler but annealed Langevin (an ncsn run's), over `steps` of the schedule's
    /// grid or the sampler's own (default `vdm.sample_steps`); `vdm.sampler` by default.
    fn plan(&self, sampler: Option<&SamplerKind>, steps: Option<usize>) -> Result<Plan> {
        let sampler = sampler.unwrap_or(&self.cfg.sampler).clone();
        if let SamplerKind::AnnealedLangevin(_) = sampler {
            return Err(Error::Config(
                "--sampler annealed-langevin samples an ncsn run at its noise levels; a vdm \
                 run's Langevin sampler is pc (ancestral predictor, Langevin corrector)"
                    .into(),
            ));
        }
        let steps = steps.unwrap_or(self.cfg.sample_steps).max(1);
        Ok(Plan {
            gammas: self.walk_gammas(&sampler, steps),
            sampler,
        })
    }

    fn prior_var(&self) -> f64 {
        self.cfg.process.prior_var(self.schedule().gamma_f64(1.0))
    }

    fn data_space(&self) -> &crate::data::DataSpace {
        &self.spec
    }

    fn to_data(&self, x0: Tensor<2>) -> Tensor<2> {
        self.to_data_space(x0)
    }

    fn device(&self) -> Device {
        Vdm::device(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::ScheduleConfig;
    use crate::rng::{randn, seeded};

    #[test]
    fn auto_settings_follow_the_data_and_explicit_ones_are_kept() {
        // Images: L_simple with the ELBO floor, the cosine log-SNR schedule up to γ_1 = 6.
        let mut img = VdmConfig::default();
        img.resolve_for_data(DataKind::Image8);
        assert_eq!(
            (img.objective, img.schedule.kind),
            (Objective::Simple, ScheduleKind::CosineLogSnr)
        );
        assert_eq!(
            (img.elbo_weight, img.schedule.gamma_min, img.schedule.gamma_max),
            (IMAGE_ELBO_WEIGHT, -13.3, IMAGE_GAMMA_MAX)
        );
        assert!(img.unet.fourier && img.unet.fourier_gate);
        // A floor or an end that was set is kept.
        let mut set = VdmConfig {
            elbo_weight: 0.05,
            schedule: ScheduleConfig {
                gamma_max: 4.0,
                ..Default::default()
            },
            ..Default::default()
        };
        set.resolve_for_data(DataKind::Image8);
        assert_eq!((set.elbo_weight, set.schedule.gamma_max), (0.05, 4.0));
        let mut vec = VdmConfig::default();
        vec.resolve_for_data(DataKind::Continuous);
        assert_eq!(
            (vec.objective, vec.schedule.kind),
            (Objective::Elbo, ScheduleKind::LinearGamma)
        );
        let mut chosen = VdmConfig {
            objective: Objective::Elbo,
            schedule: ScheduleConfig {
                kind: ScheduleKind::LinearGamma,
                ..Default::default()
            },
            ..Default::default()
        };
        chosen.resolve_for_data(DataKind::Image8);
        assert_eq!(
            (chosen.objective, chosen.schedule.kind),
            (Objective::Elbo, ScheduleKind::LinearGamma)
        );
        // A model built from unresolved settings resolves them itself.
        let spec = VdmSpec::unscaled(2);
        let m = Vdm::new(&VdmConfig::default(), spec, &Device::flex()).unwrap();
        assert_eq!(m.cfg.objective, Objective::Elbo);
    }

    #[test]
    fn the_uniform_grid_stops_where_gamma_reaches_eight() {
        // A DDPM cosine table reaches γ ≈ 20 at t = 1: the uniform grid's top is where γ = 8,
        // and its first time is that top; a schedule ending below 8 keeps t = 1.
        let dev = Device::flex();
        let mut cfg = VdmConfig::default();
        cfg.mlp.hidden = 8;
        cfg.schedule.kind = ScheduleKind::Cosine;
        cfg.objective = Objective::Simple;
        cfg.sample_grid = SampleGrid::Uniform;
        let m = Vdm::new(&cfg, VdmSpec::unscaled(2), &dev).unwrap();
        assert!(m.schedule().gamma_f64(1.0) > 15.0);
        let top = m.uniform_top();
        assert!(top > 0.5 && top < 1.0, "{top}");
        assert!((m.schedule().gamma_f64(top) - 8.0).abs() < 0.05);
        let g = m.gammas(4);
        assert!((g[0] - 8.0).abs() < 0.05, "{g:?}");
        assert!(g.windows(2).all(|w| w[0] > w[1]), "{g:?}");
        cfg.schedule.kind = ScheduleKind::LinearGamma;
        cfg.schedule.gamma_max = 5.0;
        let m = Vdm::new(&cfg, VdmSpec::unscaled(2), &dev).unwrap();
        assert_eq!(m.uniform_top(), 1.0);
    }

    #[test]
    fn simple_objective_is_the_eps_mse_and_the_elbo_objective_is_the_reported_bound() {
        // Same weights, same noise: the ELBO objective's loss is the mean of the terms it reports,
        // and L_simple is ‖ε − ε̂‖²/D of those same draws (so switching the objective changes
        // what is minimised, never what is reported).
        let dev = Device::flex();
        let spec = VdmSpec::unscaled(3);
        let mut cfg = VdmConfig::default();
        cfg.mlp.hidden = 16;
        dev.seed(1);
        let m = Vdm::new(&cfg, spec, &dev).unwrap();
        let x = randn(&mut seeded(2), [8, 3], &dev);
        let (l_elbo, t_elbo) = m.loss(x.clone(), None, &mut seeded(3)).unwrap();
        let mut simple = m.clone();
        simple.cfg.objective = Objective::Simple;
        let (l_simple, t_simple) = simple.loss(x.clone(), None, &mut seeded(3)).unwrap();
        let v = |t: Tensor<1>| crate::elbo::to_f64(t).unwrap();
        assert_eq!(
            v(t_elbo.total()),
            v(t_simple.total()),
            "same draws, same bound"
        );
        let mean_total = v(t_elbo.total()).iter().sum::<f64>() / 8.0;
        assert!((v(l_elbo.clone())[0] - mean_total).abs() < 1e-4 * mean_total.abs());
        let e = m
            .estimate(x.clone(), m.train_opts(1), None, &mut seeded(3))
            .unwrap();
        let mse = v(e.mse).iter().sum::<f64>() / (8.0 * 3.0);
        assert!((v(l_simple.clone())[0] - mse).abs() < 1e-5 * mse.max(1.0), "{mse}");
        // The ELBO floor κ (M46) adds κ × the mean negative ELBO per dimension, on the same
        // draws; on the ELBO objective itself it changes nothing.
        let mut floored = simple.clone();
        floored.cfg.elbo_weight = 0.25;
        let (l_floor, _) = floored.loss(x.clone(), None, &mut seeded(3)).unwrap();
        let want = v(l_simple)[0] + 0.25 * mean_total / 3.0;
        assert!((v(l_floor)[0] - want).abs() < 1e-5 * want.abs(), "{want}");
        let mut elbo_floored = m.clone();
        elbo_floored.cfg.elbo_weight = 0.25;
        let (l_ef, _) = elbo_floored.loss(x, None, &mut seeded(3)).unwrap();
        assert_eq!(v(l_ef), v(l_elbo));
    }
}
