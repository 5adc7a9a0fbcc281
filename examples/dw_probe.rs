//! Time the CPU engine's depthwise convolutions at efficientnet_lite0's shapes (batch from argv,
//! default 8): CPU time per call, forward and backward-data. `DEEPVIZ_GEMM=portable` times v1.
mod common;
use common::cpu_s;
use deepviz::backend::cpu::{Cpu, CpuWeight};
use deepviz::backend::{Backend, Conv2dGeom};
use deepviz::Tensor;
use std::sync::Arc;

fn main() {
    let n: usize = std::env::args().nth(1).map_or(8, |s| s.parse().unwrap());
    // (channels, k, stride, hw_in)
    for (c, k, s, hw) in [(32, 3, 1, 112), (96, 3, 2, 112), (144, 3, 1, 56), (144, 5, 2, 56), (240, 5, 1, 28), (480, 5, 1, 14), (672, 5, 2, 14), (1152, 5, 1, 7)] {
        let pad = if s == 1 { [k / 2; 4] } else { [(k - 1) / 2, k / 2, (k - 1) / 2, k / 2] };
        let g = Conv2dGeom { stride: [s, s], pad, dilation: [1, 1], groups: c };
        let x = Tensor::new(vec![n, c, hw, hw], (0..n * c * hw * hw).map(|i| (i % 7) as f32 - 3.0).collect()).unwrap();
        let w = CpuWeight::new(Arc::new(Tensor::new(vec![c, 1, k, k], (0..c * k * k).map(|i| (i % 5) as f32 * 0.1).collect()).unwrap()));
        let y = Backend::conv2d(&Cpu, &x, &w, None, &g).unwrap();
        let reps = 10;
        let t = cpu_s();
        for _ in 0..reps {
            Backend::conv2d(&Cpu, &x, &w, None, &g).unwrap();
        }
        let f = (cpu_s() - t) / reps as f64 * 1e3;
        let t = cpu_s();
        for _ in 0..reps {
            Backend::conv2d_backward_data(&Cpu, &y, &w, &x.shape, &g).unwrap();
        }
        let b = (cpu_s() - t) / reps as f64 * 1e3;
        println!("c{c:5} k{k} s{s} {hw:3}x{hw:<3}  fwd {f:7.2} ms  bwd {b:7.2} ms");
    }
}
