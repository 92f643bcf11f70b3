//! Data-parallel training under MPI (`--features mpi`): `mpirun -np 2 elbo train` is the run one
//! process makes with the same shards, a resume under another process count is refused, and a
//! binary built without the feature refuses an MPI launch instead of training twice.
//!
//! The two-rank test needs the feature and an `mpirun` on the PATH; without them it says
//! `skipped: <name> (<why>)` on stderr and passes. `.ci/run` installs Open MPI and runs this file
//! again with the feature when it can.

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

use common::{elbo, ok_threads};

/// A tiny U-Net VDM (whose steps split into one shard per thread) on mnist10k with an adaptive
/// proposal of noise levels, so the draws gathered from the ranks are tested as well.
const RUN: &[&str] = &[
    "train",
    "--model",
    "vdm",
    "--batch-size",
    "8",
    "--seed",
    "3",
    "--set",
    "vdm.unet.channels=[8]",
    "--set",
    "vdm.unet.embed=8",
    "--set",
    "vdm.objective=elbo",
    "--set",
    "vdm.proposal=adaptive",
    "--set",
    "eval_examples=8",
    "--set",
    "eval_every=1000",
    "--set",
    "grid=0",
    "--set",
    "vdm.sample_steps=2",
    "--no-eval",
];

fn args<'a>(out: &'a str, steps: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = vec!["-q"];
    v.extend_from_slice(RUN);
    v.extend_from_slice(&["--out", out, "--steps", steps]);
    v.extend_from_slice(extra);
    v
}

/// `mpirun`, if there is one, with what Open MPI needs in a container run as root.
fn mpirun() -> Option<Command> {
    let v = Command::new("mpirun").arg("--version").output().ok()?;
    let open_mpi = String::from_utf8_lossy(&v.stdout).contains("Open MPI");
    let mut c = Command::new("mpirun");
    if open_mpi {
        c.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
            .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    }
    Some(c)
}

fn mpi_train(np: usize, a: &[&str]) -> std::process::Output {
    let mut c = mpirun().expect("mpirun");
    c.args(["-np", &np.to_string(), env!("CARGO_BIN_EXE_elbo")])
        .args(a)
        .env("NO_COLOR", "1")
        .env("ELBO_THREADS", "1")
        .output()
        .expect("mpirun runs")
}

/// Every parameter, the optimiser's moments and the RNG state of the run's last checkpoint.
fn checkpoint(dir: &Path) -> (elbo::params::NamedParams, elbo::run::TrainState) {
    let (p, _, s) = elbo::run::RunDir::new(dir).load_checkpoint().unwrap();
    (p, s)
}

#[test]
fn two_mpi_ranks_reproduce_one_process_with_the_same_shards() {
    let name = "two_mpi_ranks_reproduce_one_process_with_the_same_shards";
    if !cfg!(feature = "mpi") {
        say!("skipped: {name} (built without --features mpi)");
        return;
    }
    if mpirun().is_none() {
        say!("skipped: {name} (no mpirun on the PATH)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    let (one_s, two_s) = (one.to_str().unwrap(), two.to_str().unwrap());
    // One process, two threads: the batch of 8 in two shards of 4, six steps.
    ok_threads(2, &args(one_s, "6", &[]));
    // Two ranks of one thread each: the same two shards, one per rank; four steps, then a
    // resume under mpirun for two more.
    for (steps, extra) in [("4", vec![]), ("6", vec!["--resume"])] {
        let o = mpi_train(2, &args(two_s, steps, &extra));
        assert!(
            o.status.success(),
            "mpirun -np 2 elbo train (to step {steps}) failed:\n{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (p1, s1) = checkpoint(&one);
    let (p2, s2) = checkpoint(&two);
    assert_eq!((s1.step, s2.step), (6, 6));
    assert_eq!(s2.ranks, 2);
    // The data order, the training noise's generator and the adaptive proposal's state are
    // the same values, not merely close.
    assert_eq!(
        serde_json::to_value(&s1.rng).unwrap(),
        serde_json::to_value(&s2.rng).unwrap()
    );
    assert_eq!(s1.model_state, s2.model_state);
    // Tolerance. Each rank computes its shard as the one process's thread does (the same rows,
    // noise seed and weight n/B); the only new arithmetic is the all-reduce, which with two
    // ranks adds the same two f32 numbers (a + b = b + a exactly). The runs are then expected
    // to agree to the bit; the bound allows one rounding of the sum per step to be amplified
    // by Adam's normalisation (|Δθ| ≲ lr · |Δg| / √v ≤ lr · 2⁻²³ per step over 6 steps at
    // lr ≤ 2e-3: below 2e-9), so 1e-6 absolute is far above any rounding and far below a
    // difference in the data, noise or weighting (such a difference moves a parameter by about
    // lr = 1e-4 or more in one Adam step).
    let mut worst = 0f32;
    assert_eq!(p1.keys().collect::<Vec<_>>(), p2.keys().collect::<Vec<_>>());
    for (k, a) in &p1 {
        for (x, y) in a.data.iter().zip(&p2[k].data) {
            worst = worst.max((x - y).abs());
        }
    }
    eprintln!("{name}: largest parameter difference after 6 steps: {worst:e}");
    assert!(worst <= 1e-6, "parameters differ by {worst}");

    // A resume under another number of processes is refused, naming how the run was trained.
    let o = elbo(&args(two_s, "8", &["--resume"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("mpirun -np 2"), "{err}");
}

#[test]
fn an_mpi_launch_of_a_binary_without_mpi_is_refused() {
    if cfg!(feature = "mpi") {
        // With the feature this environment starts MPI; the test above covers that build.
        say!("skipped: an_mpi_launch_of_a_binary_without_mpi_is_refused (built with mpi)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = Command::new(env!("CARGO_BIN_EXE_elbo"))
        .args(args(out.to_str().unwrap(), "1", &[]))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--features mpi") && err.contains("2 ranks"),
        "{err}"
    );
    // Nothing was trained or written.
    assert!(!out.exists());
}
