//! Training a classifier of noisy inputs for classifier guidance (MATH.md M42), and loading a
//! trained one; the network is [`crate::models::noisy_classifier`]'s.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng as _;

use crate::data::{self, DataKind, DataSpace, Dataset, Scaling, Split};
use crate::diffusion::{NoiseSchedule, Process, ScheduleKind};
use crate::models::noisy_classifier::{
    NoisyClassifier, NoisyClassifierConfig, NoisyClassifierMeta, META_FILE,
};
use crate::optim::{AdamW, OptimConfig};
use crate::params;
use crate::progress::Progress;
use crate::rng::{randn, seeded};
use crate::{Error, Result};

/// Train a noisy classifier on `cfg.data` and save it in `out` (its meta and weights).
pub fn train(
    cfg: &NoisyClassifierConfig,
    out: &Path,
    progress: &dyn Progress,
) -> Result<NoisyClassifier> {
    let train = data::load(&cfg.data, Split::Train)?;
    let test = data::load(&cfg.data, Split::Test)?;
    let labels = train.labels.as_ref().ok_or_else(|| {
        Error::Config(format!(
            "a noisy classifier needs labelled data; '{}' has no labels",
            cfg.data
        ))
    })?;
    let spec = DataSpace::of(&train, Scaling::default(), DataSpace::classes_of(&train));
    let mut schedule = cfg.schedule.clone();
    if schedule.kind == ScheduleKind::Auto {
        schedule.kind = if train.kind == DataKind::Image8 {
            ScheduleKind::Cosine
        } else {
            ScheduleKind::LinearGamma
        };
    }
    if schedule.kind == ScheduleKind::Learned {
        return Err(Error::Config(
            "a noisy classifier needs a fixed schedule (its noise levels are drawn from it)".into(),
        ));
    }
    let sched = schedule.fixed()?;
    let mut cfg = cfg.clone();
    cfg.schedule = schedule;
    let meta = NoisyClassifierMeta {
        config: cfg.clone(),
        spec,
        gamma_lo: sched.gamma(0.0),
        gamma_hi: sched.gamma(1.0),
        accuracy_by_t: vec![],
    };
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let device = Device::flex().autodiff();
    device.seed(cfg.seed);
    let mut m = NoisyClassifier::new(meta, &device)?;
    let mut p = params::collect(&m)?;
    let mut opt = AdamW::new(&p);
    let first = m.clone();
    let ocfg = OptimConfig {
        lr: cfg.lr,
        warmup_steps: 100,
        ema_decay: 0.0,
        ..OptimConfig::default()
    };
    let d = train.dim();
    let mut order = crate::data::BatchOrder::new(cfg.seed);
    let mut rng = seeded(cfg.seed ^ 0x0C1A55);
    progress.start("noisy classifier", cfg.steps);
    let mut tick = Ticks(progress);
    crate::optim::fit(
        &mut p,
        &mut opt,
        &ocfg,
        0,
        cfg.steps,
        |step, p| {
            if step > 0 {
                m = params::assign(first.clone(), p)?;
            }
            let idx = order.next_batch(train.n, cfg.batch);
            let b = idx.len();
            let x = Tensor::<2>::from_data(
                TensorData::new(crate::data::batches::gather(&train.x, d, &idx), [b, d]),
                &device,
            );
            let y: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
            let loss = noisy_loss(&m, sched.as_ref(), x, &y, &mut rng);
            let v: f32 = loss.clone().into_scalar();
            Ok(crate::optim::StepLoss {
                loss: v as f64,
                report: v as f64,
                grads: params::collect_grads(&m, &loss.backward())?,
                examples: b,
            })
        },
        &mut tick,
    )?;
    progress.finish();
    let mut m = params::assign(NoisyClassifier::new(m.meta.clone(), &Device::flex())?, &p)?;
    m.meta.accuracy_by_t = [0.0, 0.25, 0.5, 0.75, 1.0]
        .iter()
        .map(|&t| Ok((t, accuracy(&m, sched.as_ref(), &test, t)?)))
        .collect::<Result<_>>()?;
    crate::fsio::save_tensors(
        &out.join("model.safetensors"),
        &[("", &p)],
        Default::default(),
    )?;
    let text = serde_json::to_string_pretty(&m.meta)
        .map_err(|e| Error::Invalid(format!("writing {META_FILE}: {e}")))?;
    crate::fsio::write_atomic(&out.join(META_FILE), text.as_bytes())?;
    Ok(m)
}

