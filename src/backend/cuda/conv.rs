//! Launches for `kernels/conv.cu`. Activations NHWC; weights KKIO `[kh, kw, cin/groups, cout]`,
//! made from PyTorch's OIHW once at load time by [`repack_weight`] (gradients come back KKIO:
//! [`unpack_weight`]). One input channel per group (depthwise, any channel multiplier) takes the
//! direct `dwconv2d_*` kernels; everything else the implicit-GEMM `conv2d_*` kernels. The bias
//! gradient is [`super::reduce::channel_sum`] over gy (`batch` 1, `rows` n*oh*ow, `c` cout).
//! The forward pass fuses bias, residual add, activation and a channel-slice store
//! ([`forward_fused`]).
//!
//! [`Precision`] picks the arithmetic of the forward and backward-data GEMMs: f32 on plain cores
//! (`kernels/conv.cu`, exact) or tensor cores with TF32 / BF16 operands and f32 accumulation
//! (`kernels/conv_tc.cu`). f32 may also run on the tensor cores by tap slices as 3xTF32 (each
//! operand a TF32 head plus a TF32 tail, three products: f32-grade, ~2^-21 relative per
//! product): [`TcStaging::Tap`] in f32 names it, and [`f32_tensor_cores`] says whether the
//! engine takes it. Every conv kernel indexes in 32 bits: [`check_i32`] refuses, before
//! any launch, a convolution whose tensors have 2^31 elements or more.

use super::{act_code, grid_stride, launch, opt_ptr, ptr};
use crate::backend::{Act, Conv2dGeom, Precision};
use crate::device::{Arg, Device, DevicePtr, LaunchConfig};
use crate::error::{Error, Result};

/// The kernels this file launches, as `(op, variant)` of [`crate::device::kernel_name`].
pub const KERNELS: &[(&str, &str)] = &[
    ("conv2d", "fwd"),
    ("conv2d", "bwd_data"),
    ("conv2d", "bwd_data_phased"),
    ("conv2d", "bwd_data_direct"),
    ("conv2d", "bwd_data_direct4"),
    ("conv2d", "bwd_filter"),
    ("dwconv2d", "fwd"),
    ("dwconv2d", "bwd_data"),
    ("dwconv2d", "bwd_filter"),
    ("conv2d", "repack_weight"),
    ("conv2d", "unpack_weight"),
    ("conv2d", "rows_weight"),
    ("conv2d", "col2im"),
    ("conv2d", "splitk_fwd"),
    ("conv2d", "splitk_bwd_data"),
    ("conv2d", "fwd_tf32"),
    ("conv2d", "fwd_bf16"),
    ("conv2d", "bwd_data_tf32"),
    ("conv2d", "bwd_data_bf16"),
    ("conv2d", "fwd_tf32_tap"),
    ("conv2d", "fwd_bf16_tap"),
    ("conv2d", "bwd_data_tf32_tap"),
    ("conv2d", "bwd_data_bf16_tap"),
    ("conv2d", "fwd_tf32x3_tap"),
    ("conv2d", "bwd_data_tf32x3_tap"),
];

/// Block tile of the implicit GEMM (`TILE_M`, `TILE_N`, `THREADS` in conv.cu).
const TILE_M: usize = 64;
const TILE_N: usize = 64;
const TILE_K: usize = 16;
const THREADS: u32 = 256;
/// Block tile of the tensor-core GEMMs (`TC_M`, `TC_N`, `TC_K`, `TC_THREADS`, `TC_SMEM_BYTES`
/// in conv_tc.cu): 3 stages of a 128 x 36 A slice and a 32 x 72 B slice, f32.
const TC_M: usize = 128;
const TC_N: usize = 64;
const TC_K: usize = 32;
const TC_THREADS: u32 = 256;
const TC_SMEM_BYTES: u32 = 3 * (128 * 36 + 32 * 72) * 4;
/// The tap-slice versions' shared memory (`TS_SMEM_BYTES`): 3 stages of an unpadded 128 x 32
/// A slice and 32 x 64 B slice, f32.
const TS_SMEM_BYTES: u32 = 3 * (128 * 32 + 32 * 64) * 4;
/// `conv2d_fwd_bf16_wgmma_f32`'s shared memory (`WG_SMEM_BYTES` in kernels/conv_wgmma_sm90a.cu):
/// 1024 bytes of alignment slack and 2 stages of a 128 x 64 A and 64 x 64 B slice, bf16.
const WG_SMEM_BYTES: u32 = 1024 + 2 * (128 + 64) * 64 * 2;
/// Its K slice: the input channels per group must be a multiple of it.
const WG_K: usize = 64;
/// Its kernel: sm_90a SASS alone, so present on CC 9.0 cards and on the emulator only.
const WGMMA_FWD: &str = "conv2d_fwd_bf16_wgmma_f32";

/// Whether the engine's bf16 forward convolutions run on Hopper's wgmma
/// (`conv2d_fwd_bf16_wgmma_f32`) where it applies (`DEEPVIZ_WGMMA=1`), instead of the mma.sync
/// tap kernel. Off until a card shows it correct and faster (benches/RESULTS.md, Owed 12:
/// `examples/conv_layers` times both, pass `fwd_wgmma`); the tests run it explicitly
/// ([`TcStaging::Wgmma`]). Read once per process.
pub fn wgmma_forward() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DEEPVIZ_WGMMA").is_ok_and(|v| v.trim() == "1"))
}

/// Whether [`TcStaging::Wgmma`] can run this convolution on `dev`: the kernel is there (a
/// CC 9.0 card, or the emulator), the convolution is not depthwise and its input channels per
/// group are whole 64-channel slices.
pub fn wgmma_applies(dev: &dyn Device, s: &ConvShape, g: &Conv2dGeom) -> bool {
    !s.depthwise(g) && (s.c / g.groups.max(1)).is_multiple_of(WG_K) && dev.has_kernel(WGMMA_FWD)
}
/// Most input channels per group of `conv2d_bwd_data_direct_f32` (`DIRECT_CG` in conv.cu).
const DIRECT_CG: usize = 4;
/// Channels per block and rows of threads of `dwconv2d_bwd_filter_f32` (`DW_*` in conv.cu).
const DW_CHANNELS: u32 = 32;
const DW_ROWS: u32 = 8;

/// Least reduction a split-K part multiplies (elements of K): 8 of the plain kernels' TILE_K
/// steps, 4 of the tensor cores' TC_K slices (with their 2 slices of pipeline fill).
const SPLIT_MIN_K: usize = 128;
/// Most parts a reduction is split into.
const SPLIT_MAX: usize = 16;
/// Most floats of split-K workspace one launch takes (64 MiB): parts x the output.
const SPLIT_MAX_FLOATS: usize = 16 << 20;

