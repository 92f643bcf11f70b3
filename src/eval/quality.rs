//! Sample quality, measured by the project's own image classifier.
//!
//! **FD-classifier** is a Fréchet distance between Gaussians fitted to the 128-d penultimate
//! features of a small CNN classifier that `elbo` trains on the data's own labels:
//! ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}). It is *not* FID: FID's features come
//! from an Inception network trained on ImageNet, and its numbers are not comparable with these.
//! Beside it: the entropy of the histogram of predicted classes (ln 10 = 2.30 for ten balanced
//! classes; low when samples collapse onto few classes) and the mean confidence of the
//! predictions (high for clean, recognisable images). Every figure is also given for real images
//! (the training split, against the test split), the reference a model's samples aim at.
//!
//! The classifier is trained once per data set and seed and cached (see [`cache_dir`]).

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::{self, Dataset, Split};
use crate::nn::cnn::Cnn;
use crate::nn::Activation;
use crate::optim::{AdamW, OptimConfig};
use crate::params;
use crate::{Error, Result};

/// Features the Fréchet distance is computed in.
pub const FEATURES: usize = 128;

/// The quality classifier: the project's CNN ([`crate::nn::cnn::Cnn`]: 16, 32 and 64
/// channels, ReLU, a 128-wide feature layer) on grey 8-bit images.
#[derive(Module, Debug)]
pub struct Classifier {
    net: Cnn,
    #[module(skip)]
    hw: [usize; 2],
}

impl Classifier {
    pub fn new(hw: [usize; 2], classes: usize, device: &Device) -> Self {
        Classifier {
            net: Cnn::new(
                1,
                hw,
                [16, 32, 64],
                FEATURES,
                classes,
                Activation::Relu,
                device,
            ),
            hw,
        }
    }

    /// Features and logits of 8-bit images `[B, H·W]` (levels 0..255).
    pub fn forward(&self, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        let b = x.dims()[0];
        let [h, w] = self.hw;
        self.net.forward(x.reshape([b, 1, h, w]) / 255.0)
    }
}

/// How the classifier is trained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassifierSettings {
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

impl Default for ClassifierSettings {
    fn default() -> Self {
        ClassifierSettings {
            epochs: 4,
            batch: 128,
            lr: 2e-3,
            seed: 0,
        }
    }
}

/// Where trained classifiers are cached: `$ELBO_CACHE_DIR`, else `$XDG_CACHE_HOME/elbo`, else
/// `~/.cache/elbo`. A variable that is set but empty counts as unset (an empty path would be
/// the working directory), and so does a relative `$XDG_CACHE_HOME` or `$HOME`, as the XDG
/// specification says.
pub fn cache_dir() -> Option<PathBuf> {
    cache_dir_from(|k| std::env::var_os(k))
}

/// [`cache_dir`] with the environment read through `env`.
pub fn cache_dir_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = var("ELBO_CACHE_DIR") {
        return Some(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME").filter(|d| d.is_absolute()) {
        return Some(d.join("elbo"));
    }
    var("HOME")
        .filter(|h| h.is_absolute())
        .map(|h| h.join(".cache").join("elbo"))
}

/// Image height and width, and the number of classes, of labelled 8-bit image data.
fn image_classes(ds: &Dataset) -> Result<([usize; 2], usize)> {
    let (h, w) = ds.image_hw().ok_or_else(|| {
        Error::Config(format!(
            "sample quality needs grey 8-bit images (its classifier is a one-channel CNN); '{}' holds examples of shape {:?}",
            ds.spec, ds.shape
        ))
    })?;
    let labels = ds.labels.as_ref().ok_or_else(|| {
        Error::Config(format!(
            "sample quality needs labelled images to train its classifier; '{}' has no labels",
            ds.spec
        ))
    })?;
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    Ok(([h, w], classes.max(2)))
}

/// The classifier of a data set (its training split), from the cache or trained now; with its
/// accuracy on the test split.
pub fn classifier(spec: &str, settings: ClassifierSettings) -> Result<(Classifier, f64)> {
    let train = data::load(spec, Split::Train)?;
    let test = data::load(spec, Split::Test)?;
    classifier_of(spec, &train, &test, settings)
}

