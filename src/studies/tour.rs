//! `elbo tour`: the argument of the ELBO, computed. On the linear-Gaussian model (M5) every
//! quantity is exact, so the evidence (M1), the bound (M2) and the identity between them (M3)
//! can be checked to the last digit, for the exact posterior and for wrong encoders; on a
//! trained VAE or HVAE the importance-weighted bounds (M4) close the gap as K grows.
//!
//! Everything here is f64; the closed forms and the quadrature that shows they are the
//! integrals they claim to be are the linear-Gaussian model's ([`crate::dist::linear_gaussian`]).

use serde::{Deserialize, Serialize};

use crate::dist::linear_gaussian::{
    elbo_closed_form, kl_gaussians, mvn_log_density, quadrature, LinearGaussian, Mat,
};

/// A Gaussian encoder q(z | x) = N(mean, cov) for one x, with a name for the table.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub name: String,
    pub mean: Vec<f64>,
    pub cov: Mat,
}

/// One line of the encoder table: M2 and M3 for one q.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EncoderLine {
    pub encoder: String,
    /// (M2) E_q[log p(x, z) − log q(z | x)], closed form.
    pub elbo: f64,
    /// KL(q(z | x) ‖ p(z | x)), closed form.
    pub kl: f64,
    /// |log p(x) − ELBO − KL| (M3: zero).
    pub identity_error: f64,
}

/// The tour of one linear-Gaussian model at one x.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinearTour {
    pub latent_dim: usize,
    pub x: Vec<f64>,
    /// (M5) log p(x) = log N(x; b, W Wᵀ + s² I).
    pub log_evidence: f64,
    /// (M1) log ∫ p(x | z) p(z) dz by quadrature, and the number of grid points.
    pub quadrature: f64,
    pub quadrature_points: usize,
    /// Bayes' rule: log p(x, z) − log p(z | x) at several z (each equals log p(x)).
    pub chain_rule: Vec<(Vec<f64>, f64)>,
    pub encoders: Vec<EncoderLine>,
}

/// Every quantity of M1–M3 for one model and x, with the exact posterior and a few wrong
/// encoders: its mean shifted, its covariance scaled, its correlations dropped (the best a
/// diagonal q can do for the mean), and the prior.
pub fn linear_tour(lg: &LinearGaussian, x: &[f64], per_axis: usize) -> LinearTour {
    let d = lg.latent_dim();
    let log_evidence = lg.log_evidence(x);
    let (quad, points) = quadrature(lg, x, per_axis);
    let (mu, p) = lg.posterior(x);
    let chain_rule = [vec![0.0; d], mu.clone(), vec![2.0; d]]
        .into_iter()
        .map(|z| {
            let v = lg.log_joint(x, &z) - mvn_log_density(&z, &mu, &p);
            (z, v)
        })
        .collect();
    let scaled = |c: f64| {
        let mut m = p.clone();
        m.a.iter_mut().for_each(|v| *v *= c);
        m
    };
    let mut diag = Mat::new(d, d, vec![0.0; d * d]);
    let prec = p.inverse_spd();
    for i in 0..d {
        diag.a[i * d + i] = 1.0 / prec.at(i, i);
    }
    let identity = Mat::new(
        d,
        d,
        (0..d * d).map(|k| f64::from(k % (d + 1) == 0)).collect(),
    );
    let mut encs = vec![
        Encoder {
            name: "exact posterior p(z|x)".into(),
            mean: mu.clone(),
            cov: p.clone(),
        },
        Encoder {
            name: "mean shifted by 0.5".into(),
            mean: mu.iter().map(|v| v + 0.5).collect(),
            cov: p.clone(),
        },
        Encoder {
            name: "covariance ×4".into(),
            mean: mu.clone(),
            cov: scaled(4.0),
        },
        Encoder {
            name: "covariance ×¼".into(),
            mean: mu.clone(),
            cov: scaled(0.25),
        },
    ];
    if d > 1 {
        encs.push(Encoder {
            name: "diagonal (mean-field) q".into(),
            mean: mu.clone(),
            cov: diag,
        });
    }
    encs.push(Encoder {
        name: "the prior N(0, I)".into(),
        mean: vec![0.0; d],
        cov: identity,
    });
    let encoders = encs
        .iter()
        .map(|q| {
            let elbo = elbo_closed_form(lg, x, &q.mean, &q.cov);
            let kl = kl_gaussians(&q.mean, &q.cov, &mu, &p);
            EncoderLine {
                encoder: q.name.clone(),
                elbo,
                kl,
                identity_error: (log_evidence - elbo - kl).abs(),
            }
        })
        .collect();
    LinearTour {
        latent_dim: d,
        x: x.to_vec(),
        log_evidence,
        quadrature: quad,
        quadrature_points: points,
        chain_rule,
        encoders,
    }
}

