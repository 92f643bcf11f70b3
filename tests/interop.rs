//! PyTorch interop: `elbo export` names and shapes are exactly those of python/elbo_torch's
//! modules (the lists the package wrote), export → import gives identical weights and the same
//! bound, and bad files are refused with the reason.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::{elbo, ok};
use elbo::run::RunConfig;

#[test]
fn exported_names_and_shapes_are_the_python_packages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/elbo_torch/names");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
        let cfg: RunConfig = serde_json::from_value(v["config"].clone()).unwrap();
        let ours = elbo::interop::torch_names_for(&cfg, &v["model_file"]["spec"]).unwrap();
        let theirs: Vec<(String, Vec<usize>)> = serde_json::from_value(v["names"].clone()).unwrap();
        assert_eq!(ours, theirs, "{}", e.path().display());
        seen += 1;
    }
    // VAE, HVAE, U-Net and MLP VDMs, with and without classes.
    assert!(seen >= 6, "{seen} lists");
}

/// Every tensor of a safetensors file, by name: (shape, values).
fn tensors(p: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let (t, _) = elbo::fsio::load_tensors(p).unwrap();
    t.into_iter().map(|(k, v)| (k, (v.shape, v.data))).collect()
}

#[test]
fn export_then_import_gives_the_same_weights_and_bound() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, args) in [
        (
            "vae",
            vec![
                "--model",
                "vae",
                "--steps",
                "30",
                "--set",
                "vae.hidden=[32]",
                "--set",
                "vae.latent=4",
            ],
        ),
        (
            "vdm",
            vec![
                "--data",
                "toy:blobs2",
                "--steps",
                "30",
                "--set",
                "vdm.mlp.hidden=32",
            ],
        ),
    ] {
        let run = tmp.path().join(name);
        let r = run.to_str().unwrap();
        let mut a = vec!["-q", "train", "--out", r, "--set", "eval_examples=50"];
        a.extend(args);
        ok(&a);
        let file = tmp.path().join(format!("{name}.safetensors"));
        ok(&["export", r, "--out", file.to_str().unwrap()]);
        // PyTorch layout: Linear weights [out, in].
        let ex = tensors(&file);
        let w = ex
            .iter()
            .find(|(k, v)| k.ends_with(".weight") && v.0.len() == 2)
            .unwrap();
        let burn = tensors(&elbo::run::RunDir::new(&run).model_weights_path());
        let back = burn
            .iter()
            .find(|(k, _)| elbo::interop::torch_name(k) == *w.0)
            .unwrap();
        assert_eq!(
            back.1 .0,
            vec![w.1 .0[1], w.1 .0[0]],
            "{} is transposed",
            w.0
        );
        let imported = tmp.path().join(format!("{name}-imported"));
        let i = imported.to_str().unwrap();
        ok(&["import", file.to_str().unwrap(), "--out", i]);
        let again = tensors(&elbo::run::RunDir::new(&imported).model_weights_path());
        assert_eq!(again, burn, "{name}: weights differ after the round trip");
        let bound = |d: &str| -> f64 {
            let mut a = vec!["eval", d, "--json", "--limit", "100"];
            if name == "vdm" {
                a.extend(["--t-samples", "4"]);
            }
            let j: serde_json::Value = serde_json::from_str(&ok(&a)).unwrap();
            j["nll_nats"].as_f64().unwrap()
        };
        assert_eq!(bound(r), bound(i), "{name}: the same bound");
    }
}

#[test]
fn bad_imports_are_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("v");
    let r = run.to_str().unwrap();
    ok(&[
        "-q",
        "train",
        "--data",
        "toy:blobs2",
        "--steps",
        "5",
        "--out",
        r,
        "--set",
        "vdm.mlp.hidden=16",
        "--set",
        "eval_examples=20",
    ]);
    let file = tmp.path().join("v.safetensors");
    ok(&["export", r, "--out", file.to_str().unwrap()]);
    let (t, meta) = elbo::fsio::load_tensors(&file).unwrap();
    let write = |name: &str, t: &elbo::params::NamedParams, meta: HashMap<String, String>| {
        let p = tmp.path().join(name);
        let b = elbo::fsio::tensor_bytes(&p, &[("", t)], meta).unwrap();
        std::fs::write(&p, b).unwrap();
        p
    };
    let mut wrong_shape = t.clone();
    let k = wrong_shape
        .keys()
        .find(|k| k.ends_with("out.bias"))
        .unwrap()
        .clone();
    wrong_shape.get_mut(&k).unwrap().shape = vec![1];
    wrong_shape.get_mut(&k).unwrap().data.truncate(1);
    let mut missing = t.clone();
    missing.remove(&k);
    let mut extra = t.clone();
    extra.insert("net.spare.weight".into(), t[&k].clone());
    let mut nan = t.clone();
    nan.get_mut(&k).unwrap().data[0] = f32::NAN;
    let cases = [
        (write("nometa.st", &t, HashMap::new()), "elbo_config"),
        (
            write("shape.st", &wrong_shape, meta.clone()),
            "has shape [1]",
        ),
        (
            write("missing.st", &missing, meta.clone()),
            "no tensor 'net.out.bias'",
        ),
        (write("extra.st", &extra, meta.clone()), "net.spare.weight"),
        (write("nan.st", &nan, meta.clone()), "non-finite"),
    ];
    for (i, (p, want)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("imp{i}"));
        let o = elbo(&[
            "import",
            p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{want}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{want}: {err}");
        assert!(!out.exists(), "a failed import leaves no directory behind");
    }
    // Into a directory that holds something: refused.
    let o = elbo(&["import", file.to_str().unwrap(), "--out", r]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an empty directory"));
}
