//! The diffusion ELBO of any [`Denoiser`] under any schedule and process (MATH.md M27–M30):
//! reconstruction + prior + diffusion, per example, in nats, in model space.
//!
//! | code | math |
//! | --- | --- |
//! | `recon` | −log p(x \| z_0) (M22 for 8-bit data, Gaussian otherwise) |
//! | `prior` | KL(q(z_1 \| x) ‖ p(z_1)) |
//! | `diffusion` | L_T (M27) or L_∞ (M28) |

use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};
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
    /// Binarised images, x ∈ {−1, 1}: the softmax decoder over these two levels, a Bernoulli
    /// with logit 2 (z_0/α_0) e^{−γ_0}.
    Bernoulli,
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
    /// Binarised images: Bernoulli p(x | z_0) with logit 2 (z_0/α_0) e^{−γ_0} (the softmax
    /// decoder over the two levels −1, 1); the bound is in nats per binarised image, comparable
    /// with a VAE's on the same binarisation.
    Bernoulli,
}

impl ImageDecoder {
    pub fn decoder(self) -> Decoder {
        match self {
            ImageDecoder::Softmax => Decoder::Softmax256,
            ImageDecoder::BinMass => Decoder::BinMass256,
            ImageDecoder::Bernoulli => Decoder::Bernoulli,
        }
    }
}

impl std::fmt::Display for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decoder::BinMass256 => "bin-mass decoder over 256 levels (Ho et al.)",
            Decoder::Softmax256 => "softmax decoder over 256 levels (Kingma et al.)",
            Decoder::Gaussian => "Gaussian decoder",
            Decoder::Bernoulli => "Bernoulli decoder on binarised pixels (two-level softmax)",
        })
    }
}

/// How to estimate the bound.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ElboOptions {
    /// `Some(T)`: the discrete-time bound with T steps (M27); `None`: continuous time (M28).
    pub t_steps: Option<u64>,
    /// Time samples per example (stratified; antithetic across the batch).
    pub t_samples: usize,
    /// Continuous time only: draw t from this density instead of uniformly and weight each
    /// sample by 1/p(t) (importance sampling; the estimate stays unbiased for any proposal).
    pub proposal: Option<Arc<TimeProposal>>,
}

/// A piecewise-constant density of t over K equal bins of [0, 1], for importance-sampled
/// continuous-time bounds (M28): ∫₀¹ L(t) dt = E_{t∼p}[L(t)/p(t)] for every p that is positive
/// on [0, 1], so the estimate stays unbiased whatever p is; p(t) ∝ √E[L(t)²] minimises the
/// variance of one draw (the classic importance-sampling optimum).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeProposal {
    /// Density on each bin (∫ = 1: the mean over bins is 1).
    density: Vec<f64>,
    /// CDF at the bins' edges, K + 1 values from 0 to 1.
    cdf: Vec<f64>,
}

impl TimeProposal {
    /// From non-negative bin weights (normalised here); `None` if they are not all finite and
    /// non-negative or sum to nothing.
    pub fn from_weights(w: &[f64]) -> Option<Self> {
        let k = w.len();
        let sum: f64 = w.iter().sum();
        if k == 0 || !(sum > 0.0 && sum.is_finite()) || w.iter().any(|v| v.is_nan() || *v < 0.0) {
            return None;
        }
        let density: Vec<f64> = w.iter().map(|v| v * k as f64 / sum).collect();
        let mut cdf = Vec::with_capacity(k + 1);
        let mut acc = 0.0;
        cdf.push(0.0);
        for v in w {
            acc += v / sum;
            cdf.push(acc);
        }
        cdf[k] = 1.0;
        Some(TimeProposal { density, cdf })
    }

    /// The uniform density on K bins.
    pub fn uniform(k: usize) -> Self {
        let k = k.max(1);
        TimeProposal {
            density: vec![1.0; k],
            cdf: (0..=k).map(|i| i as f64 / k as f64).collect(),
        }
    }

    /// From draws (t, L(t)) of uniform t: per-bin means and second moments of L over `bins`
    /// equal bins (empty bins: NaN), the variance-minimising density of
    /// [`Self::from_second_moments`] with `floor`, and its predicted variance ratio against
    /// uniform draws ([`Self::variance_ratio`]).
    pub fn from_draws(draws: &[(f64, f64)], bins: usize, floor: f64) -> Option<(Self, f64)> {
        let k = bins.max(1);
        let (mut s1, mut s2, mut c) = (vec![0.0; k], vec![0.0; k], vec![0usize; k]);
        for &(t, v) in draws {
            let i = ((t * k as f64) as usize).min(k - 1);
            s1[i] += v;
            s2[i] += v * v;
            c[i] += 1;
        }
        let mean = |s: &[f64]| -> Vec<f64> {
            s.iter()
                .zip(&c)
                .map(|(v, &n)| if n > 0 { v / n as f64 } else { f64::NAN })
                .collect()
        };
        let (m1, m2) = (mean(&s1), mean(&s2));
        let p = Self::from_second_moments(&m2, floor)?;
        let ratio = p.variance_ratio(&m1, &m2);
        Some((p, ratio))
    }

