//! The CUDA kernels (`kernels/*.cu`) through their launch code (`deepviz::backend::cuda`), on
//! every available device (the CPU emulation always; the real GPU when there is one), against
//! f64 references written here in NCHW, PyTorch's semantics, mirroring `backend::cpu`. The
//! references are kept local so this file does not depend on the `Backend` trait's shape.
//! Shapes break careless indexing: batch 3, 7x13 planes, 33 channels, stride 2, odd padding,
//! pools whose kernel differs from their stride, ceil_mode.

mod common;

use common::{assert_close, assert_close_each, rel_rms, seeded};
use deepviz::backend::cuda::conv::{BackwardData, SplitK, TcStaging};
use deepviz::backend::cuda::{self, conv::ConvShape, pool::Nhwc};
use deepviz::backend::{Act, Conv2dGeom, LrnGeom, Pool2dGeom, Precision};
use deepviz::device::{Device, DevicePtr};

use common::devices;

fn put(dev: &dyn Device, v: &[f32]) -> DevicePtr {
    let p = dev.alloc(v.len().max(1) * 4).unwrap();
    dev.upload(p, bytemuck::cast_slice(v)).unwrap();
    p
}
fn put_u32(dev: &dyn Device, v: &[u32]) -> DevicePtr {
    let p = dev.alloc(v.len().max(1) * 4).unwrap();
    dev.upload(p, bytemuck::cast_slice(v)).unwrap();
    p
}
fn out(dev: &dyn Device, n: usize) -> DevicePtr {
    dev.alloc(n.max(1) * 4).unwrap()
}
fn get(dev: &dyn Device, p: DevicePtr, n: usize) -> Vec<f32> {
    dev.synchronize().unwrap();
    let mut v = vec![0f32; n];
    dev.download(p, bytemuck::cast_slice_mut(&mut v)).unwrap();
    v
}
fn get_u32(dev: &dyn Device, p: DevicePtr, n: usize) -> Vec<u32> {
    dev.synchronize().unwrap();
    let mut v = vec![0u32; n];
    dev.download(p, bytemuck::cast_slice_mut(&mut v)).unwrap();
    v
}

/// NCHW -> NHWC on the host.
fn to_nhwc(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                y[(i * hw + p) * c + ch] = x[(i * c + ch) * hw + p];
            }
        }
    }
    y
}
fn to_nchw(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                y[(i * c + ch) * hw + p] = x[(i * hw + p) * c + ch];
            }
        }
    }
    y
}
fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

const ACTS: [Act; 5] = [Act::Relu, Act::Relu6, Act::Silu, Act::Sigmoid, Act::HardSwish];

fn act_ref(x: f64, a: Act) -> f64 {
    let s = 1.0 / (1.0 + (-x).exp());
    match a {
        Act::Relu => x.max(0.0),
        Act::Relu6 => x.clamp(0.0, 6.0),
        Act::Silu => x * s,
        Act::Sigmoid => s,
        Act::HardSwish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
    }
}
fn act_grad_ref(x: f64, a: Act) -> f64 {
    let s = 1.0 / (1.0 + (-x).exp());
    match a {
        Act::Relu => (x > 0.0) as u8 as f64,
        Act::Relu6 => (x > 0.0 && x < 6.0) as u8 as f64,
        Act::Silu => s * (1.0 + x * (1.0 - s)),
        Act::Sigmoid => s * (1.0 - s),
        Act::HardSwish => {
            if x < -3.0 {
                0.0
            } else if x <= 3.0 {
                x / 3.0 + 0.5
            } else {
                1.0
            }
        }
    }
}

#[test]
fn every_kernel_the_launch_code_uses_exists() {
    for dev in devices() {
        let missing: Vec<String> = cuda::kernel_names().into_iter().filter(|k| !dev.has_kernel(k)).collect();
        assert!(missing.is_empty(), "{}: missing kernels {missing:?}", dev.name());
    }
}

#[test]
fn activations_forward_and_backward() {
    let n = 3 * 33 * 7 * 13;
    // [-8, 8): both kinks of relu6 and hardswish, with exact 0, 3 and 6 included
    let mut x: Vec<f32> = seeded(1, n).iter().map(|v| v * 8.0).collect();
    x[..5].copy_from_slice(&[0.0, 6.0, -3.0, 3.0, -0.0]);
    let gy = seeded(2, n);
    for dev in devices() {
        let d = dev.as_ref();
        let (xp, gyp, y) = (put(d, &x), put(d, &gy), out(d, n));
        for a in ACTS {
            cuda::elementwise::act(d, a, xp, y, n).unwrap();
            let want: Vec<f64> = x.iter().map(|&v| act_ref(v as f64, a)).collect();
            assert_close(&format!("{}.act_{a:?}", d.name()), &get(d, y, n), &f32s(&want), 1e-6, 1e-5);
            cuda::elementwise::act_backward(d, a, xp, gyp, y, n).unwrap();
            let want: Vec<f64> = x.iter().zip(&gy).map(|(&v, &g)| g as f64 * act_grad_ref(v as f64, a)).collect();
            assert_close(&format!("{}.act_bwd_{a:?}", d.name()), &get(d, y, n), &f32s(&want), 1e-6, 1e-5);
        }
    }
}

#[test]
fn add_affine_channel_scale() {
    let (b, hw, c) = (3, 7 * 13, 33);
    let n = b * hw * c;
    let (x, x2, gy) = (seeded(3, n), seeded(4, n), seeded(5, n));
    let (scale, shift, s) = (seeded(6, c), seeded(7, c), seeded(8, b * c));
    for dev in devices() {
        let d = dev.as_ref();
        let name = d.name().to_string();
        let (xp, x2p, gyp, y) = (put(d, &x), put(d, &x2), put(d, &gy), out(d, n));
        let (scp, shp, sp) = (put(d, &scale), put(d, &shift), put(d, &s));
        cuda::elementwise::add(d, xp, x2p, y, n).unwrap();
        let want: Vec<f32> = x.iter().zip(&x2).map(|(a, b)| a + b).collect();
        assert_close(&format!("{name}.add"), &get(d, y, n), &want, 0.0, 0.0);

        cuda::elementwise::affine(d, xp, scp, shp, y, n, c).unwrap();
        let want: Vec<f64> = (0..n).map(|i| x[i] as f64 * scale[i % c] as f64 + shift[i % c] as f64).collect();
        assert_close(&format!("{name}.affine"), &get(d, y, n), &f32s(&want), 1e-6, 1e-6);
        cuda::elementwise::affine_backward(d, gyp, scp, y, n, c).unwrap();
        let want: Vec<f32> = (0..n).map(|i| gy[i] * scale[i % c]).collect();
        assert_close(&format!("{name}.affine_bwd"), &get(d, y, n), &want, 0.0, 0.0);

        cuda::elementwise::channel_scale(d, xp, sp, y, b, hw, c).unwrap();
        let want: Vec<f32> = (0..n).map(|i| x[i] * s[i / (hw * c) * c + i % c]).collect();
        assert_close(&format!("{name}.channel_scale"), &get(d, y, n), &want, 0.0, 0.0);
        let gs = out(d, b * c);
        cuda::elementwise::channel_scale_backward_scale(d, xp, gyp, gs, b, hw, c).unwrap();
        let mut want = vec![0f64; b * c];
        for i in 0..n {
            want[i / (hw * c) * c + i % c] += gy[i] as f64 * x[i] as f64;
        }
        assert_close(&format!("{name}.channel_scale_bwd_scale"), &get(d, gs, b * c), &f32s(&want), 1e-5, 1e-5);
    }
}

#[test]
fn layout_conversions() {
    let (b, c, hw) = (3, 33, 7 * 13);
    let x = seeded(9, b * c * hw);
    for dev in devices() {
        let d = dev.as_ref();
        let (xp, y, z) = (put(d, &x), out(d, x.len()), out(d, x.len()));
        cuda::elementwise::nchw_to_nhwc(d, xp, y, b, c, hw).unwrap();
        assert_close(&format!("{}.nchw_to_nhwc", d.name()), &get(d, y, x.len()), &to_nhwc(&x, b, c, hw), 0.0, 0.0);
        cuda::elementwise::nhwc_to_nchw(d, y, z, b, c, hw).unwrap();
        assert_close(&format!("{}.nhwc_to_nchw", d.name()), &get(d, z, x.len()), &x, 0.0, 0.0);
    }
}

// ---- pooling --------------------------------------------------------------------------------

/// `backend::cpu::pool`'s window: clipped `[lo, hi)` and the divisor length on the padded input.
fn window(o: usize, k: usize, s: usize, p: usize, input: usize) -> (usize, usize, usize) {
    let start = (o * s) as isize - p as isize;
    let end_padded = (start + k as isize).min((input + p) as isize);
    let lo = start.max(0) as usize;
    let hi = (end_padded.max(0) as usize).min(input);
    (lo, hi.max(lo), (end_padded - start) as usize)
}

fn pool_geoms() -> Vec<Pool2dGeom> {
    let g = |k: [usize; 2], s: [usize; 2], p: [usize; 2], ceil_mode, count_include_pad| Pool2dGeom { kernel: k, stride: s, pad: p, ceil_mode, count_include_pad };
    vec![
        g([3, 3], [2, 2], [1, 1], true, true),
        g([3, 2], [2, 3], [1, 0], true, false),
        g([2, 2], [2, 2], [0, 0], false, true),
        g([3, 3], [1, 2], [0, 1], false, false),
    ]
}

