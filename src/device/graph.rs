//! [`Graphed`]: a device that defers launches into a queue and replays repeated runs of them as
//! one captured graph (a CUDA graph on the GPU), so a job repeated at one shape costs the host
//! one `cuGraphLaunch` per chunk instead of ~160 `cuLaunchKernel`s, and the GPU no launch gaps.
//!
//! How it stays correct without the engine knowing:
//! - Launches, memsets and the emulator's re-poisoning of reused buffers ([`Device::reused`])
//!   go into a queue, in order. Anything that lets the host see or change device memory outside
//!   the stream (upload, download, synchronize, free) first flushes the queue, so the order of
//!   work against the host is what it was; allocation does not flush (a fresh buffer is named by
//!   no queued op). The queue also flushes every [`chunk`](Graphed::with_chunk) launches, so the
//!   device starts on a job's first kernels while the host is still planning the rest.
//! - A flushed run of ops is keyed by every bit of it: kernel, grid, block, shared memory, every
//!   argument's value (floats by their bits). The first sighting runs eagerly; the second is
//!   captured ([`Capture`]), then replayed; later identical runs replay the graph. A graph is
//!   therefore never replayed with arguments other than the ones it was captured with: no
//!   staleness to reason about. What makes runs repeat is the memory pool handing a repeated job
//!   the same buffers ([`crate::backend::cuda::MemoryPool`]).
//! - A run whose capture fails (a driver without graphs, an op the capture refuses) is marked
//!   and runs eagerly from then on; a failing op then reports its own error as before.
//!
//! Errors of a launch (a bad configuration, a fault on the emulator) surface at the flush that
//! issues it rather than at `launch`, still naming the kernel. `DEEPVIZ_CUDA_GRAPHS=0` (or
//! `CUDA_LAUNCH_BLOCKING=1`) turns the queue off: every call passes straight through.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::{Error, Result};

/// Recording a device's stream work into a graph and replaying it: CUDA stream capture on the
/// GPU; on the emulator and the recording device, a list of ops run (or counted) on replay.
pub trait Capture: Device {
    /// A captured graph, ready to replay.
    type Graph: Send;
    /// From now until [`Capture::end_capture`], launches and memsets are recorded, not run; an
    /// upload, download, synchronize, allocation or free meanwhile is an error, as on the GPU.
    fn begin_capture(&self) -> Result<()>;
    /// Stop recording; what was recorded. Ends the capture even when it fails.
    fn end_capture(&self) -> Result<Self::Graph>;
    /// Run a captured graph, in order with everything issued before and after it.
    fn replay(&self, graph: &Self::Graph) -> Result<()>;
}

/// Launches a queue collects before it flushes by itself (see the module documentation). The
/// host plans a resnet50 launch in ~1 µs and the driver takes ~2–4 µs to issue one, while a
/// layer at batch 1 runs for 5–50 µs: a chunk of 32 keeps the device fed from the first flush.
pub const DEFAULT_CHUNK: usize = 32;

/// Distinct runs kept (captured or only seen); the least recently used go first.
const MAX_ENTRIES: usize = 512;

/// One piece of stream work a queue holds or a host capture recorded.
#[derive(Clone, Debug)]
pub enum Op {
    /// [`Device::launch`]
    Launch {
        /// kernel name
        kernel: String,
        /// geometry
        cfg: LaunchConfig,
        /// arguments
        args: Vec<Arg>,
    },
    /// [`Device::memset_zero`]
    Memset {
        /// where
        dst: DevicePtr,
        /// how many bytes
        bytes: usize,
    },
    /// [`Device::reused`]
    Reused {
        /// where
        ptr: DevicePtr,
        /// how many bytes
        bytes: usize,
    },
    /// [`Device::account`]: kept in order with the launch it describes
    Account {
        /// kernel family
        kernel: String,
        /// multiply-adds executed
        executed: u64,
        /// multiply-adds needed
        useful: u64,
    },
}

