//! [`Gpu`]: the [`Backend`] of the CUDA engine. Tensors live on a [`Device`] — the real GPU or
//! its CPU emulation, through the same launch code — in NHWC; only `upload` and `download` cross
//! to the host (converting from / to NCHW on the device). Buffers are reference-counted; ops
//! allocate their outputs from a caching [`MemoryPool`] (a dropped buffer waits there for the next
//! request of its size), and the in-place ops copy first when a buffer is shared.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use super::dissect::DeviceIouCounts;
use super::{conv, elementwise, image, linear, lrn, pool, reduce};
use crate::backend::dissect::IouCounts;
use crate::backend::{broadcast_shape, reduced_shape_of, Act, Backend, Binary, Conv2dGeom, LrnGeom, Pool2dGeom, Precision, Random, Reduce, Role, Unary};
use crate::device::{Device, DevicePtr};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Device memory handed out and taken back. A dropped buffer waits in the pool, by its exact
/// size, for the next request of that size, so a job repeated at one shape allocates and frees
/// nothing after its first run: `cuMemAlloc` is slow and `cuMemFree` synchronises the device.
/// Exact sizes keep the emulator's guard pages at the end of every buffer, and a reused buffer is
/// poisoned again on the emulator ([`Device::reused`]). When the device is out of memory, the
/// pool gives its cached buffers back and tries once more.
///
/// A request takes the cached buffer of lowest address, not the last one returned: the pool's
/// state after a job is then the set of its buffers whatever order they were dropped in, so a
/// job repeated at one shape gets the very same addresses every time from its second run on,
/// launches the same kernels with the same arguments, and replays one captured CUDA graph
/// ([`crate::device::graph`]). (Last-returned-first alternates between two address sets.)
pub struct MemoryPool {
    dev: Arc<dyn Device>,
    free: Mutex<HashMap<usize, BTreeSet<DevicePtr>>>,
}

impl MemoryPool {
    fn cached(&self) -> std::sync::MutexGuard<'_, HashMap<usize, BTreeSet<DevicePtr>>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, bytes: usize) -> Result<DevicePtr> {
        if let Some(p) = self.cached().get_mut(&bytes).and_then(BTreeSet::pop_first) {
            self.dev.reused(p, bytes);
            return Ok(p);
        }
        match self.dev.alloc(bytes) {
            Ok(p) => Ok(p),
            Err(e) => {
                if self.release() == 0 {
                    return Err(e);
                }
                self.dev.alloc(bytes)
            }
        }
    }

    /// Give every cached buffer back to the device; how many there were.
    pub fn release(&self) -> usize {
        let all: Vec<DevicePtr> = self.cached().drain().flat_map(|(_, v)| v).collect();
        for &p in &all {
            self.dev.free(p);
        }
        all.len()
    }

    /// Bytes held in the cache (not in use).
    pub fn cached_bytes(&self) -> usize {
        self.cached().iter().map(|(b, v)| b * v.len()).sum()
    }
}

impl Drop for MemoryPool {
    fn drop(&mut self) {
        self.release();
    }
}

/// One device allocation from the pool, returned to it on drop.
pub struct Buffer {
    pool: Arc<MemoryPool>,
    ptr: DevicePtr,
    bytes: usize,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.pool.cached().entry(self.bytes).or_default().insert(self.ptr);
    }
}

/// A tensor on the device: NHWC memory, logical NCHW `shape` (rank 2 `[n, k]` is stored as is).
#[derive(Clone)]
pub struct DTensor {
    buf: Arc<Buffer>,
    /// logical NCHW shape
    pub shape: Vec<usize>,
    /// a conv weight's OHWI rows beside its KKIO data, made at upload where the tensor-core
    /// forward staged by tap slices applies (`conv::rows_weight`); None for everything else
    rows: Option<Arc<Buffer>>,
}

