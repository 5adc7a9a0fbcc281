//! The CPU reference engine: NCHW f32, im2col + GEMM for convolution and linear layers,
//! rayon over the batch / channels. Simple enough to be the reference every GPU kernel is
//! tested against, fast enough to be a usable fallback.
//!
//! - `conv.rs`: conv2d forward, backward-data, backward-filter (groups, dilation, asymmetric pad)
//! - `pool.rs`: max (argmax kept), average, adaptive-average pooling, forward and backward
//! - `linear.rs`: fully connected forward and backward
//! - `elementwise.rs`: activations, channel scale, affine, LRN
//! - `gemm.rs`: the one matrix product everything above uses (public so `benches/gemm.rs` can time it)

mod conv;
mod elementwise;
pub mod gemm;
mod linear;
mod pool;

use super::{Act, Backend, Conv2dGeom, LrnGeom, Pool2dGeom};
use crate::tensor::Tensor;

/// The CPU engine. Stateless; threads come from rayon's global pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn conv2d(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &Conv2dGeom) -> Tensor {
        conv::forward(x, w, b, g)
    }
    fn conv2d_backward_data(&self, gy: &Tensor, w: &Tensor, x_shape: &[usize], g: &Conv2dGeom) -> Tensor {
        conv::backward_data(gy, w, x_shape, g)
    }
    fn conv2d_backward_filter(&self, x: &Tensor, gy: &Tensor, w_shape: &[usize], g: &Conv2dGeom) -> (Tensor, Tensor) {
        conv::backward_filter(x, gy, w_shape, g)
    }
    fn linear(&self, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
        linear::forward(x, w, b)
    }
    fn linear_backward(&self, x: &Tensor, w: &Tensor, gy: &Tensor) -> (Tensor, Tensor, Tensor) {
        linear::backward(x, w, gy)
    }
    fn max_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> (Tensor, Vec<u32>) {
        pool::max_forward(x, g)
    }
    fn max_pool2d_backward(&self, gy: &Tensor, argmax: &[u32], x_shape: &[usize]) -> Tensor {
        pool::max_backward(gy, argmax, x_shape)
    }
    fn avg_pool2d(&self, x: &Tensor, g: &Pool2dGeom) -> Tensor {
        pool::avg_forward(x, g)
    }
    fn avg_pool2d_backward(&self, gy: &Tensor, x_shape: &[usize], g: &Pool2dGeom) -> Tensor {
        pool::avg_backward(gy, x_shape, g)
    }
    fn adaptive_avg_pool2d(&self, x: &Tensor, out: [usize; 2]) -> Tensor {
        pool::adaptive_avg_forward(x, out)
    }
    fn adaptive_avg_pool2d_backward(&self, gy: &Tensor, x_shape: &[usize]) -> Tensor {
        pool::adaptive_avg_backward(gy, x_shape)
    }
    fn act(&self, x: &Tensor, a: Act) -> Tensor {
        elementwise::act(x, a)
    }
    fn act_backward(&self, x: &Tensor, gy: &Tensor, a: Act) -> Tensor {
        elementwise::act_backward(x, gy, a)
    }
    fn channel_scale(&self, x: &Tensor, s: &Tensor) -> Tensor {
        elementwise::channel_scale(x, s)
    }
    fn channel_scale_backward(&self, x: &Tensor, s: &Tensor, gy: &Tensor) -> (Tensor, Tensor) {
        elementwise::channel_scale_backward(x, s, gy)
    }
    fn affine(&self, x: &Tensor, scale: &[f32], shift: &[f32]) -> Tensor {
        elementwise::affine(x, scale, shift)
    }
    fn affine_backward(&self, gy: &Tensor, scale: &[f32]) -> Tensor {
        elementwise::affine_backward(gy, scale)
    }
    fn lrn(&self, x: &Tensor, g: &LrnGeom) -> Tensor {
        elementwise::lrn(x, g)
    }
    fn lrn_backward(&self, x: &Tensor, gy: &Tensor, g: &LrnGeom) -> Tensor {
        elementwise::lrn_backward(x, gy, g)
    }
}
