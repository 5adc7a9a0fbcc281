//! Convolution on the CPU: im2col + GEMM. (stub: being written)
use crate::backend::Conv2dGeom;
use crate::tensor::Tensor;

pub fn forward(_x: &Tensor, _w: &Tensor, _b: Option<&Tensor>, _g: &Conv2dGeom) -> Tensor { todo!() }
pub fn backward_data(_gy: &Tensor, _w: &Tensor, _x_shape: &[usize], _g: &Conv2dGeom) -> Tensor { todo!() }
pub fn backward_filter(_x: &Tensor, _gy: &Tensor, _w_shape: &[usize], _g: &Conv2dGeom) -> (Tensor, Tensor) { todo!() }
