//! Property tests of the data readers (IDX, NPY, CSV): arbitrary bytes and arbitrary mutations of
//! valid files never panic and never allocate beyond what the file can back; valid files
//! round-trip.
//!
//! Allocation is measured by this test binary's global allocator (peak bytes live during one
//! parse), so this file holds a single test: the peak is then the reader's own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use elbo::data::csv::parse_csv;
use elbo::data::idx::{encode_idx_u8, parse_idx_file};
use elbo::data::npy::{encode_npy_f32, parse_npy};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated at the peak of `f`, above what was live before it.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let r = f();
    (r, PEAK.load(Ordering::SeqCst).saturating_sub(base))
}

/// What a reader may allocate for a file of `len` bytes: its values as f32 (at most 4 per
/// input byte, for u8 data), the parse's working copies, and a fixed 64 KiB. A reader that
/// trusted a header's claimed size would blow far past it. Gzip input (magic 1f 8b) may expand
/// up to 1032:1, which the IDX reader checks against the header itself; it is exempt here.
fn bound(len: usize) -> usize {
    12 * len + 64 * 1024
}

/// Apply mutations (position, new byte) and an optional truncation to a valid file.
fn mutate(mut bytes: Vec<u8>, muts: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(i, b) in muts {
        if !bytes.is_empty() {
            let n = bytes.len();
            bytes[i % n] = b;
        }
    }
    if let Some(c) = cut {
        let n = bytes.len();
        bytes.truncate(c % (n + 1));
    }
    bytes
}

/// A reader under test: parse bytes, say whether they were accepted.
type Reader = dyn Fn(&[u8]) -> Result<(), String>;

fn check_reader(name: &str, bytes: &[u8], parse: &Reader) -> Result<(), TestCaseError> {
    let (r, peak) =
        peak_of(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(bytes))));
    prop_assert!(r.is_ok(), "{name} panicked on {} bytes", bytes.len());
    let gz = bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
    if !gz {
        prop_assert!(
            peak <= bound(bytes.len()),
            "{name}: {peak} bytes allocated for a {}-byte file",
            bytes.len()
        );
    }
    Ok(())
}

fn idx(b: &[u8]) -> Result<(), String> {
    parse_idx_file(b, Path::new("x.idx"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}
fn npy(b: &[u8]) -> Result<(), String> {
    parse_npy(b, Path::new("x.npy"))
        .map(|_| ())
        .map_err(|e| e.to_string())
}
fn csv(b: &[u8]) -> Result<(), String> {
    match std::str::from_utf8(b) {
        Ok(t) => parse_csv(t, Path::new("x.csv"))
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(_) => Ok(()), // read_csv refuses non-UTF-8 before parsing
    }
}

#[test]
fn readers_never_panic_never_overallocate_and_round_trip() {
    let mut runner = TestRunner::new(Config {
        cases: 600,
        ..Config::default()
    });
    let readers: [(&str, &Reader); 3] = [("idx", &idx), ("npy", &npy), ("csv", &csv)];

    // Arbitrary bytes.
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..512), |bytes| {
            for (name, f) in &readers {
                check_reader(name, &bytes, *f)?;
            }
            Ok(())
        })
        .unwrap();

    // Valid files, mutated and truncated; unmutated ones round-trip exactly.
    let shape = (1usize..6, 1usize..6, 1usize..6);
    let muts = proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6);
    runner
        .run(
            &(
                shape,
                proptest::collection::vec(any::<u8>(), 0..216),
                muts,
                proptest::option::of(any::<usize>()),
            ),
            |((n, h, w), data, muts, cut)| {
                let len = n * h * w;
                let data: Vec<u8> = (0..len)
                    .map(|i| data.get(i).copied().unwrap_or(i as u8))
                    .collect();
                let floats: Vec<f32> = data.iter().map(|&b| b as f32 - 100.5).collect();
                let files: [(&str, Vec<u8>); 3] = [
                    ("idx", encode_idx_u8(&[n as u32, h as u32, w as u32], &data)),
                    ("npy", encode_npy_f32(n, h * w, &floats)),
                    (
                        "csv",
                        floats
                            .chunks(h * w)
                            .map(|r| {
                                r.iter()
                                    .map(|v| v.to_string())
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                            .into_bytes(),
                    ),
                ];
                // Round trips.
                let a = parse_idx_file(&files[0].1, Path::new("x")).unwrap();
                prop_assert_eq!(a.dims, vec![n, h, w]);
                prop_assert_eq!(a.values, data.iter().map(|&b| b as f32).collect::<Vec<_>>());
                let b = parse_npy(&files[1].1, Path::new("x")).unwrap();
                prop_assert_eq!((b.rows, b.cols), (n, h * w));
                prop_assert_eq!(&b.values, &floats);
                let c =
                    parse_csv(std::str::from_utf8(&files[2].1).unwrap(), Path::new("x")).unwrap();
                prop_assert_eq!((c.rows, c.cols), (n, h * w));
                prop_assert_eq!(&c.values, &floats);
                // Mutations and truncations.
                for ((name, bytes), (_, f)) in files.iter().zip(&readers) {
                    let m = mutate(bytes.clone(), &muts, cut);
                    check_reader(name, &m, *f)?;
                }
                Ok(())
            },
        )
        .unwrap();
}
