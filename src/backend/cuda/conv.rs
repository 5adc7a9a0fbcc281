//! Launches for `kernels/conv.cu`. Activations NHWC; weights KKIO `[kh, kw, cin/groups, cout]`,
//! made from PyTorch's OIHW once at load time by [`repack_weight`] (gradients come back KKIO:
//! [`unpack_weight`]). One input channel per group (depthwise, any channel multiplier) takes the
//! direct `dwconv2d_*` kernels; everything else the implicit-GEMM `conv2d_*` kernels. The bias
//! gradient is [`super::reduce::channel_sum`] over gy (`batch` 1, `rows` n*oh*ow, `c` cout).
//! The forward pass fuses bias, residual add, activation and a channel-slice store
//! ([`forward_fused`]).

use super::{act_code, grid_stride, launch, len, opt_ptr, ptr};
use crate::backend::{Act, Conv2dGeom};
use crate::device::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::{Error, Result};

pub const KERNELS: &[(&str, &str)] = &[
    ("conv2d", "fwd"),
    ("conv2d", "bwd_data"),
    ("conv2d", "bwd_filter"),
    ("dwconv2d", "fwd"),
    ("dwconv2d", "bwd_data"),
    ("dwconv2d", "bwd_filter"),
    ("conv2d", "repack_weight"),
    ("conv2d", "unpack_weight"),
];

/// Block tile of the implicit GEMM (`TILE_M`, `TILE_N`, `THREADS` in conv.cu).
const TILE_M: usize = 64;
const TILE_N: usize = 64;
const THREADS: u32 = 256;
/// Channels per block and rows of threads of `dwconv2d_bwd_filter_f32` (`DW_*` in conv.cu).
const DW_CHANNELS: u32 = 32;
const DW_ROWS: u32 = 8;

/// The shapes of one convolution: input NHWC `[n, h, w, c]`, weight `cout x (c/groups) x kh x kw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
}

impl ConvShape {
    /// (oh, ow), or an error when the geometry does not fit.
    pub fn out_hw(&self, g: &Conv2dGeom) -> Result<(usize, usize)> {
        if g.groups == 0 || self.c % g.groups != 0 || self.cout % g.groups != 0 {
            return Err(Error::InvalidArgument(format!("conv2d: {} groups do not divide {} -> {} channels", g.groups, self.c, self.cout)));
        }
        g.out_hw(self.h, self.w, self.kh, self.kw).ok_or_else(|| {
            Error::InvalidArgument(format!("conv2d: {}x{} kernel does not fit a {}x{} input with padding {:?}", self.kh, self.kw, self.h, self.w, g.pad))
        })
    }
    fn depthwise(&self, g: &Conv2dGeom) -> bool {
        self.c == g.groups
    }
    /// Elements of the KKIO (or OIHW) weight.
    pub fn weight_len(&self, g: &Conv2dGeom) -> usize {
        self.kh * self.kw * (self.c / g.groups.max(1)) * self.cout
    }
}

/// `DV_CONV_PARAMS` of conv.cu: n, h, w, c, oh, ow, cout, kh, kw, sh, sw, pt, pl, dh, dw, groups.
fn conv_args(s: &ConvShape, g: &Conv2dGeom, oh: usize, ow: usize) -> [Arg; 16] {
    [s.n, s.h, s.w, s.c, oh, ow, s.cout, s.kh, s.kw, g.stride[0], g.stride[1], g.pad[0], g.pad[2], g.dilation[0], g.dilation[1], g.groups]
        .map(len)
}

/// Implicit-GEMM grid for an `[m, n]` product per group.
fn gemm_cfg(m: usize, n: usize, groups: usize) -> LaunchConfig {
    LaunchConfig {
        grid: [m.div_ceil(TILE_M).max(1) as u32, n.div_ceil(TILE_N).max(1) as u32, groups.max(1) as u32],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
    }
}

/// y `[n, oh, ow, cout]` = act(conv(x, w) + bias).
#[allow(clippy::too_many_arguments)]
pub fn forward(dev: &dyn Device, x: DevicePtr, wp: DevicePtr, bias: Option<DevicePtr>, y: DevicePtr, s: &ConvShape, g: &Conv2dGeom, act: Option<Act>) -> Result<()> {
    forward_fused(dev, x, wp, bias, None, y, s.cout, 0, s, g, act)
}