/// [`classifier`] for splits already loaded.
fn classifier_of(
    spec: &str,
    train: &Dataset,
    test: &Dataset,
    settings: ClassifierSettings,
) -> Result<(Classifier, f64)> {
    let (hw, classes) = image_classes(train)?;
    let device = Device::flex();
    let key: String = spec
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let file = cache_dir().map(|d| {
        d.join(format!(
            "classifier-v2-{key}-e{}-b{}-s{}.safetensors",
            settings.epochs, settings.batch, settings.seed
        ))
    });
    if let Some(f) = file.as_ref().filter(|f| f.is_file()) {
        if let Ok((p, _)) = crate::fsio::load_tensors(f) {
            if let Ok(m) = params::assign(Classifier::new(hw, classes, &device), &p) {
                let acc = accuracy(&m, test)?;
                return Ok((m, acc));
            }
        }
    }
    let m = train_classifier(train, hw, classes, settings)?;
    if let Some(f) = &file {
        // The cache is a convenience: a directory that cannot be written only costs a retrain.
        if std::fs::create_dir_all(f.parent().unwrap_or(f)).is_ok() {
            if let Ok(p) = params::collect(&m) {
                let _ = crate::fsio::save_tensors(f, &[("", &p)], Default::default());
            }
        }
    }
    let acc = accuracy(&m, test)?;
    Ok((m, acc))
}

fn train_classifier(
    ds: &Dataset,
    hw: [usize; 2],
    classes: usize,
    s: ClassifierSettings,
) -> Result<Classifier> {
    let device = Device::flex().autodiff();
    device.seed(s.seed);
    let mut m = Classifier::new(hw, classes, &device);
    let mut p = params::collect(&m)?;
    let mut opt = AdamW::new(&p);
    let cfg = OptimConfig {
        lr: s.lr,
        warmup_steps: 20,
        ema_decay: 0.0,
        ..OptimConfig::default()
    };
    let labels = ds
        .labels
        .as_ref()
        .ok_or_else(|| Error::Config("no labels".into()))?;
    let d = ds.dim();
    let mut order = crate::data::BatchOrder::new(s.seed);
    let steps = (s.epochs * ds.n).div_ceil(s.batch) as u64;
    let first = m.clone();
    crate::optim::fit(
        &mut p,
        &mut opt,
        &cfg,
        0,
        steps,
        |step, p| {
            if step > 0 {
                m = params::assign(first.clone(), p)?;
            }
            let idx = order.next_batch(ds.n, s.batch);
            let b = idx.len();
            let x = Tensor::<2>::from_data(
                TensorData::new(crate::data::batches::gather(&ds.x, d, &idx), [b, d]),
                &device,
            );
            let y: Vec<f32> = idx
                .iter()
                .flat_map(|&i| (0..classes).map(move |c| f32::from(labels[i] as usize == c)))
                .collect();
            let y = Tensor::<2>::from_data(TensorData::new(y, [b, classes]), &device);
            let (_, logits) = m.forward(x);
            let loss = -(log_softmax(logits, 1) * y).sum_dim(1).mean();
            let v: f32 = loss.clone().into_scalar();
            Ok(crate::optim::StepLoss {
                loss: v as f64,
                report: v as f64,
                grads: params::collect_grads(&m, &loss.backward())?,
                examples: b,
            })
        },
        &mut (),
    )?;
    params::assign(Classifier::new(hw, classes, &Device::flex()), &p)
}

/// Features `[n, 128]` (row-major, f64) and softmax probabilities `[n, K]` of 8-bit images.
pub fn features(m: &Classifier, x: &[f32], d: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = x.len() / d.max(1);
    let device = Device::flex();
    let (mut f, mut p) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(500) {
        let b = 500.min(n - start);
        let t = crate::data::batches::row_block(x, start, b, d, &device);
        let (feat, logits) = m.forward(t);
        f.extend(crate::elbo::to_f32(feat)?.into_iter().map(f64::from));
        p.extend(
            crate::elbo::to_f32(softmax(logits, 1))?
                .into_iter()
                .map(f64::from),
        );
    }
    Ok((f, p))
}

fn accuracy(m: &Classifier, ds: &Dataset) -> Result<f64> {
    let labels = ds
        .labels
        .as_ref()
        .ok_or_else(|| Error::Config("no labels".into()))?;
    let (_, p) = features(m, &ds.x, ds.dim())?;
    let k = p.len() / ds.n.max(1);
    let right = p
        .chunks(k)
        .zip(labels)
        .filter(|(row, &y)| argmax(row) == y as usize)
        .count();
    Ok(right as f64 / ds.n.max(1) as f64)
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

/// Quality figures of one set of images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityFigures {
    pub n: usize,
    /// Fréchet distance to the test split in the classifier's feature space.
    pub fd_classifier: f64,
    /// Entropy (nats) of the histogram of predicted classes.
    pub class_entropy: f64,
    /// Mean of the largest predicted probability.
    pub mean_confidence: f64,
}

