//! What one command may cost before it is refused, checked before the work starts. Each limit
//! guards a size that a user types (`--n`, `--steps`, `--iw`, `--t-samples`, `schedule
//! --steps`): beyond it the command stops at once with the estimate (memory, or time at a rate it
//! has just measured) instead of aborting on an allocation or running for days without a word.
//! `--force` lifts every limit.
//!
//! | limit | value | why |
//! | --- | --- | --- |
//! | [`MAX_SAMPLE_STEPS`] | 100,000 | sampler steps: each is one network evaluation per image |
//! | [`MAX_SAMPLE_BYTES`] | 2 GiB | samples held in memory (a `.npy` is written in blocks past it with `--force`) |
//! | [`MAX_GRID_IMAGES`] | 10,000 | images in one PNG grid |
//! | [`MAX_T_SAMPLES`] | 65,536 | time samples per example of the diffusion bound (one chunk holds N/2 × D values several times) |
//! | [`MAX_SCHEDULE_STEPS`] | 10,000,000 | rows of a schedule table |
//! | [`MAX_SECONDS`] | 4 hours | work whose time is estimated from a measured rate (`eval --iw`, `sample`) |
//! | [`MAX_PROBES`] | 1,024 | Hutchinson probes per example of `eval --method ode` (each a copy of the example through the network) |
//! | model memory | three quarters of the machine's memory | a model's parameters (with gradients, optimiser moments and EMA) and a batch's activations, estimated from its configuration before it is built ([`check_model_memory`]) |

use crate::{Error, Result};

pub const MAX_SAMPLE_STEPS: usize = 100_000;
pub const MAX_SAMPLE_BYTES: u64 = 2 << 30;
pub const MAX_GRID_IMAGES: usize = 10_000;
pub const MAX_T_SAMPLES: usize = 65_536;
pub const MAX_SCHEDULE_STEPS: usize = 10_000_000;
pub const MAX_SECONDS: f64 = 4.0 * 3600.0;
pub const MAX_PROBES: usize = 1024;

/// The memory a model may need: three quarters of this machine's physical memory (16 GiB
/// where that cannot be read), and how it was found.
pub fn memory_limit() -> (u64, &'static str) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf reads system constants.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && size > 0 {
            return (
                (pages as u64).saturating_mul(size as u64) / 4 * 3,
                "three quarters of this machine's memory",
            );
        }
    }
    (16 << 30, "16 GiB: this machine's memory could not be read")
}

/// Refuse unless `force`: `what` says what was asked and what it would cost.
pub fn check(within: bool, force: bool, what: impl FnOnce() -> String) -> Result<()> {
    if within || force {
        Ok(())
    } else {
        Err(Error::Limit(what()))
    }
}

/// Bytes free for an unprivileged writer on the file system holding `dir` (`None` where that
/// cannot be read).
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid C string.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return None;
        }
        Some(st.f_bavail as u64 * st.f_frsize as u64)
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Refuse to write `bytes` into `dir` when its file system has not that much free (no --force
/// makes room).
pub fn check_disk(dir: &std::path::Path, bytes: u64, what: &str) -> Result<()> {
    match free_bytes(dir) {
        Some(free) if bytes > free => Err(Error::Invalid(format!(
            "{what}: the output would be {} and {} has {} free",
            self::bytes(bytes as f64),
            dir.display(),
            self::bytes(free as f64)
        ))),
        _ => Ok(()),
    }
}

/// A byte count for people: "1.9 GB".
pub fn bytes(b: f64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", units[0])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// A duration for people: "3.2 h", "41 s".
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() {
        "forever".into()
    } else if secs >= 86_400.0 * 365.0 {
        format!("{:.1e} years", secs / (86_400.0 * 365.0))
    } else if secs >= 86_400.0 {
        format!("{:.1} days", secs / 86_400.0)
    } else if secs >= 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else if secs >= 60.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{secs:.0} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_and_force_lifts_them() {
        let e = check(false, false, || "--n 10 costs 1 GB".into()).unwrap_err();
        assert!(e.to_string().contains("--n 10 costs 1 GB") && e.to_string().contains("--force"));
        assert!(check(false, true, || unreachable!()).is_ok());
        assert_eq!(bytes(2.0e9), "2.0 GB");
        assert_eq!(duration(7200.0), "2.0 h");
    }
}
