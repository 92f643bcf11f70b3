//! Sample quality by the project's own classifier: the FD-classifier ranks real images before
//! lightly noised ones before heavily noised ones.

use elbo::data::{self, Split};
use elbo::eval::quality::{classifier, features, figures, moments, ClassifierSettings, FEATURES};
use elbo::rng::{normal_vec, seeded};

mod common;

fn write_npy(path: &std::path::Path, rows: usize, cols: usize, v: &[f32]) {
    let mut b = elbo::data::npy::npy_header_f32(rows, cols);
    for x in v {
        b.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn fd_classifier_ranks_real_before_lightly_before_heavily_noised_images() {
    let cache = tempfile::tempdir().unwrap();
    std::env::set_var("ELBO_CACHE_DIR", cache.path());
    let t0 = std::time::Instant::now();
    let (m, acc) = classifier("mnist10k", ClassifierSettings::default()).unwrap();
    eprintln!(
        "classifier: test accuracy {acc:.4}, trained in {:?}",
        t0.elapsed()
    );
    // A digit classifier worth its features: 10 balanced classes, far above chance.
    assert!(acc > 0.9, "test accuracy {acc}");
    let test = data::load("mnist10k", Split::Test).unwrap();
    let (ft, _) = features(&m, &test.x, 784).unwrap();
    let reference = moments(&ft, FEATURES);
    let real = data::load("mnist10k", Split::Train).unwrap().head(1000);
    let noised = |sd: f32, seed| -> Vec<f32> {
        let e = normal_vec(&mut seeded(seed), real.x.len());
        real.x
            .iter()
            .zip(e)
            .map(|(v, z)| (v + sd * z).clamp(0.0, 255.0).round())
            .collect()
    };
    let f_real = figures(&m, &real.x, 784, &reference).unwrap();
    let f_light = figures(&m, &noised(25.0, 1), 784, &reference).unwrap();
    let f_heavy = figures(&m, &noised(100.0, 2), 784, &reference).unwrap();
    eprintln!("real {f_real:?}\nlight {f_light:?}\nheavy {f_heavy:?}");
    assert!(
        f_real.fd_classifier < f_light.fd_classifier
            && f_light.fd_classifier < f_heavy.fd_classifier,
        "FD-classifier: real {}, lightly noised {}, heavily noised {}",
        f_real.fd_classifier,
        f_light.fd_classifier,
        f_heavy.fd_classifier
    );
    // Real digits: all ten classes (entropy near ln 10 = 2.30) predicted with confidence.
    assert!(
        f_real.class_entropy > 2.2 && f_real.mean_confidence > 0.9,
        "{f_real:?}"
    );
    assert!(f_heavy.mean_confidence < f_real.mean_confidence);
    // Cached: a second call loads the same classifier instead of training again.
    let t1 = std::time::Instant::now();
    let (m2, acc2) = classifier("mnist10k", ClassifierSettings::default()).unwrap();
    assert_eq!(acc2, acc);
    assert!(t1.elapsed() < t0.elapsed() / 2);
    let again = figures(&m2, &real.x, 784, &reference).unwrap();
    assert_eq!(again, f_real);

    // `elbo quality FILE.npy` scores any samples the same way, and refuses what is not samples
    // of the data (wrong width, values outside 0–255), naming the file.
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("real.npy"), dir.path().join("noised.npy"));
    write_npy(&good, 1000, 784, &real.x);
    write_npy(&bad, 1000, 784, &noised(100.0, 2));
    let fd = |p: &std::path::Path| -> f64 {
        let j: serde_json::Value =
            serde_json::from_str(&common::ok(&["quality", p.to_str().unwrap(), "--json"])).unwrap();
        j["samples"]["fd_classifier"].as_f64().unwrap()
    };
    let (cli_real, cli_heavy) = (fd(&good), fd(&bad));
    assert!(
        (cli_real - f_real.fd_classifier).abs() < 1e-6 * cli_real,
        "{cli_real}"
    );
    assert!(
        (cli_heavy - f_heavy.fd_classifier).abs() < 1e-6 * cli_heavy,
        "{cli_heavy}"
    );
    let narrow = dir.path().join("narrow.npy");
    write_npy(&narrow, 4, 100, &[0.0; 400]);
    common::fails_with(
        &["quality", narrow.to_str().unwrap()],
        "narrow.npy: examples of 100 values",
    );
    let loud = dir.path().join("loud.npy");
    write_npy(&loud, 2, 784, &[300.0; 1568]);
    common::fails_with(
        &["quality", loud.to_str().unwrap()],
        "outside the 8-bit range",
    );
    common::fails_with(
        &["quality", "/nonexistent/samples.npy"],
        "/nonexistent/samples.npy",
    );
}
