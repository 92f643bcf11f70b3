//! Guidance measured (MATH.md M41–M43): for each guidance weight w, `per_class` samples of every
//! class, and what the project's clean classifier ([`crate::eval::quality`]) says of them:
//!
//! - **accuracy**: the fraction classified as the class they were asked for;
//! - **FD-classifier** of all the samples together against the test split;
//! - **diversity**: within each class, the mean distance between two samples' classifier
//!   features, averaged over classes, beside the same figure for real test images (guidance
//!   trades it for accuracy).
//!
//! Classifier-free guidance needs a class-conditional run; classifier guidance takes any
//! variance-preserving run of the data and a noisy classifier.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::data::{self, DataKind, Split};
use crate::diffusion::guidance::ClassGradient;
use crate::eval::draw::draw;
use crate::eval::quality::{self, ClassifierSettings, FEATURES};
use crate::progress::Progress;
use crate::run::RunDir;
use crate::sample::SampleOptions;
use crate::{Error, Result};

/// What a sweep draws.
#[derive(Debug, Clone)]
pub struct GuidanceOptions {
    pub weights: Vec<f64>,
    pub per_class: usize,
    /// A noisy classifier's directory: classifier guidance; none: classifier-free.
    pub classifier: Option<PathBuf>,
    /// Sampler settings (class, guidance and classifier are set per row).
    pub sample: SampleOptions,
    pub force: bool,
}

/// One weight's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuidanceRow {
    pub w: f64,
    pub accuracy: f64,
    pub fd_classifier: f64,
    pub diversity: f64,
    pub mean_confidence: f64,
}

/// A sweep's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuidanceReport {
    /// `classifier-free` or `classifier`.
    pub kind: String,
    pub data: String,
    pub classes: usize,
    pub per_class: usize,
    pub sampler: String,
    pub rows: Vec<GuidanceRow>,
    /// Real test images, `per_class` of each class: their diversity, and the FD-classifier of
    /// as many real training images.
    pub real_diversity: f64,
    pub real_fd_classifier: f64,
    pub classifier_test_accuracy: f64,
    pub note: String,
}

/// The sweep, and the samples of each weight (class after class, `per_class` each).
pub fn sweep(
    dir: &RunDir,
    opts: &GuidanceOptions,
    progress: &dyn Progress,
) -> Result<(GuidanceReport, Vec<Vec<f32>>)> {
    if opts.per_class < 2 {
        return Err(Error::Config("--per-class must be at least 2".into()));
    }
    if opts.weights.is_empty() || opts.weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(Error::Config(
            "--weights: a list of guidance weights ≥ 0, e.g. 0,0.5,1,2,4".into(),
        ));
    }
    let cfg = dir.config()?;
    if !cfg.model.is_diffusion() {
        return Err(Error::Config(format!(
            "{}: a {} run; guidance is for diffusion models (vdm, ncsn)",
            dir.path.display(),
            cfg.model.kind()
        )));
    }
    let mf = dir.model_file()?;
    let spec = cfg.data.clone();
    let test = data::load(&spec, Split::Test)?;
    if test.kind != DataKind::Image8 || mf.data.image_hw().is_none() {
        return Err(Error::Config(format!(
            "guidance is measured on labelled 8-bit images (by a CNN classifier); '{spec}' is not"
        )));
    }
    // The run and the classifier, loaded once for every row (the classifier on the autodiff
    // device its input gradients need).
    let run = crate::run::open(dir, &burn::tensor::Device::flex())?;
    let guide = match &opts.classifier {
        Some(c) => Some(crate::models::noisy_classifier::load(
            c,
            &burn::tensor::Device::flex().autodiff(),
        )?),
        None => None,
    };
    let classes = match &guide {
        Some(c) => c.classes(),
        None => {
            let k = mf.spec.get("classes").and_then(|c| c.as_u64()).unwrap_or(0) as usize;
            if k == 0 {
                return Err(Error::Config(format!(
                    "{}: classifier-free guidance needs a class-conditional run (vdm.conditional \
                     = true); or give --classifier RUN for classifier guidance",
                    dir.path.display()
                )));
            }
            k
        }
    };
    let d = test.dim();
    let train = data::load(&spec, Split::Train)?;
    let (clf, acc) = quality::classifier(&spec, ClassifierSettings::default())?;
    let (ft, _) = quality::features(&clf, &test.x, d)?;
    let reference = quality::moments(&ft, FEATURES);
    let mut rows = Vec::new();
    let mut drew = String::new();
    let mut all = Vec::new();
    for &w in &opts.weights {
        let mut values = Vec::with_capacity(classes * opts.per_class * d);
        for c in 0..classes as u32 {
            // Each class its own noise (the same at every w: a paired comparison).
            let o = SampleOptions {
                class: Some(c),
                guidance: w,
                first_chunk: opts.sample.first_chunk + u64::from(c) * 1_000_000,
                ..opts.sample.clone()
            };
            let s = draw(
                run.as_ref(),
                opts.per_class,
                &o,
                guide.as_ref().map(|g| g as &dyn ClassGradient),
                opts.force,
                progress,
            )?;
            drew = s.sampler;
            let scale = 255.0 / s.white;
            values.extend(s.values.iter().map(|v| v * scale));
        }
        let fig = quality::figures(&clf, &values, d, &reference)?;
        let (f, p) = quality::features(&clf, &values, d)?;
        let asked: Vec<u32> = (0..classes as u32)
            .flat_map(|c| std::iter::repeat_n(c, opts.per_class))
            .collect();
        let k = p.len() / asked.len().max(1);
        let right = p
            .chunks(k)
            .zip(&asked)
            .filter(|(row, &c)| {
                let best = (0..k).max_by(|&i, &j| row[i].total_cmp(&row[j]));
                best == Some(c as usize)
            })
            .count();
        rows.push(GuidanceRow {
            w,
            accuracy: right as f64 / asked.len() as f64,
            fd_classifier: fig.fd_classifier,
            diversity: class_diversity(&f, &asked, classes),
            mean_confidence: fig.mean_confidence,
        });
        all.push(values);
    }
    // Real images: per_class of each class from the test split.
    let labels = test
        .labels
        .as_ref()
        .ok_or_else(|| Error::Config(format!("'{spec}' has no labels")))?;
    let mut real = Vec::new();
    let mut real_labels = Vec::new();
    for c in 0..classes as u32 {
        for (i, _) in labels
            .iter()
            .enumerate()
            .filter(|(_, &y)| y == c)
            .take(opts.per_class)
        {
            real.extend_from_slice(&test.x[i * d..(i + 1) * d]);
            real_labels.push(c);
        }
    }
    let (rf, _) = quality::features(&clf, &real, d)?;
    let real_n = (classes * opts.per_class).min(train.n);
    let real_fig = quality::figures(&clf, &train.head(real_n.max(2)).x, d, &reference)?;
    let report = GuidanceReport {
        kind: if opts.classifier.is_some() {
            "classifier".into()
        } else {
            "classifier-free".into()
        },
        data: spec,
        classes,
        per_class: opts.per_class,
        sampler: drew,
        rows,
        real_diversity: class_diversity(&rf, &real_labels, classes),
        real_fd_classifier: real_fig.fd_classifier,
        classifier_test_accuracy: acc,
        note: "accuracy: elbo's clean CNN classifier names the asked class; FD-classifier: \
               Fréchet distance to the test split in its 128-d features (not FID); diversity: \
               mean feature distance between two samples of one class, averaged over classes"
            .into(),
    };
    Ok((report, all))
}

