//! [`RecordingDevice`]: runs nothing, records what the engine asks of a GPU. Downloads give
//! zeros, so a job runs to its end with the control flow of an all-zero result (top class 0).
//! Between [`RecordingDevice::start`] and [`RecordingDevice::report`] it counts launches,
//! allocations and frees, bytes copied each way, the multiply-adds the GEMM-like kernels perform
//! (executed, tile waste included, and useful, [`Device::account`]), and host syncs: calls that
//! make the host wait for the device — a copy (the engine's copies are synchronous), an explicit
//! synchronize, a free (`cuMemFree` synchronises) — made after the job's first launch and before
//! its last, so each one stalls the pipeline. The input's upload before the first launch and
//! the results' downloads after the last are not syncs of the job.
//!
//! Device memory, two figures: `device_bytes`, each launch's compulsory traffic — the sizes of
//! the distinct allocations its pointer arguments point into, each counted whole, once per
//! launch (what the kernel would move if every buffer went through DRAM exactly once; a kernel
//! that touches part of a buffer is counted for all of it, so this is an upper bound that moves
//! with every fused-away tensor); and `device_memory_peak`, the most bytes allocated at once
//! during the job, the caching allocator's blocks included.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::graph::{Capture, HostCapture, Op};
use super::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
enum Event {
    /// a kernel, the bytes of the distinct allocations its arguments point into, its blocks
    Launch(String, usize, u64),
    Alloc(usize),
    Free,
    Upload(usize),
    Download(usize),
    Sync,
    Work { kernel: String, executed: u64, useful: u64 },
    /// a captured graph of this many launches replayed (they are recorded after it, one by one)
    Replay(usize),
}

impl Event {
    fn blocks_host(&self) -> bool {
        matches!(self, Event::Upload(_) | Event::Download(_) | Event::Sync | Event::Free)
    }
}

#[derive(Default)]
struct State {
    next: u64,
    live: HashMap<u64, usize>,
    /// bytes allocated now, and the most since [`RecordingDevice::start`]
    live_bytes: usize,
    peak_bytes: usize,
    recording: bool,
    events: Vec<Event>,
}

/// Streaming multiprocessors of the card `sm_fill` is reckoned for (an H200, the lent GPU).
pub const SMS: u64 = 132;

/// See the module documentation.
pub struct RecordingDevice {
    state: Mutex<State>,
    kernels: Vec<String>,
    capture: HostCapture,
}

impl Default for RecordingDevice {
    fn default() -> Self {
        Self::new()
    }
}

/// What a recorded job asked of the device ([`RecordingDevice::report`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    /// kernel launches (issued one by one or inside replayed graphs)
    pub launches: usize,
    /// what the host asks the driver to launch: kernels issued one by one plus graph replays
    /// (each replay one call, whatever it holds)
    pub driver_launches: usize,
    /// graph replays
    pub graph_replays: usize,
    /// device allocations
    pub allocations: usize,
    /// device frees
    pub frees: usize,
    /// waits of the host for the device
    pub host_syncs: usize,
    /// bytes uploaded
    pub bytes_host_to_device: usize,
    /// bytes downloaded
    pub bytes_device_to_host: usize,
    /// each launch's buffers, whole, once per launch (see the module documentation)
    pub device_bytes: usize,
    /// the most bytes allocated at once
    pub device_memory_peak: usize,
    /// the GEMM-like launches' multiply-adds, each weighted by the share of an H200's [`SMS`]
    /// streaming multiprocessors its grid can occupy (blocks / SMs, at most 1): what a grid
    /// smaller than the card leaves idle (1: every GEMM fills the card; a no-GPU measure of
    /// batch-1 occupancy, which split-K or smaller tiles would raise)
    pub sm_fill: f64,
    /// multiply-adds the kernels execute (padding, tiles' remainders included)
    pub executed_macs: u64,
    /// multiply-adds the ops need
    pub useful_macs: u64,
    /// launches per kernel name
    pub kernels: Vec<(String, usize)>,
    /// (kernel, multiply-adds executed, useful) per kernel that reports them
    pub work: Vec<(String, u64, u64)>,
}

