//! Activation maximisation (`viz::Maximize`, `deepviz maximize`): the optimised pictures raise
//! their target's score far above where they started and a class above the other classes;
//! channel and neuron targets work; the run is deterministic from its seed; the emulated CUDA
//! engine follows the CPU engine; scale and rotation keep the score rising; the clippings make the
//! host wait for nothing per step; and bad settings are errors, not panics.

mod common;

use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::engine::Engine;
use deepviz::viz::{Maximize, Target};
use deepviz::Tensor;

#[test]
fn maximising_raises_each_targets_score() {
    let model = Arc::new(common::st::fixture_model("resnet18"));
    let eng = Engine::new(model.clone(), Cpu).unwrap();
    let pre = model.preprocess;
    let layer = model.resolve("layer3").unwrap();
    let targets = [Target::Class(3), Target::Class(7), Target::Channel { layer, channel: 5 }, Target::Neuron { layer, channel: 9, y: 1, x: 1 }];
    // jitter 1: a 32-pixel random-weight network is far from shift-invariant, so a picture
    // optimised under 8-pixel shifts need not score high unshifted (scale and rotation: below)
    let x = Maximize { steps: 40, lr: 0.1, jitter: 1, scales: vec![1.0], rotate: 0.0, ..Maximize::default() };
    let size = [32, 32];
    let y = x.run(&eng, &targets, size, &pre, &mut || {}).unwrap();
    assert_eq!(y.shape, [4, 3, 32, 32]);
    // the starting point: the mean image (zero in normalised units)
    let start = Maximize::scores(&eng, &Tensor::zeros(&y.shape), &targets).unwrap();
    let end = Maximize::scores(&eng, &y, &targets).unwrap();
    for (i, t) in targets.iter().enumerate() {
        assert!(end[i] > start[i] + 1.0 && end[i] > 2.0 * start[i].abs(), "{t:?}: score {} → {}", start[i], end[i]);
    }
    // a class picture raises its class above the others: the class's margin over the mean
    // logit grows (maximising the unnormalised score can lift other classes too; on a random
    // network it need not make the class the top one)
    let logits = |x: &Tensor| eng.download(eng.forward(eng.upload(x).unwrap(), model.output(), &[]).unwrap().get(model.output()).unwrap()).unwrap();
    let (l0, l1) = (logits(&Tensor::zeros(&y.shape)), logits(&y));
    for (i, c) in [(0, 3), (1, 7)] {
        let margin = |l: &Tensor| l.item(i)[c] - l.item(i).iter().sum::<f32>() / l.item(i).len() as f32;
        assert!(margin(&l1) > margin(&l0) + 1.0, "picture {i}: class {c}'s margin over the mean {} → {}", margin(&l0), margin(&l1));
    }
    // every value stays a valid pixel
    let lo: Vec<f32> = (0..3).map(|c| -pre.mean[c] / pre.std[c]).collect();
    let hi: Vec<f32> = (0..3).map(|c| (1.0 - pre.mean[c]) / pre.std[c]).collect();
    for (k, v) in y.data.iter().enumerate() {
        let c = k / (32 * 32) % 3;
        assert!(*v >= lo[c] - 1e-6 && *v <= hi[c] + 1e-6, "value {v} outside channel {c}'s range");
    }
    // deterministic from the seed, and another seed gives another picture
    let again = x.run(&eng, &targets, size, &pre, &mut || {}).unwrap();
    assert!(y.data.iter().zip(&again.data).all(|(a, b)| a.to_bits() == b.to_bits()));
    let other = Maximize { seed: 1, ..x.clone() }.run(&eng, &targets, size, &pre, &mut || {}).unwrap();
    assert!(common::rel_rms(&other.data, &y.data) > 1e-3);

    // the emulated CUDA engine follows the CPU engine (a few steps; the optimisation amplifies
    // rounding differences, so the scores, not the pixels, are compared)
    let short = Maximize { steps: 3, ..x.clone() };
    let gpu = Engine::new(model.clone(), Gpu::emulated()).unwrap();
    let (a, b) = (short.run(&eng, &targets[..2], [24, 24], &pre, &mut || {}).unwrap(), short.run(&gpu, &targets[..2], [24, 24], &pre, &mut || {}).unwrap());
    assert!(common::rel_rms(&b.data, &a.data) < 1e-3, "emu vs CPU pictures: {}", common::rel_rms(&b.data, &a.data));

    // Yosinski's clippings: after the last step at least that share of each picture's pixels
    // is the mean colour (0 in every channel), not all of them, and the score still rises. (The
    // neuron's picture is left out of the contribution's count: outside its receptive field
    // every pixel contributes exactly 0, the 60th percentile is 0, and nothing is below it.)
    for (clip, counted) in [(Maximize { norm_pct: 60.0, ..x.clone() }, 4), (Maximize { contribution_pct: 60.0, ..x.clone() }, 3)] {
        let y = clip.run(&eng, &targets, size, &pre, &mut || {}).unwrap();
        for i in 0..counted {
            let it = y.item(i);
            let zero = (0..32 * 32).filter(|&p| (0..3).all(|c| it[c * 32 * 32 + p] == 0.0)).count();
            assert!(zero as f64 >= 0.6 * 1023.0 && zero < 1024, "picture {i}: {zero} of 1024 pixels clipped ({clip:?})");
        }
        let end = Maximize::scores(&eng, &y, &targets).unwrap();
        // (the neuron of this random network stays dead under either clipping: score 0 → 0)
        assert!(end[..3].iter().zip(&start).all(|(e, s)| e > s), "clipped: {start:?} → {end:?}");
    }
    // bad settings and targets: errors
    for bad in [Maximize { steps: 0, ..x.clone() }, Maximize { lr: f32::NAN, ..x.clone() }, Maximize { l2: -1.0, ..x.clone() }, Maximize { norm_pct: 100.0, ..x.clone() }, Maximize { contribution_pct: -1.0, ..x.clone() }] {
        assert!(bad.run(&eng, &targets, size, &pre, &mut || {}).is_err());
    }
    assert!(x.run(&eng, &[], size, &pre, &mut || {}).is_err());
    assert!(x.run(&eng, &[Target::Class(100_000)], size, &pre, &mut || {}).is_err());
    assert!(x.run(&eng, &targets, [4, 4], &pre, &mut || {}).is_err());
}

