//! Dataset commands (issue 8): receptive fields by hand and against a known network, top-k and
//! neighbours against brute force on the CPU engine, shard + merge equal to one pass (in the
//! library and through the command line), the HTML report's references, and bad input.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, run};

use deepviz::backend::cpu::Cpu;
use deepviz::dataset::neighbors::{Metric, Neighbors};
use deepviz::dataset::rf::{receptive_fields, Rf, RfAxis};
use deepviz::dataset::top::TopPatches;
use deepviz::dataset::{self, report, synth, Dataset, Partial, Shard, Tally};
use deepviz::engine::Engine;
use deepviz::graph::{GraphBuilder, Heads, Pad};
use deepviz::imageio;
use deepviz::model::Model;
use deepviz::output::OutputSet;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deepviz-dataset-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` generated pictures in a fresh folder.
fn generated(tag: &str, n: usize) -> PathBuf {
    let d = tmp(tag).join("data");
    let mut out = OutputSet::new(&d);
    synth::generate(&mut out, n, 7, 48).unwrap();
    out.commit().unwrap();
    d
}

fn axis(lo: i64, size: u64, jump: u64) -> RfAxis {
    RfAxis { lo, size, jump }
}

fn shapes(g: &deepviz::graph::Graph) -> Vec<Vec<usize>> {
    g.params.iter().map(|p| p.shape.clone()).collect()
}

#[test]
fn receptive_fields_by_hand() {
    // conv3 s1 p1 -> conv3 s2 p0 -> maxpool2 s2 -> { conv3 dil2 p2 | conv1 | conv3 p0 } -> add, cat
    let mut b = GraphBuilder::new("tiny");
    let x = b.input();
    let c1 = b.conv_k("c1", x, 3, 4, 3, 1, 1, false);
    let c2 = b.conv_k("c2", c1, 4, 4, 3, 2, 0, false);
    let p = b.max_pool("p", c2, deepviz::backend::Pool2dGeom { kernel: [2, 2], stride: [2, 2], pad: [0, 0], ceil_mode: false, count_include_pad: true });
    let c3 = b.conv("c3", p, 4, 4, [3, 3], [1, 1], Pad::sym(2, 2), [2, 2], 1, false);
    let c4 = b.conv_k("c4", p, 4, 4, 1, 1, 0, false);
    let add = b.add("add", c3, c4);
    let c5 = b.conv_k("c5", p, 4, 4, 3, 1, 1, false);
    let cat = b.concat("cat", &[c4, c5]);
    let g = b.finish(cat, Heads::default());
    let rf = receptive_fields(&g, &shapes(&g), [33, 33], cat).unwrap();
    let sq = |a: RfAxis| Rf::Lattice([a, a]);
    assert_eq!(rf[c1], sq(axis(-1, 3, 1)));
    assert_eq!(rf[c2], sq(axis(-1, 5, 2)));
    assert_eq!(rf[p], sq(axis(-1, 7, 4)));
    assert_eq!(rf[c3], sq(axis(-9, 23, 4)), "dilation 2: an effective 5x5 kernel");
    assert_eq!(rf[c4], sq(axis(-1, 7, 4)));
    assert_eq!(rf[add], sq(axis(-9, 23, 4)), "the union of both branches");
    assert_eq!(rf[c5], sq(axis(-5, 15, 4)));
    assert_eq!(rf[cat], sq(axis(-5, 15, 4)));
    // unit (1, 2) of `add`: rows -5..18, columns -1..22, clipped to the 33x33 image
    assert_eq!(rf[add].region(1, 2, 33, 33), [0, 0, 22, 18]);
    assert_eq!(rf[add].region(5, 5, 33, 33), [11, 11, 33, 33]);

    // TensorFlow SAME padding depends on the input size: 3x3 stride 2 pads 1 at the top of an
    // odd input, 0 of an even one
    let mut b = GraphBuilder::new("same");
    let x = b.input();
    let c = b.conv("c", x, 3, 2, [3, 3], [2, 2], Pad::Same, [1, 1], 1, false);
    let g = b.finish(c, Heads::default());
    assert_eq!(receptive_fields(&g, &shapes(&g), [7, 7], c).unwrap()[c], sq(axis(-1, 3, 2)));
    assert_eq!(receptive_fields(&g, &shapes(&g), [8, 8], c).unwrap()[c], sq(axis(0, 3, 2)));

    // global pooling and what follows see the whole image
    let mut b = GraphBuilder::new("gap");
    let x = b.input();
    let c = b.conv_k("c", x, 3, 2, 3, 1, 1, false);
    let gp = b.adaptive_avg_pool("gap", c, [1, 1]);
    let f = b.flatten("flat", gp);
    let l = b.linear("fc", f, 2, 2, true);
    let g = b.finish(l, Heads::default());
    let rf = receptive_fields(&g, &shapes(&g), [9, 9], l).unwrap();
    assert_eq!((rf[gp], rf[l]), (Rf::Whole, Rf::Whole));
    assert_eq!(rf[gp].region(0, 0, 9, 9), [0, 0, 9, 9]);
}

#[test]
fn resnet18_receptive_fields_match_the_published_figures() {
    // resnet18's last block sees 435x435 pixels at a stride of 32 (Araujo et al. 2019, Distill,
    // "Computing Receptive Fields of Convolutional Neural Networks"). By hand: the stem's 7x7/2
    // pad 3 and the 3x3/2 pad 1 pool give 11 px at stride 4 starting at -5; layer1's four 3x3
    // convs add 8 px and move the start 4 px each (43, -21); layer2's first conv is 3x3/2 (51,
    // -25, stride 8), then three 3x3 convs at stride 8 (99, -49) — its 1x1/2 shortcut (43, -21)
    // lies inside; likewise layer3 (211, -105, stride 16) and layer4 (435, -217, stride 32)
    let m = Model::placeholder("resnet18").unwrap();
    let ps: Vec<Vec<usize>> = m.params.iter().map(|t| t.shape.clone()).collect();
    let at = |name: &str| {
        let id = m.resolve(name).unwrap().node();
        receptive_fields(&m.graph, &ps, [224, 224], id).unwrap()[id]
    };
    let size = |rf: Rf| match rf {
        Rf::Lattice([a, b]) => {
            assert_eq!(a, b);
            (a.size, a.jump, a.lo)
        }
        Rf::Whole => panic!("a lattice expected"),
    };
    assert_eq!(size(at("maxpool")), (11, 4, -5));
    assert_eq!(size(at("layer1")), (43, 4, -21));
    assert_eq!(size(at("layer2")), (99, 8, -49));
    assert_eq!(size(at("layer3")), (211, 16, -105));
    assert_eq!(size(at("layer4")), (435, 32, -217));
    assert_eq!(at("avgpool"), Rf::Whole);
}

/// Each image's maximum over unit `u`'s map at `layer`, one image at a time.
fn brute_maxima(eng: &Engine<Cpu>, ds: &Dataset, layer: &str) -> Vec<Vec<f32>> {
    let model = eng.model();
    let l = model.resolve(layer).unwrap();
    ds.files
        .iter()
        .map(|f| {
            let x = imageio::to_tensor(&[dataset::load_crop(f, &model.preprocess).unwrap()], &model.preprocess);
            let acts = eng.forward(x, l, &[l]).unwrap();
            let a = acts.get(l).unwrap();
            let hw = a.shape[2] * a.shape[3];
            a.data.chunks(hw).map(|c| c.iter().copied().fold(f32::NEG_INFINITY, f32::max)).collect()
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 + 1e-5 * b.abs()
}

#[test]
fn top_k_is_the_brute_force_top_k_and_shards_merge_to_one_pass() {
    let dir = generated("top", 20);
    let ds = Dataset::open(&dir).unwrap();
    let eng = Engine::new(Model::default_model().unwrap(), Cpu).unwrap();
    let job = TopPatches { layer: "_blocks.2".into(), units: Some(vec![0, 5, 23]), k: 4, batch_size: 7 };
    let one = job.run(&eng, &ds, Shard::ALL, &mut |_| {}).unwrap();
    let Tally::TopPatches(t) = &one.tally else { panic!("a top-patches tally") };
    let brute = brute_maxima(&eng, &ds, "_blocks.2");
    for (u, &unit) in t.units.iter().enumerate() {
        let mut want: Vec<(f32, usize)> = brute.iter().enumerate().map(|(i, m)| (m[unit], i)).collect();
        want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let got: Vec<(f64, usize)> = t.hits[u].iter().map(|h| (h.value, h.image)).collect();
        assert_eq!(got.len(), 4);
        for (g, w) in got.iter().zip(&want) {
            assert!(close(g.0, w.0 as f64), "unit {unit}: value {} vs brute force {}", g.0, w.0);
            assert_eq!(g.1, w.1, "unit {unit}: image {} vs brute force {} (values {} / {})", g.1, w.1, g.0, w.0);
        }
        for h in &t.hits[u] {
            assert_eq!(h.map[h.y * t.map_hw[1] + h.x], h.value, "the hit's position is its maximum");
        }
    }
    // shards (another batch size), through their files, merge to the single pass exactly
    let states: Vec<Partial> = (0..3)
        .map(|i| {
            let p = TopPatches { batch_size: 3, ..job.clone() }.run(&eng, &ds, Shard { index: i, count: 3 }, &mut |_| {}).unwrap();
            let f = tmp("top-state").join(p.file_name());
            std::fs::write(&f, p.to_bytes()).unwrap();
            Partial::read(&f).unwrap()
        })
        .collect();
    let mut states = states;
    states.reverse(); // any order
    let merged = Partial::merge(states).unwrap();
    assert_eq!(merged.shards.len(), 3);
    assert_eq!(Partial { shards: one.shards.clone(), ..merged.clone() }, one, "merged shards differ from one pass");
    // and render the same files
    let (a, b) = (tmp("top-one"), tmp("top-merged"));
    for (p, d) in [(&one, &a), (&merged, &b)] {
        let mut out = OutputSet::new(d);
        dataset::finish(&Cpu, p, &ds, &mut out).unwrap();
        out.commit().unwrap();
    }
    for f in ["unit_0000.png", "unit_0005.png", "unit_0023.png"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f}");
    }
    check_report(&a);
}

/// Every file `index.html` references exists beside it.
fn check_report(dir: &Path) {
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let refs = report::references(&html);
    assert!(!refs.is_empty());
    for r in refs {
        assert!(!r.contains('/') && !r.contains(':'), "not a relative file name: {r}");
        assert!(dir.join(&r).is_file(), "{} references {r}, which is missing", dir.display());
    }
}

#[test]
fn neighbours_are_exact() {
    let dir = generated("nb", 16);
    let ds = Dataset::open(&dir).unwrap();
    let eng = Engine::new(Model::default_model().unwrap(), Cpu).unwrap();
    let layer = "_blocks.4";
    let queries = vec![ds.files[3].clone(), ds.files[10].clone()];
    for metric in [Metric::Cosine, Metric::L2] {
        let job = Neighbors { layer: layer.into(), k: 5, metric, queries: queries.clone(), batch_size: 6 };
        let p = job.run(&eng, &ds, Shard::ALL, &mut |_| {}).unwrap();
        let Tally::Neighbors(t) = &p.tally else { panic!("a neighbours tally") };
        // brute force: pooled features one image at a time, every distance
        let model = eng.model();
        let l = model.resolve(layer).unwrap();
        let feature = |f: &Path| -> Vec<f64> {
            let x = imageio::to_tensor(&[dataset::load_crop(f, &model.preprocess).unwrap()], &model.preprocess);
            let acts = eng.forward(x, l, &[l]).unwrap();
            let a = acts.get(l).unwrap();
            let hw = a.shape[2] * a.shape[3];
            a.data.chunks(hw).map(|c| c.iter().map(|&v| v as f64).sum::<f64>() / hw as f64).collect()
        };
        let all: Vec<Vec<f64>> = ds.files.iter().map(|f| feature(f)).collect();
        for (qi, q) in queries.iter().enumerate() {
            let qf = feature(q);
            let mut want: Vec<(f64, usize)> = all.iter().enumerate().map(|(i, f)| (metric.distance(&qf, f), i)).collect();
            want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let got = t.nearest(|r| metric.distance(&t.queries[qi].feature, &r.feature));
            assert_eq!(got[0], (if qi == 0 { 3 } else { 10 }, got[0].1), "a query in the dataset is its own nearest");
            assert!(got[0].1.abs() < 1e-6);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.0, w.1, "{metric:?} query {qi}: image {} vs brute force {}", g.0, w.1);
                assert!((g.1 - w.0).abs() < 1e-5, "{metric:?} distance {} vs {}", g.1, w.0);
            }
            // by pixels, the same exactness
            let qp = deepviz::dataset::neighbors::pixel_vector(&dataset::load_crop(q, &model.preprocess).unwrap());
            let mut pw: Vec<(f64, usize)> = ds.files.iter().enumerate().map(|(i, f)| (Metric::L2.distance(&qp, &deepviz::dataset::neighbors::pixel_vector(&dataset::load_crop(f, &model.preprocess).unwrap())), i)).collect();
            pw.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let pg = t.nearest(|r| Metric::L2.distance(&t.queries[qi].pixels, &r.pixels));
            assert_eq!(pg.iter().map(|x| x.0).collect::<Vec<_>>(), pw.iter().take(5).map(|x| x.1).collect::<Vec<_>>());
        }
    }
}

/// One error line, the exit status `code`, no panic, and `out` not created.
fn fails(args: &[&str], code: i32, needle: &str, out: &Path) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "deepviz {args:?}: stderr {err}");
    assert!(!err.contains("panicked") && err.contains(needle), "deepviz {args:?}: stderr {err}");
    assert!(!out.exists(), "{} was written", out.display());
}

fn listing(d: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())).collect();
    v.sort();
    v
}

#[test]
fn the_command_line_end_to_end() {
    let root = tmp("cli");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let data = root.join("data");
    ok(&["gen-dataset", "--out", &s(&data), "--count", "16", "--size", "40"]);
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 16);
    let d = s(&data);
    let common = ["--layer", "_blocks.3", "--units", "1,2", "--top", "3", "--device", "cpu"];
    // one pass
    let one = root.join("one");
    let mut args = vec!["top-patches", &d, "--out"];
    let o = s(&one);
    args.push(&o);
    args.extend(common);
    let text = ok(&args);
    assert!(text.contains("16 images read"), "{text}");
    check_report(&one);
    // a shell loop over shards (one retried: the state is replaced whole), then merge
    let shards = root.join("shards");
    let sh = s(&shards);
    for i in [0, 1, 2, 1] {
        let shard = format!("{i}/3");
        let mut a = vec!["top-patches", &d, "--out", &sh, "--shard", &shard, "--batch-size", "4"];
        a.extend(common);
        ok(&a);
    }
    let states: Vec<String> = (0..3).map(|i| s(&shards.join(format!("top-patches.shard-{i:04}-of-0003.json")))).collect();
    assert_eq!(std::fs::read_dir(&shards).unwrap().count(), 3, "only the three states, no staging left");
    let merged = root.join("merged");
    let mut a = vec!["merge", "--out"];
    let m = s(&merged);
    a.push(&m);
    a.extend(states.iter().map(String::as_str));
    ok(&a);
    let strip = |l: Vec<(String, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        l.into_iter().map(|(n, b)| if n.ends_with(".json") { let mut v: serde_json::Value = serde_json::from_slice(&b).unwrap(); v["shards"] = 0.into(); (n, v.to_string().into_bytes()) } else { (n, b) }).collect()
    };
    assert_eq!(strip(listing(&one)), strip(listing(&merged)), "merge differs from one pass");
    // a missing shard, a repeated one, a state of another job
    fails(&["merge", "--out", &s(&root.join("m1")), &states[0], &states[2]], 1, "shards missing: 1/3", &root.join("m1"));
    fails(&["merge", "--out", &s(&root.join("m2")), &states[0], &states[0], &states[1]], 1, "given twice", &root.join("m2"));

    // neighbours and filters write their report
    let nb = root.join("nb");
    let q = s(&Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/chelsea.png"));
    let json = ok(&["neighbors", &d, "--queries", &q, &s(&data.join("0002_blue_square.png")), "--k", "3", "--layer", "_blocks.5", "--device", "cpu", "--out", &s(&nb), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["queries"][1]["features"][0]["image"], "0002_blue_square.png");
    check_report(&nb);
    let fl = root.join("filters");
    ok(&["filters", "--out", &s(&fl)]);
    assert!(fl.join("filters__conv_stem.png").is_file());
    let img = image::open(fl.join("filters__conv_stem.png")).unwrap();
    assert!(img.width() >= 6 * 24, "32 3x3 filters in a 6-column grid of 24-pixel tiles");
    check_report(&fl);

    // bad input: one error, no output
    let bad = root.join("bad");
    let b = s(&bad);
    fails(&["top-patches", &s(&root.join("nope")), "--layer", "_blocks.3", "--device", "cpu", "--out", &b], 1, "nope", &bad);
    fails(&["top-patches", &d, "--layer", "_blocks.33", "--device", "cpu", "--out", &b], 1, "unknown layer", &bad);
    fails(&["top-patches", &d, "--layer", "_blocks.3", "--units", "9999", "--device", "cpu", "--out", &b], 1, "unit 9999", &bad);
    for shard in ["3/3", "1", "a/2", "0/0"] {
        fails(&["top-patches", &d, "--layer", "_blocks.3", "--shard", shard, "--device", "cpu", "--out", &b], 2, "--shard", &bad);
    }
    fails(&["top-patches", &d, "--layer", "_blocks.3", "--device", "cpu", "--out", &s(&data.join("out"))], 1, "inside the dataset", &data.join("out"));
    fails(&["filters", "--layer", "_bn0", "--out", &b], 1, "not a convolution", &bad);
    // unreadable images in a dataset are skipped and counted
    std::fs::write(data.join("zz_broken.png"), b"not a png").unwrap();
    let o = run(&["top-patches", &d, "--layer", "_blocks.3", "--units", "0", "--top", "2", "--device", "cpu", "--out", &b, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("skipped 1 image"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["images"].as_u64(), v["skipped"][0]["image"].as_str()), (Some(16), Some("zz_broken.png")));
}

#[test]
fn top_patches_on_the_emulated_gpu_engine_match_the_cpu_engine() {
    use deepviz::backend::cuda::Gpu;
    let dir = generated("emu", 3);
    let ds = Dataset::open(&dir).unwrap();
    let model = std::sync::Arc::new(Model::default_model().unwrap());
    let job = TopPatches { layer: "_blocks.1".into(), units: Some(vec![0, 3, 17]), k: 2, batch_size: 3 };
    let cpu = job.run(&Engine::new(model.clone(), Cpu).unwrap(), &ds, Shard::ALL, &mut |_| {}).unwrap();
    let emu = job.run(&Engine::new(model, Gpu::emulated()).unwrap(), &ds, Shard::ALL, &mut |_| {}).unwrap();
    let (Tally::TopPatches(c), Tally::TopPatches(e)) = (&cpu.tally, &emu.tally) else { panic!("top-patches tallies") };
    for (hc, he) in c.hits.iter().flatten().zip(e.hits.iter().flatten()) {
        assert_eq!((hc.image, hc.y, hc.x), (he.image, he.y, he.x));
        assert!(close(he.value, hc.value) || (he.value - hc.value).abs() < 1e-4 * hc.value.abs().max(1.0), "emu {} vs cpu {}", he.value, hc.value);
    }
}