impl Trace {
    /// The figures as JSON (what `deepviz trace` prints).
    pub fn to_json(&self) -> Value {
        json!({
            "launches": self.launches,
            "driver_launches": self.driver_launches,
            "graph_replays": self.graph_replays,
            "allocations": self.allocations,
            "frees": self.frees,
            "host_syncs": self.host_syncs,
            "bytes_host_to_device": self.bytes_host_to_device,
            "bytes_device_to_host": self.bytes_device_to_host,
            "device_bytes": self.device_bytes,
            "device_memory_peak": self.device_memory_peak,
            "sm_fill": (self.sm_fill * 1000.0).round() / 1000.0,
            "executed_macs": self.executed_macs,
            "useful_macs": self.useful_macs,
            "mac_efficiency": if self.executed_macs > 0 { self.useful_macs as f64 / self.executed_macs as f64 } else { 1.0 },
            "kernels": self.kernels.iter().map(|(k, n)| json!([k, n])).collect::<Vec<_>>(),
            "work": self.work.iter().map(|(k, e, u)| json!([k, e, u])).collect::<Vec<_>>(),
        })
    }
}

impl RecordingDevice {
    /// A device that has recorded nothing yet.
    pub fn new() -> Self {
        RecordingDevice { state: Mutex::new(State { next: 1 << 40, ..State::default() }), kernels: crate::backend::cuda::kernel_names(), capture: HostCapture::default() }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, e: Event) {
        let mut s = self.st();
        if s.recording {
            s.events.push(e);
        }
    }

    /// Forget what was recorded and start recording.
    pub fn start(&self) {
        let mut s = self.st();
        s.events.clear();
        s.peak_bytes = s.live_bytes;
        s.recording = true;
    }

    /// Stop recording and sum up what was recorded since [`RecordingDevice::start`].
    pub fn report(&self) -> Trace {
        let mut s = self.st();
        s.recording = false;
        let ev = &s.events;
        let first = ev.iter().position(|e| matches!(e, Event::Launch(..)));
        let last = ev.iter().rposition(|e| matches!(e, Event::Launch(..)));
        let mut t = Trace { device_memory_peak: s.peak_bytes, ..Trace::default() };
        let mut per: HashMap<&str, usize> = HashMap::new();
        let mut work: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut in_graphs = 0;
        // (multiply-adds, those on launches of fewer blocks than SMS, weighted by the SMs left idle)
        let (mut work_macs, mut idle_macs) = (0f64, 0f64);
        for (i, e) in ev.iter().enumerate() {
            match e {
                Event::Launch(k, bytes, blocks) => {
                    t.launches += 1;
                    t.device_bytes += bytes;
                    *per.entry(k.as_str()).or_default() += 1;
                    // the launch code accounts a GEMM-like launch just before making it
                    if let Some(Event::Work { executed, .. }) = i.checked_sub(1).map(|j| &ev[j]) {
                        work_macs += *executed as f64;
                        idle_macs += *executed as f64 * (1.0 - (*blocks as f64 / SMS as f64).min(1.0));
                    }
                }
                Event::Alloc(_) => t.allocations += 1,
                Event::Free => t.frees += 1,
                Event::Upload(b) => t.bytes_host_to_device += b,
                Event::Download(b) => t.bytes_device_to_host += b,
                Event::Sync => {}
                Event::Replay(n) => {
                    t.graph_replays += 1;
                    in_graphs += n;
                }
                Event::Work { kernel, executed, useful } => {
                    t.executed_macs += executed;
                    t.useful_macs += useful;
                    let w = work.entry(kernel.as_str()).or_default();
                    w.0 += executed;
                    w.1 += useful;
                }
            }
            if let (Some(f), Some(l)) = (first, last) {
                if e.blocks_host() && i > f && i < l {
                    t.host_syncs += 1;
                }
            }
        }
        t.driver_launches = t.launches - in_graphs + t.graph_replays;
        t.sm_fill = if work_macs > 0.0 { 1.0 - idle_macs / work_macs } else { 1.0 };
        let mut kernels: Vec<(String, usize)> = per.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        kernels.sort();
        t.kernels = kernels;
        let mut work: Vec<(String, u64, u64)> = work.into_iter().map(|(k, (e, u))| (k.to_string(), e, u)).collect();
        work.sort();
        t.work = work;
        t
    }

