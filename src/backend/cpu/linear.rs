//! Fully connected layers on the CPU: one GEMM each way. x `[n, in]`, w `[out, in]`
//! (PyTorch's layout), b `[out]`.

use super::gemm::{sgemm, Mat};
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Batches up to this many rows take the dot-product path of [`forward`]: a classifier on a few
/// images reads its weights once, row by row, instead of packing all of them (transposed) for a
/// GEMM whose tiles would be mostly empty.
const FEW_ROWS: usize = 16;

/// `Σ a[i]·b[i]` in 16 lanes (vectorised), then the lanes and the tail in order.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// y = x·wᵀ + b
pub fn forward(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let (n, fin, fout) = dims(x, w);
    debug_assert!(b.is_none_or(|b| b.numel() == fout));
    if n <= FEW_ROWS && fin > 0 {
        // yᵀ one weight row at a time (the row stays in cache for every image), in parallel
        let mut yt = vec![0.0; fout * n];
        yt.par_chunks_mut(n).zip(w.data.par_chunks(fin)).enumerate().with_min_len(16).for_each(|(o, (col, wo))| {
            for (i, v) in col.iter_mut().enumerate() {
                *v = dot(&x.data[i * fin..(i + 1) * fin], wo) + b.map_or(0.0, |b| b.data[o]);
            }
        });
        let data = (0..n * fout).map(|j| yt[(j % fout) * n + j / fout]).collect();
        return Tensor { shape: vec![n, fout], data };
    }
    let mut y = Tensor::zeros(&[n, fout]);
    sgemm(Mat::rows(&x.data, n, fin), Mat::rows(&w.data, fout, fin).t(), &mut y.data, fout, false);
    if let Some(b) = b {
        for row in y.data.chunks_mut(fout) {
            row.iter_mut().zip(&b.data).for_each(|(v, bv)| *v += bv);
        }
    }
    y
}

/// (gx = gy·w, gw = gyᵀ·x, gb = column sums of gy)
pub fn backward(x: &Tensor, w: &Tensor, gy: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (n, fin, fout) = dims(x, w);
    debug_assert_eq!(gy.shape, [n, fout]);
    let mut gx = Tensor::zeros(&x.shape);
    let mut gw = Tensor::zeros(&[fout, fin]);
    let mut gb = Tensor::zeros(&[fout]);
    let gym = Mat::rows(&gy.data, n, fout);
    sgemm(gym, Mat::rows(&w.data, fout, fin), &mut gx.data, fin, false);
    sgemm(gym.t(), Mat::rows(&x.data, n, fin), &mut gw.data, fin, false);
    for row in gy.data.chunks(fout.max(1)) {
        gb.data.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    (gx, gw, gb)
}

/// gx = gy·w only (the graph's backward needs no weight gradient), gx `[n, in]`
pub fn backward_data(gy: &Tensor, w: &Tensor) -> Tensor {
    let (fout, fin) = (w.shape[0], w.shape[1]);
    let n = gy.shape[0];
    let mut gx = Tensor::zeros(&[n, fin]);
    sgemm(Mat::rows(&gy.data, n, fout), Mat::rows(&w.data, fout, fin), &mut gx.data, fin, false);
    gx
}

/// (n, in, out); x may carry trailing unit dimensions (`[n, in, 1, 1]` after a global pool).
fn dims(x: &Tensor, w: &Tensor) -> (usize, usize, usize) {
    let (fout, fin) = (w.shape[0], w.shape[1]);
    let n = x.shape[0];
    debug_assert!(w.rank() == 2 && x.numel() == n * fin, "linear: x {:?}, w {:?}", x.shape, w.shape);
    (n, fin, fout)
}
