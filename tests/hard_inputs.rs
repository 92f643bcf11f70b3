//! Hard inputs, one regression test per case: sizes that nobody checked (each once allocated
//! gigabytes to terabytes and aborted), inputs that hung, paths a user owns that were lost or
//! changed, and messages that misled. Every refusal is a clear error (exit 1, never a panic or
//! an abort) that arrives in under a second and leaves what the user had as it was.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bounded, elbo, ok};

/// A refusal: exit code 1, the message contains one of `want` (separated by `|`), no panic,
/// in under a second, in 2 GiB of address space (so nothing large was allocated).
fn refused_at_once(args: &[&str], want: &str) -> String {
    let (o, t) = bounded(2, args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "elbo {args:?}: {err}");
    assert!(
        want.split('|').any(|w| err.contains(w)),
        "elbo {args:?}: the message lacks '{want}':\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(t < Duration::from_secs(1), "elbo {args:?} took {t:?}");
    err
}

/// A tiny VAE run on blobs2 and a tiny MLP VDM run on blobs2, trained once per test that needs
/// them.
fn tiny_runs(tmp: &Path) -> (PathBuf, PathBuf) {
    let vae = tmp.join("vae");
    let vdm = tmp.join("vdm");
    ok(&[
        "-q",
        "train",
        "--model",
        "vae",
        "--data",
        "toy:blobs2",
        "--steps",
        "3",
        "--out",
        vae.to_str().unwrap(),
        "--set",
        "vae.hidden=[8]",
        "--set",
        "vae.latent=2",
        "--set",
        "eval_examples=16",
        "--set",
        "grid=0",
    ]);
    ok(&[
        "-q",
        "train",
        "--data",
        "toy:blobs2",
        "--steps",
        "3",
        "--out",
        vdm.to_str().unwrap(),
        "--set",
        "vdm.mlp.hidden=8",
        "--set",
        "eval_examples=16",
        "--set",
        "grid=0",
    ]);
    (vae, vdm)
}

/// Rewrite an exported file with its metadata changed by `edit`.
fn with_metadata(
    from: &Path,
    to: &Path,
    edit: impl FnOnce(&mut serde_json::Value, &mut serde_json::Value),
) {
    let (t, mut meta) = elbo::fsio::load_tensors(from).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&meta["elbo_config"]).unwrap();
    let mut model: serde_json::Value = serde_json::from_str(&meta["elbo_model"]).unwrap();
    edit(&mut cfg, &mut model);
    meta.insert("elbo_config".into(), cfg.to_string());
    meta.insert("elbo_model".into(), model.to_string());
    let b = elbo::fsio::tensor_bytes(to, &[("", &t)], meta).unwrap();
    std::fs::write(to, b).unwrap();
}

#[test]
fn import_of_a_config_claiming_a_huge_model_is_refused_without_allocating_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (vae, vdm) = tiny_runs(tmp.path());
    let export = |run: &Path, name: &str| {
        let f = tmp.path().join(name);
        ok(&[
            "export",
            run.to_str().unwrap(),
            "--out",
            f.to_str().unwrap(),
        ]);
        f
    };
    let (fa, fd) = (export(&vae, "vae.st"), export(&vdm, "vdm.st"));
    let giga = serde_json::json!(1_000_000_000u64);
    type Edit = Box<dyn Fn(&mut serde_json::Value, &mut serde_json::Value)>;
    let cases: Vec<(&str, &Path, Edit)> = vec![
        (
            "vae.hidden",
            &fa,
            Box::new(|c, _| c["vae"]["hidden"] = serde_json::json!([1_000_000_000u64, 200])),
        ),
        (
            "vae.latent",
            &fa,
            Box::new(move |c, _| c["vae"]["latent"] = serde_json::json!(1_000_000_000u64)),
        ),
        (
            "data dimension",
            &fa,
            Box::new(move |_, m| m["spec"]["data_dim"] = serde_json::json!(1_000_000_000u64)),
        ),
        (
            "vdm.mlp.hidden",
            &fd,
            Box::new(move |c, _| c["vdm"]["mlp"]["hidden"] = giga.clone()),
        ),
    ];
    for (i, (what, src, edit)) in cases.into_iter().enumerate() {
        let f = tmp.path().join(format!("huge{i}.st"));
        with_metadata(src, &f, edit);
        let out = tmp.path().join(format!("imported{i}"));
        let err = refused_at_once(
            &[
                "import",
                f.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            "has shape|dimensions",
        );
        assert!(
            !out.exists(),
            "{what}: a half-made run directory is left: {err}"
        );
        // Nothing of its own is left beside it either, so a retry with a good file works.
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".import-"))
            .collect();
        assert!(left.is_empty(), "{what}: {left:?}");
        ok(&[
            "import",
            src.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
    }
}

