//! Noise schedules, in f64, behind one trait (MATH.md §5).
//!
//! | code | math |
//! | --- | --- |
//! | `gamma(t)` | γ(t) = −log SNR(t), increasing on t ∈ [0, 1] (M25) |
//! | `alpha2(t)` | α_t² = sigmoid(−γ) (= ᾱ in DDPM notation) |
//! | `sigma2(t)` | σ_t² = sigmoid(γ) = 1 − α_t² |
//! | `beta`, `alpha_bar` | DDPM's β_t and ᾱ_t = Π(1 − β_i), t = 1..T (M23, M24) |
//!
//! Discrete DDPM schedules are tables of T steps; as continuous schedules their step i sits at
//! t = (i − 1)/(T − 1) and γ is linear in t between steps. Continuous schedules are read at T
//! evenly spaced times when a table is wanted.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::process::sigmoid;
use crate::nn::monotone::LearnedSchedule;
use crate::{Error, Result};

/// A noise schedule: γ(t) = −log SNR(t) on t ∈ [0, 1], increasing.
pub trait NoiseSchedule {
    /// γ(t) = −log SNR(t).
    fn gamma(&self, t: f64) -> f64;

    /// dγ/dt; by default a central difference (schedules with a closed form override it).
    fn dgamma_dt(&self, t: f64) -> f64 {
        let h = 1e-5;
        let (a, b) = ((t - h).max(0.0), (t + h).min(1.0));
        (self.gamma(b) - self.gamma(a)) / (b - a)
    }

    /// (M25) α_t² = sigmoid(−γ(t)).
    fn alpha2(&self, t: f64) -> f64 {
        sigmoid(-self.gamma(t))
    }

    /// (M25) σ_t² = sigmoid(γ(t)).
    fn sigma2(&self, t: f64) -> f64 {
        sigmoid(self.gamma(t))
    }

    /// (M14) SNR(t) = α_t²/σ_t² = e^{−γ(t)}.
    fn snr(&self, t: f64) -> f64 {
        (-self.gamma(t)).exp()
    }

    /// T for a DDPM table of T steps (whose step i sits at t = (i − 1)/(T − 1)); `None` for a
    /// continuous schedule.
    fn table_steps(&self) -> Option<usize> {
        None
    }
}

/// (M25) Linear γ: γ(t) = γ_min + (γ_max − γ_min) t (VDM's default −13.3 → 5.0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearGamma {
    pub gamma_min: f64,
    pub gamma_max: f64,
}

impl NoiseSchedule for LinearGamma {
    fn gamma(&self, t: f64) -> f64 {
        self.gamma_min + (self.gamma_max - self.gamma_min) * t
    }
    fn dgamma_dt(&self, _t: f64) -> f64 {
        self.gamma_max - self.gamma_min
    }
}

/// The straight path's own time (flow matching, M48): t' = sigmoid(γ/2) runs linearly over
/// [sigmoid(γ_min/2), sigmoid(γ_max/2)] as t runs over [0, 1], so γ(t) = 2 logit(t'); t uniform
/// is flow matching's t uniform, kept away from its ends by the endpoints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearPath {
    pub gamma_min: f64,
    pub gamma_max: f64,
}

impl LinearPath {
    fn s_range(&self) -> (f64, f64) {
        let s = |g: f64| super::process::sigmoid(0.5 * g);
        (s(self.gamma_min), s(self.gamma_max))
    }
}

impl NoiseSchedule for LinearPath {
    fn gamma(&self, t: f64) -> f64 {
        let (s0, s1) = self.s_range();
        let s = s0 + (s1 - s0) * t.clamp(0.0, 1.0);
        2.0 * (s / (1.0 - s)).ln()
    }
    /// dγ/dt = 2 (s_1 − s_0)/(s (1 − s)).
    fn dgamma_dt(&self, t: f64) -> f64 {
        let (s0, s1) = self.s_range();
        let s = s0 + (s1 - s0) * t.clamp(0.0, 1.0);
        2.0 * (s1 - s0) / (s * (1.0 - s))
    }
}

