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

/// Checks the arguments of [`Backend::render`]: a `[n, 1, h, w]` map with h, w > 0, a non-empty
/// `out_hw`, (when given) n pictures of `out_hw`, and (when given) a clip quantile in (0, 1].
/// Returns (n, h, w).
pub fn check_render_args(maps_shape: &[usize], pictures: Option<&[image::RgbImage]>, out_hw: [usize; 2], clip: Option<f32>) -> crate::Result<(usize, usize, usize)> {
    let [n, c, h, w] = match *maps_shape {
        [n, c, h, w] => [n, c, h, w],
        _ => return Err(crate::Error::shape("render", "maps [n, 1, h, w]", maps_shape)),
    };
    if c != 1 || h == 0 || w == 0 {
        return Err(crate::Error::shape("render", "maps [n, 1, h, w] with h, w > 0", maps_shape));
    }
    if out_hw[0] == 0 || out_hw[1] == 0 || out_hw.iter().any(|&d| d > u32::MAX as usize) {
        return Err(crate::Error::InvalidArgument(format!("render: cannot make pictures of {}x{} pixels", out_hw[0], out_hw[1])));
    }
    if let Some(q) = clip {
        if !(q > 0.0 && q <= 1.0) {
            return Err(crate::Error::InvalidArgument(format!("render: the clip quantile must be in (0, 1], not {q}")));
        }
    }
    if let Some(p) = pictures {
        if p.len() != n {
            return Err(crate::Error::InvalidArgument(format!("render: {} pictures for {n} maps", p.len())));
        }
        if let Some(bad) = p.iter().find(|p| (p.height() as usize, p.width() as usize) != (out_hw[0], out_hw[1])) {
            return Err(crate::Error::InvalidArgument(format!(
                "render: a picture is {}x{}, the output {}x{}",
                bad.height(),
                bad.width(),
                out_hw[0],
                out_hw[1]
            )));
        }
    }
    Ok((n, h, w))
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

/// What a parameter is for, so a backend can lay it out for its kernels at load time
/// (the CUDA engine repacks convolution weights; the CPU engine keeps PyTorch's layouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// conv weight [out, in/groups, kh, kw]
    ConvWeight,
    /// linear weight [out, in]
    LinearWeight,
    /// per-channel vector: a bias, a batch-norm scale or shift
    Vector,
}

/// One method per op, shared by every backend. The graph executor and the visualisations call
/// only these, so the whole job runs where the backend's tensors live: activations (`T`) and
/// weights (`W`) stay on the backend; only the input goes in (`upload`) and only results come
/// back (`download`). Shapes are the logical NCHW shapes; how a backend lays a tensor out inside
/// (the CUDA engine uses NHWC) is its own business.
///
/// Every op returns a `Result`: a device can run out of memory or fault. Inputs are validated by
/// the graph's shape inference before any op runs.
pub trait Backend: Sync {
    /// an activation (or gradient) living on this backend
    type T: Clone + Send + Sync;
    /// a parameter prepared for this backend
    type W: Send + Sync;
    /// max-pool argmax indices, kept from forward to backward
    type Idx: Send + Sync;

