//! Decoders p(x | z_0) over the 256 levels of 8-bit data (MATH.md M22), with the levels scaled to
//! x_k = 2k/255 − 1 and the decoder's mean μ = z_0/α_0 at scale s = σ_0/α_0 = e^{γ_0/2}.
//!
//! | code | math |
//! | --- | --- |
//! | `mean` | μ = z_0/α_0 |
//! | `log_s2` | log s² = γ_0 |
//!
//! Two forms, both exact distributions over the 256 levels:
//! - [`bin_mass_nll`] (Ho et al. 2020): the Gaussian N(μ, s²) mass of each level's bin
//!   [x_k − 1/255, x_k + 1/255], the end bins extended to ±∞.
//! - [`softmax_nll`] (Kingma et al. 2021): a softmax over the levels with logits
//!   −½ (μ − x_k)²/s², the Gaussian density read at each level and normalised.

use burn::tensor::{Tensor, TensorData};

/// Half the distance between two neighbouring levels.
const HALF_BIN: f64 = 1.0 / 255.0;

/// log erfc(y) for y ≥ 0, by the Chebyshev-fitted form erfc(y) = t·exp(−y² + P(t)),
/// t = 1/(1 + y/2), fractional error below 1.2e-7 for every y ≥ 0 (Press et al., Numerical
/// Recipes, `erfcc`): in log space, so the far tail never underflows.
fn log_erfc(y: Tensor<2>) -> Tensor<2> {
    const C: [f64; 10] = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let t = (y.clone() * 0.5 + 1.0).recip();
    let mut p = t.clone() * C[9];
    for &c in C[1..9].iter().rev() {
        p = (p + c) * t.clone();
    }
    t.log() - y.square() + p + C[0]
}

/// log Q(u) = log P(Z > u) of a standard normal, for any u, in log space.
fn log_upper_tail(u: Tensor<2>) -> Tensor<2> {
    let le = log_erfc(u.clone().abs() * std::f64::consts::FRAC_1_SQRT_2);
    let positive = le.clone() + (0.5f64).ln(); // u ≥ 0: log(½ erfc(u/√2))
    let negative = (-(le.exp() * 0.5)).log1p(); // u < 0: log(1 − Q(−u))
    positive.mask_where(u.lower_elem(0.0), negative)
}

/// (M22) −log P(x | μ, s) per example under bin masses, `[B]`, for `x`, `mean` `[B, D]` and
/// `log_s2` `[1]`.
///
/// In log space throughout: a bin [a, b] (in units of s around μ, the end bins open) is turned
/// so that it lies mostly on the upper side, P = Q(u₁) − Q(u₂) with u₁ < u₂, and
/// log P = log Q(u₁) + log(1 − e^{log Q(u₂) − log Q(u₁)}): exact in the far tails, where a
/// difference of two CDFs would be 0 (a bin 8 s from μ has mass 1e-15, below f32's resolution
/// of 1).
pub fn bin_mass_nll(x: Tensor<2>, mean: Tensor<2>, log_s2: Tensor<1>) -> Tensor<1> {
    let s = (log_s2 * 0.5).exp().unsqueeze_dim::<2>(1); // [1, 1]
                                                        // ±1e4: open ends (Q(1e4) is e^{−5e7}, zero after the exponential; Q(−1e4) = 1).
    let a = ((x.clone() - HALF_BIN - mean.clone()) / s.clone())
        .mask_fill(x.clone().lower_elem(-1.0 + HALF_BIN), -1e4);
    let b = ((x.clone() + HALF_BIN - mean) / s).mask_fill(x.greater_elem(1.0 - HALF_BIN), 1e4);
    let lower_side = (a.clone() + b.clone()).lower_elem(0.0);
    let u1 = a.clone().mask_where(lower_side.clone(), -b.clone());
    let u2 = b.mask_where(lower_side, -a);
    let l1 = log_upper_tail(u1);
    let l2 = log_upper_tail(u2);
    let log_mass = l1.clone() + (-(l2 - l1).exp()).log1p();
    -log_mass.sum_dim(1).squeeze_dim::<1>(1)
}

