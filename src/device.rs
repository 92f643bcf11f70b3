//! Choosing where tensors live: the Flex CPU backend by default, CUDA with the `cuda` feature.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A compute device, as chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// Burn's Flex CPU backend (AVX-512 matrix kernels where the CPU has them).
    #[default]
    Cpu,
    /// NVIDIA GPU through Burn's CUDA backend (needs a build with `--features cuda`).
    Cuda,
}

crate::choice!(DeviceKind {
    Cpu = "cpu": "Burn's Flex CPU backend",
    Cuda = "cuda": "an NVIDIA GPU through Burn's CUDA backend (needs a build with --features cuda)",
});

/// The device, with or without autodiff.
pub fn device(kind: DeviceKind, autodiff: bool) -> Result<Device> {
    let d = match kind {
        DeviceKind::Cpu => Device::flex(),
        DeviceKind::Cuda => cuda_device()?,
    };
    Ok(if autodiff { d.autodiff() } else { d })
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device> {
    Ok(Device::cuda(0usize))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Device> {
    Err(Error::Invalid(
        "this binary was built without CUDA; rebuild with `cargo build --release --features cuda`"
            .into(),
    ))
}
