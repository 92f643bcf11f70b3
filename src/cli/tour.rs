//! `elbo tour`: the ELBO's argument, live. Part one works on the linear-Gaussian model (M5),
//! where everything is exact; part two (`--run DIR`) on a trained VAE or HVAE, where the
//! importance-weighted bounds close the gap. The numbers are `elbo::tour`'s.

use std::path::PathBuf;

use clap::Args;
use elbo::report::plot::{line_plot, Series};
use elbo::run::RunDir;

use super::Global;

#[derive(Args, Debug)]
#[command(
    after_help = "Example: `elbo tour`, then, after `elbo train --model vae`, \
`elbo tour --run runs/vae-mnist10k-1` for the bounds L_K of a trained model."
)]
pub struct TourArgs {
    /// A trained VAE or HVAE run: also show its ELBO and L_K for K = 1 … 5000.
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// Test examples for the L_K table.
    #[arg(allow_negative_numbers = true, value_parser = super::whole::<usize>, long, default_value_t = 100)]
    pub n: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

const KS: [usize; 6] = [1, 5, 50, 500, 1000, 5000];

pub fn run(a: TourArgs, g: &Global) -> anyhow::Result<i32> {
    let mut json = serde_json::Map::new();
    let mut text = vec![
        "The evidence lower bound, where everything is exact (MATH.md M1–M5).".to_string(),
        "M1: the evidence log p(x) = log ∫ p(x, z) dz. M2: the ELBO E_q[log p(x, z) − log q(z|x)] \
         ≤ log p(x). M3: log p(x) = ELBO + KL(q(z|x) ‖ p(z|x)), so the bound is tight exactly \
         when q is the posterior."
            .to_string(),
        String::new(),
    ];
    let mut tours = Vec::new();
    for (lg, x) in elbo::studies::tour::tour_models() {
        let points = if lg.latent_dim() == 1 { 20_001 } else { 801 };
        let t = elbo::studies::tour::linear_tour(&lg, &x, points);
        text.extend(elbo::studies::tour::linear_lines(&t, &lg));
        text.push(String::new());
        tours.push(t);
    }
    text.push(
        "Every row: ELBO + KL equals log p(x) (M3). The bound is tight only for the exact \
         posterior; a diagonal q cannot hold the correlations of a 2-D posterior, so even its \
         best mean leaves a gap."
            .into(),
    );
    json.insert("linear_gaussian".into(), serde_json::to_value(&tours)?);
    if let Some(dir) = &a.run {
        let rd = RunDir::new(dir);
        let device = elbo::device::device(g.device, false)?;
        eprintln!(
            "computing L_K for K = {KS:?} on {} test examples of {}",
            a.n,
            dir.display()
        );
        let (elbo_stat, points) = elbo::studies::tour::iw_curve(&rd, &KS, a.n, 0, &device)?;
        text.push(String::new());
        text.push(format!(
            "A trained model ({}), {} test examples: L_K (M4) rises towards log p(x) as K grows; \
             L_1 is the ELBO (M2), estimated.",
            dir.display(),
            a.n
        ));
        text.push(format!(
            "  {:<10} {:>14} {:>10} {:>14}",
            "bound", "nats", "± se", "gain over ELBO"
        ));
        text.push(format!(
            "  {:<10} {:>14.3} {:>10.3} {:>14}",
            "ELBO", elbo_stat.mean, elbo_stat.se, "–"
        ));
        for p in &points {
            text.push(format!(
                "  {:<10} {:>14.3} {:>10.3} {:>14.3}",
                format!("L_{}", p.k),
                p.bound.mean,
                p.bound.se,
                p.bound.mean - elbo_stat.mean
            ));
        }
        let png = rd.file("tour_iw.png");
        let pts: Vec<(f64, f64)> = points.iter().map(|p| (p.k as f64, p.bound.mean)).collect();
        match line_plot(
            &png,
            "importance-weighted bound L_K against K (M4)",
            "K (log scale)",
            "L_K, nats per example",
            &[Series {
                name: "L_K",
                points: pts,
                markers: true,
            }],
            true,
        ) {
            Ok(()) => text.push(format!("  plot: {}", png.display())),
            Err(e) => text.push(format!("  plot not drawn: {e}")),
        }
        json.insert(
            "trained".into(),
            serde_json::json!({"run": dir.display().to_string(), "n": a.n,
                               "elbo": elbo_stat, "iw": points}),
        );
    } else {
        text.push(
            "Next: `elbo train --model vae` then `elbo tour --run runs/vae-mnist10k-1` shows \
             L_K for K = 1 … 5000 on a trained model."
                .into(),
        );
    }
    if a.json {
        println!("{}", serde_json::Value::Object(json));
    } else {
        for l in text {
            println!("{l}");
        }
    }
    Ok(0)
}