#[test]
fn training_a_model_larger_than_memory_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, key) in [
        (
            vec!["--model", "vae", "--set", "vae.hidden=[1000000000]"],
            "vae.hidden = [1000000000]",
        ),
        (
            vec!["--data", "toy:ring8", "--set", "vdm.mlp.hidden=1000000000"],
            "vdm.mlp.hidden = 1000000000",
        ),
        (
            vec!["--model", "hvae", "--set", "hvae.hidden=[1000000000,100]"],
            "hvae.hidden = [1000000000,100]",
        ),
        (
            vec!["--set", "vdm.unet.channels=[100000]"],
            "vdm.unet.channels = [100000]",
        ),
    ] {
        let out = tmp.path().join("r");
        let mut a = vec![
            "-q",
            "train",
            "--steps",
            "1",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend(args);
        let err = refused_at_once(&a, key);
        assert!(
            err.contains("the limit is") && err.contains("--force"),
            "{err}"
        );
        assert!(
            !out.exists(),
            "{key}: the refusal created the run directory"
        );
    }
}

#[test]
fn a_long_strip_resized_in_a_folder_stays_small() {
    // A 1×16384 image with size=4096: resizing the short side first made a 4096 × 67 M image.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("strip");
    std::fs::create_dir(&d).unwrap();
    image::GrayImage::from_fn(16384, 1, |x, _| image::Luma([(x % 256) as u8]))
        .save(d.join("a.png"))
        .unwrap();
    let spec = format!("folder:{}?size=256", d.display());
    let (o, t) = bounded(2, &["data", &spec]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("[1, 256, 256]"), "{out}");
    assert!(t < Duration::from_secs(2), "{t:?}");
    let spec = format!("folder:{}?size=4096", d.display());
    let (o, _) = bounded(2, &["data", &spec]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn absurd_probe_counts_and_tolerances_are_refused_before_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, vdm) = tiny_runs(tmp.path());
    let v = vdm.to_str().unwrap();
    refused_at_once(
        &["eval", v, "--method", "ode", "--probes", "1000000000"],
        "--probes 1000000000",
    );
    // Tolerances f32 cannot meet ran for minutes; now refused by name.
    refused_at_once(
        &[
            "eval", v, "--method", "ode", "--rtol", "1e-12", "--atol", "1e-12",
        ],
        "--rtol 1e-12",
    );
    for bad in ["-1", "0", "nan", "inf"] {
        refused_at_once(
            &["eval", v, "--method", "ode", "--logp-tol", bad],
            "--logp-tol",
        );
    }
    refused_at_once(
        &[
            "sample",
            v,
            "--sampler",
            "rk45",
            "--rtol",
            "1e-12",
            "--atol",
            "1e-12",
        ],
        "--rtol 1e-12",
    );
    // The ODE likelihood of a model that is not a diffusion model, before any work.
    let (vae, _) = (tmp.path().join("vae"), ());
    refused_at_once(
        &["eval", vae.to_str().unwrap(), "--method", "ode"],
        "needs a diffusion model",
    );
}

#[test]
fn a_fifo_among_a_folders_images_is_refused_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("imgs");
    std::fs::create_dir(&d).unwrap();
    image::GrayImage::new(4, 4).save(d.join("a.png")).unwrap();
    let fifo = d.join("b.png");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path in our own temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    refused_at_once(&["data", &format!("folder:{}", d.display())], "is a FIFO");
}

#[test]
fn sigterm_while_sampling_leaves_no_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, vdm) = tiny_runs(tmp.path());
    let out = tmp.path().join("s.npy");
    let partial = tmp.path().join("s.npy.partial");
    let child = Command::new(env!("CARGO_BIN_EXE_elbo"))
        .args([
            "sample",
            vdm.to_str().unwrap(),
            "--n",
            "2000000",
            "--steps",
            "1000",
            "--force",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !partial.exists() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(partial.exists(), "sampling never started its partial file");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling the child we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!partial.exists(), "the partial file was left behind");
    assert!(!out.exists());
}

