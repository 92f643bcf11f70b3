//! The command line end to end on tiny budgets, in temporary directories: train → eval --json →
//! sample → resume; exact resume; a NaN stop; and clear errors (never a panic) on bad input.

mod common;

use std::path::Path;

use common::{elbo, fails_with, nll_with_threads, ok};

const TINY: &[&str] = &[
    "--model",
    "vae",
    "--set",
    "vae.hidden=[32]",
    "--set",
    "vae.latent=4",
    "--set",
    "eval_examples=100",
    "--set",
    "eval_every=20",
    "--set",
    "checkpoint_every=20",
    "--set",
    "log_every=10",
    "--set",
    "grid=16",
    "--batch-size",
    "32",
];

fn train(out: &Path, steps: u64, extra: &[&str]) -> String {
    let steps = steps.to_string();
    let mut a = vec![
        "-q",
        "train",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        &steps,
    ];
    a.extend_from_slice(TINY);
    a.extend_from_slice(extra);
    ok(&a)
}

#[test]
fn train_eval_sample_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    train(&run, 40, &[]);
    for f in [
        "config.json",
        "model.json",
        "model.safetensors",
        "checkpoint.json",
        "metrics.jsonl",
        "samples.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    // The committed checkpoint is a folder of its own, and the top-level weights are its.
    let (step, ck) = elbo::run::RunDir::new(&run).committed().unwrap().unwrap();
    assert_eq!(step, 40);
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        assert!(ck.join(f).is_file(), "checkpoint lacks {f}");
    }
    assert_eq!(
        std::fs::read(ck.join("model.safetensors")).unwrap(),
        std::fs::read(run.join("model.safetensors")).unwrap()
    );
    // TensorBoard: one event file whose records all pass their CRCs, holding every number of
    // metrics.jsonl at its step, and the progress grids as PNG images.
    let events: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect();
    assert_eq!(events.len(), 1);
    let ev = elbo::report::tensorboard::read(&events[0].path()).unwrap();
    assert_eq!(ev[0].file_version.as_deref(), Some("brain.Event:2"));
    let metrics = elbo::run::RunDir::new(&run).metrics().unwrap();
    for line in &metrics {
        let step = line["step"].as_i64().unwrap();
        for (tag, want) in elbo::report::tensorboard::scalars(line) {
            let found = ev
                .iter()
                .filter(|e| e.step == step)
                .any(|e| e.values.iter().any(|(t, v)| *t == tag && *v == want));
            assert!(found, "{tag} at step {step} is not in the event file");
        }
    }
    let images: Vec<_> = ev
        .iter()
        .flat_map(|e| e.values.iter())
        .filter_map(|(t, v)| match v {
            elbo::report::tensorboard::Value::Image { png, height, .. } if t == "samples" => {
                Some((png.clone(), *height))
            }
            _ => None,
        })
        .collect();
    assert!(!images.is_empty(), "no sample grid in the event file");
    assert!(images
        .iter()
        .all(|(png, h)| png.starts_with(b"\x89PNG") && *h > 28));
    let r = run.to_str().unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["eval", r, "--json", "--iw", "20", "--limit", "50"])).unwrap();
    for k in [
        "nll_nats",
        "bits_per_binary_pixel",
        "terms",
        "n",
        "split",
        "iw",
    ] {
        assert!(j.get(k).is_some(), "eval --json lacks {k}: {j}");
    }
    // Binarised images are not 8-bit data: no bits/dim that reads like a VDM's.
    assert!(j.get("bits_per_dim").is_none(), "{j}");
    let bpp = j["bits_per_binary_pixel"].as_f64().unwrap();
    let nll0 = j["nll_nats"].as_f64().unwrap();
    assert!((bpp - nll0 / (784.0 * std::f64::consts::LN_2)).abs() < 1e-9);
    assert_eq!(j["n"], 50);
    assert_eq!(j["iw"], 20);
    assert_eq!(j["split"], "test");
    let (nll, elbo_nll) = (
        j["nll_nats"].as_f64().unwrap(),
        j["neg_elbo_nats"].as_f64().unwrap(),
    );
    // −L_20 is a tighter bound than −ELBO (same examples; MC noise is far below the gap here).
    assert!(
        nll < elbo_nll && nll > 50.0,
        "nll {nll} vs −ELBO {elbo_nll}"
    );
    let terms = &j["terms"];
    let sum = terms["reconstruction"].as_f64().unwrap() + terms["prior"].as_f64().unwrap();
    assert!(
        (sum - elbo_nll).abs() < 1e-3 * elbo_nll,
        "terms sum {sum} vs {elbo_nll}"
    );
    // L_500 in chunks of 40 examples spread over threads: the same bound for any thread count.
    let iw = |t| nll_with_threads(t, &["eval", r, "--json", "--iw", "500", "--limit", "50"]);
    assert_eq!(iw(1), iw(2));

    let png = tmp.path().join("s.png");
    ok(&["sample", r, "--n", "9", "--out", png.to_str().unwrap()]);
    let img = image::open(&png).unwrap();
    assert!(img.width() > 3 * 28 && img.height() > 3 * 28);
    let npy = tmp.path().join("s.npy");
    ok(&["sample", r, "--n", "5", "--out", npy.to_str().unwrap()]);
    let a = elbo::data::npy::read_npy(&npy).unwrap();
    assert_eq!((a.rows, a.cols), (5, 784));
    assert!(a.values.iter().all(|v| (0.0..=1.0).contains(v)));

    // Resume to 60 steps: the run continues from 40, and the metrics go on from there.
    let mut a = vec!["-q", "train", "--resume", "--out", r, "--steps", "60"];
    a.extend_from_slice(TINY);
    ok(&a);
    assert_eq!(elbo::run::RunDir::new(&run).state().unwrap().step, 60);
    let inspect = ok(&["inspect", r]);
    assert!(
        inspect.contains("parameters") && inspect.contains("60 of 60"),
        "{inspect}"
    );
    assert!(run.join("training_curve.png").is_file());

    // A resumed run keeps what defines it: changing the data scaling is refused, by name.
    let mut a = vec!["train", "--resume", "--out", r, "--steps", "70"];
    a.extend_from_slice(TINY);
    a.extend_from_slice(&["--set", "scaling=minus-one-one"]);
    fails_with(&a, "'scaling' cannot change");

    // Training into a directory that holds a run, without --resume, is refused.
    let mut a = vec!["train", "--out", r, "--steps", "5"];
    a.extend_from_slice(TINY);
    fails_with(&a, "--resume");
}