impl Op {
    /// Issue it on `dev` (running, or recording when `dev` captures).
    pub fn issue(&self, dev: &dyn Device) -> Result<()> {
        match self {
            Op::Launch { kernel, cfg, args } => dev.launch(kernel, *cfg, args),
            Op::Memset { dst, bytes } => dev.memset_zero(*dst, *bytes),
            Op::Reused { ptr, bytes } => {
                dev.reused(*ptr, *bytes);
                Ok(())
            }
            Op::Account { kernel, executed, useful } => {
                dev.account(kernel, *executed, *useful);
                Ok(())
            }
        }
    }
}

struct Entry<G> {
    /// runs seen with this key
    seen: u32,
    graph: Option<G>,
    /// capture failed once: run eagerly
    eager: bool,
    last_used: u64,
}

struct Queue<G> {
    ops: Vec<Op>,
    /// the pending ops' key words (see `key_op`)
    key: Vec<u64>,
    launches: usize,
    names: HashMap<String, u64>,
    runs: HashMap<Vec<u64>, Entry<G>>,
    tick: u64,
    stats: GraphStats,
    /// why the first failed capture failed
    capture_error: Option<String>,
}

/// What a [`Graphed`] device has done since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// runs of ops issued one by one
    pub eager_runs: usize,
    /// ops issued one by one
    pub eager_ops: usize,
    /// graphs captured
    pub captures: usize,
    /// graph replays
    pub replays: usize,
    /// ops run inside replayed graphs
    pub replayed_ops: usize,
    /// captures that failed (those runs stay eager)
    pub failed_captures: usize,
}

/// See the module documentation.
pub struct Graphed<D: Capture> {
    // declared before `inner`: graphs are destroyed before the device that made them
    queue: Mutex<Queue<D::Graph>>,
    chunk: usize,
    inner: D,
}

/// Whether the environment turns graphs off (`DEEPVIZ_CUDA_GRAPHS=0`, or `CUDA_LAUNCH_BLOCKING=1`
/// asking for every launch to be checked where it is made).
pub fn graphs_disabled_by_env() -> bool {
    let off = |k: &str, v: &str| std::env::var(k).is_ok_and(|s| s.trim() == v);
    off("DEEPVIZ_CUDA_GRAPHS", "0") || off("CUDA_LAUNCH_BLOCKING", "1")
}

