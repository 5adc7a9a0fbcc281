//! The CPU reference engine: NCHW f32, im2col + GEMM for convolution and linear layers,
//! rayon over the batch / channels. Simple enough to be the reference every GPU kernel is
//! tested against, fast enough to be a usable fallback.
//!
//! - `conv.rs`: conv2d forward, backward-data, backward-filter (groups, dilation, asymmetric pad)
//! - `pool.rs`: max (argmax kept), average, adaptive-average pooling, forward and backward
//! - `linear.rs`: fully connected forward and backward
//! - `elementwise.rs`: activations, channel scale, affine, LRN
//! - `generic.rs`: the generic primitives (unary, broadcast binary, reductions along axes)
//! - `plumbing.rs`: concat / split, roll, bilinear resize
//! - `gemm.rs`: the one matrix product everything above uses (public so `benches/gemm.rs` can time it)

mod conv;
mod elementwise;
pub mod gemm;
mod generic;
mod linear;
mod plumbing;
mod pool;

use std::sync::Arc;

use super::{Act, Backend, Binary, Conv2dGeom, LrnGeom, Pool2dGeom, Reduce, Role, Unary};
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
    pub fn max_pool2d_backward(&self, gy: &Tensor, argmax: &[u32], x_shape: &[usize]) -> Tensor {
        pool::max_backward(gy, argmax, x_shape)
    }
    pub fn avg_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> Tensor {
        pool::avg_forward(x, g)
    }
    pub fn avg_pool2d_backward(&self, gy: &Tensor, x_shape: &[usize], g: &Pool2dGeom) -> Tensor {
        pool::avg_backward(gy, x_shape, g)
    }
    /// PyTorch's adaptive windows: start = floor(i*H/out), end = ceil((i+1)*H/out)
    pub fn adaptive_avg_pool2d(&self, x: &Tensor, out: [usize; 2]) -> Tensor {
        pool::adaptive_avg_forward(x, out)
    }
    pub fn adaptive_avg_pool2d_backward(&self, gy: &Tensor, x_shape: &[usize]) -> Tensor {
        pool::adaptive_avg_backward(gy, x_shape)
    }
    pub fn act(&self, x: &Tensor, a: Act) -> Tensor {
        elementwise::act(x, a)
    }
    /// gradient given the forward *input* x
    pub fn act_backward(&self, x: &Tensor, gy: &Tensor, a: Act) -> Tensor {
        elementwise::act_backward(x, gy, a)
    }
    /// y[n,c,h,w] = x[n,c,h,w] * s[n,c] (squeeze-excitation); s has shape [n, c, 1, 1]
    pub fn channel_scale(&self, x: &Tensor, s: &Tensor) -> Tensor {
        elementwise::channel_scale(x, s)
    }
    /// (gx, gs)
    pub fn channel_scale_backward(&self, x: &Tensor, s: &Tensor, gy: &Tensor) -> (Tensor, Tensor) {
        elementwise::channel_scale_backward(x, s, gy)
    }
    /// y[n,c,h,w] = x[n,c,h,w] * scale[c] + shift[c]
    pub fn affine(&self, x: &Tensor, scale: &[f32], shift: &[f32]) -> Tensor {
        elementwise::affine(x, scale, shift)
    }
    pub fn affine_backward(&self, gy: &Tensor, scale: &[f32]) -> Tensor {
        elementwise::affine_backward(gy, scale)
    }
    pub fn lrn(&self, x: &Tensor, g: &LrnGeom) -> Tensor {
        elementwise::lrn(x, g)
    }
    pub fn lrn_backward(&self, x: &Tensor, gy: &Tensor, g: &LrnGeom) -> Tensor {
        elementwise::lrn_backward(x, gy, g)
    }
}

impl Backend for Cpu {
    type T = Tensor;
    type W = Arc<Tensor>;
    type Idx = Vec<u32>;

    fn name(&self) -> &'static str {
        "cpu"
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
    fn weight(&self, t: &Arc<Tensor>, _role: Role) -> Result<Arc<Tensor>> {
        Ok(t.clone())
    }
    fn conv2d(&self, x: &Tensor, w: &Arc<Tensor>, b: Option<&Arc<Tensor>>, g: &Conv2dGeom) -> Result<Tensor> {
        Ok(conv::forward(x, w, b.map(|b| &**b), g))
    }
    fn conv2d_backward_data(&self, gy: &Tensor, w: &Arc<Tensor>, x_shape: &[usize], g: &Conv2dGeom) -> Result<Tensor> {
        Ok(conv::backward_data(gy, w, x_shape, g))
    }
    fn linear(&self, x: &Tensor, w: &Arc<Tensor>, b: Option<&Arc<Tensor>>) -> Result<Tensor> {
        Ok(linear::forward(x, w, b.map(|b| &**b)))
    }
    fn linear_backward_data(&self, gy: &Tensor, w: &Arc<Tensor>) -> Result<Tensor> {
        Ok(linear::backward_data(gy, w))
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
    fn affine(&self, x: &Tensor, scale: &Arc<Tensor>, shift: &Arc<Tensor>) -> Result<Tensor> {
        Ok(elementwise::affine(x, &scale.data, &shift.data))
    }
    fn affine_backward(&self, gy: &Tensor, scale: &Arc<Tensor>) -> Result<Tensor> {
        Ok(elementwise::affine_backward(gy, &scale.data))
    }
    fn lrn(&self, x: &Tensor, g: &LrnGeom) -> Result<Tensor> {
        Ok(elementwise::lrn(x, g))
    }
    fn lrn_backward(&self, x: &Tensor, gy: &Tensor, g: &LrnGeom) -> Result<Tensor> {
        Ok(elementwise::lrn_backward(x, gy, g))
    }
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let mut y = a.clone();
        y.add_assign(b);
        Ok(y)
    }
    fn add_assign(&self, a: &mut Tensor, b: &Tensor) -> Result<()> {
        a.add_assign(b);
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
    fn full(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        Ok(Tensor::full(shape, value))
    }
    fn roll(&self, x: &Tensor, dy: isize, dx: isize) -> Result<Tensor> {
        Ok(plumbing::roll(x, dy, dx))
    }
    fn resize(&self, x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        Ok(plumbing::resize_bilinear(x, h, w))
    }
}