#[test]
fn max_pool_forward_backward_with_ties() {
    let (n, c, h, w) = (3, 33, 7, 13);
    // few distinct values: many ties, which must go to the first in row-major window order
    let x: Vec<f32> = seeded(10, n * c * h * w).iter().map(|v| (v * 2.0).round()).collect();
    for g in pool_geoms() {
        let (oh, ow) = g.out_hw(h, w).unwrap();
        let (mut want, mut want_arg) = (vec![0f32; n * c * oh * ow], vec![0u32; n * c * oh * ow]);
        for pl in 0..n * c {
            for oy in 0..oh {
                let (y0, y1, _) = window(oy, g.kernel[0], g.stride[0], g.pad[0], h);
                for ox in 0..ow {
                    let (x0, x1, _) = window(ox, g.kernel[1], g.stride[1], g.pad[1], w);
                    let mut best = (f32::NEG_INFINITY, y0 * w + x0);
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            let v = x[pl * h * w + iy * w + ix];
                            if v > best.0 {
                                best = (v, iy * w + ix);
                            }
                        }
                    }
                    want[pl * oh * ow + oy * ow + ox] = best.0;
                    want_arg[pl * oh * ow + oy * ow + ox] = best.1 as u32;
                }
            }
        }
        let gy = seeded(11, want.len());
        let mut want_gx = vec![0f64; x.len()];
        for (i, (&a, &gv)) in want_arg.iter().zip(&gy).enumerate() {
            want_gx[i / (oh * ow) * h * w + a as usize] += gv as f64;
        }
        for dev in devices() {
            let d = dev.as_ref();
            let what = format!("{}.max_pool{:?}", d.name(), g);
            let dims = Nhwc { n, h, w, c };
            let (xp, y, arg, gx) = (put(d, &to_nhwc(&x, n, c, h * w)), out(d, want.len()), out(d, want.len()), out(d, x.len()));
            cuda::pool::max_pool2d(d, xp, dims, &g, y, arg).unwrap();
            assert_close(&what, &to_nchw(&get(d, y, want.len()), n, c, oh * ow), &want, 0.0, 0.0);
            let got_arg = to_nchw(&get_u32(d, arg, want.len()).iter().map(|&a| a as f32).collect::<Vec<_>>(), n, c, oh * ow);
            assert_close(&format!("{what}.argmax"), &got_arg, &want_arg.iter().map(|&a| a as f32).collect::<Vec<_>>(), 0.0, 0.0);
            let gyp = put(d, &to_nhwc(&gy, n, c, oh * ow));
            let argp = put_u32(d, &get_u32(d, arg, want.len()));
            cuda::pool::max_pool2d_backward(d, gyp, argp, dims, &g, gx).unwrap();
            assert_close(&format!("{what}.bwd"), &to_nchw(&get(d, gx, x.len()), n, c, h * w), &f32s(&want_gx), 1e-6, 1e-6);
        }
    }
}

#[test]
fn avg_pool_forward_backward() {
    let (n, c, h, w) = (3, 33, 7, 13);
    let x = seeded(12, n * c * h * w);
    for g in pool_geoms() {
        let (oh, ow) = g.out_hw(h, w).unwrap();
        let gy = seeded(13, n * c * oh * ow);
        let (mut want, mut want_gx) = (vec![0f64; gy.len()], vec![0f64; x.len()]);
        for pl in 0..n * c {
            for oy in 0..oh {
                let (y0, y1, ph) = window(oy, g.kernel[0], g.stride[0], g.pad[0], h);
                for ox in 0..ow {
                    let (x0, x1, pw) = window(ox, g.kernel[1], g.stride[1], g.pad[1], w);
                    let div = if g.count_include_pad { ph * pw } else { (y1 - y0) * (x1 - x0) };
                    if y0 >= y1 || x0 >= x1 {
                        continue;
                    }
                    let o = pl * oh * ow + oy * ow + ox;
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            want[o] += x[pl * h * w + iy * w + ix] as f64 / div as f64;
                            want_gx[pl * h * w + iy * w + ix] += gy[o] as f64 / div as f64;
                        }
                    }
                }
            }
        }
        for dev in devices() {
            let d = dev.as_ref();
            let what = format!("{}.avg_pool{:?}", d.name(), g);
            let dims = Nhwc { n, h, w, c };
            let (xp, y, gyp, gx) = (put(d, &to_nhwc(&x, n, c, h * w)), out(d, gy.len()), put(d, &to_nhwc(&gy, n, c, oh * ow)), out(d, x.len()));
            cuda::pool::avg_pool2d(d, xp, dims, &g, y).unwrap();
            assert_close(&what, &to_nchw(&get(d, y, gy.len()), n, c, oh * ow), &f32s(&want), 1e-6, 1e-5);
            cuda::pool::avg_pool2d_backward(d, gyp, dims, &g, gx).unwrap();
            assert_close(&format!("{what}.bwd"), &to_nchw(&get(d, gx, x.len()), n, c, h * w), &f32s(&want_gx), 1e-6, 1e-5);
        }
    }
}

#[test]
fn adaptive_avg_pool_forward_backward() {
    let (n, c, h, w) = (3, 33, 7, 13);
    let x = seeded(14, n * c * h * w);
    for outhw in [[1, 1], [3, 5], [9, 14], [7, 13]] {
        let [oh, ow] = outhw;
        let gy = seeded(15, n * c * oh * ow);
        let (mut want, mut want_gx) = (vec![0f64; gy.len()], vec![0f64; x.len()]);
        let win = |o: usize, out: usize, input: usize| (o * input / out, ((o + 1) * input).div_ceil(out));
        for pl in 0..n * c {
            for oy in 0..oh {
                let (y0, y1) = win(oy, oh, h);
                for ox in 0..ow {
                    let (x0, x1) = win(ox, ow, w);
                    let div = ((y1 - y0) * (x1 - x0)) as f64;
                    let o = pl * oh * ow + oy * ow + ox;
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            want[o] += x[pl * h * w + iy * w + ix] as f64 / div;
                            want_gx[pl * h * w + iy * w + ix] += gy[o] as f64 / div;
                        }
                    }
                }
            }
        }
        for dev in devices() {
            let d = dev.as_ref();
            let what = format!("{}.adaptive_avg_pool{outhw:?}", d.name());
            let dims = Nhwc { n, h, w, c };
            let (xp, y, gyp, gx) = (put(d, &to_nhwc(&x, n, c, h * w)), out(d, gy.len()), put(d, &to_nhwc(&gy, n, c, oh * ow)), out(d, x.len()));
            cuda::pool::adaptive_avg_pool2d(d, xp, dims, outhw, y).unwrap();
            assert_close(&what, &to_nchw(&get(d, y, gy.len()), n, c, oh * ow), &f32s(&want), 1e-6, 1e-5);
            cuda::pool::adaptive_avg_pool2d_backward(d, gyp, dims, outhw, gx).unwrap();
            assert_close(&format!("{what}.bwd"), &to_nchw(&get(d, gx, x.len()), n, c, h * w), &f32s(&want_gx), 1e-6, 1e-5);
        }
    }
}

// ---- reductions, linear ---------------------------------------------------------------------

#[test]
fn reductions_and_softmax() {
    let (b, hw, c) = (3, 7 * 13, 33);
    let x = seeded(16, b * hw * c);
    let (rows, cols) = (3, 1001);
    let logits: Vec<f32> = seeded(17, rows * cols).iter().map(|v| v * 20.0).collect();
    for dev in devices() {
        let d = dev.as_ref();
        let name = d.name().to_string();
        let (xp, y) = (put(d, &x), out(d, b * hw * c));
        cuda::reduce::spatial_mean(d, xp, y, b, hw, c).unwrap();
        let mut want = vec![0f64; b * c];
        for i in 0..x.len() {
            want[i / (hw * c) * c + i % c] += x[i] as f64 / hw as f64;
        }
        assert_close(&format!("{name}.spatial_mean"), &get(d, y, b * c), &f32s(&want), 1e-6, 1e-5);
        cuda::reduce::channel_sum(d, xp, y, 1, b * hw, c, 1.0).unwrap();
        let mut want = vec![0f64; c];
        x.iter().enumerate().for_each(|(i, &v)| want[i % c] += v as f64);
        assert_close(&format!("{name}.channel_sum"), &get(d, y, c), &f32s(&want), 1e-5, 1e-5);

        let (lp, sp) = (put(d, &logits), out(d, rows * cols));
        cuda::reduce::softmax(d, lp, sp, rows, cols).unwrap();
        let mut want = Vec::new();
        for r in logits.chunks(cols) {
            let m = r.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
            want.extend(r.iter().map(|&v| ((v as f64 - m).exp() / s) as f32));
        }
        assert_close(&format!("{name}.softmax"), &get(d, sp, rows * cols), &want, 1e-7, 1e-5);
    }
}

/// Host top-k: NaN first, then larger values, ties to the lower index.
fn topk_ref(row: &[f32], k: usize) -> Vec<(f32, i32)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| {
        let (va, vb) = (row[a], row[b]);
        vb.is_nan().cmp(&va.is_nan()).then(vb.partial_cmp(&va).unwrap_or(std::cmp::Ordering::Equal)).then(a.cmp(&b))
    });
    idx[..k].iter().map(|&i| (row[i], i as i32)).collect()
}

#[test]
fn topk_descending_ties_to_lower_index() {
    let rows = 3;
    // (cols, k, values): coarse levels give many ties, including across the top k
    let mut tied: Vec<f32> = seeded(70, rows * 1000).iter().map(|v| (v * 3.0).round()).collect();
    tied[1000 + 417] = f32::NAN; // row 1: a NaN ranks first, as in torch.topk
    let distinct: Vec<f32> = seeded(71, rows * 71).iter().map(|v| v * 20.0).collect();
    let cases = [(1000, 5, tied.clone()), (1000, 64, tied), (71, 64, distinct.clone()), (71, 1, distinct)];
    for dev in devices() {
        let d = dev.as_ref();
        for (cols, k, x) in &cases {
            let (cols, k) = (*cols, *k);
            let (xp, vp, ip) = (put(d, x), out(d, rows * k), out(d, rows * k));
            cuda::reduce::topk(d, xp, vp, ip, rows, cols, k).unwrap();
            let (got_v, got_i) = (get(d, vp, rows * k), get_u32(d, ip, rows * k));
            let want: Vec<(f32, i32)> = x.chunks(cols).flat_map(|r| topk_ref(r, k)).collect();
            let got: Vec<(f32, i32)> = got_v.iter().zip(&got_i).map(|(&v, &i)| (v, i as i32)).collect();
            let same = |a: &(f32, i32), b: &(f32, i32)| a.1 == b.1 && (a.0 == b.0 || (a.0.is_nan() && b.0.is_nan()));
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(same(g, w), "{}.topk cols {cols} k {k}: row {} rank {}: got {g:?}, expected {w:?}", d.name(), j / k, j % k);
            }
        }
        let (xp, vp, ip) = (put(d, &[1.0; 12]), out(d, 80), out(d, 80));
        for (cols, k) in [(4, 5), (4, 0), (100, 65)] {
            assert!(cuda::reduce::topk(d, xp, vp, ip, 3, cols, k).is_err(), "topk cols {cols} k {k} must be refused");
        }
    }
}

#[test]
fn linear_forward_and_backward() {
    // 1, 3 and 8 rows take the few-rows kernels (linear::ROWS_MAX), 11 the tiled GEMM
    for (n, fin, fout) in [(1, 37, 33), (3, 37, 33), (8, 70, 41), (11, 37, 33)] {
        linear_case(n, fin, fout);
    }
    assert_eq!(cuda::linear::ROWS_MAX, 8);
}

