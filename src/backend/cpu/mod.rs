//! The CPU reference engine: NCHW f32, im2col + GEMM for convolution and linear layers,
//! rayon over the batch / channels. Simple enough to be the reference every GPU kernel is
//! tested against, fast enough to be a usable fallback.
//!
//! Speed (issue 6): on x86-64 with AVX-512 the GEMM is our own (`gemm.rs`); convolution weights
//! are packed for it once per engine ([`CpuWeight`]); the column matrix is packed straight from
//! the image (never written out whole); 1x1 stride-1 convolutions read their input as it is;
//! stride-1 backward-data is a forward convolution with flipped weights (no col2im); the bias is
//! added where the product is stored; elementwise outputs are written once; freed memory is kept
//! for the next pass (`keep_freed_memory`).
//!
//! - `conv.rs`: conv2d forward, backward-data, backward-filter (groups, dilation, asymmetric pad);
//!   `conv/depthwise.rs`: the depthwise case, with its AVX-512 version
//! - `pool.rs`: max (argmax kept), average, adaptive-average pooling, forward and backward
//! - `linear.rs`: fully connected forward and backward
//! - `elementwise.rs`: activations, channel scale, affine, LRN
//! - `generic.rs`: the generic primitives (unary, broadcast binary, reductions along axes)
//! - `plumbing.rs`: concat / split, roll, flip, crop / paste, bilinear resize, affine warp
//! - `gemm.rs`: the one matrix product everything above uses (public so `benches/gemm.rs` can time it)

mod conv;
mod elementwise;
pub mod gemm;
mod generic;
mod linear;
mod plumbing;
mod pool;

use std::sync::{Arc, OnceLock};

use super::{Act, Backend, Binary, Conv2dGeom, LrnGeom, Pool2dGeom, Random, Reduce, Role, Unary};
use crate::error::Result;
use crate::tensor::Tensor;

/// Bytes the CPU engine may use for a pass: `DEEPVIZ_MEMORY_LIMIT` (bytes, or with a K, M or G
/// suffix), else 80% of the memory the kernel reports available (`MemAvailable`), else 16 GiB.
pub fn host_memory_budget() -> usize {
    if let Ok(v) = std::env::var("DEEPVIZ_MEMORY_LIMIT") {
        let v = v.trim();
        let (num, mul) = match v.chars().last().map(|c| c.to_ascii_uppercase()) {
            Some('K') => (&v[..v.len() - 1], 1 << 10),
            Some('M') => (&v[..v.len() - 1], 1 << 20),
            Some('G') => (&v[..v.len() - 1], 1 << 30),
            _ => (v, 1),
        };
        if let Ok(n) = num.trim().parse::<usize>() {
            return n.saturating_mul(mul);
        }
    }
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemAvailable:").and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<usize>().ok())))
        .map(|kb| kb / 10 * 8 * 1024)
        .unwrap_or(16 << 30)
}

/// Once per process, when a CPU engine is first prepared: have glibc's allocator keep freed
/// memory for reuse instead of handing it back to the kernel. A pass allocates and frees
/// activations of up to tens of MB; by default glibc maps the large ones afresh each time (and
/// trims the heap after a large free), so every pass page-faults its activations in again and has
/// the kernel zero them (measured: ~10% of a resnet50 Grad-CAM's CPU time). With the mmap
/// threshold at its maximum (32 MiB) and the trim threshold at 1 GiB, a repeated job reuses the
/// same memory. The cost: up to that much freed memory stays with the process until it exits.
/// `DEEPVIZ_CPU_KEEP_MEMORY=0` leaves the allocator as it is.
fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("DEEPVIZ_CPU_KEEP_MEMORY").is_ok_and(|v| v == "0") {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        {
            extern "C" {
                fn mallopt(param: i32, value: i32) -> i32;
            }
            const M_TRIM_THRESHOLD: i32 = -1;
            const M_MMAP_THRESHOLD: i32 = -3;
            // SAFETY: mallopt only changes glibc's allocation thresholds; it is thread-safe and
            // leaves existing allocations alone (it returns 0 for a value it refuses).
            unsafe {
                mallopt(M_MMAP_THRESHOLD, 32 << 20);
                mallopt(M_TRIM_THRESHOLD, 1 << 30);
            }
        }
    });
}

