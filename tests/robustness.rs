//! Nothing lost, nothing overwritten, nothing aborted: crash injection at every durable step of
//! checkpoint writing, one process per run directory, SIGTERM, a user's directory, and sizes
//! refused before work under a bounded address space.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bounded, elbo, fails_with, ok};
use elbo::fsio::load_tensors;
use elbo::run::RunDir;

/// A small, fast, deterministic run: a VAE on a 2-D mixture, one thread.
const RUN: &[&str] = &[
    "--model",
    "vae",
    "--data",
    "toy:blobs2",
    "--batch-size",
    "64",
    "--set",
    "vae.hidden=[16]",
    "--set",
    "vae.latent=2",
    "--set",
    "threads=1",
    "--set",
    "grid=0",
    "--set",
    "eval_every=1000000",
    "--set",
    "eval_examples=50",
    "--set",
    "log_every=1",
    "--set",
    "checkpoint_every=2",
];

fn train_cmd(out: &Path, steps: u64, resume: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_elbo"));
    c.args(["-q", "train", "--out", out.to_str().unwrap(), "--steps"])
        .arg(steps.to_string())
        .args(RUN)
        .env("NO_COLOR", "1")
        .env_remove("ELBO_CRASH_AT");
    if resume {
        c.arg("--resume");
    }
    c
}

/// Every tensor of the committed checkpoint (raw weights, moments, EMA) and the EMA weights.
fn committed_tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let (_, ck) = RunDir::new(dir).committed().unwrap().unwrap();
    let mut out = Vec::new();
    for f in ["optimizer.safetensors", "model.safetensors"] {
        for (k, v) in load_tensors(&ck.join(f)).unwrap().0 {
            out.push((format!("{f}:{k}"), v.data));
        }
    }
    out
}

fn training_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect()
}

#[test]
fn every_crash_point_of_a_checkpoint_resumes_bit_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let o = train_cmd(&reference, 6, false).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = committed_tensors(&reference);
    assert_eq!(training_steps(&reference), (1..=6).collect::<Vec<_>>());

    // Kill the run at the n-th durable step of checkpoint writing (files, renames, links,
    // removals; from the run directory's mark to the last checkpoint), then resume it: every
    // point must resume and end where the uninterrupted run ended, bit for bit.
    let mut points = 0;
    for n in 1.. {
        let dir = tmp.path().join(format!("crash{n}"));
        let o = train_cmd(&dir, 6, false)
            .env("ELBO_CRASH_AT", n.to_string())
            .output()
            .unwrap();
        if o.status.success() {
            break; // n is past the last point
        }
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGKILL),
            "point {n}: not killed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        points += 1;
        let r = train_cmd(&dir, 6, true).output().unwrap();
        assert!(
            r.status.success(),
            "point {n}: resume failed:\n{}",
            String::from_utf8_lossy(&r.stderr)
        );
        let got = committed_tensors(&dir);
        assert_eq!(got.len(), want.len(), "point {n}");
        for ((k, a), (_, b)) in want.iter().zip(&got) {
            assert_eq!(a, b, "point {n}: {k} differs from the uninterrupted run");
        }
        // The metrics go on from the checkpoint: every step once, in order.
        assert_eq!(
            training_steps(&dir),
            (1..=6).collect::<Vec<_>>(),
            "point {n}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!("{points} crash points exercised");
    // Four checkpoints (steps 0, 2, 4, 6) and the run's own files: dozens of points.
    assert!(points >= 30, "only {points} crash points were exercised");
}

/// Wait until `f` holds or `secs` pass.
fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_second_process_is_refused_and_sigterm_saves_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let first = train_cmd(&dir, 100_000_000, false)
        .args(["--set", "checkpoint_every=100000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    assert!(
        wait_for(60, || RunDir::new(&dir)
            .committed()
            .ok()
            .flatten()
            .is_some()),
        "the first training never committed its step-0 checkpoint"
    );
    // While it trains: another training, or a resume, of the same directory fails at once and
    // names the holder.
    for resume in [false, true] {
        let t0 = Instant::now();
        let o = train_cmd(&dir, 10, resume).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("in use by another elbo process (PID {pid})")),
            "{err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    // Let it train a little, then stop it as a scheduler would: it saves and exits 143.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let out = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(err.contains("terminated (SIGTERM)"), "{err}");
    let step = RunDir::new(&dir).state().unwrap().step;
    assert!(step > 0, "the checkpoint at SIGTERM is at step {step}");
    // It resumes from there and finishes intact.
    let o = train_cmd(&dir, step + 5, true).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(RunDir::new(&dir).state().unwrap().step, step + 5);
    let steps = training_steps(&dir);
    assert_eq!(steps, (1..=step + 5).collect::<Vec<_>>());
}

