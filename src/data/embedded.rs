//! mnist10k inside the binary: 10,000 real MNIST digits (see assets/mnist10k/README.md for their
//! provenance and licence), so that a fresh clone trains with no download.

/// gzip IDX images, 10000 x 28 x 28, u8.
pub const IMAGES: &[u8] = include_bytes!("../../assets/mnist10k/images-idx3-ubyte.gz");
/// gzip IDX labels, 10000, u8 in 0..=9.
pub const LABELS: &[u8] = include_bytes!("../../assets/mnist10k/labels-idx1-ubyte.gz");
/// The fixed split: the first 9,000 images train, the last 1,000 test.
pub const TRAIN_COUNT: usize = 9_000;