/// A parameter prepared for the CPU engine: the tensor in PyTorch's layout, and for a
/// convolution weight its per-group GEMM operands, packed on first use (the group count comes
/// with the first call) and kept for every later one.
pub struct CpuWeight {
    t: Arc<Tensor>,
    /// (groups, packed `W_g`) for the forward product
    fwd: OnceLock<(usize, Option<Vec<gemm::PackedA>>)>,
    /// (groups, packed `W_gᵀ`) for the backward-data product
    bwd: OnceLock<(usize, Option<Vec<gemm::PackedA>>)>,
    /// (groups, the flipped weights of backward-data as a forward convolution, and their
    /// forward packing): [`conv::flipped_geom`]
    flipped: OnceLock<(usize, Box<CpuWeight>)>,
}

impl CpuWeight {
    /// A weight, its packings made when first needed.
    pub fn new(t: Arc<Tensor>) -> Self {
        CpuWeight { t, fwd: OnceLock::new(), bwd: OnceLock::new(), flipped: OnceLock::new() }
    }
    /// The weight tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.t
    }
    fn packed(cell: &OnceLock<(usize, Option<Vec<gemm::PackedA>>)>, groups: usize, pack: impl FnOnce() -> Option<Vec<gemm::PackedA>>) -> Option<&[gemm::PackedA]> {
        let (g, p) = cell.get_or_init(|| (groups, pack()));
        // another group count than the first call's (no model does that): pack per call
        p.as_deref().filter(|_| *g == groups)
    }
    fn conv_forward(&self, groups: usize) -> Option<&[gemm::PackedA]> {
        Self::packed(&self.fwd, groups, || conv::pack_forward(&self.t, groups))
    }
    fn conv_backward(&self, groups: usize) -> Option<&[gemm::PackedA]> {
        Self::packed(&self.bwd, groups, || conv::pack_backward(&self.t, groups))
    }
    /// The flipped weights, made on first use.
    fn flipped(&self, groups: usize) -> Option<&CpuWeight> {
        let (g, w) = self.flipped.get_or_init(|| (groups, Box::new(CpuWeight::new(Arc::new(conv::flip(&self.t, groups))))));
        (*g == groups).then_some(&**w)
    }
}

