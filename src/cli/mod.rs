//! The command line: one file per subcommand. Arguments are parsed here, resolved into real
//! objects (configs, data sets, run directories) by each subcommand, and errors become messages.

mod compare;
mod data;
mod distill;
mod eval;
mod guidance;
mod inspect;
mod interop;
mod quality;
mod sample;
mod samplers;
mod schedule;
mod tour;
mod train;

use clap::{Parser, Subcommand};
use elbo::device::DeviceKind;

/// Train, evaluate and sample likelihood-based generative models by their evidence lower bound.
///
/// Every model here (VAEs, hierarchical VAEs, variational diffusion models and score networks) is
/// a latent-variable model with an ELBO, and every one reports the same thing: an honest bound on
/// log p(x), term by term, in nats (and bits/dim for images); diffusion models also give their
/// exact likelihood along the probability-flow ODE (`eval --method ode`).
#[derive(Parser, Debug)]
#[command(
    name = "elbo",
    version = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("ELBO_GIT_REV"), ")"),
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Start with `elbo train` (trains the default model on the embedded mnist10k digits), \
then `elbo eval runs/vdm-mnist10k-1` and `elbo sample runs/vdm-mnist10k-1` (a VAE: `elbo train --model vae`, then `elbo eval runs/vae-mnist10k-1 --iw 5000`).\n\n\
Limits, checked before any work and lifted by --force: sample --steps ≤ 100,000; samples held in \
memory ≤ 2 GiB (a .npy is written in blocks); ≤ 10,000 images in one PNG grid; eval --t-samples ≤ \
65,536; schedule --steps ≤ 10,000,000; eval --iw and sample refuse work estimated (from a measured \
rate) at more than 4 hours."
)]
pub struct Cli {
    /// Where tensors live.
    #[arg(long, global = true, value_parser = choice::<DeviceKind>(), default_value = "cpu")]
    device: DeviceKind,
    /// Train on this many devices of --device's kind at once (GPUs: one shard of each step on
    /// each, gradients summed by the devices' all-reduce). On the CPU use threads and MPI ranks.
    #[arg(long, global = true, default_value_t = 1)]
    devices: usize,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model (with no arguments: a VDM on the embedded mnist10k, about 9 minutes on 2 cores,
    /// measured; BENCHMARKS.md §14).
    Train(train::TrainArgs),
    /// Evaluate a trained run: every ELBO term, the importance-weighted bound with --iw K, the exact
    /// ODE likelihood of a diffusion run with --method ode, sample quality with --quality.
    Eval(eval::EvalArgs),
    /// Draw samples from a trained run into a PNG grid (images) or a .npy file.
    Sample(sample::SampleArgs),
    /// Train (or take) a VAE, a hierarchical VAE, a VDM, flow matching, EDM and a latent VDM on
    /// the same data and budget and set their bounds, terms, speed and samples side by side
    /// (Markdown, JSON and a figure).
    Compare(compare::CompareArgs),
    /// The ELBO's argument, live: evidence, bound, KL and their identity on the linear-Gaussian
    /// model, to the last digit; with --run, L_K for K = 1 … 5000 on a trained VAE or HVAE.
    Tour(tour::TourArgs),
    /// Summarise a data set: count, shape, value range, labels.
    Data(data::DataArgs),
    /// Show a run: its config, parameter count and training curve (also saved as a PNG).
    Inspect(inspect::InspectArgs),
    /// Print a noise schedule: t, β_t, ᾱ_t, SNR, log-SNR, posterior variance (CSV or JSON).
    Schedule(schedule::ScheduleArgs),
    /// Print a shell completion script: `elbo completions bash > /etc/bash_completion.d/elbo`,
    /// `elbo completions zsh > ~/.zfunc/_elbo`, `elbo completions fish > ~/.config/fish/completions/elbo.fish`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Guidance measured: for each weight, samples of every class and the accuracy of the asked
    /// class, FD-classifier and diversity (classifier-free, or with --classifier RUN).
    Guidance(guidance::GuidanceArgs),
    /// Sample quality against network evaluations (NFE) for every sampler of a diffusion run of
    /// images: a table, JSON and a plot.
    Samplers(samplers::SamplersArgs),
    /// Progressive distillation: students that take in one DDIM step what the run takes in
    /// two, halving the steps each round (one round, 16 → 8, by default), each saved as a run
    /// that samples by ancestral steps; then their FD-classifier against NFE beside the
    /// teacher's samplers.
    Distill(distill::DistillArgs),
    /// Write a run's weights as a PyTorch state dict (safetensors, PyTorch names and layouts, the
    /// config in its metadata), for python/elbo_torch or any PyTorch code.
    Export(interop::ExportArgs),
    /// Make a run directory from a file written by `elbo export` or `elbo_torch.save`.
    Import(interop::ImportArgs),
    /// Score samples from any model (a .npy in the data's units) by FD-classifier, class entropy
    /// and confidence, as `eval --quality` does for a run.
    Quality(quality::QualityArgs),
}

/// Exit code of a training run interrupted by Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;
/// Exit code of a training run stopped by SIGTERM (128 + SIGTERM), after saving.
pub const EXIT_TERMINATED: i32 = 143;

/// Parse, run, and turn the outcome into an exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let g = Global {
        device: cli.device,
        devices: cli.devices,
        quiet: cli.quiet,
    };
    if let Err(e) = elbo::par::env_threads() {
        eprintln!("error: {e}");
        return 1;
    }
    let r = match cli.cmd {
        Command::Train(a) => train::run(a, &g),
        Command::Eval(a) => eval::run(a, &g),
        Command::Sample(a) => sample::run(a, &g),
        Command::Data(a) => data::run(a),
        Command::Tour(a) => tour::run(a, &g),
        Command::Compare(a) => compare::run(a, &g),
        Command::Inspect(a) => inspect::run(a),
        Command::Quality(a) => quality::run(a),
        Command::Guidance(a) => guidance::run(a, &g),
        Command::Samplers(a) => samplers::run(a, &g),
        Command::Distill(a) => distill::run(a, &g),
        Command::Export(a) => interop::export(a),
        Command::Import(a) => interop::import(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "elbo", &mut std::io::stdout());
            Ok(0)
        }
        Command::Schedule(a) => schedule::run(a, &g),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Options shared by every subcommand.
