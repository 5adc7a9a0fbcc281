//! Judging maps (`viz::evaluate`, `deepviz evaluate`): the trapezoid areas by hand; a planted
//! network whose class score is the mean of one region, where the map that marks exactly that
//! region gives the deletion curve computed on paper and beats the random map; the curves'
//! ends equal the original image's probability; batched curves equal one image at a time; the
//! emulated GPU follows the CPU engine; the command's outputs and its one-line errors.

mod common;

use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::engine::Engine;
use deepviz::graph::{GraphBuilder, Heads};
use deepviz::model::Model;
use deepviz::viz::evaluate::{pixel_counts, random_maps, ranks, trapezoid, DeletionInsertion, Fill};
use deepviz::viz::{attribution, classify, MethodOptions, Target};
use deepviz::Tensor;

/// The planted network's input side, its region (rows, columns) and the score's scale.
const SIDE: usize = 12;
const ROWS: std::ops::Range<usize> = 2..7;
const COLS: std::ops::Range<usize> = 3..9;
const SCALE: f32 = 2.0;

fn in_region(p: usize) -> bool {
    ROWS.contains(&(p / SIDE)) && COLS.contains(&(p % SIDE))
}

/// input → 1x1 conv (identity) → ReLU → flatten → linear: logit 0 = SCALE · mean over the
/// region of the (rectified) pixels, summed over channels; logit 1 = 0.
fn planted() -> Model {
    let mut b = GraphBuilder::new("planted");
    b.set_input_size(SIDE, SIDE);
    let x = b.input();
    let c = b.conv_k("features.0", x, 3, 3, 1, 1, 0, true);
    let r = b.act("features.1", c, deepviz::backend::Act::Relu);
    let f = b.flatten("flatten", r);
    let fc = b.linear("fc", f, 3 * SIDE * SIDE, 2, true);
    let g = b.finish(fc, Heads { gradcam_layer: "features.1".into(), dream_layer: "features.1".into(), cam: None });
    let area = (ROWS.len() * COLS.len()) as f32;
    let mut fc_w = vec![0.0; 2 * 3 * SIDE * SIDE];
    for ch in 0..3 {
        for p in (0..SIDE * SIDE).filter(|&p| in_region(p)) {
            fc_w[ch * SIDE * SIDE + p] = SCALE / area;
        }
    }
    let eye: Vec<f32> = (0..9).map(|i| if i % 4 == 0 { 1.0 } else { 0.0 }).collect();
    let params = vec![
        Arc::new(Tensor::new(vec![3, 3, 1, 1], eye).unwrap()),
        Arc::new(Tensor::zeros(&[3])),
        Arc::new(Tensor::new(vec![2, 3 * SIDE * SIDE], fc_w).unwrap()),
        Arc::new(Tensor::zeros(&[2])),
    ];
    Model::from_graph(g, params, "planted").unwrap()
}

/// 0.5 in the region, −1 elsewhere (rectified away), every channel.
fn planted_input() -> Tensor {
    let plane: Vec<f32> = (0..SIDE * SIDE).map(|p| if in_region(p) { 0.5 } else { -1.0 }).collect();
    Tensor::new(vec![1, 3, SIDE, SIDE], plane.repeat(3)).unwrap()
}

#[test]
fn areas_counts_and_ranks_by_hand() {
    // trapezoids: 0.25·(1 + 0.5)/2 + 0.25·(0.5 + 0.5)/2 + 0.5·(0.5 + 0)/2
    assert!((trapezoid(&[0.0, 0.25, 0.5, 1.0], &[1.0, 0.5, 0.5, 0.0]) - 0.4375).abs() < 1e-15);
    assert_eq!(trapezoid(&[0.0, 1.0], &[0.3, 0.3]), 0.3);
    // round(k · 10 / 4): 0, 2.5 → 3, 5, 7.5 → 8, 10
    assert_eq!(pixel_counts(4, 10), vec![0, 3, 5, 8, 10]);
    assert_eq!(pixel_counts(1, 7), vec![0, 7]);
    // largest first, ties to the lower index
    assert_eq!(ranks(&[0.5, 2.0, 0.5, -1.0, 2.0]).unwrap(), vec![2, 0, 3, 4, 1]);
    assert!(ranks(&[0.0, f32::NAN]).is_err());
}