    fn name(&self) -> &'static str;
    /// logical NCHW shape
    fn shape<'a>(&self, t: &'a Self::T) -> &'a [usize];
    fn upload(&self, t: &Tensor) -> crate::Result<Self::T>;
    fn download(&self, t: &Self::T) -> crate::Result<Tensor>;
    fn weight(&self, t: &std::sync::Arc<Tensor>, role: Role) -> crate::Result<Self::W>;
    fn zeros(&self, shape: &[usize]) -> crate::Result<Self::T>;

    // layers, forward and backward (gradients w.r.t. activations only)
    fn conv2d(&self, x: &Self::T, w: &Self::W, b: Option<&Self::W>, g: &Conv2dGeom) -> crate::Result<Self::T>;
    fn conv2d_backward_data(&self, gy: &Self::T, w: &Self::W, x_shape: &[usize], g: &Conv2dGeom) -> crate::Result<Self::T>;
    fn linear(&self, x: &Self::T, w: &Self::W, b: Option<&Self::W>) -> crate::Result<Self::T>;
    fn linear_backward_data(&self, gy: &Self::T, w: &Self::W) -> crate::Result<Self::T>;
    fn max_pool2d(&self, x: &Self::T, g: &Pool2dGeom) -> crate::Result<(Self::T, Self::Idx)>;
    fn max_pool2d_backward(&self, gy: &Self::T, argmax: &Self::Idx, x_shape: &[usize]) -> crate::Result<Self::T>;
    fn avg_pool2d(&self, x: &Self::T, g: &Pool2dGeom) -> crate::Result<Self::T>;
    fn avg_pool2d_backward(&self, gy: &Self::T, x_shape: &[usize], g: &Pool2dGeom) -> crate::Result<Self::T>;
    fn adaptive_avg_pool2d(&self, x: &Self::T, out: [usize; 2]) -> crate::Result<Self::T>;
    fn adaptive_avg_pool2d_backward(&self, gy: &Self::T, x_shape: &[usize]) -> crate::Result<Self::T>;
    fn act(&self, x: &Self::T, a: Act) -> crate::Result<Self::T>;
    /// gradient given the forward *input* x
    fn act_backward(&self, x: &Self::T, gy: &Self::T, a: Act) -> crate::Result<Self::T>;
    /// y[n,c,h,w] = x[n,c,h,w] · s[n,c,1,1]
    fn channel_scale(&self, x: &Self::T, s: &Self::T) -> crate::Result<Self::T>;
    /// (gx, gs)
    fn channel_scale_backward(&self, x: &Self::T, s: &Self::T, gy: &Self::T) -> crate::Result<(Self::T, Self::T)>;
    /// y = x · scale[c] + shift[c]
    fn affine(&self, x: &Self::T, scale: &Self::W, shift: &Self::W) -> crate::Result<Self::T>;
    fn affine_backward(&self, gy: &Self::T, scale: &Self::W) -> crate::Result<Self::T>;
    fn lrn(&self, x: &Self::T, g: &LrnGeom) -> crate::Result<Self::T>;
    fn lrn_backward(&self, x: &Self::T, gy: &Self::T, g: &LrnGeom) -> crate::Result<Self::T>;

    // tensor plumbing
    fn add(&self, a: &Self::T, b: &Self::T) -> crate::Result<Self::T>;
    fn add_assign(&self, a: &mut Self::T, b: &Self::T) -> crate::Result<()>;
    /// channel concatenation of NCHW tensors with equal n, h, w
    fn concat(&self, xs: &[&Self::T]) -> crate::Result<Self::T>;
    /// the inverse of `concat`
    fn split(&self, x: &Self::T, channels: &[usize]) -> crate::Result<Vec<Self::T>>;
    /// same data, another logical shape (flatten and its gradient)
    fn reshape(&self, x: Self::T, shape: &[usize]) -> crate::Result<Self::T>;

    // what the visualisations need
    /// [n, k] zeros with a one at (i, targets[i]): the seed d score / d logits
    fn one_hot(&self, shape: &[usize], targets: &[usize]) -> crate::Result<Self::T>;
    /// [n,c,h,w] -> [n,1,h,w]: max over c of |x| (saliency)
    fn max_abs_channels(&self, x: &Self::T) -> crate::Result<Self::T>;
    /// [n,c,h,w] -> [n,c,1,1]: spatial mean (Grad-CAM's α)
    fn spatial_mean(&self, x: &Self::T) -> crate::Result<Self::T>;
    /// [n,c,h,w], w [n,c,1,1] -> [n,1,h,w]: Σ_c w[n,c]·x[n,c], then ReLU if `relu` (CAM, Grad-CAM)
    fn weighted_channel_sum(&self, x: &Self::T, w: &Self::T, relu: bool) -> crate::Result<Self::T>;
    /// per batch item: ½‖x_i‖² (DeepDream's objective)
    fn half_sq_norm(&self, x: &Self::T) -> crate::Result<Vec<f32>>;
    /// per batch item: mean |x_i|
    fn mean_abs(&self, x: &Self::T) -> crate::Result<Vec<f32>>;
    /// x_i += alpha[i] · g_i for every batch item i
    fn axpy_items(&self, x: &mut Self::T, g: &Self::T, alpha: &[f32]) -> crate::Result<()>;
    /// x · k
    fn scale(&self, x: &Self::T, k: f32) -> crate::Result<Self::T>;
    /// a − b
    fn sub(&self, a: &Self::T, b: &Self::T) -> crate::Result<Self::T>;
    /// circular shift of every plane by (dy, dx)
    fn roll(&self, x: &Self::T, dy: isize, dx: isize) -> crate::Result<Self::T>;
    /// bilinear resize of every plane, PyTorch `interpolate(align_corners=False)`
    fn resize_bilinear(&self, x: &Self::T, h: usize, w: usize) -> crate::Result<Self::T>;
    /// clamp channel c of every item to [lo[c], hi[c]]
    fn clamp_channels(&self, x: &mut Self::T, lo: &[f32], hi: &[f32]) -> crate::Result<()>;

    // pictures out
    /// Heat-map pictures of maps `[n, 1, h, w]`, one per item: bilinear upsample to `out_hw`
    /// (align_corners=False, [`crate::imageio::upsample_bilinear`]), min/max normalise per item
    /// ([`crate::imageio::normalize_map`]), colour with `cmap`, and, when `pictures` is given
    /// (n pictures of `out_hw`), blend over picture i with `alpha` ([`crate::imageio::overlay`]).
    /// `clip: Some(q)` (q in (0, 1]) first clamps each item's upsampled values above its
    /// q-quantile to it ([`crate::imageio::clip_threshold`]: a 4096-bin histogram over the
    /// finite range, the same rule on every backend), so a few extreme values cannot darken the
    /// rest; `None` does not clip. Only the finished RGB pictures come back from the backend.
    fn render(
        &self,
        maps: &Self::T,
        pictures: Option<&[image::RgbImage]>,
        out_hw: [usize; 2],
        cmap: crate::imageio::Colormap,
        alpha: f32,
        clip: Option<f32>,
    ) -> crate::Result<Vec<image::RgbImage>>;
}
