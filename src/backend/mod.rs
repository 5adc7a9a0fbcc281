//! The ops of the engine, one method per op, shared by every backend.
//!
//! - `mod.rs` (this file): op parameters (geometry structs) and the [`Backend`] trait.
//! - `cuda/`: launch code for the CUDA kernels (`kernels/*.cu`), run on any [`crate::device::Device`].
//! - `cpu/`: the CPU reference engine (NCHW, im2col + GEMM + rayon). Every GPU kernel is tested
//!   against it, so it favours being obviously right over being clever.
//!
//! Shapes: activations are NCHW `[n, c, h, w]`; conv weights OIHW `[out, in/groups, kh, kw]`;
//! linear weights `[out, in]`. Backward functions take the forward's saved inputs and the
//! gradient of the output (`gy`) and return gradients of the inputs.

pub mod cpu;
pub mod cuda;

use crate::tensor::Tensor;

/// Convolution geometry with explicit padding. TF "SAME" padding is resolved into explicit,
/// possibly asymmetric, padding by the graph before the op runs ([`same_padding`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    pub stride: [usize; 2],
    /// top, bottom, left, right
    pub pad: [usize; 4],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dGeom {
    /// Output (h, w) for an input of (h, w) and a kernel of (kh, kw); `None` if it would be empty.
    pub fn out_hw(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        let eh = self.dilation[0] * (kh - 1) + 1;
        let ew = self.dilation[1] * (kw - 1) + 1;
        let ph = h + self.pad[0] + self.pad[1];
        let pw = w + self.pad[2] + self.pad[3];
        if ph < eh || pw < ew {
            return None;
        }
        Some(((ph - eh) / self.stride[0] + 1, (pw - ew) / self.stride[1] + 1))
    }
}

/// TensorFlow "SAME" padding (top, bottom) for one dimension: output = ceil(in / stride),
/// the odd pixel of padding goes after (bottom / right), as TF and Conv2dStaticSamePadding do.
pub fn same_padding(input: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let eff = (kernel - 1) * dilation + 1;
    let total = ((out - 1) * stride + eff).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Max / average pooling geometry, PyTorch semantics (including `ceil_mode`'s rule that the
/// last window must start inside the input or left padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dGeom {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// symmetric padding (h, w); PyTorch requires pad <= kernel / 2
    pub pad: [usize; 2],
    pub ceil_mode: bool,
    /// average pooling only: divide by the full window (true, PyTorch default) or by the
    /// number of elements inside the padded input
    pub count_include_pad: bool,
}

impl Pool2dGeom {
    pub fn out_dim(&self, input: usize, d: usize) -> Option<usize> {
        let (k, s, p) = (self.kernel[d], self.stride[d], self.pad[d]);
        if input + 2 * p < k {
            return None;
        }
        let span = input + 2 * p - k;
        let mut out = if self.ceil_mode { span.div_ceil(s) + 1 } else { span / s + 1 };
        if self.ceil_mode && (out - 1) * s >= input + p {
            out -= 1;
        }
        Some(out)
    }
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        Some((self.out_dim(h, 0)?, self.out_dim(w, 1)?))
    }
}

/// Elementwise activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Relu,
    Relu6,
    Silu,
    Sigmoid,
    HardSwish,
}

/// Local response normalisation across channels (AlexNet / GoogLeNet-v1 style, PyTorch's
/// `nn.LocalResponseNorm`): y = x / (k + alpha/size * sum_{window} x^2)^beta.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnGeom {
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

/// One method per op. The graph executor calls only these, so a new backend (the CUDA engine,
/// its CPU emulation) plugs in here.
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;

    /// y = conv(x, w) + b
    fn conv2d(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &Conv2dGeom) -> Tensor;
    /// gradient w.r.t. x (shape of x given as `x_shape`)
    fn conv2d_backward_data(&self, gy: &Tensor, w: &Tensor, x_shape: &[usize], g: &Conv2dGeom) -> Tensor;
    /// gradient w.r.t. w (and the bias gradient: sum of gy over n, h, w)
    fn conv2d_backward_filter(&self, x: &Tensor, gy: &Tensor, w_shape: &[usize], g: &Conv2dGeom) -> (Tensor, Tensor);

    /// y = x W^T + b, x `[n, in]`, w `[out, in]`
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor;
    /// (gx, gw, gb)
    fn linear_backward(&self, x: &Tensor, w: &Tensor, gy: &Tensor) -> (Tensor, Tensor, Tensor);

    /// returns y and, per output element, the flat index (within its n,c plane, h*W+w) of the
    /// input element that won; ties go to the first in row-major window order, as in PyTorch
    fn max_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> (Tensor, Vec<u32>);
    fn max_pool2d_backward(&self, gy: &Tensor, argmax: &[u32], x_shape: &[usize]) -> Tensor;
    fn avg_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> Tensor;
    fn avg_pool2d_backward(&self, gy: &Tensor, x_shape: &[usize], g: &Pool2dGeom) -> Tensor;
    /// PyTorch's adaptive windows: start = floor(i*H/out), end = ceil((i+1)*H/out)
    fn adaptive_avg_pool2d(&self, x: &Tensor, out: [usize; 2]) -> Tensor;
    fn adaptive_avg_pool2d_backward(&self, gy: &Tensor, x_shape: &[usize]) -> Tensor;

    fn act(&self, x: &Tensor, a: Act) -> Tensor;
    /// gradient given the forward *input* x
    fn act_backward(&self, x: &Tensor, gy: &Tensor, a: Act) -> Tensor;

    /// y[n,c,h,w] = x[n,c,h,w] * s[n,c] (squeeze-excitation); s has shape [n, c, 1, 1]
    fn channel_scale(&self, x: &Tensor, s: &Tensor) -> Tensor;
    /// (gx, gs)
    fn channel_scale_backward(&self, x: &Tensor, s: &Tensor, gy: &Tensor) -> (Tensor, Tensor);

    /// y[n,c,h,w] = x[n,c,h,w] * scale[c] + shift[c] (a batch norm that could not be folded)
    fn affine(&self, x: &Tensor, scale: &[f32], shift: &[f32]) -> Tensor;
    fn affine_backward(&self, gy: &Tensor, scale: &[f32]) -> Tensor;

    fn lrn(&self, x: &Tensor, g: &LrnGeom) -> Tensor;
    fn lrn_backward(&self, x: &Tensor, gy: &Tensor, g: &LrnGeom) -> Tensor;
}