impl DTensor {
    /// The device address of its first element.
    pub fn ptr(&self) -> DevicePtr {
        self.buf.ptr
    }
    /// A conv weight's OHWI rows, where the upload made them.
    pub fn rows_ptr(&self) -> Option<DevicePtr> {
        self.rows.as_ref().map(|r| r.ptr)
    }
    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Max-pool argmaxes (u32 per output) and the geometry the backward needs to gather them.
pub struct PoolIdx {
    buf: Arc<Buffer>,
    geom: Pool2dGeom,
}

/// (n, c, h, w) of a logical shape; `[n, k]` counts as `[n, k, 1, 1]`.
fn nchw(s: &[usize]) -> (usize, usize, usize, usize) {
    match s.len() {
        4 => (s[0], s[1], s[2], s[3]),
        2 => (s[0], s[1], 1, 1),
        _ => (s.first().copied().unwrap_or(1), s.iter().skip(1).product(), 1, 1),
    }
}

fn nhwc(s: &[usize]) -> pool::Nhwc {
    let (n, c, h, w) = nchw(s);
    pool::Nhwc { n, h, w, c }
}

/// Whether NCHW and NHWC orders of this shape differ in memory.
fn permuted(s: &[usize]) -> bool {
    let (_, c, h, w) = nchw(s);
    s.len() == 4 && c > 1 && h * w > 1
}

#[derive(Clone)]
/// The CUDA engine: our kernels on a [`Device`] (the real GPU or its emulation), tensors
/// NHWC on the device, buffers from a caching pool.
pub struct Gpu {
    dev: Arc<dyn Device>,
    pool: Arc<MemoryPool>,
    precision: Precision,
    split_k: bool,
}

impl Gpu {
    /// The CUDA engine on `dev`, convolutions in fp32.
    pub fn new(dev: Arc<dyn Device>) -> Self {
        let pool = Arc::new(MemoryPool { dev: dev.clone(), free: Mutex::new(HashMap::new()) });
        Gpu { dev, pool, precision: Precision::F32, split_k: split_k_default() }
    }

    /// The same engine with split-K on or off (`conv::SplitK`: layers whose grid is under a
    /// wave of the card split their reduction). On unless `DEEPVIZ_SPLIT_K=0`; the benchmarks
    /// turn it off to measure what it gives.
    pub fn with_split_k(mut self, on: bool) -> Self {
        self.split_k = on;
        self
    }

    /// The same engine computing its convolutions (forward and backward data) in `p`: f32 (the
    /// default, exact) or on tensor cores with TF32 / BF16 operands (see [`Precision`]).
    pub fn with_precision(mut self, p: Precision) -> Self {
        self.precision = p;
        self
    }

    /// The arithmetic of its convolutions.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The engine's caching allocator (to see or give back what it holds).
    pub fn memory(&self) -> &MemoryPool {
        &self.pool
    }

    /// The CUDA engine on the CPU emulation of the CUDA execution model (feature `emu`), behind
    /// the same launch queue and graph capture as the real GPU's ([`crate::device::graph`]), so
    /// the emulated engine checks that path too.
    #[cfg(feature = "emu")]
    pub fn emulated() -> Self {
        Gpu::new(Arc::new(crate::device::graph::Graphed::new(crate::device::emu::EmuDevice::new())))
    }

    /// The device it launches on.
    pub fn device(&self) -> &dyn Device {
        self.dev.as_ref()
    }

    fn alloc(&self, elems: usize) -> Result<Arc<Buffer>> {
        let bytes = elems.max(1) * 4;
        Ok(Arc::new(Buffer { pool: self.pool.clone(), ptr: self.pool.take(bytes)?, bytes }))
    }

