//! One training step's loss and gradients, with the batch split over threads where that pays.

use burn::tensor::{Device, Tensor, TensorData};

use crate::comm::{Comm, Solo};
use crate::models::Model;
use crate::params::{self, NamedParams, ParamValue};
use crate::rng::{derived, streams, Rng};
use crate::{Error, Result};

/// The batch's training loss, its −ELBO (the same unless the objective is another, e.g. L_simple),
/// and the gradients of the loss. With `threads` > 1 the batch is split into that many
/// shards, each run forward and backward on its own thread (with its own noise, drawn from a
/// seed taken from `rng`, so the result is deterministic for a given thread count), and the
/// gradients are combined with weights n_shard / B: the gradient of the full-batch mean.
#[allow(clippy::too_many_arguments)]
pub fn loss_and_grads<M: Model>(
    model: &M,
    params: &NamedParams,
    rows: Vec<f32>,
    labels: Option<Vec<u32>>,
    b: usize,
    dim: usize,
    device: &Device,
    rng: &mut Rng,
    threads: usize,
) -> Result<(f64, f64, NamedParams)> {
    let s = step_grads(model, params, rows, labels, b, dim, device, rng, threads)?;
    Ok((s.loss, s.neg_elbo, s.grads))
}

/// Where the operations of a one-shard step run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ops {
    /// On every thread of the current pool (the backend splits large operations).
    #[default]
    AllThreads,
    /// On one thread ([`crate::par::one_thread`]): for small networks, whose operations are too
    /// short to gain from a split (the VAE step: 13 ms on one thread, 14–18 ms on two, on a
    /// 2-core AVX2 EPYC).
    OneThread,
}

