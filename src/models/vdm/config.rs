//! The VDM's settings (its `[vdm]` section): schedule, process, prediction, objective, decoder,
//! network, conditioning and sampling defaults, with what each means when left to the data.

use serde::{Deserialize, Serialize};

use crate::data::DataKind;
use crate::diffusion::elbo::ImageDecoder;
use crate::diffusion::weighting::{ProposalKind, Weighting};
use crate::diffusion::{Prediction, Process, ScheduleConfig, ScheduleKind};
use crate::models::ModelSettings;
use crate::nn::denoiser_mlp::MlpDenoiserConfig;
use crate::nn::unet::UNetConfig;
use crate::sample::SamplerKind;
use crate::{Error, Result};

/// What the model is trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    /// The negative ELBO itself.
    Elbo,
    /// DDPM's L_simple, the unweighted ε-MSE (the ELBO is still what is reported): the weighting
    /// w(λ) = 2/γ'(t(λ)) of the run's schedule (sech(λ/2)/π on the continuous cosine schedule),
    /// not monotone.
    Simple,
    /// Kingma & Gao's sigmoid weighting w(λ) = sigmoid(b − λ), b = `vdm.weighting_shift`:
    /// monotone, so the ELBO of noise-augmented data.
    Sigmoid,
    /// EDM's weighting (its log-normal σ density times its loss weight; not monotone).
    Edm,
    /// Conditional flow matching, E_t‖û − (ε − x)‖² with t uniform on the straight path: the
    /// weighting w(λ) = e^{−λ/2} (M48), monotone.
    FlowMatching,
    /// Chosen from the data when the model is built: L_simple for 8-bit images (the better
    /// samples at equal time, BENCHMARKS.md §8), the ELBO for vectors (the tighter bound).
    #[default]
    Auto,
}

/// The times a sampler visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SampleGrid {
    /// The schedule's: a DDPM table's own steps (diffusers' leading spacing), t_i = i/N on a
    /// continuous schedule.
    #[default]
    Schedule,
    /// t_i = (i/N) t_top whatever the schedule, t_top the largest t with γ(t) ≤ 8 (1 where
    /// the schedule ends below; a DDPM table's last steps reach γ ≈ 20, where ε-prediction's
    /// x̂_0 = (z − σ ε̂)/α divides by α ≈ 5e-5): the grid a distilled student was trained on.
    Uniform,
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
    /// The forward process: variance preserving (VDM, DDPM) or exploding (score models, M35).
    pub process: Process,
    /// What the network outputs; the ELBO is the same quantity whichever is chosen.
    pub prediction: Prediction,
    /// Train the discrete-time bound with this many steps (M27); 0: continuous time (M28).
    pub t_steps: u64,
    /// The training objective: a weighting of the ELBO's integrand over noise levels (M44).
    pub objective: Objective,
    /// The shift b of the sigmoid weighting (`objective = sigmoid`).
    pub weighting_shift: f64,
    /// κ ≥ 0: add κ times the negative ELBO (every term) to an objective other than the ELBO,
    /// the weighting w(λ) + κ (M46): a floor under the weight of every noise level, so the
    /// ends of the schedule, which the bound needs and L_simple never trains, are trained.
    pub elbo_weight: f64,
    /// Where training draws its noise levels (M45): `uniform` in t, `edm` (its log-normal σ), or
    /// `adaptive` to the running loss. Any proposal leaves the objective's estimate unbiased.
    pub proposal: ProposalKind,
    /// Decoder p(x | z_0) of 8-bit images: `softmax` (Kingma et al.) or `bin-mass` (Ho et al.)
    /// over the 256 levels, or `bernoulli` on dynamically binarised images (nats per image,
    /// comparable with a VAE's binarised bound).
    pub decoder: ImageDecoder,
    pub network: NetworkKind,
    pub mlp: MlpDenoiserConfig,
    pub unet: UNetConfig,
    /// Class-conditional: the network takes the data's labels (a class embedding with a null
    /// class), and the ELBO is conditional on the label (M41–M43).
    pub conditional: bool,
    /// Conditional training: the probability that a label is dropped to the null class (M43).
    pub p_uncond: f64,
    /// The sampler of the end of training's grid and of `elbo sample` without `--sampler`.
    pub sampler: SamplerKind,
    /// Its steps (the grid's, and `elbo sample`'s without `--steps`).
    pub sample_steps: usize,
    /// The times sampling visits: the schedule's own, or `uniform` (a distilled student's).
    pub sample_grid: SampleGrid,
    /// Samplers clip x̂_0 of 8-bit images to [−1, 1] at every step (DDPM's `clip_denoised`);
    /// changes samples only, never the bound.
    pub clip_x0: bool,
}