/// Split-K for one GEMM launch (`DvSplit` in kernels/conv.cuh): the reduction runs in `parts`
/// parts, each block multiplying its part's share of the K tiles into its own copy of the
/// output in `ws` (`parts` x the output's elements, f32), and `conv2d_splitk_*` adds the
/// parts in order and applies the epilogue (bias, residual, activation, channel slice; going
/// back, the mask). The sum is deterministic but in a different order than one part's, so the
/// last bits differ from the unsplit launch.
///
/// What it is for: a layer whose grid is under a wave of the card. resnet50 at batch 1 gives its
/// stage-4 3x3 convolutions 8 blocks of 128 x 64 (7 x 7 pixels, 512 channels) on a card of 132
/// SMs; split 16 ways they take 128. [`forward_parts`] and [`backward_data_parts`] choose:
/// as many parts as fill the card once at one block an SM (`SMs / blocks`, rounded down, so a
/// grid of more than half a wave is left alone), each at least 128 of K, at most 16, and at most
/// 64 MiB of workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitK {
    /// parts of the reduction (1: no split, `ws` unused)
    pub parts: usize,
    /// the workspace, `parts * output elements` floats (see [`SplitK::ws_len`])
    pub ws: DevicePtr,
}

impl SplitK {
    /// No split: one part writes the output through its epilogue.
    pub const NONE: SplitK = SplitK { parts: 1, ws: DevicePtr(0) };

    /// Floats of workspace `parts` parts of an output of `out_len` elements need (0 for one).
    pub fn ws_len(parts: usize, out_len: usize) -> usize {
        if parts > 1 {
            parts * out_len
        } else {
            0
        }
    }

    /// Parts for a grid of `blocks` over a reduction of `k` elements in tiles of `tile`, on a
    /// device of `sms` multiprocessors, with an output of `out_len` elements; normalised so
    /// that every part has tiles (`ceil(tiles / ceil(tiles / parts))`).
    fn choose(sms: usize, blocks: usize, k: usize, tile: usize, out_len: usize) -> usize {
        let tiles = k.div_ceil(tile);
        let by_k = k / SPLIT_MIN_K;
        let by_ws = SPLIT_MAX_FLOATS / out_len.max(1);
        let parts = (sms / blocks.max(1)).min(by_k).min(by_ws).clamp(1, SPLIT_MAX);
        if parts == 1 || tiles == 0 {
            return 1;
        }
        tiles.div_ceil(tiles.div_ceil(parts))
    }

    fn args(self) -> [Arg; 2] {
        [ptr(self.ws), Arg::I32(self.parts as i32)]
    }

    /// Whether `ws` may hold this many parts of `out_len` (the launch code's check).
    fn check(self, out_len: usize) -> Result<()> {
        if self.parts == 0 || self.parts > SPLIT_MAX {
            return Err(Error::InvalidArgument(format!("conv2d: split-K into {} parts (1 to {SPLIT_MAX})", self.parts)));
        }
        if self.parts > 1 && self.ws.0 == 0 {
            return Err(Error::InvalidArgument(format!("conv2d: split-K into {} parts needs its workspace of {} floats; none was given", self.parts, self.parts * out_len)));
        }
        Ok(())
    }
}

/// The engine's split-K parts for the forward convolution [`forward_fused`] would launch with
/// these weights (`rows`: whether the OHWI rows are there for the tap slices) on `dev`: 1
/// where its grid fills the card or the convolution is depthwise.
pub fn forward_parts(dev: &dyn Device, prec: Precision, rows: bool, s: &ConvShape, g: &Conv2dGeom) -> usize {
    let Ok((oh, ow)) = s.out_hw(g) else { return 1 };
    if s.depthwise(g) {
        return 1;
    }
    let (m, k) = (s.n * oh * ow, s.kh * s.kw * (s.c / g.groups.max(1)));
    let (cfg, tile) = forward_grid(prec, TcStaging::engine(rows, s, g), m, s.cout / g.groups.max(1), g.groups);
    SplitK::choose(dev.multiprocessors(), blocks(&cfg), k, tile, m * s.cout)
}

/// The engine's split-K parts for backward data by version `v` (the GEMM versions: v1, v2 and
/// the tensor cores'; 1 for the others), as [`forward_parts`]. The stride phases' reductions
/// differ: the largest decides, and a part of a smaller phase may be empty (it stores zeros).
pub fn backward_data_parts(dev: &dyn Device, v: BackwardData, s: &ConvShape, g: &Conv2dGeom) -> usize {
    let Some((cfg, tile)) = backward_grid(v, s, g) else { return 1 };
    let og = s.cout / g.groups.max(1);
    let k = match v {
        BackwardData::Gemm => s.kh * s.kw * og,
        _ => phases(s, g).iter().map(|&(_, t)| t).max().unwrap_or(0) * og,
    };
    SplitK::choose(dev.multiprocessors(), blocks(&cfg), k, tile, s.n * s.h * s.w * s.c)
}

fn blocks(cfg: &LaunchConfig) -> usize {
    cfg.grid.iter().map(|&d| d as usize).product()
}

/// Whether the forward runs on the tensor cores: tf32 / bf16, or f32 by tap slices (3xTF32; f32
/// asked of wgmma goes there too, to be refused).
fn forward_on_tensor_cores(prec: Precision, staging: TcStaging) -> bool {
    prec != Precision::F32 || staging != TcStaging::Gather
}

/// The forward GEMM's grid over `[m, og]` per group before any split, and its K tile.
fn forward_grid(prec: Precision, staging: TcStaging, m: usize, og: usize, groups: usize) -> (LaunchConfig, usize) {
    if forward_on_tensor_cores(prec, staging) {
        (tc_cfg(m, og, groups, staging), TC_K)
    } else {
        (gemm_cfg(m, og, groups), TILE_K)
    }
}

/// A GEMM version of backward data's grid before any split (grid.z: groups, times the stride
/// phases for v2 and the tensor cores'), and its K tile; None for the other versions.
fn backward_grid(v: BackwardData, s: &ConvShape, g: &Conv2dGeom) -> Option<(LaunchConfig, usize)> {
    let cg = s.c / g.groups.max(1);
    let [sh, sw] = g.stride;
    let phase_pixels = s.n * s.h.div_ceil(sh) * s.w.div_ceil(sw);
    match v {
        BackwardData::Gemm => Some((gemm_cfg(s.n * s.h * s.w, cg, g.groups), TILE_K)),
        BackwardData::Phased => {
            let mut cfg = gemm_cfg(phase_pixels, cg, g.groups);
            cfg.grid[2] *= (sh * sw) as u32;
            Some((cfg, TILE_K))
        }
        BackwardData::TensorCore(_, st) => Some((tc_cfg(phase_pixels, cg, g.groups * sh * sw, st), TC_K)),
        _ => None,
    }
}

