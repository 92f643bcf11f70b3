//! The models, each a latent-variable model trained by its ELBO (MATH.md §1–§6), and the one
//! registry that names them ([`registry`]). A model is a type that implements [`Model`]: its own
//! configuration section, what it learns about its data before training, how it is built, its
//! loss and its bound. The training loop, the evaluators and the command line reach every model
//! through [`ModelConfig::visit`], so a new model is one new file plus one line in the registry.

pub mod family;
pub mod noisy_classifier;
pub mod obs;
pub mod registry;

use std::fmt::Debug;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{de::DeserializeOwned, Serialize};

pub use registry::ModelVisitor;

use crate::data::batches::row_block;
use crate::data::{Binarize, DataKind, Dataset, Scaling};
use crate::diffusion::elbo::{Decoder, DiffusionEstimate, ElboOptions};
use crate::diffusion::guidance::ClassGradient;
use crate::diffusion::Cond;
use crate::elbo::{ElboTerms, Stat};
use crate::rng::Rng;
pub use crate::sample::driver::{Drawn, SampleOptions};
use crate::Result;

/// A latent-variable model: per-example terms of its ELBO, and samples. VAE, HVAE and VDM all
/// implement it: the unified perspective in code.
pub trait LatentVariableModel {
    /// (M2) Per-example terms of the negative ELBO, in nats, of a batch in data units, given
    /// one class label per row where the model is conditional (ignored otherwise).
    ///
    /// # Shapes
    /// `x`: `[B, D]` → each term `[B]`.
    fn elbo(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<ElboTerms>;

    /// `n` samples in data units, `[n, D]` (for binary images: pixel probabilities).
    fn sample(&self, n: usize, rng: &mut Rng) -> Result<Tensor<2>>;
}

/// A model's section of the run configuration (`[vae]`, `[vdm]`, …).
pub trait ModelSettings:
    Serialize + DeserializeOwned + Default + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// Refuse settings that cannot make a model, naming the key.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// Steps and batch size of a default run (about five minutes on 2 cores) on data of a kind.
    fn defaults_for(kind: DataKind) -> (u64, usize);

    /// Replace settings left to the data ("auto") by their values for data of this kind.
    fn resolve_for_data(&mut self, _kind: DataKind) {}

    /// Keys of this section that a resumed run may change; every other key defines the run.
    const CHANGEABLE_ON_RESUME: &'static [&'static str] = &[];

    /// Whether the model is a diffusion model (samplers, the ODE likelihood, guidance apply).
    const DIFFUSION: bool = false;

    /// Whether the model has a likelihood along a probability-flow ODE (`eval --method ode`):
    /// every diffusion model, and models with a diffusion prior.
    const ODE: bool = Self::DIFFUSION;

    /// Whether the model has an importance-weighted bound L_K (M4; `eval --iw K`).
    const IMPORTANCE_WEIGHTED: bool = false;

    /// The training objective in words, where it is not the ELBO itself (a weighting, whether it
    /// is monotone, where noise levels are drawn): for the report beside the plain bound.
    fn objective_note(&self) -> Option<String> {
        None
    }

    /// Whether these settings score 8-bit images binarised (a Bernoulli decoder: nats per
    /// image) rather than as their 256 levels (bits/dim).
    fn binary_images(&self) -> bool {
        false
    }

    /// Score 8-bit images binarised (`true`) or as their levels; `false` where the model has
    /// no such choice and stays as it is.
    fn set_binary_images(&mut self, _binary: bool) -> bool {
        false
    }

    /// Dotted keys of the section that size the model (named when a size is refused).
    const SIZE_KEYS: &'static [&'static str] = &[];

    /// A trained run whose weights a new run of these settings starts from, in part
    /// (the latent VDM's autoencoder from a `vae` run); `None`: a fresh initialisation.
    fn warm_start(&self) -> Option<WarmStart> {
        None
    }
}

