//! The model-randomisation sanity check (`viz::sanity`, `deepviz sanity`): Spearman and SSIM by
//! hand and against scikit-image; the cascade's order; re-initialisation and restoring the
//! weights through `Engine::with_params` (restored: the original map to the bit); a map that
//! stops agreeing with itself as the layers go; guided backpropagation passing the check where
//! saliency fails it, on the default model, as the paper found; the emulated GPU following the
//! CPU engine; the command's outputs and its one-line errors.

mod common;

use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::engine::Engine;
use deepviz::viz::sanity::{cascade, normalized_abs, reinitialised, spearman, ssim, Granularity};
use deepviz::viz::{attribution, MethodOptions, Target};
use deepviz::Tensor;

#[test]
fn spearman_and_ssim_by_hand() {
    // one swap in four: 1 − 6·2 / (4·15)
    assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap() - 0.8).abs() < 1e-12);
    // ties share their average rank: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): 4.5 / √(4.5·5)
    assert!((spearman(&[1.0, 2.0, 2.0, 3.0], &[10.0, 20.0, 30.0, 40.0]).unwrap() - 4.5 / (22.5f64).sqrt()).abs() < 1e-12);
    assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
    assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None, "undefined for a constant map");
    assert_eq!(normalized_abs(&[-2.0, 1.0, 0.0]), vec![1.0, 0.5, 0.0]);
    // two constant planes: no variance, so SSIM = (2ab + C1) / (a² + b² + C1)
    let (h, w) = (13, 17);
    let (a, b) = (0.2f64, 0.7f64);
    let c1 = 1e-4;
    let want = (2.0 * a * b + c1) / (a * a + b * b + c1);
    let got = ssim(&vec![a as f32; h * w], &vec![b as f32; h * w], h, w).unwrap();
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    let x: Vec<f32> = common::seeded(5, h * w).iter().map(|v| (v + 1.0) / 2.0).collect();
    let y: Vec<f32> = common::seeded(6, h * w).iter().map(|v| (v + 1.0) / 2.0).collect();
    assert!((ssim(&x, &x, h, w).unwrap() - 1.0).abs() < 1e-12);
    assert!((ssim(&x, &y, h, w).unwrap() - ssim(&y, &x, h, w).unwrap()).abs() < 1e-12);
    // skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
    // use_sample_covariance=False, data_range=1) of these two planes (scikit-image 0.26, in
    // float64; computed once with `common::seeded` rewritten in Python), and of x against 0.6·x + 0.2:
    let skimage = [SKIMAGE_XY, SKIMAGE_AFFINE];
    let affine: Vec<f32> = x.iter().map(|v| 0.6 * v + 0.2).collect();
    for (got, want) in [ssim(&x, &y, h, w).unwrap(), ssim(&x, &affine, h, w).unwrap()].into_iter().zip(skimage) {
        assert!((got - want).abs() < 1e-6, "SSIM {got} vs scikit-image {want}");
    }
    assert!(ssim(&x, &y, h, w + 1).is_err());
}

/// scikit-image's SSIM of the planes of `spearman_and_ssim_by_hand` (see there).
const SKIMAGE_XY: f64 = 0.09428726018341889;
const SKIMAGE_AFFINE: f64 = 0.8828287415036992;

