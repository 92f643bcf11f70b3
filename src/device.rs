//! Choosing where tensors live: the Flex CPU backend by default, CUDA with the `cuda` feature;
//! and everything that depends on the device: several GPUs in one process, and the sum of their
//! gradients with Burn's collective all-reduce (NCCL on CUDA).
//!
//! Status: nothing here has run on a GPU yet. Only [`Device::cuda`] is behind the `cuda` feature;
//! the device list, the collective context and the all-reduce compile in every build.
//! `bench/gpu_check.sh` is the one command that checks them on the first machine with a GPU.

use burn::tensor::distributed::{
    all_reduce, DistributedConfig, DistributedContext, ReduceOperation,
};
use burn::tensor::{Device, Tensor};
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

fn cuda_device() -> Result<Device> {
    cuda_device_at(0)
}

#[cfg(feature = "cuda")]
fn cuda_device_at(index: usize) -> Result<Device> {
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device_at(_: usize) -> Result<Device> {
    Err(Error::Invalid(
        "this binary was built without CUDA; rebuild with `cargo build --release --features cuda`"
            .into(),
    ))
}

/// `count` devices of `kind` for one process, each running its own shard of every step (with or
/// without autodiff). Several devices are GPUs: on the CPU the cores are shared by threads
/// (`--set threads=N`) and by MPI ranks instead, and Flex has no collective operations.
pub fn devices(kind: DeviceKind, count: usize, autodiff: bool) -> Result<Vec<Device>> {
    match (kind, count) {
        (_, 0) => Err(Error::Invalid("--devices must be at least 1".into())),
        (_, 1) => Ok(vec![device(kind, autodiff)?]),
        (DeviceKind::Cpu, n) => Err(Error::Invalid(format!(
            "--devices {n} needs GPUs (--device cuda): on the CPU, threads (--set threads=N) \
             and MPI ranks (mpirun with a build with --features mpi) share the cores"
        ))),
        (DeviceKind::Cuda, n) => (0..n)
            .map(|i| cuda_device_at(i).map(|d| if autodiff { d.autodiff() } else { d }))
            .collect(),
    }
}

/// Starts the collective operations among `devices` (several GPUs), for as long as the returned
/// context lives; `None` for one device.
pub fn collectives(devices: &[Device]) -> Option<DistributedContext> {
    (devices.len() > 1).then(|| {
        let inner: Vec<Device> = devices.iter().map(|d| d.clone().inner()).collect();
        DistributedContext::init(
            inner,
            DistributedConfig {
                all_reduce_op: ReduceOperation::Sum,
            },
        )
    })
}

/// The sum of `t` over `devices`, each of which holds one such tensor: called once per device,
/// from one thread per device, every thread making its calls in the same order (Burn's
/// `all_reduce`, NCCL on CUDA; the result is on every device).
pub fn sum_across(t: Tensor<1>, devices: &[Device]) -> Tensor<1> {
    let inner: Vec<Device> = devices.iter().map(|d| d.clone().inner()).collect();
    all_reduce(t, ReduceOperation::Sum, inner).resolve()
}
