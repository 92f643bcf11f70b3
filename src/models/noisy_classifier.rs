//! A classifier of noisy inputs p_φ(c | z_t, γ_t) for classifier guidance (MATH.md M42;
//! Dhariwal & Nichol 2021): trained by cross-entropy on z_t = α_t x + σ_t ε of labelled data at
//! t uniform over a variance-preserving schedule, and told γ_t (an extra input channel or
//! column, normalised over the schedule's range). It guides any variance-preserving diffusion
//! run of the same data through [`ClassGradient`]: ∇_z log p_φ(c | z_t) by autodiff.
//!
//! Images go through a small CNN (3×3 convolutions of 32, 64, 64 channels, the last two with
//! stride 2, a 128-wide layer), vectors through an MLP (two layers of 128); SiLU throughout, so
//! the input gradient is smooth. Training it is `crate::train::noisy_classifier`'s.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, silu};
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::DataKind;
use crate::data::DataSpace;
use crate::diffusion::guidance::ClassGradient;
use crate::diffusion::{Process, ScheduleConfig};
use crate::nn::cnn::Cnn;
use crate::nn::Activation;
use crate::{Error, Result};

/// The file that names a directory as a noisy classifier's.
pub const META_FILE: &str = "noisy_classifier.json";

/// How a noisy classifier is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoisyClassifierConfig {
    pub data: String,
    /// The schedule its noise levels are drawn from (`auto`: cosine for images, linear γ for
    /// vectors, as the VDM's).
    pub schedule: ScheduleConfig,
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

impl NoisyClassifierConfig {
    pub fn new(data: &str) -> Self {
        NoisyClassifierConfig {
            data: data.to_string(),
            schedule: ScheduleConfig::default(),
            steps: 3000,
            batch: 128,
            lr: 2e-3,
            seed: 0,
        }
    }
}

/// What a trained noisy classifier knows of its data and noise (saved as [`META_FILE`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoisyClassifierMeta {
    pub config: NoisyClassifierConfig,
    /// The data as the diffusion models see them (the same standardisation for vectors).
    pub spec: DataSpace,
    /// γ(0) and γ(1) of its schedule: the input's γ is normalised over this range.
    pub gamma_lo: f64,
    pub gamma_hi: f64,
    /// Test accuracy at t = 0, 0.25, 0.5, 0.75, 1 (pairs of t and accuracy).
    pub accuracy_by_t: Vec<(f64, f64)>,
}

/// Load the classifier in `dir` onto `device`.
pub fn load(dir: &Path, device: &Device) -> Result<NoisyClassifier> {
    let meta_path = dir.join(META_FILE);
    let text = std::fs::read_to_string(&meta_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Config(format!(
                "{}: not a noisy classifier's directory (no {META_FILE}; train one with \
                 `elbo train --model noisy-classifier`)",
                dir.display()
            ))
        } else {
            Error::io(&meta_path, e)
        }
    })?;
    let meta: NoisyClassifierMeta = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: meta_path.clone(),
        msg: e.to_string(),
    })?;
    let weights = dir.join("model.safetensors");
    let (p, _) = crate::fsio::load_tensors(&weights)?;
    crate::params::assign(NoisyClassifier::new(meta, device)?, &p).map_err(|e| Error::Checkpoint {
        path: weights,
        msg: e.to_string(),
    })
}

#[derive(Module, Debug)]
pub struct Mlp {
    l1: Linear,
    l2: Linear,
    out: Linear,
}

#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Net {
    Cnn(Cnn),
    Mlp(Mlp),
}

/// The classifier: its network and what it was trained on.
#[derive(Module, Debug)]
pub struct NoisyClassifier {
    pub net: Net,
    #[module(skip)]
    pub meta: NoisyClassifierMeta,
}

impl NoisyClassifier {
    pub fn new(meta: NoisyClassifierMeta, device: &Device) -> Result<Self> {
        let classes = meta.spec.classes;
        if classes < 2 {
            return Err(Error::Config(format!(
                "a noisy classifier needs labelled data of at least 2 classes; '{}' has {classes}",
                meta.config.data
            )));
        }
        let net = match meta.spec.shape.as_slice() {
            [c, h, w] => Net::Cnn(Cnn::new(
                c + 1,
                [*h, *w],
                [32, 64, 64],
                128,
                classes,
                Activation::Silu,
                device,
            )),
            _ => {
                let d = meta.spec.dim();
                Net::Mlp(Mlp {
                    l1: LinearConfig::new(d + 1, 128).init(device),
                    l2: LinearConfig::new(128, 128).init(device),
                    out: LinearConfig::new(128, classes).init(device),
                })
            }
        };
        Ok(NoisyClassifier { net, meta })
    }

