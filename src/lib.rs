//! `elbo`: train, evaluate and sample likelihood-based generative models (VAEs, hierarchical VAEs,
//! variational diffusion models) as what they all are: latent-variable models trained by
//! maximising the evidence lower bound, each reporting an honest bound on log p(x), term by term.
//!
//! Equations are cited by their numbers in `docs/MATH.md` (M1…M43).
//!
//! The command-line program is a thin layer over this library: data ([`data`]), models
//! ([`models`]: the VAE, HVAE, VDM, NCSN behind one [`models::Model`] trait), their bounds
//! ([`diffusion`], [`elbo`]), samplers ([`sample`]), training ([`train`]) and evaluation
//! ([`eval`]). A diffusion bound of your own denoiser, checked against its closed form (M31):
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use elbo::diffusion::elbo::{diffusion_elbo, Decoder, ElboOptions};
//! use elbo::diffusion::oracle::GaussianOracle;
//! use elbo::diffusion::{schedule::LinearGamma, Schedule};
//! use elbo::rng::{randn, seeded};
//!
//! let (s2, d, n) = (0.5, 2, 2000);
//! let x = randn(&mut seeded(0), [n, d], &Device::flex()) * f64::sqrt(s2);
//! let sched = LinearGamma { gamma_min: -8.0, gamma_max: 8.0 };
//! let opts = ElboOptions { t_samples: 8, ..Default::default() };
//! let e = diffusion_elbo(&GaussianOracle::vp(s2), &Schedule::Fixed(&sched), x,
//!                        Decoder::Gaussian, opts, None, &mut seeded(1))?;
//! let l: f64 = elbo::elbo::to_f64(e.diffusion)?.iter().sum::<f64>() / n as f64;
//! // M31: L_∞ = ½ D log((1 + SNR_max s²) / (1 + SNR_min s²))
//! let closed = 0.5 * d as f64 * ((1.0 + 8f64.exp() * s2) / (1.0 + (-8f64).exp() * s2)).ln();
//! assert!((l - closed).abs() < 0.15, "{l} vs {closed}");
//! # Ok::<(), elbo::Error>(())
//! ```

pub mod choice;
pub mod comm;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod dist;
pub mod elbo;
pub mod error;
pub mod eval;
pub mod fsio;
pub mod interop;
pub mod kernels;
pub mod limits;
pub mod models;
pub mod nn;
pub mod optim;
pub mod par;
pub mod params;
pub mod progress;
pub mod raster;
pub mod report;
pub mod rng;
pub mod run;
pub mod sample;
pub mod studies;
pub mod train;
pub mod units;

pub use error::{Error, Result};
