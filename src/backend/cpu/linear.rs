//! Fully connected layers on the CPU. (stub: being written)
use crate::tensor::Tensor;

pub fn forward(_x: &Tensor, _w: &Tensor, _b: Option<&Tensor>) -> Tensor { todo!() }
pub fn backward(_x: &Tensor, _w: &Tensor, _gy: &Tensor) -> (Tensor, Tensor, Tensor) { todo!() }