    /// γ normalised over the training range, clamped to it.
    fn u(&self, gamma: Tensor<1>) -> Tensor<1> {
        let (lo, hi) = (self.meta.gamma_lo, self.meta.gamma_hi);
        ((gamma - lo) / (hi - lo)).clamp(0.0, 1.0)
    }

    /// Class logits `[B, K]` of z_t `[B, D]` (model space) at γ `[B]`.
    pub fn logits(&self, z: Tensor<2>, gamma: Tensor<1>) -> Tensor<2> {
        let [b, d] = z.dims();
        let u = self.u(gamma);
        match &self.net {
            Net::Cnn(n) => {
                let [c, h, w] = [
                    self.meta.spec.shape[0],
                    self.meta.spec.shape[1],
                    self.meta.spec.shape[2],
                ];
                let plane = u.reshape([b, 1, 1, 1]).repeat(&[1, 1, h, w]);
                let x = Tensor::cat(vec![z.reshape([b, c, h, w]), plane], 1);
                n.forward(x).1
            }
            Net::Mlp(n) => {
                debug_assert_eq!(d, self.meta.spec.dim());
                let x = Tensor::cat(vec![z, u.reshape([b, 1])], 1);
                let h = silu(n.l1.forward(x));
                let h = silu(n.l2.forward(h));
                n.out.forward(h)
            }
        }
    }

    /// log p_φ(c | z_t) of each row's label `[B]` for z_t `[B, D]` (model space) at γ `[B]`.
    pub fn log_prob(&self, z: Tensor<2>, gamma: Tensor<1>, labels: &[u32]) -> Tensor<1> {
        let b = z.dims()[0];
        let k = self.classes();
        let onehot: Vec<f32> = labels
            .iter()
            .flat_map(|&c| (0..k).map(move |j| f32::from(c as usize == j)))
            .collect();
        let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [b, k]), &z.device());
        (log_softmax(self.logits(z, gamma), 1) * onehot)
            .sum_dim(1)
            .reshape([b])
    }

    /// Data units → model space (8-bit images: 2k/255 − 1; vectors: standardised).
    pub fn to_model_space(&self, x: Tensor<2>) -> Tensor<2> {
        let s = &self.meta.spec;
        match s.kind {
            DataKind::Image8 => x * (2.0 / 255.0) - 1.0,
            DataKind::Continuous => {
                let dev = x.device();
                let row = |v: &[f32]| {
                    Tensor::<2>::from_data(TensorData::new(v.to_vec(), [1, v.len()]), &dev)
                };
                (x - row(&s.shift)) / row(&s.scale)
            }
        }
    }

    /// Whether it can guide a diffusion model of these data (same shape, classes and space).
    pub fn check_compatible(&self, spec: &DataSpace, process: Process) -> Result<()> {
        let s = &self.meta.spec;
        if process != Process::VariancePreserving {
            return Err(Error::Config(
                "classifier guidance: the classifier was trained on variance-preserving noise; \
                 this run's process is variance exploding"
                    .into(),
            ));
        }
        if s.shape != spec.shape
            || s.kind != spec.kind
            || s.shift != spec.shift
            || s.scale != spec.scale
        {
            return Err(Error::Config(format!(
                "classifier guidance: the classifier was trained on '{}' (shape {:?}); this run's \
                 data have shape {:?} or another scaling",
                self.meta.config.data, s.shape, spec.shape
            )));
        }
        Ok(())
    }

    pub fn classes(&self) -> usize {
        self.meta.spec.classes
    }
}

/// ∇_z log p_φ(c | z_t) by autodiff, on the autodiff twin of the input's device. The classifier
/// itself must live on an autodiff device (see [`NoisyClassifier::load`]).
impl ClassGradient for NoisyClassifier {
    fn classes(&self) -> usize {
        self.meta.spec.classes
    }

    fn check_compatible(&self, space: &DataSpace, process: Process) -> Result<()> {
        NoisyClassifier::check_compatible(self, space, process)
    }

    fn replica(&self) -> Box<dyn ClassGradient> {
        Box::new(self.clone())
    }

    fn grad_log_prob(&self, z_t: Tensor<2>, gamma: Tensor<1>, labels: &[u32]) -> Tensor<2> {
        let out_dev = z_t.device();
        let dev = match &self.net {
            Net::Cnn(n) => n.device(),
            Net::Mlp(n) => n.out.devices()[0].clone(),
        };
        let z = Tensor::<2>::from_data(z_t.into_data(), &dev).require_grad();
        let g = Tensor::<1>::from_data(gamma.into_data(), &dev);
        let grads = self.log_prob(z.clone(), g, labels).sum().backward();
        let gz = z
            .grad(&grads)
            .unwrap_or_else(|| Tensor::zeros(z.dims(), &dev));
        Tensor::from_data(gz.into_data(), &out_dev)
    }
}