/// The forward conv with its whole epilogue fused: act(conv(x, w) + bias + residual), written
/// into channels `[y_off, y_off + cout)` of y, whose NHWC rows hold `y_stride` channels (so two
/// convs writing adjacent slices of one tensor make a concat that costs nothing).
///
/// `residual`, when given, is NHWC `[n, oh, ow, cout]` (contiguous, the conv's own output shape)
/// and is added before the activation, as in a ResNet block's `relu(conv(x) + identity)`. It may
/// be y itself only when the slice is the whole tensor (`y_stride == cout`, `y_off == 0`). The
/// channels of y outside the slice are left as they were.
#[allow(clippy::too_many_arguments)]
pub fn forward_fused(
    dev: &dyn Device,
    x: DevicePtr,
    wp: DevicePtr,
    bias: Option<DevicePtr>,
    residual: Option<DevicePtr>,
    y: DevicePtr,
    y_stride: usize,
    y_off: usize,
    s: &ConvShape,
    g: &Conv2dGeom,
    act: Option<Act>,
) -> Result<()> {
    let (oh, ow) = s.out_hw(g)?;
    if y_off + s.cout > y_stride {
        return Err(Error::InvalidArgument(format!(
            "conv2d: output slice [{y_off}, {}) does not fit rows of {y_stride} channels",
            y_off + s.cout
        )));
    }
    let mut args = vec![ptr(x), ptr(wp), opt_ptr(bias), opt_ptr(residual), ptr(y)];
    args.extend(conv_args(s, g, oh, ow));
    args.extend([len(y_stride), len(y_off), Arg::I32(act_code(act))]);
    if s.depthwise(g) {
        // SAFETY: `dwconv2d_fwd_f32(const float* x, const float* wp, const float* bias,
        // const float* residual, float* y, DV_CONV_PARAMS, long long y_stride, long long y_off,
        // int act)`; the grid-stride loop writes channels [y_off, y_off + cout) of every one of
        // the n*oh*ow rows of y (checked above to fit its y_stride).
        launch(dev, "dwconv2d", "fwd", grid_stride(s.n * oh * ow * s.cout), &args)
    } else {
        // SAFETY: `conv2d_fwd_f32(same signature)`; the grid covers M = n*oh*ow by
        // og = cout/groups per group (grid.z), and every in-range (m, o) is stored once, at
        // y[m * y_stride + y_off + g * og + o].
        launch(dev, "conv2d", "fwd", gemm_cfg(s.n * oh * ow, s.cout / g.groups, g.groups), &args)
    }
}

/// gx `[n, h, w, c]` from gy `[n, oh, ow, cout]`.
pub fn backward_data(dev: &dyn Device, gy: DevicePtr, wp: DevicePtr, gx: DevicePtr, s: &ConvShape, g: &Conv2dGeom) -> Result<()> {
    let (oh, ow) = s.out_hw(g)?;
    let mut args = vec![ptr(gy), ptr(wp), ptr(gx)];
    args.extend(conv_args(s, g, oh, ow));
    if s.depthwise(g) {
        // SAFETY: `dwconv2d_bwd_data_f32(const float* gy, const float* wp, float* gx,
        // DV_CONV_PARAMS)`; the grid-stride loop writes every gx element.
        launch(dev, "dwconv2d", "bwd_data", grid_stride(s.n * s.h * s.w * s.c), &args)
    } else {
        // SAFETY: `conv2d_bwd_data_f32(same signature)`; the grid covers M = n*h*w by
        // cg = c/groups per group, every in-range (m, ci) stored once.
        launch(dev, "conv2d", "bwd_data", gemm_cfg(s.n * s.h * s.w, s.c / g.groups, g.groups), &args)
    }
}

/// gwp (KKIO) from x `[n, h, w, c]` and gy `[n, oh, ow, cout]`.
pub fn backward_filter(dev: &dyn Device, x: DevicePtr, gy: DevicePtr, gwp: DevicePtr, s: &ConvShape, g: &Conv2dGeom) -> Result<()> {
    let (oh, ow) = s.out_hw(g)?;
    let mut args = vec![ptr(x), ptr(gy), ptr(gwp)];
    args.extend(conv_args(s, g, oh, ow));
    if s.depthwise(g) {
        let tiles = s.cout.div_ceil(DW_CHANNELS as usize);
        let cfg = LaunchConfig { grid: [(s.kh * s.kw * tiles).max(1) as u32, 1, 1], block: [DW_CHANNELS, DW_ROWS, 1], shared_bytes: 0 };
        // SAFETY: `dwconv2d_bwd_filter_f32(const float* x, const float* gy, float* gwp,
        // DV_CONV_PARAMS)`; one block per (tap, 32-channel tile) writes gwp[tap, oc] for each
        // oc of its tile.
        launch(dev, "dwconv2d", "bwd_filter", cfg, &args)
    } else {
        let cg = s.c / g.groups;
        // SAFETY: `conv2d_bwd_filter_f32(same signature)`; the grid covers M = kh*kw*cg by
        // og per group, every in-range (r, o) stored once.
        launch(dev, "conv2d", "bwd_filter", gemm_cfg(s.kh * s.kw * cg, s.cout / g.groups, g.groups), &args)
    }
}

/// OIHW `[cout, cg, kh, kw]` -> KKIO `[kh, kw, cg, cout]` (wp must not alias w).
pub fn repack_weight(dev: &dyn Device, w: DevicePtr, wp: DevicePtr, cout: usize, cg: usize, kh: usize, kw: usize) -> Result<()> {
    // SAFETY: `conv2d_repack_weight_f32(const float* w, float* wp, long long cout, long long cg,
    // long long kh, long long kw)`; the loop runs over every destination element.
    launch(dev, "conv2d", "repack_weight", grid_stride(cout * cg * kh * kw), &[ptr(w), ptr(wp), len(cout), len(cg), len(kh), len(kw)])
}

/// KKIO -> OIHW (w must not alias wp).
pub fn unpack_weight(dev: &dyn Device, wp: DevicePtr, w: DevicePtr, cout: usize, cg: usize, kh: usize, kw: usize) -> Result<()> {
    // SAFETY: `conv2d_unpack_weight_f32(const float* wp, float* w, long long cout, long long cg,
    // long long kh, long long kw)`; the loop runs over every destination element.
    launch(dev, "conv2d", "unpack_weight", grid_stride(cout * cg * kh * kw), &[ptr(wp), ptr(w), len(cout), len(cg), len(kh), len(kw)])
}
