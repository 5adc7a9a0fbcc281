//! The real GPU: [`CudaDevice`] runs the fatbinaries that `build/nvcc.rs` made from
//! `kernels/*.cu`, through the CUDA driver API (cudarc's thin `driver::result` / `driver::sys`
//! layer, with `libcuda` loaded at run time, so the binary starts on machines without a driver).
//!
//! - Finding the driver: [`CudaDevice::available`] and [`CudaDevice::new`] first check that
//!   `libcuda` can be loaded at all (cudarc's `is_culib_present`) — cudarc would panic on its
//!   first call otherwise — then call `cuInit`; a driver that lacks a symbol cudarc asks for is
//!   caught too (`catch_unwind`) and becomes an error, never a panic.
//! - Context and threads: the device holds a reference to the GPU's primary context (the one
//!   the CUDA runtime and other libraries share) and makes it current at the top of every
//!   method (`cuCtxSetCurrent` is a thread-local store), so a `CudaDevice` can be used from any
//!   thread (rayon workers, test threads) without per-thread setup, and two devices on different
//!   GPUs can be used alternately from one thread.
//! - Ordering: all work goes to one non-blocking stream of the device's own, so launches, copies
//!   and memsets run in the order they were issued; `download` waits for the stream before it
//!   returns, `upload` returns once the host bytes are staged (pageable memory), and a free waits
//!   for the stream first. Not the legacy default stream: work on it cannot be captured into a
//!   CUDA graph ([`Capture`], used by [`super::graph::Graphed`]), and it serialises against every
//!   other library's default-stream work in the process. (Nothing else reads our buffers: the
//!   Python module copies through the host.) Launches are asynchronous: a kernel that faults
//!   (illegal address, trap) is reported by the next `synchronize` or `download`, naming the last
//!   kernel launched (or the graph holding it). `CUDA_LAUNCH_BLOCKING=1` makes every launch wait,
//!   so the faulting launch itself reports it (and turns graphs off).
//! - Memory: allocations are `cuMemAlloc`, freed only by `free` (or, with the context, when the
//!   last reference to it is released). Copies are checked to lie in one allocation.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys::{self, CUresult};

use super::graph::Capture;
use super::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::{Error, Result};

mod fatbins {
    // `pub static FATBINS: &[(&str, &[u8])]`: one fatbinary per `kernels/*.cu`, by file stem.
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// The fatbinaries this build carries, one per `kernels/*.cu` by file stem (for tools that read
/// their SASS, as `tests/sass.rs` does).
pub fn fatbins() -> &'static [(&'static str, &'static [u8])] {
    fatbins::FATBINS
}

/// Dynamic shared memory a kernel may use without opting in (`cuFuncSetAttribute`).
const DEFAULT_MAX_DYNAMIC_SHARED: u32 = 48 * 1024;

/// One GPU, its primary context, and the modules of every `kernels/*.cu`.
pub struct CudaDevice {
    ordinal: usize,
    dev: sys::CUdevice,
    ctx: sys::CUcontext,
    /// (file stem, module), in `FATBINS` order
    modules: Vec<(&'static str, sys::CUmodule)>,
    functions: Mutex<HashMap<String, sys::CUfunction>>,
    /// the last kernel launched, to name in asynchronous fault reports
    last_kernel: Mutex<Option<String>>,
    name: String,
    /// the stream all work goes to (null until `new` creates it)
    stream: sys::CUstream,
    /// during a capture: kernels recorded so far, and the last one's name
    capturing: Mutex<Option<(usize, String)>>,
    /// streaming multiprocessors
    sms: usize,
}

/// A CUDA graph captured from the device's stream, instantiated and ready to launch.
pub struct CudaGraph {
    exec: sys::CUgraphExec,
    /// "a graph of N launches, the last `k`": what a fault report names
    what: String,
}

// SAFETY: an executable graph is a plain driver handle, usable from any thread.
unsafe impl Send for CudaGraph {}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: instantiated once by `end_capture`, destroyed once; a graph still in flight is
        // freed by the driver when it completes.
        let _ = unsafe { cu::graph::exec_destroy(self.exec) };
    }
}

// SAFETY: the driver API is thread-safe; the context, module and function handles are plain
// handles valid on every thread once the context is current, which every method ensures first.
unsafe impl Send for CudaDevice {}
unsafe impl Sync for CudaDevice {}

