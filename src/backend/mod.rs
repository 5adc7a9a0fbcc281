//! The ops of the engine, one method per op, shared by every backend.
//!
//! - `mod.rs` (this file): op parameters (geometry structs) and the [`Backend`] trait.
//! - `cuda/`: launch code for the CUDA kernels (`kernels/*.cu`), run on any [`crate::device::Device`].
//! - `dissect.rs`: [`dissect::IouCounts`], Network Dissection's counting pass on a backend's
//!   own tensors, where it has one (the CUDA engine's: `cuda/dissect.rs`).
//! - `cpu/`: the CPU reference engine (NCHW, im2col + GEMM + rayon). Every GPU kernel is tested
//!   against it, so it favours being obviously right over being clever.
//!
//! Shapes: activations are NCHW `[n, c, h, w]`; conv weights OIHW `[out, in/groups, kh, kw]`;
//! linear weights `[out, in]`. Backward functions take the forward's saved inputs and the
//! gradient of the output (`gy`) and return gradients of the inputs.

pub mod cpu;
pub mod cuda;
pub mod dissect;

use crate::tensor::Tensor;

/// Convolution geometry with explicit padding. TF "SAME" padding is resolved into explicit,
/// possibly asymmetric, padding by the graph before the op runs ([`same_padding`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dGeom {
    /// (vertical, horizontal)
    pub stride: [usize; 2],
    /// top, bottom, left, right
    pub pad: [usize; 4],
    /// (vertical, horizontal)
    pub dilation: [usize; 2],
    /// channel groups (the input channels for a depthwise convolution)
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
    /// window (h, w)
    pub kernel: [usize; 2],
    /// (vertical, horizontal)
    pub stride: [usize; 2],
    /// symmetric padding (h, w); PyTorch requires pad <= kernel / 2
    pub pad: [usize; 2],
    /// PyTorch's `ceil_mode`: round the output size up
    pub ceil_mode: bool,
    /// average pooling only: divide by the full window (true, PyTorch default) or by the
    /// number of elements inside the padded input
    pub count_include_pad: bool,
}

impl Pool2dGeom {
    /// The output size along axis `d` (0: h, 1: w) for an input of `input`; `None` if empty.
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
    /// The output (h, w) for an input of (h, w); `None` if empty.
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        Some((self.out_dim(h, 0)?, self.out_dim(w, 1)?))
    }
}

/// The distributions of [`Backend::random`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Random {
    /// standard normal (Box–Muller on two uniforms)
    Normal,
    /// uniform in (0, 1)
    Uniform,
}

/// Elementwise functions of one tensor ([`Backend::unary`]). A NaN stays NaN under every op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    /// -x
    Neg,
    /// |x|
    Abs,
    /// max(x, 0)
    Relu,
    /// x²
    Square,
    /// √x (NaN below 0)
    Sqrt,
    /// eˣ
    Exp,
    /// ln x (NaN below 0, −∞ at 0)
    Log,
    /// 1 where x > 0, else 0
    Step,
    /// a·x + b (rounded after each operation, no fused multiply-add)
    Affine(f32, f32),
    /// x clamped to [lo, hi]
    Clamp(f32, f32),
    /// 1 / x
    Recip,
}

/// Elementwise functions of two tensors ([`Backend::binary`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// a + b
    Add,
    /// a − b
    Sub,
    /// a · b
    Mul,
    /// a / b
    Div,
    /// the larger; NaN when either is NaN (torch.maximum)
    Max,
    /// the smaller; NaN when either is NaN (torch.minimum)
    Min,
    /// 1 where a == b, else 0
    Eq,
}

