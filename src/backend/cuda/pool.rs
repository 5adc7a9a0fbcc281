//! Launches for `kernels/pool.cu`: NHWC `[n, h, w, c]` in, `[n, oh, ow, c]` out, with (oh, ow)
//! from [`Pool2dGeom::out_hw`] (PyTorch's ceil_mode rule). Forward kernels run one thread per
//! output element, backward kernels one per input element (a gather: deterministic, no atomics).

use super::{grid_stride, launch, len, ptr};
use crate::backend::Pool2dGeom;
use crate::device::{Arg, Device, DevicePtr};
use crate::error::{Error, Result};

/// The kernels this file launches, as `(op, variant)` of [`crate::device::kernel_name`].
pub const KERNELS: &[(&str, &str)] = &[
    ("max_pool2d", "fwd"),
    ("max_pool2d", "bwd"),
    ("avg_pool2d", "fwd"),
    ("avg_pool2d", "bwd"),
    ("adaptive_avg_pool2d", "fwd"),
    ("adaptive_avg_pool2d", "bwd"),
];

/// NHWC input dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nhwc {
    /// batch
    pub n: usize,
    /// height
    pub h: usize,
    /// width
    pub w: usize,
    /// channels
    pub c: usize,
}

impl Nhwc {
    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.n * self.h * self.w * self.c
    }
}

/// (oh, ow) of a pool, or an error naming the input and window.
pub fn out_hw(x: Nhwc, g: &Pool2dGeom) -> Result<(usize, usize)> {
    g.out_hw(x.h, x.w).ok_or_else(|| {
        Error::InvalidArgument(format!("pool: window {:?} with padding {:?} does not fit a {}x{} input", g.kernel, g.pad, x.h, x.w))
    })
}

/// The shared tail of the strided-pool signatures: `n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw`.
fn geom_args(x: Nhwc, oh: usize, ow: usize, g: &Pool2dGeom) -> [Arg; 12] {
    [x.n, x.c, x.h, x.w, oh, ow, g.kernel[0], g.kernel[1], g.stride[0], g.stride[1], g.pad[0], g.pad[1]].map(len)
}

/// y `[n, oh, ow, c]` and argmax (u32, `ih*W + iw` within the plane, first maximum wins ties).
pub fn max_pool2d(dev: &dyn Device, x: DevicePtr, dims: Nhwc, g: &Pool2dGeom, y: DevicePtr, argmax: DevicePtr) -> Result<()> {
    let (oh, ow) = out_hw(dims, g)?;
    let mut args = vec![ptr(x), ptr(y), ptr(argmax)];
    args.extend(geom_args(dims, oh, ow, g));
    // SAFETY: `max_pool2d_fwd_f32(const float* x, float* y, unsigned* argmax, n, c, h, w, oh,
    // ow, kh, kw, sh, sw, ph, pw)` (all long long); the grid-stride loop writes y[i] and
    // argmax[i] for every output element i < n*oh*ow*c.
    launch(dev, "max_pool2d", "fwd", grid_stride(dims.n * oh * ow * dims.c), &args)
}

/// gx `[n, h, w, c]` = Σ of gy over the outputs whose argmax is that element.
pub fn max_pool2d_backward(dev: &dyn Device, gy: DevicePtr, argmax: DevicePtr, dims: Nhwc, g: &Pool2dGeom, gx: DevicePtr) -> Result<()> {
    let (oh, ow) = out_hw(dims, g)?;
    let mut args = vec![ptr(gy), ptr(argmax), ptr(gx)];
    args.extend(geom_args(dims, oh, ow, g));
    // SAFETY: `max_pool2d_bwd_f32(const float* gy, const unsigned* argmax, float* gx, n, c, h,
    // w, oh, ow, kh, kw, sh, sw, ph, pw)`; writes gx[i] (0 if no window chose it) for every
    // input element i < n*h*w*c.
    launch(dev, "max_pool2d", "bwd", grid_stride(dims.numel()), &args)
}

/// Average pooling of `x` (`dims`) into `y` by `g` (the divisor as PyTorch: `count_include_pad`).
pub fn avg_pool2d(dev: &dyn Device, x: DevicePtr, dims: Nhwc, g: &Pool2dGeom, y: DevicePtr) -> Result<()> {
    let (oh, ow) = out_hw(dims, g)?;
    let mut args = vec![ptr(x), ptr(y)];
    args.extend(geom_args(dims, oh, ow, g));
    args.push(Arg::I32(g.count_include_pad as i32));
    // SAFETY: `avg_pool2d_fwd_f32(const float* x, float* y, n, c, h, w, oh, ow, kh, kw, sh, sw,
    // ph, pw, int count_include_pad)`; writes y[i] for every output element.
    launch(dev, "avg_pool2d", "fwd", grid_stride(dims.n * oh * ow * dims.c), &args)
}

/// The gradient of [`avg_pool2d`]: `gy` spread over each window into `gx`.
pub fn avg_pool2d_backward(dev: &dyn Device, gy: DevicePtr, dims: Nhwc, g: &Pool2dGeom, gx: DevicePtr) -> Result<()> {
    let (oh, ow) = out_hw(dims, g)?;
    let mut args = vec![ptr(gy), ptr(gx)];
    args.extend(geom_args(dims, oh, ow, g));
    args.push(Arg::I32(g.count_include_pad as i32));
    // SAFETY: `avg_pool2d_bwd_f32(const float* gy, float* gx, n, c, h, w, oh, ow, kh, kw, sh,
    // sw, ph, pw, int count_include_pad)`; writes gx[i] for every input element.
    launch(dev, "avg_pool2d", "bwd", grid_stride(dims.numel()), &args)
}

/// y `[n, out[0], out[1], c]`, PyTorch's adaptive windows.
pub fn adaptive_avg_pool2d(dev: &dyn Device, x: DevicePtr, dims: Nhwc, out: [usize; 2], y: DevicePtr) -> Result<()> {
    check_adaptive(dims, out)?;
    let args = [ptr(x), ptr(y), len(dims.n), len(dims.c), len(dims.h), len(dims.w), len(out[0]), len(out[1])];
    // SAFETY: `adaptive_avg_pool2d_fwd_f32(const float* x, float* y, n, c, h, w, oh, ow)`;
    // writes y[i] for every output element (windows are never empty when h, w > 0).
    launch(dev, "adaptive_avg_pool2d", "fwd", grid_stride(dims.n * out[0] * out[1] * dims.c), &args)
}

/// The gradient of adaptive average pooling to `out`: `gy` spread over each bin into `gx`.
pub fn adaptive_avg_pool2d_backward(dev: &dyn Device, gy: DevicePtr, dims: Nhwc, out: [usize; 2], gx: DevicePtr) -> Result<()> {
    check_adaptive(dims, out)?;
    let args = [ptr(gy), ptr(gx), len(dims.n), len(dims.c), len(dims.h), len(dims.w), len(out[0]), len(out[1])];
    // SAFETY: `adaptive_avg_pool2d_bwd_f32(const float* gy, float* gx, n, c, h, w, oh, ow)`;
    // writes gx[i] for every input element.
    launch(dev, "adaptive_avg_pool2d", "bwd", grid_stride(dims.numel()), &args)
}

fn check_adaptive(x: Nhwc, out: [usize; 2]) -> Result<()> {
    if x.h == 0 || x.w == 0 || out[0] == 0 || out[1] == 0 {
        return Err(Error::InvalidArgument(format!("adaptive pool: {}x{} input to {}x{} output", x.h, x.w, out[0], out[1])));
    }
    Ok(())
}
