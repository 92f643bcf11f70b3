//! `elbo schedule --kind KIND|DIR`: a noise schedule as a table of t, β_t, ᾱ_t, SNR, log-SNR and
//! the posterior variance σ_q²(t) (M14, M16, M23–M26), as CSV or JSON.

use std::path::Path;

use clap::Args;
use elbo::diffusion::schedule::{table, ScheduleConfig, ScheduleKind, ScheduleRow};
use elbo::diffusion::NoiseSchedule;
use elbo::run::RunDir;

use super::Global;

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// linear (DDPM, M23) | cosine (M24) | linear-gamma (M25) | a run directory (its schedule,
    /// learned or fixed).
    #[arg(long)]
    pub kind: String,
    /// Number of steps T of the table.
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 1000)]
    pub steps: usize,
    /// γ(0) of linear-gamma and cosine-log-snr.
    #[arg(allow_negative_numbers = true, long, default_value_t = -13.3, allow_hyphen_values = true)]
    pub gamma_min: f64,
    /// γ(1) of linear-gamma and cosine-log-snr.
    #[arg(
        allow_negative_numbers = true,
        long,
        default_value_t = 5.0,
        allow_hyphen_values = true
    )]
    pub gamma_max: f64,
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Print even more than 10,000,000 rows.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

/// A run's schedule read as a continuous γ(t).
struct RunSchedule(Vec<(f64, f64)>);

impl NoiseSchedule for RunSchedule {
    fn gamma(&self, t: f64) -> f64 {
        // Piecewise linear between the sampled points.
        let n = self.0.len() - 1;
        let x = t.clamp(0.0, 1.0) * n as f64;
        let i = (x.floor() as usize).min(n - 1);
        let f = x - i as f64;
        self.0[i].1 * (1.0 - f) + self.0[i + 1].1 * f
    }
}

pub fn run(a: ScheduleArgs, g: &Global) -> anyhow::Result<i32> {
    if a.steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    let max = elbo::limits::MAX_SCHEDULE_STEPS;
    elbo::limits::check(a.steps <= max, a.force, || {
        format!(
            "--steps {}: a table of {} rows, about {} in memory (the limit is {max} rows)",
            a.steps,
            a.steps,
            elbo::limits::bytes(a.steps as f64 * 64.0)
        )
    })?;
    let rows: Vec<ScheduleRow> = if Path::new(&a.kind).is_dir() {
        let dir = RunDir::new(&a.kind);
        let device = elbo::device::device(g.device, false)?;
        let times: Vec<f64> = (0..=a.steps).map(|i| i as f64 / a.steps as f64).collect();
        let gammas = elbo::eval::schedule_of(&dir, &times, &device)?;
        let pts: Vec<(f64, f64)> = times.into_iter().zip(gammas).collect();
        table(ScheduleKind::LinearGamma, &RunSchedule(pts), a.steps)
    } else {
        let kind = <ScheduleKind as elbo::choice::Choice>::from_name(&a.kind).ok_or_else(|| {
            anyhow::anyhow!(
                "--kind '{}': expected linear, cosine, linear-gamma, cosine-log-snr or a run directory",
                a.kind
            )
        })?;
        if kind == ScheduleKind::Learned {
            anyhow::bail!("--kind learned: a learned schedule lives in a run; pass its directory");
        }
        let cfg = ScheduleConfig {
            kind,
            gamma_min: a.gamma_min,
            gamma_max: a.gamma_max,
            steps: a.steps,
        };
        table(kind, cfg.fixed()?.as_ref(), a.steps)
    };
    match a.format {
        Format::Json => println!("{}", serde_json::to_string(&rows)?),
        Format::Csv => {
            println!("t,beta,alpha_bar,snr,log_snr,posterior_variance");
            for r in rows {
                println!(
                    "{},{:e},{:e},{:e},{},{:e}",
                    r.t, r.beta, r.alpha_bar, r.snr, r.log_snr, r.posterior_variance
                );
            }
        }
    }
    Ok(0)
}