/// −log P(x | μ, s) per example under the softmax over the 256 levels, `[B]`:
/// P(k) = exp(−½ (μ − x_k)²/s²) / Σ_j exp(−½ (μ − x_j)²/s²), by log-sum-exp.
///
/// Only levels within 12 s (plus one) of μ's nearest level enter the sum: any other level's
/// weight is below e^{−72} of the nearest one's, far under f32 resolution. At VDM's γ_0 = −13.3
/// that is 7 levels instead of 256; once the window would span the range, all 256 are used.
pub fn softmax_nll(x: Tensor<2>, mean: Tensor<2>, log_s2: Tensor<1>) -> Tensor<1> {
    let device = x.device();
    let [b, d] = x.dims();
    let s = (0.5 * log_s2.clone().into_scalar::<f32>() as f64).exp();
    let w = (12.0 * s / (2.0 * HALF_BIN)).ceil().min(256.0) as usize + 1;
    let inv = (-log_s2).exp(); // [1] = 1/s²
    let inv3 = inv.clone().reshape([1, 1, 1]);
    let mean3 = mean.clone().unsqueeze_dim::<3>(2); // [B, D, 1]
    let logits = if 2 * w + 1 >= 256 {
        let levels: Vec<f32> = (0..256)
            .map(|k| (2.0 * k as f64 / 255.0 - 1.0) as f32)
            .collect();
        let levels = Tensor::<3>::from_data(TensorData::new(levels, [1, 1, 256]), &device);
        (mean3 - levels).square() * inv3 * -0.5 // [B, D, 256]
    } else {
        // The window of levels k0 − w … k0 + w around μ's nearest level k0 (clamped into the
        // range, so it always holds a level; no gradient flows through the choice).
        let k0 = ((mean.clone().detach() + 1.0) * 127.5)
            .round()
            .clamp(0.0, 255.0);
        let offsets: Vec<f32> = (0..2 * w + 1).map(|j| j as f32 - w as f32).collect();
        let offsets = Tensor::<3>::from_data(TensorData::new(offsets, [1, 1, 2 * w + 1]), &device);
        let k = k0.unsqueeze_dim::<3>(2) + offsets; // [B, D, 2w + 1]
        let outside = k
            .clone()
            .lower_elem(0.0)
            .bool_or(k.clone().greater_elem(255.0));
        let levels = k / 127.5 - 1.0;
        ((mean3 - levels).square() * inv3 * -0.5).mask_fill(outside, -1e30)
    };
    let m = logits.clone().max_dim(2); // [B, D, 1]
    let lse = ((logits - m.clone()).exp().sum_dim(2).log() + m).reshape([b, d]);
    let own = (mean - x).square() * inv.unsqueeze_dim::<2>(1) * -0.5; // the true level's logit
    (lse - own).sum_dim(1).squeeze_dim::<1>(1)
}

