//! Max, average and adaptive-average pooling against direct f64 references written here from
//! PyTorch's definitions, backward passes against central differences, and PyTorch's corner
//! cases by hand: ties (first in the window wins), NaN, padding as -inf, `ceil_mode` windows
//! that run past the padded input (and their average divisor), `count_include_pad` both ways,
//! adaptive windows with out > in and non-divisible sizes.

mod common;
use common::*;
use deepviz::backend::cpu::Cpu;
use deepviz::backend::Pool2dGeom;
use deepviz::Tensor;

fn geom(kernel: [usize; 2], stride: [usize; 2], pad: [usize; 2], ceil_mode: bool, count_include_pad: bool) -> Pool2dGeom {
    Pool2dGeom { kernel, stride, pad, ceil_mode, count_include_pad }
}

/// Window positions along one dimension (may lie in the padding or past the input).
fn taps(o: usize, g: &Pool2dGeom, d: usize) -> impl Iterator<Item = isize> {
    let start = (o * g.stride[d]) as isize - g.pad[d] as isize;
    start..start + g.kernel[d] as isize
}

/// Max over the window's real input positions in row-major order, the first maximum winning.
fn max_ref(x: &[f64], s: &[usize], g: &Pool2dGeom) -> (Vec<f64>, Vec<u32>) {
    let (h, w) = (s[2], s[3]);
    let (oh, ow) = g.out_hw(h, w).unwrap();
    let (mut y, mut arg) = (vec![], vec![]);
    for p in 0..s[0] * s[1] {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best: Option<(f64, usize)> = None;
                for iy in taps(oy, g, 0) {
                    for ix in taps(ox, g, 1) {
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue; // padding never wins
                        }
                        let i = iy as usize * w + ix as usize;
                        let v = x[p * h * w + i];
                        if best.map_or(true, |(b, _)| v > b) {
                            best = Some((v, i));
                        }
                    }
                }
                let (v, i) = best.expect("a pool window with no input element");
                y.push(v);
                arg.push(i as u32);
            }
        }
    }
    (y, arg)
}

/// Average with PyTorch's divisor: the count of window positions inside the padded input
/// `[-pad, in + pad)` (count_include_pad) or inside the input; 0 for a window with no input.
fn avg_ref(x: &[f64], s: &[usize], g: &Pool2dGeom) -> Vec<f64> {
    let (h, w) = (s[2], s[3]);
    let (oh, ow) = g.out_hw(h, w).unwrap();
    let mut y = vec![];
    for p in 0..s[0] * s[1] {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut sum, mut inside, mut padded) = (0.0, 0usize, 0usize);
                for iy in taps(oy, g, 0) {
                    for ix in taps(ox, g, 1) {
                        let in_pad = |v: isize, n: usize, p: usize| v >= -(p as isize) && v < (n + p) as isize;
                        if in_pad(iy, h, g.pad[0]) && in_pad(ix, w, g.pad[1]) {
                            padded += 1;
                        }
                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                            inside += 1;
                            sum += x[p * h * w + iy as usize * w + ix as usize];
                        }
                    }
                }
                let div = if g.count_include_pad { padded } else { inside };
                y.push(if inside == 0 { 0.0 } else { sum / div as f64 });
            }
        }
    }
    y
}

fn adaptive_ref(x: &[f64], s: &[usize], out: [usize; 2]) -> Vec<f64> {
    let (h, w) = (s[2], s[3]);
    let win = |o: usize, n: usize, i: usize| (o * i / n, ((o + 1) * i).div_ceil(n));
    let mut y = vec![];
    for p in 0..s[0] * s[1] {
        for oy in 0..out[0] {
            let (y0, y1) = win(oy, out[0], h);
            for ox in 0..out[1] {
                let (x0, x1) = win(ox, out[1], w);
                let mut sum = 0.0;
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        sum += x[p * h * w + iy * w + ix];
                    }
                }
                y.push(sum / ((y1 - y0) * (x1 - x0)) as f64);
            }
        }
    }
    y
}

