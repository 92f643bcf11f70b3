//! The probability-flow ODE (MATH.md M36) and the exact likelihood along it (M37).
//!
//! Every process is written in one variable: x̄ = z/α and τ = γ/2 (so σ̄ = σ/α = e^τ). The
//! probability-flow ODE of M36 is then dx̄/dτ = F(x̄, τ) = e^τ ε̂(α x̄, γ = 2τ) for the variance
//! preserving and the exploding process alike (it is the DDIM ODE dx̄/dσ̄ = ε̂). Along a solution,
//! d/dτ log p_τ(x̄(τ)) = −∇·F, so (M37)
//!
//!   log p_{τ0}(x) = log p_{τ1}(x̄(τ1)) + ∫_{τ0}^{τ1} ∇·F(x̄(τ), τ) dτ,
//!
//! integrated from the data (x̄(τ0) = x) to the noise end, where p_{τ1} is the prior
//! z_1 ~ N(0, v_1 I) seen in x̄ (log N(α_1 x̄; 0, v_1 I) + D log α_1).
//!
//! | code | math |
//! | --- | --- |
//! | `xb`, `tau` | x̄ = z/α, τ = γ/2 |
//! | `div` | ∇_x̄ · F: exactly (one vector–Jacobian product per dimension) or Hutchinson's vᵀ(∂F/∂x̄)v |
//!
//! The divergence needs gradients with respect to the input: `x` must live on an autodiff device
//! (and a network's parameters on the same one).

use burn::tensor::{Tensor, TensorData};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::{eps_hat, repeat_labels, Cond, Denoiser};
use crate::rng::Rng;
use crate::{Error, Result};

/// How the divergence ∇·F is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Divergence {
    /// Exactly: one vector–Jacobian product per dimension (the rows are replicated D times and
    /// differentiated in one backward pass). For D ≤ [`EXACT_MAX_DIM`].
    Exact,
    /// Hutchinson's estimator E_v[vᵀ (∂F/∂x̄) v] with `probes` Rademacher vectors per example,
    /// fixed for the whole solve; each probe carries its own log-density, so their spread is the
    /// Monte-Carlo error.
    Hutchinson { probes: usize },
}

/// The largest dimension for which [`Divergence::Exact`] is chosen by default.
pub const EXACT_MAX_DIM: usize = 16;

impl Divergence {
    /// Exact for D ≤ 16, Hutchinson with `probes` probes above.
    pub fn for_dim(d: usize, probes: usize) -> Divergence {
        if d <= EXACT_MAX_DIM {
            Divergence::Exact
        } else {
            Divergence::Hutchinson { probes }
        }
    }

    /// In words, for reports.
    pub fn describe(self) -> String {
        match self {
            Divergence::Exact => "exact (one vector-Jacobian product per dimension)".into(),
            Divergence::Hutchinson { probes } => {
                format!("Hutchinson, {probes} Rademacher probe(s) per example")
            }
        }
    }
}

/// Tolerances of the adaptive solver and the divergence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OdeOptions {
    pub rtol: f64,
    pub atol: f64,
    pub divergence: Divergence,
}

impl OdeOptions {
    /// Song et al. (2021)'s tolerances, 1e-5 both.
    pub fn new(divergence: Divergence) -> Self {
        OdeOptions {
            rtol: 1e-5,
            atol: 1e-5,
            divergence,
        }
    }