/// The sigmoid weighting's default shift b.
pub const DEFAULT_SHIFT: f64 = 2.0;

/// Steps and batch of the other diffusion models (NCSN, flow matching, EDM): 3,200 of 32 for
/// images, 20,000 of 256 for vectors (the VDM's images train 5,000).
pub fn diffusion_defaults_for(kind: DataKind) -> (u64, usize) {
    match kind {
        DataKind::Image8 => (3200, 32),
        DataKind::Continuous => (20_000, 256),
    }
}

/// The ELBO floor κ of the image default (`objective = auto` on 8-bit images): L_simple + κ ·
/// (−ELBO) trains the low-noise end the 8-bit bound needs without giving up L_simple's samples
/// (M46; BENCHMARKS.md §15: κ = 0.003 dominated plain L_simple, κ = 0.1 ruined the samples).
pub const IMAGE_ELBO_WEIGHT: f64 = 0.003;

/// γ_1 of the image default's schedule: the prior term under a nat on mnist10k (0.9 nats).
pub const IMAGE_GAMMA_MAX: f64 = 6.0;

impl VdmConfig {
    /// The weighting of the training objective (`None` for L_simple, which has its own path).
    pub fn weighting(&self) -> Option<Weighting> {
        match self.objective {
            Objective::Elbo | Objective::Auto => Some(Weighting::Elbo),
            Objective::Simple => None,
            Objective::Sigmoid => Some(Weighting::Sigmoid {
                shift: self.weighting_shift,
            }),
            Objective::Edm => Some(Weighting::Edm),
            Objective::FlowMatching => Some(Weighting::FlowMatching),
        }
    }
}

impl Default for VdmConfig {
    fn default() -> Self {
        VdmConfig {
            schedule: ScheduleConfig::default(),
            schedule_units: 64,
            process: Process::VariancePreserving,
            prediction: Prediction::Eps,
            t_steps: 0,
            objective: Objective::Auto,
            weighting_shift: DEFAULT_SHIFT,
            elbo_weight: 0.0,
            proposal: ProposalKind::Uniform,
            decoder: ImageDecoder::Softmax,
            network: NetworkKind::Auto,
            mlp: MlpDenoiserConfig::default(),
            // The VDM's U-Net sees gated Fourier features (BENCHMARKS.md §15: −0.26 bits/dim at
            // equal time, samples unchanged); the other models' defaults keep the plain input.
            unet: UNetConfig {
                fourier: true,
                ..UNetConfig::default()
            },
            conditional: false,
            p_uncond: 0.1,
            sampler: SamplerKind::Ancestral(crate::sample::Ancestral),
            sample_steps: 200,
            sample_grid: SampleGrid::Schedule,
            clip_x0: true,
        }
    }
}

