//! The latent VDM's bound (MATH.md M49) on the linear-Gaussian model, where every term has a
//! closed form: p(z) = N(0, I), p(x | z) = N(W z + b, s² I) with W's columns orthogonal (so the
//! exact posterior is diagonal and a one-layer encoder can be it), the encoder set to that
//! posterior, the decoder to p(x | z), and the latent's diffusion prior the exact denoiser of
//! N(0, I) (M31). Then the reconstruction is E_q[−log p(x | z)], the negative entropy is
//! −H[q], the latent's diffusion bound is E_q[−log N(z; 0, I)] up to its endpoints, and the
//! whole bound is −log p(x) exactly, for every x. Then, from the command line, a latent VDM on
//! the latent of a trained VAE run (`latent-vdm.vae_run`): the VAE held as it was trained, or
//! fine-tuned, and every mismatched start refused before anything is written.

mod common;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use elbo::diffusion::elbo::ElboOptions;
use elbo::diffusion::oracle::GaussianOracle;
use elbo::diffusion::schedule::LinearGamma;
use elbo::diffusion::Schedule;
use elbo::dist::linear_gaussian::{LinearGaussian, Mat};
use elbo::elbo::Stat;
use elbo::models::latent_vdm::{latent_terms, LatentVdm, LatentVdmConfig, LatentVdmSpec};
use elbo::models::obs::{Likelihood, Observation};
use elbo::models::vae::VaeSpec;
use elbo::models::vdm::VdmSpec;
use elbo::models::Model;
use elbo::rng::seeded;

const LOG_2PI: f64 = 1.837_877_066_409_345_3;

fn tensor2(v: Vec<f64>, shape: [usize; 2], dev: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(v.into_iter().map(|a| a as f32).collect::<Vec<_>>(), shape),
        dev,
    )
}

fn tensor1(v: Vec<f64>, dev: &Device) -> Tensor<1> {
    let n = v.len();
    Tensor::from_data(
        TensorData::new(v.into_iter().map(|a| a as f32).collect::<Vec<_>>(), [n]),
        dev,
    )
}

