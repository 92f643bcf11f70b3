//! Weighted objectives and proposals of noise levels through the command line (MATH.md
//! M44–M45): a run trained on a weighted objective with an adaptive proposal resumes exactly
//! (the proposal's state is in the checkpoint), and reports the plain ELBO beside a note on
//! its objective.

mod common;

use common::ok;

const RUN: &[&str] = &[
    "--data",
    "toy:blobs2",
    "--batch-size",
    "64",
    "--set",
    "vdm.mlp.hidden=32",
    "--set",
    "vdm.objective=sigmoid",
    "--set",
    "vdm.proposal=adaptive",
    "--set",
    "threads=1",
    "--set",
    "grid=0",
    "--set",
    "eval_every=1000000",
    "--set",
    "eval_examples=32",
    "--set",
    "checkpoint_every=5",
];

fn train(out: &std::path::Path, steps: &str, resume: bool) {
    let mut a = vec![
        "-q",
        "train",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        steps,
    ];
    if resume {
        a.push("--resume");
    }
    a.extend_from_slice(RUN);
    ok(&a);
}

#[test]
fn an_adaptive_proposal_resumes_exactly_and_the_report_names_the_objective() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(&a, "40", false);
    train(&b, "20", false);
    train(&b, "40", true);
    let state = |d: &std::path::Path| elbo::run::RunDir::new(d).state().unwrap();
    let (sa, sb) = (state(&a), state(&b));
    assert_eq!(sa.step, 40);
    let ms = sa
        .model_state
        .clone()
        .expect("the adaptive proposal's state is saved");
    assert_eq!(ms["seen"].as_array().unwrap().len(), 64);
    assert_eq!(
        sa.model_state, sb.model_state,
        "the proposal's state after a resume"
    );
    let weights = |d: &std::path::Path| {
        let (p, _) =
            elbo::fsio::load_tensors(&elbo::run::RunDir::new(d).model_weights_path()).unwrap();
        p
    };
    assert_eq!(
        weights(&a),
        weights(&b),
        "20 + 20 steps = 40 steps, bit for bit"
    );
    // The report: the plain ELBO, with what the run was trained on.
    let r = a.to_str().unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["eval", r, "--json", "--limit", "64"])).unwrap();
    let note = j["objective"].as_str().unwrap();
    assert!(
        note.contains("sigmoid(2 − λ)") && note.contains("monotone") && note.contains("adapted"),
        "{note}"
    );
    assert!(j["nll_nats"].as_f64().unwrap().is_finite());
}