impl ModelSettings for VdmConfig {
    fn objective_note(&self) -> Option<String> {
        let mut w = match self.weighting() {
            None => "L_simple, the ε-MSE: the weighting 2/γ'(t) of its schedule, not monotone"
                .to_string(),
            Some(Weighting::Elbo) if self.proposal == ProposalKind::Uniform => return None,
            Some(w) => w.describe(),
        };
        if self.elbo_weight > 0.0 && self.weighting() != Some(Weighting::Elbo) {
            w = format!("{w}, plus {} × the ELBO (w(λ) + {})", self.elbo_weight, self.elbo_weight);
        }
        let p = match self.proposal {
            ProposalKind::Uniform => "t uniform",
            ProposalKind::Edm => "EDM's log-normal σ",
            ProposalKind::Adaptive => "adapted to the running loss",
        };
        Some(format!(
            "trained on {w}, noise levels drawn {p}; the bound reported is the plain ELBO"
        ))
    }

    fn binary_images(&self) -> bool {
        self.decoder == ImageDecoder::Bernoulli
    }

    /// Binarised: the Bernoulli decoder; the levels: the softmax decoder (unless bin masses
    /// were chosen).
    fn set_binary_images(&mut self, binary: bool) -> bool {
        if binary {
            self.decoder = ImageDecoder::Bernoulli;
        } else if self.decoder == ImageDecoder::Bernoulli {
            self.decoder = ImageDecoder::Softmax;
        }
        true
    }

    const SIZE_KEYS: &'static [&'static str] = &[
        "mlp.hidden",
        "mlp.blocks",
        "mlp.embed",
        "unet.channels",
        "unet.embed",
        "unet.attention",
        "schedule_units",
    ];

    const DIFFUSION: bool = true;

    /// Sizes that would make a network with no units are refused with the key's name.
    fn validate(&self) -> Result<()> {
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
        if !(0.0..=1.0).contains(&self.p_uncond) {
            return bad("vdm.p_uncond must be a probability in [0, 1]");
        }
        if !self.weighting_shift.is_finite() {
            return bad("vdm.weighting_shift must be a finite number");
        }
        if !(self.elbo_weight >= 0.0 && self.elbo_weight.is_finite()) {
            return bad("vdm.elbo_weight must be a finite number ≥ 0");
        }
        if self.proposal != ProposalKind::Uniform
            && (self.t_steps > 0 || self.schedule.kind == ScheduleKind::Learned)
        {
            return bad(
                "vdm.proposal other than uniform needs the continuous-time bound on a fixed \
                 schedule (vdm.t_steps = 0, a schedule other than learned)",
            );
        }
        Ok(())
    }

    /// Images: 5,000 steps of 32, under 10 minutes end to end on 2 cores (the U-Net step is
    /// costly on a CPU; BENCHMARKS.md §14); vectors: 20,000 of 256.
    fn defaults_for(kind: DataKind) -> (u64, usize) {
        match kind {
            DataKind::Image8 => (5000, 32),
            DataKind::Continuous => diffusion_defaults_for(kind),
        }
    }

    const CHANGEABLE_ON_RESUME: &'static [&'static str] = &["sampler", "sample_steps", "sample_grid", "clip_x0"];

    /// 8-bit images: L_simple with an ELBO floor of [`IMAGE_ELBO_WEIGHT`] (unless
    /// `elbo_weight` is set) on the cosine schedule in continuous time over [γ_min, 6] (γ_1 = 6
    /// unless `gamma_max` is set: the prior term under a nat; BENCHMARKS.md §15); vectors: the
    /// ELBO on linear γ.
    fn resolve_for_data(&mut self, kind: DataKind) {
        let image = kind == DataKind::Image8;
        if self.objective == Objective::Auto {
            self.objective = if image {
                if self.elbo_weight == 0.0 {
                    self.elbo_weight = IMAGE_ELBO_WEIGHT;
                }
                Objective::Simple
            } else {
                Objective::Elbo
            };
        }
        if self.schedule.kind == ScheduleKind::Auto {
            self.schedule.kind = if image {
                if self.schedule.gamma_max == ScheduleConfig::default().gamma_max {
                    self.schedule.gamma_max = IMAGE_GAMMA_MAX;
                }
                ScheduleKind::CosineLogSnr
            } else {
                ScheduleKind::LinearGamma
            };
        }
    }
}