/// Reductions along axes ([`Backend::reduce`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Reduce {
    /// the sum
    Sum,
    /// the mean
    Mean,
    /// NaN when any element is NaN (torch.amax)
    Max,
    /// NaN when any element is NaN (torch.amin)
    Min,
    /// the position of the largest element in the row-major order of the reduced axes, as a
    /// number; the first of equal ones; a NaN counts as the largest (torch.argmax)
    ArgMax,
    /// numpy's `np.percentile(row, q)` (q in [0, 100], method "linear", the row a float32 array and
    /// q a Python float): with i = (n − 1)·(q / 100) in f64, a and b the values of ranks ⌊i⌋ and
    /// min(⌊i⌋ + 1, n − 1), t = i − ⌊i⌋ and d = b − a, `a + d·t` (t < 0.5) or `b − d·(1 − t)`,
    /// in f32; exact, to the sign of a zero. NaN when any element is NaN.
    Percentile(f32),
    /// the q-quantile (q in (0, 1]) of the finite values by a histogram:
    /// [`crate::imageio::clip_threshold`], or the finite maximum where that clips nothing; NaN
    /// when there is no finite value
    Quantile(f32),
}

/// The shape of `a op b` under broadcasting: equal ranks, and along each axis equal lengths or
/// a length of 1 that stretches (numpy's rule, without rank promotion).
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> crate::Result<Vec<usize>> {
    let fail = || crate::Error::shape("broadcast", a, b);
    if a.len() != b.len() || a.len() > 4 {
        return Err(fail());
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| match (x, y) {
            _ if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(fail()),
        })
        .collect()
}

/// The shape of `x` reduced along `axes` (each kept with length 1) by `op`, after checking the
/// axes and the op's parameter.
pub fn reduced_shape_of(x: &[usize], axes: &[usize], op: Reduce) -> crate::Result<Vec<usize>> {
    if let Reduce::Percentile(q) = op {
        if !(0.0..=100.0).contains(&q) {
            return Err(crate::Error::InvalidArgument(format!("reduce: a percentile must be in [0, 100], not {q}")));
        }
    }
    reduced_shape(x, axes)
}

/// The shape of `x` reduced along `axes` (each kept with length 1), after checking the axes.
pub fn reduced_shape(x: &[usize], axes: &[usize]) -> crate::Result<Vec<usize>> {
    if x.len() > 4 || axes.is_empty() || axes.iter().any(|&a| a >= x.len()) || (1..axes.len()).any(|i| axes[i..].contains(&axes[i - 1])) {
        return Err(crate::Error::InvalidArgument(format!("reduce: axes {axes:?} of a tensor of shape {x:?}")));
    }
    Ok(x.iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect())
}

/// The arithmetic of the GPU engine's convolutions (forward and backward data): exact f32 on
/// plain cores, or tensor cores with operands rounded to TF32 (10 mantissa bits) or BF16 (7),
/// always accumulating in f32. Parsed from `fp32`, `tf32`, `bf16`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    #[default]
    /// exact f32 on plain cores
    F32,
    /// TF32 operands on tensor cores (10 mantissa bits), f32 accumulation
    Tf32,
    /// BF16 operands on tensor cores (7 mantissa bits), f32 accumulation
    Bf16,
}

impl Precision {
    /// Every precision, exact first.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Tf32, Precision::Bf16];
    /// The CLI's name: `fp32`, `tf32`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "fp32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| crate::Error::InvalidArgument(format!("unknown precision `{s}`; known: fp32, tf32, bf16")))
    }
}

/// Elementwise activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// max(x, 0)
    Relu,
    /// min(max(x, 0), 6)
    Relu6,
    /// x · σ(x) (swish)
    Silu,
    /// σ(x) = 1 / (1 + e⁻ˣ)
    Sigmoid,
    /// x · min(max(x + 3, 0), 6) / 6
    HardSwish,
}

impl Act {
    /// Whether the gradient through this activation is a 0/1 mask that is the same function
    /// of the forward output as of the forward input (ReLU: x > 0 ⇔ y > 0; ReLU6: 0 < x < 6
    /// ⇔ 0 < y < 6, NaN passing in both): the ones the executor fuses, since their backward
    /// needs only the tensor the fused forward keeps.
    pub fn is_mask(self) -> bool {
        matches!(self, Act::Relu | Act::Relu6)
    }
}