fn linear_case(n: usize, fin: usize, fout: usize) {
    let (x, w, b, gy) = (seeded(18, n * fin), seeded(19, fout * fin), seeded(20, fout), seeded(21, n * fout));
    let mut want_y = vec![0f64; n * fout];
    let mut want_gx = vec![0f64; n * fin];
    let mut want_gw = vec![0f64; fout * fin];
    for i in 0..n {
        for o in 0..fout {
            want_y[i * fout + o] = b[o] as f64;
            for k in 0..fin {
                want_y[i * fout + o] += x[i * fin + k] as f64 * w[o * fin + k] as f64;
                want_gx[i * fin + k] += gy[i * fout + o] as f64 * w[o * fin + k] as f64;
                want_gw[o * fin + k] += gy[i * fout + o] as f64 * x[i * fin + k] as f64;
            }
        }
    }
    for dev in devices() {
        let d = dev.as_ref();
        let name = d.name().to_string();
        let (xp, wp, bp, gyp) = (put(d, &x), put(d, &w), put(d, &b), put(d, &gy));
        let (y, gx, gw) = (out(d, n * fout), out(d, n * fin), out(d, fout * fin));
        cuda::linear::forward(d, xp, wp, Some(bp), y, n, fin, fout).unwrap();
        assert_close(&format!("{name}.linear.n{n}"), &get(d, y, n * fout), &f32s(&want_y), 1e-5, 1e-5);
        cuda::linear::backward_data(d, gyp, wp, gx, n, fin, fout).unwrap();
        assert_close(&format!("{name}.linear_bwd_data.n{n}"), &get(d, gx, n * fin), &f32s(&want_gx), 1e-5, 1e-5);
        cuda::linear::backward_weight(d, xp, gyp, gw, n, fin, fout).unwrap();
        assert_close(&format!("{name}.linear_bwd_weight"), &get(d, gw, fout * fin), &f32s(&want_gw), 1e-5, 1e-5);
    }
}

// ---- convolution ----------------------------------------------------------------------------

/// f64 direct convolution, NCHW / OIHW: (y before bias and act, gx, gw) for seeds gy.
#[allow(clippy::type_complexity)]
fn conv_ref(x: &[f32], w: &[f32], gy: &[f32], s: &ConvShape, g: &Conv2dGeom) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [(y, _, _), (gx, _, _), (gw, _, _)] = conv_ref_terms(x, w, gy, s, g);
    (y, gx, gw)
}

/// The backward-data `v` with a ReLU / ReLU6 mask in its store equals the unmasked gradient
/// `plain` (NHWC, already downloaded) times the activation's gradient at the mask — to the bit,
/// as the separate act_bwd kernel computes it — under both activations, with a mask that lands
/// on both sides of 0 and of 6.
/// The scratch a backward-data version takes: v5's column matrix (then its transposed weights),
/// NaN-filled on the emulator; none for the others.
fn scratch(d: &dyn Device, v: BackwardData, s: &ConvShape, g: &Conv2dGeom) -> Option<DevicePtr> {
    matches!(v, BackwardData::Col2im(_)).then(|| out(d, cuda::conv::col2im_len(s, g).unwrap()))
}

// negated comparisons: the kernels' own (a NaN passes the gradient on)
#[allow(clippy::too_many_arguments, clippy::neg_cmp_op_on_partial_ord)]
fn check_masked(d: &dyn Device, what: &str, v: BackwardData, gyp: DevicePtr, wpk: DevicePtr, s: &ConvShape, g: &Conv2dGeom, plain: &[f32]) {
    let mask: Vec<f32> = seeded(99, plain.len()).iter().map(|&m| m * 9.0 + 2.0).collect();
    let mp = put(d, &mask);
    let col = scratch(d, v, s, g);
    for a in [Act::Relu, Act::Relu6] {
        let fresh = out(d, plain.len());
        cuda::conv::backward_data_as(d, v, gyp, wpk, fresh, s, g, Some((mp, a)), col, SplitK::NONE).unwrap();
        let got = get(d, fresh, plain.len());
        let want: Vec<f32> = plain.iter().zip(&mask).map(|(&p, &m)| p * if a == Act::Relu { !(m <= 0.0) as u8 as f32 } else { !(m <= 0.0 || m >= 6.0) as u8 as f32 }).collect();
        let bad = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
        assert!(bad.is_none(), "{what}.bwd_data.{v:?} masked by {a:?}: element {} is {} not {}", bad.unwrap(), got[bad.unwrap()], want[bad.unwrap()]);
        d.free(fresh);
    }
    // only ReLU / ReLU6 masks exist
    assert!(cuda::conv::backward_data_as(d, v, gyp, wpk, mp, s, g, Some((mp, Act::Silu)), col, SplitK::NONE).is_err());
    d.free(mp);
    col.into_iter().for_each(|c| d.free(c));
}

#[test]
fn conv_forward_backward_all_paths() {
    let geom = |stride, pad, dilation, groups| Conv2dGeom { stride, pad, dilation, groups };
    // (what, shape, geometry, activation)
    let cases = [
        ("implicit_gemm_s2_asym_pad", ConvShape { n: 3, h: 7, w: 13, c: 33, cout: 70, kh: 3, kw: 3 }, geom([2, 2], [1, 2, 0, 1], [1, 1], 1), Some(Act::Relu)),
        ("implicit_gemm_dilated", ConvShape { n: 2, h: 7, w: 13, c: 5, cout: 17, kh: 3, kw: 2 }, geom([1, 1], [2, 2, 1, 1], [2, 2], 1), Some(Act::HardSwish)),
        ("implicit_gemm_1x1", ConvShape { n: 3, h: 7, w: 13, c: 33, cout: 9, kh: 1, kw: 1 }, geom([1, 1], [0, 0, 0, 0], [1, 1], 1), None),
        ("grouped", ConvShape { n: 3, h: 7, w: 13, c: 33, cout: 12, kh: 3, kw: 3 }, geom([2, 1], [1, 1, 1, 1], [1, 1], 3), Some(Act::Silu)),
        ("depthwise_x2", ConvShape { n: 3, h: 7, w: 13, c: 33, cout: 66, kh: 3, kw: 3 }, geom([2, 2], [0, 1, 1, 0], [1, 1], 33), Some(Act::Relu6)),
        ("depthwise_5x5", ConvShape { n: 3, h: 7, w: 13, c: 33, cout: 33, kh: 5, kw: 5 }, geom([1, 1], [2, 2, 2, 2], [1, 1], 33), None),
        // a first layer: 3 input channels, 7x7 stride 2 (the direct backward-data gather)
        ("rgb_7x7_s2", ConvShape { n: 2, h: 13, w: 11, c: 3, cout: 70, kh: 7, kw: 7 }, geom([2, 2], [3, 3, 3, 3], [1, 1], 1), Some(Act::Relu)),
        // the paired float4 gather (v3b): more than 64 output channels, an odd phase width (an
        // unpaired last pixel), fewer than 64 channels, an asymmetric stride
        ("rgb_7x7_s2_c72", ConvShape { n: 2, h: 13, w: 11, c: 3, cout: 72, kh: 7, kw: 7 }, geom([2, 2], [3, 3, 3, 3], [1, 1], 1), Some(Act::Relu)),
        ("rgba_3x3_s1_c32", ConvShape { n: 2, h: 9, w: 7, c: 4, cout: 32, kh: 3, kw: 3 }, geom([1, 1], [1, 1, 1, 1], [1, 1], 1), None),
        ("rg_5x3_s3x2_c8", ConvShape { n: 1, h: 10, w: 9, c: 2, cout: 8, kh: 5, kw: 3 }, geom([3, 2], [2, 1, 1, 1], [1, 1], 1), Some(Act::Relu6)),
        // few input channels, dilated and strided: the direct gather's tap-by-tap walk
        ("rg_dilated_s2x1", ConvShape { n: 2, h: 9, w: 10, c: 2, cout: 40, kh: 3, kw: 3 }, geom([2, 1], [2, 1, 2, 2], [2, 3], 1), Some(Act::Relu6)),
        // stride 2 and 3 with kernels smaller than the stride (phases without taps)
        ("s2_1x1", ConvShape { n: 3, h: 7, w: 13, c: 33, cout: 17, kh: 1, kw: 1 }, geom([2, 2], [0, 0, 0, 0], [1, 1], 1), None),
        ("s3x2_5x2", ConvShape { n: 2, h: 11, w: 9, c: 6, cout: 10, kh: 5, kw: 2 }, geom([3, 2], [2, 1, 1, 0], [1, 1], 2), None),
    ];
    for (what, s, g, act) in cases {
        let (oh, ow) = s.out_hw(&g).unwrap();
        let cg = s.c / g.groups;
        let x = seeded(30, s.n * s.c * s.h * s.w);
        let w = seeded(31, s.cout * cg * s.kh * s.kw);
        let b = seeded(32, s.cout);
        let gy = seeded(33, s.n * s.cout * oh * ow);
        let (y0, gx, gw) = conv_ref(&x, &w, &gy, &s, &g);
        let want_y: Vec<f64> = y0
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let v = v + b[i / (oh * ow) % s.cout] as f64;
                act.map_or(v, |a| act_ref(v, a))
            })
            .collect();
        let mut want_gb = vec![0f64; s.cout];
        gy.iter().enumerate().for_each(|(i, &v)| want_gb[i / (oh * ow) % s.cout] += v as f64);
        for dev in devices() {
            let d = dev.as_ref();
            let what = format!("{}.conv_{what}", d.name());
            let wl = w.len();
            let (xp, wo, wpk, bp) = (put(d, &to_nhwc(&x, s.n, s.c, s.h * s.w)), put(d, &w), out(d, wl), put(d, &b));
            cuda::conv::repack_weight(d, wo, wpk, s.cout, cg, s.kh, s.kw).unwrap();
            let y = out(d, want_y.len());
            cuda::conv::forward(d, Precision::F32, xp, wpk, None, Some(bp), y, &s, &g, act).unwrap();
            let got = to_nchw(&get(d, y, want_y.len()), s.n, s.cout, oh * ow);
            assert_close(&format!("{what}.fwd"), &got, &f32s(&want_y), 1e-5, 1e-4);

            let (gyp, gxp, gwk, gwo, gb) = (put(d, &to_nhwc(&gy, s.n, s.cout, oh * ow)), out(d, x.len()), out(d, wl), out(d, wl), out(d, s.cout));
            // the engine's choice, with v5's scratch where that is v5 (without it, v3: the next
            // loop runs both)
            let engine = cuda::conv::backward_data_version(&s, &g, Precision::F32);
            let col = scratch(d, engine, &s, &g);
            cuda::conv::backward_data(d, Precision::F32, gyp, wpk, gxp, &s, &g, None, col, SplitK::NONE).unwrap();
            col.into_iter().for_each(|c| d.free(c));
            let plain = get(d, gxp, x.len());
            let got = to_nchw(&plain, s.n, s.c, s.h * s.w);
            assert_close(&format!("{what}.bwd_data"), &got, &f32s(&gx), 1e-5, 1e-4);
            check_masked(d, &what, engine, gyp, wpk, &s, &g, &plain);
            // every version that applies, not only the one the engine picks
            let cg = s.c / g.groups;
            for v in [BackwardData::Gemm, BackwardData::Phased, BackwardData::Direct, BackwardData::Direct4, BackwardData::Col2im(Precision::F32)] {
                let applies = (v != BackwardData::Phased || g.dilation == [1, 1])
                    && (v != BackwardData::Direct || cg <= 4)
                    && (v != BackwardData::Direct4 || (cg <= 4 && g.groups == 1 && g.dilation == [1, 1] && s.cout % 4 == 0))
                    && (v != BackwardData::Col2im(Precision::F32) || g.groups == 1);
                assert_eq!(applies, v.applies(&s, &g), "{what}: {v:?}");
                let col = scratch(d, v, &s, &g);
                if !applies {
                    assert!(cuda::conv::backward_data_as(d, v, gyp, wpk, gxp, &s, &g, None, col, SplitK::NONE).is_err(), "{what}: {v:?} accepted");
                    col.into_iter().for_each(|c| d.free(c));
                    continue;
                }
                let fresh = out(d, x.len()); // NaN-filled on the emulator: every element must be written
                cuda::conv::backward_data_as(d, v, gyp, wpk, fresh, &s, &g, None, col, SplitK::NONE).unwrap();
                col.into_iter().for_each(|c| d.free(c));
                let plain = get(d, fresh, x.len());
                let got = to_nchw(&plain, s.n, s.c, s.h * s.w);
                assert_close(&format!("{what}.bwd_data.{v:?}"), &got, &f32s(&gx), 1e-5, 1e-4);
                check_masked(d, &what, v, gyp, wpk, &s, &g, &plain);
            }
            cuda::conv::backward_filter(d, xp, gyp, gwk, &s, &g).unwrap();
            cuda::conv::unpack_weight(d, gwk, gwo, s.cout, cg, s.kh, s.kw).unwrap();
            assert_close(&format!("{what}.bwd_filter"), &get(d, gwo, wl), &f32s(&gw), 1e-4, 1e-4);
            cuda::reduce::channel_sum(d, gyp, gb, 1, s.n * oh * ow, s.cout, 1.0).unwrap();
            assert_close(&format!("{what}.bwd_bias"), &get(d, gb, s.cout), &f32s(&want_gb), 1e-5, 1e-5);
        }
    }
}

