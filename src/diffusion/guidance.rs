//! Guidance (MATH.md M41–M43): a diffusion model steered towards a class, as a [`Denoiser`], so
//! every sampler uses it unchanged.
//!
//! - Classifier-free ([`Guided`], M43): a conditional network, ε̃(z, c) = (1 + w) ε̂(z, c) −
//!   w ε̂(z, ∅), where ∅ is the network's null class; w = 0 is the conditional model itself.
//! - Classifier guidance ([`ClassifierGuided`], M42): any model's score plus w ∇log p_φ(c | z_t)
//!   from a classifier of noisy z_t; in ε̂ (score = −ε̂/σ, M20): ε̃ = ε̂ − w σ ∇log p_φ(c | z_t).
//!   w = 1 is Bayes' rule (M41): the conditional score; CFG's w is classifier guidance's w + 1.

use burn::tensor::Tensor;

use super::{eps_hat, Cond, Denoiser, Prediction, Process};

/// ∇_z log p(c | z_t) of a classifier of noisy inputs, per row (M41, M42).
pub trait ClassGradient: Send + Sync {
    /// # Shapes
    /// `z_t`: `[B, D]` (model space), `gamma`: `[B]`, `labels`: B classes → `[B, D]`.
    fn grad_log_prob(&self, z_t: Tensor<2>, gamma: Tensor<1>, labels: &[u32]) -> Tensor<2>;

    /// The classes it knows (labels 0 … classes − 1).
    fn classes(&self) -> usize;

    /// Refuse to guide a model of another data space or process (by default: any is fine).
    fn check_compatible(
        &self,
        _space: &crate::data::DataSpace,
        _process: Process,
    ) -> crate::Result<()> {
        Ok(())
    }

    /// A copy for another thread (tensors of the CPU backend are used by one thread at a time).
    fn replica(&self) -> Box<dyn ClassGradient>;
}

/// A denoiser steered by a classifier of noisy inputs with weight `w` (M42). The denoiser is
/// queried unconditionally (a conditional network with its null class).
pub struct ClassifierGuided<'a> {
    pub den: &'a dyn Denoiser,
    pub classifier: &'a dyn ClassGradient,
    pub w: f64,
}

impl Denoiser for ClassifierGuided<'_> {
    fn prediction(&self) -> Prediction {
        Prediction::Eps
    }

    fn process(&self) -> Process {
        self.den.process()
    }

    fn x0_bounds(&self) -> Option<(f64, f64)> {
        self.den.x0_bounds()
    }

    /// # Shapes
    /// `z_t`: `[B, D]`, `gamma`: `[B]`, `cond`: B labels to steer towards (none: unguided).
    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>, cond: Cond) -> Tensor<2> {
        let e = eps_hat(self.den, z_t.clone(), gamma.clone(), None);
        let Some(labels) = cond else {
            return e;
        };
        if self.w == 0.0 {
            return e;
        }
        let g = self.classifier.grad_log_prob(z_t, gamma.clone(), labels);
        let (_, sigma) = self.den.process().alpha_sigma(gamma);
        e - g * sigma * self.w
    }
}

/// A conditional denoiser with classifier-free guidance of weight `w` ≥ 0.
pub struct Guided<'a> {
    pub den: &'a dyn Denoiser,
    pub w: f64,
    /// The network's null class (the label that stands for "no label").
    pub null: u32,
}

