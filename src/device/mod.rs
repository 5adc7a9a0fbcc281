//! Devices that run our CUDA kernels: allocate, copy, launch by kernel name.
//!
//! - `mod.rs` (this file): the [`Device`] trait and kernel arguments. Launch code (grid sizes,
//!   argument order, workspace sizes) is written once against this trait, so the emulated device
//!   exercises exactly the code that drives the real GPU.
//! - `emu.rs`: the CPU emulation of the CUDA execution model (the same `kernels/*.cu`, compiled
//!   by the host C++ compiler against `emu/cuda_emu.h`); feature `emu`.
//! - `cuda.rs` (feature `cuda`): the real GPU through cudarc (driver API, loaded dynamically),
//!   running the fatbinaries `build.rs` made with nvcc.
//! - `record.rs`: a device that runs nothing and records what the engine asks of it (launches,
//!   allocations, copies, host syncs, multiply-adds): `deepviz trace`, the no-GPU measure of the
//!   engine's overheads.
//! - `graph.rs`: `Graphed`, the launch queue every engine device sits behind, replaying repeated
//!   runs of launches as captured graphs (CUDA graphs on the GPU), and the `Capture` trait the
//!   three devices implement.
//!
//! Kernel names are `{op}_{variant}_{dtype}` ([`kernel_name`]); the convention for arguments is
//! CUDA's `kernelParams`: one pointer per parameter, pointing at the value.

use crate::error::Result;

#[cfg(feature = "emu")]
pub mod emu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod graph;
pub mod record;

/// A device allocation: an address on the device (or in the emulator's guarded heap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevicePtr(pub u64);

/// One kernel argument, passed by value as the kernel's parameter list declares it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// a device address (`T*`)
    Ptr(DevicePtr),
    /// `long long`
    I64(i64),
    /// `int`
    I32(i32),
    /// `unsigned`
    U32(u32),
    /// `float`
    F32(f32),
}

/// CUDA's `kernelParams` convention, shared by both devices: one 8-byte slot per argument
/// holding its value as the kernel's parameter type reads it (little-endian, so a 4-byte value
/// sits in the slot's first bytes). The caller passes pointers to these slots.
#[cfg(any(feature = "cuda", feature = "emu"))]
pub(crate) fn param_slots(args: &[Arg]) -> Vec<u64> {
    args.iter()
        .map(|a| match *a {
            Arg::Ptr(p) => p.0,
            Arg::I64(v) => v as u64,
            Arg::I32(v) => v as u32 as u64,
            Arg::U32(v) => v as u64,
            Arg::F32(v) => v.to_bits() as u64,
        })
        .collect()
}

/// Launch geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    /// blocks per grid (x, y, z)
    pub grid: [u32; 3],
    /// threads per block (x, y, z)
    pub block: [u32; 3],
    /// dynamic shared memory in bytes
    pub shared_bytes: u32,
}

impl LaunchConfig {
    /// A 1-d launch covering `n` elements with `threads` per block.
    pub fn linear(n: usize, threads: u32) -> Self {
        let blocks = n.div_ceil(threads as usize).max(1) as u32;
        LaunchConfig { grid: [blocks, 1, 1], block: [threads, 1, 1], shared_bytes: 0 }
    }
}

/// `{op}_{variant}_{dtype}`, the one way kernel symbols are named.
pub fn kernel_name(op: &str, variant: &str, dtype: &str) -> String {
    format!("{op}_{variant}_{dtype}")
}

/// A device that runs our kernels: allocate, copy, launch by name (the real GPU, its CPU
/// emulation, or a recorder).
pub trait Device: Send + Sync {
    /// What to call it in messages.
    fn name(&self) -> &str;
    /// Allocate `bytes` (uninitialised). Running out of memory is an error naming the size asked
    /// for and what is free.
    fn alloc(&self, bytes: usize) -> Result<DevicePtr>;
    /// (free, total) bytes of device memory, where the device has a limit to report.
    fn memory(&self) -> Option<(usize, usize)> {
        None
    }
    /// Give back an allocation of [`Device::alloc`].
    fn free(&self, ptr: DevicePtr);
    /// Copy `src` to the device at `dst`.
    fn upload(&self, dst: DevicePtr, src: &[u8]) -> Result<()>;
    /// Copy the device's bytes at `src` into `dst`.
    fn download(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()>;
    /// Zero `bytes` bytes at `dst`.
    fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()>;
    /// Launch `kernel` (a name made by [`kernel_name`]); errors name the kernel.
    fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()>;
    /// Wait for all launched work; reports asynchronous faults.
    fn synchronize(&self) -> Result<()>;
    /// Whether this device has a kernel of that name.
    fn has_kernel(&self, kernel: &str) -> bool;
    /// The launch about to be made of `kernel` performs `executed` multiply-adds, of which
    /// `useful` are the operation's own (the rest: padding, tile remainders, zero taps). Launch
    /// code of the GEMM-like kernels reports it; only a recording device listens.
    fn account(&self, _kernel: &str, _executed: u64, _useful: u64) {}
    /// `bytes` at `ptr` were handed out again by a caching allocator: a device that poisons
    /// fresh memory (the emulator's NaN fill) poisons them again, so an unwritten output still
    /// shows.
    fn reused(&self, _ptr: DevicePtr, _bytes: usize) {}
    /// Streaming multiprocessors: what a grid must cover to fill the card (the launch code's
    /// split-K choice reads it). Devices that run no card (the emulator, the recorder) answer
    /// as an H200 does ([`record::SMS`]), so that they launch what the lent card would.
    fn multiprocessors(&self) -> usize {
        record::SMS as usize
    }
}
