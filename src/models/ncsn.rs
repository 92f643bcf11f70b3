//! The noise-conditional score network (MATH.md M33–M35; Song & Ermon 2019): a network trained
//! by denoising score matching at L geometric noise levels σ_1 > … > σ_L with λ(σ) = σ², and
//! sampled by annealed Langevin dynamics (M34).
//!
//! It is the variance-exploding diffusion of M35 seen at L points. With ε̂ = −σ s_θ (M20),
//! λ(σ) ℓ(σ) = ½ ‖σ s_θ(x + σ ε, σ) + ε‖² = ½ ‖ε − ε̂‖², and the geometric levels are a linear
//! γ = log σ² schedule sampled at t_i = (i − 1)/(L − 1). So the model is a VE [`Vdm`] whose
//! schedule runs from σ_L to σ_1, trained on that loss at the L levels only. Everything a
//! diffusion run has follows: its ELBO (the continuous VE bound of the same network, M28), its
//! exact likelihood along the ODE (`elbo eval --method ode`), and the VE SDE samplers
//! (`--sampler euler-maruyama|pc|heun|rk45|…`), besides annealed Langevin, its default.
//!
//! | code | math |
//! | --- | --- |
//! | `sigmas` | σ_1 > … > σ_L, geometric |
//! | `dsm` | (1/L) Σ_i λ(σ_i) ℓ(σ_i), one level per example, per dimension |

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use crate::data::{DataKind, Dataset, Scaling};
use crate::diffusion::guidance::ClassGradient;
use crate::diffusion::Denoiser;
use crate::diffusion::{eps_hat, Cond, Prediction, Process, ScheduleConfig, ScheduleKind};
use crate::elbo::ElboTerms;
use crate::models::vdm::{NetworkKind, Objective, Vdm, VdmConfig, VdmSpec};
use crate::models::{DiffusionModel, LatentVariableModel, Model, ModelSettings, SampleOptions};
use crate::nn::denoiser_mlp::MlpDenoiserConfig;
use crate::nn::unet::UNetConfig;
use crate::rng::{randn, Rng};
use crate::sample::driver::{DiffusionSource, Drawn, Plan};
use crate::sample::{AnnealedLangevin, SamplerKind};
use crate::{Error, Result};

/// NCSN settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NcsnConfig {
    /// σ_1, the largest noise level (0: from the data: 2 for 8-bit images in [−1, 1], Song &
    /// Ermon's 1 on [0, 1]; 3 for standardised vectors).
    pub sigma_max: f64,
    /// σ_L, the smallest (0: 0.02 for images, Song & Ermon's 0.01 on [0, 1]; 0.01 for vectors).
    pub sigma_min: f64,
    /// L, the number of geometric levels.
    pub levels: usize,
    /// T, Langevin steps at each level when sampling.
    pub langevin_steps: usize,
    /// η of the Langevin step c_i = η σ_i²/σ_L² (0: 0.1 σ_L², Song & Ermon's: their Algorithm 1
    /// steps by α_i/2 with α_i = ε σ_i²/σ_L² and ε = 2e-5 at σ_L = 0.01, so c_i = 0.1 σ_i²).
    pub step_size: f64,
    pub network: NetworkKind,
    pub mlp: MlpDenoiserConfig,
    pub unet: UNetConfig,
}

impl Default for NcsnConfig {
    fn default() -> Self {
        NcsnConfig {
            sigma_max: 0.0,
            sigma_min: 0.0,
            levels: 10,
            langevin_steps: 100,
            step_size: 0.0,
            network: NetworkKind::Auto,
            mlp: MlpDenoiserConfig::default(),
            unet: UNetConfig::default(),
        }
    }
}

