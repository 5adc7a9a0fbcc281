//! The emulated device: our CUDA kernels compiled for the CPU (`emu/cuda_emu.h`) and run by
//! `emu/runtime.cpp`, which emulates the execution model closely enough to catch real bugs:
//!
//! - the threads of a block are fibers that really wait for each other at `__syncthreads()` and
//!   at warp operations, run in a chosen [`Schedule`] between barriers, so a missing barrier
//!   gives a wrong answer under at least one schedule (run op tests under [`Schedule::ALL`]);
//! - every allocation ends at a guard page and starts after a canary, so a kernel reading or
//!   writing past the end, or writing before the start, makes `launch` fail naming the kernel,
//!   the thread and the distance; fresh allocations hold 0xFF bytes (NaN) so unwritten outputs
//!   show up;
//! - arguments are checked against the kernel's parameter list (count and kind), and pointer
//!   arguments must point into live allocations.
//!
//! Launches are synchronous: a fault is reported by the `launch` that caused it. Blocks run on
//! up to `DV_EMU_THREADS` OS threads (default: the number of cores, at most 4).
//!
//! What it does not see: races between threads that no schedule order exposes (it runs each
//! thread until it blocks, never preempts); reads just before an allocation's start (writes there
//! are caught by the canary); out-of-bounds accesses to static `__shared__` arrays, whose
//! contents are also not poisoned (they carry over between blocks); a thread spinning on a value
//! another thread of its block will write hangs. Threads that exited count as arrived at
//! `__syncthreads()`, as on the hardware.

use std::ffi::{c_char, c_int, c_ulong, c_ulonglong, c_void, CString};

use super::graph::{Capture, HostCapture, Op};
use super::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::{Error, Result};

extern "C" {
    fn dv_emu_launch_ex(
        name: *const c_char,
        grid: *const u32,
        block: *const u32,
        shared_bytes: u32,
        args: *mut *mut c_void,
        kinds: *const c_char,
        mode: c_int,
        seed: c_ulonglong,
        err: *mut c_char,
        errlen: c_ulong,
    ) -> c_int;
    fn dv_emu_malloc(bytes: c_ulong) -> *mut c_void;
    fn dv_emu_free(p: *mut c_void);
    fn dv_emu_lookup(p: *const c_void, base: *mut *mut c_void, size: *mut c_ulong) -> c_int;
    fn dv_emu_available_bytes() -> c_ulong;
    fn dv_emu_has_kernel(name: *const c_char) -> c_int;
}

/// The order in which the threads of a block run between two barriers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// thread 0 first
    Forward,
    /// the last thread first
    Reverse,
    /// a fresh permutation at every barrier, from this seed (deterministic)
    Shuffled(u64),
}

impl Schedule {
    /// One of each kind: a kernel that is right under all of them has no missing barrier that
    /// the emulator can see.
    pub const ALL: [Schedule; 3] = [Schedule::Forward, Schedule::Reverse, Schedule::Shuffled(0x5EED)];

    fn mode_seed(self) -> (c_int, u64) {
        match self {
            Schedule::Forward => (0, 0),
            Schedule::Reverse => (1, 0),
            Schedule::Shuffled(seed) => (2, seed),
        }
    }
}

/// The CPU emulation of a CUDA device. Each device has its own [`Schedule`], so tests running in
/// parallel do not share a setting.
#[derive(Debug)]
pub struct EmuDevice {
    schedule: std::sync::Mutex<Schedule>,
    name: String,
    /// a device memory of this many bytes ([`EmuDevice::with_memory_limit`]); `None`: the host's
    limit: Option<usize>,
    /// bytes of the live allocations
    used: std::sync::atomic::AtomicUsize,
    /// a graph capture in progress ([`Capture`])
    capture: HostCapture,
}

impl Default for EmuDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl EmuDevice {
    /// Forward scheduling.
    pub fn new() -> Self {
        Self::with_schedule(Schedule::Forward)
    }

