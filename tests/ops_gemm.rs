//! The CPU engine's matrix product (`backend::cpu::gemm`) against a naive f64 product, on shapes
//! that do not fit its tiles: m, n, k that are not multiples of the register tile, k = 1, k past
//! one packed block, n past one packed block, transposed and strided operands, C wider than n
//! (the padding columns must stay untouched), overwrite and accumulate, products big enough to
//! be split across threads; each through `sgemm`, `sgemm_packed` (weights packed ahead) and the
//! portable path (`matrixmultiply`).

use deepviz::backend::cpu::gemm::{portable, sgemm, sgemm_packed, uses_avx512, Mat, Out, PackedA};

fn seeded(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A `rows x cols` matrix stored row-major with rows `ld` apart, or (`trans`) stored as its
/// transpose (`cols x rows`, rows `ld` apart) and viewed through `.t()`. Returns the storage and
/// the logical values, row-major and dense.
fn operand(seed: u64, rows: usize, cols: usize, trans: bool, pad: usize) -> (Vec<f32>, Vec<f32>) {
    let dense = seeded(seed, rows * cols);
    let (sr, sc) = if trans { (cols, rows) } else { (rows, cols) };
    let ld = sc + pad;
    let mut store = vec![f32::NAN; sr * ld];
    for i in 0..rows {
        for j in 0..cols {
            let (r, c) = if trans { (j, i) } else { (i, j) };
            store[r * ld + c] = dense[i * cols + j];
        }
    }
    (store, dense)
}

fn view(store: &[f32], rows: usize, cols: usize, trans: bool, pad: usize) -> Mat<'_> {
    if trans {
        Mat::strided(store, cols, rows, rows + pad).t()
    } else {
        Mat::strided(store, rows, cols, cols + pad)
    }
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Sgemm,
    Packed,
    Portable,
}

/// `mode`: 0 overwrite, 1 accumulate, 2 a bias per row
fn check(m: usize, n: usize, k: usize, ta: bool, tb: bool, mode: u8, path: Path) {
    let accumulate = mode == 1;
    let bias = seeded(4, m);
    let out = match mode {
        0 => Out::Overwrite,
        1 => Out::Accumulate,
        _ => Out::RowBias(&bias),
    };
    let (pa, pb, cpad) = (3, 5, 7);
    let (sa, a) = operand(1 + m as u64, m, k, ta, pa);
    let (sb, b) = operand(2 + n as u64, k, n, tb, pb);
    let ldc = n + cpad;
    let c0 = seeded(3, m * ldc);
    let mut c = c0.clone();
    let (av, bv) = (view(&sa, m, k, ta, pa), view(&sb, k, n, tb, pb));
    match path {
        Path::Sgemm if mode < 2 => sgemm(av, bv, &mut c, ldc, accumulate),
        Path::Sgemm => sgemm_packed(av, None, bv, &mut c, ldc, out),
        Path::Packed => {
            let packed = PackedA::new(av);
            assert_eq!(packed.is_some(), uses_avx512());
            sgemm_packed(av, packed.as_ref(), bv, &mut c, ldc, out)
        }
        Path::Portable => portable(av, bv, &mut c, ldc, out),
    }
    let what = format!("{path:?} m{m} n{n} k{k} ta{ta} tb{tb} mode{mode}");
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j >= n {
                assert_eq!(got.to_bits(), c0[i * ldc + j].to_bits(), "{what}: padding column ({i},{j}) written");
                continue;
            }
            let mut want: f64 = match mode {
                0 => 0.0,
                1 => c0[i * ldc + j] as f64,
                _ => bias[i] as f64,
            };
            let mut mag = want.abs();
            for p in 0..k {
                let t = a[i * k + p] as f64 * b[p * n + j] as f64;
                want += t;
                mag += t.abs();
            }
            assert!((got as f64 - want).abs() <= 1e-5 * mag + 1e-6, "{what}: ({i},{j}) = {got}, want {want}");
        }
    }
}

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 1, 300),
    (13, 33, 1),
    (12, 32, 256),
    (11, 31, 255),
    (25, 65, 257),
    (37, 1030, 19),
    (5, 17, 600),
    (301, 129, 37),
    (64, 196, 150),
    (130, 47, 200),
];

#[test]
fn gemm_matches_naive_on_awkward_shapes() {
    for path in [Path::Sgemm, Path::Packed, Path::Portable] {
        for &(m, n, k) in SHAPES {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for mode in 0..3 {
                    check(m, n, k, ta, tb, mode, path);
                }
            }
        }
    }
}