/// Weights for part of a new model from a trained run: every parameter under `prefix` (the
/// submodule's field, say `vae`) is read from `run`'s evaluation weights, which must be a run
/// of `kind` with the same data and the same spec as that submodule.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmStart {
    pub run: std::path::PathBuf,
    pub kind: &'static str,
    pub prefix: &'static str,
    /// The settings key that named the run (for errors).
    pub key: &'static str,
    /// Keys of the submodule's settings that may differ from the run's (how it is trained, not
    /// what it is); every other key must be equal.
    pub free_keys: &'static [&'static str],
}

/// Where a model's ELBO takes its noise: `noise(name, dims)` returns a standard normal draw of
/// `dims` (a fresh one when training, a recorded one for parity).
pub type NoiseFn<'a> = dyn FnMut(&str, [usize; 2]) -> Tensor<2> + 'a;

/// A model's ELBO by `elbo_noised` with noise drawn from `rng` and recorded under its names,
/// then the terms: the parity block of a model whose ELBO takes named noise.
pub fn parity_block(
    device: &Device,
    rng: &mut Rng,
    elbo_noised: impl FnOnce(&mut NoiseFn) -> Result<ElboTerms>,
) -> Result<Vec<(String, Tensor<2>)>> {
    let mut out: Vec<(String, Tensor<2>)> = Vec::new();
    let terms = {
        let mut noise = |name: &str, dims: [usize; 2]| {
            let e = crate::rng::randn(rng, dims, device);
            out.push((name.to_string(), e.clone()));
            e
        };
        elbo_noised(&mut noise)?
    };
    out.extend(term_columns(terms));
    Ok(out)
}

/// ELBO terms as `[B, 1]` columns named `term.NAME`.
pub fn term_columns(t: ElboTerms) -> Vec<(String, Tensor<2>)> {
    let col = |v: Tensor<1>| {
        let n = v.dims()[0];
        v.reshape([n, 1])
    };
    let mut out = vec![
        ("term.reconstruction".to_string(), col(t.reconstruction)),
        ("term.prior".to_string(), col(t.prior)),
    ];
    out.extend(
        t.layers
            .into_iter()
            .map(|(k, v)| (format!("term.{k}"), col(v))),
    );
    out
}

/// Samples a decoder draws together (one noise stream each).
const DECODER_CHUNK: usize = 4096;

/// What the diffusion-bound evaluator needs of a diffusion model.
pub trait DiffusionModel {
    /// The bound's terms on a batch in data units (log-Jacobian included).
    fn estimate(
        &self,
        x: Tensor<2>,
        opts: ElboOptions,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<DiffusionEstimate>;
    /// γ(t), for reports.
    fn gamma_at(&self, t: f64) -> f64;
    /// T of a DDPM schedule table, if the schedule is one.
    fn table_steps(&self) -> Option<usize>;
    /// The decoder p(x | z_0).
    fn decoder(&self) -> Decoder;
    /// Classes of a class-conditional model (0: unconditional).
    fn classes(&self) -> usize {
        0
    }
    /// −log p(x) of each row (data units) under the probability-flow ODE (M36, M37), with its
    /// Monte-Carlo error; `x` and the model on an autodiff device.
    fn ode_nll(
        &self,
        x: Tensor<2>,
        cond: Cond,
        opts: &crate::diffusion::ode::OdeOptions,
        rng: &mut Rng,
    ) -> Result<crate::diffusion::ode::OdeNll>;
}

/// How many of a stochastic layer's units the model uses.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LayerUnits {
    /// The layer's name (`z1`, `z2`, …; `z` for a one-layer VAE).
    pub layer: String,
    /// Units u with Cov_x(E_q[u | x]) > 0.01 (Burda et al. 2016 §5).
    pub active: usize,
    pub total: usize,
}

/// The variance threshold of an active unit (Burda et al. 2016 §5).
pub const ACTIVE_UNIT_THRESHOLD: f64 = 0.01;