impl ModelSettings for NcsnConfig {
    const SIZE_KEYS: &'static [&'static str] = &[
        "mlp.hidden",
        "mlp.blocks",
        "mlp.embed",
        "unet.channels",
        "unet.embed",
        "unet.attention",
    ];

    const DIFFUSION: bool = true;

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        let (lo, hi) = (self.sigma_min, self.sigma_max);
        if !(lo.is_finite() && hi.is_finite()) || lo < 0.0 || hi < 0.0 {
            return bad("ncsn.sigma_min and ncsn.sigma_max must be finite and positive (0: auto)");
        }
        if lo > 0.0 && hi > 0.0 && lo >= hi {
            return bad("ncsn.sigma_min must be below ncsn.sigma_max");
        }
        if self.levels < 2 {
            return bad("ncsn.levels must be at least 2");
        }
        if self.langevin_steps == 0 {
            return bad("ncsn.langevin_steps must be at least 1");
        }
        if !self.step_size.is_finite() || self.step_size < 0.0 {
            return bad("ncsn.step_size must be a positive number (0: auto)");
        }
        self.vdm().validate()
    }

    /// 3,200 steps of 32 for images, 20,000 of 256 for vectors.
    fn defaults_for(kind: DataKind) -> (u64, usize) {
        crate::models::vdm::diffusion_defaults_for(kind)
    }

    const CHANGEABLE_ON_RESUME: &'static [&'static str] = &["langevin_steps", "step_size"];

    fn resolve_for_data(&mut self, kind: DataKind) {
        let image = kind == DataKind::Image8;
        if self.sigma_max == 0.0 {
            self.sigma_max = if image { 2.0 } else { 3.0 };
        }
        if self.sigma_min == 0.0 {
            self.sigma_min = if image { 0.02 } else { 0.01 };
        }
        if self.step_size == 0.0 {
            self.step_size = 0.1 * self.sigma_min * self.sigma_min;
        }
    }
}

impl NcsnConfig {
    /// The annealed Langevin sampler of these (resolved) settings, with `steps` per level
    /// (default `langevin_steps`).
    pub fn langevin(&self, steps: Option<usize>) -> AnnealedLangevin {
        AnnealedLangevin {
            per_level: steps.unwrap_or(self.langevin_steps).max(1),
            eta: self.step_size,
            sigma_last: self.sigma_min,
        }
    }

    /// The VE diffusion this NCSN is: linear γ = log σ² from σ_L (t = 0) to σ_1 (t = 1).
    pub fn vdm(&self) -> VdmConfig {
        let g = |s: f64| if s > 0.0 { 2.0 * s.ln() } else { 0.0 };
        VdmConfig {
            schedule: ScheduleConfig {
                kind: ScheduleKind::LinearGamma,
                gamma_min: g(self.sigma_min),
                gamma_max: g(self.sigma_max),
                ..Default::default()
            },
            process: Process::VarianceExploding,
            prediction: Prediction::Eps,
            objective: Objective::Elbo,
            network: self.network,
            mlp: self.mlp.clone(),
            unet: self.unet.clone(),
            sample_steps: self.levels,
            ..Default::default()
        }
    }
}

/// The NCSN: a VE diffusion model trained by denoising score matching at its levels.
#[derive(Module, Debug)]
pub struct Ncsn {
    pub vdm: Vdm,
    #[module(skip)]
    pub cfg: NcsnConfig,
}

impl Ncsn {
    /// γ_i = log σ_i² of the levels, from σ_1 (largest) to σ_L.
    pub fn level_gammas(&self) -> Vec<f64> {
        let (lo, hi) = (self.cfg.sigma_min.ln(), self.cfg.sigma_max.ln());
        let l = self.cfg.levels;
        (0..l)
            .map(|i| 2.0 * (hi + (lo - hi) * i as f64 / (l - 1) as f64))
            .collect()
    }

