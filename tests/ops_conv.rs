//! conv2d forward, backward-data and backward-filter against a direct f64 convolution written
//! here, and the backward passes against central differences of L = Σ r ⊙ conv(x, w, b).
//! Shapes are chosen to break careless indexing: batch 3, 7×13 images, 33 channels, stride 2
//! with odd and asymmetric padding, dilation 2, groups 3, depthwise (with and without a channel
//! multiplier), 1×1 strided, and one image large enough to be im2col'd in several bands; and
//! all of it again on the portable path (`DEEPVIZ_GEMM=portable`).

mod common;
use common::*;
use std::sync::Arc;

use deepviz::backend::cpu::{Cpu, CpuWeight};
use deepviz::backend::{Backend, Conv2dGeom};
use deepviz::Tensor;

/// Calls `f(y index, w index, x index)` for every kernel tap that reads inside the image, in
/// the order of y, then (c, ky, kx): the sums of [`conv_ref`] and its adjoint.
fn for_taps(xs: &[usize], ws: &[usize], g: &Conv2dGeom, mut f: impl FnMut(usize, usize, usize)) {
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (o, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let og = o / g.groups;
    assert_eq!(c, cg * g.groups);
    let (oh, ow) = g.out_hw(h, wd, kh, kw).unwrap();
    for ni in 0..n {
        for oc in 0..o {
            let gi = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    for ci in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.pad[0] as isize;
                                let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize - g.pad[2] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xi = ((ni * c + gi * cg + ci) * h + iy as usize) * wd + ix as usize;
                                f(((ni * o + oc) * oh + oy) * ow + ox, ((oc * cg + ci) * kh + ky) * kw + kx, xi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Direct convolution in f64: y[n,o,oy,ox] = b[o] + Σ_{c,ky,kx} w[o,c,ky,kx] x[n, g*CG+c, iy, ix].
fn conv_ref(x: &[f64], xs: &[usize], w: &[f64], ws: &[usize], b: Option<&[f64]>, g: &Conv2dGeom) -> Vec<f64> {
    let (oh, ow) = g.out_hw(xs[2], xs[3], ws[2], ws[3]).unwrap();
    let p = oh * ow;
    let mut y: Vec<f64> = (0..xs[0] * ws[0] * p).map(|i| b.map_or(0.0, |b| b[i / p % ws[0]])).collect();
    for_taps(xs, ws, g, |yi, wi, xi| y[yi] += w[wi] * x[xi]);
    y
}

/// The adjoint of [`conv_ref`] in x, in f64: gx[n, g*CG+c, iy, ix] = Σ w[o,c,ky,kx] gy[n,o,oy,ox]
/// over the taps that read (iy, ix).
fn conv_backward_ref(gy: &[f64], w: &[f64], ws: &[usize], xs: &[usize], g: &Conv2dGeom) -> Vec<f64> {
    let mut gx = vec![0.0; xs.iter().product()];
    for_taps(xs, ws, g, |yi, wi, xi| gx[xi] += w[wi] * gy[yi]);
    gx
}

struct Case {
    name: &'static str,
    x: [usize; 4],
    /// out channels, kernel h, kernel w
    o: usize,
    k: [usize; 2],
    g: Conv2dGeom,
    /// finite-difference samples per gradient
    fd: usize,
}

fn geom(stride: [usize; 2], pad: [usize; 4], dilation: [usize; 2], groups: usize) -> Conv2dGeom {
    Conv2dGeom { stride, pad, dilation, groups }
}

fn check(c: &Case) {
    let cpu = Cpu;
    let [n, ch, h, w] = c.x;
    let ws = [c.o, ch / c.g.groups, c.k[0], c.k[1]];
    let x = seeded_tensor(1, &c.x);
    let wt = seeded_tensor(2, &ws);
    let b = seeded_tensor(3, &[c.o]);
    let (oh, ow) = c.g.out_hw(h, w, c.k[0], c.k[1]).unwrap();
    let ys = [n, c.o, oh, ow];

    // forward
    let (xd, wd, bd) = (f64s(&x.data), f64s(&wt.data), f64s(&b.data));
    let want = conv_ref(&xd, &c.x, &wd, &ws, Some(&bd), &c.g);
    let y = cpu.conv2d(&x, &wt, Some(&b), &c.g);
    assert_eq!(y.shape, ys, "{}: output shape", c.name);
    assert_close(&format!("conv.{}.forward", c.name), &y.data, &f32s(&want), 1e-4, 1e-4);
    let y0 = cpu.conv2d(&x, &wt, None, &c.g);
    let want0 = conv_ref(&xd, &c.x, &wd, &ws, None, &c.g);
    assert_close(&format!("conv.{}.forward_nobias", c.name), &y0.data, &f32s(&want0), 1e-4, 1e-4);

    // the engine's path: weights prepared once (packed for the GEMM, flipped for backward-data),
    // each call twice (the second reuses what the first prepared)
    let (wp, bp) = (CpuWeight::new(Arc::new(wt.clone())), CpuWeight::new(Arc::new(b.clone())));
    let r = seeded_tensor(4, &ys);
    let want_gx = f32s(&conv_backward_ref(&f64s(&r.data), &wd, &ws, &c.x, &c.g));
    for _ in 0..2 {
        let y = Backend::conv2d(&cpu, &x, &wp, Some(&bp), &c.g).unwrap();
        assert_close(&format!("conv.{}.forward (prepared)", c.name), &y.data, &f32s(&want), 1e-4, 1e-4);
        let gx = Backend::conv2d_backward_data(&cpu, &r, &wp, &c.x, &c.g).unwrap();
        assert_eq!(gx.shape, c.x);
        assert_close(&format!("conv.{}.backward_data (prepared)", c.name), &gx.data, &want_gx, 1e-4, 1e-4);
    }

    // backward: the gradient of L = Σ r ⊙ y is the backward of gy = r
    let gx = cpu.conv2d_backward_data(&r, &wt, &c.x, &c.g);
    assert_eq!(gx.shape, c.x);
    assert_close(&format!("conv.{}.backward_data", c.name), &gx.data, &want_gx, 1e-4, 1e-4);
    let (gw, gb) = cpu.conv2d_backward_filter(&x, &r, &ws, &c.g);
    assert_eq!((gw.shape.as_slice(), gb.shape.as_slice()), (&ws[..], &[c.o][..]));
    let tol = (1e-3, 1e-3);
    fd_check(&format!("conv.{}.gx", c.name), &x.data, &gx.data,
        |xv| dot(&r.data, &conv_ref(xv, &c.x, &wd, &ws, Some(&bd), &c.g)), 1e-3, c.fd, tol.0, tol.1);
    fd_check(&format!("conv.{}.gw", c.name), &wt.data, &gw.data,
        |wv| dot(&r.data, &conv_ref(&xd, &c.x, wv, &ws, Some(&bd), &c.g)), 1e-3, c.fd, tol.0, tol.1);
    fd_check(&format!("conv.{}.gb", c.name), &b.data, &gb.data,
        |bv| dot(&r.data, &conv_ref(&xd, &c.x, &wd, &ws, Some(bv), &c.g)), 1e-3, 8, tol.0, tol.1);
}

#[test]
fn conv_33_channels_same_padding() {
    check(&Case { name: "plain", x: [3, 33, 7, 13], o: 8, k: [3, 3], g: geom([1, 1], [1, 1, 1, 1], [1, 1], 1), fd: 40 });
}

#[test]
fn conv_stride2_asymmetric_padding_to_33_channels() {
    // kernel 3x2, pad top 0 bottom 1 left 2 right 1
    check(&Case { name: "stride2_asym", x: [3, 5, 7, 13], o: 33, k: [3, 2], g: geom([2, 2], [0, 1, 2, 1], [1, 1], 1), fd: 40 });
}

#[test]
fn conv_dilation2_mixed_stride() {
    check(&Case { name: "dilated", x: [2, 4, 9, 13], o: 6, k: [3, 3], g: geom([1, 2], [2, 1, 1, 3], [2, 2], 1), fd: 40 });
}

#[test]
fn conv_groups3() {
    check(&Case { name: "groups3", x: [3, 9, 7, 13], o: 12, k: [3, 3], g: geom([2, 2], [1, 1, 1, 1], [1, 1], 3), fd: 40 });
}

#[test]
fn conv_depthwise_33_channels_tf_same() {
    // TF "SAME" at stride 2 on 7x13: the odd padding pixel goes bottom / right
    let (pt, pb) = deepviz::backend::same_padding(7, 3, 2, 1);
    let (pl, pr) = deepviz::backend::same_padding(13, 3, 2, 1);
    let g = geom([2, 2], [pt, pb, pl, pr], [1, 1], 33);
    check(&Case { name: "depthwise", x: [3, 33, 7, 13], o: 33, k: [3, 3], g, fd: 40 });
}

#[test]
fn conv_depthwise_multiplier2_dilated_5x5() {
    check(&Case { name: "depthwise_x2", x: [3, 5, 7, 13], o: 10, k: [5, 5], g: geom([1, 2], [4, 3, 4, 4], [2, 2], 5), fd: 40 });
}

#[test]
fn conv_depthwise_wide_rows_stride_and_dilation_per_axis() {
    // OW = 75: whole 64-column register blocks, then a vector, then a partial one; stride 2 in
    // x only (two column phases) with dilation 2 in y only, padding on every side
    check(&Case { name: "depthwise_wide", x: [3, 33, 9, 150], o: 33, k: [3, 5], g: geom([1, 2], [2, 1, 3, 2], [2, 1], 33), fd: 30 });
}

#[test]
fn conv_depthwise_stride3_dilated_x2() {
    // three column phases, a tap offset of 2 (dilation 2), a channel multiplier, no padding at
    // the bottom and input rows no output reads
    check(&Case { name: "depthwise_s3", x: [2, 7, 13, 41], o: 14, k: [3, 3], g: geom([2, 3], [1, 0, 2, 1], [1, 2], 7), fd: 30 });
}

#[test]
fn conv_1x1_stride2_shortcut() {
    check(&Case { name: "1x1_s2", x: [3, 6, 7, 13], o: 5, k: [1, 1], g: geom([2, 2], [0, 0, 0, 0], [1, 1], 1), fd: 24 });
}

#[test]
fn conv_stride2_wide_rows() {
    // output rows of 38 and 35 columns: runs that fill a 32-lane panel, cross its halves and
    // wrap to the next output row, at stride 2 (the AVX-512 im2col's two loads and a permute
    // per half); the stem's 7x7 with padding 3, and a dilated 3x3 whose tap offsets are even
    check(&Case { name: "s2_wide", x: [2, 3, 9, 75], o: 5, k: [3, 3], g: geom([2, 2], [1, 1, 1, 1], [1, 1], 1), fd: 24 });
    check(&Case { name: "s2_wide_stem", x: [1, 3, 11, 69], o: 4, k: [7, 7], g: geom([2, 2], [3, 3, 3, 3], [1, 1], 1), fd: 24 });
    check(&Case { name: "s2_wide_dilated", x: [1, 2, 7, 77], o: 3, k: [3, 3], g: geom([2, 2], [2, 2, 2, 1], [2, 2], 1), fd: 24 });
}

#[test]
fn conv_large_image_is_banded() {
    // K*P = 64*9*(50*50) > 2^20 floats, so im2col runs in several bands of output rows
    check(&Case { name: "banded", x: [1, 64, 50, 50], o: 4, k: [3, 3], g: geom([1, 1], [1, 1, 1, 1], [1, 1], 1), fd: 6 });
}

#[test]
fn conv_stride1_asymmetric_dilated_groups() {
    // stride 1: backward-data runs as a forward convolution with flipped weights (pads 2,4 / 0,0)
    check(&Case { name: "s1_asym_dil_g2", x: [2, 6, 9, 11], o: 4, k: [3, 2], g: geom([1, 1], [2, 0, 1, 1], [2, 1], 2), fd: 30 });
}

#[test]
fn conv_1x1_pointwise_and_grouped() {
    // stride 1, no padding: the input is the column matrix (no im2col)
    check(&Case { name: "pointwise", x: [3, 20, 5, 7], o: 17, k: [1, 1], g: geom([1, 1], [0, 0, 0, 0], [1, 1], 1), fd: 24 });
    check(&Case { name: "pointwise_g2", x: [2, 8, 5, 7], o: 6, k: [1, 1], g: geom([1, 1], [0, 0, 0, 0], [1, 1], 2), fd: 24 });
}

#[test]
fn conv_padding_past_the_kernel() {
    // a 1x1 kernel with padding 1: backward-data cannot be a flipped forward conv (col2im path)
    check(&Case { name: "1x1_pad1", x: [2, 3, 4, 5], o: 4, k: [1, 1], g: geom([1, 1], [1, 0, 1, 0], [1, 1], 1), fd: 24 });
}

#[test]
fn conv_wide_image_many_channels() {
    // K = 40*9 > one packed depth block (256), P = 40*40 > one packed width block (1024)
    check(&Case { name: "wide", x: [1, 40, 40, 40], o: 13, k: [3, 3], g: geom([1, 1], [1, 1, 1, 1], [1, 1], 1), fd: 6 });
}

#[test]
fn conv_is_deterministic() {
    // backward-filter sums the batch in a fixed order: the same inputs give the same bits
    let cpu = Cpu;
    let g = geom([1, 1], [1, 1, 1, 1], [1, 1], 1);
    let x = seeded_tensor(7, &[5, 16, 9, 11]);
    let gy = seeded_tensor(8, &[5, 8, 9, 11]);
    let a = cpu.conv2d_backward_filter(&x, &gy, &[8, 16, 3, 3], &g);
    let b = cpu.conv2d_backward_filter(&x, &gy, &[8, 16, 3, 3], &g);
    assert_eq!(a, b);
    let _: &Tensor = &a.0;
}

/// Every test above again with `DEEPVIZ_GEMM=portable` (the portable GEMM and depthwise loops
/// instead of the AVX-512 ones), in a child process: the switch is read once per process. Where
/// the variable is already set, this process runs that path and there is nothing to add.
#[test]
fn conv_portable_path() {
    if std::env::var_os("DEEPVIZ_GEMM").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--skip", "conv_portable_path", "--test-threads", "2"])
        .env("DEEPVIZ_GEMM", "portable")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && log.contains("test result: ok"), "the portable path failed:\n{log}");
}

/// Not a correctness test: `cargo test --release --test ops_conv -- --ignored --nocapture`
/// prints the engine's conv rates at ResNet-50-like shapes (after checking one output value).
#[test]
#[ignore]
fn conv_throughput() {
    let cpu = Cpu;
    let cases = [
        ("resnet layer1 3x3, batch 1", [1, 64, 56, 56], [64, 64, 3, 3], geom([1, 1], [1, 1, 1, 1], [1, 1], 1)),
        ("resnet layer3 3x3, batch 4", [4, 256, 14, 14], [256, 256, 3, 3], geom([1, 1], [1, 1, 1, 1], [1, 1], 1)),
        ("mobilenet depthwise 3x3", [1, 144, 56, 56], [144, 1, 3, 3], geom([1, 1], [1, 1, 1, 1], [1, 1], 144)),
    ];
    for (what, xs, ws, g) in cases {
        let x = seeded_tensor(1, &xs);
        let w = seeded_tensor(2, &ws);
        let y = cpu.conv2d(&x, &w, None, &g);
        let want = conv_ref(&f64s(&x.data[..xs[1] * xs[2] * xs[3]]), &[1, xs[1], xs[2], xs[3]], &f64s(&w.data), &ws, None, &g);
        assert_close(what, &y.data[..want.len()], &f32s(&want), 1e-3, 1e-3);
        let gy = seeded_tensor(3, &y.shape);
        let macs = (y.numel() * ws[1] * ws[2] * ws[3]) as f64;
        let run = |pass: usize| match pass {
            0 => drop(cpu.conv2d(&x, &w, None, &g)),
            1 => drop(cpu.conv2d_backward_data(&gy, &w, &xs, &g)),
            _ => drop(cpu.conv2d_backward_filter(&x, &gy, &ws, &g)),
        };
        for (pass, name) in ["forward", "backward-data", "backward-filter"].into_iter().enumerate() {
            let f = || run(pass);
            f();
            let reps = 10;
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!("{what:>28} {name:>15}: {:8.2} ms  {:6.1} GFLOP/s", s * 1e3, 2.0 * macs / s / 1e9);
        }
    }
}
