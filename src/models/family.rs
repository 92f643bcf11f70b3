//! Diffusion models that are a VDM with other defaults (MATH.md M47–M48): flow matching and EDM
//! differ from the VDM only in their process, parameterisation, weighting, proposal, schedule
//! and sampler, all of which are VDM settings. Each is a model kind of its own (`--model flow`,
//! `--model edm`, with its own section and defaults) whose network, ELBO, ODE likelihood and
//! samplers are the VDM's: [`vdm_family!`] writes the wrapper, so a new member is a function of
//! defaults and one line.

use serde::Deserialize;

use crate::models::vdm::VdmConfig;

/// A section read over a family's defaults: keys it names replace the defaults' (nested
/// sections key by key), keys it leaves out keep them, and unknown keys are refused as the
/// VDM's section refuses them.
pub fn over_defaults<'de, D: serde::Deserializer<'de>>(
    defaults: &VdmConfig,
    d: D,
) -> std::result::Result<VdmConfig, D::Error> {
    use serde::de::Error as _;
    let given = serde_json::Value::deserialize(d)?;
    let mut base = serde_json::to_value(defaults).map_err(D::Error::custom)?;
    merge(&mut base, given);
    serde_json::from_value(base).map_err(D::Error::custom)
}

fn merge(base: &mut serde_json::Value, given: serde_json::Value) {
    match (base, given) {
        (serde_json::Value::Object(b), serde_json::Value::Object(g)) => {
            for (k, v) in g {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// A model kind that is a VDM with the defaults of `$defaults()`: its settings type (a VDM
/// section, serialised as one) and the model, which delegates everything to its VDM.
macro_rules! vdm_family {
    ($(#[$doc:meta])* $ty:ident, $cfg:ident, $defaults:path) => {
        /// The settings: every key of a VDM section, with this model's defaults.
        #[derive(Debug, Clone, PartialEq, serde::Serialize)]
        #[serde(transparent)]
        pub struct $cfg(pub $crate::models::vdm::VdmConfig);

        $(#[$doc])*
        #[derive(burn::module::Module, Debug)]
        pub struct $ty {
            pub vdm: $crate::models::vdm::Vdm,
        }

        const _: () = {

        impl Default for $cfg {
            fn default() -> Self {
                $cfg($defaults())
            }
        }

        impl<'de> serde::Deserialize<'de> for $cfg {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                $crate::models::family::over_defaults(&$defaults(), d).map($cfg)
            }
        }

        impl $crate::models::ModelSettings for $cfg {
            const SIZE_KEYS: &'static [&'static str] =
                <$crate::models::vdm::VdmConfig as $crate::models::ModelSettings>::SIZE_KEYS;
            const DIFFUSION: bool = true;
            const CHANGEABLE_ON_RESUME: &'static [&'static str] =
                <$crate::models::vdm::VdmConfig as $crate::models::ModelSettings>::CHANGEABLE_ON_RESUME;
            fn validate(&self) -> $crate::Result<()> {
                self.0.validate()
            }
            fn defaults_for(kind: $crate::data::DataKind) -> (u64, usize) {
                $crate::models::vdm::diffusion_defaults_for(kind)
            }
            fn resolve_for_data(&mut self, kind: $crate::data::DataKind) {
                self.0.resolve_for_data(kind)
            }
            fn objective_note(&self) -> Option<String> {
                self.0.objective_note()
            }
            fn binary_images(&self) -> bool {
                self.0.binary_images()
            }
            fn set_binary_images(&mut self, binary: bool) -> bool {
                self.0.set_binary_images(binary)
            }
        }

        impl $crate::models::LatentVariableModel for $ty {
            fn elbo(
                &self,
                x: burn::tensor::Tensor<2>,
                cond: $crate::diffusion::Cond,
                rng: &mut $crate::rng::Rng,
            ) -> $crate::Result<$crate::elbo::ElboTerms> {
                self.vdm.elbo(x, cond, rng)
            }
            fn sample(
                &self,
                n: usize,
                rng: &mut $crate::rng::Rng,
            ) -> $crate::Result<burn::tensor::Tensor<2>> {
                self.vdm.sample(n, rng)
            }
        }

        impl $crate::models::Model for $ty {
            type Config = $cfg;
            type Spec = $crate::models::vdm::VdmSpec;

            fn spec(
                cfg: &$cfg,
                train: &$crate::data::Dataset,
                scaling: $crate::data::Scaling,
            ) -> $crate::Result<Self::Spec> {
                <$crate::models::vdm::Vdm as $crate::models::Model>::spec(&cfg.0, train, scaling)
            }
            fn build(
                cfg: &$cfg,
                spec: &Self::Spec,
                device: &burn::tensor::Device,
            ) -> $crate::Result<Self> {
                Ok($ty {
                    vdm: $crate::models::vdm::Vdm::new(&cfg.0, spec.clone(), device)?,
                })
            }
            fn binarize(cfg: &$cfg, spec: &Self::Spec) -> Option<$crate::data::Binarize> {
                <$crate::models::vdm::Vdm as $crate::models::Model>::binarize(&cfg.0, spec)
            }
            fn loss(
                &self,
                x: burn::tensor::Tensor<2>,
                cond: $crate::diffusion::Cond,
                rng: &mut $crate::rng::Rng,
            ) -> $crate::Result<(burn::tensor::Tensor<1>, $crate::elbo::ElboTerms)> {
                self.vdm.loss(x, cond, rng)
            }
            fn loss_draws(
                &self,
                x: burn::tensor::Tensor<2>,
                cond: $crate::diffusion::Cond,
                rng: &mut $crate::rng::Rng,
            ) -> $crate::Result<(
                burn::tensor::Tensor<1>,
                $crate::elbo::ElboTerms,
                Vec<(f64, f64)>,
            )> {
                self.vdm.loss_draws(x, cond, rng)
            }
            fn learn(&mut self, draws: &[(f64, f64)]) {
                self.vdm.learn(draws)
            }
            fn train_state(&self) -> Option<serde_json::Value> {
                self.vdm.train_state()
            }
            fn set_train_state(&mut self, state: &serde_json::Value) -> $crate::Result<()> {
                self.vdm.set_train_state(state)
            }
            fn eval_terms(
                &self,
                x: burn::tensor::Tensor<2>,
                cond: $crate::diffusion::Cond,
                rng: &mut $crate::rng::Rng,
            ) -> $crate::Result<$crate::elbo::ElboTerms> {
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
            fn diffusion(&self) -> Option<&dyn $crate::models::DiffusionModel> {
                Some(&self.vdm)
            }
            fn vdm(&self) -> Option<&$crate::models::vdm::Vdm> {
                Some(&self.vdm)
            }
            fn preview_steps(&self) -> Option<usize> {
                self.vdm.preview_steps()
            }
            fn parity(
                &self,
                x: burn::tensor::Tensor<2>,
                cond: $crate::diffusion::Cond,
                rng: &mut $crate::rng::Rng,
            ) -> Option<$crate::Result<Vec<(String, burn::tensor::Tensor<2>)>>> {
                self.vdm.parity(x, cond, rng)
            }
            fn draw_chunk_rows(&self) -> usize {
                self.vdm.draw_chunk_rows()
            }
            fn draw_work(
                &self,
                n: usize,
                opts: &$crate::models::SampleOptions,
            ) -> $crate::Result<u64> {
                self.vdm.draw_work(n, opts)
            }
            fn draw(
                &self,
                n: usize,
                opts: &$crate::models::SampleOptions,
                classifier: Option<&dyn $crate::diffusion::guidance::ClassGradient>,
                tick: &(dyn Fn() + Sync),
            ) -> $crate::Result<$crate::sample::driver::Drawn> {
                self.vdm.draw(n, opts, classifier, tick)
            }
        }
        };
    };
}

pub(crate) use vdm_family;