/// The shapes of one convolution: input NHWC `[n, h, w, c]`, weight `cout x (c/groups) x kh x kw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// batch
    pub n: usize,
    /// input height
    pub h: usize,
    /// input width
    pub w: usize,
    /// input channels
    pub c: usize,
    /// output channels
    pub cout: usize,
    /// kernel height
    pub kh: usize,
    /// kernel width
    pub kw: usize,
}

impl ConvShape {
    /// (oh, ow), or an error when the geometry does not fit.
    pub fn out_hw(&self, g: &Conv2dGeom) -> Result<(usize, usize)> {
        if g.groups == 0 || !self.c.is_multiple_of(g.groups) || !self.cout.is_multiple_of(g.groups) {
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

/// The conv kernels index in 32 bits (kernels/conv.cuh): every tensor a launch touches (x, y
/// with its row stride, the weight) and every coordinate must stay below 2^31. An error naming
/// the tensor otherwise.
pub fn check_i32(s: &ConvShape, g: &Conv2dGeom, oh: usize, ow: usize, y_stride: usize) -> Result<()> {
    let tensors = [
        ("input", [s.n, s.h, s.w, s.c]),
        ("output", [s.n, oh, ow, y_stride.max(s.cout)]),
        ("weight", [s.kh, s.kw, s.c / g.groups.max(1), s.cout]),
        // the farthest coordinate a window reaches, padding and dilation included
        ("padded input", [1, 1, s.h.max(s.w) + g.pad.iter().sum::<usize>() + (s.kh.max(s.kw) + 1) * g.dilation[0].max(g.dilation[1]), g.stride[0].max(g.stride[1])]),
    ];
    for (what, dims) in tensors {
        let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if n.is_none_or(|n| n > i32::MAX as usize) {
            return Err(Error::Unsupported(format!(
                "conv2d: the {what} {dims:?} has {} elements; the GPU conv kernels index in 32 bits (at most {}); split the batch",
                n.map_or("more than 2^64".to_string(), |n| n.to_string()),
                i32::MAX
            )));
        }
    }
    Ok(())
}

/// A conv kernel's `int` argument (sizes checked by [`check_i32`]).
fn int(n: usize) -> Arg {
    Arg::I32(n as i32)
}

/// `DV_CONV_PARAMS` of conv.cuh: n, h, w, c, oh, ow, cout, kh, kw, sh, sw, pt, pl, dh, dw, groups.
fn conv_args(s: &ConvShape, g: &Conv2dGeom, oh: usize, ow: usize) -> [Arg; 16] {
    [s.n, s.h, s.w, s.c, oh, ow, s.cout, s.kh, s.kw, g.stride[0], g.stride[1], g.pad[0], g.pad[2], g.dilation[0], g.dilation[1], g.groups]
        .map(int)
}

/// Multiply-adds an implicit-GEMM launch over `[m, n]` with reduction `k` per group performs:
/// whole tiles (TILE_M x TILE_N, k in steps of TILE_K), padding included.
fn gemm_macs(m: usize, n: usize, k: usize, groups: usize) -> u64 {
    (m.div_ceil(TILE_M) * TILE_M) as u64 * (n.div_ceil(TILE_N) * TILE_N) as u64 * (k.div_ceil(TILE_K) * TILE_K) as u64 * groups as u64
}

/// The convolution's own multiply-adds, each output times its taps (padding taps included, as
/// FLOP counts do).
fn conv_macs(s: &ConvShape, g: &Conv2dGeom, oh: usize, ow: usize) -> u64 {
    (s.n * oh * ow * s.cout) as u64 * (s.c / g.groups.max(1) * s.kh * s.kw) as u64
}

/// Implicit-GEMM grid for an `[m, n]` product per group.
fn gemm_cfg(m: usize, n: usize, groups: usize) -> LaunchConfig {
    LaunchConfig {
        grid: [m.div_ceil(TILE_M).max(1) as u32, n.div_ceil(TILE_N).max(1) as u32, groups.max(1) as u32],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
    }
}

/// The tensor-core GEMMs' grid for an `[m, n]` product per grid.z slice.
fn tc_cfg(m: usize, n: usize, z: usize, staging: TcStaging) -> LaunchConfig {
    let shared_bytes = match staging {
        TcStaging::Gather => TC_SMEM_BYTES,
        TcStaging::Tap => TS_SMEM_BYTES,
        TcStaging::Wgmma => WG_SMEM_BYTES,
    };
    LaunchConfig { grid: [m.div_ceil(TC_M).max(1) as u32, n.div_ceil(TC_N).max(1) as u32, z.max(1) as u32], block: [TC_THREADS, 1, 1], shared_bytes }
}

/// Whether the engine's fp32 convolutions run as 3xTF32 on the tensor cores where the tap slices
/// apply (`DEEPVIZ_FP32_TENSOR_CORES=1`), instead of the exact f32 kernels on plain cores. Off
/// until a card shows it faster (`examples/conv_layers` times both: passes `fwd_x3`,
/// `bwd_data_x3`); the tests run it explicitly. Read once per process.
pub fn f32_tensor_cores() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("DEEPVIZ_FP32_TENSOR_CORES").is_ok_and(|v| v.trim() == "1"))
}

/// The tensor cores' operand format for `p`: f32 runs as 3xTF32.
fn tc_format(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "tf32x3",
        p => p.name(),
    }
}

/// How a tensor-core convolution stages its operands into shared memory (kernels/conv_tc.cu).
/// Both compute the same GEMM with the same roundings; the sums may differ in the last bits
/// (the bf16 versions feed the mma's k in different orders).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcStaging {
    /// any shape: per slice each 4-channel chunk's tap, bounds and address, and element by
    /// element where a chunk is ragged or misaligned (`conv2d_*_{tf32,bf16}`)
    Gather,
    /// each 32-wide K slice inside one tap (`conv2d_*_{tf32,bf16,tf32x3}_tap`): the
    /// reduction's channels per group a multiple of 32, the two operand tensors 16-byte aligned,
    /// and forward the weights as OHWI rows ([`rows_weight`]); swizzled shared memory. The only
    /// tensor-core staging of f32 (as 3xTF32)
    Tap,
    /// forward only, bf16 only, on Hopper's wgmma (`conv2d_fwd_bf16_wgmma_f32`, a CC 9.0 card
    /// or the emulator: [`wgmma_applies`]): the tap slices' GEMM and conditions in 64-channel
    /// slices, rounded to bf16 on their way into 128-byte-swizzled shared memory
    Wgmma,
}

