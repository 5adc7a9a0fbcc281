//! [`Gpu`]: the [`Backend`] of the CUDA engine. Tensors live on a [`Device`] — the real GPU or
//! its CPU emulation, through the same launch code — in NHWC; only `upload` and `download` cross
//! to the host (converting from / to NCHW on the device). Buffers are reference-counted and
//! freed when the last handle drops; ops allocate their outputs (a caching allocator is a later
//! step), and the in-place ops copy first when a buffer is shared.

use std::sync::Arc;

use super::{conv, elementwise, image, linear, lrn, pool, reduce, render};
use crate::backend::{Act, Backend, Conv2dGeom, LrnGeom, Pool2dGeom, Role};
use crate::device::{Device, DevicePtr};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One device allocation, freed on drop.
pub struct Buffer {
    dev: Arc<dyn Device>,
    ptr: DevicePtr,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.dev.free(self.ptr);
    }
}

/// A tensor on the device: NHWC memory, logical NCHW `shape` (rank 2 `[n, k]` is stored as is).
#[derive(Clone)]
pub struct DTensor {
    buf: Arc<Buffer>,
    pub shape: Vec<usize>,
}

impl DTensor {
    pub fn ptr(&self) -> DevicePtr {
        self.buf.ptr
    }
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
pub struct Gpu {
    dev: Arc<dyn Device>,
}

impl Gpu {
    pub fn new(dev: Arc<dyn Device>) -> Self {
        Gpu { dev }
    }

    /// The CUDA engine on the CPU emulation of the CUDA execution model.
    pub fn emulated() -> Self {
        Gpu::new(Arc::new(crate::device::emu::EmuDevice::new()))
    }

    pub fn device(&self) -> &dyn Device {
        self.dev.as_ref()
    }

    fn alloc(&self, elems: usize) -> Result<Arc<Buffer>> {
        let ptr = self.dev.alloc(elems.max(1) * 4)?;
        Ok(Arc::new(Buffer { dev: self.dev.clone(), ptr }))
    }

    fn alloc_bytes(&self, bytes: usize) -> Result<Arc<Buffer>> {
        let ptr = self.dev.alloc(bytes.max(1))?;
        Ok(Arc::new(Buffer { dev: self.dev.clone(), ptr }))
    }

    fn new_tensor(&self, shape: &[usize]) -> Result<DTensor> {
        Ok(DTensor { buf: self.alloc(shape.iter().product())?, shape: shape.to_vec() })
    }

    fn upload_raw(&self, data: &[f32], shape: &[usize]) -> Result<DTensor> {
        let t = self.new_tensor(shape)?;
        self.dev.upload(t.ptr(), bytemuck::cast_slice(data))?;
        Ok(t)
    }

    fn upload_i32(&self, v: &[i32]) -> Result<Arc<Buffer>> {
        let b = self.alloc(v.len())?;
        self.dev.upload(b.ptr, bytemuck::cast_slice(v))?;
        Ok(b)
    }

    /// Give `x` a buffer of its own before writing into it in place.
    fn make_unique(&self, x: &mut DTensor) -> Result<()> {
        if Arc::strong_count(&x.buf) > 1 {
            let y = self.new_tensor(&x.shape)?;
            elementwise::scale(self.device(), x.ptr(), y.ptr(), x.numel(), 1.0)?;
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
                let wp = self.new_tensor(&t.shape)?;
                conv::repack_weight(self.device(), raw.ptr(), wp.ptr(), cout, cg, kh, kw)?;
                Ok(wp)
            }
            Role::LinearWeight | Role::Vector => Ok(raw),
        }
    }
    fn zeros(&self, shape: &[usize]) -> Result<DTensor> {
        let t = self.new_tensor(shape)?;
        self.dev.memset_zero(t.ptr(), t.numel().max(1) * 4)?;
        Ok(t)
    }