#[test]
fn gemm_split_across_threads_matches_naive() {
    // big enough (m·n·k >= 2^20) for the rayon split, along rows (m >= n) and along columns
    for path in [Path::Sgemm, Path::Packed, Path::Portable] {
        for &(m, n, k) in &[(400, 97, 60), (70, 1500, 33)] {
            check(m, n, k, false, false, 0, path);
            check(m, n, k, true, true, 1, path);
            check(m, n, k, false, true, 2, path);
        }
    }
}

#[test]
fn gemm_with_k_zero_writes_zeros_or_biases_or_leaves_c() {
    for accumulate in [false, true] {
        let mut c = vec![2.0f32; 6];
        sgemm(Mat::rows(&[], 2, 0), Mat::rows(&[], 0, 3), &mut c, 3, accumulate);
        assert_eq!(c, if accumulate { vec![2.0; 6] } else { vec![0.0; 6] });
    }
    let mut c = vec![2.0f32; 6];
    sgemm_packed(Mat::rows(&[], 2, 0), None, Mat::rows(&[], 0, 3), &mut c, 3, Out::RowBias(&[5.0, 7.0]));
    assert_eq!(c, [5.0, 5.0, 5.0, 7.0, 7.0, 7.0]);
}

/// The fused epilogue in the GEMM's last store (`sgemm_source_epi`) equals the product followed
/// by the scalar epilogue, to the bit: residual add, ReLU / ReLU6 (NaN kept, ReLU's -0 → +0,
/// ReLU6's -0 kept, as `f32::clamp`), and a ReLU / ReLU6 gradient mask (NaN passes), on C wider
/// than n, with k past one packed block (only the last block's store applies it) and a partial
/// tile, split across threads.
#[test]
fn fused_epilogue_matches_the_separate_ops_bit_for_bit() {
    use deepviz::backend::cpu::gemm::{epilogue_scalar, sgemm_source_epi, Epilogue};
    use deepviz::backend::Act;
    if !uses_avx512() {
        eprintln!("no AVX-512 here: the epilogue runs only in that GEMM");
        return;
    }
    let specials = [0.0f32, -0.0, f32::NAN, 6.0, -6.0, 1e-30, -1e-30];
    let spice = |mut v: Vec<f32>, every: usize| {
        for (i, x) in v.iter_mut().enumerate().filter(|(i, _)| i % every == 0) {
            *x = specials[i / every % specials.len()];
        }
        v
    };
    for (m, k, n) in [(37, 300, 70), (130, 9, 1000), (5, 1, 3), (13, 300, 49), (4, 20, 196), (9, 3, 20)] {
        let ldc = n + 5;
        let a = seeded(1, m * k);
        let b = seeded(2, k * n);
        // a residual that cancels some products exactly gives -0 / +0 after the add
        let res = spice(seeded(3, m * ldc).iter().map(|v| v * 7.0).collect(), 5);
        let mask = spice(seeded(4, m * ldc).iter().map(|v| v * 8.0).collect(), 3);
        let epis: [(Option<&[f32]>, Option<Act>, Option<(&[f32], Act)>); 5] = [
            (Some(&res), Some(Act::Relu), None),
            (Some(&res), Some(Act::Relu6), None),
            (None, Some(Act::Relu6), None),
            (None, None, Some((&mask, Act::Relu))),
            (Some(&res), None, Some((&mask, Act::Relu6))),
        ];
        for (residual, act, mk) in epis {
            let mut want = vec![1.5f32; m * ldc];
            sgemm(Mat::rows(&a, m, k), Mat::rows(&b, k, n), &mut want, ldc, false);
            for i in 0..m {
                epilogue_scalar(&mut want[i * ldc..i * ldc + n], residual.map(|r| &r[i * ldc..]), act, mk.map(|(t, a)| (&t[i * ldc..], a)));
            }
            let mut got = vec![1.5f32; m * ldc];
            sgemm_source_epi(Mat::rows(&a, m, k), None, &Mat::rows(&b, k, n), &mut got, ldc, Out::Overwrite, Epilogue { residual, act, mask: mk });
            let bad = got.iter().zip(&want).position(|(g, w)| g.to_bits() != w.to_bits());
            assert!(bad.is_none(), "{m}x{k}x{n} {act:?}: element {} is {} not {}", bad.unwrap(), got[bad.unwrap()], want[bad.unwrap()]);
            assert!(got.iter().skip(n).step_by(ldc).all(|&v| v == 1.5), "padding columns written");
        }
    }
}
