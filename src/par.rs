//! Work spread over threads: chunks of a job run on scoped threads, each thread with its own
//! state (a model clone: tensors of the CPU backend are used by one thread at a time), results
//! returned in chunk order. Chunks draw their noise from `rng::chunk`, so the result of a job
//! never depends on the number of threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::{Error, Result};

/// Run `f(state, i)` for every chunk `i` in `0..n`, on one thread per state; returns the
/// results in order of `i`, or the first error in that order.
pub fn map_chunks<S, T, F>(states: Vec<S>, n: usize, f: F) -> Result<Vec<T>>
where
    S: Send,
    T: Send,
    F: Fn(&mut S, usize) -> Result<T> + Sync,
{
    let slots: Mutex<Vec<Option<Result<T>>>> = Mutex::new((0..n).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let work = |mut s: S| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        // A panic in one chunk becomes that chunk's error (with its message) and stops the job.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut s, i)))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|m| m.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(Error::Invalid(format!("a worker thread panicked: {msg}")))
            });
        let failed = r.is_err();
        if let Ok(mut v) = slots.lock() {
            v[i] = Some(r);
        }
        if failed {
            // Stop handing out chunks; the error is reported below.
            next.store(n, Ordering::Relaxed);
        }
    };
    let mut states = states;
    if states.len() <= 1 || n <= 1 {
        if let Some(s) = states.pop() {
            work(s);
        }
    } else {
        std::thread::scope(|sc| {
            let hs: Vec<_> = states.into_iter().map(|s| sc.spawn(|| work(s))).collect();
            for h in hs {
                let _ = h.join();
            }
        });
    }
    let slots = slots
        .into_inner()
        .map_err(|_| Error::Invalid("a worker thread panicked".into()))?;
    let mut out = Vec::with_capacity(n);
    for s in slots {
        match s {
            Some(r) => out.push(r?),
            None => return Err(Error::Invalid("a worker thread stopped early".into())),
        }
    }
    Ok(out)
}

/// One copy of `state` per thread that `chunks` chunks can keep busy (at most `threads`).
pub fn replicas<S: Clone>(state: &S, threads: usize, chunks: usize) -> Vec<S> {
    (0..threads.clamp(1, chunks.max(1)))
        .map(|_| state.clone())
        .collect()
}

/// Run `f` on a pool of one thread, so that the operations inside it (the CPU backend's and the
/// GEMMs', which split work over the current rayon pool) run serially; inline if that pool
/// cannot be made. The operations give the same numbers either way (their splits do not change
/// the order of any sum: `train::step` tests it); only the time differs.
pub fn one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    match POOL.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok()) {
        Some(pool) => pool.install(f),
        None => f(),
    }
}

/// `$ELBO_THREADS` if it is set: a positive count, or an error naming the bad value.
pub fn env_threads() -> Result<Option<usize>> {
    match std::env::var("ELBO_THREADS") {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(t) if t > 0 => Ok(Some(t)),
            _ => Err(Error::Invalid(format!(
                "ELBO_THREADS={v:?}: expected a positive number of threads"
            ))),
        },
    }
}

/// Keep freed memory in the process instead of returning it to the system (glibc): tensors of a
/// training step are allocated and freed every step, and with glibc's defaults each large one
/// is a fresh `mmap` whose pages fault in again (measured: a quarter of a U-Net step in page
/// faults and `munmap`). Blocks up to 32 MiB come from the heap, and the heap is trimmed only
/// above 1 GiB of free space at its top. Called once at start-up, before any thread starts.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// Threads to use by default: `$ELBO_THREADS` if set (any positive count; the command line
/// refuses a bad value at start-up), else the cores this process may run on (its CPU affinity
/// and cgroup quota), shared evenly with the other MPI ranks on this machine when an MPI
/// launcher started several. There is no ceiling: a step's batch is cut into one shard per
/// thread (`train::step`), so on a large machine the shards of the default batch of 32 get small;
/// `--set threads=N` or `$ELBO_THREADS` chooses fewer.
pub fn default_threads() -> usize {
    if let Ok(Some(t)) = env_threads() {
        return t;
    }
    let usable = std::thread::available_parallelism().map_or(1, |n| n.get());
    match crate::comm::launcher_local_size() {
        Some(local) if local > 1 => usable.min((online_cpus() / local).max(1)),
        _ => usable,
    }
}

/// The machine's online CPUs (all of them, whatever this process's affinity).
fn online_cpus() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf reads a system constant.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        if n > 0 {
            return n as usize;
        }
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_in_order_and_errors_surface() {
        let r = map_chunks(vec![(), (), ()], 10, |_, i| Ok(i * i)).unwrap();
        assert_eq!(r, (0..10).map(|i| i * i).collect::<Vec<_>>());
        let e = map_chunks(vec![(), ()], 10, |_, i| {
            if i == 3 {
                Err(Error::Invalid("chunk 3".into()))
            } else {
                Ok(i)
            }
        });
        assert!(matches!(e, Err(Error::Invalid(m)) if m == "chunk 3"));
        // A panic in a chunk is an error that carries its message, not a crash.
        let p = map_chunks(vec![(), ()], 6, |_, i| {
            if i == 2 {
                panic!("bad chunk");
            }
            Ok(i)
        });
        assert!(matches!(p, Err(Error::Invalid(m)) if m.contains("bad chunk")));
    }
}