/// Mean distance between the features of two different rows of the same class, averaged over
/// the classes that have at least two rows.
pub fn class_diversity(f: &[f64], labels: &[u32], classes: usize) -> f64 {
    let k = FEATURES;
    let mut per_class = Vec::new();
    for c in 0..classes as u32 {
        let rows: Vec<&[f64]> = labels
            .iter()
            .enumerate()
            .filter(|(_, &y)| y == c)
            .map(|(i, _)| &f[i * k..(i + 1) * k])
            .collect();
        if rows.len() < 2 {
            continue;
        }
        let mut sum = 0.0;
        let mut pairs = 0usize;
        for i in 0..rows.len() {
            for j in i + 1..rows.len() {
                sum += rows[i]
                    .iter()
                    .zip(rows[j])
                    .map(|(a, b)| (a - b).powi(2))
                    .sum::<f64>()
                    .sqrt();
                pairs += 1;
            }
        }
        per_class.push(sum / pairs as f64);
    }
    per_class.iter().sum::<f64>() / per_class.len().max(1) as f64
}

/// The report as a Markdown table.
pub fn markdown(r: &GuidanceReport) -> String {
    let mut s = format!(
        "{} guidance on {}: {} samples of each of {} classes per weight ({}).\n\n\
         | w | accuracy | FD-classifier | diversity | mean confidence |\n| --- | --- | --- | --- | --- |\n",
        r.kind, r.data, r.per_class, r.classes, r.sampler
    );
    for row in &r.rows {
        s.push_str(&format!(
            "| {} | {:.1}% | {:.1} | {:.2} | {:.3} |\n",
            row.w,
            100.0 * row.accuracy,
            row.fd_classifier,
            row.diversity,
            row.mean_confidence
        ));
    }
    s.push_str(&format!(
        "| real images | {:.1}% (classifier test accuracy) | {:.1} | {:.2} | |\n\n{}\n",
        100.0 * r.classifier_test_accuracy,
        r.real_fd_classifier,
        r.real_diversity,
        r.note
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diversity_is_the_mean_pairwise_distance_within_classes() {
        // Class 0: three points on a line at 0, 3, 4 (distances 3, 4, 1: mean 8/3); class 1:
        // two points 2 apart; one lone point of class 2 is left out. Mean over classes: 7/3.
        let k = FEATURES;
        let mut f = vec![0.0; 6 * k];
        let put = |f: &mut Vec<f64>, i: usize, v: f64| f[i * k] = v;
        put(&mut f, 0, 0.0);
        put(&mut f, 1, 3.0);
        put(&mut f, 2, 4.0);
        put(&mut f, 3, 1.0);
        put(&mut f, 4, 3.0);
        put(&mut f, 5, 9.0);
        let d = class_diversity(&f, &[0, 0, 0, 1, 1, 2], 3);
        assert!((d - 7.0 / 3.0).abs() < 1e-12, "{d}");
    }
}
