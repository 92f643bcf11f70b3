//! Train a VAE on the embedded mnist10k digits through the library, then evaluate its bound on
//! the test split, term by term. About a minute on 2 cores:
//!
//!     cargo run --release --example train_vae [STEPS]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use burn::tensor::Device;
use elbo::eval::{evaluate, EvalOptions};
use elbo::models::ModelKind;
use elbo::progress::Progress;
use elbo::run::RunConfig;
use elbo::run::RunDir;
use elbo::train::{train, TrainOptions};

/// Progress as a line every tenth of the way (the command line draws a bar instead).
#[derive(Default)]
struct Lines {
    total: AtomicU64,
    done: AtomicU64,
    msg: Mutex<String>,
}

impl Progress for Lines {
    fn start(&self, _what: &str, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }
    fn set_position(&self, pos: u64) {
        self.done.store(pos, Ordering::Relaxed);
    }
    fn message(&self, msg: &str) {
        if let Ok(mut m) = self.msg.lock() {
            *m = msg.to_string();
        }
    }
    fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        let total = self.total.load(Ordering::Relaxed).max(1);
        if done % (total / 10).max(1) == 0 {
            let m = self.msg.lock().map(|m| m.clone()).unwrap_or_default();
            eprintln!("step {done}/{total}: {m}");
        }
    }
}

fn main() -> elbo::Result<()> {
    let steps: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let mut cfg = RunConfig::default();
    cfg.set_model(ModelKind::Vae);
    cfg.data = "mnist10k".into();
    cfg.steps = steps;
    cfg.set("vae.latent=16")?;
    cfg.resolve();
    cfg.resolve_for_data(elbo::data::DataKind::Image8);

    let out = std::env::temp_dir().join(format!("elbo-example-vae-{}", std::process::id()));
    let stop = AtomicBool::new(false);
    let done = train(
        &cfg,
        &TrainOptions {
            out: &out,
            resume: false,
            stop: &stop,
            progress: &Lines::default(),
            device: Device::flex().autodiff(),
            note: &|m| eprintln!("{m}"),
            force: false,
            comm: &elbo::comm::Solo,
            devices: vec![],
        },
    )?;
    println!(
        "trained {} steps ({:.0} examples/s)",
        done.step, done.examples_per_sec
    );

    let e = evaluate(&RunDir::new(&out), &EvalOptions::default(), &())?;
    for (term, v) in &e.report.terms {
        println!("{term:>16}: {v:9.3} nats");
    }
    println!(
        "−ELBO {:.2} ± {:.2} nats per image ({:.4} bits per binary pixel), in {}",
        e.report.neg_elbo_nats,
        e.report.neg_elbo_se,
        e.report.per_dim(),
        out.display()
    );
    Ok(())
}