#[test]
fn n_steps_then_resume_equals_2n_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // checkpoint_every 20 divides both; 30 is not a multiple, so the stop-at-end checkpoint is used.
    train(&a, 60, &[]);
    train(&b, 30, &[]);
    let br = b.to_str().unwrap();
    let mut args = vec!["-q", "train", "--resume", "--out", br, "--steps", "60"];
    args.extend_from_slice(TINY);
    ok(&args);
    let load = |p: &Path, f: &str| {
        let (_, ck) = elbo::run::RunDir::new(p).committed().unwrap().unwrap();
        elbo::fsio::load_tensors(&ck.join(f)).unwrap().0
    };
    let (wa, wb) = (
        load(&a, "optimizer.safetensors"),
        load(&b, "optimizer.safetensors"),
    );
    assert_eq!(wa.len(), wb.len());
    for (k, v) in &wa {
        assert_eq!(v.data, wb[k].data, "{k} differs after resume");
    }
    assert_eq!(load(&a, "model.safetensors"), load(&b, "model.safetensors"));
}

#[test]
fn nan_loss_stops_naming_the_step_and_keeps_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let mut a = vec!["-q", "train", "--out", r, "--steps", "50"];
    a.extend_from_slice(TINY);
    a.extend_from_slice(&[
        "--set",
        "optim.lr=1e30",
        "--set",
        "optim.warmup_steps=0",
        "--set",
        "checkpoint_every=1",
    ]);
    let o = elbo(&a);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("training stopped at step") && err.contains("not finite"),
        "{err}"
    );
    // The checkpoint is the last good one: one step before the failing step.
    let failed: u64 = err
        .split("at step ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let state = elbo::run::RunDir::new(&run).state().unwrap();
    assert_eq!(state.step, failed - 1);
    // And the message names that checkpoint.
    assert!(
        err.contains(&format!("checkpoint of step {}", failed - 1)),
        "{err}"
    );
}

