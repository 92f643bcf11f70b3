//! EDM (MATH.md M47; Karras et al. 2022) as a VDM: the variance-exploding process, the
//! preconditioned denoiser D = c_skip x̄ + c_out F(c_in x̄, c_noise) as the network's
//! parameterisation (c_noise enters as γ = 4 c_noise normalised over the schedule's range), the
//! log-normal training distribution of σ (P_mean = −1.2, P_std = 1.2) as the proposal with its
//! loss weight as the weighting, and EDM's Heun sampler on the ρ = 7 grid from σ_max = 80 to
//! σ_min = 0.002. Its ELBO is the VDM's bound of the same network, reported like any other.
//!
//! | setting | value |
//! | --- | --- |
//! | `process` | `variance-exploding`: α = 1, σ = e^{γ/2} |
//! | `prediction` | `edm`: F, with c_skip, c_out, c_in of σ_data = ½ |
//! | `objective`, `proposal` | `edm`: λ(σ) = (σ² + σ_d²)/(σ σ_d)², ln σ ~ N(−1.2, 1.2²) |
//! | `schedule` | `linear-gamma` over γ = 2 ln σ ∈ [2 ln 0.002, 2 ln 80] |
//! | `sampler` | `edm`, 18 steps (35 network evaluations, EDM's CIFAR-10 setting) |

use crate::diffusion::weighting::ProposalKind;
use crate::diffusion::{Prediction, Process, ScheduleConfig, ScheduleKind};
use crate::models::vdm::{Objective, VdmConfig};
use crate::sample::{EdmSampler, SamplerKind, SamplerParams};

/// EDM's σ_min and σ_max.
pub const EDM_SIGMA_MIN: f64 = 0.002;
pub const EDM_SIGMA_MAX: f64 = 80.0;

/// EDM's settings as a VDM section.
pub fn edm_defaults() -> VdmConfig {
    use crate::sample::Configure as _;
    VdmConfig {
        schedule: ScheduleConfig {
            kind: ScheduleKind::LinearGamma,
            gamma_min: 2.0 * EDM_SIGMA_MIN.ln(),
            gamma_max: 2.0 * EDM_SIGMA_MAX.ln(),
            ..Default::default()
        },
        process: Process::VarianceExploding,
        prediction: Prediction::Edm,
        objective: Objective::Edm,
        proposal: ProposalKind::Edm,
        sampler: SamplerKind::Edm(EdmSampler::configure(&SamplerParams::default())),
        sample_steps: 18,
        // The plain input (the VDM default has Fourier features; not measured here).
        unet: crate::nn::unet::UNetConfig::default(),
        ..Default::default()
    }
}

super::family::vdm_family! {
    /// EDM: the preconditioned denoiser, its log-normal σ and loss weight, its sampler (a VDM
    /// with the defaults of [`edm_defaults`]).
    Edm, EdmConfig, edm_defaults
}