    /// (M33) λ(σ) = σ² denoising score matching, one level drawn uniformly per example: the
    /// mean over the batch and dimensions of ½ ‖ε − ε̂(x + σ_i ε, σ_i)‖² (= ½ ‖σ_i s_θ + ε‖²).
    pub fn dsm(&self, x: Tensor<2>, rng: &mut Rng) -> Tensor<1> {
        let [b, d] = x.dims();
        let device = x.device();
        let gammas = self.level_gammas();
        let g: Vec<f32> = (0..b)
            .map(|_| gammas[rng.gen_range(0..gammas.len())] as f32)
            .collect();
        let sig: Vec<f32> = g.iter().map(|g| (g / 2.0).exp()).collect();
        let gamma = Tensor::<1>::from_data(TensorData::new(g, [b]), &device);
        let sigma = Tensor::<2>::from_data(TensorData::new(sig, [b, 1]), &device);
        let eps = randn(rng, [b, d], &device);
        let z = self.vdm.to_model_space(x) + eps.clone() * sigma;
        let e = eps_hat(&self.vdm, z, gamma, None);
        (eps - e).square().mean() * 0.5
    }
}

impl LatentVariableModel for Ncsn {
    /// The continuous-time VE bound of the same network (M28).
    fn elbo(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<ElboTerms> {
        self.vdm.elbo(x, cond, rng)
    }

    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor<2>> {
        let plan = DiffusionSource::plan(self, None, None)?;
        crate::sample::driver::walk(self, self, &plan, n, None, rng, &mut |_| {})
    }
}

impl Model for Ncsn {
    type Config = NcsnConfig;
    type Spec = VdmSpec;

    fn spec(cfg: &NcsnConfig, train: &Dataset, scaling: Scaling) -> Result<VdmSpec> {
        Vdm::spec(&cfg.vdm(), train, scaling)
    }

    fn build(cfg: &NcsnConfig, spec: &VdmSpec, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let mut cfg = cfg.clone();
        cfg.resolve_for_data(spec.kind);
        Ok(Ncsn {
            vdm: Vdm::new(&cfg.vdm(), spec.clone(), device)?,
            cfg,
        })
    }

    /// The DSM loss; the terms are the VE bound of the same batch (what the progress bar and
    /// metrics report; not differentiated).
    fn loss(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<(Tensor<1>, ElboTerms)> {
        let loss = self.dsm(x.clone(), rng);
        let terms = self.vdm.elbo(x, cond, rng)?;
        Ok((loss, terms))
    }

    fn eval_terms(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<ElboTerms> {
        self.vdm.eval_terms(x, cond, rng)
    }

    fn shards_pay(&self) -> bool {
        self.vdm.shards_pay()
    }

    fn size_keys(&self) -> &'static [&'static str] {
        self.vdm.size_keys()
    }

    fn activations_per_example(&self) -> f64 {
        self.vdm.activations_per_example()
    }

    fn diffusion(&self) -> Option<&dyn DiffusionModel> {
        Some(&self.vdm)
    }

    fn vdm(&self) -> Option<&Vdm> {
        Some(&self.vdm)
    }

    /// Annealed Langevin at 20 steps per level, to keep the grids cheap.
    fn preview_steps(&self) -> Option<usize> {
        Some(20)
    }

    /// The VE diffusion's block (the bound is the VDM's of the same network).
    fn parity(
        &self,
        x: Tensor<2>,
        cond: Cond,
        rng: &mut Rng,
    ) -> Option<Result<Vec<(String, Tensor<2>)>>> {
        Some(self.vdm.parity_block(x, cond, rng))
    }

    fn draw_chunk_rows(&self) -> usize {
        DiffusionSource::chunk_rows(self)
    }

    fn draw_work(&self, n: usize, opts: &SampleOptions) -> Result<u64> {
        crate::sample::driver::work(self, n, opts)
    }

    fn draw(
        &self,
        n: usize,
        opts: &SampleOptions,
        classifier: Option<&dyn ClassGradient>,
        tick: &(dyn Fn() + Sync),
    ) -> Result<Drawn> {
        crate::sample::driver::draw(self, n, opts, classifier, tick)
    }
}

/// The NCSN's network, as its VDM's.
impl Denoiser for Ncsn {
    fn prediction(&self) -> Prediction {
        self.vdm.prediction()
    }
    fn process(&self) -> Process {
        Denoiser::process(&self.vdm)
    }
    fn x0_bounds(&self) -> Option<(f64, f64)> {
        self.vdm.x0_bounds()
    }
    fn predict(&self, z_t: Tensor<2>, gamma: Tensor<1>, cond: Cond) -> Tensor<2> {
        self.vdm.predict(z_t, gamma, cond)
    }
}

impl DiffusionSource for Ncsn {
    /// Annealed Langevin dynamics at the levels by default (`--steps`: Langevin steps per
    /// level, default `ncsn.langevin_steps`, with the run's step size); any other sampler walks
    /// the VE SDE or ODE of the same network over `steps` (default: the number of levels).
    fn plan(&self, sampler: Option<&SamplerKind>, steps: Option<usize>) -> Result<Plan> {
        match sampler {
            None | Some(SamplerKind::AnnealedLangevin(_)) => Ok(Plan {
                sampler: SamplerKind::AnnealedLangevin(self.cfg.langevin(steps)),
                gammas: self.level_gammas(),
            }),
            Some(s) => Ok(Plan {
                sampler: s.clone(),
                gammas: self.vdm.walk_gammas(s, steps.unwrap_or(self.cfg.levels).max(1)),
            }),
        }
    }

