//! Two-dimensional toy sets with exact log-densities: isotropic Gaussian mixtures
//! Σ_k π_k N(m_k, s_k² I). Their true negative log-likelihood is known, so a model's bound can be
//! compared with the truth (MATH.md M32).

use rand::Rng as _;
use rand_distr::StandardNormal;

use crate::rng::{derived, Rng};
use crate::{Error, Result};

/// An isotropic Gaussian mixture in D dimensions.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Mixture {
    /// Mixture weights π_k, summing to 1.
    pub weights: Vec<f64>,
    /// Component means m_k, each of length D.
    pub means: Vec<Vec<f64>>,
    /// Component standard deviations s_k.
    pub stds: Vec<f64>,
}

/// Names accepted by `toy:NAME`, with a line about each.
pub const TOY_SETS: &[(&str, &str)] = &[
    (
        "ring8",
        "8 equal Gaussians (s = 0.15) on a circle of radius 2",
    ),
    (
        "grid9",
        "3x3 grid of Gaussians (s = 0.2, spacing 1.5), unequal weights",
    ),
    ("blobs2", "two Gaussians of different widths and weights"),
    (
        "gaussian",
        "one standard Gaussian N(0, I): the simplest exact density",
    ),
];

/// Training and test sizes of every toy set.
pub const TOY_TRAIN: usize = 20_000;
pub const TOY_TEST: usize = 5_000;

impl Mixture {
    /// The named toy set.
    pub fn named(name: &str) -> Result<Mixture> {
        let m = match name {
            "ring8" => {
                let means = (0..8)
                    .map(|k| {
                        let a = k as f64 * std::f64::consts::TAU / 8.0;
                        vec![2.0 * a.cos(), 2.0 * a.sin()]
                    })
                    .collect();
                Mixture {
                    weights: vec![1.0 / 8.0; 8],
                    means,
                    stds: vec![0.15; 8],
                }
            }
            "grid9" => {
                let mut means = Vec::new();
                let mut weights = Vec::new();
                for i in 0..3 {
                    for j in 0..3 {
                        means.push(vec![1.5 * (i as f64 - 1.0), 1.5 * (j as f64 - 1.0)]);
                        weights.push(1.0 + ((i + 2 * j) % 3) as f64);
                    }
                }
                let total: f64 = weights.iter().sum();
                Mixture {
                    weights: weights.iter().map(|w| w / total).collect(),
                    means,
                    stds: vec![0.2; 9],
                }
            }
            "blobs2" => Mixture {
                weights: vec![0.3, 0.7],
                means: vec![vec![-1.0, 0.5], vec![1.0, -0.5]],
                stds: vec![0.3, 0.6],
            },
            "gaussian" => Mixture {
                weights: vec![1.0],
                means: vec![vec![0.0, 0.0]],
                stds: vec![1.0],
            },
            _ => {
                let names: Vec<_> = TOY_SETS.iter().map(|(n, _)| *n).collect();
                return Err(Error::DataSpec {
                    spec: format!("toy:{name}"),
                    msg: format!("unknown toy set; choose one of {}", names.join(", ")),
                });
            }
        };
        Ok(m)
    }

    /// Data dimension D.
    pub fn dim(&self) -> usize {
        self.means.first().map_or(0, Vec::len)
    }

    /// Exact log p(x), by log-sum-exp over the components.
    pub fn log_density(&self, x: &[f64]) -> f64 {
        let d = x.len() as f64;
        let logs: Vec<f64> = (0..self.weights.len())
            .map(|k| {
                let s2 = self.stds[k] * self.stds[k];
                let sq: f64 = x
                    .iter()
                    .zip(&self.means[k])
                    .map(|(a, m)| (a - m) * (a - m))
                    .sum();
                self.weights[k].ln() - 0.5 * d * (std::f64::consts::TAU * s2).ln() - 0.5 * sq / s2
            })
            .collect();
        log_sum_exp(&logs)
    }

