//! Weighted diffusion objectives (MATH.md M44–M45; Kingma & Gao 2023): every common objective
//! is ∫ w(λ) · ½ E‖ε − ε̂(z_λ; λ)‖² dλ over log-SNR λ = −γ, the ELBO's own integrand weighted by
//! w(λ); with a monotone (non-increasing) w it is the ELBO of noise-augmented data. Training
//! draws noise levels from a proposal p and weights each draw by w/p, so the estimate is
//! unbiased for the weighted objective whatever p is; the reported figure stays the plain ELBO
//! (w = 1).
//!
//! Draws live in the model's time t (λ = −γ(t)): the ELBO integrand in t is ½ γ'(t)‖ε − ε̂‖², so
//! a weighted draw at t from a density p(t) over [0, 1] is ½ w(−γ(t)) γ'(t) ‖ε − ε̂‖² / p(t).
//! Proposals are piecewise-constant densities of t ([`TimeProposal`]).

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::elbo::{DiffusionEstimate, TimeProposal};
use super::NoiseSchedule;

/// A weighting w(λ) of the per-noise-level ELBO integrand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weighting {
    /// w = 1: the ELBO itself.
    Elbo,
    /// Kingma & Gao's sigmoid weighting w(λ) = sigmoid(b − λ) (monotone: the ELBO of augmented
    /// data), shift b.
    Sigmoid { shift: f64 },
    /// EDM's (Karras et al. 2022, as Kingma & Gao write it): the log-normal density of its
    /// training σ in λ = −2 log σ, N(λ; −2 P_mean, (2 P_std)²), times (e^{−λ} + σ_d²)/σ_d²
    /// (its loss weight λ(σ) = (σ² + σ_d²)/(σ σ_d)² in ε units), σ_d = ½; not monotone.
    Edm,
    /// Conditional flow matching on the straight path (Lipman et al. 2022): E_t‖û − u‖² with t
    /// uniform is ½ ∫ e^{−λ/2} ‖ε − ε̂‖² dλ (M48), so w(λ) = e^{−λ/2}: monotone.
    FlowMatching,
}

/// EDM's training distribution of ln σ: N(P_mean, P_std²).
pub const EDM_P_MEAN: f64 = -1.2;
pub const EDM_P_STD: f64 = 1.2;
pub use super::param::EDM_SIGMA_DATA;

fn sigmoid(x: f64) -> f64 {
    super::process::sigmoid(x)
}

/// The density of λ = −2 ln σ when ln σ ~ N(P_mean, P_std²).
pub fn edm_lambda_density(lambda: f64) -> f64 {
    let (m, s) = (-2.0 * EDM_P_MEAN, 2.0 * EDM_P_STD);
    (-(lambda - m).powi(2) / (2.0 * s * s)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt())
}

impl Weighting {
    /// w(λ).
    pub fn w(&self, lambda: f64) -> f64 {
        match *self {
            Weighting::Elbo => 1.0,
            Weighting::Sigmoid { shift } => sigmoid(shift - lambda),
            Weighting::Edm => {
                let sd2 = EDM_SIGMA_DATA * EDM_SIGMA_DATA;
                edm_lambda_density(lambda) * ((-lambda).exp() + sd2) / sd2
            }
            Weighting::FlowMatching => (-0.5 * lambda).exp(),
        }
    }

    /// Whether w is non-increasing in λ: then the weighted loss is the ELBO of data augmented
    /// with Gaussian noise (Kingma & Gao 2023, §4), a likelihood objective of its own.
    pub fn monotone(&self) -> bool {
        matches!(
            self,
            Weighting::Elbo | Weighting::Sigmoid { .. } | Weighting::FlowMatching
        )
    }

    /// In words, for reports.
    pub fn describe(&self) -> String {
        let m = if self.monotone() {
            "monotone: the ELBO of noise-augmented data"
        } else {
            "not monotone"
        };
        match self {
            Weighting::Elbo => "w(λ) = 1, the ELBO itself".into(),
            Weighting::Sigmoid { shift } => format!("w(λ) = sigmoid({shift} − λ), {m}"),
            Weighting::Edm => format!("EDM's w(λ) (log-normal σ, σ_data = ½), {m}"),
            Weighting::FlowMatching => format!("flow matching's w(λ) = e^(−λ/2), {m}"),
        }
    }
}