#[test]
fn scale_and_rotation_keep_the_score_rising() {
    let model = Arc::new(common::st::fixture_model("resnet18"));
    let eng = Engine::new(model.clone(), Cpu).unwrap();
    let pre = model.preprocess;
    let layer = model.resolve("layer3").unwrap();
    let targets = [Target::Class(3), Target::Class(7), Target::Channel { layer, channel: 5 }];
    // the default transforms: zooms 0.95–1.05, turns up to 5°, the second jitter
    let x = Maximize { steps: 40, lr: 0.1, jitter: 2, ..Maximize::default() };
    assert!(x.rotate > 0.0 && x.scales.len() > 1);
    let size = [32, 32];
    let y = x.run(&eng, &targets, size, &pre, &mut || {}).unwrap();
    let start = Maximize::scores(&eng, &Tensor::zeros(&y.shape), &targets).unwrap();
    let end = Maximize::scores(&eng, &y, &targets).unwrap();
    for (i, t) in targets.iter().enumerate() {
        assert!(end[i] > start[i] + 1.0 && end[i] > 2.0 * start[i].abs(), "{t:?}: score {} → {}", start[i], end[i]);
    }
    // the transforms do something, deterministically from the seed
    let plain = Maximize { scales: vec![1.0], rotate: 0.0, ..x.clone() }.run(&eng, &targets, size, &pre, &mut || {}).unwrap();
    assert!(common::rel_rms(&plain.data, &y.data) > 1e-3);
    let again = x.run(&eng, &targets, size, &pre, &mut || {}).unwrap();
    assert!(y.data.iter().zip(&again.data).all(|(a, b)| a.to_bits() == b.to_bits()));
    // a large turn alone, and a zoom alone, still raise the class scores (less: this random
    // network is far from invariant to either)
    for one in [Maximize { scales: vec![1.0], rotate: 30.0, ..x.clone() }, Maximize { scales: vec![0.8, 1.25], rotate: 0.0, ..x.clone() }] {
        let end = Maximize::scores(&eng, &one.run(&eng, &targets[..2], size, &pre, &mut || {}).unwrap(), &targets[..2]).unwrap();
        assert!(end.iter().zip(&start).all(|(e, s)| e > s), "{one:?}: {start:?} → {end:?}");
    }
    // the emulated CUDA engine follows the CPU engine through the warp and its adjoint
    let short = Maximize { steps: 3, ..x.clone() };
    let gpu = Engine::new(model.clone(), Gpu::emulated()).unwrap();
    let (a, b) = (short.run(&eng, &targets[..2], [24, 24], &pre, &mut || {}).unwrap(), short.run(&gpu, &targets[..2], [24, 24], &pre, &mut || {}).unwrap());
    assert!(common::rel_rms(&b.data, &a.data) < 1e-3, "emu vs CPU pictures: {}", common::rel_rms(&b.data, &a.data));
    // bad scales and angles: errors that say what is allowed
    for bad in [vec![], vec![0.0], vec![1.0, -0.5], vec![f32::NAN], vec![f32::INFINITY]] {
        let e = Maximize { scales: bad.clone(), ..x.clone() }.run(&eng, &targets, size, &pre, &mut || {}).unwrap_err().to_string();
        assert!(e.contains("scales must be finite and > 0"), "{bad:?}: {e}");
    }
    for bad in [180.5, -1.0, f32::NAN, f32::INFINITY] {
        let e = Maximize { rotate: bad, ..x.clone() }.run(&eng, &targets, size, &pre, &mut || {}).unwrap_err().to_string();
        assert!(e.contains("[0, 180] degrees"), "{bad}: {e}");
    }
}

