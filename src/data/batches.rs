//! Batches: a deterministic, resumable order over the examples, and the per-batch transforms
//! (binarisation, scaling, dequantisation).

use rand::seq::SliceRandom;
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::rng::{derived, Rng};

/// How 8-bit images become binary for a Bernoulli decoder (MATH.md §2, binarised MNIST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Binarize {
    /// A fresh Bernoulli(intensity) draw every time a batch is drawn.
    Dynamic,
    /// One fixed Bernoulli draw per image, made once from the seed.
    Static,
}

/// Position in the training data: the epoch and how far into its permutation. Each epoch's
/// permutation is derived from (seed, epoch), so this is all that needs saving to resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOrder {
    pub seed: u64,
    pub epoch: u64,
    pub cursor: usize,
}

impl BatchOrder {
    pub fn new(seed: u64) -> Self {
        BatchOrder {
            seed,
            epoch: 0,
            cursor: 0,
        }
    }

    fn permutation(&self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        p.shuffle(&mut derived(self.seed, 0x1000 + self.epoch));
        p
    }

    /// The indices of the next batch of `b` examples out of `n` (no example repeats within an
    /// epoch; a batch never straddles two epochs, the remainder starts the next one).
    pub fn next_batch(&mut self, n: usize, b: usize) -> Vec<usize> {
        let b = b.min(n).max(1);
        if self.cursor + b > n {
            self.epoch += 1;
            self.cursor = 0;
        }
        let p = self.permutation(n);
        let out = p[self.cursor..self.cursor + b].to_vec();
        self.cursor += b;
        out
    }
}

/// Rows `idx` of a row-major `[n, dim]` array.
pub fn gather(x: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        out.extend_from_slice(&x[i * dim..(i + 1) * dim]);
    }
    out
}

/// Bernoulli(k / 255) draws for 8-bit values k.
pub fn binarize(x: &[f32], rng: &mut Rng) -> Vec<f32> {
    x.iter()
        .map(|&k| {
            if rng.gen::<f32>() < k / 255.0 {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// (M22) 8-bit values k ∈ {0..255} to x = 2k/255 − 1 ∈ [−1, 1].
pub fn scale_to_pm1(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&k| 2.0 * k / 255.0 - 1.0).collect()
}

/// Uniform dequantisation: y = k + u with u ~ U[0, 1), in level units. A density on y bounds the
/// discrete NLL of k: −log P(k) ≤ E_u[−log p(k + u)] (Theis et al. 2016), so bits/dim stay
/// comparable with discrete models.
pub fn dequantize(x: &[f32], rng: &mut Rng) -> Vec<f32> {
    x.iter().map(|&k| k + rng.gen::<f32>()).collect()
}

/// Examples `start .. start + n` of row-major `rows` (`dim` values each) as a `[n, dim]` tensor.
pub fn row_block(
    rows: &[f32],
    start: usize,
    n: usize,
    dim: usize,
    device: &burn::tensor::Device,
) -> burn::tensor::Tensor<2> {
    burn::tensor::Tensor::from_data(
        burn::tensor::TensorData::new(rows[start * dim..(start + n) * dim].to_vec(), [n, dim]),
        device,
    )
}

/// Rows of a data set as a model sees them for evaluation: binarised once with a fixed seed (so
/// that every evaluation of a split uses the same binary images), raw otherwise.
pub fn eval_rows(ds: &super::Dataset, how: Option<Binarize>, seed: u64) -> Vec<f32> {
    match how {
        Some(_) => self::binarize(
            &ds.x,
            &mut derived(seed, crate::rng::streams::EVAL_BINARIZE),
        ),
        None => ds.x.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cover_every_example_once() {
        let mut o = BatchOrder::new(3);
        let mut seen = [0; 10];
        for _ in 0..3 {
            for i in o.next_batch(10, 3) {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1 || c == 0));
        assert_eq!(seen.iter().sum::<i32>(), 9);
        let before = o;
        let b = o.next_batch(10, 3); // starts epoch 1
        assert_eq!(o.epoch, 1);
        let mut again = before;
        assert_eq!(
            again.next_batch(10, 3),
            b,
            "resumable from a copy of the state"
        );
    }

    #[test]
    fn binarize_mean_matches_intensity() {
        let x = vec![51.0f32; 100_000]; // p = 0.2
        let b = binarize(&x, &mut derived(0, 0));
        let m = b.iter().sum::<f32>() / b.len() as f32;
        // sd of the mean = sqrt(0.16/1e5) = 0.00126; 5 sd tolerance.
        assert!((m - 0.2).abs() < 0.0065, "{m}");
        assert!(b.iter().all(|&v| v == 0.0 || v == 1.0));
    }

    #[test]
    fn scaling_hits_the_ends() {
        assert_eq!(scale_to_pm1(&[0.0, 255.0]), vec![-1.0, 1.0]);
        let d = dequantize(&[0.0, 255.0], &mut derived(0, 0));
        assert!(d[0] >= 0.0 && d[0] < 1.0 && d[1] >= 255.0 && d[1] < 256.0);
    }
}