/// The weighted integrand of each draw of an estimate, before 1/p: ‖ε − ε̂‖² for L_simple
/// (`None`: its weighting 2/γ'(t) makes the integrand the ε-MSE itself), L(t) = ½ γ'(t)‖ε − ε̂‖²
/// for the ELBO, w(λ(t)) L(t) otherwise; `gamma` is γ(t) of the model's schedule.
pub fn weighted_integrand(
    e: &DiffusionEstimate,
    weighting: Option<Weighting>,
    gamma: impl Fn(f64) -> f64,
) -> Tensor<1> {
    let n = e.times.len();
    match weighting {
        None => e.mse.clone(),
        Some(Weighting::Elbo) => e.samples.clone().reshape([n]),
        Some(w) => {
            let ws: Vec<f32> = e.times.iter().map(|&t| w.w(-gamma(t)) as f32).collect();
            let wt = Tensor::<1>::from_data(TensorData::new(ws, [n]), &e.mse.device());
            e.samples.clone().reshape([n]) * wt
        }
    }
}

/// Each draw's integrand divided by its proposal density (times `weights` = 1/p(t); none:
/// uniform t): the unbiased estimate of the weighted objective, one value per draw.
pub fn over_proposal(integrand: Tensor<1>, weights: Option<&[f64]>) -> Tensor<1> {
    match weights {
        Some(iw) => {
            let n = iw.len();
            let f: Vec<f32> = iw.iter().map(|v| *v as f32).collect();
            let dev = integrand.device();
            integrand * Tensor::<1>::from_data(TensorData::new(f, [n]), &dev)
        }
        None => integrand,
    }
}

/// Where training draws its noise levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ProposalKind {
    /// t uniform on [0, 1] (the schedule's own spacing of noise levels).
    #[default]
    Uniform,
    /// EDM's log-normal σ (λ ~ N(2.4, 2.4²)), as a density of t through the schedule.
    Edm,
    /// Adapted to the running loss: p(t) ∝ √E[(w L)²] per bin of t, the variance-minimising
    /// density, mixed with a tenth of uniform (Kingma & Gao's adaptive noise schedule, in the
    /// estimator's variance form).
    Adaptive,
}

/// Bins of t of a proposal.
pub const PROPOSAL_BINS: usize = 64;
/// The share of the uniform density mixed into an adaptive proposal.
pub const ADAPTIVE_FLOOR: f64 = 0.1;
/// The running average's weight of each batch in an adaptive proposal's second moments.
pub const ADAPTIVE_RATE: f64 = 0.02;

/// EDM's proposal as a density of t on `sched`: p(t) = p_EDM(λ(t)) · |dλ/dt|, integrated over
/// each of [`PROPOSAL_BINS`] bins (midpoint rule), mixed with a hundredth of uniform so that it
/// is positive everywhere.
pub fn edm_proposal(sched: &dyn NoiseSchedule) -> Option<TimeProposal> {
    let k = PROPOSAL_BINS;
    let w: Vec<f64> = (0..k)
        .map(|i| {
            let (a, b) = (i as f64 / k as f64, (i + 1) as f64 / k as f64);
            // ∫ p_EDM(λ) dλ over the bin's λ range, by the bin's endpoints' CDF difference.
            let cdf = |t: f64| {
                let l = -sched.gamma(t);
                let z = (l - (-2.0 * EDM_P_MEAN)) / (2.0 * EDM_P_STD);
                0.5 * (1.0 + erf(z / std::f64::consts::SQRT_2))
            };
            (cdf(a) - cdf(b)).abs() + 0.01 / k as f64
        })
        .collect();
    TimeProposal::from_weights(&w)
}

/// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): enough for a proposal, which only has
/// to be a positive density (the estimate is unbiased for any).
fn erf(x: f64) -> f64 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    s * y
}

/// The running state of an adaptive proposal: per-bin second moments of the weighted integrand,
/// and which bins have been seen. Saved with each checkpoint, so a resume continues exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveState {
    pub second_moments: Vec<f64>,
    pub seen: Vec<bool>,
}

impl Default for AdaptiveState {
    fn default() -> Self {
        AdaptiveState {
            second_moments: vec![0.0; PROPOSAL_BINS],
            seen: vec![false; PROPOSAL_BINS],
        }
    }
}