#[test]
fn conv_fused_residual_activation_and_concat_slices() {
    let geom = |stride, pad, dilation, groups| Conv2dGeom { stride, pad, dilation, groups };
    // (what, shape, geometry, activation); cout odd so the slices start at odd channels
    let cases = [
        ("implicit_gemm", ConvShape { n: 3, h: 7, w: 13, c: 33, cout: 19, kh: 3, kw: 3 }, geom([2, 2], [1, 2, 0, 1], [1, 1], 1), Act::Relu),
        ("grouped", ConvShape { n: 3, h: 7, w: 13, c: 33, cout: 33, kh: 3, kw: 2 }, geom([1, 2], [1, 0, 1, 1], [1, 1], 3), Act::HardSwish),
        ("depthwise_x2", ConvShape { n: 3, h: 7, w: 13, c: 33, cout: 66, kh: 3, kw: 3 }, geom([2, 2], [0, 1, 1, 0], [1, 1], 33), Act::Silu),
    ];
    for (what, s, g, act) in cases {
        let (oh, ow) = s.out_hw(&g).unwrap();
        let (cg, pix) = (s.c / g.groups, s.n * oh * ow);
        let x = seeded(60, s.n * s.c * s.h * s.w);
        let (w1, w2) = (seeded(61, s.cout * cg * s.kh * s.kw), seeded(62, s.cout * cg * s.kh * s.kw));
        let b = seeded(63, s.cout);
        let res: Vec<f32> = seeded(64, pix * s.cout).iter().map(|v| 2.0 * v).collect(); // NCHW
        let (y0, _, _) = conv_ref(&x, &w1, &vec![0.0; pix * s.cout], &s, &g);
        // residual added before the activation
        let want: Vec<f64> = y0.iter().enumerate().map(|(i, &v)| act_ref(v + b[i / (oh * ow) % s.cout] as f64 + res[i] as f64, act)).collect();
        // the concat tensor: [A | B | one spare channel that must stay untouched]
        let stride = 2 * s.cout + 1;
        const SENTINEL: f32 = 7.25;
        for dev in devices() {
            let d = dev.as_ref();
            let what = format!("{}.conv_fused_{what}", d.name());
            let wl = w1.len();
            let (xp, bp, rp) = (put(d, &to_nhwc(&x, s.n, s.c, s.h * s.w)), put(d, &b), put(d, &to_nhwc(&res, s.n, s.cout, oh * ow)));
            let (wk1, wk2, wo) = (out(d, wl), out(d, wl), put(d, &w1));
            cuda::conv::repack_weight(d, wo, wk1, s.cout, cg, s.kh, s.kw).unwrap();
            let wo2 = put(d, &w2);
            cuda::conv::repack_weight(d, wo2, wk2, s.cout, cg, s.kh, s.kw).unwrap();

            let y = out(d, pix * s.cout);
            cuda::conv::forward_fused(d, Precision::F32, xp, wk1, None, Some(bp), Some(rp), y, s.cout, 0, &s, &g, Some(act), SplitK::NONE).unwrap();
            let got = to_nchw(&get(d, y, pix * s.cout), s.n, s.cout, oh * ow);
            assert_close(&format!("{what}.residual"), &got, &f32s(&want), 1e-5, 1e-4);

            // separately: A = conv(w1) + bias, B = act(conv(w2) + residual)
            let (ya, yb) = (out(d, pix * s.cout), out(d, pix * s.cout));
            cuda::conv::forward(d, Precision::F32, xp, wk1, None, Some(bp), ya, &s, &g, None).unwrap();
            cuda::conv::forward_fused(d, Precision::F32, xp, wk2, None, None, Some(rp), yb, s.cout, 0, &s, &g, Some(act), SplitK::NONE).unwrap();
            let (ya, yb) = (get(d, ya, pix * s.cout), get(d, yb, pix * s.cout));
            // into adjacent slices of one tensor
            let cat = put(d, &vec![SENTINEL; pix * stride]);
            cuda::conv::forward_fused(d, Precision::F32, xp, wk1, None, Some(bp), None, cat, stride, 0, &s, &g, None, SplitK::NONE).unwrap();
            cuda::conv::forward_fused(d, Precision::F32, xp, wk2, None, None, Some(rp), cat, stride, s.cout, &s, &g, Some(act), SplitK::NONE).unwrap();
            let want_cat: Vec<f32> = (0..pix).flat_map(|p| ya[p * s.cout..(p + 1) * s.cout].iter().chain(&yb[p * s.cout..(p + 1) * s.cout]).copied().chain([SENTINEL])).collect();
            assert_close(&format!("{what}.concat"), &get(d, cat, pix * stride), &want_cat, 0.0, 0.0);

            let err = cuda::conv::forward_fused(d, Precision::F32, xp, wk1, None, None, None, cat, stride, s.cout + 2, &s, &g, None, SplitK::NONE);
            assert!(err.is_err(), "{what}: a slice past the row must be refused");
        }
    }
}

/// f64 direct convolution: for each element of y (before bias and act), gx and gw (for seeds
/// gy) the sum, Σ (a·b)² and Σ |a·b| over its products — the last two for the rounding bound
/// of the tensor-core tests.
#[allow(clippy::type_complexity)]
fn conv_ref_terms(x: &[f32], w: &[f32], gy: &[f32], s: &ConvShape, g: &Conv2dGeom) -> [(Vec<f64>, Vec<f64>, Vec<f64>); 3] {
    let (oh, ow) = s.out_hw(g).unwrap();
    let (cg, og) = (s.c / g.groups, s.cout / g.groups);
    let ny = s.n * s.cout * oh * ow;
    let (mut y, mut ysq, mut yabs) = (vec![0f64; ny], vec![0f64; ny], vec![0f64; ny]);
    let (mut gx, mut gsq, mut gabs) = (vec![0f64; x.len()], vec![0f64; x.len()], vec![0f64; x.len()]);
    let (mut gw, mut wsq, mut wabs) = (vec![0f64; w.len()], vec![0f64; w.len()], vec![0f64; w.len()]);
    for i in 0..s.n {
        for oc in 0..s.cout {
            let grp = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = ((i * s.cout + oc) * oh + oy) * ow + ox;
                    for ci in 0..cg {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize - g.pad[0] as isize;
                                let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize - g.pad[2] as isize;
                                if iy < 0 || ix < 0 || iy >= s.h as isize || ix >= s.w as isize {
                                    continue;
                                }
                                let xi = ((i * s.c + grp * cg + ci) * s.h + iy as usize) * s.w + ix as usize;
                                let wi = ((oc * cg + ci) * s.kh + ky) * s.kw + kx;
                                let (p, q) = (x[xi] as f64 * w[wi] as f64, gy[o] as f64 * w[wi] as f64);
                                y[o] += p;
                                ysq[o] += p * p;
                                yabs[o] += p.abs();
                                gx[xi] += q;
                                gsq[xi] += q * q;
                                gabs[xi] += q.abs();
                                let r = gy[o] as f64 * x[xi] as f64;
                                gw[wi] += r;
                                wsq[wi] += r * r;
                                wabs[wi] += r.abs();
                            }
                        }
                    }
                }
            }
        }
    }
    [(y, ysq, yabs), (gx, gsq, gabs), (gw, wsq, wabs)]
}

/// The rounding bound of a tensor-core result, per element. Each product of two operands
/// rounded to `mantissa` bits is off by at most eps = 2^-mantissa of itself (two roundings of
/// half an ulp each); these errors are independent and centred, so their sum has a standard
/// deviation of about eps/√3 · sqrt(Σ (a·b)²), and 4·eps·sqrt(Σ (a·b)²) is ~7 of them: the
/// "sqrt(K)·eps·|a||b|" bound, which a wrong or missing tap (an error of a whole term, ~1/√K
/// of sqrt(Σ (a·b)²)) exceeds. Plus the f32 accumulation's worst case K·2^-24·Σ|a·b|, and
/// `lip` for the activation after it (hard-swish's slope reaches 1.5).
fn tc_bound(mantissa: i32, sq: &[f64], abs: &[f64], k: usize, lip: f64) -> Vec<f32> {
    let eps = 2f64.powi(-mantissa);
    sq.iter().zip(abs).map(|(&q, &a)| (lip * (4.0 * eps * q.sqrt() + k as f64 * 2f64.powi(-24) * a) + 1e-6) as f32).collect()
}