#[test]
fn the_planted_map_gives_the_curve_computed_on_paper_and_beats_random() {
    let model = Arc::new(planted());
    let eng = Engine::new(model.clone(), Cpu).unwrap();
    let pre = model.preprocess;
    let x = planted_input();
    let xd = eng.upload(&x).unwrap();
    let steps = 24;
    let di = DeletionInsertion { steps, batch_size: 10, ..DeletionInsertion::default() };
    // saliency of this network is SCALE / area on the region, 0 elsewhere: exactly the pixels
    // the score reads (ties in row-major order)
    let sal = attribution(&eng, "saliency", &MethodOptions::default()).unwrap();
    let (map, targets) = sal.attribute_on_device(&xd, Some(&[Target::Class(0)])).unwrap();
    assert_eq!(targets.resolve(&eng).unwrap(), vec![Target::Class(0)]);
    let m = eng.download(&map).unwrap();
    assert!(m.data.iter().enumerate().all(|(p, &v)| (v > 0.0) == in_region(p)), "saliency marks exactly the region");
    let c = di.curves(&eng, &xd, &map, 0, &pre).unwrap();
    let area = ROWS.len() * COLS.len();
    let counts = pixel_counts(steps, SIDE * SIDE);
    for (k, &n) in counts.iter().enumerate() {
        // n pixels deleted (to 0, the default fill): the region's first min(n, area) pixels
        let logit = SCALE * 3.0 * 0.5 * (area - n.min(area)) as f64 as f32 / area as f32;
        let want = 1.0 / (1.0 + (-logit as f64).exp());
        assert!((c.deletion[k] - want).abs() < 1e-5, "deletion at {n} pixels: {} vs {want} on paper", c.deletion[k]);
        assert_eq!(c.fractions[k], n as f64 / (SIDE * SIDE) as f64);
    }
    assert_eq!(c.deletion_auc, trapezoid(&c.fractions, &c.deletion));
    // the random map ranks the region's pixels anywhere: its deletion curve falls slower, its
    // insertion curve rises slower
    let r = di.curves(&eng, &xd, &random_maps(&eng.be, 1, SIDE, SIDE, 7).unwrap(), 0, &pre).unwrap();
    assert!(c.deletion_auc + 0.05 < r.deletion_auc, "deletion AUC: planted {} vs random {}", c.deletion_auc, r.deletion_auc);
    assert!(c.insertion_auc > r.insertion_auc + 0.05, "insertion AUC: planted {} vs random {}", c.insertion_auc, r.insertion_auc);
    // black instead of the mean colour: deleted region pixels become −mean/std < 0, rectified
    // to 0 — the same curve here
    let b = DeletionInsertion { fill: Fill::Black, ..di }.curves(&eng, &xd, &map, 0, &pre).unwrap();
    common::assert_close("black fill", &common::f32s(&b.deletion), &common::f32s(&c.deletion), 1e-6, 0.0);

    // the emulated GPU engine: the same curves
    let gpu = Engine::new(model.clone(), Gpu::emulated()).unwrap();
    let gx = gpu.upload(&x).unwrap();
    let (gmap, _) = attribution(&gpu, "saliency", &MethodOptions::default()).unwrap().attribute_on_device(&gx, Some(&[Target::Class(0)])).unwrap();
    let g = DeletionInsertion { steps: 8, ..di }.curves(&gpu, &gx, &gmap, 0, &pre).unwrap();
    let cc = DeletionInsertion { steps: 8, ..di }.curves(&eng, &xd, &map, 0, &pre).unwrap();
    common::assert_close("emu deletion", &common::f32s(&g.deletion), &common::f32s(&cc.deletion), 1e-5, 1e-5);
    common::assert_close("emu insertion", &common::f32s(&g.insertion), &common::f32s(&cc.insertion), 1e-5, 1e-5);

    // settings that make no curve, and maps of the wrong shape: errors
    for bad in [DeletionInsertion { steps: 0, ..di }, DeletionInsertion { batch_size: 0, ..di }, DeletionInsertion { blur_sigma: 0.0, ..di }, DeletionInsertion { blur_sigma: f32::NAN, ..di }] {
        assert!(bad.curves(&eng, &xd, &map, 0, &pre).is_err(), "{bad:?}");
    }
    assert!(di.curves(&eng, &xd, &map, 2, &pre).is_err(), "class 2 of 2");
    assert!(di.curves(&eng, &xd, &xd, 0, &pre).is_err(), "a 3-channel map");
}