/// The cosine schedule in continuous time, over a chosen log-SNR range (M24 without its offset:
/// ᾱ = cos²(π u/2), so γ = −log SNR = 2 log tan(π u/2)), with u running linearly over
/// [u_0, u_1] = (2/π) atan(e^{γ_min/2}) … (2/π) atan(e^{γ_max/2}) as t runs over [0, 1]; so
/// γ(0) = γ_min and γ(1) = γ_max exactly, and the interior has the cosine table's shape.
/// Unlike the DDPM table (whose first step has γ ≈ −10.1), its low end can be VDM's −13.3, where
/// the decoder's reconstruction term is small.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CosineLogSnr {
    pub gamma_min: f64,
    pub gamma_max: f64,
}

impl CosineLogSnr {
    fn u_range(&self) -> (f64, f64) {
        let u = |g: f64| std::f64::consts::FRAC_2_PI * (0.5 * g).exp().atan();
        (u(self.gamma_min), u(self.gamma_max))
    }
}

impl NoiseSchedule for CosineLogSnr {
    fn gamma(&self, t: f64) -> f64 {
        let (u0, u1) = self.u_range();
        let u = u0 + (u1 - u0) * t.clamp(0.0, 1.0);
        2.0 * (std::f64::consts::FRAC_PI_2 * u).tan().ln()
    }
    /// dγ/dt = 2π (u_1 − u_0)/sin(π u).
    fn dgamma_dt(&self, t: f64) -> f64 {
        let (u0, u1) = self.u_range();
        let u = u0 + (u1 - u0) * t.clamp(0.0, 1.0);
        2.0 * std::f64::consts::PI * (u1 - u0) / (std::f64::consts::PI * u).sin()
    }
}

/// A DDPM schedule as a table of β_t, t = 1..T.
#[derive(Debug, Clone, PartialEq)]
pub struct Discrete {
    /// β_1..β_T (index 0 is step 1).
    pub beta: Vec<f64>,
    /// ᾱ_1..ᾱ_T.
    pub alpha_bar: Vec<f64>,
}

impl Discrete {
    fn from_betas(beta: Vec<f64>) -> Self {
        let mut p = 1.0;
        let alpha_bar = beta
            .iter()
            .map(|b| {
                p *= 1.0 - b;
                p
            })
            .collect();
        Discrete { beta, alpha_bar }
    }

    /// (M23) β_t = linspace(1e-4, 0.02, T).
    pub fn linear(t_steps: usize) -> Self {
        let t = t_steps.max(2);
        // Scaled to T = 1000's endpoints as in improved DDPM when T differs.
        let scale = 1000.0 / t as f64;
        let (lo, hi) = (scale * 1e-4, (scale * 0.02).min(0.999));
        Self::from_betas(
            (0..t)
                .map(|i| lo + (hi - lo) * i as f64 / (t - 1) as f64)
                .collect(),
        )
    }