impl<D: Capture> Graphed<D> {
    /// `inner` behind a queue of [`DEFAULT_CHUNK`] launches (`DEEPVIZ_GRAPH_CHUNK=N`: N, for
    /// trying others on a card), or none if the environment says so ([`graphs_disabled_by_env`]).
    pub fn new(inner: D) -> Self {
        let chunk = std::env::var("DEEPVIZ_GRAPH_CHUNK").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_CHUNK);
        let chunk = if graphs_disabled_by_env() { 0 } else { chunk };
        Graphed { queue: Mutex::new(Queue { ops: Vec::new(), key: Vec::new(), launches: 0, names: HashMap::new(), runs: HashMap::new(), tick: 0, stats: GraphStats::default(), capture_error: None }), chunk, inner }
    }

    /// Flush by itself every `chunk` launches; 0 passes every call straight through (no graphs).
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk;
        self
    }

    /// The device behind the queue.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// What the queue has done so far.
    pub fn stats(&self) -> GraphStats {
        self.q().stats
    }

    /// Why the first capture that failed did (its runs stay eager), if one has.
    pub fn capture_error(&self) -> Option<String> {
        self.q().capture_error.clone()
    }

    fn q(&self) -> std::sync::MutexGuard<'_, Queue<D::Graph>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `op` (flushing at every `chunk`-th launch), or issue it at once with no queue.
    fn push(&self, op: Op) -> Result<()> {
        if self.chunk == 0 {
            return op.issue(&self.inner);
        }
        let mut q = self.q();
        key_op(&mut q, &op);
        let launch = matches!(op, Op::Launch { .. });
        q.ops.push(op);
        if launch {
            q.launches += 1;
            if q.launches >= self.chunk {
                return self.flush_locked(&mut q);
            }
        }
        Ok(())
    }

    /// Issue everything queued: replay its graph, capture it, or run it op by op.
    pub fn flush(&self) -> Result<()> {
        let mut q = self.q();
        self.flush_locked(&mut q)
    }

    fn flush_locked(&self, q: &mut Queue<D::Graph>) -> Result<()> {
        if q.ops.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut q.ops);
        let key = std::mem::take(&mut q.key);
        q.launches = 0;
        q.tick += 1;
        evict(q);
        let Queue { runs, stats, capture_error, tick, .. } = q;
        let entry = runs.entry(key).or_insert(Entry { seen: 0, graph: None, eager: false, last_used: *tick });
        entry.last_used = *tick;
        entry.seen += 1;
        if entry.graph.is_none() && !entry.eager && entry.seen >= 2 {
            match self.capture(&ops) {
                Ok(g) => {
                    entry.graph = Some(g);
                    stats.captures += 1;
                }
                Err(e) => {
                    entry.eager = true;
                    stats.failed_captures += 1;
                    capture_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        match &entry.graph {
            Some(g) => {
                self.inner.replay(g)?;
                stats.replays += 1;
                stats.replayed_ops += ops.len();
            }
            None => {
                stats.eager_runs += 1;
                stats.eager_ops += ops.len();
                ops.iter().try_for_each(|op| op.issue(&self.inner))?;
            }
        }
        Ok(())
    }

    fn capture(&self, ops: &[Op]) -> Result<D::Graph> {
        self.inner.begin_capture()?;
        let issued = ops.iter().try_for_each(|op| op.issue(&self.inner));
        let graph = self.inner.end_capture();
        issued?;
        graph
    }
}

/// Forget the least recently used runs, keeping room for one more under [`MAX_ENTRIES`].
fn evict<G>(q: &mut Queue<G>) {
    if q.runs.len() < MAX_ENTRIES {
        return;
    }
    let mut ages: Vec<u64> = q.runs.values().map(|e| e.last_used).collect();
    ages.sort_unstable();
    let cut = ages[ages.len() + 1 - MAX_ENTRIES];
    q.runs.retain(|_, e| e.last_used >= cut);
}

/// Append `op`'s key words: its kind and kernel (by a number per name), geometry, and every
/// argument's kind and bits.
fn key_op<G>(q: &mut Queue<G>, op: &Op) {
    match op {
        Op::Launch { kernel, cfg, args } => {
            let id = match q.names.get(kernel) {
                Some(&id) => id,
                None => {
                    let id = q.names.len() as u64;
                    q.names.insert(kernel.clone(), id);
                    id
                }
            };
            q.key.push(1 << 60 | id);
            q.key.extend(cfg.grid.iter().chain(&cfg.block).map(|&v| v as u64));
            q.key.push(cfg.shared_bytes as u64);
            q.key.push(args.len() as u64);
            for a in args {
                let (kind, bits) = match *a {
                    Arg::Ptr(p) => (0, p.0),
                    Arg::I64(v) => (1, v as u64),
                    Arg::I32(v) => (2, v as u32 as u64),
                    Arg::U32(v) => (3, v as u64),
                    Arg::F32(v) => (4, v.to_bits() as u64),
                };
                q.key.extend([kind, bits]);
            }
        }
        Op::Memset { dst, bytes } => q.key.extend([2 << 60, dst.0, *bytes as u64]),
        Op::Reused { ptr, bytes } => q.key.extend([3 << 60, ptr.0, *bytes as u64]),
        Op::Account { executed, useful, .. } => q.key.extend([4 << 60, *executed, *useful]),
    }
}

// Every call that reaches the device outside the queue holds the queue's lock, so that no other
// thread's flush can be capturing the stream meanwhile (a copy or an allocation would then be
// captured, or invalidate the capture and fail): the engine may be shared by threads.
impl<D: Capture> Device for Graphed<D> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn alloc(&self, bytes: usize) -> Result<DevicePtr> {
        let _q = self.q();
        self.inner.alloc(bytes)
    }
    fn memory(&self) -> Option<(usize, usize)> {
        self.inner.memory()
    }
    fn multiprocessors(&self) -> usize {
        self.inner.multiprocessors()
    }
    fn free(&self, ptr: DevicePtr) {
        let mut q = self.q();
        // a free that cannot flush first would free under queued work: keep the buffer then
        if self.flush_locked(&mut q).is_ok() {
            self.inner.free(ptr);
        }
    }
    fn upload(&self, dst: DevicePtr, src: &[u8]) -> Result<()> {
        let mut q = self.q();
        self.flush_locked(&mut q)?;
        self.inner.upload(dst, src)
    }
    fn download(&self, src: DevicePtr, dst: &mut [u8]) -> Result<()> {
        let mut q = self.q();
        self.flush_locked(&mut q)?;
        self.inner.download(src, dst)
    }
    fn memset_zero(&self, dst: DevicePtr, bytes: usize) -> Result<()> {
        self.push(Op::Memset { dst, bytes })
    }
    fn launch(&self, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        if self.chunk == 0 {
            return self.inner.launch(kernel, cfg, args);
        }
        // a kernel the device lacks fails here, not at a later flush
        if !self.inner.has_kernel(kernel) {
            return Err(Error::InvalidArgument(format!("{}: no kernel `{kernel}` in the modules of kernels/*.cu", self.inner.name())));
        }
        self.push(Op::Launch { kernel: kernel.to_string(), cfg, args: args.to_vec() })
    }
    fn synchronize(&self) -> Result<()> {
        let mut q = self.q();
        self.flush_locked(&mut q)?;
        self.inner.synchronize()
    }
    fn has_kernel(&self, kernel: &str) -> bool {
        self.inner.has_kernel(kernel)
    }
    fn account(&self, kernel: &str, executed: u64, useful: u64) {
        // in order with the launch it describes (a recording device pairs them); neither
        // issuing nor queueing an account can fail
        let _ = self.push(Op::Account { kernel: kernel.to_string(), executed, useful });
    }
    fn reused(&self, ptr: DevicePtr, bytes: usize) {
        // after the queued ops that may still read the old contents; cannot fail either
        let _ = self.push(Op::Reused { ptr, bytes });
    }
}

