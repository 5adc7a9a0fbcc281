//! Elementwise ops on the CPU. (stub: being written)
use crate::backend::{Act, LrnGeom};
use crate::tensor::Tensor;

pub fn act(_x: &Tensor, _a: Act) -> Tensor { todo!() }
pub fn act_backward(_x: &Tensor, _gy: &Tensor, _a: Act) -> Tensor { todo!() }
pub fn channel_scale(_x: &Tensor, _s: &Tensor) -> Tensor { todo!() }
pub fn channel_scale_backward(_x: &Tensor, _s: &Tensor, _gy: &Tensor) -> (Tensor, Tensor) { todo!() }
pub fn affine(_x: &Tensor, _scale: &[f32], _shift: &[f32]) -> Tensor { todo!() }
pub fn affine_backward(_gy: &Tensor, _scale: &[f32]) -> Tensor { todo!() }
pub fn lrn(_x: &Tensor, _g: &LrnGeom) -> Tensor { todo!() }
pub fn lrn_backward(_x: &Tensor, _gy: &Tensor, _g: &LrnGeom) -> Tensor { todo!() }