    /// (M24) Cosine: f(u) = cos²((u + 0.008)/1.008 · π/2), β_t = min(1 − f(t/T)/f((t−1)/T), 0.999).
    /// In f64 throughout (integer division here once made every β but the last 0).
    pub fn cosine(t_steps: usize) -> Self {
        let t = t_steps.max(2) as f64;
        let f = |u: f64| {
            ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        Self::from_betas(
            (1..=t_steps.max(2))
                .map(|i| (1.0 - f(i as f64 / t) / f((i - 1) as f64 / t)).min(0.999))
                .collect(),
        )
    }

    /// Number of steps T.
    pub fn steps(&self) -> usize {
        self.beta.len()
    }

    /// ᾱ_{t−1} for 1-based t (ᾱ_0 = 1).
    pub fn alpha_bar_prev(&self, t: usize) -> f64 {
        if t <= 1 {
            1.0
        } else {
            self.alpha_bar[t - 2]
        }
    }

    /// (M16) σ_q²(t) = (1 − α_t)(1 − ᾱ_{t−1})/(1 − ᾱ_t) for 1-based t (0 at t = 1).
    pub fn posterior_variance(&self, t: usize) -> f64 {
        super::process::posterior_variance(
            1.0 - self.beta[t - 1],
            self.alpha_bar[t - 1],
            self.alpha_bar_prev(t),
        )
    }
}

impl NoiseSchedule for Discrete {
    fn gamma(&self, t: f64) -> f64 {
        let n = self.steps();
        let g = |i: usize| {
            let ab = self.alpha_bar[i];
            (1.0 - ab).ln() - ab.ln()
        };
        let x = t.clamp(0.0, 1.0) * (n - 1) as f64;
        let i = (x.floor() as usize).min(n - 2);
        let f = x - i as f64;
        g(i) * (1.0 - f) + g(i + 1) * f
    }

    fn table_steps(&self) -> Option<usize> {
        Some(self.steps())
    }
}

/// Which schedule, as a config or command-line choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// DDPM linear β (M23).
    Linear,
    /// Cosine (M24).
    Cosine,
    /// Linear γ = −log SNR (M25), VDM's default.
    LinearGamma,
    /// The cosine schedule in continuous time over [gamma_min, gamma_max] (M24, [`CosineLogSnr`]).
    CosineLogSnr,
    /// Learned γ (M26): a monotone network with learned endpoints.
    Learned,
    /// The straight path's own time over [gamma_min, gamma_max] (flow matching, M48).
    LinearPath,
    /// Chosen from the data when a model is built: cosine for 8-bit images (the better samples
    /// at equal time, BENCHMARKS.md §8), linear γ for vectors (the tighter bound).
    Auto,
}

crate::choice!(ScheduleKind {
    Linear = "linear": "DDPM linear β (M23)",
    Cosine = "cosine": "cosine (M24)",
    LinearGamma = "linear-gamma": "linear γ = −log SNR (M25), VDM's default",
    CosineLogSnr = "cosine-log-snr": "the cosine schedule in continuous time over [gamma-min, gamma-max]",
    Learned = "learned": "learned γ (M26): a monotone network with learned endpoints",
    LinearPath = "linear-path": "the straight path's time t = sigmoid(γ/2), linear over [gamma-min, gamma-max] (flow matching)",
});

/// A schedule's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// γ(0) for linear-gamma and cosine-log-snr, and the initial γ(0) of a learned schedule (VDM: −13.3).
    pub gamma_min: f64,
    /// γ(1) likewise (VDM: 5.0).
    pub gamma_max: f64,
    /// T of the DDPM schedules (linear, cosine).
    pub steps: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            kind: ScheduleKind::Auto,
            gamma_min: -13.3,
            gamma_max: 5.0,
            steps: 1000,
        }
    }
}

impl ScheduleConfig {
    /// The fixed schedule (for `learned`, its initial linear-γ shape).
    pub fn fixed(&self) -> Result<Box<dyn NoiseSchedule + Send + Sync>> {
        // Written so that NaN endpoints are refused too.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(self.gamma_min < self.gamma_max) {
            return Err(Error::Config(format!(
                "schedule gamma_min ({}) must be below gamma_max ({})",
                self.gamma_min, self.gamma_max
            )));
        }
        Ok(match self.kind {
            ScheduleKind::Linear => Box::new(Discrete::linear(self.steps)),
            ScheduleKind::Cosine => Box::new(Discrete::cosine(self.steps)),
            ScheduleKind::LinearGamma | ScheduleKind::Learned => Box::new(LinearGamma {
                gamma_min: self.gamma_min,
                gamma_max: self.gamma_max,
            }),
            ScheduleKind::CosineLogSnr => Box::new(CosineLogSnr {
                gamma_min: self.gamma_min,
                gamma_max: self.gamma_max,
            }),
            ScheduleKind::LinearPath => Box::new(LinearPath {
                gamma_min: self.gamma_min,
                gamma_max: self.gamma_max,
            }),
            ScheduleKind::Auto => {
                return Err(Error::Config(
                    "schedule kind 'auto' is chosen from the data when the model is built".into(),
                ))
            }
        })
    }
}