#[test]
fn every_term_of_the_latent_bound_has_its_closed_form() {
    let dev = Device::flex();
    let (dd, d, s2) = (4usize, 2usize, 0.3f64);
    // Orthogonal columns: WᵀW = diag(1.69, 0.65).
    let w = Mat::new(dd, d, vec![1.2, 0.0, 0.0, 0.7, 0.5, 0.0, 0.0, -0.4]);
    let lg = LinearGaussian {
        w: w.clone(),
        b: vec![0.3, -0.2, 0.1, 0.5],
        s2,
    };
    let wtw = [1.69, 0.65];
    // Exact posterior: covariance s² (WᵀW + s² I)⁻¹ (diagonal), mean A (x − b) with
    // A = (WᵀW + s² I)⁻¹ Wᵀ.
    let post_var: Vec<f64> = wtw.iter().map(|v| s2 / (v + s2)).collect();
    let a = |j: usize, i: usize| w.at(i, j) / (wtw[j] + s2);

    let mut cfg = LatentVdmConfig::default();
    cfg.vae.latent = d;
    cfg.vae.hidden = vec![];
    cfg.prior.mlp.hidden = 8;
    let spec = LatentVdmSpec {
        vae: VaeSpec {
            obs: Observation {
                likelihood: Likelihood::Gaussian,
                data_dim: dd,
                shift: vec![0.0; dd],
                scale: vec![1.0; dd],
            },
            latent: d,
        },
        prior: VdmSpec::unscaled(d),
    };
    let mut m = LatentVdm::build(&cfg, &spec, &dev).unwrap();
    // Encoder: one linear layer D → 2d (weights [in, out]): means A x − A b, log-variances
    // constant.
    let mut enc_w = vec![0.0; dd * 2 * d];
    let mut enc_b = vec![0.0; 2 * d];
    for j in 0..d {
        for i in 0..dd {
            enc_w[i * 2 * d + j] = a(j, i);
            enc_b[j] -= a(j, i) * lg.b[i];
        }
        enc_b[d + j] = post_var[j].ln();
    }
    let enc = &mut m.vae.encoder.layers[0];
    enc.weight = Param::from_tensor(tensor2(enc_w, [dd, 2 * d], &dev));
    enc.bias = Some(Param::from_tensor(tensor1(enc_b, &dev)));
    // Decoder: d → 2D, means W z + b, log-variances log s².
    let mut dec_w = vec![0.0; d * 2 * dd];
    let mut dec_b = vec![0.0; 2 * dd];
    for k in 0..dd {
        for j in 0..d {
            dec_w[j * 2 * dd + k] = w.at(k, j);
        }
        dec_b[k] = lg.b[k];
        dec_b[dd + k] = s2.ln();
    }
    let dec = &mut m.vae.decoder.layers[0];
    dec.weight = Param::from_tensor(tensor2(dec_w, [d, 2 * dd], &dev));
    dec.bias = Some(Param::from_tensor(tensor1(dec_b, &dev)));

    // Data from the model itself.
    let n = 4000;
    let mut rng = seeded(3);
    let z = elbo::rng::randn(&mut rng, [n, d], &dev);
    let noise = elbo::rng::randn(&mut rng, [n, dd], &dev) * s2.sqrt();
    let wt = tensor2(
        (0..d)
            .flat_map(|j| (0..dd).map(move |k| (j, k)))
            .map(|(j, k)| w.at(k, j))
            .collect(),
        [d, dd],
        &dev,
    );
    let x = z.matmul(wt) + tensor2(lg.b.clone(), [1, dd], &dev) + noise;
    let xs = elbo::elbo::to_f32(x.clone()).unwrap();

    // The prior's schedule: SNR from e^13.3 to e^−12, endpoint losses under 1e-4 nats.
    let sched = LinearGamma {
        gamma_min: -13.3,
        gamma_max: 12.0,
    };
    let t = latent_terms(
        &m.vae,
        &GaussianOracle::vp(1.0),
        &Schedule::Fixed(&sched),
        x,
        ElboOptions {
            t_steps: None,
            t_samples: 64,
            proposal: None,
        },
        &mut seeded(4),
    )
    .unwrap();
    let rows = t.to_rows().unwrap();
    let term = |name: &str| -> Vec<f64> {
        rows.iter()
            .find(|r| r.0 == name)
            .unwrap_or_else(|| panic!("no term {name}"))
            .1
            .clone()
    };
    let total = elbo::elbo::to_f64(t.total()).unwrap();
    let (recon, neg_h) = (term("reconstruction"), term("neg_entropy"));
    let latent: Vec<f64> = (0..n)
        .map(|i| term("latent_reconstruction")[i] + term("prior")[i] + term("diffusion")[i])
        .collect();
    let (mut d_recon, mut d_latent, mut d_total) = (vec![], vec![], vec![]);
    for i in 0..n {
        let xi: Vec<f64> = xs[i * dd..(i + 1) * dd].iter().map(|&v| v as f64).collect();
        let mean: Vec<f64> = (0..d)
            .map(|j| (0..dd).map(|k| a(j, k) * (xi[k] - lg.b[k])).sum())
            .collect();
        // E_q[−log p(x | z)] = ½ (D log 2π s² + (‖x − W μ − b‖² + Σ_j (WᵀW)_jj S_jj)/s²).
        let wm = w.matvec(&mean);
        let resid: f64 = (0..dd).map(|k| (xi[k] - wm[k] - lg.b[k]).powi(2)).sum();
        let tr: f64 = (0..d).map(|j| wtw[j] * post_var[j]).sum();
        let recon_closed = 0.5 * (dd as f64 * (LOG_2PI + s2.ln()) + (resid + tr) / s2);
        // −H[q] = −½ Σ (log 2π e S_jj).
        let neg_h_closed: f64 = -0.5 * post_var.iter().map(|v| LOG_2PI + 1.0 + v.ln()).sum::<f64>();
        // E_q[−log N(z; 0, I)] = ½ (d log 2π + ‖μ‖² + tr S).
        let latent_closed = 0.5
            * (d as f64 * LOG_2PI
                + mean.iter().map(|v| v * v).sum::<f64>()
                + post_var.iter().sum::<f64>());
        assert!(
            (neg_h[i] - neg_h_closed).abs() < 1e-4,
            "row {i}: −H {} vs {neg_h_closed}",
            neg_h[i]
        );
        d_recon.push(recon[i] - recon_closed);
        d_latent.push(latent[i] - latent_closed);
        d_total.push(total[i] + lg.log_evidence(&xi));
    }
    // Each Monte-Carlo term (one z per x, 64 time samples of the latent's bound) against its
    // closed form, paired over 4,000 x: within 4 standard errors plus 2e-3 nats (the
    // endpoints' and f32's share).
    for (name, diffs) in [
        ("reconstruction", &d_recon),
        ("latent diffusion bound", &d_latent),
        ("whole bound against −log p(x)", &d_total),
    ] {
        let st = Stat::of(diffs);
        eprintln!("{name}: estimate − closed form {st:?}");
        assert!(st.se < 0.05, "{name}: too noisy to judge, {st:?}");
        assert!(
            st.mean.abs() < 4.0 * st.se + 2e-3,
            "{name}: estimate − closed form {st:?}"
        );
    }
}

