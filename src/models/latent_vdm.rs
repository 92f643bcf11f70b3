//! Latent diffusion with a bound (MATH.md M49; LSGM, Vahdat et al. 2021): a VAE whose prior
//! over its latent z is a VDM, trained jointly on one bound. For any density p(z),
//! −log p(x) ≤ E_q[−log p(x | z)] + E_q[log q(z | x)] + E_q[−log p(z)], and the VDM's own ELBO
//! bounds −log p(z) from above (M28), so
//!
//! −log p(x) ≤ E_q[−log p(x | z)] − H[q(z | x)] + E_q[−ELBO_VDM(z)],
//!
//! every term reported: the decoder's reconstruction, the encoder's negative entropy (exact, in
//! closed form), and the latent diffusion's reconstruction, prior and diffusion terms at one
//! reparameterised z ~ q(z | x). Sampling draws z from the VDM (its sampler, `--sampler`) and
//! decodes it.
//!
//! | code | math |
//! | --- | --- |
//! | `vae` | q_φ(z \| x), p_θ(x \| z) |
//! | `prior` | the VDM over z, p_ψ(z) |
//! | `neg_entropy` | −H[q] = −½ Σ (log 2π e + log σ²_φ) |
//! | `latent_*` | the VDM's terms at z: reconstruction −log p(z \| z_0), prior, diffusion |

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::data::{Binarize, DataKind, Dataset, Scaling};
use crate::diffusion::elbo::{diffusion_elbo, diffusion_elbo_given, Decoder, ElboNoise, ElboOptions};
use crate::diffusion::guidance::ClassGradient;
use crate::diffusion::{Cond, Denoiser, Schedule, ScheduleConfig, ScheduleKind};
use crate::dist::{DiagGaussian, LOG_2PI};
use crate::elbo::ElboTerms;
use crate::models::vae::{Vae, VaeConfig, VaeSpec};
use crate::models::vdm::{NetworkKind, Objective, Vdm, VdmConfig, VdmSpec};
use crate::models::{LatentVariableModel, Model, ModelSettings, SampleOptions};
use crate::rng::{randn, Rng};
use crate::sample::driver::Drawn;
use crate::{Error, Result};

/// Latent VDM settings: the autoencoder and the diffusion prior over its latent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LatentVdmConfig {
    /// The VAE (its `latent` is the diffusion's dimension).
    pub vae: VaeConfig,
    /// The VDM over the latent (an MLP denoiser; its data are z, unscaled).
    pub prior: VdmConfig,
    /// A trained `vae` run (its directory) whose encoder and decoder a new run starts from:
    /// then the diffusion prior is trained on the latent of that VAE, which stays as it was
    /// (unless `finetune_vae`). Its `vae` settings and data must be this run's. None: the VAE
    /// and its prior are trained jointly from scratch.
    pub vae_run: Option<String>,
    /// With `vae_run`: train the VAE on the joint bound too, from its trained weights.
    pub finetune_vae: bool,
}

impl Default for LatentVdmConfig {
    fn default() -> Self {
        LatentVdmConfig {
            vae: VaeConfig {
                latent: 32,
                ..Default::default()
            },
            prior: VdmConfig {
                schedule: ScheduleConfig {
                    kind: ScheduleKind::LinearGamma,
                    gamma_min: -13.3,
                    gamma_max: 5.0,
                    ..Default::default()
                },
                objective: Objective::Elbo,
                network: NetworkKind::Mlp,
                ..Default::default()
            },
            vae_run: None,
            finetune_vae: false,
        }
    }
}

impl LatentVdmConfig {
    /// Whether training leaves the VAE as `vae_run` trained it.
    pub fn vae_frozen(&self) -> bool {
        self.vae_run.is_some() && !self.finetune_vae
    }
}