/// Active units from each layer's posterior means E_q[z_l | x] over a batch, `[B, d_l]` each
/// (named `z` for one layer, `z1`, `z2`, … for several).
pub fn count_active(means: Vec<Tensor<2>>) -> Result<Vec<LayerUnits>> {
    let layers = means.len();
    means
        .into_iter()
        .enumerate()
        .map(|(l, m)| {
            let [b, d] = m.dims();
            let v = crate::elbo::to_f32(m)?;
            let mut active = 0;
            for j in 0..d {
                let col: Vec<f64> = (0..b).map(|i| v[i * d + j] as f64).collect();
                let mean = col.iter().sum::<f64>() / b.max(1) as f64;
                let var = col.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / b.max(1) as f64;
                if var > ACTIVE_UNIT_THRESHOLD {
                    active += 1;
                }
            }
            Ok(LayerUnits {
                layer: if layers == 1 {
                    "z".into()
                } else {
                    format!("z{}", l + 1)
                },
                active,
                total: d,
            })
        })
        .collect()
}

/// Activations of a network of dense layers: three floats (input to the nonlinearity, its output,
/// and the gradient) per output unit of every 2-D weight, read from lazy shapes (Burn keeps a
/// Linear weight as `[in, out]`).
pub fn dense_activations<M: Module>(m: &M) -> f64 {
    crate::params::shapes(m)
        .iter()
        .filter(|(_, s)| s.len() == 2)
        .map(|(_, s)| 3.0 * s[1] as f64)
        .sum()
}

/// Memory a model needs, measured from its configuration before any parameter exists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footprint {
    /// Scalar parameters.
    pub params: f64,
    /// Floats of activations per example in a training step.
    pub activations_per_example: f64,
}

impl Footprint {
    /// Bytes of parameters: 4 per float.
    pub fn param_bytes(&self) -> f64 {
        4.0 * self.params
    }

    /// Bytes a training step needs: each parameter eight times over (the weights, the
    /// optimiser's copy, the EMA, two Adam moments, the gradient, and a checkpoint's copy in
    /// bytes), and the activations of a batch with their gradients.
    pub fn training_bytes(&self, batch: usize) -> f64 {
        4.0 * (8.0 * self.params + 2.0 * self.activations_per_example * batch as f64)
    }
}

/// The footprint of the model that `section` and `spec` make, from a lazily built model, and
/// the keys that size it.
pub fn footprint<M: Model>(
    section: &M::Config,
    spec: &M::Spec,
) -> Result<(Footprint, &'static [&'static str])> {
    let m = M::build(section, spec, &Device::flex())?;
    Ok((
        Footprint {
            params: crate::params::lazy_count(&m),
            activations_per_example: m.activations_per_example(),
        },
        m.size_keys(),
    ))
}

/// The settings that size a model, as `key = value` for a refusal: the section's size keys
/// and the data's dimension.
fn size_description<M: Model>(
    section: &M::Config,
    keys: &[&str],
    data_dim: usize,
    kind: ModelKind,
) -> String {
    let v = serde_json::to_value(section).unwrap_or_default();
    let mut parts: Vec<String> = keys
        .iter()
        .filter_map(|k| {
            let mut cur = &v;
            for p in k.split('.') {
                cur = cur.get(p)?;
            }
            Some(format!("{}.{k} = {cur}", kind.name()))
        })
        .collect();
    parts.push(format!("a data dimension of {data_dim}"));
    parts.join(", ")
}