/// The tensor-core convolutions (TF32, BF16, and f32 as 3xTF32 by tap slices, held to f32-grade
/// error; forward with the whole fused epilogue, backward
/// data by stride phases), each staging that takes the shape, against the f64 reference within
/// [`tc_bound`], on zoo-like shapes: 3x3 stride 1 and 2, 1x1 stride 1 and 2, a 7x7 stride-2
/// first layer with 3 channels (the element-by-element staging path), odd channel counts
/// (ragged tiles), several M blocks, a dilated grouped conv; and for the tap slices, shapes
/// with whole 32-channel slices: N tails (og 96 and 36), M tails, several taps and slices per
/// tap, windows past every edge, dilation with groups, stride-2 phases; and the column-matrix
/// backward data (v5) on every shape it takes, first layers among them. The results must also
/// differ from f32 (the operands were rounded). Where a version or staging does not take a
/// shape it refuses it; the engine picks the tap slices wherever they apply, and v5 for few
/// input channels.
#[test]
fn conv_tensor_cores_within_format_tolerance() {
    let geom = |stride, pad, dilation, groups| Conv2dGeom { stride, pad, dilation, groups };
    let cases = [
        ("3x3_s1", ConvShape { n: 2, h: 9, w: 11, c: 32, cout: 70, kh: 3, kw: 3 }, geom([1, 1], [1, 1, 1, 1], [1, 1], 1), Act::Relu),
        ("1x1_s1", ConvShape { n: 3, h: 7, w: 13, c: 64, cout: 40, kh: 1, kw: 1 }, geom([1, 1], [0, 0, 0, 0], [1, 1], 1), Act::Silu),
        ("3x3_s2", ConvShape { n: 2, h: 13, w: 11, c: 36, cout: 64, kh: 3, kw: 3 }, geom([2, 2], [1, 1, 1, 1], [1, 1], 1), Act::Relu),
        ("rgb_7x7_s2", ConvShape { n: 2, h: 17, w: 15, c: 3, cout: 64, kh: 7, kw: 7 }, geom([2, 2], [3, 3, 3, 3], [1, 1], 1), Act::Relu),
        ("1x1_s2_odd", ConvShape { n: 3, h: 7, w: 13, c: 33, cout: 17, kh: 1, kw: 1 }, geom([2, 2], [0, 0, 0, 0], [1, 1], 1), Act::Relu6),
        ("3x3_dil2_grouped", ConvShape { n: 2, h: 9, w: 10, c: 16, cout: 24, kh: 3, kw: 3 }, geom([1, 1], [2, 1, 2, 2], [2, 2], 2), Act::HardSwish),
        // whole 32-channel slices both ways (the tap slices forward and backward)
        ("taps_3x3_s1_n96", ConvShape { n: 2, h: 9, w: 11, c: 64, cout: 96, kh: 3, kw: 3 }, geom([1, 1], [1, 1, 1, 1], [1, 1], 1), Act::Relu),
        ("taps_3x3_s2_asym", ConvShape { n: 3, h: 13, w: 10, c: 32, cout: 64, kh: 3, kw: 3 }, geom([2, 2], [1, 0, 2, 1], [1, 1], 1), Act::Relu6),
        ("taps_1x1_s2", ConvShape { n: 2, h: 13, w: 11, c: 96, cout: 32, kh: 1, kw: 1 }, geom([2, 2], [0, 0, 0, 0], [1, 1], 1), Act::Silu),
        ("taps_5x3_dil2_grouped", ConvShape { n: 2, h: 8, w: 9, c: 64, cout: 128, kh: 5, kw: 3 }, geom([1, 1], [3, 2, 1, 2], [2, 2], 2), Act::HardSwish),
        ("taps_fwd_only_og36", ConvShape { n: 2, h: 7, w: 9, c: 32, cout: 36, kh: 3, kw: 3 }, geom([1, 1], [1, 1, 1, 1], [1, 1], 1), Act::Relu),
        // first layers for the column matrix: 3 and 4 channels, odd sizes, asymmetric padding,
        // stride 2 and a dilated stride 1
        ("col2im_rgb_7x7_s2_odd", ConvShape { n: 3, h: 13, w: 11, c: 3, cout: 32, kh: 7, kw: 7 }, geom([2, 2], [3, 2, 3, 1], [1, 1], 1), Act::Relu),
        ("col2im_4ch_3x3_dil2", ConvShape { n: 2, h: 9, w: 10, c: 4, cout: 96, kh: 3, kw: 3 }, geom([1, 1], [2, 2, 2, 2], [2, 2], 1), Act::Relu6),
    ];
    for (what, s, g, act) in cases {
        let (oh, ow) = s.out_hw(&g).unwrap();
        let (cg, og, pix) = (s.c / g.groups, s.cout / g.groups, s.n * oh * ow);
        let x = seeded(70, s.n * s.c * s.h * s.w);
        let w = seeded(71, s.cout * cg * s.kh * s.kw);
        let b = seeded(72, s.cout);
        let res = seeded(73, pix * s.cout); // NCHW
        let gy = seeded(74, pix * s.cout);
        let [(y0, ysq, yabs), (gx, gsq, gabs), _] = conv_ref_terms(&x, &w, &gy, &s, &g);
        let pre: Vec<f64> = y0.iter().enumerate().map(|(i, &v)| v + b[i / (oh * ow) % s.cout] as f64 + res[i] as f64).collect();
        let want_y: Vec<f32> = to_nhwc(&f32s(&pre.iter().map(|&v| act_ref(v, act)).collect::<Vec<_>>()), s.n, s.cout, oh * ow);
        // NHWC like the device's output; pre-activation magnitude for the adds' rounding
        let y_terms = |v: &[f64]| to_nhwc(&f32s(v), s.n, s.cout, oh * ow).iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let (ysq, yabs, pre_n) = (y_terms(&ysq), y_terms(&yabs), y_terms(&pre));
        // the output goes into channels [1, 1 + cout) of rows of cout + 3, the rest untouched
        let stride = s.cout + 3;
        const SENTINEL: f32 = -3.5;
        for dev in devices() {
            let d = dev.as_ref();
            let (xp, wo, wpk, bp) = (put(d, &to_nhwc(&x, s.n, s.c, s.h * s.w)), put(d, &w), out(d, w.len()), put(d, &b));
            cuda::conv::repack_weight(d, wo, wpk, s.cout, cg, s.kh, s.kw).unwrap();
            // the OHWI rows the tap-slice forward reads: checked against the host's permutation
            let rows = out(d, w.len());
            cuda::conv::rows_weight(d, wpk, rows, s.cout, cg, s.kh, s.kw).unwrap();
            let want_rows: Vec<f32> = (0..w.len()).map(|i| {
                let (ci, t) = (i % cg, i / cg);
                let (kx, t) = (t % s.kw, t / s.kw);
                let (ky, o) = (t % s.kh, t / s.kh);
                w[((o * cg + ci) * s.kh + ky) * s.kw + kx]
            }).collect();
            assert_eq!(get(d, rows, w.len()), want_rows, "{what}: OHWI rows");
            let (rp, gyp) = (put(d, &to_nhwc(&res, s.n, s.cout, oh * ow)), put(d, &to_nhwc(&gy, s.n, s.cout, oh * ow)));
            // f32 on the tensor cores is 3xTF32 by tap slices only: held to a bound of ~21 bits
            for (prec, mantissa) in [(Precision::Tf32, 10), (Precision::Bf16, 7), (Precision::F32, 21)] {
                let x3 = prec == Precision::F32;
                for staging in [TcStaging::Gather, TcStaging::Tap] {
                    if x3 && staging == TcStaging::Gather {
                        continue; // the exact f32 kernel: conv_forward_backward_all_paths
                    }
                    let what = format!("{}.conv_tc_{what}.{prec}.{staging:?}", d.name());
                    let y = put(d, &vec![SENTINEL; pix * stride]);
                    let fwd = cuda::conv::forward_fused_as(d, prec, staging, xp, wpk, Some(rows), Some(bp), Some(rp), y, stride, 1, &s, &g, Some(act), SplitK::NONE);
                    if staging == TcStaging::Tap && TcStaging::forward(&s, &g) == TcStaging::Gather {
                        let e = fwd.unwrap_err().to_string();
                        assert!(e.contains("tap-slice") && e.contains("multiple of 32"), "{what}.fwd: {e}");
                    } else {
                        fwd.unwrap();
                        let all = get(d, y, pix * stride);
                        let got: Vec<f32> = (0..pix).flat_map(|p| all[p * stride + 1..p * stride + 1 + s.cout].to_vec()).collect();
                        let spare: Vec<f32> = (0..pix).flat_map(|p| [all[p * stride], all[p * stride + stride - 2], all[p * stride + stride - 1]]).collect();
                        assert_close(&format!("{what}.fwd.untouched_channels"), &spare, &vec![SENTINEL; 3 * pix], 0.0, 0.0);
                        let k = s.kh * s.kw * cg;
                        let mut tol = tc_bound(mantissa, &ysq, &yabs, k, 1.5);
                        tol.iter_mut().zip(&pre_n).for_each(|(t, &p)| *t += 1.5 * 2f32.powi(-22) * p.abs() as f32);
                        assert_close_each(&format!("{what}.fwd"), &got, &want_y, &tol);
                        let e = rel_rms(&got, &want_y);
                        if x3 {
                            assert!(e < 1e-6, "{what}.fwd: 3xTF32 {e:.1e} from f64: not f32-grade");
                        } else {
                            assert!(e > 1e-6, "{what}.fwd: equal to f32 to {e:.1e}: were the operands rounded?");
                        }
                    }
                    d.free(y);

                    let v = BackwardData::TensorCore(prec, staging);
                    let fresh = out(d, x.len()); // NaN-filled on the emulator: every element must be written
                    if !v.applies(&s, &g) {
                        assert_eq!((staging, TcStaging::backward(&s, &g)), (TcStaging::Tap, TcStaging::Gather), "{what}");
                        let e = cuda::conv::backward_data_as(d, v, gyp, wpk, fresh, &s, &g, None, None, SplitK::NONE).unwrap_err().to_string();
                        assert!(e.contains("tap slices"), "{what}.bwd_data: {e}");
                        d.free(fresh);
                        continue;
                    }
                    cuda::conv::backward_data_as(d, v, gyp, wpk, fresh, &s, &g, None, None, SplitK::NONE).unwrap();
                    let plain = get(d, fresh, x.len());
                    check_masked(d, &what, v, gyp, wpk, &s, &g, &plain);
                    let got = to_nchw(&plain, s.n, s.c, s.h * s.w);
                    let taps_k = s.kh * s.kw * og;
                    assert_close_each(&format!("{what}.bwd_data"), &got, &f32s(&gx), &tc_bound(mantissa, &gsq, &gabs, taps_k, 1.0));
                    let e = rel_rms(&got, &f32s(&gx));
                    if x3 {
                        assert!(e < 1e-6, "{what}.bwd_data: 3xTF32 {e:.1e} from f64: not f32-grade");
                        continue;
                    }
                    assert!(e > 1e-6, "{what}.bwd_data: equal to f32: were the operands rounded?");
                    if cg > 4 {
                        assert_eq!(cuda::conv::backward_data_version(&s, &g, prec), BackwardData::TensorCore(prec, TcStaging::backward(&s, &g)), "{what}: the engine's choice");
                    }
                    d.free(fresh);
                }
                if x3 {
                    continue; // f32's column matrix runs the exact kernel: conv_forward_backward_all_paths
                }
                // v5, the column matrix (one group, cout % 32), which the engine takes for few
                // input channels
                let what = format!("{}.conv_tc_{what}.{prec}.Col2im", d.name());
                let v = BackwardData::Col2im(prec);
                let fresh = out(d, x.len());
                if !v.applies(&s, &g) {
                    assert!(g.groups > 1 || s.cout % 32 != 0, "{what}: refused");
                    let e = cuda::conv::backward_data_as(d, v, gyp, wpk, fresh, &s, &g, None, None, SplitK::NONE).unwrap_err().to_string();
                    assert!(e.contains("column-matrix"), "{what}: {e}");
                } else {
                    let col = out(d, cuda::conv::col2im_len(&s, &g).unwrap());
                    let e = cuda::conv::backward_data_as(d, v, gyp, wpk, fresh, &s, &g, None, None, SplitK::NONE).unwrap_err().to_string();
                    assert!(e.contains("none was given"), "{what}: {e}");
                    cuda::conv::backward_data_as(d, v, gyp, wpk, fresh, &s, &g, None, Some(col), SplitK::NONE).unwrap();
                    let plain = get(d, fresh, x.len());
                    check_masked(d, &what, v, gyp, wpk, &s, &g, &plain);
                    let got = to_nchw(&plain, s.n, s.c, s.h * s.w);
                    assert_close_each(&format!("{what}.bwd_data"), &got, &f32s(&gx), &tc_bound(mantissa, &gsq, &gabs, s.kh * s.kw * og, 1.0));
                    assert!(rel_rms(&got, &f32s(&gx)) > 1e-6, "{what}.bwd_data: equal to f32: were the operands rounded?");
                    if cg <= 4 {
                        assert_eq!(cuda::conv::backward_data_version(&s, &g, prec), v, "{what}: the engine's choice");
                    }
                    d.free(col);
                }
                d.free(fresh);
            }
            assert!(cuda::conv::backward_data_as(d, BackwardData::TensorCore(Precision::F32, TcStaging::Gather), gyp, wpk, xp, &s, &g, None, None, SplitK::NONE).is_err());
            for p in [xp, wo, wpk, rows, bp, rp, gyp] {
                d.free(p);
            }
        }
    }
}