impl Denoiser for Guided<'_> {
    fn prediction(&self) -> Prediction {
        Prediction::Eps
    }

    fn process(&self) -> Process {
        self.den.process()
    }

    fn x0_bounds(&self) -> Option<(f64, f64)> {
        self.den.x0_bounds()
    }

    /// # Shapes
    /// `z_t`: `[B, D]`, `gamma`: `[B]`, `cond`: B labels (none: the null class, unguided).
    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>, cond: Cond) -> Tensor<2> {
        let Some(labels) = cond else {
            return eps_hat(self.den, z_t, gamma, None);
        };
        let e_c = eps_hat(self.den, z_t.clone(), gamma.clone(), cond);
        if self.w == 0.0 {
            return e_c;
        }
        let null = vec![self.null; labels.len()];
        let e_u = eps_hat(self.den, z_t, gamma, Some(&null));
        e_c * (1.0 + self.w) - e_u * self.w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::toy::Mixture;
    use crate::diffusion::oracle::{LabelledMixtureOracle, MixtureClassOracle, MixtureOracle};
    use crate::rng::{randn, seeded};
    use crate::sample::{sample_loop, Ancestral};
    use burn::tensor::{Device, TensorData};

    fn oracles(
        name: &str,
        process: Process,
    ) -> (Mixture, LabelledMixtureOracle, MixtureClassOracle) {
        let m = Mixture::named(name).unwrap();
        let o = |m: &Mixture| MixtureOracle {
            mixture: m.clone(),
            process,
        };
        (
            m.clone(),
            LabelledMixtureOracle(o(&m)),
            MixtureClassOracle(o(&m)),
        )
    }

    #[test]
    fn classifier_free_w_is_classifier_guidance_w_plus_one_with_exact_scores() {
        // (1 + w) ε(z, c) − w ε(z) = ε(z) − (1 + w) σ ∇log p(c | z) when ε(z, c) and ε(z) are the
        // exact conditional and marginal denoisers (M41): checked at random z over the whole
        // noise range, to f32 rounding (1e-4 relative to 1 + |ε|), for the variance-preserving
        // and the variance-exploding process (σ up to e^{3.5} = 33 there).
        for process in [Process::VariancePreserving, Process::VarianceExploding] {
            let (m, lab, cls) = oracles("grid9", process);
            let dev = Device::flex();
            let b = 64;
            let z = randn(&mut seeded(1), [b, 2], &dev) * 1.5;
            let g: Vec<f32> = (0..b).map(|i| -8.0 + 14.0 * i as f32 / b as f32).collect();
            let gamma = Tensor::<1>::from_data(TensorData::new(g, [b]), &dev);
            let labels: Vec<u32> = (0..b as u32).map(|i| i % m.weights.len() as u32).collect();
            // w = 0 is the conditional model itself, and no label its null class, exactly.
            let at = |d: &dyn Denoiser, c: Cond| -> Vec<f32> {
                eps_hat(d, z.clone(), gamma.clone(), c)
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap()
            };
            let w0 = Guided {
                den: &lab,
                w: 0.0,
                null: m.weights.len() as u32,
            };
            assert_eq!(at(&w0, Some(&labels)), at(&lab, Some(&labels)));
            let null = vec![m.weights.len() as u32; b];
            assert_eq!(at(&w0, None), at(&lab, Some(&null)));
            for w in [0.0, 0.5, 2.0] {
                let cfg = Guided {
                    den: &lab,
                    w,
                    null: m.weights.len() as u32,
                };
                let cg = ClassifierGuided {
                    den: &lab,
                    classifier: &cls,
                    w: w + 1.0,
                };
                let a: Vec<f32> = cfg
                    .predict(z.clone(), gamma.clone(), Some(&labels))
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                let c: Vec<f32> = cg
                    .predict(z.clone(), gamma.clone(), Some(&labels))
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                for (x, y) in a.iter().zip(&c) {
                    assert!(
                        (x - y).abs() < 1e-4 * (1.0 + x.abs()),
                        "{process:?} w {w}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn oracle_guided_samples_follow_the_class_at_w0_and_concentrate_as_w_grows() {
        // Two overlapping classes (means (∓0.5, 0), sd 0.6 and 0.4, weights 0.6/0.4); class 1,
        // 2,000 samples by 200 ancestral steps of the exact conditional denoiser. At w = 0 they
        // are the class's own Gaussian: mean within 4 se (0.6/√2000 = 0.013 per coordinate) plus
        // the sampler's bias (0.01), variance within 10% of 0.36. The true posterior p(1 | x),
        // averaged over the samples, rises with w by at least 0.02 a step (same noise for every
        // w: a paired comparison); both kinds of guidance give the same samples at CFG w =
        // classifier w − 1.
        let m = Mixture {
            weights: vec![0.4, 0.6],
            means: vec![vec![-0.5, 0.0], vec![0.5, 0.0]],
            stds: vec![0.4, 0.6],
        };
        let o = || MixtureOracle {
            mixture: m.clone(),
            process: Process::VariancePreserving,
        };
        let (lab, cls) = (LabelledMixtureOracle(o()), MixtureClassOracle(o()));
        let dev = Device::flex();
        let sched = crate::diffusion::schedule::LinearGamma {
            gamma_min: -10.0,
            gamma_max: 10.0,
        };
        let sched = crate::diffusion::Schedule::Fixed(&sched);
        let n = 2000;
        let labels = vec![1u32; n];
        let draw = |den: &dyn Denoiser| -> Vec<f32> {
            let mut rng = seeded(5);
            let z = randn(&mut rng, [n, 2], &dev);
            sample_loop(
                &Ancestral,
                den,
                &sched,
                z,
                200,
                Some(&labels),
                &mut rng,
                &mut |_| {},
            )
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
        };
        let posterior = |x: &[f32]| -> f64 {
            x.chunks(2)
                .map(|p| {
                    let (p, q) = ([p[0] as f64, p[1] as f64], m.clone());
                    let l = |k: usize| {
                        let s2 = q.stds[k] * q.stds[k];
                        q.weights[k].ln()
                            - s2.ln()
                            - ((p[0] - q.means[k][0]).powi(2) + (p[1] - q.means[k][1]).powi(2))
                                / (2.0 * s2)
                    };
                    1.0 / (1.0 + (l(0) - l(1)).exp())
                })
                .sum::<f64>()
                / n as f64
        };
        let mut last = 0.0;
        for w in [0.0, 1.0, 3.0] {
            let x = draw(&Guided {
                den: &lab,
                w,
                null: 2,
            });
            let post = posterior(&x);
            if w == 0.0 {
                let mean = |j: usize| {
                    x.iter().skip(j).step_by(2).map(|&v| v as f64).sum::<f64>() / n as f64
                };
                let var = x
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (v as f64 - m.means[1][i % 2]).powi(2))
                    .sum::<f64>()
                    / (2 * n) as f64;
                assert!(
                    (mean(0) - 0.5).abs() < 0.063 && mean(1).abs() < 0.063,
                    "mean {} {}",
                    mean(0),
                    mean(1)
                );
                assert!((var / 0.36 - 1.0).abs() < 0.1, "variance {var}");
            }
            eprintln!("w {w}: mean p(1 | x) {post:.4}");
            assert!(post > last + 0.02, "w {w}: {post} after {last}");
            last = post;
            let y = draw(&ClassifierGuided {
                den: &lab,
                classifier: &cls,
                w: w + 1.0,
            });
            let gap = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(gap < 1e-3, "w {w}: the two guidances differ by {gap}");
        }
    }
}