    /// The variance-minimising density from per-bin second moments E[L(t)²] (bins with no data:
    /// NaN, given the largest measured value), mixed with `floor` ∈ (0, 1] of the uniform density
    /// so that no bin is starved and the weights 1/p stay at most 1/floor.
    pub fn from_second_moments(m2: &[f64], floor: f64) -> Option<Self> {
        let top = m2
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let root: Vec<f64> = m2
            .iter()
            .map(|&v| if v.is_finite() { v.max(0.0) } else { top }.sqrt())
            .collect();
        let sum: f64 = root.iter().sum();
        let floor = floor.clamp(1e-6, 1.0);
        if !(sum > 0.0 && sum.is_finite()) {
            return Some(Self::uniform(m2.len()));
        }
        let k = root.len() as f64;
        let w: Vec<f64> = root
            .iter()
            .map(|r| (1.0 - floor) * r / sum + floor / k)
            .collect();
        Self::from_weights(&w)
    }

    pub fn bins(&self) -> usize {
        self.density.len()
    }

    /// p(t) for t ∈ [0, 1].
    pub fn density_at(&self, t: f64) -> f64 {
        let k = self.density.len();
        self.density[((t * k as f64) as usize).min(k - 1)]
    }

    /// The inverse CDF: the t with P(T ≤ t) = u, u ∈ [0, 1), and p(t).
    pub fn invert(&self, u: f64) -> (f64, f64) {
        let k = self.density.len();
        // The last edge whose CDF is ≤ u (bins of zero mass are skipped by the strict search).
        let i = self.cdf[1..].partition_point(|&c| c <= u).min(k - 1);
        let mass = self.cdf[i + 1] - self.cdf[i];
        let frac = if mass > 0.0 {
            ((u - self.cdf[i]) / mass).clamp(0.0, 1.0 - 1e-12)
        } else {
            0.5
        };
        ((i as f64 + frac) / k as f64, self.density[i])
    }

    /// Per-draw variance of L(t)/p(t) relative to uniform draws, predicted from per-bin means and
    /// second moments of L (iid draws; NaN bins are skipped): (Σ m2/p − (Σ m1)²)/(Σ m2 − (Σ m1)²)
    /// on the bin average.
    pub fn variance_ratio(&self, m1: &[f64], m2: &[f64]) -> f64 {
        let k = self.density.len() as f64;
        let (mut a, mut b, mut mean) = (0.0, 0.0, 0.0);
        for (i, (&x1, &x2)) in m1.iter().zip(m2).enumerate() {
            if x1.is_finite() && x2.is_finite() {
                a += x2 / self.density[i] / k;
                b += x2 / k;
                mean += x1 / k;
            }
        }
        let (vp, vu) = (a - mean * mean, b - mean * mean);
        if vu > 0.0 && vp.is_finite() {
            (vp / vu).max(0.0)
        } else {
            1.0
        }
    }
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
    /// Importance weights 1/p(t) of the samples, row-major `[B, N]` (none: uniform t, weight 1).
    /// `samples` holds the integrand L(t); `diffusion` is the mean of L(t)/p(t).
    pub weights: Option<Vec<f64>>,
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
    let [b, d] = x.dims();
    let n = opts.t_samples.max(1);
    let rows = b * n;
    let t_steps = opts.t_steps.filter(|&t| t > 0);
    let mut times = stratified_times(b, n, t_steps, rng);
    // Importance sampling (continuous time): the stratified u's through the proposal's inverse
    // CDF, so the strata keep their spread under p.
    let weights = match (&opts.proposal, t_steps) {
        (Some(p), None) => Some(
            times
                .iter_mut()
                .map(|t| {
                    let (v, dens) = p.invert(*t);
                    *t = v;
                    1.0 / dens
                })
                .collect::<Vec<f64>>(),
        ),
        _ => None,
    };
    let eps = randn(rng, [rows, d], &device);
    let eps0 = match decoder {
        Decoder::Gaussian => None,
        _ => Some(randn(rng, [b, d], &device)),
    };
    diffusion_elbo_given(
        den,
        sched,
        x,
        decoder,
        t_steps,
        ElboNoise {
            times,
            weights,
            eps,
            eps0,
        },
        cond,
    )
}

