//! Samples of an opened run, in data units, whatever its model: checked against the limits
//! before any work (`crate::limits`), drawn in blocks so that a large `.npy` never has to be
//! held whole. The run is opened once ([`crate::run::open`]) and drawn from as often as needed.

use std::time::Instant;

use super::Progress;
use crate::diffusion::guidance::ClassGradient;
use crate::limits::{self, MAX_SAMPLE_BYTES, MAX_SAMPLE_STEPS, MAX_SECONDS};
use crate::run::OpenRun;
use crate::sample::SampleOptions;
use crate::Result;

/// Samples of a run: row-major `[n, D]` in data units, with the value of a white pixel (1 for
/// the Bernoulli means of binarised images, 255 for 8-bit levels), the network evaluations per
/// sample (counted) and the sampler, in words.
#[derive(Debug, Clone)]
pub struct Samples {
    pub values: Vec<f32>,
    pub white: f32,
    pub nfe: f64,
    pub sampler: String,
}

/// Draw `n` samples from an opened run, all in memory.
pub fn draw(
    run: &dyn OpenRun,
    n: usize,
    opts: &SampleOptions,
    classifier: Option<&dyn ClassGradient>,
    force: bool,
    progress: &dyn Progress,
) -> Result<Samples> {
    let d = run.file().data.dim();
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
    let (nfe, sampler) = draw_blocks(run, n, opts, classifier, force, progress, &mut |b| {
        values.extend_from_slice(b);
        Ok(())
    })?;
    Ok(Samples {
        values,
        white: run.white(),
        nfe,
        sampler,
    })
}

/// Draw `n` samples block by block, handing each block (row-major, whole samples) to `sink`;
/// returns the network evaluations per sample and the sampler in words. The samples are those
/// of one call with the whole `n`: blocks are runs of whole noise chunks.
pub fn draw_blocks(
    run: &dyn OpenRun,
    n: usize,
    opts: &SampleOptions,
    classifier: Option<&dyn ClassGradient>,
    force: bool,
    progress: &dyn Progress,
    sink: &mut dyn FnMut(&[f32]) -> Result<()>,
) -> Result<(f64, String)> {
    opts.validate()?;
    let steps = opts.steps.unwrap_or(0);
    limits::check(steps <= MAX_SAMPLE_STEPS, force, || {
        format!(
            "--steps {steps}: every step is one network evaluation per image (the limit is \
             {MAX_SAMPLE_STEPS})"
        )
    })?;
    let per = run.chunk_rows().max(1);
    if !force {
        estimate_time(run, n, opts, classifier, per)?;
    }
    progress.start("sampling", run.draw_work(n, opts)?);
    let tick = || progress.inc(1);
    // Blocks of 64 chunks.
    let block = per.saturating_mul(64);
    let mut done = 0;
    let (mut evaluations, mut sampler) = (0.0, String::new());
    while done < n {
        let rows = block.min(n - done);
        let o = SampleOptions {
            first_chunk: opts.first_chunk + (done / per) as u64,
            ..opts.clone()
        };
        let d = run.draw(rows, &o, classifier, &tick)?;
        sink(&d.values)?;
        evaluations += d.nfe * rows as f64;
        sampler = d.sampler;
        done += rows;
    }
    progress.finish();
    Ok((evaluations / n.max(1) as f64, sampler))
}

/// Time one chunk's worth (one sampler step, for a diffusion model) and refuse work that would
/// take longer than [`MAX_SECONDS`] at that rate.
fn estimate_time(
    run: &dyn OpenRun,
    n: usize,
    opts: &SampleOptions,
    classifier: Option<&dyn ClassGradient>,
    per: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    // One step of a diffusion model's walk (a decoder takes no steps: timed as asked).
    let probe = SampleOptions {
        steps: run
            .config()
            .model
            .is_diffusion()
            .then_some(1)
            .or(opts.steps),
        threads: 1,
        ..opts.clone()
    };
    let rows = per.min(n);
    let t0 = Instant::now();
    run.draw(rows, &probe, classifier, &|| ())?;
    let dt = t0.elapsed().as_secs_f64();
    let units = run.draw_work(n, opts)? as f64 / run.draw_work(rows, &probe)?.max(1) as f64;
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