/// Local response normalisation across channels (AlexNet / GoogLeNet-v1 style, PyTorch's
/// `nn.LocalResponseNorm`): y = x / (k + alpha/size * sum_{window} x^2)^beta.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnGeom {
    /// channels in the window
    pub size: usize,
    /// α
    pub alpha: f32,
    /// β
    pub beta: f32,
    /// k
    pub k: f32,
}

/// What a parameter is for, so a backend can lay it out for its kernels at load time
/// (the CUDA engine repacks convolution weights; the CPU engine keeps PyTorch's layouts and packs
/// convolution weights for its GEMM on first use).
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

    /// What to call it in messages (`cpu`, `cuda`, `emu`).
    fn name(&self) -> &'static str;
    /// Bytes a job may use for its activations, where running out would abort rather than
    /// fail (host memory); `None` where an allocation that fails is an error the engine reports
    /// (a GPU's). The engine refuses a pass that needs more, before it allocates anything.
    fn memory_budget(&self) -> Option<usize> {
        None
    }
    /// Bytes a job could still have on a device whose memory is finite and known (free, and
    /// held by a cache of this backend's), to say which batch would fit after running out.
    fn memory_available(&self) -> Option<usize> {
        None
    }
    /// Its tensors live in host memory and its ops run on the calling thread (the CPU engine):
    /// host work on its results can as well be done off the job's thread
    /// ([`crate::job::MapJob`] normalises the pictures' maps there).
    fn on_host(&self) -> bool {
        false
    }
    /// logical NCHW shape
    fn shape<'a>(&self, t: &'a Self::T) -> &'a [usize];
    /// A host tensor on the backend.
    fn upload(&self, t: &Tensor) -> crate::Result<Self::T>;
    /// A backend tensor back on the host.
    fn download(&self, t: &Self::T) -> crate::Result<Tensor>;
    /// A model parameter prepared for its `role` (laid out for the kernels once, at load).
    fn weight(&self, t: &std::sync::Arc<Tensor>, role: Role) -> crate::Result<Self::W>;
    /// Zeros in `shape`.
    fn zeros(&self, shape: &[usize]) -> crate::Result<Self::T> {
        self.full(shape, 0.0)
    }

    // layers, forward and backward (gradients w.r.t. activations only)
    /// The convolution of `x` by `w` (+ `b`).
    fn conv2d(&self, x: &Self::T, w: &Self::W, b: Option<&Self::W>, g: &Conv2dGeom) -> crate::Result<Self::T>;
    /// The gradient of [`Backend::conv2d`] with respect to its input.
    fn conv2d_backward_data(&self, gy: &Self::T, w: &Self::W, x_shape: &[usize], g: &Conv2dGeom) -> crate::Result<Self::T>;
    /// `act(conv2d(x, w, b) + residual)`: a convolution with the rest of its block in its
    /// epilogue (the graph executor's forward fusion, [`crate::engine`]). `residual` has the
    /// output's shape. The same arithmetic in the same order as the three ops one after another
    /// (the default), so fused and unfused passes agree to the bit; a backend whose convolution
    /// can finish the job in its store (the CUDA engine) overrides it and saves the
    /// intermediate tensors, their launches and their memory traffic.
    fn conv2d_fused(&self, x: &Self::T, w: &Self::W, b: Option<&Self::W>, g: &Conv2dGeom, residual: Option<&Self::T>, act: Option<Act>) -> crate::Result<Self::T> {
        let mut y = self.conv2d(x, w, b, g)?;
        if let Some(r) = residual {
            self.add_assign(&mut y, r)?;
        }
        match act {
            Some(a) => self.act(&y, a),
            None => Ok(y),
        }
    }
    /// `act_backward(mask, conv2d_backward_data(gy, w), act)`: backward-data through a
    /// convolution and then through the ReLU / ReLU6 `act` before it, whose forward input *or*
    /// output is `mask` (for these two the gradient's mask is the same function of either).
    /// The default composes the two ops; the CUDA engine applies the mask in the backward-data
    /// kernel's store.
    fn conv2d_backward_data_masked(&self, gy: &Self::T, w: &Self::W, x_shape: &[usize], g: &Conv2dGeom, mask: &Self::T, act: Act) -> crate::Result<Self::T> {
        let gx = self.conv2d_backward_data(gy, w, x_shape, g)?;
        self.act_backward(mask, &gx, act)
    }
    /// `x Wᵀ + b` on `[n, k]`.
    fn linear(&self, x: &Self::T, w: &Self::W, b: Option<&Self::W>) -> crate::Result<Self::T>;
    /// The gradient of [`Backend::linear`] with respect to its input.
    fn linear_backward_data(&self, gy: &Self::T, w: &Self::W) -> crate::Result<Self::T>;
    /// Max pooling, with each output's winning input position (for the backward).
    fn max_pool2d(&self, x: &Self::T, g: &Pool2dGeom) -> crate::Result<(Self::T, Self::Idx)>;
    /// The gradient of [`Backend::max_pool2d`]: each `gy` element to its window's winner.
    fn max_pool2d_backward(&self, gy: &Self::T, argmax: &Self::Idx, x_shape: &[usize]) -> crate::Result<Self::T>;
    /// Average pooling.
    fn avg_pool2d(&self, x: &Self::T, g: &Pool2dGeom) -> crate::Result<Self::T>;
    /// The gradient of [`Backend::avg_pool2d`].
    fn avg_pool2d_backward(&self, gy: &Self::T, x_shape: &[usize], g: &Pool2dGeom) -> crate::Result<Self::T>;
    /// Adaptive average pooling to `out` (h, w), as PyTorch's bins.
    fn adaptive_avg_pool2d(&self, x: &Self::T, out: [usize; 2]) -> crate::Result<Self::T>;
    /// The gradient of [`Backend::adaptive_avg_pool2d`].
    fn adaptive_avg_pool2d_backward(&self, gy: &Self::T, x_shape: &[usize]) -> crate::Result<Self::T>;
    /// The activation `a` of `x`.
    fn act(&self, x: &Self::T, a: Act) -> crate::Result<Self::T>;
    /// gradient given the forward *input* x
    fn act_backward(&self, x: &Self::T, gy: &Self::T, a: Act) -> crate::Result<Self::T>;
    /// `y[n,c,h,w] = x[n,c,h,w] · s[n,c,1,1]`
    fn channel_scale(&self, x: &Self::T, s: &Self::T) -> crate::Result<Self::T>;
    /// (gx, gs)
    fn channel_scale_backward(&self, x: &Self::T, s: &Self::T, gy: &Self::T) -> crate::Result<(Self::T, Self::T)>;
    /// `y = x · scale[c] + shift[c]`
    fn affine(&self, x: &Self::T, scale: &Self::W, shift: &Self::W) -> crate::Result<Self::T>;
    /// The gradient of [`Backend::affine`] with respect to its input.
    fn affine_backward(&self, gy: &Self::T, scale: &Self::W) -> crate::Result<Self::T>;
    /// Local response normalisation ([`LrnGeom`]).
    fn lrn(&self, x: &Self::T, g: &LrnGeom) -> crate::Result<Self::T>;
    /// The gradient of [`Backend::lrn`] with respect to its input.
    fn lrn_backward(&self, x: &Self::T, gy: &Self::T, g: &LrnGeom) -> crate::Result<Self::T>;

    // tensor plumbing
    /// a + b, a new tensor
    fn add(&self, a: &Self::T, b: &Self::T) -> crate::Result<Self::T>;
    /// a += b, in place
    fn add_assign(&self, a: &mut Self::T, b: &Self::T) -> crate::Result<()>;
    /// channel concatenation of NCHW tensors with equal n, h, w
    fn concat(&self, xs: &[&Self::T]) -> crate::Result<Self::T>;
    /// the inverse of `concat`
    fn split(&self, x: &Self::T, channels: &[usize]) -> crate::Result<Vec<Self::T>>;
    /// same data, another logical shape (flatten and its gradient)
    fn reshape(&self, x: Self::T, shape: &[usize]) -> crate::Result<Self::T>;

    // generic primitives: what the visualisations build their math from (src/viz)
    /// y = f(x) elementwise
    fn unary(&self, x: &Self::T, op: Unary) -> crate::Result<Self::T>;
    /// y = f(a, b) elementwise, broadcast ([`broadcast_shape`]); ranks up to 4
    fn binary(&self, a: &Self::T, b: &Self::T, op: Binary) -> crate::Result<Self::T>;
    /// reduce along `axes` (distinct, ascending or not), each kept with length 1 ([`reduced_shape`])
    fn reduce(&self, x: &Self::T, op: Reduce, axes: &[usize]) -> crate::Result<Self::T>;
    /// `[1, n]`: 0, 1, …, n − 1 (exact below 2^24)
    fn iota(&self, n: usize) -> crate::Result<Self::T>;
    /// a tensor of `shape` filled with `value`
    fn full(&self, shape: &[usize], value: f32) -> crate::Result<Self::T>;
    /// a tensor of `shape` drawn from `dist` by a counter-based generator: element i (in
    /// row-major NCHW order) depends only on (`seed`, i), so every backend draws the same
    /// numbers (to f32 rounding of the f64 `ln` / `cos`; the CPU engine's is the reference)
    fn random(&self, shape: &[usize], seed: u64, dist: Random) -> crate::Result<Self::T>;
    /// circular shift of every plane of `[n, c, h, w]` by (dy, dx)
    fn roll(&self, x: &Self::T, dy: isize, dx: isize) -> crate::Result<Self::T>;
    /// the `h x w` window at (`y0`, `x0`) of every plane of `[n, c, H, W]` (an error unless it
    /// lies inside): `x[:, :, y0:y0+h, x0:x0+w]`
    fn crop(&self, x: &Self::T, y0: usize, x0: usize, h: usize, w: usize) -> crate::Result<Self::T>;
    /// `dst[:, :, y0:y0+h, x0:x0+w] = src` in place (`src` `[n, c, h, w]`; an error unless the
    /// window lies inside `dst` and n, c agree)
    fn paste(&self, dst: &mut Self::T, src: &Self::T, y0: usize, x0: usize) -> crate::Result<()>;
    /// mirror every plane of `[n, c, h, w]` top–bottom (`vertical`) and / or left–right
    /// (`horizontal`): `torch.flip(x, dims)` over h and w
    fn flip(&self, x: &Self::T, vertical: bool, horizontal: bool) -> crate::Result<Self::T>;
    /// the planes `x[p / c, p % c]` of `x` `[n, c, h, w]` for each plane number `p` of `planes`,
    /// as `[planes.len(), 1, h, w]` (an error unless each `p < n·c`). The default gathers them on
    /// the host; a backend whose tensors live elsewhere gathers them there.
    fn gather_planes(&self, x: &Self::T, planes: &[usize]) -> crate::Result<Self::T> {
        let (s, hw) = check_planes(self.shape(x), planes)?;
        let t = self.download(x)?;
        let data = planes.iter().flat_map(|&p| t.data[p * hw..(p + 1) * hw].iter().copied()).collect();
        self.upload(&Tensor::new(vec![planes.len(), 1, s[2], s[3]], data)?)
    }
    /// Network Dissection's counting pass on this backend's own tensors, where it has one (the
    /// CUDA engine): counts over `units` with `thresholds`, `labels` label numbers and
    /// `categories` categories ([`dissect::IouCounts`]). `None` (the default): the caller
    /// downloads the maps and counts on the host.
    fn iou_counts(&self, _thresholds: &[f32], _labels: usize, _categories: usize) -> Option<crate::Result<Box<dyn dissect::IouCounts<Self::T>>>> {
        None
    }
    /// bilinear resize of every plane of `[n, c, h, w]`, PyTorch `interpolate(align_corners=False)`
    fn resize(&self, x: &Self::T, h: usize, w: usize) -> crate::Result<Self::T>;
    /// every plane of item i of `x` `[n, c, h, w]` resampled under the affine map `theta[i]`
    /// (`[n, 2, 3]`, output to input, in coordinates normalised to [-1, 1]): PyTorch's
    /// `grid_sample(x, affine_grid(theta, x.shape), mode="bilinear", padding_mode="zeros",
    /// align_corners=False)`, to f32 rounding ([`warp_map`]); the identity map returns `x` to the bit
    /// (finite values). A sample point with a non-finite coordinate reads 0.
    fn warp(&self, x: &Self::T, theta: &Self::T) -> crate::Result<Self::T>;
    /// the adjoint of [`Backend::warp`] at the same `theta`: each `gy` value spread onto the four
    /// pixels its sample point read, with the same weights (⟨warp(x), y⟩ = ⟨x, warp_backward(y)⟩)
    fn warp_backward(&self, gy: &Self::T, theta: &Self::T) -> crate::Result<Self::T>;
}