/// Measure which [`Ops`] makes a one-shard training step of `model` faster on this machine:
/// two untimed steps each, then five of each interleaved, on the first `b` rows with noise of
/// their own (nothing of the run is consumed). One thread is chosen only if its median is below
/// 0.95 of the other's. Returns [`Ops::AllThreads`] at once where there is one thread, or where
/// the model cuts its batch into shards ([`Model::shards_pay`]): those use the threads
/// themselves. The choice changes the time of a step, never its result.
#[allow(clippy::too_many_arguments)]
pub fn choose_ops<M: Model>(
    model: &M,
    params: &NamedParams,
    rows: &[f32],
    labels: Option<&[u32]>,
    b: usize,
    dim: usize,
    device: &Device,
    shards: usize,
) -> Result<Ops> {
    if shards != 1 || model.shards_pay() || rayon::current_num_threads() < 2 || b == 0 {
        return Ok(Ops::AllThreads);
    }
    let rows = &rows[..(b * dim).min(rows.len())];
    let b = rows.len() / dim.max(1);
    let labels = labels.map(|l| l[..b.min(l.len())].to_vec());
    let mut rng = derived(0, streams::OPS_TRIAL);
    let mut time = |ops: Ops| -> Result<f64> {
        let t = std::time::Instant::now();
        step_grads_across(
            model,
            params,
            rows.to_vec(),
            labels.clone(),
            b,
            dim,
            device,
            &mut rng,
            1,
            &Solo,
            &[],
            ops,
        )?;
        Ok(t.elapsed().as_secs_f64())
    };
    for _ in 0..2 {
        time(Ops::AllThreads)?;
        time(Ops::OneThread)?;
    }
    let (mut all, mut one) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        all.push(time(Ops::AllThreads)?);
        one.push(time(Ops::OneThread)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(if median(&mut one) < 0.95 * median(&mut all) {
        Ops::OneThread
    } else {
        Ops::AllThreads
    })
}

/// A step's loss, −ELBO and gradients, and the draws (noise level, weighted integrand) the
/// model reports for its proposal, in shard order ([`Model::loss_draws`]).
pub struct StepGrads {
    pub loss: f64,
    pub neg_elbo: f64,
    pub grads: NamedParams,
    pub draws: Vec<(f64, f64)>,
}

/// [`loss_and_grads`] with the model's draws, on one process ([`Solo`]).
#[allow(clippy::too_many_arguments)]
pub fn step_grads<M: Model>(
    model: &M,
    params: &NamedParams,
    rows: Vec<f32>,
    labels: Option<Vec<u32>>,
    b: usize,
    dim: usize,
    device: &Device,
    rng: &mut Rng,
    threads: usize,
) -> Result<StepGrads> {
    step_grads_across(
        model,
        params,
        rows,
        labels,
        b,
        dim,
        device,
        rng,
        threads,
        &Solo,
        &[],
        Ops::AllThreads,
    )
}

/// One shard: (loss, −ELBO, gradients of the loss, draws) of the model on its rows.
type Shard = (f64, f64, NamedParams, Vec<(f64, f64)>);

/// With `summed = Some((w, devices))` (one shard per GPU) the loss is weighted by w before the
/// backward pass and each gradient is summed across the devices as it is read
/// ([`crate::device::sum_across`]): every shard returns the whole step's gradient.
#[allow(clippy::too_many_arguments)]
fn shard<M: Model>(
    m: &M,
    rows: Vec<f32>,
    labels: Option<&[u32]>,
    n: usize,
    dim: usize,
    device: &Device,
    rng: &mut Rng,
    summed: Option<(f32, &[Device])>,
) -> Result<Shard> {
    let x = Tensor::<2>::from_data(TensorData::new(rows, [n, dim]), device);
    let (loss, terms, draws) = m.loss_draws(x, labels, rng)?;
    let v: f32 = loss.clone().into_scalar();
    let e: f32 = terms.total().mean().into_scalar();
    let grads = match summed {
        None => params::collect_grads(m, &loss.backward())?,
        Some((w, devices)) => {
            let g = (loss * w).backward();
            let sum = |t: Tensor<1>| crate::device::sum_across(t, devices);
            params::collect_grads_mapped(m, &g, Some(&sum))?
        }
    };
    Ok((v as f64, e as f64, grads, draws))
}

/// The step of [`step_grads`] shared by the ranks of `comm` (data parallelism, M-free: the
/// gradient of a mean is the weighted sum of the shards' gradients). Every rank passes the
/// whole global batch `rows` (they all follow one data order) and an `rng` in the same state;
/// the batch is cut into `comm.size() × threads` shards (at most `b`), each with its own noise
/// seed drawn from `rng`, and rank r computes shards r·threads .. (r+1)·threads on its threads.
/// The weighted sums of the ranks are added by `comm` ([`Comm::sum_f32`]), the draws gathered
/// in shard order. The shards, their seeds and their weights are those of one process running
/// `comm.size() × threads` threads, so N ranks reproduce that run; with two ranks of one thread
/// each, the sum is the same two additions in f32 and the result is the same to the bit.
///
/// With several `devices` (GPUs; `threads` is then their number), shard j of a rank runs on
/// device j and the shards' gradients are summed on the devices by their collective all-reduce
/// before they reach the host.
#[allow(clippy::too_many_arguments)]
pub fn step_grads_across<M: Model>(
    model: &M,
    params: &NamedParams,
    rows: Vec<f32>,
    labels: Option<Vec<u32>>,
    b: usize,
    dim: usize,
    device: &Device,
    rng: &mut Rng,
    threads: usize,
    comm: &dyn Comm,
    devices: &[Device],
    ops: Ops,
) -> Result<StepGrads> {
    let on_devices = devices.len() > 1;
    let per_rank = if on_devices {
        devices.len()
    } else {
        threads.max(1)
    };
    let shards = (comm.size() * per_rank).clamp(1, b.max(1));
    if shards == 1 && comm.size() == 1 {
        let (loss, neg_elbo, grads, draws) = match ops {
            Ops::AllThreads => shard(model, rows, labels.as_deref(), b, dim, device, rng, None)?,
            Ops::OneThread => {
                let (m, device) = (model.clone(), device.clone());
                crate::par::one_thread(move || {
                    shard(&m, rows, labels.as_deref(), b, dim, &device, rng, None)
                })?
            }
        };
        return Ok(StepGrads {
            loss,
            neg_elbo,
            grads,
            draws,
        });
    }
    let seeds: Vec<u64> = (0..shards).map(|_| rand::Rng::gen(rng)).collect();
    let sizes: Vec<usize> = (0..shards)
        .map(|i| b / shards + usize::from(i < b % shards))
        .collect();
    let mine = (comm.rank() * per_rank).min(shards)..((comm.rank() + 1) * per_rank).min(shards);
    let mut parts = Vec::new();
    let mut start: usize = sizes[..mine.start].iter().sum();
    for &n in &sizes[mine.clone()] {
        let y = labels.as_ref().map(|l| l[start..start + n].to_vec());
        parts.push((rows[start * dim..(start + n) * dim].to_vec(), y));
        start += n;
    }
    if on_devices && mine.len() != devices.len() {
        return Err(Error::Invalid(format!(
            "a batch of {b} cannot give each of the {} devices (× {} processes) a shard: use a \
             batch of at least {}",
            devices.len(),
            comm.size(),
            devices.len() * comm.size()
        )));
    }
    let my_seeds = &seeds[mine.clone()];
    let my_sizes = &sizes[mine];
    let results: Vec<Result<Shard>> = if parts.len() == 1 && comm.size() > 1 && !on_devices {
        // One shard on this rank: no thread to spawn.
        let (part, y) = parts.pop().map_or((Vec::new(), None), |p| p);
        let mut r = derived(my_seeds[0], streams::TRAIN_NOISE);
        vec![shard(
            model,
            part,
            y.as_deref(),
            my_sizes[0],
            dim,
            device,
            &mut r,
            None,
        )]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = parts
                .into_iter()
                .zip(my_seeds)
                .zip(my_sizes)
                .enumerate()
                .map(|(j, (((part, y), &seed), &n))| {
                    let (m, device) = if on_devices {
                        (model.clone().fork(&devices[j]), devices[j].clone())
                    } else {
                        (model.clone(), device.clone())
                    };
                    let summed = on_devices.then_some((n as f32 / b as f32, devices));
                    s.spawn(move || -> Result<Shard> {
                        // Fresh leaf tensors: threads must not share autodiff graph nodes.
                        let m = params::assign(m, params)?;
                        let mut r = derived(seed, streams::TRAIN_NOISE);
                        shard(&m, part, y.as_deref(), n, dim, &device, &mut r, summed)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Invalid("a training thread panicked".into()))
                    })
                })
                .collect()
        })
    };
    let (mut loss, mut neg_elbo) = (0.0, 0.0);
    let mut total: Option<NamedParams> = None;
    let mut all_draws = Vec::new();
    for (r, &n) in results.into_iter().zip(my_sizes) {
        let (l, e, g, d) = r?;
        all_draws.extend(d);
        let w = n as f32 / b as f32;
        loss += l * w as f64;
        neg_elbo += e * w as f64;
        if on_devices {
            // Each device's shard returned the sum already (weighted): keep one.
            total.get_or_insert(g);
            continue;
        }
        match &mut total {
            None => {
                let mut g = g;
                g.values_mut()
                    .for_each(|p| p.data.iter_mut().for_each(|x| *x *= w));
                total = Some(g);
            }
            Some(t) => {
                for (k, p) in t.iter_mut() {
                    if let Some(q) = g.get(k) {
                        p.data
                            .iter_mut()
                            .zip(&q.data)
                            .for_each(|(a, b)| *a += w * b);
                    }
                }
            }
        }
    }
    if comm.size() == 1 {
        return Ok(StepGrads {
            loss,
            neg_elbo,
            grads: total.unwrap_or_default(),
            draws: all_draws,
        });
    }
    // Across ranks: the weighted sums laid end to end in the parameters' order (a rank without
    // a shard, or a parameter without a gradient, adds zeros; which parameters have one is
    // summed beside), the loss and −ELBO, and the draws in rank (= shard) order.
    let local = total.unwrap_or_default();
    let mut flat = Vec::with_capacity(params.values().map(|p| p.data.len()).sum());
    let mut small = vec![loss, neg_elbo];
    for (k, p) in params {
        match local.get(k) {
            Some(g) if g.data.len() == p.data.len() => {
                flat.extend_from_slice(&g.data);
                small.push(1.0);
            }
            _ => {
                flat.resize(flat.len() + p.data.len(), 0.0);
                small.push(0.0);
            }
        }
    }
    comm.sum_f32(&mut flat);
    comm.sum_f64(&mut small);
    let flat_draws: Vec<f64> = all_draws.iter().flat_map(|&(a, b)| [a, b]).collect();
    let gathered = comm.gather_f64(&flat_draws);
    let mut grads = NamedParams::new();
    let mut at = 0;
    for ((k, p), &has) in params.iter().zip(&small[2..]) {
        let n = p.data.len();
        if has > 0.0 {
            grads.insert(
                k.clone(),
                ParamValue {
                    shape: p.shape.clone(),
                    data: flat[at..at + n].to_vec(),
                },
            );
        }
        at += n;
    }
    Ok(StepGrads {
        loss: small[0],
        neg_elbo: small[1],
        grads,
        draws: gathered.chunks_exact(2).map(|c| (c[0], c[1])).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataKind;
    use crate::data::{Dataset, Scaling};
    use crate::diffusion::Cond;
    use crate::elbo::ElboTerms;
    use crate::models::{LatentVariableModel, ModelSettings};
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use serde::{Deserialize, Serialize};

    /// A model with a noiseless loss, so that one thread and several see the same function:
    /// ‖W x + b − x‖² per example (as a "reconstruction" term).
    #[derive(Module, Debug)]
    struct Affine {
        l: Linear,
    }

    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct AffineConfig;

    impl ModelSettings for AffineConfig {
        fn defaults_for(_: DataKind) -> (u64, usize) {
            (1, 1)
        }
    }

    impl LatentVariableModel for Affine {
        fn elbo(&self, x: Tensor<2>, _cond: Cond, _rng: &mut Rng) -> Result<ElboTerms> {
            let r = (self.l.forward(x.clone()) - x)
                .square()
                .sum_dim(1)
                .squeeze_dim::<1>(1);
            Ok(ElboTerms {
                prior: r.zeros_like(),
                reconstruction: r,
                layers: vec![],
            })
        }
        fn sample(&self, _n: usize, _rng: &mut Rng) -> Result<Tensor<2>> {
            Err(Error::Invalid("no sampling".into()))
        }
    }

    impl Model for Affine {
        type Config = AffineConfig;
        type Spec = usize;
        fn spec(_: &AffineConfig, train: &Dataset, _: Scaling) -> Result<usize> {
            Ok(train.dim())
        }
        fn build(_: &AffineConfig, d: &usize, device: &Device) -> Result<Self> {
            Ok(Affine {
                l: LinearConfig::new(*d, *d).init(device),
            })
        }
    }

    #[test]
    fn a_step_on_one_thread_gives_the_same_bits_as_on_all() {
        // The measured choice of `Ops` (`choose_ops`) may differ between machines and runs, so
        // it must not change a step's result: the VAE's step (784-200-200-50, batch 128, GEMMs
        // above the backend's size for splitting them over threads) gives the same loss and
        // gradients to the bit with its operations on one thread as on every thread of the
        // pool (two on CI; on one core the test compares a run with itself).
        use crate::models::vae::{Observation, Vae, VaeConfig, VaeSpec};
        let device = Device::flex().autodiff();
        device.seed(3);
        let spec = VaeSpec {
            obs: Observation::bernoulli(784),
            latent: 50,
        };
        let m = Vae::new(&VaeConfig::default(), spec, &device).unwrap();
        let params = params::collect(&m).unwrap();
        let rows: Vec<f32> = (0..128 * 784)
            .map(|i| f32::from((i * 7919) % 13 < 4))
            .collect();
        let run = |ops| {
            let mut rng = crate::rng::seeded(9);
            step_grads_across(
                &m,
                &params,
                rows.clone(),
                None,
                128,
                784,
                &device,
                &mut rng,
                1,
                &Solo,
                &[],
                ops,
            )
            .unwrap()
        };
        let (all, one) = (run(Ops::AllThreads), run(Ops::OneThread));
        assert_eq!(all.loss.to_bits(), one.loss.to_bits());
        assert_eq!(all.neg_elbo.to_bits(), one.neg_elbo.to_bits());
        for (k, p) in &all.grads {
            assert!(p.data == one.grads[k].data, "{k} differs");
        }
        // And the trial itself returns a choice without touching the model.
        let ops = choose_ops(&m, &params, &rows, None, 128, 784, &device, 1).unwrap();
        let again = run(ops);
        assert_eq!(again.loss.to_bits(), all.loss.to_bits());
    }

    #[test]
    fn threaded_gradient_equals_the_single_thread_gradient() {
        // B = 7 over 3 shards (3, 2, 2 examples, weights 3/7, 2/7, 2/7): the combined gradient is
        // the full-batch gradient to f32 rounding (relative 1e-5).
        let device = Device::flex().autodiff();
        device.seed(5);
        let m = Affine::build(&AffineConfig, &3, &device).unwrap();
        let params = params::collect(&m).unwrap();
        let rows: Vec<f32> = crate::rng::normal_vec(&mut crate::rng::seeded(6), 7 * 3);
        let run = |threads| {
            let mut rng = crate::rng::seeded(7);
            loss_and_grads(
                &m,
                &params,
                rows.clone(),
                None,
                7,
                3,
                &device,
                &mut rng,
                threads,
            )
            .unwrap()
        };
        let (l1, e1, g1) = run(1);
        for t in [2, 3] {
            let (lt, et, gt) = run(t);
            assert!(
                (l1 - lt).abs() < 1e-5 * l1.abs(),
                "loss {l1} vs {lt} ({t} threads)"
            );
            assert!((e1 - et).abs() < 1e-5 * e1.abs());
            assert_eq!(g1.keys().collect::<Vec<_>>(), gt.keys().collect::<Vec<_>>());
            for (k, p) in &g1 {
                let q = &gt[k];
                let scale = p.data.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-6);
                for (a, b) in p.data.iter().zip(&q.data) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "{k}: {a} vs {b} with {t} threads"
                    );
                }
            }
        }
    }
}
