//! lucid's decorrelated Fourier parameterisation (`viz::fourier`, `Param::Fourier`): the inverse
//! real 2-D DFT against a float64 direct sum of numpy's `irfft2(norm="ortho")` (itself checked by
//! a round trip through the forward transform, and on hand-computed spectra), on odd and even
//! sides and at 224x224; its adjoint; lucent's colour matrix; the whole chain's value and
//! gradient against a float64 reference; the CPU engine and the emulated GPU; and the score
//! rising under `Param::Fourier` on a fixture network and on the default model.

mod common;

use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::Backend;
use deepviz::engine::Engine;
use deepviz::imageio::Preprocess;
use deepviz::model::Model;
use deepviz::viz::fourier::{color_correlation_normalized, Fourier, FourierImage, Irfft2};
use deepviz::viz::{Maximize, Param, Target};
use deepviz::Tensor;
use std::f64::consts::PI;

/// numpy's `irfft2(X, s=(h, w), norm="ortho")` of one plane, as a direct sum: with X
/// `[h, w/2+1]` complex (re, im interleaved) and θ = 2π(ky·y/h + kx·x/w),
/// x[y, x] = Σ_ky Σ_kx c_kx·Re(X[ky, kx]·e^{iθ}) / √(hw), c_kx = 1 for kx = 0 and (even w)
/// kx = w/2, else 2 (the conjugate twin).
/// numpy transforms the columns in full complex arithmetic and then reads only the real part of
/// the DC and Nyquist bins of each row: the real part of a sum is this sum of real parts.
fn irfft2_ref(spec: &[f64], h: usize, w: usize) -> Vec<f64> {
    let bins = w / 2 + 1;
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for ky in 0..h {
                for kx in 0..bins {
                    let c = if kx == 0 || 2 * kx == w { 1.0 } else { 2.0 };
                    let a = 2.0 * PI * ((ky * y) as f64 / h as f64 + (kx * x) as f64 / w as f64);
                    let (re, im) = (spec[(ky * bins + kx) * 2], spec[(ky * bins + kx) * 2 + 1]);
                    acc += c * (re * a.cos() - im * a.sin());
                }
            }
            out[y * w + x] = acc / ((h * w) as f64).sqrt();
        }
    }
    out
}

/// numpy's `rfft2(x, norm="ortho")` of one plane `[h, w]`: `[h, w/2+1]` complex, interleaved.
fn rfft2_ref(x: &[f64], h: usize, w: usize) -> Vec<f64> {
    let bins = w / 2 + 1;
    let mut out = vec![0.0; h * bins * 2];
    for ky in 0..h {
        for kx in 0..bins {
            let (mut re, mut im) = (0.0, 0.0);
            for y in 0..h {
                for xx in 0..w {
                    let a = -2.0 * PI * ((ky * y) as f64 / h as f64 + (kx * xx) as f64 / w as f64);
                    re += x[y * w + xx] * a.cos();
                    im += x[y * w + xx] * a.sin();
                }
            }
            let k = ((h * w) as f64).sqrt();
            (out[(ky * bins + kx) * 2], out[(ky * bins + kx) * 2 + 1]) = (re / k, im / k);
        }
    }
    out
}

/// Every plane of `spec` `[n, c, h, 2·(w/2+1)]` through [`irfft2_ref`].
fn irfft2_planes(spec: &Tensor, h: usize, w: usize) -> Vec<f64> {
    spec.data.chunks(h * 2 * (w / 2 + 1)).flat_map(|p| irfft2_ref(&common::f64s(p), h, w)).collect()
}

#[test]
fn the_reference_is_numpys_irfft2() {
    // a round trip: rfft2 then irfft2 gives a real picture back, odd and even sides
    for (h, w) in [(5, 7), (8, 6), (3, 4), (6, 5)] {
        let x = common::f64s(&common::seeded(h as u64 * 31 + w as u64, h * w));
        let back = irfft2_ref(&rfft2_ref(&x, h, w), h, w);
        common::assert_close(&format!("roundtrip {h}x{w}"), &common::f32s(&back), &common::f32s(&x), 1e-6, 1e-6);
    }
    // hand-computed: a DC bin of 1 + 5i is a flat 1/√(hw) (its imaginary part is never read);
    // i in the DC column's row ky = 1 is −sin(2πy/h)/√(hw) (read: the columns transform it
    // first); a Nyquist bin of 2 − 3i (even w) is 2·(−1)^x/√(hw)
    let (h, w) = (5, 6);
    let bins = w / 2 + 1;
    let k = ((h * w) as f64).sqrt();
    let mut s = vec![0.0; h * bins * 2];
    (s[0], s[1]) = (1.0, 5.0);
    s[bins * 2 + 1] = 1.0;
    (s[(bins - 1) * 2], s[(bins - 1) * 2 + 1]) = (2.0, -3.0);
    let x = irfft2_ref(&s, h, w);
    for y in 0..h {
        for xx in 0..w {
            let want = (1.0 - (2.0 * PI * y as f64 / h as f64).sin() + 2.0 * if xx % 2 == 0 { 1.0 } else { -1.0 }) / k;
            assert!((x[y * w + xx] - want).abs() < 1e-12, "({y}, {xx}): {} vs {want}", x[y * w + xx]);
        }
    }
}