#[test]
fn outputs_go_only_to_regular_files_or_new_names() {
    let tmp = tempfile::tempdir().unwrap();
    let (vae, _) = tiny_runs(tmp.path());
    let r = vae.to_str().unwrap();
    // `.npy` names, so that `sample` (which chooses its format by the extension) reaches the
    // same check as `export`.
    let fifo = tmp.path().join("fifo.npy");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path in our own temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let dir = tmp.path().join("adir.npy");
    std::fs::create_dir(&dir).unwrap();
    let target = tmp.path().join("target.npy");
    std::fs::write(&target, "mine").unwrap();
    let link = tmp.path().join("link.npy");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for (p, what) in [
        (&fifo, "a FIFO"),
        (&dir, "a directory"),
        (&link, "a symbolic link"),
    ] {
        let p = p.to_str().unwrap();
        refused_at_once(&["export", r, "--out", p], what);
        refused_at_once(&["sample", r, "--n", "2", "--out", p], what);
    }
    // Where root may make one, a device node is refused the same way (as a device).
    let dev = tmp.path().join("null");
    let cd = std::ffi::CString::new(dev.to_str().unwrap()).unwrap();
    // SAFETY: mknod of a character device (1, 3: /dev/null's numbers) in our own temporary
    // directory; it fails without privilege, and the case is then skipped.
    if unsafe { libc::mknod(cd.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0 {
        refused_at_once(&["export", r, "--out", dev.to_str().unwrap()], "a device");
        let m = std::fs::symlink_metadata(&dev).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(
            m.file_type().is_char_device(),
            "the device node was replaced"
        );
    } else {
        eprintln!("outputs_go_only_to_regular_files_or_new_names: mknod not permitted here; the device-node case is skipped (the FIFO case covers the same check)");
    }
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    // A missing directory is named, not a temporary file.
    let err = refused_at_once(
        &[
            "export",
            r,
            "--out",
            tmp.path().join("missing/dir/x.st").to_str().unwrap(),
        ],
        "does not exist",
    );
    assert!(
        err.contains("missing/dir") && !err.contains(".x.st.tmp"),
        "{err}"
    );
}

#[test]
fn a_failed_import_touches_nothing_that_was_there() {
    let tmp = tempfile::tempdir().unwrap();
    let (vae, _) = tiny_runs(tmp.path());
    let good = tmp.path().join("good.st");
    ok(&[
        "export",
        vae.to_str().unwrap(),
        "--out",
        good.to_str().unwrap(),
    ]);
    let bad = tmp.path().join("bad.st");
    with_metadata(&good, &bad, |c, _| {
        c["vae"]["latent"] = serde_json::json!(3)
    });
    // A directory the user made (empty), and a symbolic link to another.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let target = tmp.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for out in [&empty, &link] {
        refused_at_once(
            &[
                "import",
                bad.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            "has shape",
        );
    }
    assert!(empty.is_dir() && std::fs::read_dir(&empty).unwrap().next().is_none());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(target.is_dir() && std::fs::read_dir(&target).unwrap().next().is_none());
    // A broken model.json entry is reported against the file read, not the output.
    let broken = tmp.path().join("broken.st");
    with_metadata(&good, &broken, |_, m| *m = serde_json::json!({"model": 3}));
    let err = refused_at_once(
        &[
            "import",
            broken.to_str().unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ],
        "elbo_model",
    );
    assert!(
        err.contains("broken.st") && !err.contains("model.json:"),
        "{err}"
    );
    // The good file imports into both, the link's target receiving the run.
    ok(&[
        "import",
        good.to_str().unwrap(),
        "--out",
        empty.to_str().unwrap(),
    ]);
    ok(&[
        "import",
        good.to_str().unwrap(),
        "--out",
        link.to_str().unwrap(),
    ]);
    assert!(target.join("config.json").is_file() && empty.join("model.json").is_file());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_resume_checks_the_configuration_its_checkpoint_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let (vae, _) = tiny_runs(tmp.path());
    let r = vae.to_str().unwrap();
    let cfg_path = vae.join("config.json");
    let original = std::fs::read_to_string(&cfg_path).unwrap();
    // A hand edit of what defines the run is refused by name.
    std::fs::write(&cfg_path, original.replace("toy:blobs2", "toy:ring8")).unwrap();
    let (o, _) = bounded(2, &["-q", "train", "--resume", "--out", r, "--steps", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("'data' cannot change") && err.contains("step 3"),
        "{err}"
    );
    // A deleted config.json: the run continues with the recorded configuration (said so).
    std::fs::remove_file(&cfg_path).unwrap();
    let o = elbo(&["-q", "train", "--resume", "--out", r, "--steps", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("no config.json; continuing with the configuration"),
        "{err}"
    );
    let cfg = elbo::run::RunDir::new(&vae).config().unwrap();
    assert_eq!((cfg.data.as_str(), cfg.steps), ("toy:blobs2", 5));
}

#[test]
fn cifar_batches_that_are_not_files_are_named_for_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("cifar");
    std::fs::create_dir_all(d.join("test_batch.bin")).unwrap();
    refused_at_once(
        &[
            "data",
            &format!("cifar10:{}", d.display()),
            "--split",
            "test",
        ],
        "is a directory",
    );
    std::os::unix::fs::symlink("/dev/zero", d.join("data_batch_1.bin")).unwrap();
    let err = refused_at_once(&["data", &format!("cifar10:{}", d.display())], "a device");
    assert!(!err.contains("not found"), "{err}");
}

#[test]
fn negative_numbers_reach_the_options_own_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, vdm) = tiny_runs(tmp.path());
    let v = vdm.to_str().unwrap();
    for (args, want) in [
        (
            vec!["eval", v, "--method", "ode", "--atol", "-1"],
            "--atol -1",
        ),
        (vec!["sample", v, "--eta", "-1"], "--eta"),
        (
            vec!["sample", v, "--guidance", "-1", "--class", "0"],
            "--guidance",
        ),
    ] {
        refused_at_once(&args, want);
    }
    // Whole-number options say what they need (clap's usage error, exit 2).
    for (args, want) in [
        (
            vec!["eval", v, "--method", "ode", "--probes", "-1"],
            "'-1' is negative",
        ),
        (
            vec!["sample", v, "--class", "-1"],
            "'-1' is not a class number",
        ),
        (vec!["sample", v, "--n", "-5"], "'-5' is negative"),
    ] {
        let o = elbo(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(want) && !err.contains("unexpected argument"),
            "{err}"
        );
    }
}

#[test]
fn sweeps_refuse_a_run_they_cannot_use_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (vae, _) = tiny_runs(tmp.path());
    let a = vae.to_str().unwrap();
    refused_at_once(&["samplers", a], "for diffusion models");
    refused_at_once(&["guidance", a], "for diffusion models");
}

