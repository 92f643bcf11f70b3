//! The modern family against closed forms and oracles (MATH.md M47–M48): flow matching's
//! straight path (the optimal velocity of a Gaussian mixture in closed form, the oracle's ELBO
//! and ODE likelihood at the true NLL, Heun's samples at the data's moments) and EDM (its
//! sampler on the exact denoiser reproduces the data's moments, with and without churn).

use burn::tensor::{Device, Tensor, TensorData};
use elbo::data::toy::Mixture;
use elbo::diffusion::elbo::{diffusion_elbo, Decoder, ElboOptions};
use elbo::diffusion::oracle::MixtureOracle;
use elbo::diffusion::schedule::{LinearGamma, LinearPath, NoiseSchedule};
use elbo::diffusion::{eps_hat, Denoiser, Prediction, Process, Schedule};
use elbo::elbo::Stat;
use elbo::rng::seeded;
use elbo::sample::edm::edm_grid;
use elbo::sample::{sample_loop, EdmSampler, FlowHeun, Sampler};

fn rows(x: &[f32], b: usize, d: usize) -> Tensor<2> {
    Tensor::from_data(TensorData::new(x.to_vec(), [b, d]), &Device::flex())
}

/// Flow matching's default path: t = sigmoid(γ/2) uniform over γ ∈ [−13.3, 13.3].
const PATH: LinearPath = LinearPath {
    gamma_min: -13.3,
    gamma_max: 13.3,
};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The optimal velocity E[ε − x | z_t] of a Gaussian mixture on the straight path at
/// t = sigmoid(γ/2), written from its definition in f64: per component k, z = (1 − t) x + t ε
/// with x ~ N(m_k, s_k² I) gives v_k = α² s_k² + σ², E[ε | z, k] = σ (z − α m_k)/v_k and
/// E[x | z, k] = m_k + α s_k² (z − α m_k)/v_k; the components are weighted by their
/// responsibilities r_k ∝ π_k N(z; α m_k, v_k I).
fn optimal_velocity(m: &Mixture, z: &[f64], gamma: f64) -> Vec<f64> {
    let (a, s) = (sigmoid(-0.5 * gamma), sigmoid(0.5 * gamma));
    let d = z.len();
    let logs: Vec<f64> = (0..m.weights.len())
        .map(|k| {
            let v = a * a * m.stds[k].powi(2) + s * s;
            let sq: f64 = (0..d).map(|j| (z[j] - a * m.means[k][j]).powi(2)).sum();
            m.weights[k].ln() - 0.5 * sq / v - 0.5 * d as f64 * v.ln()
        })
        .collect();
    let top = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logs.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut u = vec![0.0; d];
    for (k, wk) in w.iter().enumerate() {
        let v = a * a * m.stds[k].powi(2) + s * s;
        for j in 0..d {
            let r = z[j] - a * m.means[k][j];
            let e = s * r / v;
            let x = m.means[k][j] + a * m.stds[k].powi(2) * r / v;
            u[j] += wk / total * (e - x);
        }
    }
    u
}

#[test]
fn the_mixture_oracles_velocity_is_the_closed_form_on_the_straight_path() {
    // The oracle predicts x̂_0 (M32); converted exactly to the velocity (M48) it must be the
    // closed form above at every t, from near the data (t = 0.01) to near the noise (0.99).
    // Tolerance: f32 arithmetic on values of a few units, 2e-3 absolute.
    let m = Mixture::named("grid9").unwrap();
    let oracle = MixtureOracle {
        mixture: m.clone(),
        process: Process::Linear,
    };
    let dev = Device::flex();
    let n = 64;
    let z0 = elbo::rng::randn(&mut seeded(1), [n, 2], &dev) * 2.0;
    let z = elbo::elbo::to_f32(z0.clone()).unwrap();
    for t in [0.01f64, 0.2, 0.5, 0.8, 0.99] {
        let gamma = 2.0 * (t / (1.0 - t)).ln();
        let g = Tensor::<1>::from_data(TensorData::new(vec![gamma as f32; n], [n]), &dev);
        let (alpha, sigma) = Process::Linear.alpha_sigma(g.clone());
        let e = eps_hat(&oracle, z0.clone(), g, None);
        let u = Prediction::Flow.from_eps(e, z0.clone(), alpha, sigma);
        let u = elbo::elbo::to_f32(u).unwrap();
        for i in 0..n {
            let zi = [z[2 * i] as f64, z[2 * i + 1] as f64];
            let want = optimal_velocity(&m, &zi, gamma);
            for j in 0..2 {
                assert!(
                    (u[2 * i + j] as f64 - want[j]).abs() < 2e-3 * (1.0 + want[j].abs()),
                    "t = {t}, z = {zi:?}: û_{j} = {} vs {}",
                    u[2 * i + j],
                    want[j]
                );
            }
        }
    }
}

