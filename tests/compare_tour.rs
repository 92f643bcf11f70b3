//! `elbo tour` and `elbo compare` end to end: the identity of M3 to the last digit on the
//! linear-Gaussian model, and a six-model comparison on a tiny budget whose rows are one
//! quantity in one unit.

mod common;

#[test]
fn the_tour_checks_the_identity_to_the_last_digit() {
    let j: serde_json::Value = serde_json::from_str(&common::ok(&["tour", "--json"])).unwrap();
    let tours = j["linear_gaussian"].as_array().unwrap();
    assert_eq!(tours.len(), 2, "a 1-D and a 2-D latent model");
    for t in tours {
        let ev = t["log_evidence"].as_f64().unwrap();
        // Quadrature of M1 on a fine grid agrees with the closed form of M5 to 1e-9.
        let q = t["quadrature"].as_f64().unwrap();
        assert!((q - ev).abs() < 1e-9, "quadrature {q} vs closed form {ev}");
        // Bayes' rule at any z gives the evidence.
        for c in t["chain_rule"].as_array().unwrap() {
            assert!((c[1].as_f64().unwrap() - ev).abs() < 1e-9);
        }
        let encs = t["encoders"].as_array().unwrap();
        for e in encs {
            let (elbo, kl) = (e["elbo"].as_f64().unwrap(), e["kl"].as_f64().unwrap());
            // M3: |evidence − ELBO − KL| < 1e-9, and M2: the ELBO never exceeds the evidence.
            assert!((ev - elbo - kl).abs() < 1e-9, "{e}");
            assert!(e["identity_error"].as_f64().unwrap() < 1e-9);
            assert!(elbo <= ev + 1e-12 && kl >= -1e-12, "{e}");
        }
        // Tight for the exact posterior only.
        assert!(encs[0]["kl"].as_f64().unwrap().abs() < 1e-9);
        assert!(encs[1..].iter().all(|e| e["kl"].as_f64().unwrap() > 1e-3));
    }
}

#[test]
fn compare_trains_six_models_into_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp");
    let md = common::ok(&[
        "compare",
        "--minutes",
        "0.04",
        "--out",
        out.to_str().unwrap(),
        "--limit",
        "16",
        "--iw",
        "5",
        "--quality",
        "0",
        "--time-budget",
        "1",
        "--ode",
        "1",
        "-q",
    ]);
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("compare.json")).unwrap()).unwrap();
    let rows = j["rows"].as_array().unwrap();
    let models: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["vae", "hvae", "vdm", "flow", "edm", "latent-vdm"]);
    assert_eq!(j["representation"], "8bit");
    for r in rows {
        let e = &r["eval"];
        // One unit for every row: bits/dim over the same 16 test images, the bound in nats per
        // image divided by 784 ln 2 (a figure per binary pixel, per image or in nats would not
        // be).
        assert_eq!(e["unit"], "bits_per_dim", "{}", r["model"]);
        assert_eq!(e["n"], 16);
        let bpd = e["bits_per_dim"].as_f64().unwrap();
        let nats = e["nll_nats"].as_f64().unwrap();
        assert!(
            bpd > 0.0 && (bpd - nats / (784.0 * std::f64::consts::LN_2)).abs() < 1e-9 * bpd,
            "{}: {bpd} bits/dim from {nats} nats",
            r["model"]
        );
        assert!(r["params"].as_u64().unwrap() > 0 && r["steps"].as_u64().unwrap() > 0);
        assert!(r["train_secs"].as_f64().unwrap() > 1.0);
    }
    // The HVAE reports one KL per layer; the VAE and HVAE their active units.
    let hv = &rows[1]["eval"];
    assert!(hv["terms"].get("kl_z1").is_some() && hv["terms"].get("prior").is_some());
    assert_eq!(hv["active_units"].as_array().unwrap().len(), 2);
    // Every diffusion model reports the diffusion term and its ODE likelihood on the first test
    // image in the same unit; the latent VDM also its encoder's entropy; the VAEs no ODE.
    for r in &rows[2..] {
        assert!(
            r["eval"]["terms"].get("diffusion").is_some(),
            "{}",
            r["model"]
        );
        let ode = r["ode"]["per_dim"].as_f64();
        assert!(
            ode.is_some_and(|b| b.is_finite() && b > 0.0),
            "{}",
            r["model"]
        );
    }
    assert!(rows[..2].iter().all(|r| r.get("ode").is_none()));
    assert!(rows[5]["eval"]["terms"].get("neg_entropy").is_some());
    assert!(md.contains("| vdm |") && md.contains("bits/dim"));
    assert!(out.join("samples.png").is_file() && out.join("compare.md").is_file());
}

#[test]
fn compare_refuses_a_run_of_the_other_representation() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("vae");
    common::ok(&[
        "train",
        "--model",
        "vae",
        "--steps",
        "3",
        "--out",
        run.to_str().unwrap(),
        "-q",
    ]);
    common::fails_with(
        &[
            "compare",
            "--runs",
            run.to_str().unwrap(),
            "--out",
            dir.path().join("cmp").to_str().unwrap(),
            "--minutes",
            "0.01",
        ],
        "scores binary images, the comparison 8bit",
    );
}