    /// The scratch of the backward data's column matrix, from the pool, where the engine's
    /// version for this convolution takes one (`conv::BackwardData::Col2im`); None where it
    /// does not, or where the matrix does not fit (it is kh*kw/(sh*sw) times gx: 12x for a 7x7
    /// stride-2 stem), and then `conv::backward_data` runs the direct gather, which needs none.
    fn col_scratch(&self, s: &conv::ConvShape, g: &Conv2dGeom) -> Result<Option<DTensor>> {
        if !matches!(conv::backward_data_version(s, g, self.precision), conv::BackwardData::Col2im(_)) {
            return Ok(None);
        }
        match self.new_tensor(&[conv::col2im_len(s, g)?]) {
            Ok(col) => Ok(Some(col)),
            Err(Error::OutOfMemory { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The split-K plan for `parts` parts of an output of `out_len` elements, with its workspace
    /// from the pool (kept alive by the returned tensor until the launches are made; the pool
    /// hands memory out in stream order). One part, or no room for the workspace: no split.
    fn split_k(&self, parts: usize, out_len: usize) -> Result<(conv::SplitK, Option<DTensor>)> {
        if parts <= 1 || !self.split_k {
            return Ok((conv::SplitK::NONE, None));
        }
        match self.new_tensor(&[conv::SplitK::ws_len(parts, out_len)]) {
            Ok(ws) => Ok((conv::SplitK { parts, ws: ws.ptr() }, Some(ws))),
            Err(Error::OutOfMemory { .. }) => Ok((conv::SplitK::NONE, None)),
            Err(e) => Err(e),
        }
    }

    /// The split-K parts of the engine's backward data for this convolution (v5 and its v3
    /// fallback without scratch take none either way).
    fn backward_data_parts(&self, s: &conv::ConvShape, g: &Conv2dGeom) -> usize {
        conv::backward_data_parts(self.device(), conv::backward_data_version(s, g, self.precision), s, g)
    }

    fn new_tensor(&self, shape: &[usize]) -> Result<DTensor> {
        Ok(DTensor { buf: self.alloc(shape.iter().product())?, shape: shape.to_vec(), rows: None })
    }

    fn upload_raw(&self, data: &[f32], shape: &[usize]) -> Result<DTensor> {
        let t = self.new_tensor(shape)?;
        self.dev.upload(t.ptr(), bytemuck::cast_slice(data))?;
        Ok(t)
    }

    /// Plain words (u32, i32, i64, f32: the kernels' small index and label arrays) on the
    /// device as they are, in a buffer of ⌈bytes / 4⌉ f32 words (shape `[words]`).
    pub(crate) fn upload_words<P: bytemuck::Pod>(&self, words: &[P]) -> Result<DTensor> {
        let bytes: &[u8] = bytemuck::cast_slice(words);
        self.upload_words_into(bytes, bytes.len().div_ceil(4))
    }

    /// [`Gpu::upload_words`] into a buffer of the next power of two of words: arrays whose
    /// length changes from call to call (a batch's labels) then reuse a few cached buffers
    /// instead of allocating one of a new size each time.
    pub(crate) fn upload_words_pow2<P: bytemuck::Pod>(&self, words: &[P]) -> Result<DTensor> {
        let bytes: &[u8] = bytemuck::cast_slice(words);
        self.upload_words_into(bytes, bytes.len().div_ceil(4).next_power_of_two())
    }

    fn upload_words_into(&self, bytes: &[u8], words: usize) -> Result<DTensor> {
        let t = self.new_tensor(&[words])?;
        self.dev.upload(t.ptr(), bytes)?;
        Ok(t)
    }

    /// [`Backend::warp`] or, with `backward`, [`Backend::warp_backward`].
    fn warp_either(&self, x: &DTensor, theta: &DTensor, backward: bool) -> Result<DTensor> {
        super::super::check_warp(&x.shape, &theta.shape)?;
        let (n, c, h, w) = nchw(&x.shape);
        let y = self.new_tensor(&x.shape)?;
        image::warp(self.device(), x.ptr(), theta.ptr(), y.ptr(), n, c, h, w, backward)?;
        Ok(y)
    }

    /// Give `x` a buffer of its own before writing into it in place.
    fn make_unique(&self, x: &mut DTensor) -> Result<()> {
        if Arc::strong_count(&x.buf) > 1 {
            let y = self.new_tensor(&x.shape)?;
            elementwise::unary(self.device(), x.ptr(), y.ptr(), x.numel(), Unary::Affine(1.0, 0.0))?;
            *x = y;
        }
        Ok(())
    }

    /// NCHW memory <-> NHWC memory for a 4-d shape.
    fn permute(&self, x: &DTensor, to_nhwc: bool) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        let y = self.new_tensor(&x.shape)?;
        if to_nhwc {
            elementwise::nchw_to_nhwc(self.device(), x.ptr(), y.ptr(), n, c, h * w)?;
        } else {
            elementwise::nhwc_to_nchw(self.device(), x.ptr(), y.ptr(), n, c, h * w)?;
        }
        Ok(y)
    }
}

impl Backend for Gpu {
    type T = DTensor;
    type W = DTensor;
    type Idx = PoolIdx;

    fn name(&self) -> &'static str {
        if self.dev.name().starts_with("emu") {
            "emu"
        } else {
            "cuda"
        }
    }
    fn shape<'a>(&self, t: &'a DTensor) -> &'a [usize] {
        &t.shape
    }
    fn memory_available(&self) -> Option<usize> {
        self.dev.memory().map(|(free, _)| free + self.pool.cached_bytes())
    }
    fn upload(&self, t: &Tensor) -> Result<DTensor> {
        let x = self.upload_raw(&t.data, &t.shape)?;
        if permuted(&t.shape) {
            self.permute(&x, true)
        } else {
            Ok(x)
        }
    }
    fn download(&self, t: &DTensor) -> Result<Tensor> {
        let src = if permuted(&t.shape) { self.permute(t, false)? } else { t.clone() };
        let mut data = vec![0f32; t.numel()];
        self.dev.download(src.ptr(), bytemuck::cast_slice_mut(&mut data))?;
        Tensor::new(t.shape.clone(), data)
    }
    fn weight(&self, t: &Arc<Tensor>, role: Role) -> Result<DTensor> {
        let raw = self.upload_raw(&t.data, &t.shape)?;
        match role {
            Role::ConvWeight => {
                let (cout, cg, kh, kw) = (t.shape[0], t.shape[1], t.shape[2], t.shape[3]);
                let mut wp = self.new_tensor(&t.shape)?;
                conv::repack_weight(self.device(), raw.ptr(), wp.ptr(), cout, cg, kh, kw)?;
                // the tensor cores' forward by tap slices reads OHWI rows (cg a multiple of 32:
                // exactly where `conv::TcStaging::forward` takes it); in f32 only where the
                // engine runs 3xTF32 there (`conv::f32_tensor_cores`)
                if (self.precision != Precision::F32 || conv::f32_tensor_cores()) && cg.is_multiple_of(32) {
                    let rows = self.alloc(t.data.len())?;
                    conv::rows_weight(self.device(), wp.ptr(), rows.ptr, cout, cg, kh, kw)?;
                    wp.rows = Some(rows);
                }
                Ok(wp)
            }
            Role::LinearWeight | Role::Vector => Ok(raw),
        }
    }