impl<D: Capture> Drop for Graphed<D> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Stream capture for the devices that run (or count) ops on the host: between `begin` and
/// `end` their launches, memsets and re-poisonings are recorded instead of run, and a copy, a
/// synchronize, an allocation or a free invalidates the capture and fails, as CUDA's stream
/// capture does. Replaying issues the recorded ops in order.
#[derive(Default, Debug)]
pub(crate) struct HostCapture {
    /// `None`: not capturing; `Some(Err(why))`: a capture that an illegal call invalidated
    state: Mutex<Option<std::result::Result<Vec<Op>, String>>>,
}

impl HostCapture {
    fn st(&self) -> std::sync::MutexGuard<'_, Option<std::result::Result<Vec<Op>, String>>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a capture is on.
    pub(crate) fn active(&self) -> bool {
        self.st().is_some()
    }

    /// Record `op` if a capture is on (true: recorded, do not run it).
    pub(crate) fn record(&self, op: impl FnOnce() -> Op) -> bool {
        match &mut *self.st() {
            None => false,
            Some(Ok(ops)) => {
                ops.push(op());
                true
            }
            Some(Err(_)) => true,
        }
    }

    /// A call a capture does not allow: an error (and an invalidated capture) if one is on.
    pub(crate) fn refuse(&self, device: &str, what: &str) -> Result<()> {
        let mut st = self.st();
        match &mut *st {
            None => Ok(()),
            Some(state) => {
                let why = format!("{device}: {what} while the stream is being captured into a graph (not permitted; the capture is invalidated)");
                if state.is_ok() {
                    *state = Err(why.clone());
                }
                Err(Error::Device(why))
            }
        }
    }

    pub(crate) fn begin(&self, device: &str) -> Result<()> {
        let mut st = self.st();
        if st.is_some() {
            return Err(Error::Device(format!("{device}: a graph capture is already on")));
        }
        *st = Some(Ok(Vec::new()));
        Ok(())
    }

    /// Issue a recorded graph's ops on `dev` in order (refused during a capture).
    pub(crate) fn replay(&self, dev: &dyn Device, device: &str, ops: &[Op]) -> Result<()> {
        self.refuse(device, "a graph replay")?;
        ops.iter().try_for_each(|op| op.issue(dev))
    }

    pub(crate) fn end(&self, device: &str) -> Result<Vec<Op>> {
        match self.st().take() {
            None => Err(Error::Device(format!("{device}: no graph capture to end"))),
            Some(Ok(ops)) => Ok(ops),
            Some(Err(why)) => Err(Error::Device(why)),
        }
    }
}