/// The inverse transform of `s` and the adjoint of `y` on a backend.
fn irfft2_on<B: Backend>(be: B, h: usize, w: usize, s: &Tensor, y: &Tensor) -> (Tensor, Tensor) {
    let f = Irfft2::new(&be, h, w).unwrap();
    let fwd = be.download(&f.forward(&be, &be.upload(s).unwrap()).unwrap()).unwrap();
    let adj = be.download(&f.adjoint(&be, &be.upload(y).unwrap()).unwrap()).unwrap();
    (fwd, adj)
}

#[test]
fn irfft2_matches_numpy_and_its_adjoint_is_the_transpose() {
    for (h, w) in [(5, 7), (8, 6), (7, 8), (6, 5), (1, 9), (9, 1)] {
        let bins = w / 2 + 1;
        let (n, c) = (2, 3);
        let s = common::seeded_tensor(h as u64 * 100 + w as u64, &[n, c, h, 2 * bins]);
        let y = common::seeded_tensor(7 + h as u64 * 100 + w as u64, &[n, c, h, w]);
        let want = common::f32s(&irfft2_planes(&s, h, w));
        let mut runs = vec![("cpu".to_string(), irfft2_on(Cpu, h, w, &s, &y))];
        runs.extend(common::gpus().into_iter().map(|g| (g.name().to_string(), irfft2_on(g, h, w, &s, &y))));
        for (name, (fwd, adj)) in runs {
            assert_eq!(fwd.shape, [n, c, h, w]);
            assert_eq!(adj.shape, s.shape);
            common::assert_close(&format!("irfft2 {h}x{w} {name}"), &fwd.data, &want, 2e-6, 1e-5);
            // ⟨F(s), y⟩ = ⟨s, Fᵀ(y)⟩, in f64 sums
            let lhs = common::dot(&y.data, &common::f64s(&fwd.data));
            let rhs = common::dot(&s.data, &common::f64s(&adj.data));
            assert!((lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()), "{h}x{w} {name}: ⟨F s, y⟩ = {lhs}, ⟨s, Fᵀ y⟩ = {rhs}");
        }
    }
    // bad shapes are errors, not panics
    let f = Irfft2::new(&Cpu, 5, 7).unwrap();
    assert!(f.forward(&Cpu, &Tensor::zeros(&[1, 3, 5, 7])).is_err());
    assert!(f.adjoint(&Cpu, &Tensor::zeros(&[1, 3, 5, 8])).is_err());
    assert!(Irfft2::new(&Cpu, 0, 7).is_err());
}

#[test]
fn irfft2_at_224_agrees_with_the_direct_sum_at_spot_pixels() {
    let (h, w) = (224, 224);
    let bins = w / 2 + 1;
    let s = common::seeded_tensor(224, &[1, 1, h, 2 * bins]);
    let f = Irfft2::new(&Cpu, h, w).unwrap();
    let x = f.forward(&Cpu, &s).unwrap();
    let spec = common::f64s(&s.data);
    for (y, xx) in [(0, 0), (0, 223), (223, 0), (111, 112), (17, 201), (200, 5)] {
        let mut acc = 0.0;
        for ky in 0..h {
            for kx in 0..bins {
                let c = if kx == 0 || 2 * kx == w { 1.0 } else { 2.0 };
                let a = 2.0 * PI * (((ky * y) % h) as f64 / h as f64 + ((kx * xx) % w) as f64 / w as f64);
                acc += c * (spec[(ky * bins + kx) * 2] * a.cos() - spec[(ky * bins + kx) * 2 + 1] * a.sin());
            }
        }
        let want = acc / 224.0;
        let got = x.data[y * w + xx] as f64;
        // the sum has 50 000 terms of size ~1/224 and a value of ~1: f32 GEMM rounding ~1e-5
        assert!((got - want).abs() < 2e-4 * (1.0 + want.abs()), "({y}, {xx}): {got} vs {want}");
    }
}