/// That `planes` are plane numbers of a `[n, c, h, w]` tensor ([`Backend::gather_planes`]):
/// the shape and the size of a plane.
pub(crate) fn check_planes<'a>(x: &'a [usize], planes: &[usize]) -> crate::Result<(&'a [usize], usize)> {
    if x.len() != 4 || planes.iter().any(|&p| p >= x[0] * x[1]) {
        return Err(crate::Error::InvalidArgument(format!("gather_planes: plane numbers {planes:?} of a tensor {x:?} (expected [n, c, h, w] and each below n·c)")));
    }
    Ok((x, x[2] * x[3]))
}

/// That `theta` (`[n, 2, 3]`) gives one affine map per item of `x` (`[n, c, h, w]`)
/// ([`Backend::warp`]).
pub(crate) fn check_warp(x: &[usize], theta: &[usize]) -> crate::Result<()> {
    if x.len() != 4 || theta != [x[0], 2, 3] {
        return Err(crate::Error::InvalidArgument(format!("warp: theta must be [n, 2, 3] for a batch [n, c, h, w], got theta {theta:?} for {x:?}")));
    }
    Ok(())
}

/// One item's map of [`Backend::warp`] in pixel units: output pixel (ox, oy) samples the input at
/// `(cx + a[0]·u + a[1]·v + a[2], cy + a[3]·u + a[4]·v + a[5])` with (u, v) = (ox − cx, oy − cy)
/// and (cx, cy) = ((w − 1) / 2, (h − 1) / 2) the picture's centre. This is `theta`'s map under
/// align_corners=False (normalised x = (2·ox + 1) / w − 1 = 2u / w), written about the centre so
/// that the identity is exact. `kernels/image.cu`'s `dv_warp_map` and `dv_warp_point` compute the
/// same f32 numbers in the same order.
pub fn warp_map(theta: &[f32], h: usize, w: usize) -> [f32; 6] {
    let (hf, wf) = (h as f32, w as f32);
    [theta[0], theta[1] * wf / hf, theta[2] * wf * 0.5, theta[3] * hf / wf, theta[4], theta[5] * hf * 0.5]
}

/// That a window of shape `window` (`[n, c, h, w]`) at (`y0`, `x0`) lies inside `outer`, with
/// the same n and c ([`Backend::crop`], [`Backend::paste`]).
pub(crate) fn check_window(what: &str, outer: &[usize], window: &[usize], y0: usize, x0: usize) -> crate::Result<()> {
    let fits = outer.len() == 4 && window.len() == 4 && outer[..2] == window[..2] && y0 + window[2] <= outer[2] && x0 + window[3] <= outer[3];
    if !fits {
        return Err(crate::Error::InvalidArgument(format!("{what}: a window {window:?} at ({y0}, {x0}) does not lie inside {outer:?}")));
    }
    Ok(())
}