#[test]
fn the_cascade_runs_from_the_logits_down_and_restores_to_the_bit() {
    let model = Arc::new(common::st::fixture_model("resnet18"));
    let layers = cascade(&model, Granularity::Layer);
    let names: Vec<&str> = layers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 21, "20 convolutions and fc: {names:?}");
    assert_eq!(&names[..4], ["fc", "layer4.1.conv2", "layer4.1.conv1", "layer4.0.downsample.0"]);
    assert_eq!(*names.last().unwrap(), "conv1");
    let blocks: Vec<String> = cascade(&model, Granularity::Block).into_iter().map(|s| s.name).collect();
    assert_eq!(blocks, ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0", "layer1.1", "layer1.0", "conv1"]);

    // re-initialised: the original's shape and spread, another draw per seed, the same draw
    // for the same seed
    let fc = &layers[0];
    let new = reinitialised(&model, fc, 0).unwrap();
    assert_eq!(new.len(), 2, "fc's weight and bias");
    let std = |v: &[f32]| {
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    let (pid, w) = &new[0];
    let orig = &model.params[*pid];
    assert_eq!(w.shape, orig.shape);
    assert!((std(&w.data) / std(&orig.data) - 1.0).abs() < 0.05, "σ {} vs {}", std(&w.data), std(&orig.data));
    assert_eq!(reinitialised(&model, fc, 0).unwrap()[0].1.data, w.data);
    assert_ne!(reinitialised(&model, fc, 1).unwrap()[0].1.data, w.data);

    // saliency after each step, compared with the original: 1 at step 0, falling with the
    // layers; the restored engine gives the original map bit for bit
    let x = common::seeded_tensor(11, &[1, 3, 40, 40]);
    let map = |eng: &Engine<Cpu>| attribution(eng, "saliency", &MethodOptions::default()).unwrap().attribute(&x, Some(&[Target::Class(3)])).unwrap().0.data;
    let mut eng = Engine::new(model.clone(), Cpu).unwrap();
    let m0 = map(&eng);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    assert_eq!(spearman(&abs(&m0), &abs(&m0)), Some(1.0));
    let mut rho = vec![];
    let mut originals = vec![];
    for s in &layers {
        let change = reinitialised(&model, s, 0).unwrap();
        originals.extend(change.iter().map(|(p, _)| (*p, model.params[*p].clone())));
        eng = eng.with_params(&change).unwrap();
        rho.push(spearman(&abs(&m0), &abs(&map(&eng))).unwrap());
    }
    // (measured: 0.32 after fc, 0.28 to 0.38 on the way down)
    assert!(rho[0] < 0.9, "fc re-initialised changes the map: {rho:?}");
    assert!(*rho.last().unwrap() < 0.5, "every layer re-initialised: {rho:?}");
    let eng = eng.with_params(&originals).unwrap();
    assert_eq!(map(&eng), m0, "restored weights: the original map");

    // bad changes: errors
    let bad_shape = Arc::new(Tensor::zeros(&[2, 2]));
    assert!(Engine::new(model.clone(), Cpu).unwrap().with_params(&[(0, bad_shape)]).is_err());
    assert!(Engine::new(model.clone(), Cpu).unwrap().with_params(&[(10_000, orig.clone())]).is_err());
    let nan = Arc::new(Tensor::full(&orig.shape, f32::NAN));
    assert!(Engine::new(model.clone(), Cpu).unwrap().with_params(&[(*pid, nan)]).is_err());
}

#[test]
fn the_emulated_gpu_follows_the_cpu_engine_through_the_cascade() {
    let model = Arc::new(common::st::fixture_model("resnet18"));
    let x = common::seeded_tensor(12, &[1, 3, 32, 32]);
    let steps = &cascade(&model, Granularity::Block)[..3];
    let run = |mut maps: Vec<Vec<f32>>, mut eng: Engine<Gpu>| {
        for s in steps {
            eng = eng.with_params(&reinitialised(&model, s, 4).unwrap()).unwrap();
            maps.push(attribution(&eng, "gradcam", &MethodOptions { layers: vec!["layer3".into()], ..Default::default() }).unwrap().attribute(&x, Some(&[Target::Class(1)])).unwrap().0.data);
        }
        maps
    };
    let gpu = run(vec![], Engine::new(model.clone(), Gpu::emulated()).unwrap());
    let mut cpu_eng = Engine::new(model.clone(), Cpu).unwrap();
    for (k, s) in steps.iter().enumerate() {
        cpu_eng = cpu_eng.with_params(&reinitialised(&model, s, 4).unwrap()).unwrap();
        let want = attribution(&cpu_eng, "gradcam", &MethodOptions { layers: vec!["layer3".into()], ..Default::default() }).unwrap().attribute(&x, Some(&[Target::Class(1)])).unwrap().0.data;
        assert!(common::rel_rms(&gpu[k], &want) < 1e-4, "step {k} ({}): emu vs CPU {}", s.name, common::rel_rms(&gpu[k], &want));
    }
    assert!(Cpu.shape(&Tensor::zeros(&[1])).len() == 1);
}

/// The paper's finding on the real default model: re-initialising the classifier and the
/// head leaves guided backpropagation's map almost as it was (it shows the image, not the
/// model), while saliency's changes at once.
#[test]
fn guided_backprop_survives_the_top_layers_as_the_paper_found() {
    let model = Arc::new(deepviz::model::Model::default_model().unwrap());
    let pre = model.preprocess;
    let img = deepviz::imageio::resize_crop(&deepviz::imageio::load_rgb(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/chelsea.png").as_ref()).unwrap(), pre.size);
    let x = deepviz::imageio::to_tensor(&[img], &pre);
    let steps = &cascade(&model, Granularity::Block)[..2];
    assert_eq!([steps[0].name.as_str(), steps[1].name.as_str()], ["_fc", "_conv_head"]);
    let target = [Target::Class(285)];
    let abs = |v: Vec<f32>| v.into_iter().map(f32::abs).collect::<Vec<f32>>();
    let mut rho = std::collections::HashMap::new();
    for method in ["guided", "saliency"] {
        let mut eng = Engine::new(model.clone(), Cpu).unwrap();
        let map = |eng: &Engine<Cpu>| abs(attribution(eng, method, &MethodOptions::default()).unwrap().attribute(&x, Some(&target)).unwrap().0.data);
        let m0 = map(&eng);
        for s in steps {
            eng = eng.with_params(&reinitialised(&model, s, 0).unwrap()).unwrap();
        }
        rho.insert(method, spearman(&m0, &map(&eng)).unwrap());
    }
    // measured: guided 1.00, saliency 0.29
    assert!(rho["guided"] > 0.95 && rho["saliency"] < 0.6, "Spearman |map| after _fc and _conv_head: {rho:?}");
}

#[test]
fn the_command_writes_grids_plots_and_json_and_refuses_bad_input() {
    let dir = common::fresh_dir("sanity-cli");
    let out = dir.join("out");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/coffee.png");
    let o = common::ok(&["sanity", "gradcam", "--image", sample, "--granularity", "block", "--device", "cpu", "--out", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let steps: Vec<&str> = v["steps"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(steps[..3], ["original", "_fc", "_conv_head"]);
    assert_eq!(*steps.last().unwrap(), "_conv_stem");
    let rec = &v["maps"][0];
    assert_eq!(rec["class"], 967, "espresso");
    let rho: Vec<f64> = rec["spearman_abs"].as_array().unwrap().iter().map(|r| r.as_f64().unwrap_or(f64::NAN)).collect();
    assert_eq!(rho.len(), steps.len());
    assert_eq!(rho[0], 1.0);
    assert_eq!(rec["ssim"][0], 1.0);
    // from the first step on the map is another: Spearman (where defined: a map that is all
    // zeros has no ranks) and SSIM well below 1 (measured: at most 0.62 and 0.53)
    let ssim: Vec<f64> = rec["ssim"].as_array().unwrap().iter().map(|r| r.as_f64().unwrap()).collect();
    assert!(rho[1..].iter().all(|r| r.is_nan() || *r < 0.8), "Spearman |map| per block: {rho:?}");
    assert!(ssim[1..].iter().all(|r| *r < 0.8), "SSIM per block: {ssim:?}");
    for f in ["coffee_gradcam_sanity.png", "coffee_gradcam_sanity_plot.png", "sanity_gradcam.json", "sanity_gradcam_plot.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // --upto stops the cascade after the step it names; an unknown step is refused with the steps
    let upto = dir.join("upto");
    let o = common::ok(&["sanity", "gradcam", "--image", sample, "--granularity", "block", "--upto", "_blocks.14", "--device", "cpu", "--out", upto.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    let short: Vec<&str> = v["steps"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!((short.last(), short.len()), (Some(&"_blocks.14"), steps.iter().position(|s| *s == "_blocks.14").unwrap() + 1));
    let e = common::run(&["sanity", "gradcam", "--image", sample, "--upto", "_blocks.99", "--device", "cpu", "--out", upto.to_str().unwrap()]);
    assert!(e.status.code() == Some(1) && String::from_utf8_lossy(&e.stderr).contains("not a step of the cascade"));
    let grid = image::open(out.join("coffee_gradcam_sanity.png")).unwrap();
    // input, original and one tile per step, 8 to a row of 112-pixel tiles
    assert_eq!(grid.width(), 6 + 8 * 118);
    assert_eq!(grid.height(), 6 + (steps.len() as u32 + 1).div_ceil(8) * (112 + 14 + 6));

    let fresh = dir.join("fresh");
    for (args, says) in [
        (vec!["sanity", "gradkam", "--image", sample], "unknown method"),
        (vec!["sanity", "gradcam", "--image", sample, "--granularity", "module"], "granularity"),
        (vec!["sanity", "gradcam", "--image", sample, "--tile", "4"], "too small"),
        (vec!["sanity", "gradcam", "--image", sample, "--layer", "_blocks.99"], "_blocks.99"),
        (vec!["sanity", "gradcam", "--image", concat!(env!("CARGO_MANIFEST_DIR"), "/samples/nothing.png")], "nothing.png"),
    ] {
        let mut args = args.clone();
        args.extend(["--device", "cpu", "--out", fresh.to_str().unwrap()]);
        let o = common::run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says) && err.trim_end().lines().count() == 1, "{args:?}: {err}");
        assert!(!fresh.exists(), "{args:?} wrote nothing");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