impl TcStaging {
    /// The staging [`forward_fused`] runs with these weights: by tap slices where they apply and
    /// the OHWI `rows` are there, else gathering.
    fn engine(rows: bool, s: &ConvShape, g: &Conv2dGeom) -> TcStaging {
        if rows {
            TcStaging::forward(s, g)
        } else {
            TcStaging::Gather
        }
    }

    /// [`TcStaging::engine`] on `dev` in `prec`: [`TcStaging::Wgmma`] in place of the bf16 tap
    /// slices where it applies and [`wgmma_forward`] asks for it.
    fn engine_on(dev: &dyn Device, prec: Precision, rows: bool, s: &ConvShape, g: &Conv2dGeom) -> TcStaging {
        match TcStaging::engine(rows, s, g) {
            TcStaging::Tap if prec == Precision::Bf16 && wgmma_forward() && wgmma_applies(dev, s, g) => TcStaging::Wgmma,
            st => st,
        }
    }

    /// The engine's staging for a forward convolution: [`TcStaging::Tap`] wherever it
    /// applies (the reduction's cg a multiple of 32; the weights as OHWI rows, which the
    /// caller gives).
    pub fn forward(s: &ConvShape, g: &Conv2dGeom) -> TcStaging {
        if s.depthwise(g) {
            TcStaging::Gather
        } else {
            Self::by_reduction(s.c / g.groups.max(1))
        }
    }

    /// The engine's staging for a tensor-core backward data: [`TcStaging::Tap`] wherever it
    /// applies (the reduction's og a multiple of 32).
    pub fn backward(s: &ConvShape, g: &Conv2dGeom) -> TcStaging {
        Self::by_reduction(s.cout / g.groups.max(1))
    }

    /// Tap slices where the reduction's channels per tap make whole 32-wide K slices.
    fn by_reduction(channels: usize) -> TcStaging {
        if channels.is_multiple_of(TC_K) {
            TcStaging::Tap
        } else {
            TcStaging::Gather
        }
    }

    /// Whether a launch of this staging may read these operand tensors: the tap slices copy
    /// 16-byte chunks straight from them (pool allocations always are; an offset view may not be).
    fn takes(self, operands: [DevicePtr; 2]) -> Result<()> {
        if self != TcStaging::Gather && operands.iter().any(|p| !p.0.is_multiple_of(16)) {
            return Err(Error::InvalidArgument("conv2d: the tap-slice and wgmma tensor-core kernels need 16-byte aligned input and weight tensors".into()));
        }
        Ok(())
    }

    /// The kernel variant: `fwd_bf16`, `fwd_bf16_tap`, ...
    fn variant(self, base: &str, p: Precision) -> String {
        match self {
            TcStaging::Gather => format!("{base}_{}", p.name()),
            TcStaging::Tap => format!("{base}_{}_tap", tc_format(p)),
            TcStaging::Wgmma => format!("{base}_{}_wgmma", p.name()),
        }
    }
}

/// Multiply-adds a tensor-core launch performs (whole TC_M x TC_N x TC_K tiles).
fn tc_macs(m: usize, n: usize, k: usize, groups: usize) -> u64 {
    (m.div_ceil(TC_M) * TC_M) as u64 * (n.div_ceil(TC_N) * TC_N) as u64 * (k.div_ceil(TC_K) * TC_K) as u64 * groups as u64
}

/// y `[n, oh, ow, cout]` = act(conv(x, w) + bias), in the arithmetic `prec` names. `wp` is the
/// KKIO weight; `rows`, when given, the same weight as OHWI rows ([`rows_weight`]), which the
/// tensor-core forward staged by tap slices reads (without them it gathers).
#[allow(clippy::too_many_arguments)]
pub fn forward(dev: &dyn Device, prec: Precision, x: DevicePtr, wp: DevicePtr, rows: Option<DevicePtr>, bias: Option<DevicePtr>, y: DevicePtr, s: &ConvShape, g: &Conv2dGeom, act: Option<Act>) -> Result<()> {
    forward_fused(dev, prec, x, wp, rows, bias, None, y, s.cout, 0, s, g, act, SplitK::NONE)
}

/// The forward conv with its whole epilogue fused: act(conv(x, w) + bias + residual), written
/// into channels `[y_off, y_off + cout)` of y, whose NHWC rows hold `y_stride` channels (so two
/// convs writing adjacent slices of one tensor make a concat that costs nothing).
///
/// `residual`, when given, is NHWC `[n, oh, ow, cout]` (contiguous, the conv's own output shape)
/// and is added before the activation, as in a ResNet block's `relu(conv(x) + identity)`. It may
/// be y itself only when the slice is the whole tensor (`y_stride == cout`, `y_off == 0`). The
/// channels of y outside the slice are left as they were.
///
/// `prec` other than f32 runs the tensor-core kernel, and f32 with weight rows and tap slices
/// does too as 3xTF32 (depthwise convolutions stay on the direct f32 kernel: they have no GEMM to
/// speak of). `split`: [`SplitK::NONE`], or the parts [`forward_parts`] gives with their
/// workspace.
#[allow(clippy::too_many_arguments)]
pub fn forward_fused(
    dev: &dyn Device,
    prec: Precision,
    x: DevicePtr,
    wp: DevicePtr,
    rows: Option<DevicePtr>,
    bias: Option<DevicePtr>,
    residual: Option<DevicePtr>,
    y: DevicePtr,
    y_stride: usize,
    y_off: usize,
    s: &ConvShape,
    g: &Conv2dGeom,
    act: Option<Act>,
    split: SplitK,
) -> Result<()> {
    forward_fused_as(dev, prec, TcStaging::engine_on(dev, prec, rows.is_some(), s, g), x, wp, rows, bias, residual, y, y_stride, y_off, s, g, act, split)
}