    /// Launches run their blocks' threads in `schedule`'s order between barriers.
    pub fn with_schedule(schedule: Schedule) -> Self {
        EmuDevice { schedule: std::sync::Mutex::new(schedule), name: format!("emulated GPU ({schedule:?} schedule)"), limit: None, used: Default::default(), capture: HostCapture::default() }
    }

    /// A device of `bytes` of memory, as a GPU's is finite: an allocation past it fails with
    /// [`Error::OutOfMemory`], as `cuMemAlloc` does (bytes asked, not the emulator's guard
    /// pages, are counted). For the tests of what a job does when the GPU runs out.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.limit = Some(bytes);
        self.name = format!("{} with {} MiB", self.name, bytes >> 20);
        self
    }

    /// The order launches use now.
    pub fn schedule(&self) -> Schedule {
        *self.schedule.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Later launches on this device use `schedule`.
    pub fn set_schedule(&self, schedule: Schedule) {
        *self.schedule.lock().unwrap_or_else(|e| e.into_inner()) = schedule;
    }

    /// Checks that `[ptr, ptr + bytes)` lies in one live allocation.
    fn check_range(&self, what: &str, ptr: DevicePtr, bytes: usize) -> Result<()> {
        let (mut base, mut size): (*mut c_void, c_ulong) = (std::ptr::null_mut(), 0);
        // SAFETY: dv_emu_lookup only reads the heap table; the out-pointers are valid locals.
        let found = unsafe { dv_emu_lookup(ptr.0 as *const c_void, &mut base, &mut size) } != 0;
        if !found {
            return Err(Error::InvalidArgument(format!(
                "emulated device: {what} of {bytes} bytes at {:#x}: not in any device allocation",
                ptr.0
            )));
        }
        let offset = ptr.0 - base as u64;
        if offset + bytes as u64 > size {
            return Err(Error::InvalidArgument(format!(
                "emulated device: {what} of {bytes} bytes at offset {offset} of a {size}-byte allocation"
            )));
        }
        Ok(())
    }
}

fn c_name(kernel: &str) -> Result<CString> {
    CString::new(kernel).map_err(|_| Error::InvalidArgument(format!("kernel name {kernel:?} contains a NUL byte")))
}