/// The CPU engine. Stateless; threads come from rayon's global pool.
///
/// Its inherent methods are the reference ops on host tensors (what the op tests and the GPU
/// kernel tests compare against); `impl Backend for Cpu` runs graphs with them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Cpu {
    /// y = conv(x, w) + b
    pub fn conv2d(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &Conv2dGeom) -> Tensor {
        conv::forward(x, w, b, g)
    }
    /// gradient w.r.t. x (shape of x given as `x_shape`)
    pub fn conv2d_backward_data(&self, gy: &Tensor, w: &Tensor, x_shape: &[usize], g: &Conv2dGeom) -> Tensor {
        conv::backward_data(gy, w, x_shape, g)
    }
    /// gradient w.r.t. w and the bias gradient (sum of gy over n, h, w)
    pub fn conv2d_backward_filter(&self, x: &Tensor, gy: &Tensor, w_shape: &[usize], g: &Conv2dGeom) -> (Tensor, Tensor) {
        conv::backward_filter(x, gy, w_shape, g)
    }
    /// y = x W^T + b, x `[n, in]`, w `[out, in]`
    pub fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        linear::forward(x, w, b)
    }
    /// (gx, gw, gb)
    pub fn linear_backward(&self, x: &Tensor, w: &Tensor, gy: &Tensor) -> (Tensor, Tensor, Tensor) {
        linear::backward(x, w, gy)
    }
    /// y and, per output element, the flat index (h*W+w within its n,c plane) of the winning
    /// input element; ties go to the first in row-major window order, as in PyTorch
    pub fn max_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> (Tensor, Vec<u32>) {
        pool::max_forward(x, g)
    }
    /// The gradient of [`Cpu::max_pool2d`]: each `gy` element to its window's winner.
    pub fn max_pool2d_backward(&self, gy: &Tensor, argmax: &[u32], x_shape: &[usize]) -> Tensor {
        pool::max_backward(gy, argmax, x_shape)
    }
    /// Average pooling (the divisor as PyTorch: `count_include_pad`).
    pub fn avg_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> Tensor {
        pool::avg_forward(x, g)
    }
    /// The gradient of [`Cpu::avg_pool2d`].
    pub fn avg_pool2d_backward(&self, gy: &Tensor, x_shape: &[usize], g: &Pool2dGeom) -> Tensor {
        pool::avg_backward(gy, x_shape, g)
    }
    /// PyTorch's adaptive windows: start = floor(i*H/out), end = ceil((i+1)*H/out)
    pub fn adaptive_avg_pool2d(&self, x: &Tensor, out: [usize; 2]) -> Tensor {
        pool::adaptive_avg_forward(x, out)
    }
    /// The gradient of [`Cpu::adaptive_avg_pool2d`].
    pub fn adaptive_avg_pool2d_backward(&self, gy: &Tensor, x_shape: &[usize]) -> Tensor {
        pool::adaptive_avg_backward(gy, x_shape)
    }
    /// The activation `a` of `x`.
    pub fn act(&self, x: &Tensor, a: Act) -> Tensor {
        elementwise::act(x, a)
    }
    /// gradient given the forward *input* x
    pub fn act_backward(&self, x: &Tensor, gy: &Tensor, a: Act) -> Tensor {
        elementwise::act_backward(x, gy, a)
    }
    /// `y[n,c,h,w] = x[n,c,h,w] * s[n,c]` (squeeze-excitation); s has shape `[n, c, 1, 1]`
    pub fn channel_scale(&self, x: &Tensor, s: &Tensor) -> Tensor {
        elementwise::channel_scale(x, s)
    }
    /// (gx, gs)
    pub fn channel_scale_backward(&self, x: &Tensor, s: &Tensor, gy: &Tensor) -> (Tensor, Tensor) {
        elementwise::channel_scale_backward(x, s, gy)
    }
    /// `y[n,c,h,w] = x[n,c,h,w] * scale[c] + shift[c]`
    pub fn affine(&self, x: &Tensor, scale: &[f32], shift: &[f32]) -> Tensor {
        elementwise::affine(x, scale, shift)
    }
    /// The gradient of [`Cpu::affine`] with respect to its input.
    pub fn affine_backward(&self, gy: &Tensor, scale: &[f32]) -> Tensor {
        elementwise::affine_backward(gy, scale)
    }
    /// Local response normalisation (AlexNet's, as PyTorch's `LocalResponseNorm`).
    pub fn lrn(&self, x: &Tensor, g: &LrnGeom) -> Tensor {
        elementwise::lrn(x, g)
    }
    /// The gradient of [`Cpu::lrn`] with respect to its input.
    pub fn lrn_backward(&self, x: &Tensor, gy: &Tensor, g: &LrnGeom) -> Tensor {
        elementwise::lrn_backward(x, gy, g)
    }
}

impl Cpu {
    /// Backward-data by the fastest path for the geometry (a forward convolution over flipped
    /// weights where one exists), times the ReLU / ReLU6 gradient at `mask` when given.
    fn backward_data_epi(&self, gy: &Tensor, w: &CpuWeight, x_shape: &[usize], g: &Conv2dGeom, mask: Option<(&Tensor, Act)>) -> Result<Tensor> {
        if let Some(fg) = conv::flipped_geom(&w.t.shape, g) {
            if let Some(wf) = w.flipped(g.groups) {
                return Ok(conv::forward_epi(gy, &wf.t, wf.conv_forward(fg.groups), None, &fg, conv::Epi { mask, ..Default::default() }));
            }
            let mut gx = conv::backward_data(gy, &w.t, x_shape, g);
            if let Some((m, a)) = mask {
                gx = elementwise::act_backward(m, &gx, a);
            }
            return Ok(gx);
        }
        Ok(conv::backward_data_masked(gy, &w.t, w.conv_backward(g.groups), x_shape, g, mask))
    }
}

