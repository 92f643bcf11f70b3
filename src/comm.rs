//! Processes that train one model together: the collective operations data-parallel training
//! needs (a sum over ranks, a gather in rank order, a broadcast from rank 0, a barrier), behind
//! one trait. [`Solo`] is the one process of an ordinary run; with the `mpi` cargo feature,
//! [`Mpi`] is the world of an `mpirun -np N elbo train …` launch, through the `mpi` crate
//! (rsmpi) over the system's MPI library (Open MPI or MPICH).
//!
//! Every rank computes the same thing in the same order except its share of the batch, so the
//! only values that cross ranks are the gradient sum, the loss, the proposal's draws and rank 0's
//! decision to stop.

use std::cell::Cell;
use std::time::Instant;

use crate::Result;

/// The collective operations of data-parallel training. Calls are collective: every rank makes
/// the same calls in the same order, with buffers of the same length (except [`Comm::gather`]).
pub trait Comm {
    /// This process's rank, 0..size.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Element-wise sum over ranks, in place, the same on every rank.
    fn sum_f32(&self, buf: &mut [f32]);
    /// Element-wise sum over ranks, in place, the same on every rank.
    fn sum_f64(&self, buf: &mut [f64]);
    /// Every rank's `local` concatenated in rank order (lengths may differ), on every rank.
    fn gather_f64(&self, local: &[f64]) -> Vec<f64>;
    /// Rank 0's `buf` on every rank.
    fn broadcast_u64(&self, buf: &mut [u64]);
    /// Wait for every rank.
    fn barrier(&self);
    /// Seconds spent in the operations above so far (communication and waiting).
    fn seconds(&self) -> f64;
    /// End every rank at once with `code` (a rank that failed while the others wait for it in
    /// a collective call). One process simply exits.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    /// Whether this rank writes (the run directory, metrics, checkpoints, terminal output).
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process: every operation is the identity.
#[derive(Debug, Default)]
pub struct Solo;

impl Comm for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) {}
    fn sum_f64(&self, _: &mut [f64]) {}
    fn gather_f64(&self, local: &[f64]) -> Vec<f64> {
        local.to_vec()
    }
    fn broadcast_u64(&self, _: &mut [u64]) {}
    fn barrier(&self) {}
    fn seconds(&self) -> f64 {
        0.0
    }
}

/// Rank 0's bytes on every rank (the length first, then the bytes packed in u64s).
pub fn broadcast_bytes(comm: &dyn Comm, bytes: &mut Vec<u8>) {
    if comm.size() == 1 {
        return;
    }
    let mut n = [bytes.len() as u64];
    comm.broadcast_u64(&mut n);
    let n = n[0] as usize;
    let mut words: Vec<u64> = vec![0; n.div_ceil(8)];
    for (w, c) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        *w = u64::from_le_bytes(b);
    }
    comm.broadcast_u64(&mut words);
    *bytes = words.iter().flat_map(|w| w.to_le_bytes()).take(n).collect();
}

/// The world size an MPI launcher announced in the environment (Open MPI's `mpirun`;
/// `PMI_SIZE` from MPICH's Hydra, Intel MPI and Slurm's `srun --mpi=pmi2`), if any.
/// (`MPI_LOCALNRANKS` is the count on one machine, not the world's: see
/// [`launcher_local_size`].)
pub fn launcher_world_size() -> Option<usize> {
    env_count(&["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"])
}

/// How many ranks share this machine, as the launcher announced it (Open MPI, MPICH/Hydra).
pub fn launcher_local_size() -> Option<usize> {
    env_count(&["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"])
}

/// The first of `keys` set to a whole number.
fn env_count(keys: &[&str]) -> Option<usize> {
    keys.iter()
        .find_map(|k| std::env::var(k).ok()?.trim().parse::<usize>().ok())
}

/// The communicator of this process: MPI's world when the binary has the `mpi` feature and an
/// MPI launcher started it, else [`Solo`]. A launch of several ranks without the feature is
/// refused (each rank would otherwise train the whole run on its own, into the same directory).
pub fn from_launch() -> Result<Box<dyn Comm>> {
    match launcher_world_size() {
        Some(n) if n > 1 => {
            #[cfg(feature = "mpi")]
            {
                Ok(Box::new(Mpi::init()?))
            }
            #[cfg(not(feature = "mpi"))]
            {
                Err(crate::Error::Invalid(format!(
                    "started by an MPI launcher with {n} ranks, but this binary was built without \
                     MPI: rebuild with `cargo build --release --features mpi` (needs the MPI \
                     library and libclang: `apt-get install libopenmpi-dev openmpi-bin \
                     libclang-dev`)"
                )))
            }
        }
        _ => Ok(Box::new(Solo)),
    }
}

/// Time spent in collectives, kept by implementations.
#[derive(Debug, Default)]
pub struct Clock(Cell<f64>);

impl Clock {
    /// Run `f`, adding its wall time.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        self.0.set(self.0.get() + t.elapsed().as_secs_f64());
        r
    }
    pub fn seconds(&self) -> f64 {
        self.0.get()
    }
}

#[cfg(feature = "mpi")]
pub use with_mpi::Mpi;

#[cfg(feature = "mpi")]
mod with_mpi {
    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::datatype::PartitionMut;
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::Count;

    use super::{Clock, Comm};
    use crate::{Error, Result};

    /// MPI's world communicator; MPI is finalised when this is dropped.
    pub struct Mpi {
        world: SimpleCommunicator,
        clock: Clock,
        // Dropped last: finalises MPI.
        _universe: Universe,
    }

    impl Mpi {
        /// Initialise MPI (once per process).
        pub fn init() -> Result<Mpi> {
            let universe = mpi::initialize().ok_or_else(|| {
                Error::Invalid("MPI was already initialised in this process".into())
            })?;
            Ok(Mpi {
                world: universe.world(),
                clock: Clock::default(),
                _universe: universe,
            })
        }
    }

    impl Comm for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn sum_f32(&self, buf: &mut [f32]) {
            self.clock.time(|| {
                let send = buf.to_vec();
                self.world
                    .all_reduce_into(&send[..], buf, SystemOperation::sum());
            })
        }
        fn sum_f64(&self, buf: &mut [f64]) {
            self.clock.time(|| {
                let send = buf.to_vec();
                self.world
                    .all_reduce_into(&send[..], buf, SystemOperation::sum());
            })
        }
        fn gather_f64(&self, local: &[f64]) -> Vec<f64> {
            self.clock.time(|| {
                let n = self.size();
                let mut counts: Vec<Count> = vec![0; n];
                self.world
                    .all_gather_into(&(local.len() as Count), &mut counts[..]);
                let displs: Vec<Count> = counts
                    .iter()
                    .scan(0, |acc, &c| {
                        let d = *acc;
                        *acc += c;
                        Some(d)
                    })
                    .collect();
                let total: Count = counts.iter().sum();
                let mut out = vec![0f64; total as usize];
                {
                    let mut part = PartitionMut::new(&mut out[..], counts, displs);
                    self.world.all_gather_varcount_into(local, &mut part);
                }
                out
            })
        }
        fn broadcast_u64(&self, buf: &mut [u64]) {
            self.clock.time(|| {
                self.world.process_at_rank(0).broadcast_into(buf);
            })
        }
        fn barrier(&self) {
            self.clock.time(|| self.world.barrier())
        }
        fn seconds(&self) -> f64 {
            self.clock.seconds()
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}