/// The two models of the tour: one latent dimension and two (a correlated posterior), D = 3.
pub fn tour_models() -> Vec<(LinearGaussian, Vec<f64>)> {
    vec![
        (
            LinearGaussian {
                w: Mat::new(3, 1, vec![1.0, -0.5, 2.0]),
                b: vec![0.2, 0.0, -0.3],
                s2: 0.25,
            },
            vec![1.1, -0.4, 2.5],
        ),
        (
            LinearGaussian {
                w: Mat::new(3, 2, vec![1.0, 0.8, -0.5, 0.3, 2.0, 1.5]),
                b: vec![0.2, 0.0, -0.3],
                s2: 0.25,
            },
            vec![1.1, -0.4, 2.5],
        ),
    ]
}

/// The tour's text for one model.
pub fn linear_lines(t: &LinearTour, lg: &LinearGaussian) -> Vec<String> {
    let d = t.latent_dim;
    let fmt_v = |v: &[f64]| {
        format!(
            "[{}]",
            v.iter()
                .map(|a| format!("{a:.3}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut out = vec![
        format!(
            "Model (M5): z ~ N(0, I_{d}), x | z ~ N(W z + b, {} I_{}); x = {}",
            lg.s2,
            lg.data_dim(),
            fmt_v(&t.x)
        ),
        format!(
            "  log p(x), closed form (M5)                         {:>20.12}",
            t.log_evidence
        ),
        format!(
            "  log ∫ p(x|z) p(z) dz, quadrature, {:>7} points (M1) {:>20.12}",
            t.quadrature_points, t.quadrature
        ),
    ];
    for (z, v) in &t.chain_rule {
        out.push(format!(
            "  log p(x, z) − log p(z|x) at z = {:<18} {:>20.12}",
            fmt_v(z),
            v
        ));
    }
    out.push(format!(
        "  {:<26} {:>16} {:>16} {:>16} {:>12}",
        "encoder q(z|x)", "ELBO (M2)", "KL(q‖p(z|x))", "ELBO + KL (M3)", "|gap|"
    ));
    for e in &t.encoders {
        out.push(format!(
            "  {:<26} {:>16.10} {:>16.10} {:>16.10} {:>12.1e}",
            e.encoder,
            e.elbo,
            e.kl,
            e.elbo + e.kl,
            e.identity_error
        ));
    }
    out
}

/// L_K of a trained run for one K: its mean over the examples, with the standard error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IwPoint {
    pub k: usize,
    pub bound: crate::elbo::Stat,
}

/// The ELBO and L_K (M4) of a trained VAE or HVAE on its first `n` test examples, each K with
/// its own noise stream; log-likelihoods in nats (higher is better).
pub fn iw_curve(
    dir: &crate::run::RunDir,
    ks: &[usize],
    n: usize,
    seed: u64,
    device: &burn::tensor::Device,
) -> crate::Result<(crate::elbo::Stat, Vec<IwPoint>)> {
    use crate::models::{Model, ModelVisitor};
    struct Visit<'a> {
        dir: &'a crate::run::RunDir,
        ks: &'a [usize],
        n: usize,
        seed: u64,
        device: &'a burn::tensor::Device,
    }
    impl ModelVisitor for Visit<'_> {
        type Output = crate::Result<(crate::elbo::Stat, Vec<IwPoint>)>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            let l = crate::run::load_model::<M>(self.dir, section, self.device)?;
            let ds = crate::data::load(&l.cfg.data, crate::data::Split::Test)?.head(self.n);
            let rows = l
                .file
                .data
                .eval_rows(&ds, M::binarize(&l.section, &l.spec), self.seed);
            let x = burn::tensor::Tensor::<2>::from_data(
                burn::tensor::TensorData::new(rows, [ds.n, ds.dim()]),
                self.device,
            );
            let mut rng = crate::rng::derived(self.seed, crate::rng::streams::EVAL_NOISE);
            let terms = l.model.elbo(x.clone(), None, &mut rng)?;
            let elbo: Vec<f64> = crate::elbo::to_f64(terms.total())?
                .into_iter()
                .map(|v| -v)
                .collect();
            let mut points = Vec::new();
            for (i, &k) in self.ks.iter().enumerate() {
                let mut r = crate::rng::derived(self.seed, 0x7001 + i as u64);
                let v = l
                    .model
                    .importance_weighted(x.clone(), k, &mut r)
                    .ok_or_else(|| {
                        crate::Error::Config(format!(
                            "{}: a {} has no importance-weighted bound; the tour's second part \
                         needs a VAE or HVAE run",
                            self.dir.path.display(),
                            l.cfg.model.kind()
                        ))
                    })??;
                points.push(IwPoint {
                    k,
                    bound: crate::elbo::Stat::of(&v),
                });
            }
            Ok((crate::elbo::Stat::of(&elbo), points))
        }
    }
    let cfg = dir.config()?;
    cfg.model.visit(Visit {
        dir,
        ks,
        n,
        seed,
        device,
    })
}