/// Refuse (unless `force`) to train a model whose parameters and a batch's activations would
/// need more memory than [`crate::limits::memory_limit`], before any of it is allocated; the
/// refusal names the settings, the size and the limit.
pub fn check_training_memory<M: Model>(
    section: &M::Config,
    spec: &M::Spec,
    data_dim: usize,
    batch: usize,
    force: bool,
) -> Result<Footprint> {
    let (f, keys) = footprint::<M>(section, spec)?;
    let need = f.training_bytes(batch);
    let (limit, what) = crate::limits::memory_limit();
    let kind = registry::kind_of::<M>();
    crate::limits::check(need <= limit as f64, force, || {
        format!(
            "{}: a model of {:.3e} parameters ({} of weights) with {} of activations for a \
             batch of {batch}; training it needs about {} (the limit is {}, {what})",
            size_description::<M>(section, keys, data_dim, kind),
            f.params,
            crate::limits::bytes(f.param_bytes()),
            crate::limits::bytes(8.0 * f.activations_per_example * batch as f64),
            crate::limits::bytes(need),
            crate::limits::bytes(limit as f64),
        )
    })?;
    Ok(f)
}

/// The KL weight of a linear warm-up over `warmup` steps, after `step` steps (1 without one).
pub fn warmup_weight(step: u64, warmup: u64) -> f64 {
    if warmup == 0 {
        1.0
    } else {
        (step as f64 / warmup as f64).min(1.0)
    }
}