    pub fn validate(&self) -> Result<()> {
        check_tolerances(self.rtol, self.atol)?;
        if let Divergence::Hutchinson { probes } = self.divergence {
            if probes == 0 {
                return Err(Error::Config("--probes must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// The log-density of each row along the ODE.
#[derive(Debug, Clone, PartialEq)]
pub struct OdeLogDensity {
    /// log p_{τ0}(x) per row (nats, in the space x was given in): the mean over probes.
    pub log_p: Vec<f64>,
    /// Per row, the Monte-Carlo standard error of `log_p` from the probes' spread (0 for the
    /// exact divergence or a single probe, whose error is then unknown).
    pub se: Vec<f64>,
    /// The prior's part, log p_{τ1}(x̄(τ1)), per row.
    pub prior: Vec<f64>,
    /// Evaluations of F (each a forward and a backward pass over the batch).
    pub nfe: usize,
}

/// −log p(x) of data rows along the ODE, in the data's own units.
#[derive(Debug, Clone, PartialEq)]
pub struct OdeNll {
    /// Per row, nats: −log p(x) (continuous data: the density; 8-bit images: the bound
    /// −E_u log p(x + u) − D log Δ on the discrete likelihood, u uniform within a level's bin Δ).
    pub nll: Vec<f64>,
    /// Per row, the Monte-Carlo standard error from the probes (0 if exact).
    pub se: Vec<f64>,
    /// Evaluations of the ODE's right-hand side (each a forward and a backward pass).
    pub nfe: usize,
}

/// Solver statistics of [`dormand_prince`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SolveStats {
    pub evaluations: usize,
    pub accepted: usize,
    pub rejected: usize,
}

/// Dormand–Prince 5(4) tableau.
const DP_C: [f64; 7] = [0.0, 0.2, 0.3, 0.8, 8.0 / 9.0, 1.0, 1.0];
const DP_A: [[f64; 6]; 7] = [
    [0.0; 6],
    [0.2, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0, 0.0],
    [
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
        0.0,
        0.0,
    ],
    [
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
        0.0,
    ],
    [
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];
/// Fifth-order weights minus the embedded fourth-order ones: the error estimate.
const DP_E: [f64; 7] = [
    35.0 / 384.0 - 5179.0 / 57600.0,
    0.0,
    500.0 / 1113.0 - 7571.0 / 16695.0,
    125.0 / 192.0 - 393.0 / 640.0,
    -2187.0 / 6784.0 + 92097.0 / 339200.0,
    11.0 / 84.0 - 187.0 / 2100.0,
    -1.0 / 40.0,
];

/// The finest tolerance the solver accepts. Its arithmetic is f32 (unit roundoff 6e-8): below
/// about 1e-6 the error estimate of a step is mostly rounding, the step size shrinks towards
/// nothing and the solve runs for hours without meeting the tolerance.
pub const MIN_TOL: f64 = 1e-6;

/// The most steps (accepted and rejected) of one solve: six network evaluations each. A solve
/// at the default tolerances takes a few hundred.
pub const MAX_SOLVER_STEPS: usize = 10_000;

/// Refuse tolerances outside [MIN_TOL, 1), naming the flags.
pub fn check_tolerances(rtol: f64, atol: f64) -> Result<()> {
    let ok = |v: f64| v.is_finite() && (MIN_TOL..1.0).contains(&v);
    if !ok(rtol) || !ok(atol) {
        return Err(Error::Config(format!(
            "--rtol {rtol:e} and --atol {atol:e}: each must be from {MIN_TOL:e} to below 1 (the \
             solver computes in f32, whose rounding, about 1e-7 of each value, swamps any finer \
             tolerance)"
        )));
    }
    Ok(())
}

/// Integrate dy/dt = f(y, t) from t0 to t1 (either direction) by adaptive Dormand–Prince 5(4)
/// with the mixed error norm √(mean((err / (atol + rtol·max(|y|, |y_new|)))²)) ≤ 1, as
/// scipy's RK45 does. A solve that needs more than [`MAX_SOLVER_STEPS`] steps, or a step below
/// 1e-10 of the span, is an error that says where it stopped: never an answer at the wrong end.
pub fn dormand_prince(
    f: &mut dyn FnMut(&Tensor<2>, f64) -> Tensor<2>,
    mut y: Tensor<2>,
    t0: f64,
    t1: f64,
    rtol: f64,
    atol: f64,
) -> Result<(Tensor<2>, SolveStats)> {
    let mut stats = SolveStats::default();
    let span = t1 - t0;
    if span == 0.0 {
        return Ok((y, stats));
    }
    let mut t = t0;
    let mut h = span / 20.0;
    let mut k0 = f(&y, t);
    stats.evaluations += 1;
    let n = y.dims().iter().product::<usize>().max(1) as f64;
    let stuck = |t: f64, why: &str| {
        Error::Invalid(format!(
            "the adaptive ODE solver stopped at {:.1}% of its interval [{t0:.4}, {t1:.4}] \
             ({why}; rtol {rtol:e}, atol {atol:e}): no result is given for an unfinished \
             solve; loosen --rtol/--atol",
            100.0 * (t - t0) / span
        ))
    };
    while (t1 - t) / span > 1e-12 {
        if stats.accepted + stats.rejected >= MAX_SOLVER_STEPS {
            return Err(stuck(t, &format!("{MAX_SOLVER_STEPS} steps")));
        }
        if (h / span).abs() < 1e-10 {
            return Err(stuck(t, "its step size fell below 1e-10 of the interval"));
        }
        if (t + h - t1) / span > 0.0 {
            h = t1 - t;
        }
        let mut ks = vec![k0.clone()];
        for i in 1..7 {
            let mut acc = y.clone();
            for (j, k) in ks.iter().enumerate() {
                if DP_A[i][j] != 0.0 {
                    acc = acc + k.clone() * (h * DP_A[i][j]);
                }
            }
            ks.push(f(&acc, t + DP_C[i] * h));
            stats.evaluations += 1;
            if i < 6 {
                continue;
            }
            // The 5th-order solution is the last stage's argument (first same as last).
            let y_new = acc;
            let mut err = ks[0].clone() * (h * DP_E[0]);
            for (j, k) in ks.iter().enumerate().skip(1) {
                if DP_E[j] != 0.0 {
                    err = err + k.clone() * (h * DP_E[j]);
                }
            }
            let scale = y.clone().abs().max_pair(y_new.clone().abs()) * rtol + atol;
            let ratio: f32 = (err / scale).square().sum().into_scalar();
            let e = ((ratio as f64) / n).sqrt();
            if e <= 1.0 {
                t += h;
                y = y_new;
                k0 = ks[6].clone();
                stats.accepted += 1;
            } else {
                stats.rejected += 1;
            }
            let factor = if e == 0.0 {
                5.0
            } else {
                (0.9 * e.powf(-0.2)).clamp(0.2, 5.0)
            };
            h *= factor;
        }
    }
    Ok((y, stats))
}

/// log p_{γ0}(x) of each row of `x` (model space, `[B, D]`, on an autodiff device) under the
/// probability-flow ODE of `den` between γ0 (data end) and γ1 (noise end, prior N(0, v_1 I)).
///
/// ```
/// use burn::tensor::{Device, Tensor, TensorData};
/// use elbo::data::toy::Mixture;
/// use elbo::diffusion::ode::{log_density, Divergence, OdeOptions};
/// use elbo::diffusion::{oracle::MixtureOracle, Process};
///
/// // With a mixture's exact score, the ODE gives its log-density (M32, M37).
/// let m = Mixture::named("ring8")?;
/// let oracle = MixtureOracle { mixture: m.clone(), process: Process::VariancePreserving };
/// let x = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.1], [1, 2]),
///                                &Device::flex().autodiff());
/// let r = log_density(&oracle, x, -12.0, 20.0, None, &OdeOptions::new(Divergence::Exact),
///                     &mut elbo::rng::seeded(0))?;
/// assert!((r.log_p[0] - m.log_density(&[2.0, 0.1])).abs() < 2e-3);
/// # Ok::<(), elbo::Error>(())
/// ```
pub fn log_density(
    den: &dyn Denoiser,
    x: Tensor<2>,
    gamma0: f64,
    gamma1: f64,
    cond: Cond,
    opts: &OdeOptions,
    rng: &mut Rng,
) -> Result<OdeLogDensity> {
    opts.validate()?;
    if gamma1 <= gamma0 {
        return Err(Error::Invalid(format!(
            "the ODE runs from low noise to high: γ0 = {gamma0} must be below γ1 = {gamma1}"
        )));
    }
    let [b, d] = x.dims();
    let device = x.device();
    if !device.is_autodiff() {
        return Err(Error::Invalid(
            "the ODE likelihood needs input gradients: evaluate on an autodiff device".into(),
        ));
    }
    // Rows are replicated r times: r = D (exact; replica i differentiates output i) or K probes.
    let (r, probe) = match opts.divergence {
        Divergence::Exact => {
            let mut m = vec![0f32; b * d * d];
            for row in 0..b * d {
                m[row * d + row % d] = 1.0;
            }
            (d, m)
        }
        Divergence::Hutchinson { probes } => {
            let v: Vec<f32> = (0..b * probes * d)
                .map(|_| if rng.gen::<bool>() { 1.0 } else { -1.0 })
                .collect();
            (probes, v)
        }
    };
    let probe = Tensor::<2>::from_data(TensorData::new(probe, [b * r, d]), &device);
    let labels = repeat_labels(cond, r);
    let exact = opts.divergence == Divergence::Exact;
    // The state [B, D + L]: x̄, then L log-density columns (one per probe; one if exact).
    let l = if exact { 1 } else { r };
    let mut f = |s: &Tensor<2>, tau: f64| -> Tensor<2> {
        let gamma = 2.0 * tau;
        let (alpha, _) = den.process().alpha_sigma_f64(gamma);
        let xb = s.clone().slice([0..b, 0..d]).detach();
        let xr = xb
            .reshape([b, 1, d])
            .repeat_dim(1, r)
            .reshape([b * r, d])
            .require_grad();
        let g = Tensor::<1>::full([b * r], gamma, &device);
        let eps = eps_hat(den, xr.clone() * alpha, g, labels.as_deref());
        let grads = (eps.clone() * probe.clone()).sum().backward();
        let jv = xr
            .grad(&grads)
            .unwrap_or_else(|| Tensor::zeros([b * r, d], &device));
        let scale = tau.exp();
        let vjv = (jv * probe.clone()).sum_dim(1).reshape([b, r]); // [B, r]
        let div = if exact { vjv.sum_dim(1) } else { vjv }; // [B, L]
        let fx = eps
            .detach()
            .reshape([b, r, d])
            .slice([0..b, 0..1, 0..d])
            .reshape([b, d]);
        Tensor::cat(vec![fx * scale, div.detach() * scale], 1)
    };
    let y0 = Tensor::cat(vec![x.detach(), Tensor::zeros([b, l], &device)], 1);
    let (y1, stats) = dormand_prince(&mut f, y0, 0.5 * gamma0, 0.5 * gamma1, opts.rtol, opts.atol)?;
    let (alpha1, _) = den.process().alpha_sigma_f64(gamma1);
    let v1 = den.process().prior_var(gamma1);
    let xb1 = y1.clone().slice([0..b, 0..d]);
    let sq = crate::elbo::to_f64(xb1.square().sum_dim(1).reshape([b]))?;
    let integral = crate::elbo::to_f64(y1.slice([0..b, d..d + l]).reshape([b * l]))?;
    let df = d as f64;
    let mut out = OdeLogDensity {
        log_p: Vec::with_capacity(b),
        se: Vec::with_capacity(b),
        prior: Vec::with_capacity(b),
        nfe: stats.evaluations,
    };
    for (row, sq) in sq.iter().enumerate() {
        let prior = -0.5 * df * (2.0 * std::f64::consts::PI * v1).ln()
            - alpha1 * alpha1 * sq / (2.0 * v1)
            + df * alpha1.ln();
        let ints = &integral[row * l..(row + 1) * l];
        let mean = ints.iter().sum::<f64>() / l as f64;
        let se = if l > 1 {
            let var = ints.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (l - 1) as f64;
            (var / l as f64).sqrt()
        } else {
            0.0
        };
        out.log_p.push(prior + mean);
        out.se.push(se);
        out.prior.push(prior);
    }
    Ok(out)
}

/// −log p of 8-bit rows (levels k ∈ {0…255}, `[B, D]`, on an autodiff device) under the ODE of
/// `den`, dequantised uniformly within each level's bin (Song et al. 2021): x = (k + u)Δ − 1
/// with u ~ U(−½, ½) and Δ = 2/255, and the density times Δ per value, so that
/// −log p(x) − D log Δ bounds −log P(k) as the ELBO does (in nats per row).
pub fn image8_nll(
    den: &dyn Denoiser,
    levels: Tensor<2>,
    gamma0: f64,
    gamma1: f64,
    cond: Cond,
    opts: &OdeOptions,
    rng: &mut Rng,
) -> Result<OdeNll> {
    let [b, d] = levels.dims();
    let u: Vec<f32> = (0..b * d).map(|_| rng.gen::<f32>() - 0.5).collect();
    let u = Tensor::<2>::from_data(TensorData::new(u, [b, d]), &levels.device());
    let delta = 2.0 / 255.0;
    let x = (levels + u) * delta - 1.0;
    let offset = -(d as f64) * f64::ln(delta);
    let r = log_density(den, x, gamma0, gamma1, cond, opts, rng)?;
    Ok(OdeNll {
        nll: r.log_p.iter().map(|lp| offset - lp).collect(),
        se: r.se,
        nfe: r.nfe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::Mixture;
    use crate::diffusion::oracle::{GaussianOracle, MixtureOracle};
    use crate::diffusion::Process;
    use burn::tensor::Device;

    /// The mixture's marginal at γ0 in x̄ = z/α: each component widened by σ̄0² = e^{γ0}.
    fn widened(m: &Mixture, gamma0: f64) -> Mixture {
        let mut w = m.clone();
        w.stds = m
            .stds
            .iter()
            .map(|s| (s * s + gamma0.exp()).sqrt())
            .collect();
        w
    }

    fn points(m: &Mixture, n: usize) -> Vec<f32> {
        let mut v = m.sample(n, &mut crate::rng::seeded(7));
        // and two points far in the tails, where log p is far below its typical values
        v.extend_from_slice(&[3.0, -2.5, -0.2, 2.9]);
        v
    }

    fn ode_log_p(
        m: &Mixture,
        process: Process,
        g0: f64,
        g1: f64,
        x: &[f32],
        div: Divergence,
    ) -> OdeLogDensity {
        let dev = Device::flex().autodiff();
        let d = m.dim();
        let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), [x.len() / d, d]), &dev);
        let oracle = MixtureOracle {
            mixture: m.clone(),
            process,
        };
        let opts = OdeOptions {
            rtol: 1e-6,
            atol: 1e-6,
            divergence: div,
        };
        log_density(&oracle, xt, g0, g1, None, &opts, &mut crate::rng::seeded(3)).unwrap()
    }

    #[test]
    fn ode_log_density_with_the_mixture_oracle_is_the_true_log_density() {
        // M32 + M37: with the exact score the ODE reproduces log p(x) point by point. The only
        // departures are the prior's mismatch at the noise end, about α_1 m·x (VP) or m·x/σ_1
        // (VE) nats, ≤ 3e-4 at α_1 = e^{−10} and σ_1 = 10⁴ for these points (at σ_1 = 100 it
        // was measured at 2e-2 for the point (3, −2.5), hence the wide range), and the
        // solver's error at rtol = atol = 1e-6 in f32 (measured converged to 1e-5 by 1e-7):
        // 2e-3 nats per point bounds both.
        for (name, process, g0, g1) in [
            ("blobs2", Process::VariancePreserving, -10.0, 20.0),
            ("ring8", Process::VariancePreserving, -10.0, 20.0),
            (
                "blobs2",
                Process::VarianceExploding,
                -10.0,
                2.0 * 1e4f64.ln(),
            ),
        ] {
            let m = Mixture::named(name).unwrap();
            let x = points(&m, 12);
            let got = ode_log_p(&m, process, g0, g1, &x, Divergence::Exact);
            let truth = widened(&m, g0);
            for (i, row) in x.chunks(2).enumerate() {
                let want = truth.log_density(&[row[0] as f64, row[1] as f64]);
                assert!(
                    (got.log_p[i] - want).abs() < 2e-3,
                    "{name} {process:?} point {row:?}: ODE {} vs true {want}",
                    got.log_p[i]
                );
            }
            assert!(got.nfe > 20 && got.se.iter().all(|&s| s == 0.0));
        }
    }

    #[test]
    fn hutchinson_divergence_is_unbiased_against_the_exact_one() {
        // 64 Rademacher probes per point through the same ODE: each probe's log-density is an
        // unbiased estimate, so the mean is within 4 standard errors of the exact value (a
        // 6e-5 chance per point of failing by chance), and the probes really disagree.
        let m = Mixture::named("grid9").unwrap();
        let x = points(&m, 6);
        let exact = ode_log_p(
            &m,
            Process::VariancePreserving,
            -10.0,
            20.0,
            &x,
            Divergence::Exact,
        );
        let hutch = ode_log_p(
            &m,
            Process::VariancePreserving,
            -10.0,
            20.0,
            &x,
            Divergence::Hutchinson { probes: 64 },
        );
        for i in 0..exact.log_p.len() {
            let (e, h, se) = (exact.log_p[i], hutch.log_p[i], hutch.se[i]);
            assert!(se > 1e-4, "the probes should disagree: se {se}");
            assert!(
                (h - e).abs() < 4.0 * se + 1e-3,
                "point {i}: {h} ± {se} vs exact {e}"
            );
        }
    }

    #[test]
    fn bad_tolerances_and_plain_devices_are_refused() {
        let m = Mixture::named("blobs2").unwrap();
        let oracle = MixtureOracle {
            mixture: m,
            process: Process::VariancePreserving,
        };
        let x = Tensor::<2>::zeros([1, 2], &Device::flex());
        let opts = OdeOptions::new(Divergence::Exact);
        let mut rng = crate::rng::seeded(0);
        assert!(log_density(&oracle, x.clone(), -10.0, 10.0, None, &opts, &mut rng).is_err());
        let x = x.autodiff();
        let bad = OdeOptions { rtol: 0.0, ..opts };
        assert!(log_density(&oracle, x.clone(), -10.0, 10.0, None, &bad, &mut rng).is_err());
        assert!(log_density(&oracle, x, 10.0, -10.0, None, &opts, &mut rng).is_err());
    }

    #[test]
    fn image8_branch_matches_a_gaussian_oracle_at_image_size() {
        // D = 784, every pixel at level 127 (x ≈ −1/255), data N(0, s² I) in model space with its
        // exact denoiser (VP). The ODE's density at γ0 is the data's marginal there,
        // N(0, (s² + e^{γ0}) I), so the dequantised bound has the closed form
        // E_u[−log N((k + u)Δ − 1; 0, v)] − D log Δ
        //   = D [½ log 2πv + ((kΔ − 1)² + Δ²/12)/(2v) − log Δ],  v = s² + e^{γ0}
        // (3978.047 nats here). The oracle's drift is linear, so Hutchinson's estimate of its
        // divergence is exact for every Rademacher probe: the only errors are the solver's and
        // the u noise (sd about 1e-3 nats per row; 5e-4 for the mean of 4). At γ1 = 16 the
        // prior's mismatch is D α1² / 4 ≈ 2e-5 nats. The solver's error follows its tolerance
        // (measured: 10.1, 0.53, 0.053 and 0.0006 nats at rtol = atol = 1e-3 … 1e-6, about
        // 1.3 rtol of the total): within 0.1 nats (2.5e-5 relative) at the default 1e-5, and
        // within 0.005 at 1e-6, each about twice what was measured.
        let (s2, g0, g1, k, d, b) = (0.25f64, -10.0f64, 16.0f64, 127.0f64, 784usize, 4usize);
        let dev = Device::flex().autodiff();
        let oracle = GaussianOracle::vp(s2);
        let delta = 2.0 / 255.0;
        let v = s2 + g0.exp();
        let c = k * delta - 1.0;
        let want = d as f64
            * (0.5 * (std::f64::consts::TAU * v).ln() + (c * c + delta * delta / 12.0) / (2.0 * v)
                - delta.ln());
        for (tol, within) in [(1e-5, 0.1), (1e-6, 0.005)] {
            let x = Tensor::<2>::from_data(TensorData::new(vec![k as f32; b * d], [b, d]), &dev);
            let opts = OdeOptions {
                rtol: tol,
                atol: tol,
                divergence: Divergence::Hutchinson { probes: 2 },
            };
            let r =
                image8_nll(&oracle, x, g0, g1, None, &opts, &mut crate::rng::seeded(4)).unwrap();
            let got = r.nll.iter().sum::<f64>() / b as f64;
            eprintln!(
                "image8 oracle, tol {tol:e}: {got:.5} vs {want:.5}, NFE {}",
                r.nfe
            );
            assert!((got - want).abs() < within, "tol {tol}: {got} vs {want}");
            assert!(
                r.se.iter().all(|s| *s < 1e-3),
                "probes disagree: {:?}",
                r.se
            );
        }
    }
}