#[test]
fn the_flow_oracles_elbo_is_the_true_nll() {
    // With the exact denoiser only the endpoints lose: on the straight path over
    // γ ∈ [−13.3, 13.3] the reconstruction's loss is about D/(2 SNR_max s²) and the prior's
    // α_1² E‖x‖²/(2σ_1²), both under 1e-4 nats here. So the bound's mean over 2,000 points must
    // be the true NLL within 3 of its Monte-Carlo standard errors (paired per point; 400 time
    // samples each), and the estimate precise enough to mean something (se < 0.04 nats). The
    // bound depends on the schedule through its endpoints only (M29), so time is drawn on
    // linear γ between them, whose integrand has the smallest spread (γ' constant); the
    // straight path's own time (γ' up to 1,500 at its ends) gives the same mean, noisier.
    let m = Mixture::named("grid9").unwrap();
    let n = 2000;
    let x = m.sample(n, &mut seeded(4));
    let den = MixtureOracle {
        mixture: m.clone(),
        process: Process::Linear,
    };
    let sched = LinearGamma {
        gamma_min: PATH.gamma_min,
        gamma_max: PATH.gamma_max,
    };
    let e = diffusion_elbo(
        &den,
        &Schedule::Fixed(&sched),
        rows(&x, n, 2),
        Decoder::Gaussian,
        ElboOptions {
            t_steps: None,
            t_samples: 400,
            ..Default::default()
        },
        None,
        &mut seeded(5),
    )
    .unwrap();
    let total = elbo::elbo::to_f64(e.recon + e.prior + e.diffusion).unwrap();
    let diffs: Vec<f64> = total
        .iter()
        .zip(x.chunks_exact(2))
        .map(|(b, r)| b + m.log_density(&[r[0] as f64, r[1] as f64]))
        .collect();
    let gap = Stat::of(&diffs);
    eprintln!("flow oracle: −ELBO − NLL {gap:?}");
    assert!(gap.se < 0.04, "too noisy to judge: {gap:?}");
    assert!(gap.mean.abs() < 3.0 * gap.se, "gap {gap:?}");
}

#[test]
fn the_flow_oracles_ode_likelihood_is_the_true_density() {
    // M37 on the straight path: the probability-flow ODE of the exact denoiser carries the
    // prior's density to log p(x) point by point (the ODE needs nothing of the process but
    // σ/α = e^{γ/2}). Over γ ∈ [−13.3, 20] the prior's mismatch is α_1 |m·x| ≈ 5e-5 · 10 nats;
    // the solver's error at rtol = atol = 1e-6 in f32 is under 1e-3: 2e-3 nats bounds both.
    use elbo::diffusion::ode::{log_density, Divergence, OdeOptions};
    let m = Mixture::named("ring8").unwrap();
    let x = m.sample(10, &mut seeded(8));
    let oracle = MixtureOracle {
        mixture: m.clone(),
        process: Process::Linear,
    };
    let opts = OdeOptions {
        rtol: 1e-6,
        atol: 1e-6,
        logp_tol: None,
        divergence: Divergence::Exact,
    };
    // The data as the ODE sees them at γ_0: the data convolved with N(0, e^{γ_0}) in x̄.
    let r = log_density(
        &oracle,
        Tensor::from_data(
            TensorData::new(x.clone(), [10, 2]),
            &Device::flex().autodiff(),
        ),
        -13.3,
        20.0,
        None,
        &opts,
        &mut seeded(3),
    )
    .unwrap();
    let widened = Mixture {
        weights: m.weights.clone(),
        means: m.means.clone(),
        stds: m
            .stds
            .iter()
            .map(|s| (s * s + (-13.3f64).exp()).sqrt())
            .collect(),
    };
    for (i, row) in x.chunks_exact(2).enumerate() {
        let want = widened.log_density(&[row[0] as f64, row[1] as f64]);
        assert!(
            (r.log_p[i] - want).abs() < 2e-3,
            "point {row:?}: ODE {} vs true {want}",
            r.log_p[i]
        );
    }
}

/// The first two moments of a mixture: mean Σ π m and covariance Σ π (s² I + m mᵀ) − μ μᵀ.
fn mixture_moments(m: &Mixture) -> ([f64; 2], [[f64; 2]; 2]) {
    let mut mu = [0.0; 2];
    let mut second = [[0.0; 2]; 2];
    for k in 0..m.weights.len() {
        let (w, mk, s2) = (m.weights[k], &m.means[k], m.stds[k].powi(2));
        for i in 0..2 {
            mu[i] += w * mk[i];
            for j in 0..2 {
                second[i][j] += w * (mk[i] * mk[j] + if i == j { s2 } else { 0.0 });
            }
        }
    }
    let mut cov = second;
    for i in 0..2 {
        for j in 0..2 {
            cov[i][j] -= mu[i] * mu[j];
        }
    }
    (mu, cov)
}

