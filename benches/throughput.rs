//! Throughput cases timed by `bench/compare.py` beside their PyTorch twins (never in CI).
//!
//! `cargo bench --bench throughput -- CASE [--iters N] [--warmup W] [--threads T]` prints one JSON
//! line: the median time of one iteration and the examples (or images) per second it implies.
//! A case is a name in `CASES` and a closure that builds its state and returns one iteration.

use std::time::Instant;

use burn::tensor::Device;
use elbo::comm::Solo;
use elbo::data::DataKind;
use elbo::models::vae::{Observation, Vae, VaeConfig, VaeSpec};
use elbo::models::vdm::{NetworkKind, Vdm, VdmConfig, VdmSpec};
use elbo::models::{Model, SampleOptions};
use elbo::optim::{AdamW, OptimConfig};
use elbo::params::{self, NamedParams};
use elbo::rng::{seeded, Rng};
use elbo::train::{choose_ops, step_grads_across};

/// One timed iteration and the examples it processes.
type Iter = Box<dyn FnMut()>;

struct TrainState<M: Model> {
    model: M,
    params: NamedParams,
    opt: AdamW,
    cfg: OptimConfig,
    rng: Rng,
    rows: Vec<f32>,
    b: usize,
    d: usize,
    threads: usize,
}

impl<M: Model> TrainState<M> {
    fn new(model: M, rows: Vec<f32>, b: usize, d: usize, threads: usize) -> Self {
        let params = params::collect(&model).expect("parameters");
        let opt = AdamW::new(&params);
        TrainState {
            model,
            params,
            opt,
            cfg: OptimConfig::default(),
            rng: seeded(0),
            rows,
            b,
            d,
            threads,
        }
    }

    /// One full training step, as `elbo train` does it: loss, backward, AdamW, EMA, with the
    /// operations on one thread or all as `elbo train` measures at its start.
    fn iter(mut self) -> Iter {
        let device = Device::flex().autodiff();
        let shards = self.model.train_shards(self.threads);
        let ops = choose_ops(
            &self.model,
            &self.params,
            &self.rows,
            None,
            self.b,
            self.d,
            &device,
            shards,
        )
        .expect("trial steps");
        eprintln!("operations: {ops:?}");
        Box::new(move || {
            let g = step_grads_across(
                &self.model,
                &self.params,
                self.rows.clone(),
                None,
                self.b,
                self.d,
                &device,
                &mut self.rng,
                shards,
                &Solo,
                &[],
                ops,
            )
            .expect("step")
            .grads;
            self.opt.step(&self.cfg, 1e-4, &mut self.params, &g);
            self.model = params::assign(self.model.clone(), &self.params).expect("assign");
        })
    }
}

fn images(b: usize) -> Vec<f32> {
    let ds = elbo::data::load("mnist10k", elbo::data::Split::Train).expect("mnist10k");
    ds.x[..b * 784].to_vec()
}

fn unet_vdm(device: &Device) -> Vdm {
    // The 30-minute benchmark's U-Net (wider than the default), as the PyTorch twin.
    let cfg = VdmConfig {
        network: NetworkKind::Unet,
        unet: elbo::nn::unet::UNetConfig {
            channels: vec![32, 64],
            embed: 64,
            attention: false,
            fourier: false,
            fourier_gate: false,
        },
        // The twin's loss: the continuous-time ELBO on linear γ (images now default to
        // L_simple on the cosine schedule).
        objective: elbo::models::vdm::Objective::Elbo,
        schedule: elbo::diffusion::ScheduleConfig {
            kind: elbo::diffusion::ScheduleKind::LinearGamma,
            ..Default::default()
        },
        ..Default::default()
    };
    let spec = VdmSpec {
        kind: DataKind::Image8,
        shape: vec![1, 28, 28],
        shift: vec![],
        scale: vec![],
        classes: 0,
    };
    device.seed(0);
    Vdm::new(&cfg, spec, device).expect("model")
}

/// (name, examples per iteration, builder)
#[allow(clippy::type_complexity)]
const CASES: &[(&str, &str)] = &[
    (
        "vdm-unet-train",
        "VDM U-Net [32, 64] on 28×28, batch 64: one training step (continuous ELBO, AdamW)",
    ),
    (
        "vdm-unet-sample",
        "VDM U-Net [32, 64], 64 images: one ancestral sampling step (200 per image)",
    ),
    (
        "vdm-mlp-train",
        "VDM MLP (256 wide, 3 blocks) on 2-D data, batch 256: one training step",
    ),
    (
        "vae-train",
        "VAE 784-200-200-50 tanh, batch 128: one training step (analytic-KL ELBO, AdamW)",
    ),
    (
        "vdm-unet-default-train",
        "The default recipe: U-Net [16, 32, 64], L_simple on the cosine schedule, batch 32: one step",
    ),
    (
        "vae-iwae",
        "VAE 784-200-200-50: the importance-weighted bound L_5000 of 16 test images (per image)",
    ),
    (
        "gemm",
        "one 1024 × 1024 × 1024 matrix product in f32 (Burn's matmul; 2.15 GFLOP)",
    ),
];