/// The geometries every pool is tested on: kernel ≠ stride, padding, ceil_mode windows that
/// run past the edge (7 or 8 rows, kernel 3 stride 2 pad 1; kernel 3 stride 3 pad 0).
fn cases() -> Vec<(&'static str, [usize; 4], Pool2dGeom)> {
    vec![
        ("k3x2_s2x3_p1_ceil", [3, 5, 7, 13], geom([3, 2], [2, 3], [1, 1], true, true)),
        ("k3_s2_floor_33ch", [3, 33, 7, 13], geom([3, 3], [2, 2], [0, 0], false, true)),
        ("k2_s1_p1_overlap", [2, 4, 9, 13], geom([2, 2], [1, 1], [1, 1], false, true)),
        ("k3_s2_p1_ceil_h8", [3, 5, 8, 13], geom([3, 3], [2, 2], [1, 1], true, true)),
        ("k3_s3_ceil", [3, 5, 7, 13], geom([3, 3], [3, 3], [0, 0], true, true)),
        ("k2_s2_ceil_odd", [3, 5, 7, 13], geom([2, 2], [2, 2], [0, 0], true, true)),
        // rows wide enough for the AVX-512 max pool (16 output columns a vector, stride 1 or
        // 2), with scalar columns on both sides of the vectors
        ("k3_s2_p1_wide", [2, 3, 6, 75], geom([3, 3], [2, 2], [1, 1], false, true)),
        ("k3_s1_p1_wide", [2, 3, 5, 50], geom([3, 3], [1, 1], [1, 1], true, true)),
        ("k2_s2_ceil_wide", [1, 2, 5, 67], geom([2, 2], [2, 2], [0, 0], true, false)),
    ]
}

#[test]
fn max_pool_forward_argmax_and_backward() {
    let cpu = Cpu;
    for (name, s, g) in cases() {
        let x = seeded_tensor(11, &s);
        let xd = f64s(&x.data);
        let (want, want_arg) = max_ref(&xd, &s, &g);
        let (y, arg) = cpu.max_pool2d(&x, &g);
        let (oh, ow) = g.out_hw(s[2], s[3]).unwrap();
        assert_eq!(y.shape, [s[0], s[1], oh, ow], "{name}");
        assert_close(&format!("maxpool.{name}.forward"), &y.data, &f32s(&want), 0.0, 0.0);
        assert_eq!(arg, want_arg, "{name}: argmax");
        let r = seeded_tensor(12, &y.shape);
        let gx = cpu.max_pool2d_backward(&r, &arg, &s);
        fd_check(&format!("maxpool.{name}.gx"), &x.data, &gx.data,
            |xv| dot(&r.data, &max_ref(xv, &s, &g).0), 1e-6, 200, 1e-5, 1e-5);
    }
}

#[test]
fn max_pool_ties_go_to_the_first_element() {
    // constant input: every element ties; each window's gradient must land on exactly one
    // element, the first real one in row-major order (so never on padding)
    let cpu = Cpu;
    for (name, s, g) in cases() {
        let x = Tensor::full(&s, 0.5);
        let (y, arg) = cpu.max_pool2d(&x, &g);
        assert!(y.data.iter().all(|&v| v == 0.5), "{name}: padding must act as -inf");
        let (oh, ow) = (y.shape[2], y.shape[3]);
        let w = s[3];
        let mut want = vec![0.0f32; x.numel()];
        for (o, &a) in arg.iter().enumerate() {
            let (p, oy, ox) = (o / (oh * ow), o / ow % oh, o % ow);
            let first = |o: usize, d: usize| ((o * g.stride[d]) as isize - g.pad[d] as isize).max(0) as usize;
            assert_eq!(a as usize, first(oy, 0) * w + first(ox, 1), "{name}: tie at output {o}");
            want[p * s[2] * w + a as usize] += 1.0;
        }
        let gx = cpu.max_pool2d_backward(&Tensor::full(&y.shape, 1.0), &arg, &s);
        assert_close(&format!("maxpool.{name}.ties"), &gx.data, &want, 0.0, 0.0);
        assert_eq!(gx.data.iter().sum::<f32>() as usize, y.numel());
    }
}