/// Samples' mean and covariance each within 4 of their own standard errors (from the samples'
/// fourth moments) plus `bias` of the truth.
fn assert_moments(name: &str, samples: &[f32], m: &Mixture, bias: f64) {
    let (mu, cov) = mixture_moments(m);
    let n = samples.len() / 2;
    let x: Vec<[f64; 2]> = samples
        .chunks_exact(2)
        .map(|r| [r[0] as f64, r[1] as f64])
        .collect();
    for i in 0..2 {
        let v: Vec<f64> = x.iter().map(|r| r[i]).collect();
        let st = Stat::of(&v);
        assert!(
            (st.mean - mu[i]).abs() < 4.0 * st.se + bias,
            "{name}: mean_{i} {st:?} vs {}",
            mu[i]
        );
        for j in 0..2 {
            let p: Vec<f64> = x.iter().map(|r| (r[i] - mu[i]) * (r[j] - mu[j])).collect();
            let st = Stat::of(&p);
            assert!(
                (st.mean - cov[i][j]).abs() < 4.0 * st.se + bias,
                "{name}: cov_{i}{j} {st:?} vs {} ({n} samples)",
                cov[i][j]
            );
        }
    }
}

#[test]
fn flow_heun_draws_the_mixtures_moments() {
    // Heun on the straight path, 50 steps (99 evaluations) of the oracle, 8,000 samples of
    // ring8 from the prior N(0, σ_1² I): mean and covariance within 4 standard errors plus 0.01
    // of discretisation bias (on a ring of radius about 2: 0.5% of its variance).
    let m = Mixture::named("ring8").unwrap();
    let oracle = MixtureOracle {
        mixture: m.clone(),
        process: Process::Linear,
    };
    let n = 8000;
    let prior_sd = Process::Linear.prior_var(PATH.gamma(1.0)).sqrt();
    let z = elbo::rng::randn(&mut seeded(11), [n, 2], &Device::flex()) * prior_sd;
    let x = sample_loop(
        &FlowHeun,
        &oracle,
        &Schedule::Fixed(&PATH),
        z,
        50,
        None,
        &mut seeded(12),
        &mut |_| {},
    )
    .unwrap();
    assert_moments("flow-heun", &elbo::elbo::to_f32(x).unwrap(), &m, 0.01);
}

#[test]
fn the_edm_sampler_on_the_exact_denoiser_draws_the_mixtures_moments() {
    // EDM's Heun on its ρ = 7 grid from σ = 80 to 0.002 (VE, M47), 32 levels (63 evaluations),
    // deterministic and with churn (S_churn = 10 over S_tmin … S_tmax = 0.05 … 50, S_noise =
    // 1.003), 8,000 samples of ring8 each: moments within 4 standard errors plus 0.01.
    let m = Mixture::named("ring8").unwrap();
    let oracle = MixtureOracle {
        mixture: m.clone(),
        process: Process::VarianceExploding,
    };
    let (g_max, g_min) = (2.0 * 80f64.ln(), 2.0 * 0.002f64.ln());
    let grid = edm_grid(g_max, g_min, 32);
    for churn in [0.0, 10.0] {
        let sampler = EdmSampler {
            churn,
            s_tmin: 0.05,
            s_tmax: 50.0,
            s_noise: 1.003,
        };
        let n = 8000;
        let z = elbo::rng::randn(&mut seeded(21), [n, 2], &Device::flex()) * 80.0;
        let x = sampler
            .sample_path(&oracle, &grid, z, None, &mut seeded(22), &mut |_| {})
            .unwrap();
        assert_moments(
            &format!("edm churn {churn}"),
            &elbo::elbo::to_f32(x).unwrap(),
            &m,
            0.01,
        );
    }
    // Its grid ends at σ_min and its NFE is 2N − 1, counted.
    assert!((grid[31] - g_min).abs() < 1e-9 && (grid[0] - g_max).abs() < 1e-9);
    struct Counting<'a>(&'a MixtureOracle, std::cell::Cell<usize>);
    impl Denoiser for Counting<'_> {
        fn prediction(&self) -> Prediction {
            self.0.prediction()
        }
        fn process(&self) -> Process {
            self.0.process()
        }
        fn predict(&self, z: Tensor<2>, g: Tensor<1>, c: elbo::diffusion::Cond) -> Tensor<2> {
            self.1.set(self.1.get() + 1);
            self.0.predict(z, g, c)
        }
    }
    let counting = Counting(&oracle, std::cell::Cell::new(0));
    let churned = EdmSampler {
        churn: 10.0,
        s_tmin: 0.05,
        s_tmax: 50.0,
        s_noise: 1.003,
    };
    churned
        .sample_path(
            &counting,
            &grid,
            rows(&[1.0, 2.0], 1, 2),
            None,
            &mut seeded(1),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(Some(counting.1.get()), churned.nfe(32));
    assert_eq!(churned.nfe(32), Some(63));
}