#[test]
fn the_colour_matrix_is_lucents() {
    // lucent's `color_correlation_normalized` (numpy float32), printed by numpy
    let want = [[0.562828540802002, 0.19482527673244476, 0.043294504284858704], [0.5844758152961731, 0.0, -0.10823626071214676], [0.5844758152961731, -0.19482527673244476, 0.06494175642728806]];
    let got = color_correlation_normalized();
    for i in 0..3 {
        for j in 0..3 {
            assert_eq!(got[i][j], want[i][j] as f32, "C[{i}][{j}]");
        }
    }
}

/// The chain of `viz::fourier` in f64: scale (1 / max(f, 1/max(h, w))^decay / 4), irfft2,
/// colour matrix, sigmoid, normalisation, for spectra `[n, 3, h, 2·(w/2+1)]`.
fn chain_ref(spec: &[f64], n: usize, h: usize, w: usize, decay: f64, decorrelate: bool, pre: &Preprocess) -> Vec<f64> {
    let bins = w / 2 + 1;
    let fftfreq = |k: usize, len: usize| if 2 * k < len { k as f64 / len as f64 } else { (k as f64 - len as f64) / len as f64 };
    let plane = h * 2 * bins;
    let scaled: Vec<f64> = spec
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (ky, kx) = (i % plane / (2 * bins), i % (2 * bins) / 2);
            let f = fftfreq(ky, h).hypot(fftfreq(kx, w));
            v / f.max(1.0 / h.max(w) as f64).powf(decay) / 4.0
        })
        .collect();
    let t: Vec<f64> = scaled.chunks(plane).flat_map(|p| irfft2_ref(p, h, w)).collect();
    let cm = color_correlation_normalized();
    let mut out = vec![0.0; n * 3 * h * w];
    for i in 0..n {
        for p in 0..h * w {
            for c in 0..3 {
                let v = match decorrelate {
                    true => (0..3).map(|d| cm[c][d] as f64 * t[(i * 3 + d) * h * w + p]).sum(),
                    false => t[(i * 3 + c) * h * w + p],
                };
                let pix = 1.0 / (1.0 + (-v).exp());
                out[(i * 3 + c) * h * w + p] = (pix - pre.mean[c] as f64) / pre.std[c] as f64;
            }
        }
    }
    out
}

/// The chain's input value and the gradient of ⟨r, x(s)⟩ on a backend.
fn chain_on<B: Backend>(be: B, h: usize, w: usize, p: &Fourier, pre: &Preprocess, s: &Tensor, r: &Tensor) -> (Tensor, Tensor) {
    let f = FourierImage::new(&be, h, w, p, pre).unwrap();
    let (x, t) = f.image(&be, &be.upload(s).unwrap()).unwrap();
    let g = f.backward(&be, &t, &be.upload(r).unwrap()).unwrap();
    (be.download(&x).unwrap(), be.download(&g).unwrap())
}

#[test]
fn the_chain_and_its_gradient_match_a_float64_reference() {
    let pre = Preprocess::imagenet([0, 0]);
    for (h, w, decay, decorrelate) in [(5, 6, 1.0, true), (7, 5, 1.5, false), (4, 9, 0.0, true)] {
        let n = 2;
        let p = Fourier { decay_power: decay, sd: 0.0, decorrelate };
        let f = FourierImage::new(&Cpu, h, w, &p, &pre).unwrap();
        let shape = f.spectrum_shape(n);
        assert_eq!(shape, [n, 3, h, 2 * (w / 2 + 1)]);
        // spectra large enough that the sigmoid is well away from linear
        let s = Tensor { shape: shape.to_vec(), data: common::seeded(h as u64 + 10 * w as u64, shape.iter().product()).iter().map(|v| v * 0.3).collect() };
        let r = common::seeded_tensor(99, &[n, 3, h, w]);
        let want = chain_ref(&common::f64s(&s.data), n, h, w, decay as f64, decorrelate, &pre);
        let mut runs = vec![("cpu".to_string(), chain_on(Cpu, h, w, &p, &pre, &s, &r))];
        runs.extend(common::gpus().into_iter().map(|g| (g.name().to_string(), chain_on(g, h, w, &p, &pre, &s, &r))));
        for (name, (x, g)) in runs {
            let what = format!("chain {h}x{w} decay {decay} decorrelate {decorrelate} {name}");
            common::assert_close(&what, &x.data, &common::f32s(&want), 1e-5, 1e-5);
            let loss = |sv: &[f64]| common::dot(&r.data, &chain_ref(sv, n, h, w, decay as f64, decorrelate, &pre));
            common::fd_check(&what, &s.data, &g.data, loss, 1e-5, 40, 1e-4, 1e-3);
        }
    }
}