fn vae_784(device: &Device) -> Vae {
    let spec = VaeSpec {
        obs: Observation::bernoulli(784),
        latent: 50,
    };
    device.seed(0);
    Vae::new(&VaeConfig::default(), spec, device).expect("model")
}

fn binarised(b: usize) -> Vec<f32> {
    images(b)
        .iter()
        .map(|&k| if k > 127.0 { 1.0 } else { 0.0 })
        .collect()
}

fn build(case: &str, threads: usize) -> Option<(Iter, f64)> {
    let ad = Device::flex().autodiff();
    Some(match case {
        "vdm-unet-train" => (
            TrainState::new(unet_vdm(&ad), images(64), 64, 784, threads).iter(),
            64.0,
        ),
        "vdm-unet-sample" => {
            let model = unet_vdm(&Device::flex());
            let mut seed = 0;
            // As `elbo sample` draws: chunks of 16 images over the threads. One sampler step
            // for 64 images; a 200-step sampler makes 64 / (200 × step time) images per second.
            (
                Box::new(move || {
                    seed += 1;
                    let opts = SampleOptions {
                        steps: Some(1),
                        ..SampleOptions::ancestral(seed, threads)
                    };
                    let _ = model.draw(64, &opts, None, &|| ()).expect("sample");
                }),
                64.0 / 200.0,
            )
        }
        "vdm-mlp-train" => {
            let cfg = VdmConfig::default();
            let spec = VdmSpec::unscaled(2);
            ad.seed(0);
            let m = Vdm::new(&cfg, spec, &ad).expect("model");
            let rows = elbo::data::toy::Mixture::named("ring8")
                .expect("toy")
                .sample(256, &mut seeded(2));
            (TrainState::new(m, rows, 256, 2, threads).iter(), 256.0)
        }
        "vae-train" => (
            TrainState::new(vae_784(&ad), binarised(128), 128, 784, threads).iter(),
            128.0,
        ),
        "vdm-unet-default-train" => {
            let spec = VdmSpec {
                kind: DataKind::Image8,
                shape: vec![1, 28, 28],
                shift: vec![],
                scale: vec![],
                classes: 0,
            };
            ad.seed(0);
            // VdmConfig::default() resolved for images: what `elbo train` runs.
            let m = Vdm::new(&VdmConfig::default(), spec, &ad).expect("model");
            (
                TrainState::new(m, images(32), 32, 784, threads).iter(),
                32.0,
            )
        }
        "vae-iwae" => {
            // As `elbo eval --iw 5000` does it: blocks of 4 examples (20,000 / K) spread over
            // one model replica per thread, each block with its own noise stream.
            let d = Device::flex();
            let m = vae_784(&d);
            let rows = binarised(16);
            let mut round = 0u64;
            (
                Box::new(move || {
                    round += 1;
                    let states = elbo::par::replicas(&m, threads, 4);
                    let _ = elbo::par::map_chunks(states, 4, |m, i| {
                        let x = burn::tensor::Tensor::<2>::from_data(
                            burn::tensor::TensorData::new(
                                rows[i * 4 * 784..(i + 1) * 4 * 784].to_vec(),
                                [4, 784],
                            ),
                            &d,
                        );
                        let mut rng = seeded(round * 16 + i as u64);
                        m.importance_weighted(x, 5000, &mut rng)
                            .expect("a VAE has L_K")
                    })
                    .expect("bound");
                }),
                16.0,
            )
        }
        "gemm" => {
            let d = Device::flex();
            let a = burn::tensor::Tensor::<2>::random(
                [1024, 1024],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &d,
            );
            let b = a.clone().transpose();
            (
                Box::new(move || {
                    let _ = a.clone().matmul(b.clone()).into_data();
                }),
                1.0,
            )
        }
        _ => return None,
    })
}

/// The process's peak resident memory (VmHWM), MiB; NaN where /proc is not there.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    // As the elbo binary does (src/main.rs).
    elbo::par::tune_allocator();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let get = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let Some(case) = args.first().filter(|a| !a.starts_with("--")) else {
        eprintln!("usage: cargo bench --bench throughput -- CASE [--iters N] [--warmup W] [--threads T]\ncases:");
        for (n, d) in CASES {
            eprintln!("  {n:<16} {d}");
        }
        std::process::exit(2);
    };
    let (iters, warmup) = (get("--iters", 20), get("--warmup", 3));
    let threads = get("--threads", elbo::par::default_threads());
    let Some((mut step, per_iter)) = build(case, threads) else {
        eprintln!("unknown case '{case}'");
        std::process::exit(2);
    };
    for _ in 0..warmup {
        step();
    }
    let mut times: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            step();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    println!(
        "{}",
        serde_json::json!({"case": case, "impl": "elbo", "median_ms": median * 1e3, "per_sec": per_iter / median, "iters": times.len(), "threads": threads, "peak_rss_mib": peak_rss_mib()})
    );
}