/// A model's samples beside real images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub samples: QualityFigures,
    /// Real training images, scored the same way.
    pub real: QualityFigures,
    /// The classifier's accuracy on the test split.
    pub classifier_test_accuracy: f64,
    /// What the figures are, in words.
    pub note: String,
    /// How the samples were drawn (sampler and steps), where that applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<String>,
    /// Network evaluations per sample, counted (a decoder pass: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfe: Option<f64>,
}

/// Mean and covariance of row-major `[n, k]` features.
pub fn moments(f: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let n = f.len() / k.max(1);
    let mut mu = vec![0.0; k];
    for row in f.chunks(k) {
        for (m, v) in mu.iter_mut().zip(row) {
            *m += v / n as f64;
        }
    }
    let mut cov = vec![0.0; k * k];
    for row in f.chunks(k) {
        for i in 0..k {
            let di = row[i] - mu[i];
            for j in i..k {
                cov[i * k + j] += di * (row[j] - mu[j]);
            }
        }
    }
    let denom = (n.max(2) - 1) as f64;
    for i in 0..k {
        for j in i..k {
            let v = cov[i * k + j] / denom;
            cov[i * k + j] = v;
            cov[j * k + i] = v;
        }
    }
    (mu, cov)
}

/// Eigenvalues and eigenvectors (columns of `v`) of a symmetric `k × k` matrix, by cyclic Jacobi
/// rotations (accurate to rounding for the 128 × 128 covariances here).
pub fn symmetric_eigen(a: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; k * k];
    for i in 0..k {
        v[i * k + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j] * a[i * k + j])
            .sum();
        let scale: f64 = (0..k)
            .map(|i| a[i * k + i] * a[i * k + i])
            .sum::<f64>()
            .max(1e-300);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                let t = theta.signum().max(0.0) * 2.0 - 1.0; // sign, with sign(0) = 1
                let t = t / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..k {
                    let (arp, arq) = (a[r * k + p], a[r * k + q]);
                    a[r * k + p] = c * arp - s * arq;
                    a[r * k + q] = s * arp + c * arq;
                }
                for r in 0..k {
                    let (apr, aqr) = (a[p * k + r], a[q * k + r]);
                    a[p * k + r] = c * apr - s * aqr;
                    a[q * k + r] = s * apr + c * aqr;
                }
                for r in 0..k {
                    let (vrp, vrq) = (v[r * k + p], v[r * k + q]);
                    v[r * k + p] = c * vrp - s * vrq;
                    v[r * k + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    ((0..k).map(|i| a[i * k + i]).collect(), v)
}

/// The Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂):
/// ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}.
pub fn frechet(mu1: &[f64], s1: &[f64], mu2: &[f64], s2: &[f64]) -> f64 {
    let k = mu1.len();
    let (e, v) = symmetric_eigen(s1, k);
    // Σ₁^{1/2} = V diag(√λ) Vᵀ.
    let mut half = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..k {
            half[i * k + j] = (0..k)
                .map(|m| v[i * k + m] * e[m].max(0.0).sqrt() * v[j * k + m])
                .sum();
        }
    }
    let mul = |a: &[f64], b: &[f64]| -> Vec<f64> {
        let mut c = vec![0.0; k * k];
        for i in 0..k {
            for m in 0..k {
                let aim = a[i * k + m];
                if aim != 0.0 {
                    for j in 0..k {
                        c[i * k + j] += aim * b[m * k + j];
                    }
                }
            }
        }
        c
    };
    let m = mul(&mul(&half, s2), &half);
    let sym: Vec<f64> = (0..k * k)
        .map(|ij| 0.5 * (m[ij] + m[(ij % k) * k + ij / k]))
        .collect();
    let (em, _) = symmetric_eigen(&sym, k);
    let tr_sqrt: f64 = em.iter().map(|x| x.max(0.0).sqrt()).sum();
    let d2: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b).powi(2)).sum();
    let tr1: f64 = (0..k).map(|i| s1[i * k + i]).sum();
    let tr2: f64 = (0..k).map(|i| s2[i * k + i]).sum();
    d2 + tr1 + tr2 - 2.0 * tr_sqrt
}

/// The figures of images `x` (`[n, H·W]`, 8-bit levels) against reference features.
pub fn figures(
    m: &Classifier,
    x: &[f32],
    d: usize,
    reference: &(Vec<f64>, Vec<f64>),
) -> Result<QualityFigures> {
    let n = x.len() / d.max(1);
    let (f, p) = features(m, x, d)?;
    let (mu, cov) = moments(&f, FEATURES);
    let k = p.len() / n.max(1);
    let mut hist = vec![0.0; k];
    let mut conf = 0.0;
    for row in p.chunks(k) {
        hist[argmax(row)] += 1.0 / n as f64;
        conf += row.iter().cloned().fold(0.0, f64::max) / n as f64;
    }
    let entropy = (-hist
        .iter()
        .filter(|&&h| h > 0.0)
        .map(|h| h * h.ln())
        .sum::<f64>())
    .max(0.0);
    Ok(QualityFigures {
        n,
        fd_classifier: frechet(&mu, &cov, &reference.0, &reference.1),
        class_entropy: entropy,
        mean_confidence: conf,
    })
}