#[test]
fn a_users_directory_is_never_written_into() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("mine");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("config.json"), "mine\n").unwrap();
    let out = d.to_str().unwrap();
    for resume in [false, true] {
        let mut a = vec!["train", "--out", out, "--steps", "2"];
        if resume {
            a.push("--resume");
        }
        a.extend_from_slice(RUN);
        let o = elbo(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let mut a = vec!["train", "--out", out, "--steps", "2"];
    a.extend_from_slice(RUN);
    fails_with(&a, "is not an elbo run directory (it holds config.json)");
    assert_eq!(
        std::fs::read_to_string(d.join("config.json")).unwrap(),
        "mine\n"
    );
    let names: Vec<_> = std::fs::read_dir(&d).unwrap().flatten().collect();
    assert_eq!(
        names.len(),
        1,
        "something was written into the user's directory"
    );
    // A finished run is not trained over without --resume either.
    let run = tmp.path().join("run");
    let o = train_cmd(&run, 2, false).output().unwrap();
    assert!(o.status.success());
    let mut a = vec!["train", "--out", run.to_str().unwrap(), "--steps", "4"];
    a.extend_from_slice(RUN);
    fails_with(&a, "already holds a run (at step 2)");
    // --steps below the run's step is refused; a resume with --config applies what may change
    // and refuses what may not, by name.
    let mut a = vec![
        "train",
        "--resume",
        "--out",
        run.to_str().unwrap(),
        "--steps",
        "1",
    ];
    a.extend_from_slice(RUN);
    fails_with(&a, "below the run's step 2");
    let good = tmp.path().join("good.toml");
    std::fs::write(&good, "steps = 4\n[optim]\nlr = 0.0005\n").unwrap();
    let g = good.to_str().unwrap();
    ok(&[
        "-q",
        "train",
        "--resume",
        "--out",
        run.to_str().unwrap(),
        "--config",
        g,
    ]);
    let cfg = RunDir::new(&run).config().unwrap();
    assert_eq!((cfg.steps, cfg.optim.lr), (4, 0.0005));
    assert_eq!(RunDir::new(&run).state().unwrap().step, 4);
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "steps = 6\nseed = 9\n").unwrap();
    fails_with(
        &[
            "train",
            "--resume",
            "--out",
            run.to_str().unwrap(),
            "--config",
            bad.to_str().unwrap(),
        ],
        "'seed' cannot change",
    );
}

#[test]
fn absurd_sizes_are_refused_at_once_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let vdm = tmp.path().join("vdm");
    let vae = tmp.path().join("vae");
    let v = vdm.to_str().unwrap();
    let a = vae.to_str().unwrap();
    ok(&[
        "-q",
        "train",
        "--out",
        v,
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--set",
        "vdm.unet.channels=[8,16]",
        "--set",
        "vdm.unet.embed=8",
        "--set",
        "grid=0",
        "--set",
        "eval_examples=8",
    ]);
    ok(&[
        "-q", "train", "--out", a, "--steps", "2", "--model", "vae", "--set", "grid=0",
    ]);
    let npy = tmp.path().join("x.npy");
    let n = npy.to_str().unwrap();
    // The limit the test holds them to: 2 GiB of address space (a normal evaluation or sampling
    // of these runs fits in it), and a second.
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["sample", v, "--n", "100000000"],
            "a grid of 100000000 images",
        ),
        // 3 TB of samples: more than the disk holds, refused before a byte is written.
        (vec!["sample", a, "--n", "1000000000", "--out", n], "free"),
        // Weeks of sampling (or, on a small disk, more than it holds).
        (
            vec!["sample", v, "--n", "5000000", "--out", n],
            "would take about|free",
        ),
        (
            vec!["sample", v, "--steps", "10000000000"],
            "--steps 10000000000",
        ),
        (vec!["sample", v, "--n", "20000"], "a grid of 20000 images"),
        (
            vec!["eval", v, "--t-samples", "1000000000"],
            "--t-samples 1000000000",
        ),
        (vec!["eval", a, "--iw", "1000000000"], "would take about"),
        (
            vec!["schedule", "--kind", "cosine", "--steps", "1000000000"],
            "a table of 1000000000 rows",
        ),
    ];
    for (args, want) in &cases {
        let (o, t) = bounded(2, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(want.split('|').any(|w| err.contains(w)), "{args:?}: {err}");
        assert!(t < Duration::from_secs(1), "{args:?} took {t:?}");
        assert!(!npy.exists() && !tmp.path().join("x.npy.partial").exists());
    }
    // The same machine and limit draw and evaluate normally.
    let (o, _) = bounded(2, &["sample", v, "--n", "4", "--steps", "2", "--out", n]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A model.json edited to claim 10⁹-dimensional data: refused by the stored shapes, before a
    // model of that size exists.
    let mf = vae.join("model.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&mf).unwrap()).unwrap();
    m["spec"]["data_dim"] = serde_json::json!(1_000_000_000u64);
    std::fs::write(&mf, m.to_string()).unwrap();
    for args in [vec!["eval", a], vec!["sample", a, "--n", "2"]] {
        let (o, t) = bounded(2, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("stored [784, 200]"), "{err}");
        assert!(t < Duration::from_secs(1), "{args:?} took {t:?}");
    }
    // A batch larger than the data is clamped, and the run records what it used.
    let c = tmp.path().join("clamped");
    let o = elbo(&[
        "-q",
        "train",
        "--out",
        c.to_str().unwrap(),
        "--steps",
        "1",
        "--model",
        "vae",
        "--data",
        "toy:blobs2",
        "--batch-size",
        "100000",
        "--set",
        "grid=0",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.contains("using 20000"), "{err}");
    assert_eq!(RunDir::new(&c).config().unwrap().batch_size, 20_000);
}
