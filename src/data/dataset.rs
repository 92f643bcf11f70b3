//! A data set in memory, which part of a source it is, and what its values are.

use serde::{Deserialize, Serialize};

use super::toy::Mixture;
use crate::{Error, Result};

/// How a model maps continuous data into its own space, x̃ = (x − shift)/scale; the
/// log-Jacobian Σ log scale is part of every likelihood it reports, so the numbers stay in the
/// units of the data as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Scaling {
    /// Per dimension: zero mean and unit variance on the training split.
    #[default]
    Standardize,
    /// One map for all dimensions: the training split's [min, max] onto [−1, 1].
    MinusOneOne,
}

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    #[default]
    Train,
    Test,
    All,
}

crate::choice!(Split {
    Train = "train": "the training split",
    Test = "test": "the held-out test split",
    All = "all": "both",
});

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::All => "all",
        })
    }
}

/// What the values of a data set are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// Integers 0..=255 (8-bit images): likelihoods are discrete, reported in bits/dim.
    Image8,
    /// Real vectors: likelihoods are densities, reported in nats and nats/dim.
    Continuous,
}

/// A data set in memory: `n` examples, each `shape` (e.g. `[1, 28, 28]` or `[2]`), as rows of a
/// row-major `[n, dim]` array.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub spec: String,
    pub split: Split,
    pub n: usize,
    pub shape: Vec<usize>,
    pub kind: DataKind,
    pub x: Vec<f32>,
    pub labels: Option<Vec<u32>>,
    /// The exact density, where known (toy sets).
    pub mixture: Option<Mixture>,
}

impl Dataset {
    /// Values per example, D.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    /// `[height, width]` for image data.
    pub fn image_hw(&self) -> Option<(usize, usize)> {
        match (self.kind, self.shape.as_slice()) {
            (DataKind::Image8, [1, h, w]) => Some((*h, *w)),
            _ => None,
        }
    }

    /// The first `n` examples (or all, if fewer).
    pub fn head(&self, n: usize) -> Dataset {
        let n = n.min(self.n);
        let mut d = self.clone();
        d.n = n;
        d.x.truncate(n * self.dim());
        if let Some(l) = &mut d.labels {
            l.truncate(n);
        }
        d
    }

    pub(super) fn rows(mut self, start: usize, end: usize) -> Dataset {
        let dim = self.dim();
        self.x = self.x[start * dim..end * dim].to_vec();
        self.labels = self.labels.map(|l| l[start..end].to_vec());
        self.n = end - start;
        self
    }

    /// Apply the "last 10% of rows is test" rule of single-file sources.
    pub(super) fn split_last_tenth(self, split: Split) -> Result<Dataset> {
        let n = self.n;
        let n_test = ((n + 5) / 10).max(1);
        if n < 2 {
            return Err(Error::DataSpec {
                spec: self.spec.clone(),
                msg: format!("{n} example(s) is too few to split into train and test"),
            });
        }
        let mut d = match split {
            Split::Train => self.rows(0, n - n_test),
            Split::Test => self.rows(n - n_test, n),
            Split::All => self,
        };
        d.split = split;
        Ok(d)
    }

    /// The affine map of `scaling`, as per-dimension (shift, scale); a constant column (or a
    /// constant data set) keeps scale 1 rather than dividing by zero.
    pub fn affine(&self, scaling: Scaling) -> (Vec<f32>, Vec<f32>) {
        let d = self.dim();
        let safe = |s: f64| if s > 1e-8 { s as f32 } else { 1.0 };
        match scaling {
            Scaling::Standardize => {
                let (mean, std) = self.moments();
                (
                    mean.iter().map(|&m| m as f32).collect(),
                    std.into_iter().map(safe).collect(),
                )
            }
            Scaling::MinusOneOne => {
                let (lo, hi) = self
                    .x
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v as f64), hi.max(v as f64))
                    });
                if !(lo.is_finite() && hi.is_finite()) {
                    return (vec![0.0; d], vec![1.0; d]);
                }
                (
                    vec![(0.5 * (lo + hi)) as f32; d],
                    vec![safe(0.5 * (hi - lo)); d],
                )
            }
        }
    }

    /// Per-dimension mean and standard deviation (f64), for standardising continuous data.
    pub fn moments(&self) -> (Vec<f64>, Vec<f64>) {
        let d = self.dim();
        let mut mean = vec![0.0; d];
        let mut sq = vec![0.0; d];
        for row in self.x.chunks_exact(d) {
            for j in 0..d {
                mean[j] += row[j] as f64;
                sq[j] += (row[j] as f64) * (row[j] as f64);
            }
        }
        let n = self.n.max(1) as f64;
        let std = (0..d)
            .map(|j| {
                let m = mean[j] / n;
                (sq[j] / n - m * m).max(0.0).sqrt()
            })
            .collect();
        (mean.iter().map(|m| m / n).collect(), std)
    }
}
