//! Sample quality against network evaluations (MATH.md M38–M40): every sampler of a diffusion
//! run at several step counts, each with its measured NFE per sample, FD-classifier, class
//! entropy and confidence, and the seconds it took, beside real images.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::draw::draw;
use super::quality::{self, ClassifierSettings, QualityFigures};
use super::Progress;
use crate::data::DataKind;
use crate::models::SampleOptions;
use crate::run::RunDir;
use crate::sample::SamplerKind;
use crate::{Error, Result};

/// One configuration: a sampler and its steps (or, for RK45, its tolerance).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub sampler: SamplerKind,
    pub steps: usize,
    /// RK45's rtol = atol (other samplers: unused).
    pub tol: f64,
}

/// The default sweep: about the NFE range 10–500 for each sampler.
pub fn default_settings() -> Vec<Setting> {
    let mut v = Vec::new();
    let mut add = |s: SamplerKind, steps: &[usize]| {
        for &k in steps {
            v.push(Setting {
                sampler: s,
                steps: k,
                tol: 0.0,
            })
        }
    };
    add(SamplerKind::Ancestral, &[10, 20, 50, 100, 200]);
    add(SamplerKind::Ddim, &[10, 20, 50, 100, 200]);
    add(SamplerKind::EulerMaruyama, &[20, 50, 100, 200, 500]);
    add(SamplerKind::Pc, &[10, 25, 50, 100]);
    add(SamplerKind::Heun, &[5, 10, 25, 50]);
    add(SamplerKind::DpmSolverPp, &[10, 20, 50]);
    for tol in [1e-2, 1e-3, 1e-4] {
        v.push(Setting {
            sampler: SamplerKind::Rk45,
            steps: 100,
            tol,
        });
    }
    v
}

/// One row of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerRow {
    pub setting: Setting,
    /// Network evaluations per sample, measured.
    pub nfe: f64,
    pub figures: QualityFigures,
    pub seconds: f64,
}

/// The sweep's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplerSweep {
    pub data: String,
    pub n: usize,
    pub rows: Vec<SamplerRow>,
    /// As many real training images, scored the same way.
    pub real: QualityFigures,
    pub note: String,
}

/// Draw `n` samples with each setting and measure them.
pub fn sweep(
    dir: &RunDir,
    settings: &[Setting],
    n: usize,
    seed: u64,
    threads: usize,
    progress: &dyn Progress,
) -> Result<SamplerSweep> {
    if n < 2 {
        return Err(Error::Config("--n must be at least 2".into()));
    }
    let cfg = dir.config()?;
    if !cfg.model.is_diffusion() {
        return Err(Error::Config(format!(
            "{}: a {} run; the sampler sweep is for diffusion models (vdm, ncsn)",
            dir.path.display(),
            cfg.model.kind()
        )));
    }
    let mf = dir.model_file()?;
    if mf.data.kind != DataKind::Image8 || mf.data.image_hw().is_none() {
        return Err(Error::Config(format!(
            "the sampler sweep measures 8-bit images by a CNN classifier; '{}' is not images",
            cfg.data
        )));
    }
    if settings.is_empty() {
        return Err(Error::Config("no sampler settings".into()));
    }
    // The classifier, the test split's reference features and the real images' figures once,
    // as `quality::quality` would compute them for every row.
    let (clf, _) = quality::classifier(&cfg.data, ClassifierSettings::default())?;
    let test = crate::data::load(&cfg.data, crate::data::Split::Test)?;
    let d = test.dim();
    let reference = quality::moments(&quality::features(&clf, &test.x, d)?.0, quality::FEATURES);
    let train = crate::data::load(&cfg.data, crate::data::Split::Train)?;
    let real = quality::figures(&clf, &train.head(n.max(2)).x, d, &reference)?;
    let device = burn::tensor::Device::flex();
    let mut rows = Vec::new();
    for s in settings {
        let o = SampleOptions {
            sampler: Some(s.sampler),
            steps: Some(s.steps),
            rtol: if s.tol > 0.0 { s.tol } else { 1e-3 },
            atol: if s.tol > 0.0 { s.tol } else { 1e-3 },
            ..SampleOptions::ancestral(seed, threads)
        };
        let rows0 = crate::sample::network_rows();
        let t0 = Instant::now();
        let smp = draw(dir, n, &o, false, &device, progress)?;
        let seconds = t0.elapsed().as_secs_f64();
        let nfe = (crate::sample::network_rows() - rows0) as f64 / n as f64;
        let scale = 255.0 / smp.white;
        let v: Vec<f32> = smp.values.iter().map(|x| x * scale).collect();
        rows.push(SamplerRow {
            setting: *s,
            nfe,
            figures: quality::figures(&clf, &v, d, &reference)?,
            seconds,
        });
    }
    Ok(SamplerSweep {
        data: cfg.data.clone(),
        n,
        rows,
        real,
        note: "FD-classifier: Fréchet distance to the test split in the features of elbo's own \
               CNN classifier (not FID); NFE: network evaluations per sample, counted"
            .into(),
    })
}

/// The sweep as a Markdown table.
pub fn markdown(s: &SamplerSweep) -> String {
    let mut out = format!(
        "{} samples of {} per row.\n\n| sampler | steps | NFE | FD-classifier | class entropy | \
         mean confidence | seconds |\n| --- | --- | --- | --- | --- | --- | --- |\n",
        s.n, s.data
    );
    for r in &s.rows {
        let name = match r.setting.sampler {
            SamplerKind::Rk45 => format!("rk45 (rtol = atol = {:e})", r.setting.tol),
            k => k.describe(0.0),
        };
        let steps = if r.setting.sampler == SamplerKind::Rk45 {
            "adaptive".to_string()
        } else {
            r.setting.steps.to_string()
        };
        out.push_str(&format!(
            "| {name} | {steps} | {:.0} | {:.1} | {:.3} | {:.3} | {:.1} |\n",
            r.nfe,
            r.figures.fd_classifier,
            r.figures.class_entropy,
            r.figures.mean_confidence,
            r.seconds
        ));
    }
    out.push_str(&format!(
        "| real training images | | | {:.1} | {:.3} | {:.3} | |\n\n{}\n",
        s.real.fd_classifier, s.real.class_entropy, s.real.mean_confidence, s.note
    ));
    out
}

/// FD-classifier against NFE, one line per sampler (log NFE), to `path`.
pub fn plot(s: &SamplerSweep, path: &std::path::Path) -> Result<()> {
    let mut kinds: Vec<SamplerKind> = Vec::new();
    for r in &s.rows {
        if !kinds.contains(&r.setting.sampler) {
            kinds.push(r.setting.sampler);
        }
    }
    let names: Vec<String> = kinds.iter().map(|k| k.describe(0.0)).collect();
    let series: Vec<crate::report::plot::Series> = kinds
        .iter()
        .zip(&names)
        .map(|(k, name)| {
            let mut points: Vec<(f64, f64)> = s
                .rows
                .iter()
                .filter(|r| r.setting.sampler == *k)
                .map(|r| (r.nfe, r.figures.fd_classifier))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            crate::report::plot::Series {
                name,
                points,
                markers: true,
            }
        })
        .collect();
    crate::report::plot::line_plot(
        path,
        &format!("sample quality against NFE ({}, {} samples)", s.data, s.n),
        "network evaluations per sample (NFE)",
        "FD-classifier (lower is better)",
        &series,
        true,
    )
}
