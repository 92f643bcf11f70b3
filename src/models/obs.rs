//! The observation model p_θ(x | z) of the VAE and the HVAE: how data enter the networks and
//! how the decoder's output scores them, in the units of the data as given.
//!
//! | likelihood | data | decoder output | bound in |
//! | --- | --- | --- | --- |
//! | `bernoulli` | binarised 8-bit images, {0, 1} | D logits (M9) | nats; bits per binary pixel |
//! | `discretized` | 8-bit images, levels k ∈ 0..255 | D means, D log-scales: a discretised logistic over the 256 levels | nats; bits/dim |
//! | `gaussian` | real vectors, standardised inside | D means, D log-variances | nats; nats/dim (log-Jacobian added) |
//!
//! Two representations of the same 8-bit images make the VAE's bound comparable with either
//! end of the diffusion model's: `discretized` with the VDM's 256-level decoder (bits/dim),
//! `bernoulli` with the VDM's Bernoulli decoder on binarised images (nats per image).

use burn::tensor::{activation, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::{Binarize, DataKind, Dataset, Scaling};
use crate::dist::discretized::logistic_nll;
use crate::dist::{bernoulli_log_prob, DiagGaussian};
use crate::rng::Rng;
use crate::{Error, Result};

/// The decoder's likelihood p_θ(x|z).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Likelihood {
    /// Bernoulli on binarised pixels (M9).
    Bernoulli,
    /// Diagonal Gaussian with learned mean and variance, for continuous data.
    Gaussian,
    /// Discretised logistic over the 256 levels of 8-bit data.
    Discretized,
}

/// How a VAE or HVAE models 8-bit images (a configuration key; continuous data are always
/// Gaussian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ImageLikelihood {
    /// Binarised pixels, Bernoulli decoder (Burda et al.'s benchmark; the default).
    #[default]
    Bernoulli,
    /// The 8-bit levels themselves, discretised logistic decoder: bits/dim, comparable with
    /// the VDM's bound.
    Discretized,
}

impl ImageLikelihood {
    /// Whether images are binarised (Bernoulli) rather than scored as their 256 levels.
    pub fn binary(self) -> bool {
        self == ImageLikelihood::Bernoulli
    }

    /// Binarised (`true`) or the 256 levels.
    pub fn of(binary: bool) -> Self {
        if binary {
            ImageLikelihood::Bernoulli
        } else {
            ImageLikelihood::Discretized
        }
    }
}

/// The observation model and the data's standardisation, saved with the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub likelihood: Likelihood,
    pub data_dim: usize,
    /// Standardisation of continuous data (empty otherwise).
    pub shift: Vec<f32>,
    pub scale: Vec<f32>,
}

impl Observation {
    /// Bernoulli pixels of binarised images of `data_dim` values, unstandardised.
    pub fn bernoulli(data_dim: usize) -> Observation {
        Observation {
            likelihood: Likelihood::Bernoulli,
            data_dim,
            shift: vec![],
            scale: vec![],
        }
    }

    /// The observation model of a training split.
    pub fn for_data(train: &Dataset, scaling: Scaling, images: ImageLikelihood) -> Observation {
        let d = train.dim();
        match train.kind {
            DataKind::Image8 => Observation {
                likelihood: match images {
                    ImageLikelihood::Bernoulli => Likelihood::Bernoulli,
                    ImageLikelihood::Discretized => Likelihood::Discretized,
                },
                data_dim: d,
                shift: vec![],
                scale: vec![],
            },
            DataKind::Continuous => {
                let (shift, scale) = train.affine(scaling);
                Observation {
                    likelihood: Likelihood::Gaussian,
                    data_dim: d,
                    shift,
                    scale,
                }
            }
        }
    }

    /// Checks that what was saved can make a model.
    pub fn check(&self) -> Result<()> {
        if self.data_dim == 0 {
            return Err(Error::Config("the data have no dimensions".into()));
        }
        if self.likelihood == Likelihood::Gaussian
            && (self.shift.len() != self.data_dim || self.scale.len() != self.data_dim)
        {
            return Err(Error::Invalid(format!(
                "the saved standardisation has {} shifts and {} scales for {} dimensions",
                self.shift.len(),
                self.scale.len(),
                self.data_dim
            )));
        }
        Ok(())
    }

    /// Width of the decoder's output.
    pub fn out_dim(&self) -> usize {
        match self.likelihood {
            Likelihood::Bernoulli => self.data_dim,
            Likelihood::Gaussian | Likelihood::Discretized => 2 * self.data_dim,
        }
    }

    /// Binarisation applied to raw rows before they reach the model.
    pub fn binarize(&self, b: Binarize) -> Option<Binarize> {
        (self.likelihood == Likelihood::Bernoulli).then_some(b)
    }

    fn row(v: &[f32], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, v.len()]), device)
    }

    /// Data units → what the encoder sees: {0, 1} as is, levels to 2k/255 − 1, continuous
    /// values standardised.
    pub fn to_model_space(&self, x: Tensor<2>) -> Tensor<2> {
        match self.likelihood {
            Likelihood::Bernoulli => x,
            Likelihood::Discretized => x * (2.0 / 255.0) - 1.0,
            Likelihood::Gaussian => {
                let dev = x.device();
                (x - Self::row(&self.shift, &dev)) / Self::row(&self.scale, &dev)
            }
        }
    }

    /// Σ log scale: the log-Jacobian of standardisation.
    fn log_jacobian(&self) -> f64 {
        self.scale.iter().map(|s| (*s as f64).ln()).sum()
    }

    /// log p_θ(x | z) per example, `[N]`, from the decoder's output `out` `[N, out_dim]` and `x`
    /// `[N, D]` in data units.
    pub fn log_prob(&self, out: Tensor<2>, x: Tensor<2>) -> Tensor<1> {
        let d = self.data_dim;
        match self.likelihood {
            Likelihood::Bernoulli => bernoulli_log_prob(out, x),
            Likelihood::Discretized => -logistic_nll(
                self.to_model_space(x),
                out.clone().narrow(1, 0, d),
                out.narrow(1, d, d),
            ),
            Likelihood::Gaussian => {
                let p = DiagGaussian::new(out.clone().narrow(1, 0, d), out.narrow(1, d, d));
                p.log_prob(self.to_model_space(x)) - self.log_jacobian()
            }
        }
    }

    /// What a sample shows, in data units, from the decoder's output: pixel probabilities
    /// (Bernoulli), the level nearest the logistic's mean (discretised; the mean, as VAE
    /// samples are usually shown), or a draw (Gaussian).
    pub fn sample(&self, out: Tensor<2>, rng: &mut Rng) -> Tensor<2> {
        let d = self.data_dim;
        match self.likelihood {
            Likelihood::Bernoulli => activation::sigmoid(out),
            Likelihood::Discretized => {
                ((out.narrow(1, 0, d).clamp(-1.0, 1.0) + 1.0) * 127.5).round()
            }
            Likelihood::Gaussian => {
                let dev = out.device();
                let p = DiagGaussian::new(out.clone().narrow(1, 0, d), out.narrow(1, d, d));
                p.rsample(rng) * Self::row(&self.scale, &dev) + Self::row(&self.shift, &dev)
            }
        }
    }

    /// The decoder in words, for reports.
    pub fn describe(&self) -> &'static str {
        match self.likelihood {
            Likelihood::Bernoulli => "Bernoulli decoder on binarised pixels",
            Likelihood::Discretized => "discretised logistic decoder over 256 levels",
            Likelihood::Gaussian => "Gaussian decoder",
        }
    }
}