/// The weights under `prefix.` of a run (all of them for an empty prefix), the prefix removed.
fn weights_under(dir: &std::path::Path, prefix: &str) -> elbo::params::NamedParams {
    let w = elbo::run::RunDir::new(dir).model_weights().unwrap();
    w.into_iter()
        .filter_map(|(k, v)| {
            if prefix.is_empty() {
                Some((k, v))
            } else {
                k.strip_prefix(&format!("{prefix}."))
                    .map(|r| (r.to_string(), v))
            }
        })
        .collect()
}

#[test]
fn a_latent_vdm_trains_its_prior_on_a_trained_vaes_latent() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    let small = [
        "--set",
        "grid=0",
        "--set",
        "eval_examples=200",
        "--batch-size",
        "64",
    ];
    let train = |extra: &[&str]| {
        let mut a = vec!["-q", "train"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&small);
        common::ok(&a)
    };
    let vae_args = ["--set", "vae.latent=8", "--set", "vae.hidden=[64]"];
    let mut a = vec!["--model", "vae", "--steps", "150", "--out"];
    let vae = p("vae");
    a.push(&vae);
    a.extend_from_slice(&vae_args);
    train(&a);
    let lv_args = [
        "--set",
        "latent-vdm.vae.latent=8",
        "--set",
        "latent-vdm.vae.hidden=[64]",
    ];
    // `train --model latent-vdm` of `steps` into `dir`, started from the run `from`.
    let latent_cmd = |dir: &str, steps: &str, from: &str, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["--model", "latent-vdm", "--steps", steps, "--out", dir]
            .map(String::from)
            .to_vec();
        a.push("--set".into());
        a.push(format!("latent-vdm.vae_run={from}"));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |name: &str, extra: &[&str]| -> String {
        let dir = p(name);
        let a = latent_cmd(&dir, "60", &vae, &[&lv_args[..], extra].concat());
        train(&a.iter().map(String::as_str).collect::<Vec<_>>());
        dir
    };
    // Held fixed: the VAE's weights are the trained run's, bit for bit, after 60 steps, and
    // the note says so; the prior has trained.
    let frozen = run("frozen", &[]);
    let (theirs, ours) = (
        weights_under(tmp.path().join("vae").as_path(), ""),
        weights_under(std::path::Path::new(&frozen), "vae"),
    );
    assert_eq!(theirs.len(), ours.len());
    for (k, v) in &theirs {
        assert_eq!(ours[k].data, v.data, "vae.{k} moved");
    }
    let prior = weights_under(std::path::Path::new(&frozen), "prior");
    assert!(!prior.is_empty());
    let j: serde_json::Value =
        serde_json::from_str(&common::ok(&["eval", &frozen, "--json", "--limit", "64"])).unwrap();
    assert!(j["nll_nats"].as_f64().is_some_and(f64::is_finite), "{j}");
    assert!(
        j.to_string().contains("held fixed"),
        "the objective's note names the fixed VAE: {j}"
    );
    // Fine-tuned: started from the same weights, the VAE moves.
    let tuned = run("tuned", &["--set", "latent-vdm.finetune_vae=true"]);
    let moved = weights_under(std::path::Path::new(&tuned), "vae");
    assert!(
        theirs.iter().any(|(k, v)| moved[k].data != v.data),
        "finetune_vae left the VAE as it was"
    );
    // Refused, naming the problem, and leaving nothing behind: a VAE of another latent size,
    // a run of another kind, a directory that is no run, fine-tuning without a run.
    let refuse = |name: &str, from: &str, extra: &[&str], want: &str| {
        let mut a = vec!["train".to_string()];
        a.extend(latent_cmd(&p(name), "5", from, extra));
        common::fails_with(&a.iter().map(String::as_str).collect::<Vec<_>>(), want);
        assert!(
            !tmp.path().join(name).join("config.json").exists(),
            "a refused start wrote {name}/config.json"
        );
    };
    refuse(
        "r1",
        &vae,
        &["--set", "latent-vdm.vae.hidden=[64]"],
        "vae.latent",
    );
    refuse("r2", &frozen, &lv_args, "a latent-vdm run");
    refuse("r3", &p("nowhere"), &lv_args, "latent-vdm.vae_run");
    let r4 = p("r4");
    common::fails_with(
        &[
            "train",
            "--model",
            "latent-vdm",
            "--steps",
            "5",
            "--out",
            &r4,
            "--set",
            "latent-vdm.finetune_vae=true",
        ],
        "needs latent-vdm.vae_run",
    );
}