    fn prior_var(&self) -> f64 {
        DiffusionSource::prior_var(&self.vdm)
    }

    fn data_space(&self) -> &crate::data::DataSpace {
        &self.vdm.spec
    }

    fn to_data(&self, x0: Tensor<2>) -> Tensor<2> {
        self.vdm.to_data_space(x0)
    }

    fn device(&self) -> Device {
        self.vdm.device()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::oracle::GaussianOracle;
    use crate::sample::Sampler;
    use burn::tensor::Device;

    #[test]
    fn default_langevin_step_is_song_and_ermons() {
        // Langevin z ← z + c ∇log p(z) + √(2c) ξ on p = N(0, v I) has the stationary variance
        // v / (1 − c/(2v)) (an AR(1) with coefficient 1 − c/v). With data N(0, σ_L² I) the
        // smallest level's p_{σ_L} is N(0, 2σ_L² I), v = 2σ_L². Song & Ermon's step, c = α_L/2
        // = 0.1 σ_L², makes the variance 1.0256 v; twice it (0.2 σ_L²) would make 1.0526 v.
        // 20,000 chains × 2 dimensions after 2,000 steps (the chain forgets its start as
        // 0.95^2000): the sample variance's relative sd is √(2/40,000) = 0.0071, so a window of
        // ±0.012 around 1.0256 is 1.7 sd wide on each side, and 1.0526 lies 3.8 sd beyond it.
        let mut cfg = NcsnConfig::default();
        cfg.resolve_for_data(DataKind::Continuous);
        let sl = cfg.sigma_min;
        assert!((cfg.step_size - 0.1 * sl * sl).abs() < 1e-15);
        let sampler = cfg.langevin(Some(2000));
        let oracle = GaussianOracle {
            s2: sl * sl,
            process: crate::diffusion::Process::VarianceExploding,
        };
        let gamma = 2.0 * sl.ln();
        let v = 2.0 * sl * sl;
        let mut rng = crate::rng::seeded(5);
        let z0 = crate::rng::randn(&mut rng, [20_000, 2], &Device::flex()) * v.sqrt();
        let z = sampler
            .step(&oracle, z0, gamma, gamma - 1.0, None, &mut rng)
            .unwrap();
        let z = crate::elbo::to_f64(z.reshape([40_000])).unwrap();
        let var = z.iter().map(|x| x * x).sum::<f64>() / z.len() as f64;
        let ratio = var / v;
        assert!(
            (ratio - 1.0256).abs() < 0.012,
            "stationary variance / v = {ratio}"
        );
    }
}
