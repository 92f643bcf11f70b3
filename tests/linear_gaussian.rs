//! The ELBO identity (M3) and the importance-weighted bound (M4) on the linear-Gaussian model
//! (M5), whose evidence and posterior are exact: the project's first correctness test. The
//! estimators under test are the ones `elbo eval` uses (`monte_carlo_elbo`,
//! `importance_weighted_bound`).

use burn::tensor::{Device, Tensor, TensorData};
use elbo::dist::gaussian::DiagGaussian;
use elbo::dist::linear_gaussian::{kl_diag_to_full, LinearGaussian, Mat};
use elbo::dist::std_normal_log_prob;
use elbo::elbo::{importance_weighted_bound, monte_carlo_elbo, ImportanceSampled, Stat};
use elbo::rng::{randn, seeded, Rng};
use elbo::Result;

/// The model M5 with a diagonal Gaussian q(z|x) = N(q_mean, diag q_var), the same for every x.
struct Lg {
    lg: LinearGaussian,
    q_mean: Vec<f64>,
    q_var: Vec<f64>,
}

fn row(v: &[f64], dev: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(
            v.iter().map(|&a| a as f32).collect::<Vec<_>>(),
            [1, v.len()],
        ),
        dev,
    )
}

impl ImportanceSampled for Lg {
    fn log_weights(&self, x: Tensor<2>, k: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        let dev = x.device();
        let [b, dd] = x.dims();
        let d = self.lg.latent_dim();
        let n = b * k;
        let q = DiagGaussian::new(
            row(&self.q_mean, &dev).repeat_dim(0, n),
            row(&self.q_var.iter().map(|v| v.ln()).collect::<Vec<_>>(), &dev).repeat_dim(0, n),
        );
        let z = q.rsample_with(randn(rng, [n, d], &dev));
        let wt = Tensor::<2>::from_data(
            TensorData::new(
                self.lg
                    .w
                    .transpose()
                    .a
                    .iter()
                    .map(|&a| a as f32)
                    .collect::<Vec<_>>(),
                [d, dd],
            ),
            &dev,
        );
        let mean = z.clone().matmul(wt) + row(&self.lg.b, &dev);
        let lik = DiagGaussian::new(mean, Tensor::full([n, dd], self.lg.s2.ln(), &dev));
        let x_rep = x.unsqueeze_dim::<3>(1).repeat_dim(1, k).reshape([n, dd]);
        let lw = lik.log_prob(x_rep) + std_normal_log_prob(z.clone()) - q.log_prob(z);
        Ok(lw.reshape([b, k]))
    }
}

/// D = 5, d = 2, with orthogonal columns of W so that the exact posterior is diagonal.
fn model() -> LinearGaussian {
    let c1 = [1.0, 1.0, 0.0, 0.0, 1.0];
    let c2 = [0.5, -0.5, 0.0, 1.0, 0.0];
    let mut a = vec![0.0; 10];
    for i in 0..5 {
        a[i * 2] = c1[i];
        a[i * 2 + 1] = c2[i];
    }
    LinearGaussian {
        w: Mat::new(5, 2, a),
        b: vec![0.1, -0.2, 0.3, 0.0, 0.5],
        s2: 0.5,
    }
}

const X: [f64; 5] = [1.2, 0.3, -0.4, 0.8, 1.9];

fn x_batch(b: usize) -> Tensor<2> {
    let dev = Device::flex();
    row(&X, &dev).repeat_dim(0, b)
}

#[test]
fn m3_exact_posterior_makes_the_elbo_the_evidence() {
    let lg = model();
    let log_px = lg.log_evidence(&X);
    let (mean, cov) = lg.posterior(&X);
    assert!(
        cov.at(0, 1).abs() < 1e-12,
        "posterior must be diagonal for this test"
    );
    let m = Lg {
        q_mean: mean,
        q_var: vec![cov.at(0, 0), cov.at(1, 1)],
        lg,
    };
    // With q = p(z|x) every log weight is log p(x): one sample suffices; f32 rounding only.
    let e = monte_carlo_elbo(&m, x_batch(1), 64, &mut seeded(1)).unwrap()[0];
    assert!((e - log_px).abs() < 2e-4, "ELBO {e} vs log p(x) {log_px}");
}

#[test]
fn m3_identity_holds_for_a_wrong_q() {
    let lg = model();
    let log_px = lg.log_evidence(&X);
    let (mean, cov) = lg.posterior(&X);
    let q_mean = vec![mean[0] + 0.7, mean[1] - 0.4];
    let q_var = vec![cov.at(0, 0) * 3.0, cov.at(1, 1) * 0.4];
    let kl = kl_diag_to_full(&q_mean, &q_var, &mean, &cov);
    let m = Lg { q_mean, q_var, lg };
    // 400 rows × 500 samples = 200,000 log weights; their per-row means are iid.
    let rows = monte_carlo_elbo(&m, x_batch(400), 500, &mut seeded(2)).unwrap();
    let s = Stat::of(&rows);
    // M3: ELBO + KL(q ‖ p(z|x)) = log p(x); 4 standard errors (false-alarm rate 6e-5).
    assert!(
        (s.mean + kl - log_px).abs() < 4.0 * s.se + 1e-4,
        "ELBO {:.5} + KL {kl:.5} = {:.5} vs log p(x) {log_px:.5} (se {:.5})",
        s.mean,
        s.mean + kl,
        s.se
    );
    assert!(kl > 0.5, "the test needs a clearly wrong q (KL {kl})");
    assert!(
        s.mean < log_px - 10.0 * s.se,
        "ELBO must lie below log p(x)"
    );
}

#[test]
fn m4_bound_is_monotone_in_k_and_approaches_the_evidence() {
    let lg = model();
    let log_px = lg.log_evidence(&X);
    let (mean, cov) = lg.posterior(&X);
    let q_mean = vec![mean[0] + 0.7, mean[1] - 0.4];
    let q_var = vec![cov.at(0, 0) * 3.0, cov.at(1, 1) * 0.4];
    let m = Lg { q_mean, q_var, lg };
    let mut rng = seeded(3);
    // E[L_K] estimated from R independent replicates (one per batch row).
    let mut est = |k: usize, r: usize| {
        Stat::of(&importance_weighted_bound(&m, x_batch(r), k, 1000, &mut rng).unwrap())
    };
    let l1 = est(1, 4000);
    let l5 = est(5, 4000);
    let l50 = est(50, 2000);
    let l5000 = est(5000, 40);
    let gaps: Vec<f64> = [l1, l5, l50, l5000]
        .iter()
        .map(|s| log_px - s.mean)
        .collect();
    eprintln!("log p(x) {log_px}: gaps {gaps:?}");
    // Each step up in K must improve the bound by more than 3 combined standard errors.
    for (a, b) in [(l1, l5), (l5, l50)] {
        let se = (a.se * a.se + b.se * b.se).sqrt();
        assert!(
            b.mean - a.mean > 3.0 * se,
            "L_K not increasing: {a:?} → {b:?}"
        );
    }
    assert!(
        l50.mean < log_px + 3.0 * l50.se,
        "L_50 above log p(x): {l50:?} vs {log_px}"
    );
    // L_K → log p(x): the K = 5000 gap is small (well under 1% of the K = 1 gap) and non-negative
    // within its standard error.
    assert!(gaps[3] < 0.01 * gaps[0] + 3.0 * l5000.se, "gaps {gaps:?}");
    assert!(gaps[3] > -3.0 * l5000.se, "gaps {gaps:?}");
    assert!(
        gaps[0] > 0.5,
        "the K = 1 gap (the KL) should be large here: {gaps:?}"
    );
}