#[test]
fn a_folder_with_images_beside_class_folders_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("mixed");
    for c in ["cat", "dog"] {
        std::fs::create_dir_all(d.join(c)).unwrap();
        image::GrayImage::new(4, 4)
            .save(d.join(c).join("1.png"))
            .unwrap();
    }
    image::GrayImage::new(4, 4)
        .save(d.join("stray.png"))
        .unwrap();
    std::fs::write(d.join("README.txt"), "a note, left alone").unwrap();
    let err = refused_at_once(
        &["data", &format!("folder:{}", d.display())],
        "images at its top level",
    );
    assert!(
        err.contains("stray.png") && err.contains("cat, dog"),
        "{err}"
    );
}

#[test]
fn a_folders_sizes_are_read_from_headers_before_any_image_is_decoded() {
    // 12 images of 4096² (16 M pixels each) and one of another size: the mismatch is found in
    // the headers, before 200 MB of pixels are decoded (under 1 s in 2 GiB, where decoding them
    // all took seconds and the whole folder's pixels).
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("big");
    std::fs::create_dir(&d).unwrap();
    image::GrayImage::new(4096, 4096)
        .save(d.join("00.png"))
        .unwrap();
    for i in 1..12 {
        std::fs::copy(d.join("00.png"), d.join(format!("{i:02}.png"))).unwrap();
    }
    image::GrayImage::new(8, 8).save(d.join("99.png")).unwrap();
    refused_at_once(&["data", &format!("folder:{}", d.display())], "99.png");
}

#[test]
fn the_step_cap_of_the_ode_solver_is_an_error_not_an_answer() {
    // dy/dt = −10⁶ y on [0, 1]: an explicit solver needs steps of about 3e-6 to stay stable, far
    // more than the cap. It once stopped silently at the cap and went on from the wrong time.
    use burn::tensor::{Device, Tensor, TensorData};
    let y = Tensor::<2>::from_data(TensorData::new(vec![1.0f32], [1, 1]), &Device::flex());
    let mut f = |y: &Tensor<2>, _t: f64| y.clone() * -1e6;
    let e = elbo::diffusion::ode::dormand_prince(&mut f, y, 0.0, 1.0, 1e-5, 1e-5)
        .map(|_| ())
        .expect_err("the solve must fail");
    assert!(e.to_string().contains("stopped at"), "{e}");
    // Without the cap in reach the same solver finishes: dy/dt = −y from 1 to e^{−1}.
    let y = Tensor::<2>::from_data(TensorData::new(vec![1.0f32], [1, 1]), &Device::flex());
    let mut g = |y: &Tensor<2>, _t: f64| y.clone() * -1.0;
    let (y1, _) = elbo::diffusion::ode::dormand_prince(&mut g, y, 0.0, 1.0, 1e-6, 1e-6).unwrap();
    let v: f32 = y1.into_scalar();
    assert!((v as f64 - (-1f64).exp()).abs() < 1e-5, "{v}");
}