    /// Exact log p(x | k): the density of component `k` alone (the class-conditional density
    /// of a labelled draw).
    pub fn log_density_given(&self, x: &[f64], k: usize) -> f64 {
        let d = x.len() as f64;
        let s2 = self.stds[k] * self.stds[k];
        let sq: f64 = x
            .iter()
            .zip(&self.means[k])
            .map(|(a, m)| (a - m) * (a - m))
            .sum();
        -0.5 * d * (std::f64::consts::TAU * s2).ln() - 0.5 * sq / s2
    }

    /// `n` draws, row-major `[n, D]`.
    pub fn sample(&self, n: usize, rng: &mut Rng) -> Vec<f32> {
        self.sample_labeled(n, rng).0
    }

    /// `n` draws, row-major `[n, D]`, with the component each came from (its class label).
    pub fn sample_labeled(&self, n: usize, rng: &mut Rng) -> (Vec<f32>, Vec<u32>) {
        let mut out = Vec::with_capacity(n * self.dim());
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let u: f64 = rng.gen();
            let mut acc = 0.0;
            let mut k = self.weights.len() - 1;
            for (i, w) in self.weights.iter().enumerate() {
                acc += w;
                if u < acc {
                    k = i;
                    break;
                }
            }
            labels.push(k as u32);
            for m in &self.means[k] {
                let e: f64 = rng.sample(StandardNormal);
                out.push((m + self.stds[k] * e) as f32);
            }
        }
        (out, labels)
    }

    /// The fixed training (stream 1) or test (stream 2) draw of a toy set, with component labels.
    pub fn split_data(&self, test: bool) -> (Vec<f32>, Vec<u32>) {
        if test {
            self.sample_labeled(TOY_TEST, &mut derived(0x70, 2))
        } else {
            self.sample_labeled(TOY_TRAIN, &mut derived(0x70, 1))
        }
    }
}

/// log Σ exp(v), stable for any finite inputs.
pub fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// `toy:NAME`: the mixture's fixed draws, labelled with the component each point came from.
pub(super) fn load_toy(spec: &str, name: &str, split: super::Split) -> Result<super::Dataset> {
    use super::Split;
    let m = Mixture::named(name)?;
    let (x, y) = match split {
        Split::Train => m.split_data(false),
        Split::Test => m.split_data(true),
        Split::All => {
            let (mut a, mut la) = m.split_data(false);
            let (b, lb) = m.split_data(true);
            a.extend(b);
            la.extend(lb);
            (a, la)
        }
    };
    Ok(super::Dataset {
        spec: spec.to_string(),
        split,
        n: x.len() / m.dim(),
        shape: vec![m.dim()],
        kind: super::DataKind::Continuous,
        x,
        labels: Some(y),
        mixture: Some(m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn densities_integrate_to_one() {
        // Riemann sum on a fine grid over [-5, 5]^2; step 0.02 resolves s = 0.15 to < 1e-4.
        for (name, _) in TOY_SETS {
            let m = Mixture::named(name).unwrap();
            let h = 0.02;
            let mut total = 0.0;
            let n = (10.0 / h) as i32;
            for i in 0..n {
                for j in 0..n {
                    let x = [-5.0 + (i as f64 + 0.5) * h, -5.0 + (j as f64 + 0.5) * h];
                    total += m.log_density(&x).exp() * h * h;
                }
            }
            assert!((total - 1.0).abs() < 2e-3, "{name}: integral {total}");
        }
    }

    #[test]
    fn samples_have_the_mixture_mean() {
        let m = Mixture::named("blobs2").unwrap();
        let x = m.sample(20_000, &mut derived(1, 1));
        let mean0: f64 = x.iter().step_by(2).map(|&v| v as f64).sum::<f64>() / 20_000.0;
        // true mean 0.3*-1 + 0.7*1 = 0.4; sd of x0 about 1, so se 0.007: 5 se tolerance.
        assert!((mean0 - 0.4).abs() < 0.035, "{mean0}");
    }

    #[test]
    fn unknown_name_lists_choices() {
        let e = Mixture::named("spiral").unwrap_err().to_string();
        assert!(e.contains("ring8"));
    }
}