/// A schedule as the ELBO needs it on a batch: fixed (f64, as constants) or learned (tensors
/// with gradients, on the device of its parameters).
pub enum Schedule<'a> {
    Fixed(&'a dyn NoiseSchedule),
    Learned(&'a LearnedSchedule),
}

fn col(v: Vec<f64>, device: &Device) -> Tensor<1> {
    let n = v.len();
    Tensor::from_data(
        TensorData::new(v.into_iter().map(|x| x as f32).collect::<Vec<_>>(), [n]),
        device,
    )
}

impl Schedule<'_> {
    /// γ(t) and γ'(t) for times `t`, `[N]` each.
    pub fn gamma(&self, t: &[f64], device: &Device) -> (Tensor<1>, Tensor<1>) {
        match self {
            Schedule::Fixed(s) => (
                col(t.iter().map(|&u| s.gamma(u)).collect(), device),
                col(t.iter().map(|&u| s.dgamma_dt(u)).collect(), device),
            ),
            Schedule::Learned(l) => l.gamma(col(t.to_vec(), device)),
        }
    }

    /// expm1(γ(t) − γ(s)) for pairs of times, `[N]`: in f64 for fixed schedules.
    pub fn expm1_diff(&self, t: &[f64], s: &[f64], device: &Device) -> Tensor<1> {
        match self {
            Schedule::Fixed(sc) => col(
                t.iter()
                    .zip(s)
                    .map(|(&a, &b)| (sc.gamma(a) - sc.gamma(b)).exp_m1())
                    .collect(),
                device,
            ),
            Schedule::Learned(_) => {
                let (gt, _) = self.gamma(t, device);
                let (gs, _) = self.gamma(s, device);
                super::expm1_tensor(gt - gs)
            }
        }
    }

    /// γ(0) and γ(1), `[1]` each.
    pub fn endpoints(&self, device: &Device) -> (Tensor<1>, Tensor<1>) {
        match self {
            Schedule::Fixed(s) => (
                col(vec![s.gamma(0.0)], device),
                col(vec![s.gamma(1.0)], device),
            ),
            Schedule::Learned(l) => l.endpoints(),
        }
    }

    /// γ(t) as a number (for samplers and reports), computed on the parameters' own device.
    pub fn gamma_f64(&self, t: f64) -> f64 {
        match self {
            Schedule::Fixed(s) => s.gamma(t),
            Schedule::Learned(l) => {
                let d = l.devices().into_iter().next().unwrap_or_else(Device::flex);
                let (g, _) = l.gamma(col(vec![t], &d));
                let v: f32 = g.into_scalar();
                v as f64
            }
        }
    }

    /// T of a DDPM table (see [`NoiseSchedule::table_steps`]).
    pub fn table_steps(&self) -> Option<usize> {
        match self {
            Schedule::Fixed(s) => s.table_steps(),
            Schedule::Learned(_) => None,
        }
    }
}

/// One row of a schedule table.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ScheduleRow {
    pub t: usize,
    pub beta: f64,
    pub alpha_bar: f64,
    pub snr: f64,
    pub log_snr: f64,
    pub posterior_variance: f64,
}

