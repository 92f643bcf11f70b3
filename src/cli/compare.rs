//! `elbo compare`: the VAE, hierarchical VAE, VDM, flow matching, EDM and latent VDM on the
//! same data, split and budget, one table of their bounds and samples. The work is `elbo::studies::compare::compare`.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Args;
use elbo::models::ModelKind;
use elbo::studies::compare::{CompareOptions, Representation};

use super::{BarProgress, Global, EXIT_INTERRUPTED};

#[derive(Args, Debug)]
#[command(
    after_help = "Example: `elbo compare --minutes 2` trains each model for 2 minutes on \
mnist10k and writes runs/compare-mnist10k-8bit/compare.md, compare.json and samples.png; \
`elbo compare --runs runs/vae-mnist10k-1 --runs runs/vdm-mnist10k-1` takes those runs instead \
of training them (they must score the same representation). Stopped with Ctrl-C, the same \
command continues where it was."
)]
pub struct CompareArgs {
    /// Data of every row (8-bit images).
    #[arg(long, default_value = "mnist10k")]
    pub data: String,
    /// What every model scores: the 8-bit levels (bits/dim; the VAE and HVAE get a discretised
    /// logistic decoder) or dynamically binarised pixels (nats per image; the VDM gets a
    /// Bernoulli decoder). One table never mixes the two.
    #[arg(long, value_parser = super::choice::<Representation>(), default_value = "8bit")]
    pub representation: Representation,
    /// Wall-clock training budget of each model, minutes.
    #[arg(allow_negative_numbers = true, long, default_value_t = 20.0, value_parser = parse_minutes)]
    pub minutes: f64,
    /// Directory of the comparison (default runs/compare-<data>-<representation>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The models compared, in order (comma-separated; default: the VAE, HVAE and VDM, then
    /// flow matching, EDM and the latent VDM).
    #[arg(long, value_parser = super::choice::<ModelKind>(), value_delimiter = ',')]
    pub models: Vec<ModelKind>,
    /// An existing run to use instead of training its kind (repeat for several).
    #[arg(long = "runs", value_name = "DIR")]
    pub runs: Vec<PathBuf>,
    /// Test images whose exact likelihood along the probability-flow ODE is also measured for
    /// each diffusion model of the 8-bit levels (about 1,500 network evaluations each; 0: none).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 0)]
    pub ode: usize,
    /// Importance samples K for the VAE's and HVAE's L_K (0: the ELBO only).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 1000)]
    pub iw: usize,
    /// Samples for the sample-quality figures (0: none).
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 256)]
    pub quality: usize,
    /// Evaluate only the first N test examples.
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, value_name = "N")]
    pub limit: Option<usize>,
    /// Seconds for the VDM bound's final round of time samples.
    #[arg(allow_negative_numbers = true, long, default_value_t = 60.0)]
    pub time_budget: f64,
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<u64>, long, default_value_t = 0)]
    pub seed: u64,
}

fn parse_minutes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(m) if m.is_finite() && m > 0.0 => Ok(m),
        _ => Err(format!("'{s}' is not a positive number of minutes")),
    }
}

pub fn run(a: CompareArgs, g: &Global) -> anyhow::Result<i32> {
    let stop = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        EXIT_INTERRUPTED,
        Arc::clone(&stop),
    );
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop));
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "compare-{}-{}",
            elbo::run::data_slug(&a.data),
            a.representation.name()
        ))
    });
    let note = |m: &str| eprintln!("{m}");
    let opts = CompareOptions {
        data: a.data,
        representation: a.representation,
        minutes: a.minutes,
        out: out.clone(),
        models: if a.models.is_empty() {
            elbo::studies::compare::MODELS.to_vec()
        } else {
            a.models
        },
        runs: a.runs,
        ode: a.ode,
        iw: a.iw,
        quality: a.quality,
        limit: a.limit.unwrap_or(usize::MAX),
        budget_secs: a.time_budget,
        seed: a.seed,
        device: elbo::device::device(g.device, true)?,
        stop: &stop,
        note: &note,
    };
    let r = match elbo::studies::compare::compare(&opts, &BarProgress::new(g)) {
        Err(elbo::Error::Interrupted { step }) => {
            eprintln!(
                "interrupted at step {step}; checkpoint saved. Run the same command again to \
                 continue the comparison in {}",
                out.display()
            );
            return Ok(EXIT_INTERRUPTED);
        }
        r => r?,
    };
    print!("{}", elbo::studies::compare::markdown(&r));
    eprintln!(
        "wrote {} and {}",
        out.join("compare.md").display(),
        out.join("compare.json").display()
    );
    Ok(0)
}
