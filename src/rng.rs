//! The project's own random numbers: one seedable, serialisable generator passed explicitly to
//! everything that draws noise, so that a run can be saved and resumed bit for bit. (A backend's
//! global generator cannot be saved, so exact resume cannot rest on it.)

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng as _, SeedableRng};
use rand_distr::StandardNormal;

/// RNG streams, so that each use of randomness is independent of the others.
pub mod streams {
    pub const TRAIN_NOISE: u64 = 1;
    pub const STATIC_BINARIZE: u64 = 2;
    pub const EVAL_BINARIZE: u64 = 3;
    pub const EVAL_NOISE: u64 = 4;
    pub const EVAL_IW: u64 = 5;
    /// Label dropout of conditional training (the null class, M43).
    pub const LABEL_DROPOUT: u64 = 6;
    pub const SAMPLE_NOISE: u64 = 0x5a;
    /// The decoder's draws of a latent model's samples (after its prior's).
    pub const DECODE_NOISE: u64 = 0x5b;
    /// The trial steps that time a model's operations on one thread and on all
    /// (`train::step::choose_ops`): never the run's own noise.
    pub const OPS_TRIAL: u64 = 0x5c;
}

/// The generator: ChaCha8, whose full state serialises with serde.
pub type Rng = rand_chacha::ChaCha8Rng;

/// A generator from a seed.
pub fn seeded(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// A generator derived from a seed and a stream label (data order, binarisation, evaluation noise
/// each get their own, so that changing one never shifts another).
pub fn derived(seed: u64, stream: u64) -> Rng {
    let mut r = Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// `n` draws from N(0, 1).
pub fn normal_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// `n` draws from U[0, 1).
pub fn uniform_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen::<f32>()).collect()
}

/// A tensor of N(0, 1) draws.
pub fn randn<const D: usize>(rng: &mut Rng, shape: [usize; D], device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(normal_vec(rng, n), shape), device)
}

/// A tensor of U[0, 1) draws.
pub fn rand_uniform<const D: usize>(
    rng: &mut Rng,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(uniform_vec(rng, n), shape), device)
}

/// The generator of chunk `index` of a job: independent of how chunks are spread over threads,
/// so results depend on the seed only, never on the thread count.
pub fn chunk(seed: u64, stream: u64, index: u64) -> Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&index.to_le_bytes());
    key[16..24].copy_from_slice(&stream.to_le_bytes());
    key[24..].copy_from_slice(b"elbo:chk");
    let mut r = Rng::from_seed(key);
    r.set_stream(stream);
    r
}
