//! Fully connected forward against a direct f64 product, backward (gx, gw, gb) against
//! central differences of L = Σ r ⊙ linear(x, w, b). Odd sizes: batch 3, 33 in, 17 out.

mod common;
use common::*;
use deepviz::backend::cpu::Cpu;

/// y[i, o] = b[o] + Σ_k x[i, k] w[o, k]
fn linear_ref(x: &[f64], w: &[f64], b: &[f64], n: usize, fin: usize, fout: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * fout];
    for i in 0..n {
        for o in 0..fout {
            y[i * fout + o] = b[o] + (0..fin).map(|k| x[i * fin + k] * w[o * fin + k]).sum::<f64>();
        }
    }
    y
}

#[test]
fn linear_forward_and_backward() {
    let cpu = Cpu;
    // up to 16 rows the forward pass takes dot products (the third shape is large enough for the
    // backward GEMMs to split across threads); 20 rows take the GEMM
    for (n, fin, fout) in [(3, 33, 17), (1, 7, 1), (5, 1280, 1000), (20, 70, 45)] {
        let what = format!("linear.{n}x{fin}x{fout}");
        let x = seeded_tensor(41, &[n, fin]);
        let w = seeded_tensor(42, &[fout, fin]);
        let b = seeded_tensor(43, &[fout]);
        let (xd, wd, bd) = (f64s(&x.data), f64s(&w.data), f64s(&b.data));
        let want = linear_ref(&xd, &wd, &bd, n, fin, fout);
        let y = cpu.linear(&x, &w, Some(&b));
        assert_eq!(y.shape, [n, fout]);
        assert_close(&format!("{what}.forward"), &y.data, &f32s(&want), 1e-4, 1e-4);
        let y0 = cpu.linear(&x, &w, None);
        let want0 = linear_ref(&xd, &wd, &vec![0.0; fout], n, fin, fout);
        assert_close(&format!("{what}.forward_nobias"), &y0.data, &f32s(&want0), 1e-4, 1e-4);

        let r = seeded_tensor(44, &[n, fout]);
        let (gx, gw, gb) = cpu.linear_backward(&x, &w, &r);
        assert_eq!((gx.shape.as_slice(), gw.shape.as_slice(), gb.shape.as_slice()), (&[n, fin][..], &[fout, fin][..], &[fout][..]));
        let samples = if fin * fout > 10_000 { 10 } else { 40 };
        fd_check(&format!("{what}.gx"), &x.data, &gx.data,
            |v| dot(&r.data, &linear_ref(v, &wd, &bd, n, fin, fout)), 1e-3, samples, 1e-4, 1e-4);
        fd_check(&format!("{what}.gw"), &w.data, &gw.data,
            |v| dot(&r.data, &linear_ref(&xd, v, &bd, n, fin, fout)), 1e-3, samples, 1e-4, 1e-4);
        fd_check(&format!("{what}.gb"), &b.data, &gb.data,
            |v| dot(&r.data, &linear_ref(&xd, &wd, v, n, fin, fout)), 1e-3, samples, 1e-4, 1e-4);
    }
}

#[test]
fn linear_accepts_pooled_nchw_input() {
    // [n, c, 1, 1] after a global pool is the same matrix as [n, c]
    let cpu = Cpu;
    let x = seeded_tensor(45, &[3, 33, 1, 1]);
    let w = seeded_tensor(46, &[17, 33]);
    let flat = deepviz::Tensor::new(vec![3, 33], x.data.clone()).unwrap();
    assert_eq!(cpu.linear(&x, &w, None).data, cpu.linear(&flat, &w, None).data);
    let r = seeded_tensor(47, &[3, 17]);
    let (gx, _, _) = cpu.linear_backward(&x, &w, &r);
    assert_eq!(gx.shape, x.shape, "gx keeps x's shape");
}