/// A model as the training loop, the evaluators and the command line use it.
pub trait Model: Module + LatentVariableModel + Sized + Send + 'static {
    /// This model's section of the configuration.
    type Config: ModelSettings;
    /// What the model learns about its data before training (saved in `model.json`).
    type Spec: Serialize + DeserializeOwned + Clone + Debug;

    /// Derive the spec from the settings and the training split (`scaling` maps continuous
    /// data into the model).
    fn spec(cfg: &Self::Config, train: &Dataset, scaling: Scaling) -> Result<Self::Spec>;

    /// A freshly initialised model.
    fn build(cfg: &Self::Config, spec: &Self::Spec, device: &Device) -> Result<Self>;

    /// Binarisation applied to raw 8-bit rows before they reach the model, if any.
    fn binarize(_cfg: &Self::Config, _spec: &Self::Spec) -> Option<Binarize> {
        None
    }

    /// The training loss (a scalar `[1]`) and the ELBO terms it came with. By default the
    /// negative ELBO itself, averaged over the batch.
    fn loss(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<(Tensor<1>, ElboTerms)> {
        let t = self.elbo(x, cond, rng)?;
        Ok((t.total().mean(), t))
    }

    /// [`Model::loss`] with the draws the model's proposal learns from: (t, weighted integrand)
    /// of each noise level drawn (none by default).
    #[allow(clippy::type_complexity)]
    fn loss_draws(
        &self,
        x: Tensor<2>,
        cond: Cond,
        rng: &mut Rng,
    ) -> Result<(Tensor<1>, ElboTerms, Vec<(f64, f64)>)> {
        let (l, t) = self.loss(x, cond, rng)?;
        Ok((l, t, vec![]))
    }

    /// Learn from a step's draws (in shard order; a deterministic function of them): an
    /// adaptive proposal of noise levels. Nothing by default.
    fn learn(&mut self, _draws: &[(f64, f64)]) {}

    /// State that training changes outside the parameters (an adaptive proposal), saved with
    /// each checkpoint so that a resume continues exactly; `None` by default.
    fn train_state(&self) -> Option<serde_json::Value> {
        None
    }

    /// Restore [`Model::train_state`] from a checkpoint.
    fn set_train_state(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }

    /// Per-example ELBO terms for held-out evaluation during training (by default `elbo`; a
    /// model may average more Monte-Carlo samples here to make the progress number steadier).
    fn eval_terms(&self, x: Tensor<2>, cond: Cond, rng: &mut Rng) -> Result<ElboTerms> {
        self.elbo(x, cond, rng)
    }

    /// (M4) The importance-weighted bound L_K per example, for models that have one (`None`
    /// otherwise).
    fn importance_weighted(
        &self,
        _x: Tensor<2>,
        _k: usize,
        _rng: &mut Rng,
    ) -> Option<Result<Vec<f64>>> {
        None
    }

    /// Whether a training step is large enough to split the batch over threads (data-parallel
    /// shards, each with its own autodiff graph). Small networks (the VAE, HVAE and MLP
    /// denoisers: a few milliseconds a step) run faster as one shard whose operations use the
    /// cores themselves (measured: VAE 34,000 against 25,000 examples/s on 2 cores).
    fn shards_pay(&self) -> bool {
        false
    }

    /// Training shards for `threads` threads: `threads` where [`Model::shards_pay`], else one.
    fn train_shards(&self, threads: usize) -> usize {
        if self.shards_pay() {
            threads
        } else {
            1
        }
    }

    /// Floats of activations that one example keeps for a training step's backward pass, an
    /// estimate within a small factor from the architecture (read from lazy shapes: nothing is
    /// allocated). By default that of a stack of dense layers, [`dense_activations`].
    fn activations_per_example(&self) -> f64 {
        dense_activations(self)
    }

    /// Dotted keys of the model's section that size this model (named when a size is
    /// refused); by default [`ModelSettings::SIZE_KEYS`].
    fn size_keys(&self) -> &'static [&'static str] {
        <Self::Config as ModelSettings>::SIZE_KEYS
    }

    /// Called by the training loop before each step's loss, with the number of steps done (KL
    /// warm-up reads it; most models ignore it).
    fn at_step(&mut self, _step: u64) {}

    /// Active units per stochastic layer (Burda et al. 2016 §5) on a batch in data units, for
    /// models with a learned encoder (`None` otherwise).
    fn active_units(&self, _x: Tensor<2>, _rng: &mut Rng) -> Option<Result<Vec<LayerUnits>>> {
        None
    }

    /// The diffusion view of the model, for models whose bound is a diffusion bound.
    fn diffusion(&self) -> Option<&dyn DiffusionModel> {
        None
    }

    /// −log p(x) per row along the probability-flow ODE (M37), or the bound that a latent
    /// model's ODE prior gives; `None` for a model without one. The device must be autodiff.
    fn ode_nll(
        &self,
        x: Tensor<2>,
        cond: crate::diffusion::Cond,
        opts: &crate::diffusion::ode::OdeOptions,
        rng: &mut Rng,
    ) -> Option<Result<crate::diffusion::ode::OdeNll>> {
        self.diffusion().map(|d| d.ode_nll(x, cond, opts, rng))
    }

    /// The VDM a diffusion model is (its network, schedule and process), for work on the
    /// network itself: distillation (`None` for other models).
    fn vdm(&self) -> Option<&vdm::Vdm> {
        None
    }

    /// Sampler steps of the small sample grids drawn during training (`None`: the model's
    /// default, or no steps at all).
    fn preview_steps(&self) -> Option<usize> {
        None
    }

    /// Parity with a PyTorch twin (`elbo export --parity`, `bench/parity.py`): the model's own
    /// ELBO terms on `x` (data units) computed by its own code from noise drawn here from
    /// `rng`, with that noise, as named `[B, ·]` tensors: the noise as the twin reads it
    /// (`eps.0`, `t`, …) and each term as `term.NAME`. `None`: the model has no twin.
    fn parity(
        &self,
        _x: Tensor<2>,
        _cond: Cond,
        _rng: &mut Rng,
    ) -> Option<Result<Vec<(String, Tensor<2>)>>> {
        None
    }

    /// Samples drawn together with one noise stream.
    fn draw_chunk_rows(&self) -> usize {
        DECODER_CHUNK
    }

    /// Units of work (calls of `tick` in [`Model::draw`]) that drawing `n` samples takes.
    fn draw_work(&self, n: usize, _opts: &SampleOptions) -> Result<u64> {
        Ok(n.div_ceil(DECODER_CHUNK) as u64)
    }

    /// `n` samples in data units, row-major `[n, D]`, with what drew them; `tick` is called
    /// once per unit of [`Model::draw_work`]. By default [`LatentVariableModel::sample`] chunk
    /// by chunk (a decoder pass each), each chunk with its own noise stream `rng::chunk(seed,
    /// SAMPLE_NOISE, index)`, so that samples depend on the seed only. Diffusion models hand
    /// themselves to the sampling driver ([`crate::sample::driver::draw`]).
    fn draw(
        &self,
        n: usize,
        opts: &SampleOptions,
        classifier: Option<&dyn ClassGradient>,
        tick: &(dyn Fn() + Sync),
    ) -> Result<Drawn> {
        if opts.sampler.is_some() || opts.steps.is_some() {
            return Err(crate::Error::Config(
                "--sampler and --steps apply to diffusion models; this model samples in one \
                 decoder pass"
                    .into(),
            ));
        }
        if opts.class.is_some() || classifier.is_some() {
            return Err(crate::Error::Config(
                "--class and --classifier apply to diffusion models; this model is \
                 unconditional and samples in one decoder pass"
                    .into(),
            ));
        }
        let per = DECODER_CHUNK;
        let mut out = Vec::new();
        for (c, start) in (0..n).step_by(per).enumerate() {
            let rows = per.min(n - start);
            let mut rng = crate::rng::chunk(
                opts.seed,
                crate::rng::streams::SAMPLE_NOISE,
                opts.first_chunk + c as u64,
            );
            out.extend(crate::elbo::to_f32(self.sample(rows, &mut rng)?)?);
            tick();
        }
        Ok(Drawn {
            values: out,
            nfe: 1.0,
            sampler: "one decoder pass".into(),
        })
    }
}