/// Split-K (`SplitK`, `DvSplit`): every GEMM kernel run in 2, 3 and 7 parts gives its one-part
/// result up to the summation order (2^-20 relative of the terms' size), with the whole fused
/// epilogue (bias, residual, activation, a channel slice of wider rows, the rest untouched)
/// and, going back, the ReLU6 mask; every gx element written (NaN-filled outputs on the
/// emulator), parts of the stride phases with fewer taps than the others included (they hold
/// zeros), and phases with none. Misuse is refused: no workspace, too many parts, a version that does not split.
/// And the engine splits resnet50's stage-4 layers at batch 1, and not at batch 64.
#[test]
fn conv_split_k_equals_one_part() {
    let geom = |stride, pad, dilation, groups| Conv2dGeom { stride, pad, dilation, groups };
    let cases = [
        ("3x3_s1", ConvShape { n: 1, h: 5, w: 6, c: 96, cout: 72, kh: 3, kw: 3 }, geom([1, 1], [1, 1, 1, 1], [1, 1], 1)),
        ("3x3_s2_phases", ConvShape { n: 2, h: 7, w: 6, c: 64, cout: 64, kh: 3, kw: 3 }, geom([2, 2], [1, 1, 1, 1], [1, 1], 1)),
        ("3x3_dil2_grouped", ConvShape { n: 1, h: 6, w: 7, c: 72, cout: 96, kh: 3, kw: 3 }, geom([1, 1], [2, 1, 2, 2], [2, 2], 2)),
        ("1x1_odd", ConvShape { n: 1, h: 3, w: 5, c: 200, cout: 33, kh: 1, kw: 1 }, geom([1, 1], [0, 0, 0, 0], [1, 1], 1)),
        // three of its four stride phases have no taps at all
        ("1x1_s2", ConvShape { n: 1, h: 7, w: 9, c: 160, cout: 64, kh: 1, kw: 1 }, geom([2, 2], [0, 0, 0, 0], [1, 1], 1)),
    ];
    for (what, s, g) in cases {
        let (oh, ow) = s.out_hw(&g).unwrap();
        let (cg, pix) = (s.c / g.groups, s.n * oh * ow);
        let x = seeded(80, s.n * s.h * s.w * s.c);
        let w = seeded(81, s.cout * cg * s.kh * s.kw);
        let (b, res, gy) = (seeded(82, s.cout), seeded(83, pix * s.cout), seeded(84, pix * s.cout));
        let mask: Vec<f32> = seeded(85, x.len()).iter().map(|&m| m * 9.0 + 2.0).collect();
        let stride = s.cout + 3;
        for dev in devices() {
            let d = dev.as_ref();
            let (xp, wo, wpk, rows, bp, rp, gyp, mp) = (put(d, &x), put(d, &w), out(d, w.len()), out(d, w.len()), put(d, &b), put(d, &res), put(d, &gy), put(d, &mask));
            cuda::conv::repack_weight(d, wo, wpk, s.cout, cg, s.kh, s.kw).unwrap();
            cuda::conv::rows_weight(d, wpk, rows, s.cout, cg, s.kh, s.kw).unwrap();
            let ws = out(d, 7 * (pix * s.cout).max(x.len()));
            // `run` in 2, 3 and 7 parts against one: every element written, equal up to the
            // summation order; the split results, for the caller's own checks
            let parts_agree = |what: &str, run: &dyn Fn(SplitK) -> Vec<f32>| -> Vec<Vec<f32>> {
                let one = run(SplitK::NONE);
                let scale = one.iter().fold(0f32, |m, v| m.max(v.abs()));
                [2, 3, 7]
                    .map(|parts| {
                        let got = run(SplitK { parts, ws });
                        assert!(got.iter().all(|v| v.is_finite()), "{what}: {parts} parts left an element unwritten");
                        assert_close(&format!("{what}.parts{parts}"), &got, &one, scale * 2f32.powi(-20), 2f32.powi(-20));
                        got
                    })
                    .to_vec()
            };
            let mut fwd: Vec<(Precision, TcStaging)> = vec![(Precision::F32, TcStaging::Gather), (Precision::F32, TcStaging::Tap)];
            fwd.extend([Precision::Tf32, Precision::Bf16].into_iter().flat_map(|p| [(p, TcStaging::Gather), (p, TcStaging::Tap)]));
            for (prec, staging) in fwd {
                if staging == TcStaging::Tap && TcStaging::forward(&s, &g) != staging {
                    continue;
                }
                let what = format!("{}.splitk_{what}.fwd.{prec}.{staging:?}", d.name());
                let run = |split: SplitK| {
                    let y = put(d, &vec![-3.5; pix * stride]);
                    cuda::conv::forward_fused_as(d, prec, staging, xp, wpk, Some(rows), Some(bp), Some(rp), y, stride, 1, &s, &g, Some(Act::Silu), split).unwrap();
                    let v = get(d, y, pix * stride);
                    d.free(y);
                    v
                };
                let spare = |v: &[f32]| (0..pix).flat_map(|p| [v[p * stride], v[p * stride + stride - 2], v[p * stride + stride - 1]]).collect::<Vec<_>>();
                for got in parts_agree(&what, &run) {
                    assert_eq!(spare(&got), vec![-3.5; 3 * pix], "{what}: channels outside the slice");
                }
            }
            let mut bwd = vec![BackwardData::Gemm, BackwardData::Phased, BackwardData::TensorCore(Precision::F32, TcStaging::Tap)];
            bwd.extend([Precision::Tf32, Precision::Bf16].into_iter().flat_map(|p| [BackwardData::TensorCore(p, TcStaging::Gather), BackwardData::TensorCore(p, TcStaging::Tap)]));
            for v in bwd {
                if !v.applies(&s, &g) {
                    continue;
                }
                let what = format!("{}.splitk_{what}.bwd_data.{v:?}", d.name());
                let run = |split: SplitK| {
                    let gx = out(d, x.len()); // NaN-filled on the emulator
                    cuda::conv::backward_data_as(d, v, gyp, wpk, gx, &s, &g, Some((mp, Act::Relu6)), None, split).unwrap();
                    let r = get(d, gx, x.len());
                    d.free(gx);
                    r
                };
                parts_agree(&what, &run);
            }
            // misuse
            let y = out(d, pix * s.cout);
            let e = cuda::conv::forward_fused_as(d, Precision::F32, TcStaging::Gather, xp, wpk, None, None, None, y, s.cout, 0, &s, &g, None, SplitK { parts: 2, ws: DevicePtr(0) }).unwrap_err().to_string();
            assert!(e.contains("workspace"), "{e}");
            let e = cuda::conv::forward_fused_as(d, Precision::F32, TcStaging::Gather, xp, wpk, None, None, None, y, s.cout, 0, &s, &g, None, SplitK { parts: 17, ws }).unwrap_err().to_string();
            assert!(e.contains("parts"), "{e}");
            let gx = out(d, x.len());
            let e = cuda::conv::backward_data_as(d, BackwardData::Direct, gyp, wpk, gx, &s, &g, None, None, SplitK { parts: 2, ws }).unwrap_err().to_string();
            assert!(e.contains("does not split"), "{e}");
            for p in [xp, wo, wpk, rows, bp, rp, gyp, mp, ws, y, gx] {
                d.free(p);
            }
        }
    }
    // the engine's choice on a card of 132 SMs (what the emulator answers)
    let dev = deepviz::device::emu::EmuDevice::new();
    let g3 = geom([1, 1], [1, 1, 1, 1], [1, 1], 1);
    for prec in Precision::ALL {
        let stage4 = |n| ConvShape { n, h: 7, w: 7, c: 512, cout: 512, kh: 3, kw: 3 };
        let parts = cuda::conv::forward_parts(&dev, prec, true, &stage4(1), &g3);
        assert!((8..=16).contains(&parts), "{prec}: resnet50's stage-4 3x3 at batch 1 in {parts} parts");
        assert_eq!(cuda::conv::forward_parts(&dev, prec, true, &stage4(64), &g3), 1, "{prec}: batch 64 fills the card");
        let v = cuda::conv::backward_data_version(&stage4(1), &g3, prec);
        assert!(cuda::conv::backward_data_parts(&dev, v, &stage4(1), &g3) >= 8, "{prec}: {v:?} at batch 1");
    }
}