impl Backend for Cpu {
    type T = Tensor;
    type W = CpuWeight;
    type Idx = Vec<u32>;

    fn name(&self) -> &'static str {
        "cpu"
    }
    fn on_host(&self) -> bool {
        true
    }
    fn memory_budget(&self) -> Option<usize> {
        Some(host_memory_budget())
    }
    fn shape<'a>(&self, t: &'a Tensor) -> &'a [usize] {
        &t.shape
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn download(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }
    fn weight(&self, t: &Arc<Tensor>, _role: Role) -> Result<CpuWeight> {
        keep_freed_memory();
        Ok(CpuWeight::new(t.clone()))
    }
    fn conv2d(&self, x: &Tensor, w: &CpuWeight, b: Option<&CpuWeight>, g: &Conv2dGeom) -> Result<Tensor> {
        Ok(conv::forward_packed(x, &w.t, w.conv_forward(g.groups), b.map(|b| &*b.t), g))
    }
    fn conv2d_backward_data(&self, gy: &Tensor, w: &CpuWeight, x_shape: &[usize], g: &Conv2dGeom) -> Result<Tensor> {
        self.backward_data_epi(gy, w, x_shape, g, None)
    }
    fn conv2d_fused(&self, x: &Tensor, w: &CpuWeight, b: Option<&CpuWeight>, g: &Conv2dGeom, residual: Option<&Tensor>, act: Option<Act>) -> Result<Tensor> {
        if !act.is_none_or(Act::is_mask) {
            let y = Backend::conv2d_fused(self, x, w, b, g, residual, None)?;
            return Backend::act(self, &y, act.expect("an activation"));
        }
        let epi = conv::Epi { residual, act, mask: None };
        Ok(conv::forward_epi(x, &w.t, w.conv_forward(g.groups), b.map(|b| &*b.t), g, epi))
    }
    fn conv2d_backward_data_masked(&self, gy: &Tensor, w: &CpuWeight, x_shape: &[usize], g: &Conv2dGeom, mask: &Tensor, act: Act) -> Result<Tensor> {
        if !act.is_mask() {
            let gx = self.backward_data_epi(gy, w, x_shape, g, None)?;
            return Backend::act_backward(self, mask, &gx, act);
        }
        self.backward_data_epi(gy, w, x_shape, g, Some((mask, act)))
    }
    fn linear(&self, x: &Tensor, w: &CpuWeight, b: Option<&CpuWeight>) -> Result<Tensor> {
        Ok(linear::forward(x, &w.t, b.map(|b| &*b.t)))
    }
    fn linear_backward_data(&self, gy: &Tensor, w: &CpuWeight) -> Result<Tensor> {
        Ok(linear::backward_data(gy, &w.t))
    }
    fn max_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> Result<(Tensor, Vec<u32>)> {
        Ok(pool::max_forward(x, g))
    }
    fn max_pool2d_backward(&self, gy: &Tensor, argmax: &Vec<u32>, x_shape: &[usize]) -> Result<Tensor> {
        Ok(pool::max_backward(gy, argmax, x_shape))
    }
    fn avg_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> Result<Tensor> {
        Ok(pool::avg_forward(x, g))
    }
    fn avg_pool2d_backward(&self, gy: &Tensor, x_shape: &[usize], g: &Pool2dGeom) -> Result<Tensor> {
        Ok(pool::avg_backward(gy, x_shape, g))
    }
    fn adaptive_avg_pool2d(&self, x: &Tensor, out: [usize; 2]) -> Result<Tensor> {
        Ok(pool::adaptive_avg_forward(x, out))
    }
    fn adaptive_avg_pool2d_backward(&self, gy: &Tensor, x_shape: &[usize]) -> Result<Tensor> {
        Ok(pool::adaptive_avg_backward(gy, x_shape))
    }
    fn act(&self, x: &Tensor, a: Act) -> Result<Tensor> {
        Ok(elementwise::act(x, a))
    }
    fn act_backward(&self, x: &Tensor, gy: &Tensor, a: Act) -> Result<Tensor> {
        Ok(elementwise::act_backward(x, gy, a))
    }
    fn channel_scale(&self, x: &Tensor, s: &Tensor) -> Result<Tensor> {
        Ok(elementwise::channel_scale(x, s))
    }
    fn channel_scale_backward(&self, x: &Tensor, s: &Tensor, gy: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok(elementwise::channel_scale_backward(x, s, gy))
    }
    fn affine(&self, x: &Tensor, scale: &CpuWeight, shift: &CpuWeight) -> Result<Tensor> {
        Ok(elementwise::affine(x, &scale.t.data, &shift.t.data))
    }
    fn affine_backward(&self, gy: &Tensor, scale: &CpuWeight) -> Result<Tensor> {
        Ok(elementwise::affine_backward(gy, &scale.t.data))
    }
    fn lrn(&self, x: &Tensor, g: &LrnGeom) -> Result<Tensor> {
        Ok(elementwise::lrn(x, g))
    }
    fn lrn_backward(&self, x: &Tensor, gy: &Tensor, g: &LrnGeom) -> Result<Tensor> {
        Ok(elementwise::lrn_backward(x, gy, g))
    }
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(elementwise::add(a, b))
    }
    fn add_assign(&self, a: &mut Tensor, b: &Tensor) -> Result<()> {
        elementwise::add_assign(a, b);
        Ok(())
    }
    fn concat(&self, xs: &[&Tensor]) -> Result<Tensor> {
        Ok(plumbing::concat(xs))
    }
    fn split(&self, x: &Tensor, channels: &[usize]) -> Result<Vec<Tensor>> {
        Ok(plumbing::split(x, channels))
    }
    fn reshape(&self, x: Tensor, shape: &[usize]) -> Result<Tensor> {
        x.reshape(shape)
    }
    fn unary(&self, x: &Tensor, op: Unary) -> Result<Tensor> {
        Ok(generic::unary(x, op))
    }
    fn binary(&self, a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
        generic::binary(a, b, op)
    }
    fn reduce(&self, x: &Tensor, op: Reduce, axes: &[usize]) -> Result<Tensor> {
        generic::reduce(x, op, axes)
    }
    fn iota(&self, n: usize) -> Result<Tensor> {
        Ok(generic::iota(n))
    }
    fn random(&self, shape: &[usize], seed: u64, dist: Random) -> Result<Tensor> {
        Ok(generic::random(shape, seed, dist))
    }
    fn full(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        Ok(Tensor::full(shape, value))
    }
    fn roll(&self, x: &Tensor, dy: isize, dx: isize) -> Result<Tensor> {
        Ok(plumbing::roll(x, dy, dx))
    }
    fn crop(&self, x: &Tensor, y0: usize, x0: usize, h: usize, w: usize) -> Result<Tensor> {
        crate::backend::check_window("crop", &x.shape, &[x.shape.first().copied().unwrap_or(0), x.shape.get(1).copied().unwrap_or(0), h, w], y0, x0)?;
        Ok(plumbing::crop(x, y0, x0, h, w))
    }
    fn paste(&self, dst: &mut Tensor, src: &Tensor, y0: usize, x0: usize) -> Result<()> {
        crate::backend::check_window("paste", &dst.shape, &src.shape, y0, x0)?;
        plumbing::paste(dst, src, y0, x0);
        Ok(())
    }
    fn flip(&self, x: &Tensor, vertical: bool, horizontal: bool) -> Result<Tensor> {
        Ok(plumbing::flip(x, vertical, horizontal))
    }
    fn resize(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        Ok(plumbing::resize_bilinear(x, h, w))
    }
    fn warp(&self, x: &Tensor, theta: &Tensor) -> Result<Tensor> {
        crate::backend::check_warp(&x.shape, &theta.shape)?;
        Ok(plumbing::warp(x, theta, false))
    }
    fn warp_backward(&self, gy: &Tensor, theta: &Tensor) -> Result<Tensor> {
        crate::backend::check_warp(&gy.shape, &theta.shape)?;
        Ok(plumbing::warp(gy, theta, true))
    }
}
