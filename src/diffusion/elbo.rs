//! The diffusion ELBO of any [`Denoiser`] under any schedule and process (MATH.md M27–M30):
//! reconstruction + prior + diffusion, per example, in nats, in model space.
//!
//! | code | math |
//! | --- | --- |
//! | `recon` | −log p(x \| z_0) (M22 for 8-bit data, Gaussian otherwise) |
//! | `prior` | KL(q(z_1 \| x) ‖ p(z_1)) |
//! | `diffusion` | L_T (M27) or L_∞ (M28) |

use burn::tensor::Tensor;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::{eps_hat, repeat_labels, Cond, Denoiser, Schedule};
use crate::dist::discretized::{bin_mass_nll, softmax_nll};
use crate::dist::LOG_2PI;
use crate::rng::{randn, Rng};
use crate::Result;

/// The decoder p(x | z_0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// 8-bit levels, x = 2k/255 − 1: the Gaussian mass of each level's bin (M22, Ho et al.).
    BinMass256,
    /// 8-bit levels: a softmax over the 256 levels (Kingma et al.).
    Softmax256,
    /// Continuous: N(x; z_0/α_0, σ_0²/α_0²).
    Gaussian,
}

/// The decoder of 8-bit data, as a configuration choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ImageDecoder {
    /// Kingma et al. (2021): softmax over the levels with logits −½ (z_0/α_0 − x_k)² e^{−γ_0}.
    #[default]
    Softmax,
    /// Ho et al. (2020): the Gaussian mass of each level's bin (M22).
    BinMass,
}

impl ImageDecoder {
    pub fn decoder(self) -> Decoder {
        match self {
            ImageDecoder::Softmax => Decoder::Softmax256,
            ImageDecoder::BinMass => Decoder::BinMass256,
        }
    }
}

impl std::fmt::Display for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decoder::BinMass256 => "bin-mass decoder over 256 levels (Ho et al.)",
            Decoder::Softmax256 => "softmax decoder over 256 levels (Kingma et al.)",
            Decoder::Gaussian => "Gaussian decoder",
        })
    }
}

/// How to estimate the bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElboOptions {
    /// `Some(T)`: the discrete-time bound with T steps (M27); `None`: continuous time (M28).
    pub t_steps: Option<u64>,
    /// Time samples per example (stratified; antithetic across the batch).
    pub t_samples: usize,
}

/// A per-example estimate of the negative ELBO, in nats, in model space (no Jacobian).
pub struct DiffusionEstimate {
    /// −log p(x | z_0), `[B]`.
    pub recon: Tensor<1>,
    /// KL(q(z_1 | x) ‖ p(z_1)), `[B]`.
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

/// Stratified, antithetic times: row (b, j) of B examples × N samples at (u + (j·B + b)/(B·N))
/// mod 1, so each example's N times are spread over N strata and the batch covers [0, 1) evenly
/// (M28); with `t_steps` = T, rounded up to the grid {1/T, …, 1} (M27).
pub fn stratified_times(b: usize, n: usize, t_steps: Option<u64>, rng: &mut Rng) -> Vec<f64> {
    let rows = b * n;
    let u: f64 = rng.gen();
    let mut times = vec![0.0; rows];
    for bi in 0..b {
        for j in 0..n {
            times[bi * n + j] = (u + (j * b + bi) as f64 / rows as f64).fract();
        }
    }
    if let Some(tt) = t_steps.filter(|&t| t > 0) {
        let tf = tt as f64;
        for v in times.iter_mut() {
            *v = ((*v * tf).ceil().max(1.0)) / tf;
        }
    }
    times
}

/// (M30) The negative ELBO of a denoiser under a schedule, per example, for a model-space batch
/// `x` `[B, D]` (with B labels in `cond`, or none): reconstruction + prior + diffusion (M27 with
/// T steps, or M28). The process (variance preserving or exploding) is the denoiser's.
pub fn diffusion_elbo<D: Denoiser + ?Sized>(
    den: &D,
    sched: &Schedule,
    x: Tensor<2>,
    decoder: Decoder,
    opts: ElboOptions,
    cond: Cond,
    rng: &mut Rng,
) -> Result<DiffusionEstimate> {
    let device = x.device();
    let process = den.process();
    let [b, d] = x.dims();
    let n = opts.t_samples.max(1);
    let rows = b * n;
    let t_steps = opts.t_steps.filter(|&t| t > 0);
    let times = stratified_times(b, n, t_steps, rng);

    // Diffusion term on the B·N rows.
    let x_rep = x
        .clone()
        .unsqueeze_dim::<3>(1)
        .repeat_dim(1, n)
        .reshape([rows, d]);
    let labels = repeat_labels(cond, n);
    let eps = randn(rng, [rows, d], &device);
    let (gamma, dgamma) = sched.gamma(&times, &device);
    let (alpha, sigma) = process.alpha_sigma(gamma.clone());
    let z_t = x_rep * alpha + eps.clone() * sigma;
    let e_hat = eps_hat(den, z_t, gamma, labels.as_deref());
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

    // Endpoints. The decoder's mean is z_0/α_0 = x + e^{γ_0/2} ε_0 whatever the process.
    let (g0, g1) = sched.endpoints(&device);
    let eps0 = match decoder {
        Decoder::Gaussian => None,
        _ => Some(randn(rng, [b, d], &device)),
    };
    let recon = decoder_nll(x.clone(), eps0, g0, decoder);
    let prior = process.prior_kl(x, g1);
    Ok(DiffusionEstimate {
        recon,
        prior,
        diffusion,
        samples,
        times,
        mse,
    })
}

/// −log p(x | z_0) per example, `[B]`, for z_0/α_0 = x + e^{γ_0/2} ε_0 with the draw `eps0`
/// `[B, D]` (the Gaussian decoder needs none: its expectation over ε_0 is exact).
pub fn decoder_nll(
    x: Tensor<2>,
    eps0: Option<Tensor<2>>,
    gamma0: Tensor<1>,
    decoder: Decoder,
) -> Tensor<1> {
    let [b, d] = x.dims();
    let mean = |eps0: Option<Tensor<2>>| {
        let s = (gamma0.clone() * 0.5).exp().unsqueeze_dim::<2>(1); // σ_0/α_0
        match eps0 {
            Some(e) => x.clone() + e * s,
            None => x.clone(),
        }
    };
    match decoder {
        Decoder::BinMass256 => bin_mass_nll(x.clone(), mean(eps0), gamma0),
        Decoder::Softmax256 => softmax_nll(x.clone(), mean(eps0), gamma0),
        // −log N(x; z_0/α_0, s²) with z_0/α_0 = x + s ε_0: its residual is exactly s ε_0, so its
        // expectation over ε_0 is ½ D (log 2π + γ_0 + 1) (log s² = γ_0) whatever x is: computed
        // exactly rather than sampled (no Monte-Carlo noise in this term).
        Decoder::Gaussian => (gamma0 + LOG_2PI + 1.0).repeat_dim(0, b) * (0.5 * d as f64),
    }
}