pub struct Global {
    pub device: DeviceKind,
    /// Devices to train on (`--devices`).
    pub devices: usize,
    pub quiet: bool,
}

impl Global {
    fn progress(&self) -> bool {
        !self.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())
    }
}

/// Progress of library work (`elbo::eval::Progress`) as an indicatif bar per stage.
pub struct BarProgress {
    enabled: bool,
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl BarProgress {
    pub fn new(g: &Global) -> Self {
        BarProgress {
            enabled: g.progress(),
            bar: std::sync::Mutex::new(None),
        }
    }

    fn with(&self, f: impl FnOnce(&indicatif::ProgressBar)) {
        if let Ok(b) = self.bar.lock() {
            if let Some(b) = b.as_ref() {
                f(b)
            }
        }
    }
}

impl elbo::progress::Progress for BarProgress {
    fn start(&self, what: &str, total: u64) {
        if !self.enabled {
            return;
        }
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{spinner}} {what} [{{elapsed_precise}}] {{bar:28.cyan/blue}} {{pos}}/{{len}} ({{eta}} left) {{msg}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = slot.replace(b) {
                old.finish_and_clear();
            }
        }
    }
    fn inc(&self, n: u64) {
        self.with(|b| b.inc(n));
    }
    fn set_position(&self, pos: u64) {
        self.with(|b| b.set_position(pos));
    }
    fn message(&self, msg: &str) {
        self.with(|b| b.set_message(msg.to_string()));
    }
    fn finish(&self) {
        self.with(|b| b.finish_and_clear());
    }
}

/// While alive, a SIGINT or SIGTERM removes `path` (a partial output) and ends the process with
/// 128 + the signal, as the signal itself would have, instead of leaving the partial file behind.
pub struct RemoveOnSignal {
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RemoveOnSignal {
    pub fn new(path: &std::path::Path) -> anyhow::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let p = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = std::fs::remove_file(&p);
                eprintln!("\nstopped by signal {sig}; removed {}", p.display());
                std::process::exit(128 + sig);
            }
        });
        Ok(RemoveOnSignal {
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for RemoveOnSignal {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A parser for a library choice ([`elbo::choice::Choice`]): its names as the possible values,
/// each with its line of help.
pub fn choice<T: elbo::choice::Choice + Clone>() -> impl clap::builder::TypedValueParser<Value = T>
{
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(
        T::ALL
            .iter()
            .map(|v| PossibleValue::new(v.name()).help(v.help())),
    )
    .try_map(|s: String| T::from_name(&s).ok_or_else(|| format!("'{s}' is not a choice here")))
}

/// A parser for a sampler's name (the registry's names as the possible values).
pub fn sampler_name() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(elbo::sample::SamplerKind::NAMES)
}

/// The sampler named `name` with the sampler flags' values (each checked, whichever sampler
/// uses it), or none.
pub fn sampler_of(
    name: Option<&str>,
    p: &elbo::sample::SamplerParams,
) -> anyhow::Result<Option<elbo::sample::SamplerKind>> {
    p.validate()?;
    Ok(match name {
        Some(n) => Some(elbo::sample::SamplerKind::parse(n, p)?),
        None => None,
    })
}

/// A whole number for an option (negative numbers reach this check, and its message, instead of
/// being taken for an unknown flag).
pub fn whole<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse::<T>().map_err(|_| {
        if s.trim().starts_with('-') {
            format!("'{s}' is negative; a whole number ≥ 0 is needed")
        } else {
            format!("'{s}' is not a whole number")
        }
    })
}

/// Format a number with thousands separators.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