/// `CUDA_ERROR_X (what it means)`.
fn describe(e: DriverError) -> String {
    let name = e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name} ({})", s.to_string_lossy()),
        Err(_) => name,
    }
}

/// Run a cudarc call, turning a panic (a symbol the installed driver does not export) into an
/// error. The default panic hook still prints cudarc's message once.
fn guarded<T>(what: &str, f: impl FnOnce() -> std::result::Result<T, DriverError>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::Device(format!("CUDA {what} failed: {}", describe(e)))),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(Error::Device(format!("the CUDA driver is too old or incomplete for this build ({what}): {msg}")))
        }
    }
}

/// Loads `libcuda` and initialises it, once per process; the driver version (e.g. 13000).
fn driver() -> Result<i32> {
    static DRIVER: OnceLock<std::result::Result<i32, String>> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            // SAFETY: only tries to dlopen the candidate library names.
            if !unsafe { sys::is_culib_present() } {
                return Err("no CUDA driver found: libcuda.so could not be loaded (the GPU engine needs the NVIDIA driver)".into());
            }
            guarded("cuInit", cu::init).map_err(|e| match e {
                Error::Device(m) if m.contains("CUDA_ERROR_NO_DEVICE") => "no CUDA device: the driver found no GPU".to_string(),
                Error::Device(m) if m.contains("CUDA_ERROR_STUB_LIBRARY") => {
                    "no CUDA driver found: the libcuda.so loaded is the toolkit's stub (remove .../stubs from LD_LIBRARY_PATH)".to_string()
                }
                e => format!("the CUDA driver failed to initialise: {e}"),
            })?;
            let mut version = 0;
            // SAFETY: writes one int.
            guarded("cuDriverGetVersion", || unsafe { sys::cuDriverGetVersion(&mut version).result() }).map_err(|e| e.to_string())?;
            Ok(version)
        })
        .clone()
        .map_err(Error::Device)
}

/// `13000` -> `13.0`
fn version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

impl CudaDevice {
    /// Whether a CUDA driver is installed and sees at least one GPU. Never panics; cheap after
    /// the first call.
    pub fn available() -> bool {
        Self::count() > 0
    }

    /// How many GPUs the driver sees (0 without a driver).
    pub fn count() -> usize {
        if driver().is_err() {
            return 0;
        }
        guarded("cuDeviceGetCount", cu::device::get_count).map_or(0, |n| n.max(0) as usize)
    }

    /// GPU `ordinal` (0 = the first), with every kernel module loaded. Fails with one sentence
    /// when there is no driver, no such GPU, or the kernels cannot run on it.
    pub fn new(ordinal: usize) -> Result<Self> {
        let version = driver()?;
        let count = Self::count();
        if ordinal >= count {
            return Err(Error::Device(if count == 0 {
                "no CUDA device: the driver found no GPU".to_string()
            } else {
                format!("no CUDA device {ordinal}: the driver sees {count} GPU(s), numbered from 0")
            }));
        }
        let dev = guarded("cuDeviceGet", || cu::device::get(ordinal as i32))?;
        let gpu = guarded("cuDeviceGetName", || cu::device::get_name(dev))?;
        let attr = |a| guarded("cuDeviceGetAttribute", || unsafe { cu::device::get_attribute(dev, a) });
        let (major, minor) = (
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        let sms = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as usize;
        // SAFETY: `dev` came from cuDeviceGet; released in Drop (or below on failure).
        let ctx = guarded("cuDevicePrimaryCtxRetain", || unsafe { cu::primary_ctx::retain(dev) })?;
        let mut device = CudaDevice {
            ordinal,
            dev,
            ctx,
            modules: Vec::new(),
            functions: Mutex::new(HashMap::new()),
            last_kernel: Mutex::new(None),
            stream: std::ptr::null_mut(),
            capturing: Mutex::new(None),
            sms,
            name: format!("{gpu} (CUDA device {ordinal}, sm_{major}{minor}, driver {})", version_string(version)),
        };
        device.bind()?;
        device.stream = guarded("cuStreamCreate", || cu::stream::create(cu::stream::StreamKind::NonBlocking))?;
        for &(stem, image) in fatbins::FATBINS {
            // sm_90a code (wgmma) exists for CC 9.0 alone: elsewhere its kernels are absent
            // (`has_kernel` says so) and the engine takes the portable ones
            if stem.ends_with("_sm90a") && (major, minor) != (9, 0) {
                continue;
            }
            // cuModuleLoadData reads the fatbinary header in place: give it an 8-byte-aligned,
            // zero-terminated copy (include_bytes! data is only byte-aligned).
            let mut aligned = vec![0u64; image.len() / 8 + 2];
            bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..image.len()].copy_from_slice(image);
            // SAFETY: a complete fatbinary made by nvcc; the driver copies what it keeps.
            let module = unsafe { cu::module::load_data(aligned.as_ptr() as *const c_void) };
            match module {
                Ok(m) => device.modules.push((stem, m)),
                Err(e) => {
                    let why = match e.0 {
                        CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION | CUresult::CUDA_ERROR_INVALID_IMAGE => format!(
                            "the CUDA driver ({}) is too old for kernels built by this nvcc: update the driver, or build with an nvcc no newer than it",
                            version_string(version)
                        ),
                        CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU => {
                            format!("the kernels are built for sm_80 and newer; this GPU is sm_{major}{minor}")
                        }
                        _ => "the driver cannot load it".to_string(),
                    };
                    // Drop unloads what was loaded and releases the context.
                    return Err(Error::Device(format!("{}: kernels/{stem}.cu: {why}: {}", device.name, describe(e))));
                }
            }
        }
        device.index_functions();
        Ok(device)
    }