/// The conv kernels index in 32 bits: a convolution with a tensor of 2^31 elements or more is
/// refused before anything is launched, naming the tensor; one just below runs the check clean.
#[test]
fn conv_refuses_tensors_past_int32() {
    let g = Conv2dGeom { stride: [1, 1], pad: [1, 1, 1, 1], dilation: [1, 1], groups: 1 };
    let big = ConvShape { n: 1 << 14, h: 256, w: 256, c: 64, cout: 64, kh: 3, kw: 3 }; // x: 2^36 elements
    let err = cuda::conv::check_i32(&big, &g, 256, 256, 64).unwrap_err().to_string();
    assert!(err.contains("input") && err.contains("32 bits"), "{err}");
    let wide = ConvShape { n: 1, h: 256, w: 256, c: 64, cout: 64, kh: 3, kw: 3 };
    let err = cuda::conv::check_i32(&wide, &g, 256, 256, 1 << 16).unwrap_err().to_string(); // y rows of 2^16 channels
    assert!(err.contains("output"), "{err}");
    let ok = ConvShape { n: 127, h: 256, w: 256, c: 64, cout: 64, kh: 3, kw: 3 }; // 2^31 - 2^24 elements
    cuda::conv::check_i32(&ok, &g, 256, 256, 64).unwrap();
    for dev in devices() {
        let d = dev.as_ref();
        let p = DevicePtr(0);
        for prec in Precision::ALL {
            let e = cuda::conv::forward(d, prec, p, p, Some(p), None, p, &big, &g, None).unwrap_err();
            assert!(e.to_string().contains("32 bits"), "{e}");
            let e = cuda::conv::backward_data(d, prec, p, p, p, &big, &g, None, None, SplitK::NONE).unwrap_err();
            assert!(e.to_string().contains("32 bits"), "{e}");
        }
    }
}

// ---- image ops ------------------------------------------------------------------------------

/// PyTorch's bilinear source index (align_corners=False): (i0, i1, lambda1).
fn bilinear_src(o: usize, input: usize, output: usize) -> (usize, usize, f64) {
    let scale = input as f64 / output as f64;
    let src = (scale * (o as f64 + 0.5) - 0.5).max(0.0);
    let i0 = (src as usize).min(input - 1);
    let i1 = i0 + (i0 < input - 1) as usize;
    (i0, i1, src - i0 as f64)
}

#[test]
fn image_ops() {
    let (n, c, h, w) = (3, 3, 7, 13);
    let x = seeded(40, n * c * h * w);
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    for dev in devices() {
        let d = dev.as_ref();
        let name = d.name().to_string();
        let xh = to_nhwc(&x, n, c, h * w);
        let xp = put(d, &xh);
        for (oh, ow) in [(10, 6), (16, 29), (7, 13)] {
            let mut want = vec![0f64; n * c * oh * ow];
            for pl in 0..n * c {
                for oy in 0..oh {
                    let (y0, y1, ly) = bilinear_src(oy, h, oh);
                    for ox in 0..ow {
                        let (x0, x1, lx) = bilinear_src(ox, w, ow);
                        let at = |iy: usize, ix: usize| x[pl * h * w + iy * w + ix] as f64;
                        want[pl * oh * ow + oy * ow + ox] =
                            (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1)) + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1));
                    }
                }
            }
            let y = out(d, want.len());
            cuda::image::resize_bilinear(d, xp, y, n, c, h, w, oh, ow).unwrap();
            let got = to_nchw(&get(d, y, want.len()), n, c, oh * ow);
            assert_close(&format!("{name}.resize_bilinear_{oh}x{ow}"), &got, &f32s(&want), 1e-6, 1e-5);
        }

        let (mp, sp, y, z) = (put(d, &mean), put(d, &std), out(d, x.len()), out(d, x.len()));
        cuda::image::normalize(d, xp, mp, sp, y, x.len(), c).unwrap();
        let want: Vec<f64> = xh.iter().enumerate().map(|(i, &v)| (v as f64 - mean[i % c] as f64) / std[i % c] as f64).collect();
        assert_close(&format!("{name}.normalize"), &get(d, y, x.len()), &f32s(&want), 1e-6, 1e-6);
        cuda::image::denormalize(d, y, mp, sp, z, x.len(), c).unwrap();
        assert_close(&format!("{name}.denormalize"), &get(d, z, x.len()), &xh, 1e-6, 1e-6);

        for (dy, dx) in [(2i64, -5i64), (-8, 14), (0, 0)] {
            cuda::image::roll(d, xp, y, n, c, h, w, dy, dx).unwrap();
            let mut want = vec![0f32; x.len()];
            for pl in 0..n * c {
                for iy in 0..h {
                    for ix in 0..w {
                        let (ty, tx) = ((iy as i64 + dy).rem_euclid(h as i64) as usize, (ix as i64 + dx).rem_euclid(w as i64) as usize);
                        want[pl * h * w + ty * w + tx] = x[pl * h * w + iy * w + ix];
                    }
                }
            }
            assert_close(&format!("{name}.roll_{dy}_{dx}"), &to_nchw(&get(d, y, x.len()), n, c, h * w), &want, 0.0, 0.0);
        }
    }
}

/// The warp kernels through their launch code on maps whose answer is a permutation, exact in
/// f32: item 0 turned by 180° (theta = -I: y[i, j] = x[h-1-i, w-1-j]), item 1 by 90° on a square
/// picture (theta = [[0, -1, 0], [1, 0, 0]]: y[i, j] = x[j, w-1-i]); the backward kernel gives the
/// inverse permutations. (tests/ops_generic.rs holds warp to grid_sample's f64 definition on
/// general maps, on every backend.)
#[test]
fn warp_kernels_turn_pictures_exactly() {
    for side in [7usize, 6] {
        let (n, c, h, w) = (2, 3, side, side);
        let x = seeded(60, n * c * h * w); // NCHW
        let theta = [-1.0f32, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0];
        // src[k] = the NCHW index output k reads
        let src: Vec<usize> = (0..x.len())
            .map(|k| {
                let (img, ch, i, j) = (k / (c * h * w), k / (h * w) % c, k / w % h, k % w);
                let (si, sj) = if img == 0 { (h - 1 - i, w - 1 - j) } else { (j, w - 1 - i) };
                ((img * c + ch) * h + si) * w + sj
            })
            .collect();
        let want: Vec<f32> = src.iter().map(|&s| x[s]).collect();
        let mut want_back = vec![0f32; x.len()];
        for (k, &s) in src.iter().enumerate() {
            want_back[s] = x[k];
        }
        for dev in devices() {
            let d = dev.as_ref();
            let (xp, tp, y) = (put(d, &to_nhwc(&x, n, c, h * w)), put(d, &theta), out(d, x.len()));
            cuda::image::warp(d, xp, tp, y, n, c, h, w, false).unwrap();
            assert_close(&format!("{}.warp_turn_{side}", d.name()), &to_nchw(&get(d, y, x.len()), n, c, h * w), &want, 0.0, 0.0);
            cuda::image::warp(d, xp, tp, y, n, c, h, w, true).unwrap();
            assert_close(&format!("{}.warp_bwd_turn_{side}", d.name()), &to_nchw(&get(d, y, x.len()), n, c, h * w), &want_back, 0.0, 0.0);
        }
    }
}

/// torchvision's reflect padding (no repeated edge), repeated periodically past one reflection.
fn reflect(i: isize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let i = i.rem_euclid(period);
    (if i < len as isize { i } else { period - i }) as usize
}

#[test]
fn gaussian_blur_matches_separable_reference() {
    let (n, c, h, w) = (3, 5, 7, 13);
    let x = seeded(50, n * c * h * w); // NCHW
    // radius 3, 6 (= h - 1, the largest torch accepts), 8 (past one reflection of h)
    for sigma in [0.8f32, 1.7, 2.5] {
        let r = (3.0 * sigma).ceil() as isize;
        let k: Vec<f64> = (-r..=r).map(|t| (-0.5 * (t as f64 / sigma as f64).powi(2)).exp()).collect();
        let ksum: f64 = k.iter().sum();
        let k: Vec<f64> = k.iter().map(|v| v / ksum).collect();
        let mut tmp = vec![0f64; x.len()];
        let mut want = vec![0f64; x.len()];
        for pl in 0..n * c {
            for iy in 0..h {
                for ix in 0..w {
                    tmp[(pl * h + iy) * w + ix] = (-r..=r).map(|t| k[(t + r) as usize] * x[(pl * h + iy) * w + reflect(ix as isize + t, w)] as f64).sum();
                }
            }
            for iy in 0..h {
                for ix in 0..w {
                    want[(pl * h + iy) * w + ix] = (-r..=r).map(|t| k[(t + r) as usize] * tmp[(pl * h + reflect(iy as isize + t, h)) * w + ix]).sum();
                }
            }
        }
        for dev in devices() {
            let d = dev.as_ref();
            let (xp, tp, y) = (put(d, &to_nhwc(&x, n, c, h * w)), out(d, x.len()), out(d, x.len()));
            cuda::image::gaussian_blur(d, xp, tp, y, n, c, h, w, sigma).unwrap();
            let got = to_nchw(&get(d, y, x.len()), n, c, h * w);
            assert_close(&format!("{}.gaussian_blur_sigma{sigma}", d.name()), &got, &f32s(&want), 1e-6, 1e-5);
        }
    }
    for dev in devices() {
        let d = dev.as_ref();
        let (xp, tp, y) = (out(d, 4), out(d, 4), out(d, 4));
        for sigma in [0.0, -1.0, f32::NAN] {
            assert!(cuda::image::gaussian_blur(d, xp, tp, y, 1, 1, 2, 2, sigma).is_err(), "sigma {sigma} must be refused");
        }
    }
}

// ---- fill, concat / split, LRN ---------------------------------------------------------------

#[test]
fn fill_writes_every_element_it_is_asked_to() {
    let n = 3 * 33 * 7 * 13;
    for dev in devices() {
        let d = dev.as_ref();
        let name = d.name().to_string();
        let y = out(d, n);
        cuda::elementwise::fill(d, y, n, 0.0).unwrap();
        assert_close(&format!("{name}.fill_zero"), &get(d, y, n), &vec![0.0; n], 0.0, 0.0);
        cuda::elementwise::fill(d, y, 37, 2.5).unwrap();
        let mut want = vec![0.0; n];
        want[..37].fill(2.5);
        assert_close(&format!("{name}.fill_prefix"), &get(d, y, n), &want, 0.0, 0.0);
    }
}

