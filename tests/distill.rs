//! Progressive distillation from the command line (MATH.md M50): `elbo distill` on a small
//! VDM of a 2-D mixture. Its 4-step student must land closer to the teacher's 16-step DDIM
//! samples (from the same prior draws) than the teacher's own 4 DDIM steps do; each student is
//! a complete run with a bound, saved to sample by ancestral steps on its unclipped x̂; bad
//! settings are refused before any work.

mod common;

use common::{fails_with, ok};

fn npy(path: &std::path::Path) -> Vec<f32> {
    elbo::data::npy::read_npy(path).unwrap().values
}

fn mean_sq(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / (a.len() / 2) as f64
}

#[test]
fn a_distilled_student_takes_in_four_steps_what_the_teacher_takes_in_sixteen() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher = tmp.path().join("teacher");
    let t = teacher.to_str().unwrap();
    ok(&[
        "-q",
        "train",
        "--data",
        "toy:blobs2",
        "--steps",
        "1500",
        "--batch-size",
        "256",
        "--out",
        t,
        "--set",
        "grid=0",
        "--set",
        "vdm.mlp.hidden=64",
        "--set",
        "threads=1",
    ]);
    let out = tmp.path().join("students");
    let o = out.to_str().unwrap();
    let printed = ok(&[
        "-q",
        "distill",
        t,
        "--out",
        o,
        "--from-steps",
        "16",
        "--to-steps",
        "4",
        "--iters",
        "400",
        "--batch-size",
        "256",
        "--lr",
        "3e-4",
        "--compare",
        "0",
    ]);
    assert!(
        printed.contains("8 steps") && printed.contains("4 steps"),
        "{printed}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("distill.json")).unwrap()).unwrap();
    assert_eq!(report["rounds"].as_array().map(|r| r.len()), Some(2));
    let student = out.join("steps-4");
    let s = student.to_str().unwrap();
    // The same prior draws (seed 5) through three deterministic maps.
    let draw = |dir: &str, extra: &[&str], name: &str| -> Vec<f32> {
        let file = tmp.path().join(name);
        let mut args = vec!["-q", "sample", dir, "--n", "2000", "--seed", "5"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", file.to_str().unwrap()]);
        ok(&args);
        npy(&file)
    };
    let reference = draw(t, &["--sampler", "ddim", "--steps", "16"], "t16.npy");
    let naive = draw(t, &["--sampler", "ddim", "--steps", "4"], "t4.npy");
    let distilled = draw(s, &["--sampler", "ddim"], "s4.npy");
    let (e_naive, e_student) = (mean_sq(&naive, &reference), mean_sq(&distilled, &reference));
    eprintln!("mean squared distance to the teacher's 16 steps: DDIM 4 steps {e_naive:.4}, student {e_student:.4}");
    // Measured: the student's distance is a fraction of DDIM's; half is asserted.
    assert!(
        e_student < 0.5 * e_naive,
        "student {e_student} vs teacher's 4 DDIM steps {e_naive}"
    );
    // Saved to sample by its own rule: ancestral steps on its unclipped x̂, on the grid it
    // was trained on.
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(student.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["vdm"]["sampler"], "ancestral", "{cfg}");
    assert_eq!(cfg["vdm"]["clip_x0"], false, "{cfg}");
    assert_eq!(cfg["vdm"]["sample_grid"], "uniform", "{cfg}");
    assert_eq!(cfg["vdm"]["sample_steps"], 4, "{cfg}");
    // A student is a model with a bound.
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["eval", s, "--json", "--limit", "256"])).unwrap();
    assert!(j["nll_nats"].as_f64().is_some_and(f64::is_finite), "{j}");
    // Refusals: steps that do not halve to the target, a non-empty output, a non-diffusion run.
    fails_with(
        &[
            "distill",
            t,
            "--out",
            tmp.path().join("x").to_str().unwrap(),
            "--from-steps",
            "12",
            "--to-steps",
            "8",
        ],
        "power of two",
    );
    fails_with(&["distill", t, "--out", o], "not empty");
}
