//! The GPU route (`--features cuda`), for the first machine that has one: `bench/gpu_check.sh`
//! runs this file there. Without the feature, or without an NVIDIA GPU (`nvidia-smi -L` lists
//! none), each test says `skipped: <name> (<why>)` on stderr and passes: these tests have not run
//! on a GPU yet (README, "GPUs").
//!
//! Tolerances: the GPU's kernels sum in other orders than the CPU's (and may use TF32 or fused
//! multiply-adds), so a number agrees to float32 rounding amplified by the computation, not to
//! the bit: a held-out bound of thousands of nats to 1e-3 relative, parameters after three Adam
//! steps to 1e-3 absolute (an Adam step moves a parameter by about lr = 1e-4..2e-3, so a wrong
//! shard, noise or weighting moves some parameter by more than that).

mod common;

/// A line on the terminal even when the test harness captures output (it captures only the
/// print macros): a skipped test says so by name.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

use std::path::Path;
use std::process::Command;

fn gpus() -> usize {
    Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count()
        })
        .unwrap_or(0)
}

/// Why the test cannot run here, if it cannot.
fn skip(name: &str, need: usize) -> bool {
    let why = if !cfg!(feature = "cuda") {
        Some("built without --features cuda".to_string())
    } else if gpus() < need {
        Some(format!(
            "needs {need} NVIDIA GPU(s), nvidia-smi lists {}",
            gpus()
        ))
    } else {
        None
    };
    if let Some(w) = &why {
        say!("skipped: {name} ({w})");
    }
    why.is_some()
}

const RUN: &[&str] = &[
    "-q",
    "train",
    "--model",
    "vdm",
    "--steps",
    "3",
    "--batch-size",
    "8",
    "--seed",
    "5",
    "--set",
    "vdm.unet.channels=[8,16]",
    "--set",
    "vdm.unet.embed=16",
    "--set",
    "eval_examples=8",
    "--set",
    "grid=0",
    "--no-eval",
];

fn train(out: &Path, device: &[&str], threads: usize) {
    let mut a: Vec<&str> = device.to_vec();
    a.extend_from_slice(RUN);
    a.extend_from_slice(&["--out", out.to_str().unwrap()]);
    common::ok_threads(threads, &a);
}

fn params(dir: &Path) -> elbo::params::NamedParams {
    elbo::run::RunDir::new(dir).load_checkpoint().unwrap().0
}

fn largest_difference(a: &elbo::params::NamedParams, b: &elbo::params::NamedParams) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .flat_map(|(k, p)| p.data.iter().zip(&b[k].data).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

fn nll(dir: &Path, device: &str) -> f64 {
    let j: serde_json::Value = serde_json::from_str(&common::ok(&[
        "--device",
        device,
        "eval",
        dir.to_str().unwrap(),
        "--json",
        "--limit",
        "32",
        "--t-samples",
        "4",
    ]))
    .unwrap();
    j["nll_nats"].as_f64().unwrap()
}

#[test]
fn a_run_trained_on_the_gpu_matches_the_cpu() {
    if skip("a_run_trained_on_the_gpu_matches_the_cpu", 1) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cpu, gpu) = (tmp.path().join("cpu"), tmp.path().join("gpu"));
    // One shard on each side (one thread): the same rows and noise.
    train(&cpu, &["--device", "cpu"], 1);
    train(&gpu, &["--device", "cuda"], 1);
    let d = largest_difference(&params(&cpu), &params(&gpu));
    assert!(d < 1e-3, "parameters after 3 steps differ by {d}");
    let (a, b) = (nll(&cpu, "cpu"), nll(&cpu, "cuda"));
    assert!(
        (a - b).abs() < 1e-3 * a.abs(),
        "bound {a} on the CPU, {b} on the GPU"
    );
}

#[test]
fn two_gpus_sum_their_gradients_like_two_cpu_shards() {
    if skip("two_gpus_sum_their_gradients_like_two_cpu_shards", 2) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (cpu, gpus) = (tmp.path().join("cpu2"), tmp.path().join("gpu2"));
    // Two shards each side: two CPU threads, or two GPUs whose gradients Burn's all_reduce sums.
    train(&cpu, &["--device", "cpu"], 2);
    train(&gpus, &["--device", "cuda", "--devices", "2"], 1);
    let d = largest_difference(&params(&cpu), &params(&gpus));
    assert!(d < 1e-3, "parameters after 3 steps differ by {d}");
}

#[test]
fn several_devices_on_the_cpu_are_refused() {
    // Runs everywhere: the CPU has one device and says what to use instead.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let mut a = vec!["--devices", "2"];
    a.extend_from_slice(RUN);
    a.extend_from_slice(&["--out", out.to_str().unwrap()]);
    common::fails_with(&a, "needs GPUs (--device cuda)");
}