    /// Fill the kernel cache from the modules' own function lists (cuModuleEnumerateFunctions,
    /// CUDA 12.4+), so a launch never probes a module that lacks the kernel: such probes are
    /// CUDA_ERROR_NOT_FOUND API errors that compute-sanitizer reports. Older drivers fall back
    /// to probing in `function`.
    fn index_functions(&self) {
        let mut cache = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        for &(_, m) in &self.modules {
            let listed = catch_unwind(AssertUnwindSafe(|| -> Option<Vec<(String, sys::CUfunction)>> {
                let mut n: std::ffi::c_uint = 0;
                // SAFETY: `m` is a loaded module; writes one count.
                unsafe { sys::cuModuleGetFunctionCount(&mut n, m) }.result().ok()?;
                let mut fs: Vec<sys::CUfunction> = vec![std::ptr::null_mut(); n as usize];
                // SAFETY: room for `n` handles.
                unsafe { sys::cuModuleEnumerateFunctions(fs.as_mut_ptr(), n, m) }.result().ok()?;
                fs.into_iter()
                    .map(|f| {
                        let mut name: *const std::ffi::c_char = std::ptr::null();
                        // SAFETY: `f` belongs to `m`; the driver owns the returned string.
                        unsafe { sys::cuFuncGetName(&mut name, f) }.result().ok()?;
                        // SAFETY: a NUL-terminated string from the driver.
                        Some((unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned(), f))
                    })
                    .collect()
            }));
            if let Ok(Some(list)) = listed {
                cache.extend(list);
            }
        }
    }

    /// The GPU's number, as the driver counts them.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// (free, total) bytes of device memory.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.bind()?;
        cu::mem_get_info().map_err(|e| self.err("cuMemGetInfo", e))
    }

    /// Make this device's context current on the calling thread.
    fn bind(&self) -> Result<()> {
        // SAFETY: `ctx` is the retained primary context, alive until Drop.
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(|e| self.err("cuCtxSetCurrent", e))
    }

    fn err(&self, what: &str, e: DriverError) -> Error {
        Error::Device(format!("{}: {what} failed: {}", self.name, describe(e)))
    }

    /// An error of a call that also reports earlier asynchronous faults (copies, synchronize):
    /// name the last kernel launched, which is where such a fault comes from.
    fn async_err(&self, what: &str, e: DriverError) -> Error {
        let last = self.last_kernel.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match (e.0, last) {
            (CUresult::CUDA_ERROR_INVALID_VALUE, _) | (_, None) => self.err(what, e),
            (_, Some(k)) => Error::Device(format!(
                "{}: {what} failed: {} — from a kernel launched since the last synchronize, the last being `{k}` (run with CUDA_LAUNCH_BLOCKING=1 to stop at the faulting launch); this process's CUDA context is no longer usable",
                self.name,
                describe(e)
            )),
        }
    }

    /// Checks that `[ptr, ptr + bytes)` lies in one live allocation.
    fn check_range(&self, what: &str, ptr: DevicePtr, bytes: usize) -> Result<()> {
        let (mut base, mut size): (sys::CUdeviceptr, usize) = (0, 0);
        // SAFETY: writes two locals; any address may be asked about.
        let found = unsafe { sys::cuMemGetAddressRange_v2(&mut base, &mut size, ptr.0) }.result().is_ok();
        if !found {
            return Err(Error::InvalidArgument(format!(
                "{}: {what} of {bytes} bytes at {:#x}: not in any device allocation",
                self.name, ptr.0
            )));
        }
        let offset = ptr.0 - base;
        if offset + bytes as u64 > size as u64 {
            return Err(Error::InvalidArgument(format!(
                "{}: {what} of {bytes} bytes at offset {offset} of a {size}-byte allocation",
                self.name
            )));
        }
        Ok(())
    }

    /// The kernel's function handle, looked up in every module once and cached.
    fn function(&self, kernel: &str) -> Option<sys::CUfunction> {
        let mut cache = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&f) = cache.get(kernel) {
            return Some(f);
        }
        let cname = CString::new(kernel).ok()?;
        // SAFETY: the modules are loaded until Drop; a missing name is CUDA_ERROR_NOT_FOUND.
        let f = self.modules.iter().find_map(|&(_, m)| unsafe { cu::module::get_function(m, cname.clone()) }.ok())?;
        cache.insert(kernel.to_string(), f);
        Some(f)
    }
}