/// Every step of a run with both clippings on and the transforms, and of one in the Fourier
/// parameterisation, on the recording CUDA device: the host waits (downloads, uploads, syncs,
/// frees between launches) as often for 6 steps as for 2 — none per step; the old host
/// percentile downloaded and uploaded twice a step.
#[test]
fn clipping_and_transforms_make_the_host_wait_for_nothing_per_step() {
    use deepviz::device::record::RecordingDevice;
    let model = Arc::new(deepviz::model::Model::placeholder("resnet18").unwrap());
    let pre = model.preprocess;
    let waits = |x: &Maximize, kernel: &str| {
        let dev = Arc::new(RecordingDevice::new());
        let eng = Engine::new(model.clone(), Gpu::new(dev.clone())).unwrap();
        let run = || x.run(&eng, &[Target::Class(1), Target::Class(2)], [32, 32], &pre, &mut || {}).unwrap();
        run(); // weights prepared, constants kept
        dev.start();
        run();
        let t = dev.report();
        assert!(t.kernels.iter().any(|(k, _)| k == kernel) && t.kernels.iter().any(|(k, _)| k == "warp_bwd_f32"), "{:?}", t.kernels);
        t.host_syncs
    };
    let clipped = |steps| Maximize { steps, norm_pct: 30.0, contribution_pct: 30.0, ..Maximize::default() };
    let (two, six) = (waits(&clipped(2), "reduce_percentile_f32"), waits(&clipped(6), "reduce_percentile_f32"));
    assert_eq!(two, six, "host waits: {two} in 2 steps, {six} in 6");
    let fourier = |steps| Maximize { steps, ..Maximize::fourier() };
    let (two, six) = (waits(&fourier(2), "sigmoid_bwd_f32"), waits(&fourier(6), "sigmoid_bwd_f32"));
    assert_eq!(two, six, "Fourier parameterisation: host waits: {two} in 2 steps, {six} in 6");
}

#[test]
fn maximize_cli_writes_one_picture_per_target_and_refuses_bad_input() {
    let dir = std::env::temp_dir().join(format!("deepviz-maximize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |args: &[&str]| std::process::Command::new(env!("CARGO_BIN_EXE_deepviz")).arg("maximize").args(args).output().unwrap();
    let out = dir.to_string_lossy().into_owned();
    let o = run(&["--class", "130,967", "--unit", "_blocks.5:3", "--steps", "4", "--size", "64", "--device", "cpu", "--out", &out, "--raw", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["class_name"], "flamingo");
    for f in ["maximize_c130.png", "maximize_c967.png", "maximize_unit-_blocks.5._bn2-3.png", "maximize_c130.npy"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    assert_eq!(image::open(dir.join("maximize_c130.png")).unwrap().width(), 64);
    // the Fourier parameterisation, with lucid's settings or others
    for extra in [vec![], vec!["--decay-power", "1.5", "--sd", "0.02", "--no-decorrelate"]] {
        let f = dir.join("fourier").to_string_lossy().into_owned();
        let mut a = vec!["--class", "130", "--param", "fourier", "--steps", "3", "--size", "48", "--device", "cpu", "--out", &f, "--json"];
        a.extend(extra.iter().copied());
        let o = run(&a);
        assert!(o.status.success(), "{a:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(image::open(dir.join("fourier/maximize_c130.png")).unwrap().width(), 48);
    }
    // bad input: one error line, status 1, nothing new written
    for args in [vec!["--steps", "4"], vec!["--class", "5000"], vec!["--unit", "no.such.layer:1"], vec!["--class", "1", "--lr=-1"], vec!["--class", "1", "--size", "4"], vec!["--class", "1", "--scale", "1,0"], vec!["--class", "1", "--rotate", "200"], vec!["--class", "1", "--scale", "nan"], vec!["--class", "1", "--param", "fourier", "--blur-every", "2"], vec!["--class", "1", "--param", "fourier", "--sd=-1"], vec!["--class", "1", "--param", "fourier", "--decay-power=-1"], vec!["--class", "1", "--sd", "0.1"]] {
        let bad = dir.join("bad");
        let mut a = args.clone();
        let b = bad.to_string_lossy().into_owned();
        a.extend(["--device", "cpu", "--out", &b]);
        let o = run(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("error: ") && !err.contains("panicked"), "{args:?}: {err}");
        assert!(!bad.exists(), "{args:?} wrote output");
    }
    // an unknown parameterisation: clap's usage error, naming the known ones
    let o = run(&["--class", "1", "--param", "wavelet", "--device", "cpu", "--out", &dir.join("bad").to_string_lossy()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("pixels") && err.contains("fourier"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