/// [`forward_fused`] with the tensor cores' staging chosen by the caller (the tests and
/// benchmarks run each; ignored for depthwise convolutions). In f32, [`TcStaging::Tap`] runs
/// 3xTF32 on the tensor cores and [`TcStaging::Gather`] the exact f32 kernel.
#[allow(clippy::too_many_arguments)]
pub fn forward_fused_as(
    dev: &dyn Device,
    prec: Precision,
    staging: TcStaging,
    x: DevicePtr,
    wp: DevicePtr,
    rows: Option<DevicePtr>,
    bias: Option<DevicePtr>,
    residual: Option<DevicePtr>,
    y: DevicePtr,
    y_stride: usize,
    y_off: usize,
    s: &ConvShape,
    g: &Conv2dGeom,
    act: Option<Act>,
    split: SplitK,
) -> Result<()> {
    let (oh, ow) = s.out_hw(g)?;
    if y_off + s.cout > y_stride {
        return Err(Error::InvalidArgument(format!(
            "conv2d: output slice [{y_off}, {}) does not fit rows of {y_stride} channels",
            y_off + s.cout
        )));
    }
    check_i32(s, g, oh, ow, y_stride)?;
    let mut args = vec![ptr(x), ptr(wp), opt_ptr(bias), opt_ptr(residual), ptr(y)];
    args.extend(conv_args(s, g, oh, ow));
    args.extend([int(y_stride), int(y_off), Arg::I32(act_code(act))]);
    let m = s.n * oh * ow;
    split.check(m * s.cout)?;
    if split.parts > 1 && s.depthwise(g) {
        return Err(Error::InvalidArgument("conv2d: the depthwise kernels do not split K".into()));
    }
    let useful = conv_macs(s, g, oh, ow);
    if s.depthwise(g) {
        dev.account("dwconv2d_fwd", useful, useful);
        // SAFETY: `dwconv2d_fwd_f32(const float* x, const float* wp, const float* bias,
        // const float* residual, float* y, DV_CONV_PARAMS, long long y_stride, long long y_off,
        // int act)`; the grid-stride loop writes channels [y_off, y_off + cout) of every one of
        // the n*oh*ow rows of y (checked above to fit its y_stride).
        return launch(dev, "dwconv2d", "fwd", grid_stride(s.n * oh * ow * s.cout), &args);
    }
    let (og, k) = (s.cout / g.groups, s.kh * s.kw * (s.c / g.groups));
    let kernel = if forward_on_tensor_cores(prec, staging) {
        let mut b = wp; // B as the kernel reads it
        if staging == TcStaging::Wgmma && (prec != Precision::Bf16 || !wgmma_applies(dev, s, g)) {
            return Err(Error::InvalidArgument(format!(
                "conv2d: the wgmma forward needs bf16 (not {prec}), {WGMMA_FWD} (a CC 9.0 card or the emulator; {} has {}) and input channels per group a multiple of {WG_K} (not {})",
                dev.name(),
                if dev.has_kernel(WGMMA_FWD) { "it" } else { "none" },
                s.c / g.groups
            )));
        }
        if staging != TcStaging::Gather {
            if staging == TcStaging::Tap && staging != TcStaging::forward(s, g) {
                return Err(Error::InvalidArgument(format!("conv2d: the tap-slice tensor-core forward needs input channels per group a multiple of {TC_K} (not {})", s.c / g.groups)));
            }
            b = rows.ok_or_else(|| Error::InvalidArgument("conv2d: the tap-slice and wgmma tensor-core forwards read the weight's OHWI rows (rows_weight); none were given".into()))?;
            args[1] = ptr(b);
        }
        staging.takes([x, b])?;
        dev.account("conv2d_fwd_tc", tc_macs(m, og, k, g.groups), useful);
        staging.variant("fwd", prec)
    } else {
        dev.account("conv2d_fwd", gemm_macs(m, og, k, g.groups), useful);
        "fwd".to_string()
    };
    let (mut cfg, _) = forward_grid(prec, staging, m, og, g.groups);
    cfg.grid[2] *= split.parts as u32;
    args.extend(split.args());
    // SAFETY: `conv2d_fwd_f32` or on the tensor cores `conv2d_fwd_{tf32,bf16}[_tap]_f32` /
    // `conv2d_fwd_tf32x3_tap_f32` (the same signature: the dwconv's arguments, then float* ws,
    // int splits); the grid covers M = n*oh*ow by og = cout/groups per group (grid.z / parts)
    // in the kernel's tiles (the tensor cores' with their staging's dynamic shared memory,
    // tc_cfg), and every in-range (m, o) is stored once, at y[m * y_stride + y_off + g * og + o]
    // — or, split, by each part at ws[part][m * cout + g * og + o] (`check`: ws given; its length
    // the caller's parts x m x cout, as forward_parts / SplitK::ws_len say). The tap version's
    // conditions (cg % 32, the OHWI rows given in the weight's place, 16-byte aligned x and
    // rows) were checked just above; the wgmma version's (`conv2d_fwd_bf16_wgmma_f32`, the same
    // signature, grid, block and stores: bf16, the kernel present, cg % 64) too.
    launch(dev, "conv2d", &kernel, cfg, &args)?;
    splitk_forward(dev, split, bias, residual, y, m, s.cout, y_stride, y_off, act)
}

/// Split-K's sum into y with the forward epilogue (nothing to do with one part).
#[allow(clippy::too_many_arguments)]
fn splitk_forward(dev: &dyn Device, split: SplitK, bias: Option<DevicePtr>, residual: Option<DevicePtr>, y: DevicePtr, m: usize, cout: usize, y_stride: usize, y_off: usize, act: Option<Act>) -> Result<()> {
    if split.parts <= 1 {
        return Ok(());
    }
    let args = [ptr(split.ws), Arg::I32(split.parts as i32), opt_ptr(bias), opt_ptr(residual), ptr(y), int(m), int(cout), int(y_stride), int(y_off), Arg::I32(act_code(act))];
    // SAFETY: `conv2d_splitk_fwd_f32(const float* ws, int splits, const float* bias, const
    // float* residual, float* y, int m_total, int cout, int y_stride, int y_off, int act)`; ws
    // holds the parts' m x cout sums just written, the grid-stride loop stores each (m, oc)
    // once into y's slice (checked by the caller to fit y_stride, under 2^31 elements).
    launch(dev, "conv2d", "splitk_fwd", grid_stride(m * cout), &args)
}

/// Split-K's sum into gx, masked (nothing to do with one part).
fn splitk_backward(dev: &dyn Device, split: SplitK, gx: DevicePtr, len: usize, mask: Option<(DevicePtr, Act)>) -> Result<()> {
    if split.parts <= 1 {
        return Ok(());
    }
    let args = [ptr(split.ws), Arg::I32(split.parts as i32), ptr(gx), int(len), opt_ptr(mask.map(|m| m.0)), Arg::I32(act_code(mask.map(|m| m.1)))];
    // SAFETY: `conv2d_splitk_bwd_data_f32(const float* ws, int splits, float* gx, int total,
    // const float* mask, int act)`; ws holds the parts' sums over gx's len elements, each stored
    // once into gx (and the mask, gx's shape, read at the same index).
    launch(dev, "conv2d", "splitk_bwd_data", grid_stride(len), &args)
}