#[test]
fn bad_files_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let w = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good_idx = elbo::data::idx::encode_idx_u8(&[4, 2, 2], &[7; 16]);
    let mut huge = elbo::data::idx::encode_idx_u8(&[1 << 31, 28, 28], &[]);
    huge.resize(1024, 0);
    let cases: Vec<(String, &str)> = vec![
        (
            format!("idx:{}", w("trunc.idx", &good_idx[..good_idx.len() - 3])),
            "truncated",
        ),
        (
            format!("idx:{}", w("magic.idx", b"\x01\x02\x03\x04rest")),
            "magic",
        ),
        (format!("idx:{}", w("huge.idx", &huge)), "truncated"),
        (format!("idx:{}", w("empty.idx", b"")), "too short"),
        (
            format!("idx:{}", tmp.path().join("missing.idx").display()),
            "No such file",
        ),
        (format!("npy:{}", w("bad.npy", b"not numpy")), "magic"),
        (format!("npy:{}", w("empty.npy", b"")), "magic"),
        (
            format!("csv:{}", w("nan.csv", b"1,2\nnan,3\n")),
            "line 2, column 1",
        ),
        (format!("csv:{}", w("empty.csv", b"")), "no rows"),
        (format!("csv:{}", w("ragged.csv", b"1,2\n3\n")), "columns"),
        ("toy:spiral".to_string(), "unknown toy set"),
        ("parquet:x".to_string(), "unknown kind"),
    ];
    for (spec, want) in &cases {
        fails_with(&["data", spec], want);
    }
    // NaN in npy and IDX float data.
    let mut nan_npy = elbo::data::npy::encode_npy_f32(1, 2, &[1.0, 2.0]);
    let n = nan_npy.len();
    nan_npy[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    fails_with(
        &["data", &format!("npy:{}", w("nan.npy", &nan_npy))],
        "not a finite",
    );
    let mut nan_idx = vec![0, 0, 0x0D, 1, 0, 0, 0, 1];
    nan_idx.extend_from_slice(&f32::NAN.to_be_bytes());
    fails_with(
        &["data", &format!("idx:{}", w("nan.idx", &nan_idx))],
        "not a finite",
    );
    // A good file is read, and its message names the file on error.
    let out = ok(&["data", &format!("idx:{}", w("good.idx", &good_idx))]);
    assert!(out.contains("count   4"), "{out}");
    fails_with(
        &[
            "data",
            &format!("idx:{}", tmp.path().join("trunc.idx").display()),
        ],
        "trunc.idx",
    );
}