    fn conv2d(&self, x: &DTensor, w: &DTensor, b: Option<&DTensor>, g: &Conv2dGeom) -> Result<DTensor> {
        let (n, c, h, wd) = nchw(&x.shape);
        let s = conv::ConvShape { n, h, w: wd, c, cout: w.shape[0], kh: w.shape[2], kw: w.shape[3] };
        let (oh, ow) = s.out_hw(g)?;
        let y = self.new_tensor(&[n, s.cout, oh, ow])?;
        conv::forward(self.device(), x.ptr(), w.ptr(), b.map(|b| b.ptr()), y.ptr(), &s, g, None)?;
        Ok(y)
    }
    fn conv2d_backward_data(&self, gy: &DTensor, w: &DTensor, x_shape: &[usize], g: &Conv2dGeom) -> Result<DTensor> {
        let (n, c, h, wd) = nchw(x_shape);
        let s = conv::ConvShape { n, h, w: wd, c, cout: w.shape[0], kh: w.shape[2], kw: w.shape[3] };
        let gx = self.new_tensor(x_shape)?;
        conv::backward_data(self.device(), gy.ptr(), w.ptr(), gx.ptr(), &s, g)?;
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
            (false, true) => self.permute(&DTensor { buf: x.buf.clone(), shape: shape.to_vec() }, true)?,
            (true, true) if x.shape != shape => {
                return Err(Error::Unsupported(format!("reshape {:?} -> {shape:?} on the GPU engine", x.shape)))
            }
            _ => x,
        };
        Ok(DTensor { buf: y.buf, shape: shape.to_vec() })
    }

    fn one_hot(&self, shape: &[usize], targets: &[usize]) -> Result<DTensor> {
        let (n, k) = (shape[0], shape[1..].iter().product::<usize>());
        let t: Vec<i32> = targets.iter().map(|&c| c as i32).collect();
        let tb = self.upload_i32(&t)?;
        let y = self.new_tensor(shape)?;
        elementwise::one_hot(self.device(), y.ptr(), n, k, tb.ptr)?;
        Ok(y)
    }
    fn max_abs_channels(&self, x: &DTensor) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        let y = self.new_tensor(&[n, 1, h, w])?;
        reduce::channel_absmax(self.device(), x.ptr(), y.ptr(), n * h * w, c)?;
        Ok(y)
    }
    fn spatial_mean(&self, x: &DTensor) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        let y = self.new_tensor(&[n, c, 1, 1])?;
        reduce::spatial_mean(self.device(), x.ptr(), y.ptr(), n, h * w, c)?;
        Ok(y)
    }
    fn weighted_channel_sum(&self, x: &DTensor, w: &DTensor, relu: bool) -> Result<DTensor> {
        let (n, c, h, wd) = nchw(&x.shape);
        let y = self.new_tensor(&[n, 1, h, wd])?;
        reduce::weighted_channel_sum(self.device(), x.ptr(), w.ptr(), y.ptr(), n, h * wd, c, relu)?;
        Ok(y)
    }
    fn half_sq_norm(&self, x: &DTensor) -> Result<Vec<f32>> {
        self.item_reduce(x, reduce::ItemReduce::HalfSumSq)
    }
    fn mean_abs(&self, x: &DTensor) -> Result<Vec<f32>> {
        self.item_reduce(x, reduce::ItemReduce::MeanAbs)
    }
    fn axpy_items(&self, x: &mut DTensor, g: &DTensor, alpha: &[f32]) -> Result<()> {
        self.make_unique(x)?;
        let a = self.upload_raw(alpha, &[alpha.len()])?;
        let n = x.shape[0];
        elementwise::axpy_items(self.device(), x.ptr(), g.ptr(), a.ptr(), n, x.numel() / n)
    }
    fn scale(&self, x: &DTensor, k: f32) -> Result<DTensor> {
        let y = self.new_tensor(&x.shape)?;
        elementwise::scale(self.device(), x.ptr(), y.ptr(), x.numel(), k)?;
        Ok(y)
    }
    fn sub(&self, a: &DTensor, b: &DTensor) -> Result<DTensor> {
        let y = self.new_tensor(&a.shape)?;
        elementwise::sub(self.device(), a.ptr(), b.ptr(), y.ptr(), a.numel())?;
        Ok(y)
    }
    fn roll(&self, x: &DTensor, dy: isize, dx: isize) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        let y = self.new_tensor(&x.shape)?;
        image::roll(self.device(), x.ptr(), y.ptr(), n, c, h, w, dy as i64, dx as i64)?;
        Ok(y)
    }
    fn resize_bilinear(&self, x: &DTensor, oh: usize, ow: usize) -> Result<DTensor> {
        let (n, c, h, w) = nchw(&x.shape);
        if (h, w) == (oh, ow) {
            return Ok(x.clone());
        }
        let y = self.new_tensor(&[n, c, oh, ow])?;
        image::resize_bilinear(self.device(), x.ptr(), y.ptr(), n, c, h, w, oh, ow)?;
        Ok(y)
    }
    fn clamp_channels(&self, x: &mut DTensor, lo: &[f32], hi: &[f32]) -> Result<()> {
        self.make_unique(x)?;
        let c = nchw(&x.shape).1;
        let (l, h) = (self.upload_raw(lo, &[c])?, self.upload_raw(hi, &[c])?);
        image::clamp(self.device(), x.ptr(), l.ptr(), h.ptr(), x.ptr(), x.numel(), c)
    }

    fn render(&self, maps: &DTensor, pictures: Option<&[::image::RgbImage]>, out_hw: [usize; 2], cmap: crate::imageio::Colormap, alpha: f32, clip: Option<f32>) -> Result<Vec<::image::RgbImage>> {
        let (n, h, w) = crate::backend::check_render_args(&maps.shape, pictures, out_hw, clip)?;
        let [oh, ow] = out_hw;
        let hw = oh * ow;
        if n == 0 {
            return Ok(vec![]);
        }
        // [n, 1, h, w] is NHWC with c = 1; resized even at the same size, as the host pipeline
        // does (a NaN reaches its neighbours through the zero weights either way)
        let up = self.new_tensor(&[n, 1, oh, ow])?;
        image::resize_bilinear(self.device(), maps.ptr(), up.ptr(), n, 1, h, w, oh, ow)?;
        let range = self.new_tensor(&[n, 2])?;
        render::map_minmax(self.device(), up.ptr(), range.ptr(), n, hw)?;
        if let Some(q) = clip.filter(|&q| q < 1.0) {
            // q = 1 reaches the full count only in the last bin, whose edge is hi: nothing to do
            render::map_clip(self.device(), up.ptr(), range.ptr(), n, hw, q)?;
        }
        let base = match pictures {
            Some(p) => {
                let bytes: Vec<u8> = p.iter().flat_map(|img| img.as_raw().iter().copied()).collect();
                let b = self.alloc_bytes(bytes.len())?;
                self.dev.upload(b.ptr, &bytes)?;
                Some(b)
            }
            None => None,
        };
        let a = if alpha.is_nan() { 0.0 } else { alpha.clamp(0.0, 1.0) };
        let out = self.alloc_bytes(n * hw * 3)?;
        render::heatmap(self.device(), up.ptr(), range.ptr(), base.as_ref().map(|b| b.ptr), out.ptr, n, hw, cmap, a)?;
        let mut bytes = vec![0u8; n * hw * 3];
        self.dev.download(out.ptr, &mut bytes)?;
        bytes
            .chunks_exact(hw * 3)
            .map(|c| {
                ::image::RgbImage::from_raw(ow as u32, oh as u32, c.to_vec())
                    .ok_or_else(|| Error::InvalidArgument(format!("render: {}x{} pictures do not fit in memory", oh, ow)))
            })
            .collect()
    }
}

impl Gpu {
    fn item_reduce(&self, x: &DTensor, mode: reduce::ItemReduce) -> Result<Vec<f32>> {
        let n = x.shape[0];
        let y = self.new_tensor(&[n])?;
        reduce::item_reduce(self.device(), x.ptr(), y.ptr(), n, x.numel() / n, mode)?;
        Ok(self.download(&y)?.data)
    }
}