/// The versions of the backward-data convolution (see kernels/conv.cu).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackwardData {
    /// depthwise: the direct gather (`dwconv2d_bwd_data`)
    Depthwise,
    /// v1: the implicit GEMM over every tap (`conv2d_bwd_data`)
    Gemm,
    /// v2: one dense GEMM per stride phase (`conv2d_bwd_data_phased`)
    Phased,
    /// v3: the direct gather for few input channels (`conv2d_bwd_data_direct`)
    Direct,
    /// v3b: v3 with a pair of pixels a warp, float4 channels and the weights in shared memory
    /// (`conv2d_bwd_data_direct4`); not chosen by the engine until measured on a card
    Direct4,
    /// v4: v2's stride phases as tensor-core GEMMs (`conv2d_bwd_data_{tf32,bf16}[_tap]`, in
    /// f32 `conv2d_bwd_data_tf32x3_tap`: tap slices only), staged as named; stride 1 or
    /// dilation 1
    TensorCore(Precision, TcStaging),
    /// v5, for few input channels: one dense GEMM, gy `[n*oh*ow, cout]` times the weights as a
    /// 1x1 convolution with kh*kw*c outputs, into a column matrix `[n*oh*ow, kh*kw*c]` in the
    /// scratch the caller gives ([`col2im_len`]), then `conv2d_col2im` sums each input pixel's
    /// taps from it. Where v3 gathers per pixel (the first layer: 3 channels, 7x7 stride 2,
    /// 49 / 4 taps a pixel), this is a GEMM of M = every output pixel, N = 147, K = cout, and
    /// one pass over the column matrix. In tf32 / bf16 the tensor-core forward by tap slices
    /// reads the KKIO weights as its OHWI rows (cout a multiple of 32); in f32 the implicit GEMM
    /// reads them transposed ([`rows_weight`], into the scratch's tail each call). One group.
    Col2im(Precision),
}

/// Floats of the scratch [`BackwardData::Col2im`] needs: the column matrix, `n*oh*ow*kh*kw*c`,
/// then (used in f32) the weights transposed, `kh*kw*c*cout`.
pub fn col2im_len(s: &ConvShape, g: &Conv2dGeom) -> Result<usize> {
    let (oh, ow) = s.out_hw(g)?;
    Ok(s.n * oh * ow * s.kh * s.kw * s.c + s.kh * s.kw * s.c * s.cout)
}

/// The version the engine runs for this convolution in the arithmetic `prec` names: the one
/// place it is chosen. (A first layer's few input channels take the column matrix, where a
/// tile of their own phases would be almost all padding; the per-pixel gather where it does not
/// apply, or where no scratch is given.)
pub fn backward_data_version(s: &ConvShape, g: &Conv2dGeom, prec: Precision) -> BackwardData {
    if s.depthwise(g) {
        BackwardData::Depthwise
    } else if s.c / g.groups <= DIRECT_CG {
        if BackwardData::Col2im(prec).applies(s, g) {
            BackwardData::Col2im(prec)
        } else {
            BackwardData::Direct
        }
    } else if prec != Precision::F32 && tc_backward_applies(g) {
        BackwardData::TensorCore(prec, TcStaging::backward(s, g))
    } else if f32_tensor_cores() && BackwardData::TensorCore(prec, TcStaging::Tap).applies(s, g) {
        BackwardData::TensorCore(prec, TcStaging::Tap)
    } else if (g.stride[0] > 1 || g.stride[1] > 1) && g.dilation == [1, 1] {
        BackwardData::Phased
    } else {
        BackwardData::Gemm
    }
}

/// Most bytes of KKIO weights `conv2d_bwd_data_direct4` holds in shared memory (no opt-in
/// attribute needed below 48 KiB).
const DIRECT4_SMEM: usize = 48 * 1024;

impl BackwardData {
    /// Whether this version takes the convolution (`backward_data_as` refuses it otherwise).
    pub fn applies(self, s: &ConvShape, g: &Conv2dGeom) -> bool {
        let cg = s.c / g.groups;
        match self {
            BackwardData::Depthwise => s.depthwise(g),
            BackwardData::Gemm => true,
            BackwardData::Phased => g.dilation == [1, 1],
            BackwardData::Direct => cg <= DIRECT_CG,
            BackwardData::Direct4 => cg <= DIRECT_CG && g.groups == 1 && g.dilation == [1, 1] && s.cout.is_multiple_of(4) && s.kh * s.kw * cg * s.cout * 4 <= DIRECT4_SMEM,
            BackwardData::TensorCore(p, st) => (p != Precision::F32 || st == TcStaging::Tap) && tc_backward_applies(g) && (st == TcStaging::Gather || TcStaging::backward(s, g) == st),
            BackwardData::Col2im(p) => g.groups == 1 && (p == Precision::F32 || s.cout.is_multiple_of(TC_K)) && col2im_len(s, g).is_ok_and(|n| n <= i32::MAX as usize),
        }
    }
}

/// Whether the tensor-core backward data takes this geometry: its phases need stride 1 or
/// dilation 1.
fn tc_backward_applies(g: &Conv2dGeom) -> bool {
    g.stride == [1, 1] || g.dilation == [1, 1]
}

/// For one axis: Σ over input positions of the taps that reach an in-range output (what the
/// gathering kernels multiply).
fn gathered_taps(input: usize, output: usize, k: usize, stride: usize, pad: usize, dil: usize) -> u64 {
    (0..input)
        .map(|i| (0..k).filter(|&t| (i + pad).checked_sub(t * dil).is_some_and(|d| d % stride == 0 && d / stride < output)).count() as u64)
        .sum()
}

/// gx `[n, h, w, c]` from gy `[n, oh, ow, cout]`, by [`backward_data_version`] (`col`: the
/// scratch of [`col2im_len`] floats where that is [`BackwardData::Col2im`]; without it, v3).
/// With a `mask`
/// (an `[n, h, w, c]` tensor: the forward input or output of the ReLU / ReLU6 before this
/// convolution), gx is the gradient at that activation's input instead: each element times the
/// activation's gradient at the mask, in the kernel's store (the executor's backward fusion).
#[allow(clippy::too_many_arguments)]
pub fn backward_data(dev: &dyn Device, prec: Precision, gy: DevicePtr, wp: DevicePtr, gx: DevicePtr, s: &ConvShape, g: &Conv2dGeom, mask: Option<(DevicePtr, Act)>, col: Option<DevicePtr>, split: SplitK) -> Result<()> {
    let v = match (backward_data_version(s, g, prec), col) {
        (BackwardData::Col2im(_), None) => BackwardData::Direct, // no scratch: the gather needs none
        (v, _) => v,
    };
    backward_data_as(dev, v, gy, wp, gx, s, g, mask, col, split)
}

/// The stride phases of the backward data: for each (ry, rx), the phase's (pixels per image,
/// taps) — the shapes of its GEMM.
fn phases(s: &ConvShape, g: &Conv2dGeom) -> Vec<(usize, usize)> {
    let [sh, sw] = g.stride;
    let mut v = vec![];
    for ry in 0..sh {
        for rx in 0..sw {
            let (hy, wx) = (s.h.saturating_sub(ry).div_ceil(sh), s.w.saturating_sub(rx).div_ceil(sw));
            let (ky0, kx0) = ((ry + g.pad[0]) % sh, (rx + g.pad[2]) % sw);
            let (tky, tkx) = (s.kh.saturating_sub(ky0).div_ceil(sh), s.kw.saturating_sub(kx0).div_ceil(sw));
            v.push((hy * wx, tky * tkx));
        }
    }
    v
}

