//! How many time samples a Monte-Carlo bound needs: a pilot round measures the estimator's
//! variance, the number of samples that meets a target standard error is chosen from it, and the
//! pilot's samples are then discarded, so that the final estimate is drawn with a sample count
//! that does not depend on its own noise. (Stopping as soon as two replicates happen to agree
//! would bias the bound low: the rounds that stop are those whose noise was favourable.)
//!
//! Each round runs two independent replicates of m samples per example; their disagreement
//! measures the Monte-Carlo error of the stratified estimate, whose iid formula would overstate
//! it many times over for a smooth integrand: per example Var(average) ≈ E(a − b)²/4.

use crate::Result;

/// The largest number of samples per replicate and example.
pub const CAP_PER_REPLICATE: usize = 256;

/// The outcome of an adaptive estimate.
#[derive(Debug, Clone)]
pub struct Adaptive {
    /// Samples per replicate and example in the final round.
    pub per_replicate: usize,
    /// Monte-Carlo standard error of the mean over examples, from the final round.
    pub mc_se: f64,
    /// The final round's per-example estimates, both replicates.
    pub estimates: [Vec<f64>; 2],
    /// The final standard error is above the target (the cap or the time budget stopped it, a
    /// fixed count was too few, or the pilot's plan fell short by chance).
    pub above_target: bool,
}

/// Monte-Carlo standard error of the mean over examples of two replicates' average: the
/// per-example variances (a − b)²/4 summed as if examples were independent.
pub fn replicate_se(est: &[Vec<f64>; 2]) -> f64 {
    let n = est[0].len().max(1) as f64;
    let var: f64 = est[0]
        .iter()
        .zip(&est[1])
        .map(|(a, b)| (a - b).powi(2) / 4.0)
        .sum();
    var.sqrt() / n
}

/// The fraction of the target the sample count is planned for.
const PLAN_MARGIN: f64 = 0.9;

