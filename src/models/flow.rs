//! Flow matching (MATH.md M48; Lipman et al. 2022, Liu et al. 2022): the straight path
//! z_t = (1 − t) x + t ε as the forward process, the velocity û = ε − x as the network's output,
//! and conditional flow matching, E_t‖û − (ε − x)‖² with t uniform, as its weighting of the
//! ELBO's integrand, w(λ) = e^{−λ/2}. It is a latent-variable model like the VDM: it reports the
//! same continuous-time ELBO (M28, process invariant) and probability-flow ODE likelihood, and
//! samples by Heun's method on the straight path by default.
//!
//! | setting | value |
//! | --- | --- |
//! | `process` | `linear`: α = sigmoid(−γ/2) = 1 − t, σ = sigmoid(γ/2) = t |
//! | `prediction` | `flow`: û = ε − x |
//! | `objective` | `flow-matching`: w(λ) = e^{−λ/2} (monotone) |
//! | `schedule` | `linear-path` over γ ∈ [−13.3, 13.3]: t uniform in [0.0013, 0.9987] |
//! | `sampler` | `flow-heun`, 50 steps (99 network evaluations) |

use crate::diffusion::weighting::ProposalKind;
use crate::diffusion::{Prediction, Process, ScheduleConfig, ScheduleKind};
use crate::models::vdm::{Objective, VdmConfig};
use crate::sample::{FlowHeun, SamplerKind};

/// Flow matching's settings as a VDM section.
pub fn flow_defaults() -> VdmConfig {
    VdmConfig {
        schedule: ScheduleConfig {
            kind: ScheduleKind::LinearPath,
            gamma_min: -13.3,
            gamma_max: 13.3,
            ..Default::default()
        },
        process: Process::Linear,
        prediction: Prediction::Flow,
        objective: Objective::FlowMatching,
        proposal: ProposalKind::Uniform,
        sampler: SamplerKind::FlowHeun(FlowHeun),
        sample_steps: 50,
        // The plain input (the VDM default has Fourier features; not measured here).
        unet: crate::nn::unet::UNetConfig::default(),
        ..Default::default()
    }
}

super::family::vdm_family! {
    /// A flow-matching model: the straight path, the velocity, the CFM loss (a VDM with the
    /// defaults of [`flow_defaults`]).
    Flow, FlowConfig, flow_defaults
}