/// [`backward_data`] by a chosen version (the tests and benchmarks run each). `split` as
/// [`backward_data_parts`] gives it, for the GEMM versions (v1, v2, the tensor cores');
/// [`SplitK::NONE`] for the others.
#[allow(clippy::too_many_arguments)]
pub fn backward_data_as(dev: &dyn Device, v: BackwardData, gy: DevicePtr, wp: DevicePtr, gx: DevicePtr, s: &ConvShape, g: &Conv2dGeom, mask: Option<(DevicePtr, Act)>, col: Option<DevicePtr>, split: SplitK) -> Result<()> {
    let (oh, ow) = s.out_hw(g)?;
    check_i32(s, g, oh, ow, s.cout)?;
    let mut args = vec![ptr(gy), ptr(wp), ptr(gx)];
    args.extend(conv_args(s, g, oh, ow));
    if let Some((_, a)) = mask {
        if !a.is_mask() {
            return Err(Error::InvalidArgument(format!("conv2d: backward-data applies only a ReLU / ReLU6 mask, not {a:?}")));
        }
    }
    args.extend([opt_ptr(mask.map(|m| m.0)), Arg::I32(act_code(mask.map(|m| m.1)))]);
    let gx_len = s.n * s.h * s.w * s.c;
    split.check(gx_len)?;
    if split.parts > 1 && !matches!(v, BackwardData::Gemm | BackwardData::Phased | BackwardData::TensorCore(..)) {
        return Err(Error::InvalidArgument(format!("conv2d: backward data {v:?} does not split K (only the GEMM versions do)")));
    }
    // the GEMM versions' arguments (the same, then the split's) and grid (backward_grid's, over
    // the parts too)
    let split_args = || args.iter().cloned().chain(split.args()).collect::<Vec<_>>();
    let split_cfg = || {
        let (mut cfg, _) = backward_grid(v, s, g).expect("a GEMM version of backward data");
        cfg.grid[2] *= split.parts as u32;
        cfg
    };
    if !v.applies(s, g) {
        return Err(Error::InvalidArgument(match v {
            BackwardData::Depthwise => "conv2d: the depthwise backward-data kernel needs one input channel per group".into(),
            BackwardData::Phased => "conv2d: the phased backward-data kernel needs dilation 1".into(),
            BackwardData::Direct => format!("conv2d: the direct backward-data kernel takes at most {DIRECT_CG} input channels per group"),
            BackwardData::Direct4 => format!(
                "conv2d: the paired direct backward-data kernel needs at most {DIRECT_CG} input channels, one group, dilation 1, output channels a multiple of 4 and at most {DIRECT4_SMEM} bytes of weights"
            ),
            BackwardData::TensorCore(p, st) => format!(
                "conv2d: the tensor-core backward-data kernel needs tf32 or bf16 (fp32: by tap slices, as 3xTF32; not {p} so) and stride 1 or dilation 1{}",
                if st == TcStaging::Tap { format!(", and by tap slices output channels per group a multiple of {TC_K}") } else { String::new() }
            ),
            BackwardData::Col2im(p) => format!(
                "conv2d: the column-matrix backward data needs one group and a column matrix of under 2^31 elements{}",
                if p == Precision::F32 { String::new() } else { format!(", and in {p} output channels a multiple of {TC_K}") }
            ),
            BackwardData::Gemm => unreachable!("the implicit GEMM takes every convolution"),
        }));
    }
    let useful = conv_macs(s, g, oh, ow);
    let (cg, og) = (s.c / g.groups, s.cout / g.groups);
    let gathered = || s.n as u64 * gathered_taps(s.h, oh, s.kh, g.stride[0], g.pad[0], g.dilation[0]) * gathered_taps(s.w, ow, s.kw, g.stride[1], g.pad[2], g.dilation[1]) * (cg * s.cout) as u64;
    match v {
        BackwardData::Depthwise => {
            dev.account("dwconv2d_bwd_data", gathered(), useful);
            // SAFETY: `dwconv2d_bwd_data_f32(const float* gy, const float* wp, float* gx,
            // DV_CONV_PARAMS, const float* mask, int act)`; the grid-stride loop writes every gx
            // element (and reads the mask, gx's shape, at the same index).
            launch(dev, "dwconv2d", "bwd_data", grid_stride(s.n * s.h * s.w * s.c), &args)
        }
        BackwardData::Gemm => {
            dev.account("conv2d_bwd_data", gemm_macs(s.n * s.h * s.w, cg, s.kh * s.kw * og, g.groups), useful);
            // SAFETY: `conv2d_bwd_data_f32(same signature, then float* ws, int splits)`; the
            // grid covers M = n*h*w by cg = c/groups per group (grid.z / parts), every in-range
            // (m, ci) stored once — split, by each part into its copy of gx in ws (`check`).
            launch(dev, "conv2d", "bwd_data", split_cfg(), &split_args())?;
            splitk_backward(dev, split, gx, gx_len, mask)
        }
        BackwardData::Phased => {
            let executed = phases(s, g).iter().map(|&(pix, taps)| gemm_macs(s.n * pix, cg, taps * og, g.groups)).sum();
            dev.account("conv2d_bwd_data_phased", executed, useful);
            // SAFETY: `conv2d_bwd_data_phased_f32(same signature)`; grid.z runs over groups x
            // stride phases x parts, the phases partition the input pixels, and each phase's grid
            // covers its pixels by cg, every in-range (pixel, ci) stored once (zeros where no tap
            // reaches) — split, by each part into its copy of gx in ws.
            launch(dev, "conv2d", "bwd_data_phased", split_cfg(), &split_args())?;
            splitk_backward(dev, split, gx, gx_len, mask)
        }
        BackwardData::Direct => {
            dev.account("conv2d_bwd_data_direct", gathered(), useful);
            // SAFETY: `conv2d_bwd_data_direct_f32(same signature)`; one warp per (input pixel,
            // group), grid-stride over whole warps (THREADS is a multiple of 32, so no warp is
            // split by the loop's end), writes its cg channels of gx.
            launch(dev, "conv2d", "bwd_data_direct", grid_stride(s.n * s.h * s.w * g.groups * 32), &args)
        }
        BackwardData::Direct4 => {
            dev.account("conv2d_bwd_data_direct4", gathered(), useful);
            let pairs = s.w.div_ceil(g.stride[1]).div_ceil(2);
            let mut cfg = grid_stride(s.n * s.h * g.stride[1] * pairs * 32);
            cfg.shared_bytes = (s.kh * s.kw * cg * s.cout * 4) as u32;
            // SAFETY: `conv2d_bwd_data_direct4_f32(same signature)`; `applies` checked: cg <= 4, one
            // group, dilation 1, cout % 4 == 0 (16-byte gy rows and weight rows), the weights fit
            // the dynamic shared memory given; one warp per pixel pair, grid-stride over whole
            // warps (THREADS a multiple of 32), each in-range pixel's cg channels written once
            // (every input pixel is in exactly one pair: its stride phase and its column there).
            launch(dev, "conv2d", "bwd_data_direct4", cfg, &args)
        }
        BackwardData::Col2im(prec) => {
            let col = col.ok_or_else(|| Error::InvalidArgument(format!("conv2d: the column-matrix backward data needs its column matrix ({} floats); none was given", col2im_len(s, g).unwrap_or(0))))?;
            let kc = s.kh * s.kw * s.c;
            // col = gy (1x1, cout channels) times the weights as a 1x1 convolution of kc outputs;
            // the forward accounts its multiply-adds, which are the backward data's
            let gemm = ConvShape { n: s.n, h: oh, w: ow, c: s.cout, cout: kc, kh: 1, kw: 1 };
            let one = Conv2dGeom { stride: [1, 1], pad: [0; 4], dilation: [1, 1], groups: 1 };
            if prec == Precision::F32 {
                // its KKIO [cout][kc] is the conv's KKIO [kc][cout] transposed: the OHWI rows
                let w1 = DevicePtr(col.0 + 4 * (s.n * oh * ow * kc) as u64);
                rows_weight(dev, wp, w1, s.cout, s.c, s.kh, s.kw)?;
                forward_fused_as(dev, prec, TcStaging::Gather, gy, w1, None, None, None, col, kc, 0, &gemm, &one, None, SplitK::NONE)?;
            } else {
                // the tap slices read [kc][cout] as OHWI rows of the 1x1 product: the KKIO itself
                forward_fused_as(dev, prec, TcStaging::Tap, gy, wp, Some(wp), None, None, col, kc, 0, &gemm, &one, None, SplitK::NONE)?;
            }
            let mut args = vec![ptr(col), ptr(gx)];
            args.extend(conv_args(s, g, oh, ow));
            args.extend([opt_ptr(mask.map(|m| m.0)), Arg::I32(act_code(mask.map(|m| m.1)))]);
            // SAFETY: `conv2d_col2im_f32(const float* col, float* gx, DV_CONV_PARAMS, const float*
            // mask, int act)`; col holds the n*oh*ow x kh*kw*c matrix just written (`applies`:
            // under 2^31 elements; the caller's scratch of col2im_len floats, the transposed
            // weights after it), the grid-stride loop writes every gx element once (and reads
            // the mask at the same index).
            launch(dev, "conv2d", "col2im", grid_stride(s.n * s.h * s.w * s.c), &args)
        }
        BackwardData::TensorCore(prec, staging) => {
            staging.takes([gy, wp])?;
            let executed = phases(s, g).iter().map(|&(pix, taps)| tc_macs(s.n * pix, cg, taps * og, g.groups)).sum();
            dev.account("conv2d_bwd_data_tc", executed, useful);
            // SAFETY: `conv2d_bwd_data_{tf32,bf16}[_tap]_f32(same signature as
            // conv2d_bwd_data_f32)`; grid.z runs over groups x stride phases, which partition the
            // input pixels; each phase's grid covers its pixels by cg in TC_M x TC_N tiles (the
            // staging's dynamic shared memory, tc_cfg), every in-range (pixel, ci) stored once
            // (zeros where no tap reaches). The tap version's conditions (og % 32: `applies`;
            // 16-byte aligned gy and weights: `takes`) were checked above. Split: grid.z also runs
            // over the parts, each storing into its copy of gx in ws.
            launch(dev, "conv2d", &staging.variant("bwd_data", prec), split_cfg(), &split_args())?;
            splitk_backward(dev, split, gx, gx_len, mask)
        }
    }
}