    fn check(&self, what: &str, ptr: DevicePtr, bytes: usize) -> Result<()> {
        let s = self.st();
        if s.live.iter().any(|(&base, &size)| ptr.0 >= base && ptr.0 + bytes as u64 <= base + size as u64) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!("recording device: {what} of {bytes} bytes at {:#x} outside every allocation", ptr.0)))
        }
    }
}

impl Device for RecordingDevice {
    fn name(&self) -> &str {
        "record (runs nothing)"
    }
    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        self.capture.refuse(self.name(), "an allocation")?;
        let p = {
            let mut s = self.st();
            let p = s.next;
            // 256-byte aligned, as cuMemAlloc
            s.next += (bytes.max(1) as u64).div_ceil(256) * 256;
            s.live.insert(p, bytes);
            s.live_bytes += bytes;
            s.peak_bytes = s.peak_bytes.max(s.live_bytes);
            p
        };
        self.record(Event::Alloc(bytes));
        Ok(DevicePtr(p))
    }
    fn free(&self, ptr: DevicePtr) {
        if self.capture.refuse(self.name(), "a free").is_err() {
            return;
        }
        {
            let mut s = self.st();
            if let Some(bytes) = s.live.remove(&ptr.0) {
                s.live_bytes -= bytes;
            }
        }
        self.record(Event::Free);
    }
    fn upload(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        self.capture.refuse(self.name(), "an upload")?;
        self.check("upload", dst, src.len())?;
        self.record(Event::Upload(src.len()));
        Ok(())
    }
    fn download(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        self.capture.refuse(self.name(), "a download")?;
        self.check("download", src, dst.len())?;
        dst.fill(0);
        self.record(Event::Download(dst.len()));
        Ok(())
    }
    fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()> {
        self.check("memset", dst, bytes)?;
        self.capture.record(|| Op::Memset { dst, bytes });
        Ok(())
    }
    fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        if !self.has_kernel(kernel) {
            return Err(Error::Device(format!("recording device: no kernel `{kernel}`")));
        }
        if self.capture.record(|| Op::Launch { kernel: kernel.to_string(), cfg, args: args.to_vec() }) {
            return Ok(());
        }
        let bytes = {
            let s = self.st();
            // the allocations the pointers point into, each once
            let mut bases: Vec<(u64, usize)> = Vec::new();
            for a in args {
                if let Arg::Ptr(p) = a {
                    if p.0 == 0 {
                        continue;
                    }
                    match s.live.iter().find(|(&b, &size)| p.0 >= b && p.0 < b + size.max(1) as u64) {
                        Some((&b, &size)) if !bases.iter().any(|&(x, _)| x == b) => bases.push((b, size)),
                        Some(_) => {}
                        None => return Err(Error::Device(format!("recording device: `{kernel}` gets a pointer {:#x} outside every allocation", p.0))),
                    }
                }
            }
            bases.iter().map(|&(_, size)| size).sum()
        };
        let blocks = cfg.grid.iter().map(|&g| g as u64).product();
        self.record(Event::Launch(kernel.to_string(), bytes, blocks));
        Ok(())
    }
    fn synchronize(&self) -> Result<()> {
        self.capture.refuse(self.name(), "a synchronize")?;
        self.record(Event::Sync);
        Ok(())
    }
    fn has_kernel(&self, kernel: &str) -> bool {
        self.kernels.iter().any(|k| k == kernel)
    }
    fn account(&self, kernel: &str, executed: u64, useful: u64) {
        if self.capture.record(|| Op::Account { kernel: kernel.to_string(), executed, useful }) {
            return;
        }
        self.record(Event::Work { kernel: kernel.to_string(), executed, useful });
    }
}

impl Capture for RecordingDevice {
    /// the recorded ops, counted again on each replay
    type Graph = Vec<Op>;
    fn begin_capture(&self) -> Result<()> {
        self.capture.begin(self.name())
    }
    fn end_capture(&self) -> Result<Vec<Op>> {
        self.capture.end(self.name())
    }
    fn replay(&self, graph: &Vec<Op>) -> Result<()> {
        if !self.capture.active() {
            self.record(Event::Replay(graph.iter().filter(|op| matches!(op, Op::Launch { .. })).count()));
        }
        self.capture.replay(self, self.name(), graph)
    }
}
