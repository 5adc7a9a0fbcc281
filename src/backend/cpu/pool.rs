//! Pooling on the CPU. (stub: being written)
use crate::backend::Pool2dGeom;
use crate::tensor::Tensor;

pub fn max_forward(_x: &Tensor, _g: &Pool2dGeom) -> (Tensor, Vec<u32>) { todo!() }
pub fn max_backward(_gy: &Tensor, _argmax: &[u32], _x_shape: &[usize]) -> Tensor { todo!() }
pub fn avg_forward(_x: &Tensor, _g: &Pool2dGeom) -> Tensor { todo!() }
pub fn avg_backward(_gy: &Tensor, _x_shape: &[usize], _g: &Pool2dGeom) -> Tensor { todo!() }
pub fn adaptive_avg_forward(_x: &Tensor, _out: [usize; 2]) -> Tensor { todo!() }
pub fn adaptive_avg_backward(_gy: &Tensor, _x_shape: &[usize]) -> Tensor { todo!() }