#[test]
fn bad_flags_and_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let o = elbo(&["train", "--stepz", "3"]);
    assert_eq!(o.status.code(), Some(2));
    fails_with(
        &[
            "train",
            "--model",
            "vae",
            "--set",
            "vae.latnet=3",
            "--steps",
            "1",
        ],
        "unknown setting 'latnet'",
    );
    fails_with(&["train", "--resume"], "--resume needs --out");
    // A bad thread count in the environment is refused by name before any work starts.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_elbo"))
        .args(["data", "toy:ring8"])
        .env("ELBO_THREADS", "many")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("ELBO_THREADS=\"many\""), "{err}");
    fails_with(
        &[
            "train",
            "--set",
            "vdm.unet.channels=[]",
            "--steps",
            "1",
            "--out",
            tmp.path().join("u").to_str().unwrap(),
        ],
        "vdm.unet.channels",
    );
    fails_with(
        &["eval", tmp.path().to_str().unwrap()],
        "not a run directory",
    );
    fails_with(&["eval", "/nonexistent/run"], "no such run directory");
    let cfg = tmp.path().join("c.toml");
    std::fs::write(&cfg, "steps = \"many\"\n").unwrap();
    fails_with(&["train", "--config", cfg.to_str().unwrap()], "c.toml");
    let o = elbo(&["train", "--steps", "0"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a bad flag value is a usage error"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("--steps"));
    fails_with(
        &["train", "--set", "optim.lr=-1", "--steps", "1"],
        "optim.lr",
    );
    fails_with(
        &[
            "train",
            "--device",
            "cuda",
            "--steps",
            "1",
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ],
        "CUDA",
    );
}

#[test]
fn continuous_data_vae_reports_nats_per_dim_and_true_nll() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("toy");
    let r = run.to_str().unwrap();
    ok(&[
        "-q",
        "train",
        "--model",
        "vae",
        "--data",
        "toy:blobs2",
        "--steps",
        "1500",
        "--batch-size",
        "128",
        "--out",
        r,
        "--set",
        "eval_every=100000",
    ]);
    let eval = |extra: &[&str]| -> serde_json::Value {
        let mut a = vec!["eval", r, "--json", "--limit", "2000"];
        a.extend_from_slice(extra);
        serde_json::from_str(&ok(&a)).unwrap()
    };
    let j = eval(&[]);
    assert!(
        j.get("nats_per_dim").is_some() && j.get("bits_per_dim").is_none(),
        "{j}"
    );
    let (nll, se, gap) = (
        j["nll_nats"].as_f64().unwrap(),
        j["nll_se"].as_f64().unwrap(),
        j["gap_nats"].as_f64().unwrap(),
    );
    assert!((j["nats_per_dim"].as_f64().unwrap() - nll / 2.0).abs() < 1e-12);
    // After 1,500 steps the −ELBO of this 2-D mixture is within 0.3 nats of its true NLL
    // (measured 0.14; the data's standardisation Jacobian alone is 0.5 nats, so dropping it
    // fails), and an upper bound is not below the truth beyond noise (se ≈ 0.03).
    assert!(gap < 0.3 && gap > -4.0 * se, "gap {gap} (se {se})");
    // L_100 is tighter than the ELBO, and still a bound.
    let k = eval(&["--iw", "100"]);
    let gap_k = k["gap_nats"].as_f64().unwrap();
    assert!(
        gap_k < gap && gap_k > -4.0 * se,
        "L_100 gap {gap_k} vs ELBO gap {gap}"
    );
    ok(&["sample", r, "--n", "100"]);
    assert!(run.join("samples.png").is_file());
}

#[test]
fn dequantised_images_train_as_continuous_and_report_bits_per_dim() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("deq");
    let r = run.to_str().unwrap();
    train(&run, 300, &["--set", "dequantize=true"]);
    let mf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("model.json")).unwrap()).unwrap();
    assert_eq!(mf["data"]["dequantized"], true);
    assert_eq!(
        mf["spec"]["likelihood"], "gaussian",
        "a dequantised image is continuous data"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["eval", r, "--json", "--limit", "20"])).unwrap();
    let (bpd, nll) = (
        j["bits_per_dim"].as_f64().unwrap(),
        j["nll_nats"].as_f64().unwrap(),
    );
    assert!((bpd - nll / (784.0 * std::f64::consts::LN_2)).abs() < 1e-9);
    // The standardisation's log-Jacobian, Σ log₂ scale / D, is part of the bound.
    let scale: Vec<f64> = mf["spec"]["scale"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let shift = scale.iter().map(|s| s.log2()).sum::<f64>() / scale.len() as f64;
    // A density on [0, 256)^784 after 300 steps: measured 4.85 bits/dim, better than the uniform
    // density's 8. The Jacobian term is ≈ 4 bits/dim here: a bound that dropped it (≈ 0.9) or
    // counted it twice (≈ 8.8) falls outside [2.5, 6.5].
    assert!(shift > 3.0, "Jacobian {shift} bits/dim");
    assert!(bpd > 2.5 && bpd < 6.5, "{bpd}");
    ok(&["sample", r, "--n", "4"]);
}

