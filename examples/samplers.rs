//! Sample with any `Sampler` (MATH.md M36–M40): from the exact denoiser of a 2-D Gaussian
//! mixture (M32), every sampler draws the same distribution; print each one's sample mean,
//! variance and network evaluations (NFE). With a run directory as argument, draw 16 samples of that
//! run with DPM-Solver++ in 20 steps instead:
//!
//!     cargo run --release --example samplers [RUN_DIR]

use burn::tensor::Device;
use elbo::data::toy::Mixture;
use elbo::diffusion::oracle::MixtureOracle;
use elbo::diffusion::schedule::LinearGamma;
use elbo::diffusion::{Process, Schedule};
use elbo::rng::{randn, seeded};
use elbo::sample::{
    sample_loop, Ancestral, Ddim, DpmSolverPp2M, EulerMaruyama, Heun, SampleOptions, Sampler,
    SamplerKind,
};

fn main() -> elbo::Result<()> {
    if let Some(dir) = std::env::args().nth(1) {
        let opts = SampleOptions {
            sampler: SamplerKind::named("dpm-solver++"),
            steps: Some(20),
            ..SampleOptions::ancestral(0, elbo::par::default_threads())
        };
        // The run, opened once: draw from it as often as needed.
        let run = elbo::run::open(&elbo::run::RunDir::new(dir), &Device::flex())?;
        let s = elbo::eval::draw::draw(run.as_ref(), 16, &opts, None, false, &())?;
        println!(
            "16 samples of {} values each by {} ({:.0} NFE each); the first: {:?}…",
            run.file().data.dim(),
            s.sampler,
            s.nfe,
            &s.values[..8]
        );
        return Ok(());
    }
    let m = Mixture::named("blobs2")?;
    let oracle = MixtureOracle {
        mixture: m.clone(),
        process: Process::VariancePreserving,
    };
    let sched = LinearGamma {
        gamma_min: -10.0,
        gamma_max: 10.0,
    };
    let samplers: Vec<(&str, Box<dyn Sampler>, usize)> = vec![
        ("ancestral", Box::new(Ancestral), 200),
        ("DDIM", Box::new(Ddim { eta: 0.0 }), 100),
        ("Euler–Maruyama", Box::new(EulerMaruyama), 500),
        ("Heun", Box::new(Heun), 50),
        ("DPM-Solver++(2M)", Box::new(DpmSolverPp2M), 25),
    ];
    let truth = m.sample(20_000, &mut seeded(9));
    let moments = |v: &[f32]| {
        let n = (v.len() / 2) as f64;
        let mx = v.iter().step_by(2).map(|&x| x as f64).sum::<f64>() / n;
        let vx = v
            .iter()
            .step_by(2)
            .map(|&x| (x as f64 - mx).powi(2))
            .sum::<f64>()
            / n;
        (mx, vx)
    };
    let (tm, tv) = moments(&truth);
    println!(
        "{:<18} mean x {tm:+.3}, var x {tv:.3} (the data)",
        "true mixture"
    );
    for (name, s, steps) in samplers {
        let mut rng = seeded(1);
        let z = randn(&mut rng, [4000, 2], &Device::flex());
        let x = sample_loop(
            s.as_ref(),
            &oracle,
            &Schedule::Fixed(&sched),
            z,
            steps,
            None,
            &mut rng,
            &mut |_| {},
        )?;
        let (mx, vx) = moments(&elbo::elbo::to_f32(x)?);
        println!(
            "{name:<18} mean x {mx:+.3}, var x {vx:.3}, {steps} steps ({} NFE)",
            s.nfe(steps).unwrap_or(steps)
        );
    }
    Ok(())
}
