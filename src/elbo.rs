//! The evidence lower bound as its terms, and its estimators (MATH.md M2–M4).
//!
//! Every model returns an [`ElboTerms`]: per example, each term of the *negative* ELBO in nats
//! (costs, so that `total()` is an upper bound on −log p(x), the NLL). The reconstruction term is
//! −E_q[log p(x|z)], the prior term KL(q(z_top|x) ‖ p(z_top)), and `layers` holds what else the
//! model has (the diffusion loss of a VDM, the layer KLs of an HVAE).

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::Result;

/// Per-example terms of the negative ELBO, nats. Each tensor is `[B]`.
#[derive(Debug, Clone)]
pub struct ElboTerms {
    /// −E_q[log p(x | z)].
    pub reconstruction: Tensor<1>,
    /// KL(q(z|x) ‖ p(z)) for the top latent.
    pub prior: Tensor<1>,
    /// Further terms by name (diffusion loss, layer KLs).
    pub layers: Vec<(String, Tensor<1>)>,
}

impl ElboTerms {
    /// −ELBO per example, `[B]`: an upper bound on −log p(x) (M2).
    pub fn total(&self) -> Tensor<1> {
        let mut t = self.reconstruction.clone() + self.prior.clone();
        for (_, l) in &self.layers {
            t = t + l.clone();
        }
        t
    }

    /// The training loss of a KL warm-up, per example: the reconstruction term plus every other
    /// term weighted by `w` (the KL terms of a VAE or HVAE); `total()` once w ≥ 1.
    pub fn latent_weighted(&self, w: f64) -> Tensor<1> {
        if w >= 1.0 {
            return self.total();
        }
        let mut kl = self.prior.clone();
        for (_, l) in &self.layers {
            kl = kl + l.clone();
        }
        self.reconstruction.clone() + kl * w
    }

    /// Names and per-example values, f64, in a fixed order (reconstruction, prior, layers...).
    pub fn to_rows(&self) -> Result<Vec<(String, Vec<f64>)>> {
        let mut out = vec![
            (
                "reconstruction".to_string(),
                to_f64(self.reconstruction.clone())?,
            ),
            ("prior".to_string(), to_f64(self.prior.clone())?),
        ];
        for (n, l) in &self.layers {
            out.push((n.clone(), to_f64(l.clone())?));
        }
        Ok(out)
    }
}

/// A 1-D tensor as f64 values.
pub fn to_f64(t: Tensor<1>) -> Result<Vec<f64>> {
    Ok(to_f32(t)?.into_iter().map(f64::from).collect())
}

/// The values of a tensor of any rank, row-major, as f32.
pub fn to_f32<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| crate::Error::Invalid(format!("reading tensor: {e:?}")))
}

/// A model whose log importance weights log p(x, z_k) − log q(z_k | x) can be drawn: what the
/// Monte Carlo ELBO and the importance-weighted bound need.
pub trait ImportanceSampled {
    /// `k` log weights per example, `[B, k]`, for the model-space batch `x` `[B, D]`.
    fn log_weights(&self, x: Tensor<2>, k: usize, rng: &mut Rng) -> Result<Tensor<2>>;
}

/// Running log-mean-exp per example over chunks of log weights, in f64 (M4 with log-sum-exp).
#[derive(Debug, Clone)]
pub struct LogMeanExp {
    max: Vec<f64>,
    sum: Vec<f64>,
    count: usize,
}

impl LogMeanExp {
    pub fn new(batch: usize) -> Self {
        LogMeanExp {
            max: vec![f64::NEG_INFINITY; batch],
            sum: vec![0.0; batch],
            count: 0,
        }
    }

    /// Add a chunk of log weights, row-major `[B, k]`.
    pub fn push(&mut self, log_w: &[f64], k: usize) {
        for (b, row) in log_w.chunks_exact(k).enumerate() {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if m > self.max[b] {
                // Rescale what was summed so far to the new maximum.
                self.sum[b] *= (self.max[b] - m).exp();
                self.max[b] = m;
            }
            let mb = self.max[b];
            self.sum[b] += row.iter().map(|v| (v - mb).exp()).sum::<f64>();
        }
        self.count += k;
    }

    /// log (1/K) Σ_k w_k per example.
    pub fn finish(&self) -> Vec<f64> {
        let ln_k = (self.count as f64).ln();
        self.max
            .iter()
            .zip(&self.sum)
            .map(|(m, s)| m + s.ln() - ln_k)
            .collect()
    }
}

/// (M4) L_K(x) = log (1/K) Σ_k p(x, z_k)/q(z_k|x) per example, drawing the K samples in chunks of
/// at most `chunk` so that K = 5000 fits in memory. Returns f64 per example.
pub fn importance_weighted_bound<M: ImportanceSampled>(
    model: &M,
    x: Tensor<2>,
    k: usize,
    chunk: usize,
    rng: &mut Rng,
) -> Result<Vec<f64>> {
    let b = x.dims()[0];
    let mut acc = LogMeanExp::new(b);
    let mut done = 0;
    while done < k {
        let c = chunk.max(1).min(k - done);
        let lw = model.log_weights(x.clone(), c, rng)?;
        let v = lw
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| crate::Error::Invalid(format!("reading tensor: {e:?}")))?;
        let v: Vec<f64> = v.into_iter().map(f64::from).collect();
        acc.push(&v, c);
        done += c;
    }
    Ok(acc.finish())
}

/// (M4) L_K of a batch with the K samples drawn in chunks of at most ~64k rows through the
/// decoder (at most 1,000 samples per chunk), so that K = 5000 fits in memory.
pub fn importance_weighted_chunked<M: ImportanceSampled>(
    model: &M,
    x: Tensor<2>,
    k: usize,
    rng: &mut Rng,
) -> Result<Vec<f64>> {
    let b = x.dims()[0].max(1);
    let chunk = (65_536 / b).clamp(1, 1000);
    importance_weighted_bound(model, x, k, chunk, rng)
}

/// (M2) The Monte Carlo ELBO: the mean of `k` log weights per example (f64).
pub fn monte_carlo_elbo<M: ImportanceSampled>(
    model: &M,
    x: Tensor<2>,
    k: usize,
    rng: &mut Rng,
) -> Result<Vec<f64>> {
    let lw = model.log_weights(x, k, rng)?;
    let v = to_f64(lw.mean_dim(1).squeeze_dim(1))?;
    Ok(v)
}

/// A mean with its standard error.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Stat {
    pub mean: f64,
    /// Standard error of the mean: sd / √n (data sampling and Monte-Carlo noise together).
    pub se: f64,
}

impl Stat {
    /// The mean and standard error of values.
    pub fn of(v: &[f64]) -> Stat {
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = if v.len() > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Stat {
            mean,
            se: (var / n).sqrt(),
        }
    }

    /// Scaled by a constant (unit changes).
    pub fn scale(self, c: f64) -> Stat {
        Stat {
            mean: self.mean * c,
            se: self.se * c.abs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_mean_exp_streams_exactly() {
        let w = [-1000.0, -1001.0, -999.5, -1002.0];
        let mut a = LogMeanExp::new(1);
        a.push(&w[..1], 1);
        a.push(&w[1..], 3);
        let direct = crate::data::toy::log_sum_exp(&w) - 4f64.ln();
        assert!((a.finish()[0] - direct).abs() < 1e-12);
        assert!(a.finish()[0].is_finite());
    }

    #[test]
    fn stat_standard_error() {
        let s = Stat::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.mean, 2.5);
        assert!((s.se - (5.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12);
    }
}