/// Per-example ELBO terms of a model on `rows` (`n` × `dim`, with `labels` where the data have
/// them), in batches, as (name, values). The last entry is the total (−ELBO, nats).
#[allow(clippy::too_many_arguments)]
pub fn elbo_rows<M: Model>(
    model: &M,
    rows: &[f32],
    labels: Option<&[u32]>,
    dim: usize,
    batch: usize,
    device: &Device,
    rng: &mut Rng,
    mut progress: impl FnMut(usize),
) -> Result<Vec<(String, Vec<f64>)>> {
    let n = rows.len() / dim;
    let mut out: Vec<(String, Vec<f64>)> = Vec::new();
    let mut start = 0;
    while start < n {
        let b = batch.min(n - start);
        let x = row_block(rows, start, b, dim, device);
        let y = labels.map(|l| &l[start..start + b]);
        let terms = model.eval_terms(x, y, rng)?;
        let mut r = terms.to_rows()?;
        r.push(("total".into(), crate::elbo::to_f64(terms.total())?));
        if out.is_empty() {
            out = r;
        } else {
            for (o, (_, v)) in out.iter_mut().zip(r) {
                o.1.extend(v);
            }
        }
        start += b;
        progress(start);
    }
    Ok(out)
}

/// Summaries (mean ± standard error) of per-example rows.
pub fn summarize(rows: &[(String, Vec<f64>)]) -> Vec<(String, Stat)> {
    rows.iter().map(|(n, v)| (n.clone(), Stat::of(v))).collect()
}

// The models. A new model: its file under models/, and one line here (which also declares its
// module).
registry::registry! {
    /// Variational autoencoder (MATH.md §2).
    Vae(vae::Vae) = "vae",
    /// Hierarchical VAE with L stochastic layers (MATH.md §3).
    Hvae(hvae::Hvae) = "hvae",
    /// Variational diffusion model (MATH.md §4–§6).
    Vdm(vdm::Vdm) = "vdm",
    /// Noise-conditional score network: denoising score matching, annealed Langevin (MATH.md §7).
    Ncsn(ncsn::Ncsn) = "ncsn",
    /// Flow matching: the straight path, the velocity, the CFM loss as a weighted ELBO (M48).
    Flow(flow::Flow) = "flow",
    /// EDM: preconditioned denoiser, log-normal σ, Heun on the ρ = 7 grid (M47).
    Edm(edm::Edm) = "edm",
    /// Latent diffusion with a bound (LSGM): a VAE with a VDM prior over its latent (M49).
    LatentVdm(latent_vdm::LatentVdm) = "latent-vdm",
}