    fn conv2d(&self, x: &DTensor, w: &DTensor, b: Option<&DTensor>, g: &Conv2dGeom) -> Result<DTensor> {
        // the same launches (split-K included) as a fused chain without its epilogue: fused and
        // unfused passes agree to the bit
        self.conv2d_fused(x, w, b, g, None, None)
    }
    fn conv2d_fused(&self, x: &DTensor, w: &DTensor, b: Option<&DTensor>, g: &Conv2dGeom, residual: Option<&DTensor>, act: Option<Act>) -> Result<DTensor> {
        let (n, c, h, wd) = nchw(&x.shape);
        let s = conv::ConvShape { n, h, w: wd, c, cout: w.shape[0], kh: w.shape[2], kw: w.shape[3] };
        let (oh, ow) = s.out_hw(g)?;
        let y = self.new_tensor(&[n, s.cout, oh, ow])?;
        if let Some(r) = residual {
            if r.shape != y.shape {
                return Err(Error::shape("conv2d's residual", &y.shape, &r.shape));
            }
        }
        let (split, _ws) = self.split_k(conv::forward_parts(self.device(), self.precision, w.rows_ptr().is_some(), &s, g), y.numel())?;
        conv::forward_fused(self.device(), self.precision, x.ptr(), w.ptr(), w.rows_ptr(), b.map(|b| b.ptr()), residual.map(|r| r.ptr()), y.ptr(), s.cout, 0, &s, g, act, split)?;
        Ok(y)
    }
    fn conv2d_backward_data(&self, gy: &DTensor, w: &DTensor, x_shape: &[usize], g: &Conv2dGeom) -> Result<DTensor> {
        let (n, c, h, wd) = nchw(x_shape);
        let s = conv::ConvShape { n, h, w: wd, c, cout: w.shape[0], kh: w.shape[2], kw: w.shape[3] };
        let gx = self.new_tensor(x_shape)?;
        let col = self.col_scratch(&s, g)?;
        let (split, _ws) = self.split_k(self.backward_data_parts(&s, g), gx.numel())?;
        conv::backward_data(self.device(), self.precision, gy.ptr(), w.ptr(), gx.ptr(), &s, g, None, col.as_ref().map(DTensor::ptr), split)?;
        Ok(gx)
    }
    fn conv2d_backward_data_masked(&self, gy: &DTensor, w: &DTensor, x_shape: &[usize], g: &Conv2dGeom, mask: &DTensor, act: Act) -> Result<DTensor> {
        if mask.shape != x_shape {
            return Err(Error::shape("conv2d's backward-data mask", x_shape, &mask.shape));
        }
        let (n, c, h, wd) = nchw(x_shape);
        let s = conv::ConvShape { n, h, w: wd, c, cout: w.shape[0], kh: w.shape[2], kw: w.shape[3] };
        let gx = self.new_tensor(x_shape)?;
        let col = self.col_scratch(&s, g)?;
        let (split, _ws) = self.split_k(self.backward_data_parts(&s, g), gx.numel())?;
        conv::backward_data(self.device(), self.precision, gy.ptr(), w.ptr(), gx.ptr(), &s, g, Some((mask.ptr(), act)), col.as_ref().map(DTensor::ptr), split)?;
        Ok(gx)
    }
    fn linear(&self, x: &DTensor, w: &DTensor, b: Option<&DTensor>) -> Result<DTensor> {
        let (n, fin, fout) = (x.shape[0], w.shape[1], w.shape[0]);
        let y = self.new_tensor(&[n, fout])?;
        linear::forward(self.device(), x.ptr(), w.ptr(), b.map(|b| b.ptr()), y.ptr(), n, fin, fout)?;
        Ok(y)
    }
    fn linear_backward_data(&self, gy: &DTensor, w: &DTensor) -> Result<DTensor> {
        let (n, fin, fout) = (gy.shape[0], w.shape[1], w.shape[0]);
        let gx = self.new_tensor(&[n, fin])?;
        linear::backward_data(self.device(), gy.ptr(), w.ptr(), gx.ptr(), n, fin, fout)?;
        Ok(gx)
    }
    fn max_pool2d(&self, x: &DTensor, g: &Pool2dGeom) -> Result<(DTensor, PoolIdx)> {
        let d = nhwc(&x.shape);
        let (oh, ow) = pool::out_hw(d, g)?;
        let y = self.new_tensor(&[d.n, d.c, oh, ow])?;
        let idx = self.alloc(y.numel())?;
        pool::max_pool2d(self.device(), x.ptr(), d, g, y.ptr(), idx.ptr)?;
        Ok((y, PoolIdx { buf: idx, geom: *g }))
    }
    fn max_pool2d_backward(&self, gy: &DTensor, argmax: &PoolIdx, x_shape: &[usize]) -> Result<DTensor> {
        let gx = self.new_tensor(x_shape)?;
        pool::max_pool2d_backward(self.device(), gy.ptr(), argmax.buf.ptr, nhwc(x_shape), &argmax.geom, gx.ptr())?;
        Ok(gx)
    }
    fn avg_pool2d(&self, x: &DTensor, g: &Pool2dGeom) -> Result<DTensor> {
        let d = nhwc(&x.shape);
        let (oh, ow) = pool::out_hw(d, g)?;
        let y = self.new_tensor(&[d.n, d.c, oh, ow])?;
        pool::avg_pool2d(self.device(), x.ptr(), d, g, y.ptr())?;
        Ok(y)
    }
    fn avg_pool2d_backward(&self, gy: &DTensor, x_shape: &[usize], g: &Pool2dGeom) -> Result<DTensor> {
        let gx = self.new_tensor(x_shape)?;
        pool::avg_pool2d_backward(self.device(), gy.ptr(), nhwc(x_shape), g, gx.ptr())?;
        Ok(gx)
    }
    fn adaptive_avg_pool2d(&self, x: &DTensor, out: [usize; 2]) -> Result<DTensor> {
        let d = nhwc(&x.shape);
        let y = self.new_tensor(&[d.n, d.c, out[0], out[1]])?;
        pool::adaptive_avg_pool2d(self.device(), x.ptr(), d, out, y.ptr())?;
        Ok(y)
    }
    fn adaptive_avg_pool2d_backward(&self, gy: &DTensor, x_shape: &[usize]) -> Result<DTensor> {
        let gx = self.new_tensor(x_shape)?;
        let out = [gy.shape[2], gy.shape[3]];
        pool::adaptive_avg_pool2d_backward(self.device(), gy.ptr(), nhwc(x_shape), out, gx.ptr())?;
        Ok(gx)
    }
    fn act(&self, x: &DTensor, a: Act) -> Result<DTensor> {
        let y = self.new_tensor(&x.shape)?;
        elementwise::act(self.device(), a, x.ptr(), y.ptr(), x.numel())?;
        Ok(y)
    }
    fn act_backward(&self, x: &DTensor, gy: &DTensor, a: Act) -> Result<DTensor> {
        let gx = self.new_tensor(&x.shape)?;
        elementwise::act_backward(self.device(), a, x.ptr(), gy.ptr(), gx.ptr(), x.numel())?;
        Ok(gx)
    }
    fn channel_scale(&self, x: &DTensor, s: &DTensor) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        let y = self.new_tensor(&x.shape)?;
        elementwise::channel_scale(self.device(), x.ptr(), s.ptr(), y.ptr(), n, h * w, c)?;
        Ok(y)
    }
    fn channel_scale_backward(&self, x: &DTensor, s: &DTensor, gy: &DTensor) -> Result<(DTensor, DTensor)> {
        let (n, c, h, w) = nchw(&x.shape);
        let gx = self.channel_scale(gy, s)?;
        let gs = self.new_tensor(&s.shape)?;
        elementwise::channel_scale_backward_scale(self.device(), x.ptr(), gy.ptr(), gs.ptr(), n, h * w, c)?;
        Ok((gx, gs))
    }
    fn affine(&self, x: &DTensor, scale: &DTensor, shift: &DTensor) -> Result<DTensor> {
        let y = self.new_tensor(&x.shape)?;
        elementwise::affine(self.device(), x.ptr(), scale.ptr(), shift.ptr(), y.ptr(), x.numel(), nchw(&x.shape).1)?;
        Ok(y)
    }
    fn affine_backward(&self, gy: &DTensor, scale: &DTensor) -> Result<DTensor> {
        let gx = self.new_tensor(&gy.shape)?;
        elementwise::affine_backward(self.device(), gy.ptr(), scale.ptr(), gx.ptr(), gy.numel(), nchw(&gy.shape).1)?;
        Ok(gx)
    }
    fn lrn(&self, x: &DTensor, g: &LrnGeom) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        let y = self.new_tensor(&x.shape)?;
        lrn::forward(self.device(), x.ptr(), y.ptr(), n * h * w, c, g)?;
        Ok(y)
    }
    fn lrn_backward(&self, x: &DTensor, gy: &DTensor, g: &LrnGeom) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        let gx = self.new_tensor(&x.shape)?;
        lrn::backward(self.device(), x.ptr(), gy.ptr(), gx.ptr(), n * h * w, c, g)?;
        Ok(gx)
    }

    fn add(&self, a: &DTensor, b: &DTensor) -> Result<DTensor> {
        let y = self.new_tensor(&a.shape)?;
        elementwise::add(self.device(), a.ptr(), b.ptr(), y.ptr(), a.numel())?;
        Ok(y)
    }
    fn add_assign(&self, a: &mut DTensor, b: &DTensor) -> Result<()> {
        self.make_unique(a)?;
        elementwise::add(self.device(), a.ptr(), b.ptr(), a.ptr(), a.numel())
    }
    fn concat(&self, xs: &[&DTensor]) -> Result<DTensor> {
        let (n, _, h, w) = nchw(&xs[0].shape);
        let total: usize = xs.iter().map(|x| nchw(&x.shape).1).sum();
        let y = self.new_tensor(&[n, total, h, w])?;
        let mut off = 0;
        for x in xs {
            let c = nchw(&x.shape).1;
            elementwise::channel_copy(self.device(), x.ptr(), y.ptr(), n * h * w, c, c, 0, total, off)?;
            off += c;
        }
        Ok(y)
    }
    fn split(&self, x: &DTensor, channels: &[usize]) -> Result<Vec<DTensor>> {
        let (n, total, h, w) = nchw(&x.shape);
        let mut off = 0;
        channels
            .iter()
            .map(|&c| {
                let y = self.new_tensor(&[n, c, h, w])?;
                elementwise::channel_copy(self.device(), x.ptr(), y.ptr(), n * h * w, c, total, off, c, 0)?;
                off += c;
                Ok(y)
            })
            .collect()
    }
    fn reshape(&self, x: DTensor, shape: &[usize]) -> Result<DTensor> {
        if shape.iter().product::<usize>() != x.numel() {
            return Err(Error::shape("reshape", shape, &x.shape));
        }
        // NHWC memory of a 4-d tensor is not the row-major order of its flattening
        let y = match (permuted(&x.shape), permuted(shape)) {
            (true, false) => self.permute(&x, false)?,
            (false, true) => self.permute(&DTensor { buf: x.buf.clone(), shape: shape.to_vec(), rows: None }, true)?,
            // one 4-d layout to another: through the row-major order
            (true, true) if x.shape != shape => {
                let flat = self.permute(&x, false)?;
                self.permute(&DTensor { buf: flat.buf, shape: shape.to_vec(), rows: None }, true)?
            }
            _ => x,
        };
        Ok(DTensor { buf: y.buf, shape: shape.to_vec(), rows: None })
    }

    fn unary(&self, x: &DTensor, op: Unary) -> Result<DTensor> {
        let y = self.new_tensor(&x.shape)?;
        elementwise::unary(self.device(), x.ptr(), y.ptr(), x.numel(), op)?;
        Ok(y)
    }
    fn binary(&self, a: &DTensor, b: &DTensor, op: Binary) -> Result<DTensor> {
        let shape = broadcast_shape(&a.shape, &b.shape)?;
        let y = self.new_tensor(&shape)?;
        // the dims in y's memory order, so the kernel writes y densely
        let order = memory_order(&shape);
        let (sa, sb) = (layout_strides(&a.shape), layout_strides(&b.shape));
        let pick = |s: &[usize], t: &[usize]| -> [usize; 4] {
            let mut out = [0; 4];
            for (k, &d) in order.iter().enumerate() {
                // a dim of 1 (padding or broadcast) is addressed with stride 0
                out[k] = d.map_or(0, |d| if t[d] == 1 { 0 } else { s[d] });
            }
            out
        };
        let dims = order.map(|d| d.map_or(1, |d| shape[d]));
        elementwise::binary(self.device(), a.ptr(), b.ptr(), y.ptr(), dims, pick(&sa, &a.shape), pick(&sb, &b.shape), op)?;
        Ok(y)
    }
    fn reduce(&self, x: &DTensor, op: Reduce, axes: &[usize]) -> Result<DTensor> {
        let shape = reduced_shape_of(&x.shape, axes, op)?;
        let y = self.new_tensor(&shape)?;
        let sx = layout_strides(&x.shape);
        let order = memory_order(&shape);
        let out_dims = order.map(|d| d.map_or(1, |d| shape[d]));
        let out_strides = order.map(|d| d.map_or(0, |d| sx[d]));
        // the reduced axes in logical order, right-aligned (the last fastest)
        let mut red_dims = [1usize; 4];
        let mut red_strides = [0usize; 4];
        let mut sorted = axes.to_vec();
        sorted.sort_unstable();
        for (k, &a) in sorted.iter().rev().enumerate() {
            red_dims[3 - k] = x.shape[a];
            red_strides[3 - k] = sx[a];
        }
        reduce::reduce(self.device(), x.ptr(), y.ptr(), out_dims, out_strides, red_dims, red_strides, op)?;
        Ok(y)
    }
    fn random(&self, shape: &[usize], seed: u64, dist: Random) -> Result<DTensor> {
        let y = self.new_tensor(shape)?;
        // the counter is the element's NCHW index; a 4-d tensor may sit in NHWC memory
        let (c, hw) = if permuted(shape) { (shape[1], shape[2] * shape[3]) } else { (1, 1) };
        elementwise::random(self.device(), y.ptr(), y.numel(), c, hw, seed, dist)?;
        Ok(y)
    }
    fn iota(&self, n: usize) -> Result<DTensor> {
        let y = self.new_tensor(&[1, n])?;
        elementwise::iota(self.device(), y.ptr(), n)?;
        Ok(y)
    }
    fn full(&self, shape: &[usize], value: f32) -> Result<DTensor> {
        let t = self.new_tensor(shape)?;
        if value == 0.0 && value.is_sign_positive() {
            self.dev.memset_zero(t.ptr(), t.numel().max(1) * 4)?;
        } else {
            elementwise::fill(self.device(), t.ptr(), t.numel(), value)?;
        }
        Ok(t)
    }
    fn roll(&self, x: &DTensor, dy: isize, dx: isize) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        let y = self.new_tensor(&x.shape)?;
        image::roll(self.device(), x.ptr(), y.ptr(), n, c, h, w, dy as i64, dx as i64)?;
        Ok(y)
    }
    fn flip(&self, x: &DTensor, vertical: bool, horizontal: bool) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        let y = self.new_tensor(&x.shape)?;
        image::flip(self.device(), x.ptr(), y.ptr(), n, c, h, w, vertical, horizontal)?;
        Ok(y)
    }
    fn crop(&self, x: &DTensor, y0: usize, x0: usize, oh: usize, ow: usize) -> Result<DTensor> {
        super::super::check_window("crop", &x.shape, &[x.shape.first().copied().unwrap_or(0), x.shape.get(1).copied().unwrap_or(0), oh, ow], y0, x0)?;
        let (n, c, h, w) = nchw(&x.shape);
        let y = self.new_tensor(&[n, c, oh, ow])?;
        image::crop(self.device(), x.ptr(), y.ptr(), n, c, h, w, y0, x0, oh, ow)?;
        Ok(y)
    }
    fn paste(&self, dst: &mut DTensor, src: &DTensor, y0: usize, x0: usize) -> Result<()> {
        super::super::check_window("paste", &dst.shape, &src.shape, y0, x0)?;
        self.make_unique(dst)?;
        let ((n, c, h, w), (_, _, oh, ow)) = (nchw(&dst.shape), nchw(&src.shape));
        image::paste(self.device(), src.ptr(), dst.ptr(), n, c, h, w, y0, x0, oh, ow)
    }
    fn gather_planes(&self, x: &DTensor, planes: &[usize]) -> Result<DTensor> {
        let (s, hw) = super::super::check_planes(&x.shape, planes)?;
        let y = self.new_tensor(&[planes.len(), 1, s[2], s[3]])?;
        if !planes.is_empty() {
            let numbers = self.upload_words(&planes.iter().map(|&p| p as i64).collect::<Vec<_>>())?;
            image::gather_planes(self.device(), x.ptr(), numbers.ptr(), y.ptr(), planes.len(), s[1], hw)?;
        }
        Ok(y)
    }
    fn iou_counts(&self, thresholds: &[f32], labels: usize, categories: usize) -> Option<Result<Box<dyn IouCounts<DTensor>>>> {
        Some(DeviceIouCounts::new(self, thresholds, labels, categories).map(|c| Box::new(c) as Box<dyn IouCounts<DTensor>>))
    }
    fn resize(&self, x: &DTensor, oh: usize, ow: usize) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        if (h, w) == (oh, ow) {
            return Ok(x.clone());
        }
        let y = self.new_tensor(&[n, c, oh, ow])?;
        image::resize_bilinear(self.device(), x.ptr(), y.ptr(), n, c, h, w, oh, ow)?;
        Ok(y)
    }
    fn warp(&self, x: &DTensor, theta: &DTensor) -> Result<DTensor> {
        self.warp_either(x, theta, false)
    }
    fn warp_backward(&self, gy: &DTensor, theta: &DTensor) -> Result<DTensor> {
        self.warp_either(gy, theta, true)
    }
}

