//! Sample quality against network evaluations (MATH.md M38–M40): every sampler of a diffusion
//! run at several step counts, each with its measured NFE per sample, FD-classifier, class
//! entropy and confidence, and the seconds it took, beside real images.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::DataKind;
use crate::eval::draw::draw;
use crate::eval::quality::{self, ClassifierSettings, QualityFigures};
use crate::progress::Progress;
use crate::run::RunDir;
use crate::sample::{SampleOptions, SamplerKind, SamplerParams};
use crate::{Error, Result};

/// One configuration: a sampler with its settings, and its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub sampler: SamplerKind,
    pub steps: usize,
    /// RK45's rtol = atol (other samplers: 0).
    pub tol: f64,
    /// Another run to draw this row from (a distilled student of the swept run); none: the
    /// swept run itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

impl Setting {
    /// The row's name: the sampler, or the student run and its sampler.
    pub fn label(&self) -> String {
        match &self.run {
            Some(r) => format!(
                "student {} ({})",
                std::path::Path::new(r)
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_else(|| r.clone()),
                self.sampler.describe()
            ),
            None => self.sampler.describe(),
        }
    }

    /// The line it belongs to in the plot.
    fn series(&self) -> String {
        match &self.run {
            Some(_) => format!("distilled students, {}", self.sampler.name()),
            None => self.sampler.name().into(),
        }
    }
}

/// The default sweep: about the NFE range 10–500 for each sampler; RK45 at three tolerances.
pub fn default_settings() -> Vec<Setting> {
    let mut v = Vec::new();
    let mut add = |name: &str, steps: &[usize], tol: f64| {
        let p = SamplerParams {
            rtol: if tol > 0.0 { tol } else { 1e-3 },
            atol: if tol > 0.0 { tol } else { 1e-3 },
            ..SamplerParams::default()
        };
        if let Some(s) = SamplerKind::from_name(name, &p) {
            for &k in steps {
                v.push(Setting {
                    sampler: s.clone(),
                    steps: k,
                    tol,
                    run: None,
                })
            }
        }
    };
    add("ancestral", &[10, 20, 50, 100, 200], 0.0);
    add("ddim", &[10, 20, 50, 100, 200], 0.0);
    add("euler-maruyama", &[20, 50, 100, 200, 500], 0.0);
    add("pc", &[10, 25, 50, 100], 0.0);
    add("heun", &[5, 10, 25, 50], 0.0);
    add("dpm-solver++", &[10, 20, 50], 0.0);
    for tol in [1e-2, 1e-3, 1e-4] {
        add("rk45", &[100], tol);
    }
    v
}

/// The sweep of a distillation (M50): each student at its own steps on its grid, by its own
/// sampler (ancestral, `STUDENT_SAMPLER`) and by deterministic DDIM, beside
/// the teacher's ancestral, DDIM and DPM-Solver++ samplers at the same NFE and Heun at the
/// nearest (2k − 1 ≤ NFE), and the teacher's 200 ancestral steps as the reference.
pub fn distill_settings(students: &[(usize, std::path::PathBuf)]) -> Vec<Setting> {
    let mut v = Vec::new();
    let p = SamplerParams::default();
    let mut add = |name: &str, steps: usize, run: Option<String>| {
        if let Some(s) = SamplerKind::from_name(name, &p) {
            v.push(Setting {
                sampler: s,
                steps,
                tol: 0.0,
                run,
            });
        }
    };
    add("ancestral", 200, None);
    for (n, dir) in students {
        let run = Some(dir.display().to_string());
        add(crate::train::distill::STUDENT_SAMPLER, *n, run.clone());
        add("ddim", *n, run);
        add("ancestral", *n, None);
        add("ddim", *n, None);
        add("dpm-solver++", *n, None);
        if *n >= 3 {
            add("heun", n.div_ceil(2), None);
        }
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
    // The run, opened once for every row (and each student run once for its rows).
    let dev = burn::tensor::Device::flex();
    let run = crate::run::open(dir, &dev)?;
    let mut others: Vec<(String, Box<dyn crate::run::OpenRun>)> = Vec::new();
    let mut rows = Vec::new();
    for s in settings {
        let o = SampleOptions {
            sampler: Some(s.sampler.clone()),
            steps: Some(s.steps),
            ..SampleOptions::ancestral(seed, threads)
        };
        let which = match &s.run {
            None => run.as_ref(),
            Some(r) => {
                if !others.iter().any(|(p, _)| p == r) {
                    let other = RunDir::new(r);
                    let oc = other.config()?;
                    if oc.data != cfg.data {
                        return Err(Error::Config(format!(
                            "{r}: trained on '{}', the swept run on '{}'",
                            oc.data, cfg.data
                        )));
                    }
                    others.push((r.clone(), crate::run::open(&other, &dev)?));
                }
                let i = others.iter().position(|(p, _)| p == r).unwrap_or(0);
                others[i].1.as_ref()
            }
        };
        let t0 = Instant::now();
        let smp = draw(which, n, &o, None, false, progress)?;
        let seconds = t0.elapsed().as_secs_f64();
        let scale = 255.0 / smp.white;
        let v: Vec<f32> = smp.values.iter().map(|x| x * scale).collect();
        rows.push(SamplerRow {
            setting: s.clone(),
            nfe: smp.nfe,
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
        let name = r.setting.label();
        let steps = if r.setting.sampler.nfe(r.setting.steps).is_none() {
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
    // One line per sampler (by name: RK45's tolerances are points on its line), and one for
    // the distilled students.
    let mut names: Vec<String> = Vec::new();
    for r in &s.rows {
        if !names.contains(&r.setting.series()) {
            names.push(r.setting.series());
        }
    }
    let series: Vec<crate::report::plot::Series> = names
        .iter()
        .map(|name| {
            let mut points: Vec<(f64, f64)> = s
                .rows
                .iter()
                .filter(|r| r.setting.series() == *name)
                .map(|r| (r.nfe, r.figures.fd_classifier))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            crate::report::plot::Series {
                name: name.as_str(),
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