impl AdaptiveState {
    /// Fold a batch's draws (t, w·L at t) into the running second moments: each bin with draws
    /// moves by [`ADAPTIVE_RATE`] towards their mean square (its first draws set it). A
    /// deterministic function of the draws in their order.
    pub fn update(&mut self, draws: &[(f64, f64)]) {
        let k = self.second_moments.len().min(self.seen.len()).max(1);
        let (mut s, mut c) = (vec![0.0; k], vec![0usize; k]);
        for &(t, v) in draws {
            if t.is_finite() && v.is_finite() {
                let i = ((t * k as f64) as usize).min(k - 1);
                s[i] += v * v;
                c[i] += 1;
            }
        }
        for i in 0..k {
            if c[i] > 0 {
                let m = s[i] / c[i] as f64;
                let old = self.second_moments[i];
                self.second_moments[i] = if self.seen[i] {
                    (1.0 - ADAPTIVE_RATE) * old + ADAPTIVE_RATE * m
                } else {
                    m
                };
                self.seen[i] = true;
            }
        }
    }

    /// The proposal it gives (uniform until every bin has been seen once).
    pub fn proposal(&self) -> Option<TimeProposal> {
        if self.seen.iter().any(|s| !s) || self.second_moments.is_empty() {
            return None;
        }
        TimeProposal::from_second_moments(&self.second_moments, ADAPTIVE_FLOOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weightings_have_their_shapes() {
        // sigmoid(b − λ) is 1/2 at λ = b and decreasing; EDM's peaks near its log-normal's mode.
        let s = Weighting::Sigmoid { shift: 2.0 };
        assert!((s.w(2.0) - 0.5).abs() < 1e-12);
        assert!(s.w(-5.0) > s.w(0.0) && s.w(0.0) > s.w(5.0));
        assert!(s.monotone() && Weighting::Elbo.monotone() && !Weighting::Edm.monotone());
        let e = Weighting::Edm;
        assert!(e.w(-10.0) > 0.0 && e.w(10.0) > 0.0);
        assert!(e.w(15.0) < e.w(5.0));
        // The EDM density of λ integrates to 1 (midpoint rule on ±12 sd).
        let (lo, hi, n) = (2.4 - 12.0 * 2.4, 2.4 + 12.0 * 2.4, 20_000);
        let h = (hi - lo) / n as f64;
        let total: f64 = (0..n)
            .map(|i| edm_lambda_density(lo + (i as f64 + 0.5) * h) * h)
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert!((erf(0.5) - 0.520_499_877_8).abs() < 2e-7);
        let f = Weighting::FlowMatching;
        assert!(f.monotone() && f.w(-4.0) > f.w(0.0) && (f.w(0.0) - 1.0).abs() < 1e-15);
    }

    #[test]
    fn flow_matchings_loss_is_its_weighted_integrand() {
        // M48 on the straight path with t uniform (the linear-path schedule): the weighted
        // integrand ½ w(λ) γ'(t) ‖ε − ε̂‖² with w = e^{−λ/2} is the CFM loss ‖û − (ε − x)‖²
        // times (s_1 − s_0), s = sigmoid(γ/2) (t uniform over the path's own [s_0, s_1]),
        // draw by draw, for a denoiser that is wrong.
        use crate::diffusion::schedule::LinearPath;
        let sched = LinearPath {
            gamma_min: -10.0,
            gamma_max: 9.0,
        };
        let s = |g: f64| crate::diffusion::process::sigmoid(0.5 * g);
        let (s0, s1) = (s(-10.0), s(9.0));
        let (n, d) = (64usize, 3usize);
        let oracle = Scaled(
            GaussianOracle {
                s2: 0.5,
                process: crate::diffusion::Process::Linear,
            },
            0.8,
        );
        struct OnPath(Scaled);
        impl Denoiser for OnPath {
            fn prediction(&self) -> Prediction {
                Prediction::Eps
            }
            fn process(&self) -> crate::diffusion::Process {
                crate::diffusion::Process::Linear
            }
            fn predict(&self, z: Tensor<2>, g: Tensor<1>, c: crate::diffusion::Cond) -> Tensor<2> {
                self.0.predict(z, g, c)
            }
        }
        let den = OnPath(oracle);
        let x = randn(&mut seeded(5), [n, d], &Device::flex()) * 0.5f64.sqrt();
        let e = diffusion_elbo(
            &den,
            &Schedule::Fixed(&sched),
            x.clone(),
            Decoder::Gaussian,
            ElboOptions {
                t_steps: None,
                t_samples: 1,
                proposal: None,
            },
            None,
            &mut seeded(6),
        )
        .unwrap();
        let got = crate::elbo::to_f64(weighted_integrand(&e, Some(Weighting::FlowMatching), |t| {
            sched.gamma(t)
        }))
        .unwrap();
        // ‖û − u‖² = ‖ε̂ − ε‖²/α² (û − u = (ε̂ − ε)/α on the straight path, α + σ = 1);
        // `mse` is ‖ε − ε̂‖² summed over the D dimensions.
        let mse = crate::elbo::to_f64(e.mse.clone()).unwrap();
        for (i, &t) in e.times.iter().enumerate() {
            let a = 1.0 - s(sched.gamma(t));
            let cfm = mse[i] / (a * a);
            let want = cfm * (s1 - s0);
            assert!(
                (got[i] - want).abs() < 1e-3 * want.max(1e-3),
                "draw {i} at t = {t}: {} vs {want}",
                got[i]
            );
        }
    }

    #[test]
    fn adaptive_state_moves_towards_the_draws_and_is_uniform_until_seen() {
        let mut a = AdaptiveState::default();
        assert!(a.proposal().is_none());
        let draws: Vec<(f64, f64)> = (0..PROPOSAL_BINS)
            .map(|i| {
                (
                    (i as f64 + 0.5) / PROPOSAL_BINS as f64,
                    if i < 8 { 10.0 } else { 1.0 },
                )
            })
            .collect();
        a.update(&draws);
        let p = a.proposal().unwrap();
        // Bins with 10× the loss get 10× the density of √m2 (before the uniform floor).
        assert!(p.density_at(0.01) > 5.0 * p.density_at(0.9));
        // A second batch moves a bin by the rate only.
        let before = a.second_moments[20];
        a.update(&[(20.5 / PROPOSAL_BINS as f64, 3.0)]);
        let want = (1.0 - ADAPTIVE_RATE) * before + ADAPTIVE_RATE * 9.0;
        assert!((a.second_moments[20] - want).abs() < 1e-12);
    }

    use crate::diffusion::elbo::{diffusion_elbo, Decoder, ElboOptions};
    use crate::diffusion::oracle::GaussianOracle;
    use crate::diffusion::schedule::LinearGamma;
    use crate::diffusion::{Denoiser, Prediction, Schedule};
    use crate::rng::{randn, seeded};
    use burn::tensor::Device;
    use std::sync::Arc;

    /// The exact denoiser of N(0, s² I) data, its ε̂ scaled by `scale` (1: the oracle).
    struct Scaled(GaussianOracle, f64);
    impl Denoiser for Scaled {
        fn prediction(&self) -> Prediction {
            Prediction::Eps
        }
        fn predict(&self, z: Tensor<2>, g: Tensor<1>, c: crate::diffusion::Cond) -> Tensor<2> {
            self.0.predict(z, g, c) * self.1
        }
    }

    /// One time sample of the diffusion bound per row of `n` × `d` draws of N(0, s² I) data
    /// (seeded by `seed`), for the denoiser `den` on `sched` with `proposal` (times seeded by
    /// `seed + 1`).
    fn estimate(
        den: &dyn Denoiser,
        sched: &LinearGamma,
        s2: f64,
        [n, d]: [usize; 2],
        proposal: Option<Arc<TimeProposal>>,
        seed: u64,
    ) -> crate::diffusion::elbo::DiffusionEstimate {
        let x = randn(&mut seeded(seed), [n, d], &Device::flex()) * s2.sqrt();
        diffusion_elbo(
            den,
            &Schedule::Fixed(sched),
            x,
            Decoder::Gaussian,
            ElboOptions {
                t_steps: None,
                t_samples: 1,
                proposal,
            },
            None,
            &mut seeded(seed + 1),
        )
        .unwrap()
    }

    fn proposals(sched: &LinearGamma) -> Vec<(&'static str, Option<Arc<TimeProposal>>)> {
        let skewed: Vec<f64> = (0..PROPOSAL_BINS).map(|i| 1.0 + (i % 7) as f64).collect();
        vec![
            ("uniform", None),
            ("edm", edm_proposal(sched).map(Arc::new)),
            ("skewed", TimeProposal::from_weights(&skewed).map(Arc::new)),
        ]
    }

    #[test]
    fn with_w_1_every_proposal_estimates_the_oracles_elbo_without_bias() {
        // M31: with the exact denoiser of N(0, s² I), L_∞ = ½ D log((1 + SNR_max s²)/(1 + SNR_min s²)).
        // Drawn from any proposal and weighted by 1/p, the mean over 4,000 examples (one draw
        // each) is within 4 standard errors of it; the proposals' variances differ.
        let (s2, d, n) = (0.5f64, 2, 4000);
        let sched = LinearGamma {
            gamma_min: -8.0,
            gamma_max: 8.0,
        };
        let closed = 0.5 * d as f64 * ((1.0 + 8f64.exp() * s2) / (1.0 + (-8f64).exp() * s2)).ln();
        for (name, p) in proposals(&sched) {
            let e = estimate(&GaussianOracle::vp(s2), &sched, s2, [n, d], p, 1);
            let integrand = weighted_integrand(&e, Some(Weighting::Elbo), |t| sched.gamma(t));
            let v = crate::elbo::to_f64(over_proposal(integrand, e.weights.as_deref())).unwrap();
            let st = crate::elbo::Stat::of(&v);
            assert!(
                (st.mean - closed).abs() < 4.0 * st.se,
                "{name}: {st:?} vs {closed}"
            );
        }
    }

    #[test]
    fn every_weighting_and_proposal_is_minimised_by_the_oracle() {
        // The weighted objective ∫ w(λ) E‖ε − ε̂‖² dλ is minimised pointwise by ε̂ = E[ε | z]
        // for any positive w: the oracle's objective is below that of its ε̂ scaled by 0.7 or
        // 1.3, for every weighting and proposal (the same draws for all three: a paired
        // comparison; the gap is 0.09 E[w‖ε*‖²], tens of standard errors here).
        let (s2, d, n) = (0.5f64, 2, 4000);
        let sched = LinearGamma {
            gamma_min: -8.0,
            gamma_max: 8.0,
        };
        let weightings = [
            None,
            Some(Weighting::Elbo),
            Some(Weighting::Sigmoid { shift: 2.0 }),
            Some(Weighting::Edm),
            Some(Weighting::FlowMatching),
        ];
        for (pname, p) in proposals(&sched) {
            for w in weightings {
                let objective = |scale: f64| -> f64 {
                    let e = estimate(
                        &Scaled(GaussianOracle::vp(s2), scale),
                        &sched,
                        s2,
                        [n, d],
                        p.clone(),
                        3,
                    );
                    let i = weighted_integrand(&e, w, |t| sched.gamma(t));
                    let v = crate::elbo::to_f64(over_proposal(i, e.weights.as_deref())).unwrap();
                    v.iter().sum::<f64>() / n as f64
                };
                let (lo, best, hi) = (objective(0.7), objective(1.0), objective(1.3));
                assert!(best < lo && best < hi, "{pname} {w:?}: {lo} {best} {hi}");
            }
        }
    }

    #[test]
    fn the_adaptive_proposal_lowers_the_estimators_variance() {
        // The oracle's ELBO integrand on linear γ over [−13.3, 5] (VDM's endpoints) is far from
        // flat in t; an adaptive state fed with uniform draws of it proposes where it is large.
        // Measured on 8,000 fresh draws each: the variance of L/p falls to 0.46 of uniform
        // draws'; asserted below 0.6 (each variance's estimate is within a few percent at this
        // size; the draws are seeded).
        let (s2, d, n) = (0.25f64, 4, 8000);
        let sched = LinearGamma {
            gamma_min: -13.3,
            gamma_max: 5.0,
        };
        let draw = |p: Option<Arc<TimeProposal>>, seed: u64| {
            let e = estimate(&GaussianOracle::vp(s2), &sched, s2, [n, d], p, seed);
            let i = weighted_integrand(&e, Some(Weighting::Elbo), |t| sched.gamma(t));
            let raw = crate::elbo::to_f64(i.clone()).unwrap();
            let v = crate::elbo::to_f64(over_proposal(i, e.weights.as_deref())).unwrap();
            (e.times, raw, v)
        };
        let (t, raw, u) = draw(None, 10);
        let mut a = AdaptiveState::default();
        a.update(&t.iter().copied().zip(raw).collect::<Vec<_>>());
        let p = a.proposal().map(Arc::new);
        assert!(p.is_some(), "every bin seen");
        let (_, _, v) = draw(p, 20);
        let var = |x: &[f64]| {
            let m = x.iter().sum::<f64>() / x.len() as f64;
            x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64
        };
        let ratio = var(&v) / var(&u);
        eprintln!("adaptive / uniform variance of the ELBO estimator: {ratio:.3}");
        assert!(ratio < 0.6, "{ratio}");
        // Still unbiased: the two means agree within 4 combined standard errors.
        let se = ((var(&u) + var(&v)) / n as f64).sqrt();
        let (mu, mv) = (
            u.iter().sum::<f64>() / n as f64,
            v.iter().sum::<f64>() / n as f64,
        );
        assert!((mu - mv).abs() < 4.0 * se, "{mu} vs {mv}");
    }
}