#[test]
fn curve_ends_are_the_original_probability_and_batches_change_nothing() {
    let model = Arc::new(common::st::fixture_model("resnet18"));
    let eng = Engine::new(model.clone(), Cpu).unwrap();
    let pre = model.preprocess;
    let x = common::seeded_tensor(3, &[1, 3, 29, 29]);
    let xd = eng.upload(&x).unwrap();
    let (map, targets) = attribution(&eng, "gradcam", &MethodOptions::default()).unwrap().attribute_on_device(&xd, None).unwrap();
    let Target::Class(class) = targets.resolve(&eng).unwrap()[0] else { unreachable!() };
    let top = &classify(&eng, &x, 1).unwrap()[0][0];
    assert_eq!(top.class, class);
    let di = DeletionInsertion { steps: 6, batch_size: 7, ..DeletionInsertion::default() };
    let c = di.curves(&eng, &xd, &map, class, &pre).unwrap();
    assert_eq!((c.fractions[0], *c.fractions.last().unwrap()), (0.0, 1.0));
    // nothing deleted, everything inserted: the image itself
    assert!((c.deletion[0] - top.prob as f64).abs() < 1e-5, "deletion at 0: {} vs {}", c.deletion[0], top.prob);
    assert!((c.insertion[6] - top.prob as f64).abs() < 1e-5, "insertion at 1: {} vs {}", c.insertion[6], top.prob);
    // one changed image per forward pass: the same numbers
    let one = DeletionInsertion { batch_size: 1, ..di }.curves(&eng, &xd, &map, class, &pre).unwrap();
    common::assert_close("deletion, batch 1 vs 7", &common::f32s(&one.deletion), &common::f32s(&c.deletion), 1e-6, 1e-6);
    common::assert_close("insertion, batch 1 vs 7", &common::f32s(&one.insertion), &common::f32s(&c.insertion), 1e-6, 1e-6);
    assert!(eng.be.shape(&map).len() == 4);
}

#[test]
fn the_command_writes_plots_json_and_csv_and_refuses_bad_input() {
    let dir = common::fresh_dir("evaluate-cli");
    let out = dir.join("out");
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/samples/chelsea.png");
    let o = common::ok(&["evaluate", "saliency", "--image", sample, "--steps", "3", "--random", "--device", "cpu", "--out", out.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(v["method"], "saliency");
    assert_eq!(v["steps"], 3);
    let rec = &v["maps"][0];
    assert_eq!(rec["class"], 285, "Egyptian cat");
    assert_eq!(rec["fractions"].as_array().unwrap().len(), 4);
    for key in ["saliency", "random"] {
        let c = &rec[key];
        assert_eq!(c["deletion"].as_array().unwrap().len(), 4);
        assert!(c["deletion_auc"].as_f64().unwrap() > 0.0 && c["insertion_auc"].as_f64().unwrap() < 1.0);
    }
    assert_eq!(v["summary"]["mean_deletion_auc"], rec["saliency"]["deletion_auc"]);
    for f in ["chelsea_saliency_evaluate.png", "evaluate_saliency.json", "evaluate_saliency.csv"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let plot = image::open(out.join("chelsea_saliency_evaluate.png")).unwrap();
    assert!(plot.width() > 224 + 400 && plot.height() >= 224);
    let csv = std::fs::read_to_string(out.join("evaluate_saliency.csv")).unwrap();
    assert_eq!(csv.lines().next().unwrap(), "image,class,fraction,deletion,insertion,random_deletion,random_insertion");
    assert_eq!(csv.lines().count(), 1 + 4);

    // bad input: one error line, exit 1, nothing written
    let corrupt = dir.join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let clash = dir.join("in");
    std::fs::create_dir_all(&clash).unwrap();
    std::fs::copy(sample, clash.join("a.png")).unwrap();
    std::fs::copy(sample, clash.join("a_saliency_evaluate.png")).unwrap();
    let fresh = dir.join("fresh");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["evaluate", "sailency", "--image", sample], "unknown method"),
        (vec!["evaluate", "saliency", "--image", sample, "--steps", "0"], "at least 1 step"),
        (vec!["evaluate", "saliency", "--image", corrupt.to_str().unwrap()], "corrupt.png"),
        (vec!["evaluate", "saliency", "--image", sample, "--deletion-fill", "grey"], "deletion fill"),
        (vec!["evaluate", "saliency", "--image", sample, "--unit", "x:1"], "unexpected argument"),
        (vec!["evaluate", "random", "--image", sample, "--layer", "_blocks.3"], "no method options"),
        (vec!["evaluate", "saliency", "--image", sample, "--samples", "3"], "takes no --samples"),
    ];
    for (args, says) in cases {
        let mut args = args.clone();
        if !args.contains(&"--steps") {
            args.extend(["--steps", "1"]);
        }
        args.extend(["--device", "cpu", "--out", fresh.to_str().unwrap()]);
        let o = common::run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        let usage = says == "unexpected argument";
        assert_eq!(o.status.code(), Some(if usage { 2 } else { 1 }), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        if !usage {
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line: {err}");
        }
        assert!(!fresh.exists(), "{args:?} wrote nothing");
    }
    // an output that would replace an input: refused before anything is written
    let o = common::run(&["evaluate", "saliency", "--image", clash.to_str().unwrap(), "--steps", "1", "--device", "cpu", "--out", clash.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let mut names: Vec<String> = std::fs::read_dir(&clash).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["a.png", "a_saliency_evaluate.png"]);
    let _ = std::fs::remove_dir_all(&dir);
}
