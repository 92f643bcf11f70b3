//! Samples of a trained run, in data units, whatever its model: checked against the limits
//! before any work (`crate::limits`), drawn in blocks so that a large `.npy` never has to be
//! held whole.

use std::time::Instant;

use burn::module::Module;

use super::Progress;
use crate::limits::{self, MAX_SAMPLE_BYTES, MAX_SAMPLE_STEPS, MAX_SECONDS};
use crate::models::{Model, ModelVisitor, SampleOptions};
use crate::run::load_model;
use crate::run::{ModelFile, RunDir};
use crate::Result;

/// Samples of a run: row-major `[n, D]` in data units, with the value of a white pixel (1 for
/// the Bernoulli means of binarised images, 255 for 8-bit levels).
#[derive(Debug, Clone)]
pub struct Samples {
    pub file: ModelFile,
    pub values: Vec<f32>,
    pub white: f32,
}

/// Draw `n` samples from the EMA weights of the run in `dir`, all in memory.
pub fn draw(
    dir: &RunDir,
    n: usize,
    opts: &SampleOptions,
    force: bool,
    device: &burn::tensor::Device,
    progress: &dyn Progress,
) -> Result<Samples> {
    let d = dir.model_file()?.data.dim();
    let bytes = n as f64 * d as f64 * 4.0;
    limits::check(bytes <= MAX_SAMPLE_BYTES as f64, force, || {
        format!(
            "--n {n}: {n} samples of {d} values are {} to hold in memory (the limit is {}; a \
             .npy output is written in blocks and takes any number)",
            limits::bytes(bytes),
            limits::bytes(MAX_SAMPLE_BYTES as f64)
        )
    })?;
    let mut values = Vec::new();
    let (file, white) = draw_blocks(dir, n, opts, force, device, progress, &mut |b| {
        values.extend_from_slice(b);
        Ok(())
    })?;
    Ok(Samples {
        file,
        values,
        white,
    })
}

/// Draw `n` samples block by block, handing each block (row-major, whole samples) to `sink`;
/// returns the run's `model.json` and the value of a white pixel. The samples are those of one
/// call with the whole `n`: blocks are runs of whole noise chunks.
pub fn draw_blocks(
    dir: &RunDir,
    n: usize,
    opts: &SampleOptions,
    force: bool,
    device: &burn::tensor::Device,
    progress: &dyn Progress,
    sink: &mut dyn FnMut(&[f32]) -> Result<()>,
) -> Result<(ModelFile, f32)> {
    dir.check()?;
    let cfg = dir.config()?;
    let steps = opts.steps.unwrap_or(0);
    limits::check(steps <= MAX_SAMPLE_STEPS, force, || {
        format!(
            "--steps {steps}: every step is one network evaluation per image (the limit is \
             {MAX_SAMPLE_STEPS})"
        )
    })?;
    struct Visit<'a> {
        dir: &'a RunDir,
        n: usize,
        opts: &'a SampleOptions,
        force: bool,
        device: &'a burn::tensor::Device,
        progress: &'a dyn Progress,
        sink: &'a mut dyn FnMut(&[f32]) -> Result<()>,
    }
    impl ModelVisitor for Visit<'_> {
        type Output = Result<(ModelFile, f32)>;
        fn visit<M: Model>(self, section: &M::Config) -> Self::Output {
            let l = load_model::<M>(self.dir, section, self.device)?;
            let binary = M::binarize(&l.section, &l.spec).is_some();
            let m = &l.model;
            // Classifier guidance (M42): the classifier loaded once, on the autodiff device its
            // input gradients need.
            let clf = match &self.opts.classifier {
                Some(d) => Some(
                    crate::models::noisy_classifier::load(d, &self.device.clone().autodiff())?
                        .no_grad(),
                ),
                None => None,
            };
            let draw = |rows: usize, o: &SampleOptions, tick: &(dyn Fn() + Sync)| match &clf {
                Some(c) => m.draw_guided(rows, o, c, tick),
                None => m.draw(rows, o, tick),
            };
            let per = m.sample_chunk_rows().max(1);
            if !self.force {
                estimate_time(m, self.n, self.opts, per, &draw)?;
            }
            self.progress
                .start("sampling", m.sample_work(self.n, self.opts));
            let tick = || self.progress.inc(1);
            // Blocks of 64 chunks.
            let block = per.saturating_mul(64);
            let mut done = 0;
            while done < self.n {
                let rows = block.min(self.n - done);
                let o = SampleOptions {
                    first_chunk: self.opts.first_chunk + (done / per) as u64,
                    ..self.opts.clone()
                };
                (self.sink)(&draw(rows, &o, &tick)?)?;
                done += rows;
            }
            self.progress.finish();
            Ok((l.file, if binary { 1.0 } else { 255.0 }))
        }
    }
    cfg.model.visit(Visit {
        dir,
        n,
        opts,
        force,
        device,
        progress,
        sink,
    })
}

/// Draw `rows` samples with these options, telling a progress callback.
type DrawFn<'a> = dyn Fn(usize, &SampleOptions, &(dyn Fn() + Sync)) -> Result<Vec<f32>> + 'a;

/// Time one chunk's worth (one sampler step, for a diffusion model) and refuse work that would
/// take longer than [`MAX_SECONDS`] at that rate.
fn estimate_time<M: Model>(
    m: &M,
    n: usize,
    opts: &SampleOptions,
    per: usize,
    draw: &DrawFn,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let probe = SampleOptions {
        steps: m.diffusion().map(|_| 1).or(opts.steps),
        threads: 1,
        ..opts.clone()
    };
    let rows = per.min(n);
    let t0 = Instant::now();
    // One thread: the probe's network evaluations are not counted in the NFE.
    crate::sample::uncounted(|| draw(rows, &probe, &|| ()))?;
    let dt = t0.elapsed().as_secs_f64();
    let units = m.sample_work(n, opts) as f64 / m.sample_work(rows, &probe).max(1) as f64;
    let parallel = (opts.threads.max(1) as f64)
        .min(n.div_ceil(per) as f64)
        .max(1.0);
    let secs = dt * units / parallel;
    limits::check(secs <= MAX_SECONDS, false, || {
        format!(
            "drawing {n} samples{} would take about {} at the rate just measured (the limit is {})",
            opts.steps
                .map(|s| format!(" in {s} steps"))
                .unwrap_or_default(),
            limits::duration(secs),
            limits::duration(MAX_SECONDS)
        )
    })
}