/// A table of T steps: the DDPM schedule's own, or a continuous γ read at t = i/T (i = 1..T)
/// with ᾱ_0 = α²(0).
pub fn table(kind: ScheduleKind, sched: &dyn NoiseSchedule, t_steps: usize) -> Vec<ScheduleRow> {
    let n = t_steps.max(1);
    let alpha_bar: Vec<f64> = match kind {
        ScheduleKind::Linear => Discrete::linear(n).alpha_bar,
        ScheduleKind::Cosine => Discrete::cosine(n).alpha_bar,
        _ => (1..=n).map(|i| sched.alpha2(i as f64 / n as f64)).collect(),
    };
    let ab0 = match kind {
        ScheduleKind::Linear | ScheduleKind::Cosine => 1.0,
        _ => sched.alpha2(0.0),
    };
    (1..=n)
        .map(|t| {
            let ab = alpha_bar[t - 1];
            let prev = if t == 1 { ab0 } else { alpha_bar[t - 2] };
            let alpha = ab / prev;
            let pv = if t == 1 && ab0 == 1.0 {
                0.0
            } else {
                super::process::posterior_variance(alpha, ab, prev)
            };
            ScheduleRow {
                t,
                beta: 1.0 - alpha,
                alpha_bar: ab,
                snr: super::process::snr(ab),
                log_snr: ab.ln() - (1.0 - ab).ln(),
                posterior_variance: pv,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuous_cosine_hits_its_endpoints_and_has_the_tables_shape() {
        let c = CosineLogSnr {
            gamma_min: -13.3,
            gamma_max: 5.0,
        };
        assert!((c.gamma(0.0) + 13.3).abs() < 1e-12 && (c.gamma(1.0) - 5.0).abs() < 1e-12);
        // Its derivative is the closed form of the trait's finite difference.
        for t in [0.01, 0.3, 0.5, 0.77, 0.99] {
            let h = 1e-6;
            let fd = (c.gamma(t + h) - c.gamma(t - h)) / (2.0 * h);
            assert!((c.dgamma_dt(t) - fd).abs() < 1e-5 * fd.abs(), "t = {t}");
            assert!(c.dgamma_dt(t) > 0.0);
        }
        // Over the cosine table's own range its interior follows the table (which adds the
        // offset s = 0.008 and caps β: agreement to 0.15 in γ across the middle 90 %).
        let table = Discrete::cosine(1000);
        let (g0, g1) = (table.gamma(0.0), table.gamma(0.999));
        let c = CosineLogSnr {
            gamma_min: g0,
            gamma_max: g1,
        };
        for i in 5..95 {
            let t = i as f64 / 100.0;
            let d = (c.gamma(t) - table.gamma(t * 0.999)).abs();
            assert!(d < 0.15, "t = {t}: {d}");
        }
    }

    #[test]
    fn cosine_betas_are_not_zero() {
        // The integer-division bug made every β but the last 0.
        let c = Discrete::cosine(1000);
        assert!(
            c.beta[..999].iter().all(|&b| b > 1e-5),
            "{:?}",
            &c.beta[..3]
        );
        assert_eq!(c.beta[999], 0.999);
    }

    #[test]
    fn discrete_gamma_hits_its_steps_and_is_monotone() {
        let d = Discrete::linear(1000);
        let g1 = (1.0 - d.alpha_bar[0]).ln() - d.alpha_bar[0].ln();
        assert!((d.gamma(0.0) - g1).abs() < 1e-12);
        let mut prev = f64::NEG_INFINITY;
        for i in 0..=200 {
            let g = d.gamma(i as f64 / 200.0);
            assert!(g > prev);
            prev = g;
        }
        let lg = LinearGamma {
            gamma_min: -13.3,
            gamma_max: 5.0,
        };
        assert!((lg.alpha2(0.3) + lg.sigma2(0.3) - 1.0).abs() < 1e-15);
        assert!((lg.dgamma_dt(0.5) - 18.3).abs() < 1e-12);
        // The default central difference agrees with the closed form.
        struct Numeric(LinearGamma);
        impl NoiseSchedule for Numeric {
            fn gamma(&self, t: f64) -> f64 {
                self.0.gamma(t)
            }
        }
        assert!((Numeric(lg).dgamma_dt(0.5) - 18.3).abs() < 1e-6);
    }
}