impl Device for EmuDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        use std::sync::atomic::Ordering;
        self.capture.refuse(&self.name, "an allocation")?;
        if let Some(limit) = self.limit {
            if let Err(used) = self.used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| (u + bytes <= limit).then_some(u + bytes)) {
                return Err(Error::OutOfMemory { device: self.name.clone(), asked: bytes, free: limit - used, total: limit, fits: None });
            }
        }
        // SAFETY: plain allocation call; null means failure.
        let p = unsafe { dv_emu_malloc(bytes as c_ulong) };
        if p.is_null() {
            self.used.fetch_sub(bytes, std::sync::atomic::Ordering::SeqCst);
            // SAFETY: no arguments.
            let free = unsafe { dv_emu_available_bytes() };
            return Err(Error::InvalidArgument(format!(
                "emulated device: cannot allocate {bytes} bytes ({free} bytes of host memory free)"
            )));
        }
        Ok(DevicePtr(p as u64))
    }

    fn memory(&self) -> Option<(usize, usize)> {
        self.limit.map(|l| (l - self.used.load(std::sync::atomic::Ordering::SeqCst), l))
    }

    fn free(&self, ptr: DevicePtr) {
        if self.capture.refuse(&self.name, "a free").is_err() {
            return;
        }
        let (mut base, mut size): (*mut c_void, c_ulong) = (std::ptr::null_mut(), 0);
        // SAFETY: a lookup of the allocation `ptr` starts (writes two values)
        if unsafe { dv_emu_lookup(ptr.0 as *const c_void, &mut base, &mut size) } != 0 && base as u64 == ptr.0 {
            self.used.fetch_sub(size as usize, std::sync::atomic::Ordering::SeqCst);
        }
        // SAFETY: unknown pointers are ignored by the runtime.
        unsafe { dv_emu_free(ptr.0 as *mut c_void) }
    }

    fn upload(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        self.capture.refuse(&self.name, "an upload")?;
        self.check_range("upload", dst, src.len())?;
        // SAFETY: the destination range was checked to lie in a live, writable allocation.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.0 as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        self.capture.refuse(&self.name, "a download")?;
        self.check_range("download", src, dst.len())?;
        // SAFETY: the source range was checked to lie in a live allocation.
        unsafe { std::ptr::copy_nonoverlapping(src.0 as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()> {
        self.check_range("memset", dst, bytes)?;
        if self.capture.record(|| Op::Memset { dst, bytes }) {
            return Ok(());
        }
        // SAFETY: the range was checked to lie in a live, writable allocation.
        unsafe { std::ptr::write_bytes(dst.0 as *mut u8, 0, bytes) };
        Ok(())
    }

    fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        let name = c_name(kernel)?;
        if self.capture.active() {
            // as cuLaunchKernel during capture: a missing function fails now, the rest on replay
            if !self.has_kernel(kernel) {
                return Err(Error::InvalidArgument(format!("emulated device: no kernel `{kernel}`")));
            }
            if self.capture.record(|| Op::Launch { kernel: kernel.to_string(), cfg, args: args.to_vec() }) {
                return Ok(());
            }
        }
        // kernelParams: one pointer per parameter, pointing at its slot
        let mut slots: Vec<u64> = super::param_slots(args);
        let kinds: String = args
            .iter()
            .map(|a| match a {
                Arg::Ptr(_) => 'p',
                Arg::I64(_) => 'l',
                Arg::I32(_) => 'i',
                Arg::U32(_) => 'u',
                Arg::F32(_) => 'f',
            })
            .collect();
        let kinds = CString::new(kinds).expect("kind letters contain no NUL");
        let mut ptrs: Vec<*mut c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
        let (mode, seed) = self.schedule().mode_seed();
        let mut err = vec![0u8; 2048];
        // SAFETY: `ptrs` points at `slots`, both alive until the synchronous launch returns; the
        // runtime checks the argument kinds against the kernel's parameter list before reading
        // them, and checks that pointer arguments lie in live allocations.
        let rc = unsafe {
            dv_emu_launch_ex(
                name.as_ptr(),
                cfg.grid.as_ptr(),
                cfg.block.as_ptr(),
                cfg.shared_bytes,
                ptrs.as_mut_ptr(),
                kinds.as_ptr(),
                mode,
                seed,
                err.as_mut_ptr() as *mut c_char,
                err.len() as c_ulong,
            )
        };
        if rc != 0 {
            let end = err.iter().position(|&b| b == 0).unwrap_or(err.len());
            return Err(Error::InvalidArgument(String::from_utf8_lossy(&err[..end]).into_owned()));
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.capture.refuse(&self.name, "a synchronize")?;
        Ok(()) // launches are synchronous
    }

    fn reused(&self, ptr: DevicePtr, bytes: usize) {
        if self.capture.record(|| Op::Reused { ptr, bytes }) {
            return;
        }
        if self.check_range("reuse", ptr, bytes).is_ok() {
            // SAFETY: the range lies in a live, writable allocation.
            unsafe { std::ptr::write_bytes(ptr.0 as *mut u8, 0xFF, bytes) };
        }
    }

    fn has_kernel(&self, kernel: &str) -> bool {
        let Ok(name) = c_name(kernel) else { return false };
        // SAFETY: a valid NUL-terminated string.
        unsafe { dv_emu_has_kernel(name.as_ptr()) != 0 }
    }
}

impl Capture for EmuDevice {
    /// the recorded ops, run in order on replay (every launch checked again as it runs)
    type Graph = Vec<Op>;
    fn begin_capture(&self) -> Result<()> {
        self.capture.begin(&self.name)
    }
    fn end_capture(&self) -> Result<Vec<Op>> {
        self.capture.end(&self.name)
    }
    fn replay(&self, graph: &Vec<Op>) -> Result<()> {
        self.capture.replay(self, &self.name, graph)
    }
}
