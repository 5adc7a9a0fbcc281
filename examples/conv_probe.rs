//! Time the CPU engine's convolutions at resnet50's layer shapes (batch from argv, default 1):
//! CPU time per call and GFLOP per CPU-second, forward and backward-data.
mod common;
use common::cpu_s;
use deepviz::backend::cpu::{Cpu, CpuWeight};
use deepviz::backend::{Backend, Conv2dGeom};
use deepviz::Tensor;
use std::sync::Arc;

fn main() {
    let batch: usize = std::env::args().nth(1).map_or(1, |s| s.parse().unwrap());
    let bwd = std::env::args().nth(2).is_some_and(|s| s == "bwd");
    // (cin, cout, k, stride, hw_in, count in resnet50)
    let convs = [
        (3, 64, 7, 2, 224, 1),
        (64, 64, 1, 1, 56, 1), (64, 64, 3, 1, 56, 3), (64, 256, 1, 1, 56, 4), (256, 64, 1, 1, 56, 2),
        (256, 128, 1, 1, 56, 1), (128, 128, 3, 2, 56, 1), (128, 512, 1, 1, 28, 4), (256, 512, 1, 2, 56, 1),
        (512, 128, 1, 1, 28, 3), (128, 128, 3, 1, 28, 3),
        (512, 256, 1, 1, 28, 1), (256, 256, 3, 2, 28, 1), (256, 1024, 1, 1, 14, 6), (512, 1024, 1, 2, 28, 1),
        (1024, 256, 1, 1, 14, 5), (256, 256, 3, 1, 14, 5),
        (1024, 512, 1, 1, 14, 1), (512, 512, 3, 2, 14, 1), (512, 2048, 1, 1, 7, 3), (1024, 2048, 1, 2, 14, 1),
        (2048, 512, 1, 1, 7, 2), (512, 512, 3, 1, 7, 2),
    ];
    let only: Option<usize> = std::env::args().nth(3).map(|s| s.parse().unwrap());
    let cpu = Cpu;
    let (mut tot_t, mut tot_f) = (0.0, 0.0);
    for (i, &(ci, co, k, s, hw, count)) in convs.iter().enumerate() {
        if only.is_some_and(|o| o != i) {
            continue;
        }
        let p = k / 2;
        let g = Conv2dGeom { stride: [s, s], pad: [p; 4], dilation: [1, 1], groups: 1 };
        let x = Tensor::new(vec![batch, ci, hw, hw], (0..batch * ci * hw * hw).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect()).unwrap();
        let w = CpuWeight::new(Arc::new(Tensor::new(vec![co, ci, k, k], (0..co * ci * k * k).map(|i| (i % 13) as f32 * 0.01 - 0.06).collect()).unwrap()));
        let b = CpuWeight::new(Arc::new(Tensor::new(vec![co], vec![0.1; co]).unwrap()));
        let y = Backend::conv2d(&cpu, &x, &w, Some(&b), &g).unwrap();
        let oh = y.shape[2];
        let flops = 2.0 * (batch * co * oh * oh * ci * k * k) as f64;
        let reps = ((3e9 / flops) as usize).clamp(2, 200);
        let t = cpu_s();
        for _ in 0..reps {
            if bwd {
                std::hint::black_box(Backend::conv2d_backward_data(&cpu, &y, &w, &x.shape, &g).unwrap());
            } else {
                std::hint::black_box(Backend::conv2d(&cpu, &x, &w, Some(&b), &g).unwrap());
            }
        }
        let dt = (cpu_s() - t) / reps as f64;
        tot_t += dt * count as f64;
        tot_f += flops * count as f64;
        println!("{ci:5}->{co:5} k{k} s{s} {hw:3}x{hw:<3} x{count}: {:7.2} ms/call  {:6.1} GFLOP/cpu-s  ({:5.1} ms total)", dt * 1e3, flops / dt / 1e9, dt * 1e3 * count as f64);
    }
    println!("all convs: {:.1} ms CPU, {:.1} GFLOP/cpu-s", tot_t * 1e3, tot_f / tot_t / 1e9);
}