impl ModelSettings for LatentVdmConfig {
    const SIZE_KEYS: &'static [&'static str] = &[
        "vae.latent",
        "vae.hidden",
        "prior.mlp.hidden",
        "prior.mlp.blocks",
        "prior.mlp.embed",
    ];

    fn validate(&self) -> Result<()> {
        self.vae.validate()?;
        if self.finetune_vae && self.vae_run.is_none() {
            return Err(Error::Config(
                "latent-vdm.finetune_vae needs latent-vdm.vae_run (a trained vae run to start \
                 from); without it the VAE is trained jointly anyway"
                    .into(),
            ));
        }
        if self.vae_run.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(Error::Config(
                "latent-vdm.vae_run is empty; give a trained vae run's directory".into(),
            ));
        }
        if self.prior.network == NetworkKind::Unet {
            return Err(Error::Config(
                "latent-vdm.prior.network must be mlp: the latent is a vector".into(),
            ));
        }
        if self.prior.conditional {
            return Err(Error::Config(
                "latent-vdm.prior.conditional is not supported: the latent VDM is unconditional"
                    .into(),
            ));
        }
        self.prior.validate()
    }

    /// 20,000 steps of 128, as the VAE's.
    fn defaults_for(_kind: DataKind) -> (u64, usize) {
        (20_000, 128)
    }

    const CHANGEABLE_ON_RESUME: &'static [&'static str] =
        &["prior.sampler", "prior.sample_steps"];

    fn resolve_for_data(&mut self, _kind: DataKind) {
        // The prior's data are the latent, always a continuous vector.
        self.prior.resolve_for_data(DataKind::Continuous);
        self.prior.network = NetworkKind::Mlp;
    }

    const ODE: bool = true;

    fn binary_images(&self) -> bool {
        self.vae.binary_images()
    }

    fn set_binary_images(&mut self, binary: bool) -> bool {
        self.vae.set_binary_images(binary)
    }

    fn objective_note(&self) -> Option<String> {
        let mut note = "the VAE's reconstruction, minus the encoder's entropy, plus the latent \
                        VDM's ELBO at z ~ q(z | x) (LSGM)"
            .to_string();
        if let Some(run) = &self.vae_run {
            note.push_str(&if self.finetune_vae {
                format!("; the VAE started from {run} and is trained on it too")
            } else {
                format!("; the VAE is {run}'s, held fixed, so only the prior's terms train")
            });
        }
        Some(note)
    }

    fn warm_start(&self) -> Option<crate::models::WarmStart> {
        self.vae_run.as_ref().map(|r| crate::models::WarmStart {
            run: r.into(),
            kind: "vae",
            prefix: "vae",
            key: "latent-vdm.vae_run",
            free_keys: &["binarize", "kl_warmup"],
        })
    }
}

/// What the latent VDM knows of its data: the VAE's spec, and the prior's (the latent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentVdmSpec {
    pub vae: VaeSpec,
    pub prior: VdmSpec,
}

/// A VAE with a VDM prior over its latent.
#[derive(Module, Debug)]
pub struct LatentVdm {
    pub vae: Vae,
    pub prior: Vdm,
    /// Training leaves the VAE as it is (`vae_run` without `finetune_vae`): its parameters
    /// take no gradient, so the optimiser never moves them.
    #[module(skip)]
    pub vae_frozen: bool,
}

/// −H[q] = −½ Σ (log 2π e + log σ²) per row, exactly.
pub fn neg_entropy(q: &DiagGaussian) -> Tensor<1> {
    ((q.log_var.clone() + (LOG_2PI + 1.0)) * -0.5)
        .sum_dim(1)
        .squeeze_dim::<1>(1)
}

/// (M49) The latent bound of `x` (data units) for an autoencoder `vae` and a diffusion prior
/// `prior` (any denoiser: the model's VDM, or an oracle in tests) on `sched`, at one
/// reparameterised z ~ q(z | x) and `opts`' time samples of the prior's bound.
pub fn latent_terms(
    vae: &Vae,
    prior: &dyn Denoiser,
    sched: &Schedule,
    x: Tensor<2>,
    opts: ElboOptions,
    rng: &mut Rng,
) -> Result<ElboTerms> {
    let q = vae.encode(x.clone());
    let dev = x.device();
    let z = q.rsample_with(randn(rng, q.mean.dims(), &dev));
    let reconstruction = -vae.log_likelihood(x, z.clone());
    let e = diffusion_elbo(prior, sched, z, Decoder::Gaussian, opts, None, rng)?;
    Ok(ElboTerms {
        reconstruction,
        prior: e.prior,
        layers: vec![
            ("neg_entropy".into(), neg_entropy(&q)),
            ("latent_reconstruction".into(), e.recon),
            ("diffusion".into(), e.diffusion),
        ],
    })
}

impl LatentVdm {
    fn terms(&self, x: Tensor<2>, t_samples: usize, rng: &mut Rng) -> Result<ElboTerms> {
        let frozen;
        let vae = if self.vae_frozen {
            frozen = self.vae.clone().no_grad();
            &frozen
        } else {
            &self.vae
        };
        latent_terms(
            vae,
            &self.prior,
            &self.prior.schedule(),
            x,
            ElboOptions {
                t_steps: (self.prior.cfg.t_steps > 0).then_some(self.prior.cfg.t_steps),
                t_samples,
                proposal: None,
            },
            rng,
        )
    }