/// Quality of `samples` (8-bit levels, `[n, H·W]`) of a model of `spec`: the figures of the
/// samples and of as many real training images, against the test split.
pub fn quality(spec: &str, samples: &[f32], settings: ClassifierSettings) -> Result<Quality> {
    let test = data::load(spec, Split::Test)?;
    let train = data::load(spec, Split::Train)?;
    let (m, acc) = classifier_of(spec, &train, &test, settings)?;
    let d = test.dim();
    let (ft, _) = features(&m, &test.x, d)?;
    let reference = moments(&ft, FEATURES);
    let n = samples.len() / d.max(1);
    let real = train.head(n.max(2));
    Ok(Quality {
        samples: figures(&m, samples, d, &reference)?,
        real: figures(&m, &real.x, d, &reference)?,
        classifier_test_accuracy: acc,
        note: format!(
            "FD-classifier: Fréchet distance to the {} test images in the 128-d features of \
             elbo's own CNN classifier of {spec} (not FID); entropy of predicted classes (nats); \
             mean confidence",
            test.n
        ),
        sampler: None,
        nfe: None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_empty_or_relative_cache_variable_is_not_the_working_directory() {
        // ELBO_CACHE_DIR="" once wrote the classifier cache into the working directory.
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let home = Some(PathBuf::from("/home/u/.cache/elbo"));
        assert_eq!(
            cache_dir_from(env(&[("ELBO_CACHE_DIR", ""), ("HOME", "/home/u")])),
            home
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/home/u")])),
            home
        );
        assert_eq!(
            cache_dir_from(env(&[("ELBO_CACHE_DIR", "/c"), ("HOME", "/home/u")])),
            Some(PathBuf::from("/c"))
        );
        assert_eq!(
            cache_dir_from(env(&[("HOME", ""), ("ELBO_CACHE_DIR", "")])),
            None
        );
    }

    use super::*;

    #[test]
    fn frechet_distance_matches_the_closed_form_of_two_gaussians() {
        // 2-D: Σ₁ = diag(a, b), Σ₂ = R diag(c, d) Rᵀ (not commuting with Σ₁). For a 2 × 2 PSD
        // matrix M, tr √M = √(tr M + 2 √det M), with M = Σ₁^{1/2} Σ₂ Σ₁^{1/2}: tr M = tr(Σ₁Σ₂),
        // det M = det Σ₁ det Σ₂.
        let (a, b, c, d, th) = (2.0f64, 0.5f64, 1.3f64, 0.2f64, 0.7f64);
        let (co, si) = (th.cos(), th.sin());
        let s2 = [
            c * co * co + d * si * si,
            (c - d) * co * si,
            (c - d) * co * si,
            c * si * si + d * co * co,
        ];
        let s1 = [a, 0.0, 0.0, b];
        let (mu1, mu2) = ([0.3, -1.0], [1.1, 0.4]);
        let tr12 = a * s2[0] + b * s2[3];
        let det = a * b * (c * d);
        let closed = (0.8f64.powi(2) + 1.4f64.powi(2)) + (a + b) + (c + d)
            - 2.0 * (tr12 + 2.0 * det.sqrt()).sqrt();
        let ours = frechet(&mu1, &s1, &mu2, &s2);
        assert!((ours - closed).abs() < 1e-10, "{ours} vs {closed}");
        // A distribution is at distance 0 from itself, and the eigen-solver is exact on a
        // larger random covariance.
        assert!(frechet(&mu2, &s2, &mu2, &s2).abs() < 1e-10);
        let k = 6;
        let mut r = crate::rng::seeded(3);
        let g: Vec<f64> = crate::rng::normal_vec(&mut r, k * k)
            .into_iter()
            .map(f64::from)
            .collect();
        let mut s = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                s[i * k + j] = (0..k).map(|m| g[i * k + m] * g[j * k + m]).sum();
            }
        }
        let (e, v) = symmetric_eigen(&s, k);
        for i in 0..k {
            for j in 0..k {
                let back: f64 = (0..k).map(|m| v[i * k + m] * e[m] * v[j * k + m]).sum();
                assert!((back - s[i * k + j]).abs() < 1e-9, "V Λ Vᵀ ≠ S");
            }
        }
    }
}
