//! `elbo distill RUN`: progressive distillation of a diffusion run into few-step students
//! (`elbo::train::distill`), then their sample quality against NFE beside the teacher's
//! samplers (`elbo::studies::samplers`).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;
use elbo::run::RunDir;
use elbo::studies::samplers::{distill_settings, markdown, plot, sweep};
use elbo::train::distill::{distill, DistillOptions};

use super::{BarProgress, Global};

#[derive(Args, Debug)]
pub struct DistillArgs {
    /// A trained diffusion run (vdm, flow or edm) to distil.
    pub dir: PathBuf,
    /// Where the students go, one run per round (OUT/steps-N) with OUT/distill.json (default:
    /// DIR-distilled).
    #[arg(long, value_name = "OUT")]
    pub out: Option<PathBuf>,
    /// The teacher's DDIM steps that the first student learns to take in half as many. The
    /// default, one round from 16 to 8 steps, gave the best 8-step student measured on 2 cores
    /// (BENCHMARKS.md §16): each further round of a CPU budget adds its own fitting error.
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 16)]
    pub from_steps: usize,
    /// The last student's steps (--from-steps divided by a power of two).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 8)]
    pub to_steps: usize,
    /// Training iterations per round.
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<u64>, long, default_value_t = 1500)]
    pub iters: u64,
    /// Batch size (default: the run's).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 0)]
    pub batch_size: usize,
    /// Peak learning rate of each round (a short warm-up, then cosine decay to a tenth).
    #[arg(allow_negative_numbers = true, long, default_value_t = 2e-4)]
    pub lr: f64,
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<u64>, long, default_value_t = 0)]
    pub seed: u64,
    /// Then measure FD-classifier against NFE on this many samples per row: each student
    /// beside the teacher's samplers at the same NFE, for image runs (0: skip).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 500)]
    pub compare: usize,
}

pub fn run(a: DistillArgs, g: &Global) -> anyhow::Result<i32> {
    let teacher = RunDir::new(&a.dir);
    teacher.check()?;
    let out = a.out.clone().unwrap_or_else(|| {
        let mut p = a.dir.clone().into_os_string();
        p.push("-distilled");
        PathBuf::from(p)
    });
    // Ctrl-C and SIGTERM stop after the current iteration; finished rounds stay.
    let stop = Arc::new(AtomicBool::new(false));
    use signal_hook::consts::{SIGINT, SIGTERM};
    let _ = signal_hook::flag::register_conditional_shutdown(
        SIGINT,
        super::EXIT_INTERRUPTED,
        Arc::clone(&stop),
    );
    let _ = signal_hook::flag::register(SIGINT, Arc::clone(&stop));
    let _ = signal_hook::flag::register(SIGTERM, Arc::clone(&stop));
    let opts = DistillOptions {
        out: &out,
        from_steps: a.from_steps,
        to_steps: a.to_steps,
        iters: a.iters,
        batch: a.batch_size,
        lr: a.lr,
        seed: a.seed,
        device: elbo::device::device(g.device, true)?,
        progress: &BarProgress::new(g),
        stop: &stop,
    };
    let rounds = opts.rounds()?;
    eprintln!(
        "distilling {} → {} in {} round{} of {} iterations: {}",
        a.dir.display(),
        out.display(),
        rounds.len(),
        if rounds.len() == 1 { "" } else { "s" },
        a.iters,
        rounds
            .iter()
            .map(|n| format!("{n} steps"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let report = distill(&teacher, &opts)?;
    for r in &report.rounds {
        println!(
            "{:>4} steps: loss {:.4} → {:.4} in {:.0} s → {}",
            r.steps, r.loss_first, r.loss_last, r.seconds, r.dir
        );
    }
    if report.interrupted {
        eprintln!("stopped before the last round; the finished students are kept");
        return Ok(super::EXIT_INTERRUPTED);
    }
    let is_images = teacher
        .model_file()
        .map(|f| f.data.image_hw().is_some())
        .unwrap_or(false);
    if a.compare == 0 || !is_images {
        return Ok(0);
    }
    let students = elbo::train::distill::students(&out)?;
    let s = sweep(
        &teacher,
        &distill_settings(&students),
        a.compare,
        a.seed,
        elbo::par::default_threads(),
        &BarProgress::new(g),
    )?;
    let dir = RunDir::new(&out);
    let md = markdown(&s);
    elbo::fsio::write_atomic(&dir.file("distill.md"), md.as_bytes())?;
    elbo::fsio::write_atomic(
        &dir.file("distill_samplers.json"),
        serde_json::to_string_pretty(&s)?.as_bytes(),
    )?;
    let png = dir.file("distill.png");
    plot(&s, &png)?;
    print!("{md}");
    println!("\nplot: {}", png.display());
    Ok(0)
}
