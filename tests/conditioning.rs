//! Conditioning end to end: a class-conditional diffusion model trained on labelled data must
//! explain a point better given its own label than given another (M41–M43).

use std::sync::atomic::AtomicBool;

use burn::tensor::{Device, Tensor, TensorData};
use elbo::data::{self, Split};
use elbo::diffusion::elbo::ElboOptions;
use elbo::elbo::Stat;
use elbo::models::vdm::Vdm;
use elbo::models::ModelConfig;
use elbo::rng::seeded;
use elbo::train::run::RunDir;
use elbo::train::{self, RunConfig, TrainOptions};

#[test]
fn a_conditional_mlp_denoiser_prefers_the_right_label() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cond");
    let mut cfg = RunConfig::default();
    for s in [
        "data=toy:blobs2",
        "steps=1500",
        "batch_size=256",
        "eval_every=1500",
        "eval_examples=100",
        "checkpoint_every=1500",
        "threads=1",
        "vdm.conditional=true",
        "vdm.mlp.hidden=64",
        "vdm.mlp.blocks=2",
        "optim.ema_decay=0.99",
    ] {
        cfg.set(s).unwrap();
    }
    let stop = AtomicBool::new(false);
    let opts = TrainOptions {
        out: &out,
        resume: false,
        stop: &stop,
        progress: false,
        device: Device::flex().autodiff(),
        note: &|_| {},
    };
    train::train(&cfg, &opts).unwrap();

    let ModelConfig::Vdm(section) = &cfg.model else {
        panic!("not a VDM")
    };
    let dev = Device::flex();
    let l = train::load_model::<Vdm>(&RunDir::new(&out), section, &dev).unwrap();
    assert_eq!(l.spec.classes, 2, "blobs2 has two components");
    let ds = data::load("toy:blobs2", Split::Test).unwrap().head(500);
    let y = ds.labels.clone().unwrap();
    let wrong: Vec<u32> = y.iter().map(|&c| 1 - c).collect();
    let x = Tensor::<2>::from_data(TensorData::new(ds.x.clone(), [ds.n, 2]), &dev);
    let opts = ElboOptions {
        t_steps: None,
        t_samples: 16,
        ..Default::default()
    };
    let nll = |labels: Option<&[u32]>| -> Vec<f64> {
        // The same noise for every labelling: a paired comparison.
        let e = l
            .model
            .estimate(x.clone(), opts.clone(), labels, &mut seeded(3))
            .unwrap();
        elbo::elbo::to_f64(e.recon + e.prior + e.diffusion).unwrap()
    };
    let (right, bad, null) = (nll(Some(&y)), nll(Some(&wrong)), nll(None));
    let diff: Vec<f64> = bad.iter().zip(&right).map(|(b, r)| b - r).collect();
    let d = Stat::of(&diff);
    let (r, n) = (Stat::of(&right), Stat::of(&null));
    eprintln!(
        "−ELBO given the right label {r:?}, the wrong one {:?}, none {n:?}",
        Stat::of(&bad)
    );
    // The two blobs are 2.2 apart with sds 0.3 and 0.6: log p(x | own) − log p(x | other) is
    // several nats for most points. A model that ignored the label would give 0 ± noise.
    assert!(d.mean > 1.0 && d.mean > 10.0 * d.se, "wrong − right: {d:?}");
    // The null class is the unconditional model: −log p(x) = −log p(x | y) + log p(y | x) − log p(y),
    // above the right-label bound by about −log p(y) (0.36 or 1.2 nats) where the label is clear.
    assert!(
        n.mean > r.mean - 4.0 * n.se.max(r.se),
        "null {n:?} vs right {r:?}"
    );
}
