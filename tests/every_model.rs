//! Every registered model (`ModelKind::ALL`) walked through the command line on a tiny budget:
//! train → eval → sample → export (with a parity block) → import → eval of the imported run, which
//! must give the same bound. A new model that forgets a capability fails here, by name.

mod common;

use common::elbo;
use elbo::models::ModelKind;

/// Run elbo, require success, naming the model and the step that failed.
fn step(kind: ModelKind, what: &str, args: &[&str]) -> String {
    let o = elbo(args);
    assert!(
        o.status.success(),
        "model '{kind}' fails at {what}: elbo {args:?}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn every_registered_model_trains_evaluates_samples_exports_and_imports() {
    let tmp = tempfile::tempdir().unwrap();
    for &kind in ModelKind::ALL {
        let name = kind.name();
        let run = tmp.path().join(name);
        let r = run.to_str().unwrap();
        step(
            kind,
            "train",
            &[
                "-q",
                "train",
                "--model",
                name,
                "--data",
                "toy:blobs2",
                "--steps",
                "4",
                "--batch-size",
                "32",
                "--out",
                r,
                "--set",
                "grid=0",
                "--set",
                "eval_examples=16",
                "--set",
                "threads=1",
            ],
        );
        let bound = |dir: &str| -> f64 {
            let j: serde_json::Value = serde_json::from_str(&step(
                kind,
                "eval",
                &["eval", dir, "--json", "--limit", "32", "--seed", "3"],
            ))
            .unwrap_or_else(|e| panic!("model '{kind}': eval --json is not JSON: {e}"));
            let v = j["nll_nats"].as_f64().unwrap_or(f64::NAN);
            assert!(v.is_finite(), "model '{kind}': the bound is {v}");
            assert_eq!(j["n"], 32, "model '{kind}': evaluated examples");
            v
        };
        let b = bound(r);
        // Samples, of the data's shape.
        let npy = tmp.path().join(format!("{name}.npy"));
        step(
            kind,
            "sample",
            &["sample", r, "--n", "5", "--out", npy.to_str().unwrap()],
        );
        let a = elbo::data::npy::read_npy(&npy).unwrap();
        assert_eq!((a.rows, a.cols), (5, 2), "model '{kind}': sample shape");
        assert!(
            a.values.iter().all(|v| v.is_finite()),
            "model '{kind}': non-finite samples"
        );
        // Export with a parity block (the model's own terms from recorded noise), import, and
        // the imported run's bound is the same number.
        let file = tmp.path().join(format!("{name}.safetensors"));
        let f = file.to_str().unwrap();
        let with_parity = elbo(&["export", r, "--out", f, "--parity", "4"]);
        let said = String::from_utf8_lossy(&with_parity.stderr).to_string();
        if with_parity.status.success() {
            let (t, _) = elbo::fsio::load_tensors(&file).unwrap();
            for key in [
                "parity.x",
                "parity.term.reconstruction",
                "parity.term.prior",
            ] {
                let v = t
                    .get(key)
                    .unwrap_or_else(|| panic!("model '{kind}': the parity block lacks {key}"));
                assert_eq!(v.shape[0], 4, "model '{kind}': {key} rows");
                assert!(
                    v.data.iter().all(|x| x.is_finite()),
                    "model '{kind}': {key}"
                );
            }
        } else {
            // A model without a PyTorch twin says so, and exports without the block.
            assert!(
                said.contains("has no PyTorch twin"),
                "model '{kind}' fails at export --parity: {said}"
            );
            step(kind, "export", &["export", r, "--out", f]);
        }
        let imported = tmp.path().join(format!("{name}-imported"));
        step(
            kind,
            "import",
            &[
                "import",
                file.to_str().unwrap(),
                "--out",
                imported.to_str().unwrap(),
            ],
        );
        let bi = bound(imported.to_str().unwrap());
        assert_eq!(b, bi, "model '{kind}': the imported run's bound differs");
    }
}