    fn refuse_conditioning(opts: &SampleOptions, classifier: bool) -> Result<()> {
        if opts.class.is_some() || classifier {
            return Err(Error::Config(
                "--class and --classifier apply to class-conditional diffusion models; the \
                 latent VDM is unconditional"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl LatentVariableModel for LatentVdm {
    fn elbo(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<ElboTerms> {
        let _ = cond;
        self.terms(x, 1, rng)
    }

    /// z from the prior's default sampler, decoded.
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        let z = self.prior.sample(n, rng)?;
        Ok(self.vae.spec.obs.sample(self.vae.decoder.forward(z), rng))
    }
}

impl Model for LatentVdm {
    type Config = LatentVdmConfig;
    type Spec = LatentVdmSpec;

    fn spec(cfg: &LatentVdmConfig, train: &Dataset, scaling: Scaling) -> Result<LatentVdmSpec> {
        let vae = <Vae as Model>::spec(&cfg.vae, train, scaling)?;
        Ok(LatentVdmSpec {
            vae,
            prior: VdmSpec::unscaled(cfg.vae.latent),
        })
    }

    fn build(cfg: &LatentVdmConfig, spec: &LatentVdmSpec, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let mut cfg = cfg.clone();
        cfg.resolve_for_data(spec.prior.kind);
        if spec.prior.dim() != cfg.vae.latent {
            return Err(Error::Invalid(format!(
                "the saved latent has {} dimensions, the settings {}",
                spec.prior.dim(),
                cfg.vae.latent
            )));
        }
        Ok(LatentVdm {
            vae: Vae::new(&cfg.vae, spec.vae.clone(), device)?,
            prior: Vdm::new(&cfg.prior, spec.prior.clone(), device)?,
            vae_frozen: cfg.vae_frozen(),
        })
    }

    fn binarize(cfg: &LatentVdmConfig, spec: &LatentVdmSpec) -> Option<Binarize> {
        <Vae as Model>::binarize(&cfg.vae, &spec.vae)
    }

    /// Eight time samples of the prior's bound per example (as the VDM's for vectors).
    fn eval_terms(&self, x: Tensor<2>, _cond: Cond, rng: &mut Rng) -> Result<ElboTerms> {
        self.terms(x, 8, rng)
    }

    fn size_keys(&self) -> &'static [&'static str] {
        <LatentVdmConfig as ModelSettings>::SIZE_KEYS
    }

    /// The noise of one draw as the twin reads it: `eps.0` of z ~ q(z | x), the prior's time
    /// `t` and noise `eps`, and each term computed from exactly them.
    fn parity(
        &self,
        x: Tensor<2>,
        _cond: Cond,
        rng: &mut Rng,
    ) -> Option<Result<Vec<(String, Tensor<2>)>>> {
        Some((|| {
            let dev = x.device();
            let b = x.dims()[0];
            let dz = self.vae.spec.latent;
            let eps_z = randn(rng, [b, dz], &dev);
            let t: Vec<f64> = (0..b).map(|_| rng.gen::<f64>()).collect();
            let eps = randn(rng, [b, dz], &dev);
            let q = self.vae.encode(x.clone());
            let z = q.rsample_with(eps_z.clone());
            let reconstruction = -self.vae.log_likelihood(x, z.clone());
            let e = diffusion_elbo_given(
                &self.prior,
                &self.prior.schedule(),
                z,
                Decoder::Gaussian,
                None,
                ElboNoise {
                    times: t.clone(),
                    weights: None,
                    eps: eps.clone(),
                    eps0: None,
                },
                None,
            )?;
            let terms = ElboTerms {
                reconstruction,
                prior: e.prior,
                layers: vec![
                    ("neg_entropy".into(), neg_entropy(&q)),
                    ("latent_reconstruction".into(), e.recon),
                    ("diffusion".into(), e.diffusion),
                ],
            };
            let tcol = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(t.iter().map(|&v| v as f32).collect::<Vec<_>>(), [b, 1]),
                &dev,
            );
            let mut out = vec![
                ("eps.0".to_string(), eps_z),
                ("t".to_string(), tcol),
                ("eps".to_string(), eps),
            ];
            out.extend(crate::models::term_columns(terms));
            Ok(out)
        })())
    }

    fn preview_steps(&self) -> Option<usize> {
        self.prior.preview_steps()
    }

    /// (M49 with M37) The latent bound with the prior's exact ODE density in place of its
    /// ELBO: −log p(x) ≤ E_q[−log p(x | z)] − H[q] − E_q[log p_ODE(z)], at one z ~ q(z | x).
    fn ode_nll(
        &self,
        x: Tensor<2>,
        _cond: Cond,
        opts: &crate::diffusion::ode::OdeOptions,
        rng: &mut Rng,
    ) -> Option<Result<crate::diffusion::ode::OdeNll>> {
        Some((|| {
            let q = self.vae.encode(x.clone());
            let z = q.rsample_with(randn(rng, q.mean.dims(), &x.device()));
            let outer = crate::elbo::to_f64(-self.vae.log_likelihood(x, z.clone()) + neg_entropy(&q))?;
            let prior = self
                .prior
                .diffusion()
                .ok_or_else(|| Error::Invalid("the latent prior is not a diffusion model".into()))?;
            let mut r = prior.ode_nll(z.detach(), None, opts, rng)?;
            for (v, o) in r.nll.iter_mut().zip(outer) {
                *v += o;
            }
            Ok(r)
        })())
    }

    fn draw_chunk_rows(&self) -> usize {
        self.prior.draw_chunk_rows()
    }

    fn draw_work(&self, n: usize, opts: &SampleOptions) -> Result<u64> {
        self.prior.draw_work(n, opts)
    }

    /// z drawn by the prior's sampler (chunked and seeded as every diffusion model's), then
    /// decoded chunk by chunk with the chunk's own noise stream.
    fn draw(
        &self,
        n: usize,
        opts: &SampleOptions,
        classifier: Option<&dyn ClassGradient>,
        tick: &(dyn Fn() + Sync),
    ) -> Result<Drawn> {
        Self::refuse_conditioning(opts, classifier.is_some())?;
        let drawn = self.prior.draw(n, opts, None, tick)?;
        let dz = self.vae.spec.latent;
        let dev = self.prior.device();
        let per = self.prior.draw_chunk_rows().max(1);
        let mut values = Vec::new();
        for (c, start) in (0..n).step_by(per).enumerate() {
            let rows = per.min(n - start);
            let mut rng = crate::rng::chunk(
                opts.seed,
                crate::rng::streams::DECODE_NOISE,
                opts.first_chunk + c as u64,
            );
            let z = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(
                    drawn.values[start * dz..(start + rows) * dz].to_vec(),
                    [rows, dz],
                ),
                &dev,
            );
            let x = self.vae.spec.obs.sample(self.vae.decoder.forward(z), &mut rng);
            values.extend(crate::elbo::to_f32(x)?);
        }
        Ok(Drawn {
            values,
            nfe: drawn.nfe,
            sampler: format!("{} in the latent, then the decoder", drawn.sampler),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_sum_of_its_reported_terms_and_refuses_a_unet_prior() {
        let mut cfg = LatentVdmConfig::default();
        cfg.vae.latent = 3;
        cfg.vae.hidden = vec![8];
        cfg.prior.mlp.hidden = 16;
        let spec = LatentVdmSpec {
            vae: VaeSpec {
                obs: crate::models::obs::Observation {
                    likelihood: crate::models::obs::Likelihood::Gaussian,
                    data_dim: 4,
                    shift: vec![0.0; 4],
                    scale: vec![1.0; 4],
                },
                latent: 3,
            },
            prior: VdmSpec::unscaled(3),
        };
        let m = LatentVdm::build(&cfg, &spec, &Device::flex()).unwrap();
        let x = randn(&mut crate::rng::seeded(1), [5, 4], &Device::flex());
        let t = m.elbo(x, None, &mut crate::rng::seeded(2)).unwrap();
        let names: Vec<String> = t.to_rows().unwrap().into_iter().map(|r| r.0).collect();
        assert_eq!(
            names,
            [
                "reconstruction",
                "prior",
                "neg_entropy",
                "latent_reconstruction",
                "diffusion"
            ]
        );
        let rows = t.to_rows().unwrap();
        let total = crate::elbo::to_f64(t.total()).unwrap();
        for (i, want) in total.iter().enumerate() {
            let s: f64 = rows.iter().map(|r| r.1[i]).sum();
            assert!((s - want).abs() < 1e-3 * (1.0 + s.abs()));
        }
        cfg.prior.network = NetworkKind::Unet;
        assert!(cfg.validate().is_err());
    }
}
