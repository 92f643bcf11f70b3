//! Helpers shared by the command-line tests.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Run the elbo binary.
pub fn elbo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_elbo"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the elbo binary runs")
}

/// Run it with `ELBO_THREADS` set, require success, return stdout.
pub fn ok_threads(threads: usize, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_elbo"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("ELBO_THREADS", threads.to_string())
        .output()
        .expect("the elbo binary runs");
    assert!(
        o.status.success(),
        "elbo {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// `nll_nats` of `elbo eval … --json` run with `ELBO_THREADS` set.
pub fn nll_with_threads(threads: usize, args: &[&str]) -> f64 {
    let j: serde_json::Value =
        serde_json::from_str(&ok_threads(threads, args)).expect("eval prints JSON");
    j["nll_nats"].as_f64().expect("nll_nats is a number")
}

/// Run it, require success, return stdout.
pub fn ok(args: &[&str]) -> String {
    let o = elbo(args);
    assert!(
        o.status.success(),
        "elbo {args:?} failed ({:?}):\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Runs, fails with exit code 1 (not a panic's 101), and says something containing `want`.
pub fn fails_with(args: &[&str], want: &str) {
    let o = elbo(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "elbo {args:?}: expected exit 1, stderr:\n{err}"
    );
    assert!(
        err.contains(want),
        "elbo {args:?}: stderr lacks '{want}':\n{err}"
    );
    assert!(!err.contains("panicked"), "elbo {args:?} panicked:\n{err}");
}

/// Run elbo with its address space limited to `gib` GiB: an allocation beyond that fails (and
/// would abort with 134), so a refusal here is one that allocated less. Returns the output and
/// how long it took.
pub fn bounded(gib: u64, args: &[&str]) -> (Output, Duration) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_elbo"));
    c.args(args).env("NO_COLOR", "1");
    // SAFETY: setrlimit between fork and exec, touching nothing but the child's own limits.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: gib << 30,
                rlim_max: gib << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let t0 = Instant::now();
    let o = c.output().unwrap();
    (o, t0.elapsed())
}