#[test]
fn channel_copy_concat_and_split() {
    let pixels = 3 * 7 * 13;
    let parts = [33usize, 5, 11];
    let total: usize = parts.iter().sum();
    let xs: Vec<Vec<f32>> = parts.iter().enumerate().map(|(i, &c)| seeded(60 + i as u64, pixels * c)).collect();
    let mut want = vec![0f32; pixels * total];
    let mut off = 0;
    for (x, &c) in xs.iter().zip(&parts) {
        for p in 0..pixels {
            want[p * total + off..p * total + off + c].copy_from_slice(&x[p * c..(p + 1) * c]);
        }
        off += c;
    }
    for dev in devices() {
        let d = dev.as_ref();
        let name = d.name().to_string();
        let y = out(d, pixels * total);
        let mut off = 0;
        for (x, &c) in xs.iter().zip(&parts) {
            cuda::elementwise::channel_copy(d, put(d, x), y, pixels, c, c, 0, total, off).unwrap();
            off += c;
        }
        assert_close(&format!("{name}.channel_copy_concat"), &get(d, y, pixels * total), &want, 0.0, 0.0);
        let mut off = 0;
        for (x, &c) in xs.iter().zip(&parts) {
            let part = out(d, pixels * c);
            cuda::elementwise::channel_copy(d, y, part, pixels, c, total, off, c, 0).unwrap();
            assert_close(&format!("{name}.channel_copy_split_at_{off}"), &get(d, part, pixels * c), x, 0.0, 0.0);
            off += c;
        }
    }
}

/// PyTorch's LocalResponseNorm in f64 on NHWC rows `[pixels, c]`: (y, gx) for output gradient
/// gy, the gradient summed straight from the chain rule (not from the CPU engine's reversed window).
fn lrn_ref(x: &[f32], gy: &[f32], c: usize, g: &LrnGeom) -> (Vec<f64>, Vec<f64>) {
    let (size, alpha, beta, k) = (g.size as isize, g.alpha as f64, g.beta as f64, g.k as f64);
    // channel ch's window: [ch - size/2, ch + (size-1)/2], clipped
    let window = |ch: usize| ((ch as isize - size / 2).max(0) as usize, ((ch as isize + (size - 1) / 2 + 1).min(c as isize)) as usize);
    let (mut y, mut gx) = (vec![0f64; x.len()], vec![0f64; x.len()]);
    for (p, xr) in x.chunks(c).enumerate() {
        let d: Vec<f64> = (0..c)
            .map(|ch| {
                let (lo, hi) = window(ch);
                k + alpha / g.size as f64 * (lo..hi).map(|j| xr[j] as f64 * xr[j] as f64).sum::<f64>()
            })
            .collect();
        for ch in 0..c {
            let (xc, gc) = (xr[ch] as f64, gy[p * c + ch] as f64);
            y[p * c + ch] = xc * d[ch].powf(-beta);
            gx[p * c + ch] += gc * d[ch].powf(-beta);
            // dy[ch]/dx[j] for j in window(ch): -beta x[ch] d^(-beta-1) * 2 alpha/size x[j]
            let (lo, hi) = window(ch);
            for j in lo..hi {
                gx[p * c + j] -= gc * beta * xc * d[ch].powf(-beta - 1.0) * 2.0 * alpha / g.size as f64 * xr[j] as f64;
            }
        }
    }
    (y, gx)
}

#[test]
fn lrn_forward_backward() {
    let (pixels, c) = (3 * 7 * 13, 33);
    let x: Vec<f32> = seeded(90, pixels * c).iter().map(|v| v * 3.0).collect();
    let gy = seeded(91, pixels * c);
    let geoms = [
        LrnGeom { size: 5, alpha: 1e-4, beta: 0.75, k: 2.0 }, // AlexNet
        LrnGeom { size: 4, alpha: 0.5, beta: 0.75, k: 1.0 },  // even: window longer below than above
        LrnGeom { size: 1, alpha: 0.3, beta: 0.5, k: 1.5 },
        LrnGeom { size: 40, alpha: 2.0, beta: 1.25, k: 0.5 }, // wider than the 33 channels
    ];
    for g in geoms {
        let (want_y, want_gx) = lrn_ref(&x, &gy, c, &g);
        for dev in devices() {
            let d = dev.as_ref();
            let what = format!("{}.lrn{g:?}", d.name());
            let (xp, gyp, y, gx) = (put(d, &x), put(d, &gy), out(d, x.len()), out(d, x.len()));
            cuda::lrn::forward(d, xp, y, pixels, c, &g).unwrap();
            assert_close(&what, &get(d, y, x.len()), &f32s(&want_y), 1e-6, 1e-5);
            cuda::lrn::backward(d, xp, gyp, gx, pixels, c, &g).unwrap();
            assert_close(&format!("{what}.bwd"), &get(d, gx, x.len()), &f32s(&want_gx), 1e-6, 1e-4);
        }
    }
}

/// ptxas's report (build/nvcc.rs): no kernel may use a stack frame or spill.
#[cfg(feature = "cuda")]
#[test]
fn no_kernel_spills_or_uses_local_memory() {
    // kernels allowed a stack frame (none so far)
    const ALLOWED: &[&str] = &[];
    let path = std::path::Path::new(env!("OUT_DIR")).join("ptxas-report.txt");
    let report = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut current = String::new();
    let mut bad = Vec::new();
    let mut seen = 0;
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let kernel = rest.split('\'').next().unwrap_or("");
            let arch = rest.split("for '").nth(1).map_or("", |a| a.trim_end_matches('\''));
            current = format!("{kernel} ({arch})");
            seen += 1;
        }
        if line.contains("bytes stack frame") {
            let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse().ok()).collect();
            if nums.iter().any(|&v| v != 0) && !ALLOWED.iter().any(|a| current.starts_with(a)) {
                bad.push(format!("{current}: {}", line.trim()));
            }
        }
    }
    assert!(seen > 0, "{}: no kernels in the report", path.display());
    assert!(bad.is_empty(), "kernels with a stack frame or spills:\n{}", bad.join("\n"));
}

/// Hopper's wgmma forward (`conv2d_fwd_bf16_wgmma_f32`, kernels/conv_wgmma_sm90a.cu) against
/// the mma.sync bf16 tap kernel: the same bf16 roundings of the same operands, f32 sums in
/// another order, so equal to ~2^-20 of the output's scale. Shapes: 3x3 at strides 1 and 2, a
/// 1x1, two groups, M not a multiple of the 128-row tile, og not a multiple of 64 (a ragged
/// N block), through the whole epilogue (bias, residual, SiLU, a channel slice of wider rows,
/// the rest untouched) and split-K in 1 and 3 parts. On the emulator, and on a CC 9.0 card
/// (elsewhere the kernel is absent and the engine cannot take it: checked). Misuse: channels
/// per group not a multiple of 64 are refused.
#[test]
fn conv_wgmma_forward_matches_the_mma_sync_tap_kernel() {
    let geom = |stride, pad, groups| Conv2dGeom { stride, pad, dilation: [1, 1], groups };
    let cases = [
        ("3x3_s1", ConvShape { n: 2, h: 9, w: 11, c: 128, cout: 96, kh: 3, kw: 3 }, geom([1, 1], [1, 1, 1, 1], 1)),
        ("3x3_s2", ConvShape { n: 1, h: 13, w: 12, c: 64, cout: 64, kh: 3, kw: 3 }, geom([2, 2], [1, 1, 1, 1], 1)),
        ("1x1_grouped", ConvShape { n: 1, h: 10, w: 15, c: 256, cout: 160, kh: 1, kw: 1 }, geom([1, 1], [0, 0, 0, 0], 2)),
    ];
    let mut ran = 0;
    for (what, s, g) in cases {
        let (oh, ow) = s.out_hw(&g).unwrap();
        let (cg, pix) = (s.c / g.groups, s.n * oh * ow);
        let x = seeded(90, s.n * s.h * s.w * s.c);
        let w = seeded(91, s.cout * cg * s.kh * s.kw);
        let (b, res) = (seeded(92, s.cout), seeded(93, pix * s.cout));
        let stride = s.cout + 3;
        for dev in devices() {
            let d = dev.as_ref();
            if !cuda::conv::wgmma_applies(d, &s, &g) {
                eprintln!("{}: no wgmma kernel (sm_90a only): skipped", d.name());
                continue;
            }
            let (xp, wo, wpk, rows, bp, rp) = (put(d, &x), put(d, &w), out(d, w.len()), out(d, w.len()), put(d, &b), put(d, &res));
            cuda::conv::repack_weight(d, wo, wpk, s.cout, cg, s.kh, s.kw).unwrap();
            cuda::conv::rows_weight(d, wpk, rows, s.cout, cg, s.kh, s.kw).unwrap();
            let ws = out(d, 3 * pix * s.cout);
            let run = |wgmma: bool, split: SplitK| {
                let y = put(d, &vec![-3.5; pix * stride]);
                let staging = if wgmma { TcStaging::Wgmma } else { TcStaging::Tap };
                cuda::conv::forward_fused_as(d, Precision::Bf16, staging, xp, wpk, Some(rows), Some(bp), Some(rp), y, stride, 1, &s, &g, Some(Act::Silu), split).unwrap();
                let v = get(d, y, pix * stride);
                d.free(y);
                v
            };
            let want = run(false, SplitK::NONE);
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for parts in [1, 3] {
                let got = run(true, if parts == 1 { SplitK::NONE } else { SplitK { parts, ws } });
                let name = format!("{}.wgmma_{what}.parts{parts}", d.name());
                assert_close(&name, &got, &want, scale * 2f32.powi(-18), 2f32.powi(-18));
                let spare = (0..pix).flat_map(|p| [got[p * stride], got[p * stride + stride - 2], got[p * stride + stride - 1]]);
                assert!(spare.into_iter().all(|v| v == -3.5), "{name}: channels outside the slice");
            }
            for p in [xp, wo, wpk, rows, bp, rp, ws] {
                d.free(p);
            }
            ran += 1;
        }
    }
    assert!(ran > 0, "the emulator has the wgmma kernel");
    // misuse: 96 channels are one and a half K slices
    let dev = deepviz::device::emu::EmuDevice::new();
    let (s, g) = (ConvShape { n: 1, h: 4, w: 4, c: 96, cout: 64, kh: 1, kw: 1 }, geom([1, 1], [0, 0, 0, 0], 1));
    let e = cuda::conv::forward_fused_as(&dev, Precision::Bf16, TcStaging::Wgmma, DevicePtr(0), DevicePtr(0), None, None, None, DevicePtr(0), 64, 0, &s, &g, None, SplitK::NONE).unwrap_err().to_string();
    assert!(e.contains("multiple of 64"), "{e}");
}