#[test]
fn max_pool_nan_wins() {
    // PyTorch updates on `val > maxval || isnan(val)`: a NaN in the window is the result
    let cpu = Cpu;
    let mut x = seeded_tensor(13, &[1, 1, 5, 5]);
    x.data[2 * 5 + 2] = f32::NAN;
    let (y, arg) = cpu.max_pool2d(&x, &geom([3, 3], [2, 2], [0, 0], false, true));
    assert!(y.data.iter().all(|v| v.is_nan()), "{:?}", y.data);
    assert!(arg.iter().all(|&a| a == 12));
    // wide planes (the vector path): NaNs, -inf and ties at scattered places, against
    // PyTorch's rule written out
    for (name, s, g) in cases() {
        let mut x = seeded_tensor(14, &s);
        for (i, v) in x.data.iter_mut().enumerate() {
            *v = match i * 7919 % 23 {
                0 => f32::NAN,
                1 | 2 => f32::NEG_INFINITY,
                3 | 4 => 0.25,
                _ => *v,
            };
        }
        let (h, w) = (s[2], s[3]);
        let (oh, ow) = g.out_hw(h, w).unwrap();
        let (y, arg) = cpu.max_pool2d(&x, &g);
        for p in 0..s[0] * s[1] {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best: Option<(f32, usize)> = None;
                    for iy in taps(oy, &g, 0).filter(|&iy| iy >= 0 && iy < h as isize) {
                        for ix in taps(ox, &g, 1).filter(|&ix| ix >= 0 && ix < w as isize) {
                            let i = iy as usize * w + ix as usize;
                            let v = x.data[p * h * w + i];
                            if best.is_none_or(|(b, _)| v > b || v.is_nan()) {
                                best = Some((v, i));
                            }
                        }
                    }
                    let (v, i) = best.unwrap();
                    let o = (p * oh + oy) * ow + ox;
                    assert!(y.data[o].to_bits() == v.to_bits() && arg[o] as usize == i, "{name}: output {o}: {} at {} for {v} at {i}", y.data[o], arg[o]);
                }
            }
        }
    }
}

#[test]
fn avg_pool_forward_and_backward_both_divisors() {
    let cpu = Cpu;
    for (name, s, g) in cases() {
        for include in [true, false] {
            let g = Pool2dGeom { count_include_pad: include, ..g };
            let what = format!("avgpool.{name}.include_pad_{include}");
            let x = seeded_tensor(21, &s);
            let want = avg_ref(&f64s(&x.data), &s, &g);
            let y = cpu.avg_pool2d(&x, &g);
            assert_close(&format!("{what}.forward"), &y.data, &f32s(&want), 1e-6, 1e-5);
            let r = seeded_tensor(22, &y.shape);
            let gx = cpu.avg_pool2d_backward(&r, &s, &g);
            fd_check(&format!("{what}.gx"), &x.data, &gx.data,
                |xv| dot(&r.data, &avg_ref(xv, &s, &g)), 1e-3, 200, 1e-5, 1e-5);
        }
    }
}

#[test]
fn avg_pool_ceil_mode_divisor_matches_pytorch_by_hand() {
    // torch.nn.functional.avg_pool2d on a 1x3 row [1, 2, 3], kernel (1, 2), stride (1, 2):
    //   padding 0, ceil_mode:            [1.5, 3.0]  (last window clipped to the input: /1)
    //   padding (0, 1), ceil_mode:       [0.5, 2.5]  (count_include_pad: first window /2)
    //   same, count_include_pad=False:   [1.0, 2.5]
    let cpu = Cpu;
    let x = Tensor::new(vec![1, 1, 1, 3], vec![1.0, 2.0, 3.0]).unwrap();
    let run = |pad, include| cpu.avg_pool2d(&x, &geom([1, 2], [1, 2], [0, pad], true, include)).data;
    assert_eq!(run(0, true), [1.5, 3.0]);
    assert_eq!(run(1, true), [0.5, 2.5]);
    assert_eq!(run(1, false), [1.0, 2.5]);
}

#[test]
fn adaptive_avg_pool_any_output_size() {
    let cpu = Cpu;
    let s = [3, 5, 7, 13];
    // non-divisible, out > in (windows repeat), identity, global
    for out in [[3, 5], [4, 6], [10, 17], [7, 13], [1, 1]] {
        let what = format!("adaptive.{}x{}", out[0], out[1]);
        let x = seeded_tensor(31, &s);
        let want = adaptive_ref(&f64s(&x.data), &s, out);
        let y = cpu.adaptive_avg_pool2d(&x, out);
        assert_eq!(y.shape, [3, 5, out[0], out[1]]);
        assert_close(&format!("{what}.forward"), &y.data, &f32s(&want), 1e-6, 1e-5);
        let r = seeded_tensor(32, &y.shape);
        let gx = cpu.adaptive_avg_pool2d_backward(&r, &s);
        fd_check(&format!("{what}.gx"), &x.data, &gx.data,
            |xv| dot(&r.data, &adaptive_ref(xv, &s, out)), 1e-3, 200, 1e-5, 1e-5);
    }
    // identity really is the identity
    let x = seeded_tensor(33, &s);
    assert_eq!(cpu.adaptive_avg_pool2d(&x, [7, 13]).data, x.data);
}