/// −log P(x) per example, `[B]`, of 8-bit data under a per-value discretised logistic (Salimans
/// et al. 2017, PixelCNN++; the decoder of the VAE and HVAE on 8-bit images): levels scaled to
/// x_k = 2k/255 − 1, mass of each level's bin [x_k − 1/255, x_k + 1/255] under Logistic(μ, s),
/// the end bins extended to ±∞. `x`, `mean`, `log_s` are `[B, D]`; log s is clamped at −7.
///
/// In log space throughout: log σ(a) = a − softplus(a) at the lower end, log(1 − σ(b)) =
/// −softplus(b) at the upper end; an interior bin whose mass underflows (below 1e-5) is scored by
/// the density at its centre times the bin width.
pub fn logistic_nll(x: Tensor<2>, mean: Tensor<2>, log_s: Tensor<2>) -> Tensor<1> {
    use crate::dist::softplus;
    let log_s = log_s.clamp_min(-7.0);
    let inv_s = (-log_s.clone()).exp();
    let centred = x.clone() - mean;
    let plus = (centred.clone() + HALF_BIN) * inv_s.clone();
    let minus = (centred.clone() - HALF_BIN) * inv_s.clone();
    let log_cdf_plus = plus.clone() - softplus(plus.clone()); // log σ(plus)
    let log_one_minus_cdf_minus = -softplus(minus.clone()); // log (1 − σ(minus))
    let delta = burn::tensor::activation::sigmoid(plus) - burn::tensor::activation::sigmoid(minus);
    let mid = centred * inv_s;
    let log_pdf_mid = mid.clone() - log_s - softplus(mid) * 2.0;
    let interior = delta
        .clone()
        .clamp_min(1e-12)
        .log()
        .mask_where(delta.lower_elem(1e-5), log_pdf_mid + (2.0 * HALF_BIN).ln());
    let lp = interior
        .mask_where(x.clone().lower_elem(-1.0 + HALF_BIN), log_cdf_plus)
        .mask_where(x.greater_elem(1.0 - HALF_BIN), log_one_minus_cdf_minus);
    -lp.sum_dim(1).squeeze_dim::<1>(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    /// The same decoders in f64 on one pixel, written from the definitions.
    fn reference(level: usize, mu: f64, s: f64) -> (f64, f64) {
        let x = |k: usize| 2.0 * k as f64 / 255.0 - 1.0;
        let phi = |v: f64| 0.5 * (1.0 + erf(v / std::f64::consts::SQRT_2));
        let hi = if level == 255 {
            1.0
        } else {
            phi((x(level) + HALF_BIN - mu) / s)
        };
        let lo = if level == 0 {
            0.0
        } else {
            phi((x(level) - HALF_BIN - mu) / s)
        };
        let logits: Vec<f64> = (0..256).map(|k| -0.5 * ((mu - x(k)) / s).powi(2)).collect();
        let lse = crate::data::toy::log_sum_exp(&logits);
        (-(hi - lo).ln(), lse - logits[level])
    }

    /// erf by its series/continued fraction is not in std; a 1e-13-accurate Taylor series for
    /// |v| < 3 and the asymptotic complement beyond is enough for a test reference.
    fn erf(v: f64) -> f64 {
        if v.abs() > 5.5 {
            return v.signum();
        }
        // Σ (−1)^n v^{2n+1} / (n! (2n+1)), summed until terms vanish.
        let (mut term, mut sum, mut n) = (v, v, 0.0f64);
        loop {
            n += 1.0;
            term *= -v * v / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-17 * sum.abs().max(1e-300) {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn discretised_logistic_matches_its_definition() {
        // P(k) = σ((x_k + 1/255 − μ)/s) − σ((x_k − 1/255 − μ)/s), the end bins open; the 256
        // masses sum to one; values to 1e-4 relative (f32 arithmetic).
        let d = Device::flex();
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let x = |k: usize| 2.0 * k as f64 / 255.0 - 1.0;
        for &(mu, log_s) in &[(0.1f64, -3.0f64), (-0.97, -5.0), (0.99, -2.0), (0.0, 0.5)] {
            let s = log_s.exp();
            let p = |k: usize| {
                let hi = if k == 255 {
                    1.0
                } else {
                    sig((x(k) + HALF_BIN - mu) / s)
                };
                let lo = if k == 0 {
                    0.0
                } else {
                    sig((x(k) - HALF_BIN - mu) / s)
                };
                hi - lo
            };
            let total: f64 = (0..256).map(p).sum();
            assert!((total - 1.0).abs() < 1e-9);
            for k in [0usize, 3, 128, 140, 254, 255] {
                let want = -p(k).ln();
                if !want.is_finite() || want > 20.0 {
                    continue; // far tails: the centre-density approximation applies instead
                }
                let t =
                    |v: f64| Tensor::<2>::from_data(TensorData::new(vec![v as f32], [1, 1]), &d);
                let got: f32 = logistic_nll(t(x(k)), t(mu), t(log_s)).into_scalar();
                assert!(
                    (got as f64 - want).abs()
                        < 1e-4 * (1.0 + want.abs()) + 1e-3 * (1.0 / s).min(50.0) * 1e-3,
                    "k {k} μ {mu} log s {log_s}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn both_decoders_match_their_definitions() {
        // Interior and end levels, means on and between levels, a sharp and a wide scale.
        let d = Device::flex();
        for &(level, off, log_s2) in &[
            (0usize, 0.001f64, -10.0f64),
            (255, -0.003, -10.0),
            (100, 0.002, -13.3),
            (37, 0.01, -6.0),
            (200, -0.02, -4.0),
            (0, -0.02, -13.3),
            (255, 0.03, -12.0),
            (128, 0.0, -8.0),
        ] {
            let xk = 2.0 * level as f64 / 255.0 - 1.0;
            let mu = xk + off;
            let s = (0.5 * log_s2).exp();
            let (bin, soft) = reference(level, mu, s);
            let t = |v: f64| Tensor::<2>::from_data(TensorData::new(vec![v as f32], [1, 1]), &d);
            let g = Tensor::<1>::from_data(TensorData::new(vec![log_s2 as f32], [1]), &d);
            let ours_bin: f32 = bin_mass_nll(t(xk), t(mu), g.clone()).into_scalar();
            let ours_soft: f32 = softmax_nll(t(xk), t(mu), g).into_scalar();
            // f32 arithmetic on μ − x (≈ 1e-7 absolute) divided by s: relative to (off/s)².
            let tol = |r: f64| 1e-4 * (1.0 + r.abs()) + 2e-6 * (off / s).abs() / s;
            assert!(
                (ours_bin as f64 - bin).abs() < tol(bin),
                "bin {level}: {ours_bin} vs {bin}"
            );
            assert!(
                (ours_soft as f64 - soft).abs() < tol(soft),
                "softmax {level}: {ours_soft} vs {soft}"
            );
        }
    }

    /// log ∫_a^b φ(z) dz in f64 without cancellation: for a bin on the upper side (a ≥ 0),
    /// log φ(a) + log ∫_0^{b−a} e^{−a w − w²/2} dw by Simpson's rule on 20,000 panels (the
    /// lower side by symmetry); each point's integrand is bounded by 1.
    fn log_gauss_mass(a: f64, b: f64) -> f64 {
        let (a, b) = if a + b < 0.0 { (-b, -a) } else { (a, b) };
        let a0 = a.max(0.0);
        let w_end = (b - a0).min(40.0 + 40.0 / a0.max(1.0));
        let n = 20_000;
        let h = w_end / n as f64;
        let f = |w: f64| (-(a0 * w) - 0.5 * w * w).exp();
        let mut sum = f(0.0) + f(w_end);
        for i in 1..n {
            sum += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        let upper = -0.5 * a0 * a0 - 0.5 * (std::f64::consts::TAU).ln() + (sum * h / 3.0).ln();
        if a >= 0.0 {
            upper
        } else {
            // The part below 0 as well: Φ(0) − Φ(a) = ∫_0^{−a} φ, added in normal space.
            let lower = {
                let n = 20_000;
                let h = -a / n as f64;
                let g = |z: f64| (-0.5 * z * z).exp();
                let mut s = g(0.0) + g(-a);
                for i in 1..n {
                    s += g(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
                }
                s * h / 3.0 / (std::f64::consts::TAU).sqrt()
            };
            (upper.exp() + lower).ln()
        }
    }

    #[test]
    fn bin_masses_stay_exact_in_the_far_tails() {
        // Bins 0.5 to 270 s from μ, interior and end bins, on both sides: the f32 log-space
        // result against an f64 integral of the density over the bin. The tolerance is 1e-4
        // relative plus the f32 error of (x − μ)/s (about 1e-7 · |z|, squared into the
        // exponent as z · δz), with 1e-3 of slack.
        let d = Device::flex();
        let cases: &[(usize, f64, f64)] = &[
            (128, 0.004, -10.0), // 0.5 s: a central bin
            (10, -0.83, -10.0),  // 13 s below
            (60, 0.9, -10.0),    // far above: z ≈ 240
            (200, 0.5, -8.0),    // 1.3 s
            (255, -0.2, -12.0),  // the open top bin, μ far below: P(Z > 470)
            (0, 0.3, -9.0),      // the open bottom bin, μ far above
            (3, -0.9, -13.3),    // a sharp decoder, 4 levels away
            (100, 0.0, -6.0),    // z ≈ 4
        ];
        for &(level, mu, log_s2) in cases {
            let xk = 2.0 * level as f64 / 255.0 - 1.0;
            let s = (0.5 * log_s2).exp();
            let a = if level == 0 {
                -1e4
            } else {
                (xk - HALF_BIN - mu) / s
            };
            let b = if level == 255 {
                1e4
            } else {
                (xk + HALF_BIN - mu) / s
            };
            let want = -log_gauss_mass(a, b);
            let t = |v: f64| Tensor::<2>::from_data(TensorData::new(vec![v as f32], [1, 1]), &d);
            let g = Tensor::<1>::from_data(TensorData::new(vec![log_s2 as f32], [1]), &d);
            let got: f32 = bin_mass_nll(t(xk), t(mu), g).into_scalar();
            let z = a.abs().min(b.abs());
            let tol = 1e-4 * (1.0 + want.abs()) + 2e-7 * z * z + 1e-3;
            assert!(
                (got as f64 - want).abs() < tol,
                "level {level}, μ {mu}, log s² {log_s2}: {got} vs {want} (tol {tol})"
            );
            assert!(want > 0.0 && got.is_finite());
        }
    }
}
