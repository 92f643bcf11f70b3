//! The cost of summing a gradient across MPI ranks, by size: what data-parallel training pays
//! per step beside its compute (BENCHMARKS.md, data parallelism). Needs `--features mpi`:
//!
//! ```text
//! cargo build --release --features mpi --example allreduce
//! mpirun -np 2 target/release/examples/allreduce
//! ```
//!
//! Prints, on rank 0, one line per size: floats, the median seconds of 20 all-reduces (after 3
//! unmeasured), and nanoseconds per parameter.

#[cfg(feature = "mpi")]
fn main() {
    use elbo::comm::{Comm, Mpi};
    let comm = match Mpi::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if comm.is_root() {
        println!("ranks\tfloats\tmedian_s\tns_per_param");
    }
    for floats in [
        1_000usize, 10_000, 100_000, 1_000_000, 4_000_000, 16_000_000,
    ] {
        let mut buf: Vec<f32> = (0..floats).map(|i| (i % 7) as f32).collect();
        let mut times = Vec::new();
        for round in 0..23 {
            comm.barrier();
            let t = std::time::Instant::now();
            comm.sum_f32(&mut buf);
            // The slowest rank's time is the step's.
            let s = t.elapsed().as_secs_f64();
            let slowest = comm.gather_f64(&[s]).into_iter().fold(0.0, f64::max);
            if round >= 3 {
                times.push(slowest);
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let med = times[times.len() / 2];
        if comm.is_root() {
            println!(
                "{}\t{floats}\t{med:.6}\t{:.3}",
                comm.size(),
                1e9 * med / floats as f64
            );
        }
    }
}

#[cfg(not(feature = "mpi"))]
fn main() {
    eprintln!("error: build with --features mpi (see the top of examples/allreduce.rs)");
    std::process::exit(1);
}