/// gwp (KKIO) from x `[n, h, w, c]` and gy `[n, oh, ow, cout]`.
pub fn backward_filter(dev: &dyn Device, x: DevicePtr, gy: DevicePtr, gwp: DevicePtr, s: &ConvShape, g: &Conv2dGeom) -> Result<()> {
    let (oh, ow) = s.out_hw(g)?;
    check_i32(s, g, oh, ow, s.cout)?;
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
    check_weight_i32(cout, cg, kh, kw)?;
    // SAFETY: `conv2d_repack_weight_f32(const float* w, float* wp, int cout, int cg, int kh,
    // int kw)`; the loop runs over every destination element.
    launch(dev, "conv2d", "repack_weight", grid_stride(cout * cg * kh * kw), &[ptr(w), ptr(wp), int(cout), int(cg), int(kh), int(kw)])
}

/// KKIO `[kh, kw, cg, cout]` -> OHWI rows `[cout, kh, kw, cg]` (rows must not alias wp): the
/// weight as the tensor-core forward staged by tap slices reads it, K = kh*kw*cg contiguous per
/// output channel. The engine makes them once, beside the KKIO weight, where that forward applies.
pub fn rows_weight(dev: &dyn Device, wp: DevicePtr, rows: DevicePtr, cout: usize, cg: usize, kh: usize, kw: usize) -> Result<()> {
    check_weight_i32(cout, cg, kh, kw)?;
    // SAFETY: `conv2d_rows_weight_f32(const float* wp, float* rows, int k_total, int cout)`; the
    // loop runs over every destination element.
    launch(dev, "conv2d", "rows_weight", grid_stride(cout * cg * kh * kw), &[ptr(wp), ptr(rows), int(kh * kw * cg), int(cout)])
}

/// KKIO -> OIHW (w must not alias wp).
pub fn unpack_weight(dev: &dyn Device, wp: DevicePtr, w: DevicePtr, cout: usize, cg: usize, kh: usize, kw: usize) -> Result<()> {
    check_weight_i32(cout, cg, kh, kw)?;
    // SAFETY: `conv2d_unpack_weight_f32(const float* wp, float* w, int cout, int cg, int kh,
    // int kw)`; the loop runs over every destination element.
    launch(dev, "conv2d", "unpack_weight", grid_stride(cout * cg * kh * kw), &[ptr(wp), ptr(w), int(cout), int(cg), int(kh), int(kw)])
}

fn check_weight_i32(cout: usize, cg: usize, kh: usize, kw: usize) -> Result<()> {
    let s = ConvShape { n: 0, h: 0, w: 0, c: cg, cout, kh, kw };
    check_i32(&s, &Conv2dGeom { stride: [1, 1], pad: [0; 4], dilation: [1, 1], groups: 1 }, 0, 0, 0)
}