/// Memory strides (elements) of each logical axis as the engine lays a tensor of this shape out:
/// NHWC for rank 4, row-major otherwise.
fn layout_strides(s: &[usize]) -> Vec<usize> {
    if s.len() == 4 {
        let (_, c, h, w) = (s[0], s[1], s[2], s[3]);
        return vec![h * w * c, 1, w * c, c];
    }
    let mut st = vec![0; s.len()];
    let mut acc = 1;
    for i in (0..s.len()).rev() {
        st[i] = acc;
        acc *= s[i];
    }
    st
}

/// Split-K's default: on unless `DEEPVIZ_SPLIT_K=0` (read once per process).
fn split_k_default() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| !std::env::var("DEEPVIZ_SPLIT_K").is_ok_and(|v| v.trim() == "0"))
}

/// The axes of a tensor of this shape in the order its memory runs (the last fastest), padded
/// in front with `None` to four; axes of length 1 go first (their order does not matter).
fn memory_order(s: &[usize]) -> [Option<usize>; 4] {
    let st = layout_strides(s);
    let mut axes: Vec<usize> = (0..s.len()).collect();
    axes.sort_by_key(|&a| (s[a] > 1, std::cmp::Reverse(st[a])));
    let mut out = [None; 4];
    for (k, &a) in axes.iter().enumerate() {
        out[4 - axes.len() + k] = Some(a);
    }
    out
}