/// The noise of one estimate of the diffusion ELBO: the times (N per example, example-major)
/// with their importance weights 1/p(t) (none: uniform), ε for the B·N rows, and ε_0 of the
/// decoder's draw (none for the Gaussian decoder, whose expectation is exact).
#[derive(Debug, Clone)]
pub struct ElboNoise {
    pub times: Vec<f64>,
    pub weights: Option<Vec<f64>>,
    pub eps: Tensor<2>,
    pub eps0: Option<Tensor<2>>,
}

/// [`diffusion_elbo`] from given noise: the estimator itself, which the drawn estimate and a
/// replay of recorded noise (PyTorch parity) share.
pub fn diffusion_elbo_given<D: Denoiser + ?Sized>(
    den: &D,
    sched: &Schedule,
    x: Tensor<2>,
    decoder: Decoder,
    t_steps: Option<u64>,
    noise: ElboNoise,
    cond: Cond,
) -> Result<DiffusionEstimate> {
    let device = x.device();
    let process = den.process();
    let [b, d] = x.dims();
    let ElboNoise {
        times,
        weights,
        eps,
        eps0,
    } = noise;
    let rows = times.len();
    if b == 0 || rows % b != 0 || eps.dims() != [rows, d] {
        return Err(crate::Error::Shape(format!(
            "diffusion ELBO noise: {rows} times and ε of {:?} for {b} examples of {d} values",
            eps.dims()
        )));
    }
    let n = rows / b;

    // Diffusion term on the B·N rows.
    let x_rep = x
        .clone()
        .unsqueeze_dim::<3>(1)
        .repeat_dim(1, n)
        .reshape([rows, d]);
    let labels = repeat_labels(cond, n);
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
    let diffusion = match &weights {
        Some(w) => {
            let w = Tensor::<2>::from_data(
                TensorData::new(w.iter().map(|v| *v as f32).collect::<Vec<f32>>(), [b, n]),
                &device,
            );
            (samples.clone() * w).mean_dim(1).squeeze_dim::<1>(1)
        }
        None => samples.clone().mean_dim(1).squeeze_dim::<1>(1),
    };

    // Endpoints. The decoder's mean is z_0/α_0 = x + e^{γ_0/2} ε_0 whatever the process.
    let (g0, g1) = sched.endpoints(&device);
    let recon = decoder_nll(x.clone(), eps0, g0, decoder);
    let prior = process.prior_kl(x, g1);
    Ok(DiffusionEstimate {
        recon,
        prior,
        diffusion,
        samples,
        times,
        mse,
        weights,
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
        // logit = −½ (u − 1)²/s² + ½ (u + 1)²/s² = 2u/s², u = z_0/α_0, s² = e^{γ_0}.
        Decoder::Bernoulli => {
            let inv = (-gamma0.clone()).exp().unsqueeze_dim::<2>(1);
            let logits = mean(eps0) * inv * 2.0;
            -crate::dist::bernoulli_log_prob(logits, (x.clone() + 1.0) * 0.5)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposal_inverts_its_own_cdf() {
        // Bins of mass 0.1, 0, 0.6, 0.3: the inverse CDF lands in the right bin at the right
        // place (linear within a bin), never in the empty one, and reports that bin's density.
        let p = TimeProposal::from_weights(&[1.0, 0.0, 6.0, 3.0]).unwrap();
        let (t, dens) = p.invert(0.05);
        assert!((t - 0.125).abs() < 1e-12 && (dens - 0.4).abs() < 1e-12);
        let (t, dens) = p.invert(0.4);
        assert!(
            (t - 0.625).abs() < 1e-12 && (dens - 2.4).abs() < 1e-12,
            "{t} {dens}"
        );
        let (t, _) = p.invert(0.85);
        assert!((t - 0.875).abs() < 1e-12, "{t}");
        for i in 0..1000 {
            let (t, d) = p.invert(i as f64 / 1000.0);
            assert!(!(0.25..0.5).contains(&t) && d > 0.0 && (d - p.density_at(t)).abs() < 1e-12);
        }
        assert!(TimeProposal::from_weights(&[1.0, f64::NAN]).is_none());
        assert!(TimeProposal::from_weights(&[0.0, 0.0]).is_none());
        // The floor keeps every bin at least floor/K of the mass.
        let q = TimeProposal::from_second_moments(&[0.0, 100.0, f64::NAN, 4.0], 0.2).unwrap();
        assert!((q.density_at(0.1) - 0.2).abs() < 1e-12);
        assert!(
            (q.density_at(0.6) - q.density_at(0.3)).abs() < 1e-12,
            "NaN bin gets the top"
        );
    }
}