/// Estimate with `fixed` samples per replicate, or else with as many as a pilot round of `pilot`
/// says will bring the standard error to `target` (at most [`CAP_PER_REPLICATE`]).
/// `round(m, index)` runs one round of two replicates with m samples per example and returns
/// each replicate's per-example estimates; every call must draw fresh noise (its index differs).
///
/// `after_pilot()` returns the factor by which the final rounds' per-sample variance is expected
/// to shrink relative to the pilot's (1: same estimator; below 1 when the final rounds
/// importance-sample what the pilot measured); the sample count is planned with it.
///
/// `budget_secs`, when given, caps the final round at the samples that fit in that many seconds
/// at the pilot's measured pace (the standard error reported is then the one reached).
pub fn estimate<F, A>(
    fixed: Option<usize>,
    pilot: usize,
    target: f64,
    budget_secs: Option<f64>,
    mut round: F,
    after_pilot: A,
) -> Result<Adaptive>
where
    F: FnMut(usize, u64) -> Result<[Vec<f64>; 2]>,
    A: FnOnce() -> f64,
{
    let per_replicate = match fixed {
        Some(m) => m.max(1),
        None => {
            let m0 = pilot.max(1);
            let clock = std::time::Instant::now();
            let se0 = replicate_se(&round(m0, 0)?);
            let secs0 = clock.elapsed().as_secs_f64().max(1e-6);
            let shrink = after_pilot().clamp(0.05, 1.0);
            // Var ∝ 1/m: m = m0 (se0/(0.9 target))², rounded up (stratification only does
            // better). Planned for 90% of the target, so that the final round's own noise (a
            // few percent of the standard error with hundreds of examples) seldom leaves it
            // above the target, where a warning says so.
            let want = (m0 as f64 * shrink * (se0 / (PLAN_MARGIN * target)).powi(2)).ceil();
            let cap = match budget_secs {
                // Work ∝ m: the pilot's m0 samples took secs0.
                Some(b) => ((m0 as f64 * b / secs0).floor() as usize).clamp(1, CAP_PER_REPLICATE),
                None => CAP_PER_REPLICATE,
            };
            if want.is_finite() {
                (want as usize).clamp(1, cap)
            } else {
                cap
            }
        }
    };
    let estimates = round(per_replicate, 1)?;
    let mc_se = replicate_se(&estimates);
    Ok(Adaptive {
        per_replicate,
        mc_se,
        above_target: mc_se > target,
        estimates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::seeded;
    use rand::Rng as _;

    /// A skewed per-sample loss: for example k, value c_k · E with E ~ Exponential(1) (mean c_k).
    fn skewed_round(c: &[f64], m: usize, rng: &mut crate::rng::Rng) -> [Vec<f64>; 2] {
        let rep = |rng: &mut crate::rng::Rng| -> Vec<f64> {
            c.iter()
                .map(|&ck| {
                    (0..m)
                        .map(|_| -ck * (1.0 - rng.gen::<f64>()).ln())
                        .sum::<f64>()
                        / m as f64
                })
                .collect()
        };
        [rep(rng), rep(rng)]
    }

    #[test]
    fn the_pilot_rule_is_unbiased_on_a_skewed_loss() {
        // Ten examples (a small test set, where stopping on agreement hurts most), truth = mean
        // of c_k = 1.9. Over 4,000 seeds the mean of the estimates must be within 4 standard
        // errors of the truth; the standard error of that mean is about 0.002, so a bias of
        // 1% of the truth (0.019) would fail.
        let c: Vec<f64> = (0..10).map(|k| 1.0 + 0.2 * k as f64).collect();
        let truth = c.iter().sum::<f64>() / c.len() as f64;
        let mut finals = Vec::new();
        for seed in 0..4000 {
            let mut rng = seeded(seed);
            let a = estimate(
                None,
                2,
                0.05,
                None,
                |m, _| Ok(skewed_round(&c, m, &mut rng)),
                || 1.0,
            )
            .unwrap();
            let mean: f64 = a.estimates[0]
                .iter()
                .zip(&a.estimates[1])
                .map(|(x, y)| 0.5 * (x + y))
                .sum::<f64>()
                / c.len() as f64;
            finals.push(mean);
        }
        let s = crate::elbo::Stat::of(&finals);
        assert!(
            (s.mean - truth).abs() < 4.0 * s.se,
            "mean estimate {s:?} vs truth {truth}"
        );
        assert!(s.se < 0.005, "too noisy to judge: {s:?}");
    }

    #[test]
    fn the_pilot_chooses_enough_samples_for_the_target() {
        // The per-example sd of one sample is c_k; the target is met (within the noise of one
        // round's variance estimate, a factor 1.5 here) and more samples are asked for a
        // tighter target.
        let c = vec![1.0; 50];
        let mut rng = seeded(7);
        let loose = estimate(
            None,
            4,
            0.02,
            None,
            |m, _| Ok(skewed_round(&c, m, &mut rng)),
            || 1.0,
        )
        .unwrap();
        let tight = estimate(
            None,
            4,
            0.01,
            None,
            |m, _| Ok(skewed_round(&c, m, &mut rng)),
            || 1.0,
        )
        .unwrap();
        assert!(loose.mc_se < 1.5 * 0.02, "{loose:?}");
        assert!(
            tight.per_replicate > 2 * loose.per_replicate,
            "{tight:?} vs {loose:?}"
        );
        assert!(!loose.above_target);
        let capped = estimate(
            None,
            4,
            1e-6,
            None,
            |m, _| Ok(skewed_round(&c, m, &mut rng)),
            || 1.0,
        )
        .unwrap();
        assert_eq!(capped.per_replicate, CAP_PER_REPLICATE);
        assert!(capped.above_target);
    }

    #[test]
    fn a_time_budget_caps_the_final_round_and_a_variance_factor_shrinks_it() {
        // A round of m samples takes m × 4 ms. Pilot m0 = 4 (16 ms); a 0.2 s budget allows about
        // 4 · 0.2/0.016 = 50 samples per replicate; sleep overheads and a loaded machine only
        // make the pilot slower and the cap lower, so it lands at or below 50, far below the
        // 256 the tiny target asks for, and the result says it missed.
        let c = vec![1.0; 20];
        let mut rng = seeded(8);
        let slow = |m: usize, rng: &mut crate::rng::Rng| {
            std::thread::sleep(std::time::Duration::from_millis(4 * m as u64));
            skewed_round(&c, m, rng)
        };
        let b = estimate(
            None,
            4,
            1e-6,
            Some(0.2),
            |m, _| Ok(slow(m, &mut rng)),
            || 1.0,
        )
        .unwrap();
        assert!((1..=50).contains(&b.per_replicate), "{b:?}");
        assert!(b.above_target);
        // A pilot that says the final estimator has a quarter of the variance plans a quarter
        // of the samples (within rounding).
        let mut r1 = seeded(9);
        let mut r2 = seeded(9);
        let full = estimate(
            None,
            4,
            0.05,
            None,
            |m, _| Ok(skewed_round(&c, m, &mut r1)),
            || 1.0,
        )
        .unwrap();
        let quarter = estimate(
            None,
            4,
            0.05,
            None,
            |m, _| Ok(skewed_round(&c, m, &mut r2)),
            || 0.25,
        )
        .unwrap();
        assert!(
            quarter
                .per_replicate
                .abs_diff(full.per_replicate.div_ceil(4))
                <= 1,
            "{quarter:?} vs {full:?}"
        );
    }
}