#[test]
fn maximising_a_spectrum_raises_the_score() {
    // the fixture network, as tests/maximize.rs does with pixels: jitter 1, no warps
    let model = Arc::new(common::st::fixture_model("resnet18"));
    let eng = Engine::new(model.clone(), Cpu).unwrap();
    let pre = model.preprocess;
    let layer = model.resolve("layer3").unwrap();
    let targets = [Target::Class(3), Target::Channel { layer, channel: 5 }];
    let x = Maximize { steps: 40, jitter: 1, scales: vec![1.0], rotate: 0.0, ..Maximize::fourier() };
    let size = [32, 30];
    let y = x.run(&eng, &targets, size, &pre, &mut || {}).unwrap();
    assert_eq!(y.shape, [2, 3, 32, 30]);
    // the start: the spectrum's noise, a near-grey picture
    let start = Maximize::scores(&eng, &Maximize { steps: 1, lr: 1e-9, ..x.clone() }.run(&eng, &targets, size, &pre, &mut || {}).unwrap(), &targets).unwrap();
    let end = Maximize::scores(&eng, &y, &targets).unwrap();
    eprintln!("scores {start:?} → {end:?}");
    for (i, t) in targets.iter().enumerate() {
        assert!(end[i] > start[i] + 1.0 && end[i] > 2.0 * start[i].abs(), "{t:?}: score {} → {}", start[i], end[i]);
    }
    // the sigmoid keeps every value a valid pixel (at the ends where it saturates in f32)
    for (k, v) in y.data.iter().enumerate() {
        let c = k / (32 * 30) % 3;
        let (lo, hi) = (-pre.mean[c] / pre.std[c], (1.0 - pre.mean[c]) / pre.std[c]);
        assert!(*v >= lo - 1e-6 && *v <= hi + 1e-6, "value {v} outside channel {c}'s range");
    }
    // deterministic; not the pixel parameterisation's picture; the colours matter
    let again = x.run(&eng, &targets, size, &pre, &mut || {}).unwrap();
    assert!(y.data.iter().zip(&again.data).all(|(a, b)| a.to_bits() == b.to_bits()));
    let rgb = Maximize { param: Param::Fourier(Fourier { decorrelate: false, ..Fourier::default() }), ..x.clone() }.run(&eng, &targets, size, &pre, &mut || {}).unwrap();
    assert!(common::rel_rms(&rgb.data, &y.data) > 1e-3);

    // the emulated GPU follows the CPU engine, with the default transforms
    let short = Maximize { steps: 3, ..Maximize::fourier() };
    let a = short.run(&eng, &targets, [24, 27], &pre, &mut || {}).unwrap();
    for gpu in common::gpus() {
        let dev = gpu.name();
        let gpu = Engine::new(model.clone(), gpu).unwrap();
        let b = short.run(&gpu, &targets, [24, 27], &pre, &mut || {}).unwrap();
        assert!(common::rel_rms(&b.data, &a.data) < 1e-4, "{dev} vs CPU pictures: {}", common::rel_rms(&b.data, &a.data));
    }

    // settings that make no sense with a spectrum, or bad numbers: errors that say so
    for bad in [Maximize { blur_every: 4, ..x.clone() }, Maximize { norm_pct: 10.0, ..x.clone() }, Maximize { contribution_pct: 10.0, ..x.clone() }, Maximize { init_noise: 0.1, ..x.clone() }] {
        let e = bad.run(&eng, &targets, size, &pre, &mut || {}).unwrap_err().to_string();
        assert!(e.contains("no pixels to blur, clip"), "{bad:?}: {e}");
    }
    for (d, sd) in [(-1.0, 0.01), (f32::NAN, 0.01), (1.0, -0.1), (1.0, f32::INFINITY)] {
        let bad = Maximize { param: Param::Fourier(Fourier { decay_power: d, sd, decorrelate: true }), ..x.clone() };
        let e = bad.run(&eng, &targets, size, &pre, &mut || {}).unwrap_err().to_string();
        assert!(e.contains("decay power"), "{d}, {sd}: {e}");
    }
}

#[test]
fn a_spectrum_raises_a_class_score_of_the_default_model() {
    let model = Arc::new(Model::default_model().unwrap());
    let eng = Engine::new(model.clone(), Cpu).unwrap();
    let pre = model.preprocess;
    let targets = [Target::Class(285)];
    let x = Maximize { steps: 12, ..Maximize::fourier() };
    let start = Maximize::scores(&eng, &Maximize { steps: 1, lr: 1e-9, ..x.clone() }.run(&eng, &targets, [96, 96], &pre, &mut || {}).unwrap(), &targets).unwrap();
    let end = Maximize::scores(&eng, &x.run(&eng, &targets, [96, 96], &pre, &mut || {}).unwrap(), &targets).unwrap();
    eprintln!("class 285: score {} → {}", start[0], end[0]);
    assert!(end[0] > start[0] + 10.0, "class 285: score {} → {}", start[0], end[0]);
}