/// Cross-entropy of the labels given z_t at t uniform, averaged over the batch.
fn noisy_loss(
    m: &NoisyClassifier,
    sched: &(dyn NoiseSchedule + Send + Sync),
    x: Tensor<2>,
    y: &[u32],
    rng: &mut crate::rng::Rng,
) -> Tensor<1> {
    let [b, d] = x.dims();
    let device = x.device();
    let gammas: Vec<f32> = (0..b)
        .map(|_| sched.gamma(rng.gen::<f64>()) as f32)
        .collect();
    let gamma = Tensor::<1>::from_data(TensorData::new(gammas, [b]), &device);
    let z = noisy(m, x, gamma.clone(), randn(rng, [b, d], &device));
    -m.log_prob(z, gamma, y).mean()
}

/// z_t = α x + σ ε of data rows (data units).
fn noisy(m: &NoisyClassifier, x: Tensor<2>, gamma: Tensor<1>, eps: Tensor<2>) -> Tensor<2> {
    let (alpha, sigma) = Process::VariancePreserving.alpha_sigma(gamma);
    m.to_model_space(x) * alpha + eps * sigma
}

/// Accuracy on (up to 2,000 of) the test split at time t.
fn accuracy(
    m: &NoisyClassifier,
    sched: &(dyn NoiseSchedule + Send + Sync),
    test: &Dataset,
    t: f64,
) -> Result<f64> {
    let labels = test
        .labels
        .as_ref()
        .ok_or_else(|| Error::Config("the test split has no labels".into()))?;
    let n = test.n.min(2000);
    let d = test.dim();
    let device = Device::flex();
    let mut rng = seeded(0x7E57);
    let mut right = 0usize;
    for start in (0..n).step_by(256) {
        let b = 256.min(n - start);
        let x = Tensor::<2>::from_data(
            TensorData::new(test.x[start * d..(start + b) * d].to_vec(), [b, d]),
            &device,
        );
        let gamma = Tensor::<1>::full([b], sched.gamma(t), &device);
        let z = noisy(m, x, gamma.clone(), randn(&mut rng, [b, d], &device));
        let logits = crate::elbo::to_f32(m.logits(z, gamma))?;
        let k = m.classes();
        right += logits
            .chunks(k)
            .zip(&labels[start..start + b])
            .filter(|(row, y)| {
                let best = (0..k).max_by(|&i, &j| row[i].total_cmp(&row[j]));
                best == Some(**y as usize)
            })
            .count();
    }
    Ok(right as f64 / n.max(1) as f64)
}

/// The first free `runs/noisy-classifier-<data>-N`.
pub fn default_dir(data: &str) -> PathBuf {
    let clean = crate::run::data_slug(data);
    (1..)
        .map(|i| Path::new("runs").join(format!("noisy-classifier-{clean}-{i}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| PathBuf::from("runs/noisy-classifier"))
}

/// A loop's steps as ticks of a progress bar.
struct Ticks<'a>(&'a dyn Progress);

impl crate::optim::FitHooks for Ticks<'_> {
    fn after(
        &mut self,
        _s: &crate::optim::StepDone,
        _params: &crate::params::NamedParams,
        _opt: &AdamW,
    ) -> Result<()> {
        self.0.inc(1);
        Ok(())
    }
}
