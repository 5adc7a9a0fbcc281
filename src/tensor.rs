//! A dense, contiguous, row-major f32 tensor on the host. At the API boundary and in the CPU
//! engine activations are NCHW; weights keep PyTorch's layouts (conv OIHW, linear [out, in]).

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
/// A host tensor: f32 values, row-major (NCHW for images), and its shape.
pub struct Tensor {
    /// the dimensions, outermost first
    pub shape: Vec<usize>,
    /// the values, row-major; as many as the shape's product
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `data` in `shape`, or an error when their sizes differ.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape("tensor data", n, data.len()));
        }
        Ok(Tensor { shape, data })
    }
    /// Zeros in `shape`.
    pub fn zeros(shape: &[usize]) -> Self {
        Tensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }
    /// `v` everywhere in `shape`.
    pub fn full(shape: &[usize], v: f32) -> Self {
        Tensor { shape: shape.to_vec(), data: vec![v; shape.iter().product()] }
    }
    /// The number of values.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// The shape as (N, C, H, W); panics only on a programming error (not rank 4).
    pub fn nchw(&self) -> (usize, usize, usize, usize) {
        assert_eq!(self.shape.len(), 4, "expected an NCHW tensor, found shape {:?}", self.shape);
        (self.shape[0], self.shape[1], self.shape[2], self.shape[3])
    }
    /// The same values in `shape`, or an error when its product differs.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != self.data.len() {
            return Err(Error::shape("reshape", shape, &self.shape));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }
    /// Item `i` of the leading (batch) dimension, as a slice.
    pub fn item(&self, i: usize) -> &[f32] {
        let per = self.data.len() / self.shape[0];
        &self.data[i * per..(i + 1) * per]
    }
    /// Item `i` of the leading (batch) dimension, as a mutable slice.
    pub fn item_mut(&mut self, i: usize) -> &mut [f32] {
        let per = self.data.len() / self.shape[0];
        &mut self.data[i * per..(i + 1) * per]
    }
    /// Add `other` elementwise into `self` (same shape).
    pub fn add_assign(&mut self, other: &Tensor) {
        debug_assert_eq!(self.shape, other.shape);
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            *a += b;
        }
    }
}