#[test]
fn the_top_level_help_names_the_run_directory_the_default_run_writes() {
    // The help says where `elbo train` puts its run; that must be where it really goes.
    let help = ok(&["--help"]);
    let kind = elbo::models::ModelKind::default();
    // `default_run_dir` gives the first free runs/<model>-<data>-N; in a fresh checkout, -1.
    let dir = elbo::run::default_run_dir(kind, "mnist10k");
    let prefix = format!("runs/{kind}-mnist10k-");
    assert!(dir.to_string_lossy().starts_with(&prefix), "{dir:?}");
    let name = format!("{prefix}1");
    assert!(
        help.contains(&format!("elbo eval {name}")),
        "{name} not in:\n{help}"
    );
    assert!(help.contains("Limits, checked before any work"), "{help}");
}

#[test]
fn version_names_the_git_revision_and_completions_name_every_subcommand() {
    let v = ok(&["--version"]);
    assert!(
        v.starts_with(&format!("elbo {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    // In a git checkout the revision is the checked-out commit's.
    if let Some(rev) = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
    {
        let rev = String::from_utf8_lossy(&rev.stdout).trim().to_string();
        assert!(v.contains(&format!("(git {rev}")), "{v} lacks {rev}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&["completions", shell]);
        for sub in [
            "train", "eval", "sample", "data", "inspect", "schedule", "quality",
        ] {
            assert!(script.contains(sub), "{shell} completions lack {sub}");
        }
        assert!(
            script.contains("max-minutes"),
            "{shell}: flags of subcommands"
        );
    }
    // An unknown shell is a usage error (clap's exit code 2), with the choices named.
    let o = elbo(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bash"));
}

#[test]
fn a_fresh_run_is_not_reported_as_an_interrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fresh");
    let o = elbo(&[
        "-q",
        "train",
        "--model",
        "vae",
        "--steps",
        "2",
        "--set",
        "grid=0",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        !err.contains("stopped before its first checkpoint"),
        "{err}"
    );
}

#[test]
fn no_eval_stops_when_training_ends_and_eval_works_later() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let r = out.to_str().unwrap();
    let o = elbo(&[
        "-q",
        "train",
        "--model",
        "vae",
        "--steps",
        "2",
        "--no-eval",
        "--out",
        r,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // No bound printed, no grid written; the checkpoint is there and `elbo eval` reads it.
    assert!(
        !err.contains("NLL bound") && !out.join("samples.png").exists(),
        "{err}"
    );
    assert!(err.contains(&format!("elbo eval {r}")), "{err}");
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["eval", r, "--json", "--limit", "8"])).unwrap();
    assert!(j["nll_nats"].as_f64().unwrap().is_finite());
}

#[test]
fn the_quoted_default_run_time_belongs_to_the_default_recipe() {
    // The help and the README quote a measured time of the default run (BENCHMARKS.md §14). It
    // was measured with exactly this recipe; a change of the defaults must come with a new
    // measurement (then update the quote in src/cli/mod.rs, README.md and this snapshot).
    let mut cfg = elbo::run::RunConfig::default();
    cfg.resolve_for_data(elbo::data::DataKind::Image8);
    let recipe = serde_json::json!({
        "model": cfg.model.kind().name(),
        "data": cfg.data,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "section": cfg.model.section().unwrap(),
    });
    let measured = r#"{"batch_size":32,"data":"mnist10k","model":"vdm","section":{"clip_x0":true,"conditional":false,"decoder":"softmax","elbo_weight":0.003,"mlp":{"blocks":3,"embed":64,"hidden":256},"network":"auto","objective":"simple","p_uncond":0.1,"prediction":"eps","process":"variance-preserving","proposal":"uniform","sample_grid":"schedule","sample_steps":200,"sampler":"ancestral","schedule":{"gamma_max":6.0,"gamma_min":-13.3,"kind":"cosine-log-snr","steps":1000},"schedule_units":64,"t_steps":0,"unet":{"attention":false,"channels":[16,32,64],"embed":32,"fourier":true,"fourier_gate":true},"weighting_shift":2.0},"steps":5000}"#;
    assert_eq!(
        recipe.to_string(),
        measured,
        "the default recipe changed: re-time the default run (BENCHMARKS.md §14)"
    );
    let quote = "about 9 minutes on 2 cores";
    let help = ok(&["--help"]);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(help.contains(quote), "{help}");
    assert!(readme.contains(quote));
}