impl Drop for CudaDevice {
    fn drop(&mut self) {
        if self.bind().is_ok() {
            if !self.stream.is_null() {
                // SAFETY: created by `new`, destroyed once; pending work completes first.
                let _ = unsafe { cu::stream::synchronize(self.stream) };
                let _ = unsafe { cu::stream::destroy(self.stream) };
            }
            for &(_, m) in &self.modules {
                // SAFETY: loaded by `new`, unloaded once; errors (a faulted context) are moot.
                let _ = unsafe { cu::module::unload(m) };
            }
        }
        // SAFETY: retained once by `new`.
        let _ = unsafe { cu::primary_ctx::release(self.dev) };
    }
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Device for CudaDevice {
    fn name(&self) -> &str {
        &self.name
    }

    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        self.bind()?;
        // SAFETY: a plain allocation; zero bytes is not allowed by the driver, so ask for one.
        match unsafe { cu::malloc_sync(bytes.max(1)) } {
            Ok(p) => Ok(DevicePtr(p)),
            Err(e) if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY => {
                let (free, total) = cu::mem_get_info().unwrap_or((0, 0));
                Err(Error::OutOfMemory { device: self.name.clone(), asked: bytes, free, total, fits: None })
            }
            Err(e) => Err(self.err(&format!("cuMemAlloc of {bytes} bytes"), e)),
        }
    }

    fn memory(&self) -> Option<(usize, usize)> {
        self.mem_info().ok()
    }

    fn multiprocessors(&self) -> usize {
        self.sms
    }

    fn free(&self, ptr: DevicePtr) {
        if ptr.0 == 0 || self.bind().is_err() {
            return;
        }
        // SAFETY: the stream is ours; work queued on it may still use the buffer, so wait for
        // it. Pointers come from `alloc`; an unknown one is an error the driver reports, which
        // `free` has no way to return.
        let _ = unsafe { cu::stream::synchronize(self.stream) };
        let _ = unsafe { cu::free_sync(ptr.0) };
    }

    fn upload(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.bind()?;
        self.check_range("upload", dst, src.len())?;
        // SAFETY: the range lies in a live allocation; from pageable host memory the driver
        // stages `src` before it returns (CUDA's "API synchronization behavior"), so `src` may
        // be reused at once; the copy runs in stream order.
        unsafe { cu::memcpy_htod_async(dst.0, src, self.stream) }.map_err(|e| self.async_err("upload (cuMemcpyHtoDAsync)", e))
    }

    fn download(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.bind()?;
        self.check_range("download", src, dst.len())?;
        // SAFETY: the range lies in a live allocation; the copy runs after all earlier work on
        // the stream, and the stream is waited for before `dst` is handed back.
        unsafe { cu::memcpy_dtoh_async(dst, src.0, self.stream) }.map_err(|e| self.async_err("download (cuMemcpyDtoHAsync)", e))?;
        unsafe { cu::stream::synchronize(self.stream) }.map_err(|e| self.async_err("download (cuStreamSynchronize)", e))
    }

    fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.bind()?;
        self.check_range("memset", dst, bytes)?;
        // SAFETY: the range lies in a live allocation; in stream order.
        unsafe { cu::memset_d8_async(dst.0, 0, bytes, self.stream) }.map_err(|e| self.async_err("memset (cuMemsetD8Async)", e))
    }

    fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        self.bind()?;
        let f = self.function(kernel).ok_or_else(|| {
            Error::InvalidArgument(format!("{}: no kernel `{kernel}` in the modules of kernels/*.cu", self.name))
        })?;
        let fail = |what: &str, e: DriverError| {
            Error::Device(format!(
                "{}: kernel `{kernel}` (grid {:?}, block {:?}, {} bytes of dynamic shared memory): {what} failed: {}",
                self.name,
                cfg.grid,
                cfg.block,
                cfg.shared_bytes,
                describe(e)
            ))
        };
        if cfg.shared_bytes > DEFAULT_MAX_DYNAMIC_SHARED {
            // SAFETY: `f` is a function of a loaded module.
            unsafe {
                cu::function::set_function_attribute(
                    f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    cfg.shared_bytes as i32,
                )
            }
            .map_err(|e| fail("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)", e))?;
        }
        // kernelParams: one pointer per parameter, pointing at its slot
        let mut slots: Vec<u64> = super::param_slots(args);
        let mut params: Vec<*mut c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
        match &mut *self.capturing.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((n, last)) => {
                *n += 1;
                kernel.clone_into(last);
            }
            None => *self.last_kernel.lock().unwrap_or_else(|p| p.into_inner()) = Some(kernel.to_string()),
        }
        let [gx, gy, gz] = cfg.grid;
        let [bx, by, bz] = cfg.block;
        // SAFETY: the driver copies the parameter values (through `params`, pointing at `slots`,
        // both alive here) before cuLaunchKernel returns; their count and types follow the
        // kernel's signature as the launch code in backend::cuda documents at each call.
        unsafe { cu::launch_kernel(f, (gx, gy, gz), (bx, by, bz), cfg.shared_bytes, self.stream, &mut params) }
            .map_err(|e| fail("cuLaunchKernel", e))
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        // the context, not only the stream: faults of any launch are reported
        cu::ctx::synchronize().map_err(|e| self.async_err("synchronize", e))?;
        *self.last_kernel.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    fn has_kernel(&self, kernel: &str) -> bool {
        self.bind().is_ok() && self.function(kernel).is_some()
    }
}

impl Capture for CudaDevice {
    type Graph = CudaGraph;

    fn begin_capture(&self) -> Result<()> {
        self.bind()?;
        // relaxed: other threads' unrelated driver calls (an allocation by another engine) do
        // not invalidate this capture; ours never make such calls meanwhile (`Graphed` issues
        // only launches and memsets between begin and end)
        // SAFETY: the stream is ours and alive.
        unsafe { cu::stream::begin_capture(self.stream, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED) }
            .map_err(|e| self.err("cuStreamBeginCapture", e))?;
        *self.capturing.lock().unwrap_or_else(|p| p.into_inner()) = Some((0, String::new()));
        Ok(())
    }

    fn end_capture(&self) -> Result<CudaGraph> {
        self.bind()?;
        let (n, last) = self.capturing.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
        // SAFETY: ends the capture `begin_capture` started on our stream (also when it was
        // invalidated, which this reports as an error).
        let graph = unsafe { cu::stream::end_capture(self.stream) }.map_err(|e| self.err("cuStreamEndCapture", e))?;
        // SAFETY: a graph just captured; the executable copies what it needs, so the graph is
        // destroyed either way.
        let exec = unsafe { cu::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) };
        let _ = unsafe { cu::graph::destroy(graph) };
        let exec = exec.map_err(|e| self.err("cuGraphInstantiate", e))?;
        Ok(CudaGraph { exec, what: format!("a CUDA graph of {n} launches, the last `{last}`") })
    }

    fn replay(&self, graph: &CudaGraph) -> Result<()> {
        self.bind()?;
        *self.last_kernel.lock().unwrap_or_else(|p| p.into_inner()) = Some(graph.what.clone());
        // SAFETY: an executable graph of this context, launched on our stream; its kernels' buffers
        // are alive (the same arguments the engine has just asked for, see `Graphed`).
        unsafe { cu::graph::launch(graph.exec, self.stream) }.map_err(|e| self.async_err("cuGraphLaunch", e))
    }
}
