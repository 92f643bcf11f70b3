//! Evaluate the diffusion ELBO (MATH.md M28–M30) of your own denoiser. Anything that implements
//! `Denoiser` (a network, or here an analytic one) gets the same estimator the project's models
//! use. For data N(0, s² I) the best ε̂ is σ z / (α² s² + σ²), and its L_∞ has a closed form
//! (M31), printed beside the estimate:
//!
//!     cargo run --release --example own_denoiser

use burn::tensor::{Device, Tensor};
use elbo::diffusion::elbo::{diffusion_elbo, Decoder, ElboOptions};
use elbo::diffusion::schedule::LinearGamma;
use elbo::diffusion::{Cond, Denoiser, Prediction, Process, Schedule};
use elbo::rng::{randn, seeded};

/// ε̂ = E[ε | z_t] for data N(0, s² I).
struct GaussianDenoiser {
    s2: f64,
}

impl Denoiser for GaussianDenoiser {
    fn prediction(&self) -> Prediction {
        Prediction::Eps
    }

    fn predict(&self, z: Tensor<2>, gamma: Tensor<1>, _cond: Cond) -> Tensor<2> {
        let (alpha, sigma) = Process::VariancePreserving.alpha_sigma(gamma);
        let denom = alpha.square() * self.s2 + sigma.clone().square();
        z * sigma / denom
    }
}

fn main() -> elbo::Result<()> {
    let (s2, d, n) = (0.5f64, 4usize, 4000usize);
    let dev = Device::flex();
    let sched = LinearGamma {
        gamma_min: -10.0,
        gamma_max: 8.0,
    };
    let mut rng = seeded(0);
    let x = randn(&mut rng, [n, d], &dev) * s2.sqrt();
    let opts = ElboOptions {
        t_samples: 16,
        ..Default::default()
    };
    let den = GaussianDenoiser { s2 };
    let e = diffusion_elbo(
        &den,
        &Schedule::Fixed(&sched),
        x,
        Decoder::Gaussian,
        opts,
        None,
        &mut rng,
    )?;
    let l = elbo::elbo::to_f64(e.diffusion)?;
    let mean = l.iter().sum::<f64>() / n as f64;
    let se = (l.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n * n) as f64).sqrt();
    // M31: L_∞ = ½ D log((1 + SNR_max s²) / (1 + SNR_min s²)), SNR = e^{−γ}.
    let closed = 0.5 * d as f64 * ((1.0 + 10f64.exp() * s2) / (1.0 + (-8f64).exp() * s2)).ln();
    println!("L_∞ estimate {mean:.4} ± {se:.4} nats; closed form (M31) {closed:.4}");
    Ok(())
}
