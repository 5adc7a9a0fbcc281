//! Hostile and unusual inputs, one test per class of README's "Hostile inputs" table: each gets
//! one clear error (or, where the data is usable, the documented behaviour) — never a hang, an
//! abort, a panic or a silent garbage result. (Overwriting inputs, all-or-nothing output sets,
//! interrupts and closed / full standard output are in tests/cli.rs.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deepviz::backend::cpu::Cpu;
use deepviz::engine::{Engine, Rule};
use deepviz::model::Model;
use deepviz::viz::{Attribution, DeepDream, GradCam, Objective, Saliency};
use deepviz::Tensor;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deepviz"))
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join(name)
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deepviz-hostile-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run with a deadline (a hang is a failure, not a stuck test).
fn run_for(args: &[&str], env: &[(&str, &str)], secs: u64) -> Output {
    let mut c = bin().args(args).envs(env.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let t = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(secs) {
            let _ = c.kill();
            panic!("deepviz {args:?} still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.wait_with_output().unwrap()
}

/// Exit 1 (or `code`) with one `error:` line containing every needle, no panic.
fn fails_with(o: &Output, code: i32, needles: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

fn st_bytes(meta: &[(&str, &str)]) -> Vec<u8> {
    let (entries, _) = common::st::fixture_state_dict("resnet18");
    common::st::safetensors_bytes(&entries, meta)
}

#[test]
fn fifos_are_refused_not_opened() {
    let d = tmp("fifo");
    let f = d.join("pipe.png");
    assert!(Command::new("mkfifo").arg(&f).status().unwrap().success());
    let out = d.join("out");
    let o = run_for(&["classify", "--device", "cpu", "--image", f.to_str().unwrap()], &[], 30);
    fails_with(&o, 1, &["pipe.png", "not a regular file"]);
    let o = run_for(&["classify", "--device", "cpu", "--image", sample("chelsea.png").to_str().unwrap(), "--model", f.to_str().unwrap()], &[], 30);
    fails_with(&o, 1, &["pipe.png", "not a regular file"]);
    // a FIFO inside a folder is skipped, the folder's images are used
    std::fs::copy(sample("chelsea.png"), d.join("cat.png")).unwrap();
    let o = run_for(&["saliency", "--device", "cpu", "--image", d.to_str().unwrap(), "--out", out.to_str().unwrap()], &[], 60);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.join("cat_saliency.png").exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sizes_are_bounded_before_anything_is_allocated() {
    let d = tmp("sizes");
    // a 16384x1 strip: only the centre crop is resampled (it used to become 224 x 3.7M pixels)
    let strip = d.join("strip.png");
    image::RgbImage::from_fn(16384, 1, |x, _| image::Rgb([(x % 251) as u8, 7, 99])).save(&strip).unwrap();
    let o = run_for(&["classify", "--device", "cpu", "--image", strip.to_str().unwrap()], &[], 60);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // input_size metadata past the limit names the limit
    let m = d.join("big.safetensors");
    std::fs::write(&m, st_bytes(&[("arch", "resnet18"), ("input_size", "100000")])).unwrap();
    let o = run_for(&["classify", "--device", "cpu", "--image", sample("chelsea.png").to_str().unwrap(), "--model", m.to_str().unwrap()], &[], 60);
    fails_with(&o, 1, &["input_size", "MAX_INPUT_SIDE"]);
    // a 5000x5000 tensor is refused by its header's shape (the file is written sparse)
    let npy = d.join("huge.npy");
    {
        let header = deepviz::imageio::npy::npy_bytes(&Tensor::zeros(&[0, 3, 5000, 5000]));
        let f = std::fs::File::create(&npy).unwrap();
        use std::io::Write;
        (&f).write_all(&header).unwrap();
        // rewrite the shape's first axis 0 -> 1 and extend to the data's length
        drop(f);
        let mut bytes = std::fs::read(&npy).unwrap();
        let at = bytes.windows(4).position(|w| w == b"(0, ").unwrap();
        bytes[at + 1] = b'1';
        std::fs::write(&npy, &bytes).unwrap();
        let f = std::fs::OpenOptions::new().append(true).open(&npy).unwrap();
        f.set_len(bytes.len() as u64 + 4 * 3 * 5000 * 5000).unwrap();
    }
    let o = run_for(&["classify", "--device", "cpu", "--image", npy.to_str().unwrap()], &[], 60);
    fails_with(&o, 1, &["5000x5000", "MAX_INPUT_SIDE"]);
    // more activations than the engine may use: refused before the pass allocates
    let o = run_for(&["saliency", "--device", "cpu", "--image", sample("chelsea.png").to_str().unwrap(), "--out", d.join("o").to_str().unwrap()], &[("DEEPVIZ_MEMORY_LIMIT", "20M")], 60);
    fails_with(&o, 1, &["MiB", "DEEPVIZ_MEMORY_LIMIT", "use a smaller input"]);
    assert!(!d.join("o").exists());
    // a batch too large for the limit: the error names the batch that fits, and it runs
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let one: usize = err.split("needs about ").nth(1).and_then(|r| r.split(' ').next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no size in: {err}"));
    let limit = format!("{}M", one * 5 / 2 + 1);
    let chelsea = sample("chelsea.png");
    let four = [chelsea.to_str().unwrap(); 4];
    let args = |batch: &'static str| -> Vec<String> {
        let mut a: Vec<String> = ["saliency", "--device", "cpu", "--batch-size", batch, "--image"].iter().map(|s| s.to_string()).collect();
        a.extend(four.iter().map(|s| s.to_string()));
        a.extend(["--out".to_string(), d.join("o").display().to_string()]);
        a
    };
    let o = run_for(&args("4").iter().map(String::as_str).collect::<Vec<_>>(), &[("DEEPVIZ_MEMORY_LIMIT", &limit)], 60);
    fails_with(&o, 1, &["a batch of at most 2 fits (--batch-size 2)"]);
    let o = run_for(&args("2").iter().map(String::as_str).collect::<Vec<_>>(), &[("DEEPVIZ_MEMORY_LIMIT", &limit)], 120);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn nan_and_infinity_are_errors() {
    let d = tmp("nan");
    let img = sample("chelsea.png");
    // in an .npy input
    let p = d.join("x.npy");
    let mut x = Tensor::zeros(&[1, 3, 64, 64]);
    x.data[100] = f32::NAN;
    deepviz::imageio::write_npy(&p, &x).unwrap();
    fails_with(&run_for(&["classify", "--device", "cpu", "--image", p.to_str().unwrap()], &[], 60), 1, &["x.npy", "NaN", "not a finite number"]);
    // in preprocessing metadata
    for (k, v) in [("mean", "nan"), ("std", "nan"), ("std", "inf"), ("std", "0"), ("input_size", "inf"), ("input_size", "224.5")] {
        let m = d.join("m.safetensors");
        std::fs::write(&m, st_bytes(&[("arch", "resnet18"), (k, v)])).unwrap();
        let o = run_for(&["classify", "--device", "cpu", "--image", img.to_str().unwrap(), "--model", m.to_str().unwrap()], &[], 60);
        fails_with(&o, 1, &[&format!("`{k}`")]);
    }
    // in the options: usage errors naming the value
    for (flag, v) in [("--lr", "NaN"), ("--lr", "inf"), ("--octave-scale", "NaN")] {
        let o = run_for(&["dream", "--device", "cpu", "--image", img.to_str().unwrap(), flag, v], &[], 60);
        assert_eq!(o.status.code(), Some(2), "{flag} {v}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stderr).contains(v));
    }
    // a dream that diverges (weights so large the activations overflow) is an error, not a
    // black picture
    let (entries, _) = common::st::fixture_state_dict("resnet18");
    let huge: Vec<common::st::Entry> = entries
        .into_iter()
        .map(|(n, s, dt, b)| {
            if s.len() != 4 {
                return (n, s, dt, b);
            }
            let b = b.chunks_exact(4).flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) * 1e20).to_le_bytes()).collect();
            (n, s, dt, b)
        })
        .collect();
    let m = d.join("huge.safetensors");
    std::fs::write(&m, common::st::safetensors_bytes(&huge, &[("arch", "resnet18")])).unwrap();
    let o = run_for(&["dream", "--device", "cpu", "--model", m.to_str().unwrap(), "--image", img.to_str().unwrap(), "--steps", "1", "--octaves", "1", "--out", d.join("o").to_str().unwrap()], &[], 120);
    fails_with(&o, 1, &["diverged"]);
    assert!(!d.join("o").exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn damaged_files_are_named_not_accepted() {
    let d = tmp("damage");
    // a truncated JPEG
    let mut jpeg = vec![];
    image::open(sample("chelsea.png")).unwrap().to_rgb8().write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    let whole = d.join("whole.jpg");
    std::fs::write(&whole, &jpeg).unwrap();
    assert!(deepviz::imageio::load_rgb(&whole).is_ok());
    let cut = d.join("cut.jpg");
    std::fs::write(&cut, &jpeg[..jpeg.len() * 2 / 3]).unwrap();
    let e = deepviz::imageio::load_rgb(&cut).unwrap_err().to_string();
    assert!(e.contains("cut.jpg") && e.contains("truncated JPEG"), "{e}");
    // a header that repeats `arch`
    let mut bytes = st_bytes(&[("arch", "resnet18")]);
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + len].to_vec()).unwrap();
    let twice = header.replacen("\"arch\":\"resnet18\"", "\"arch\":\"resnet18\",\"arch\":\"vgg11\"", 1);
    assert_ne!(twice, header);
    let mut padded = twice.into_bytes();
    while padded.len() % 8 != 0 {
        padded.push(b' ');
    }
    let mut out = (padded.len() as u64).to_le_bytes().to_vec();
    out.extend(&padded);
    out.extend_from_slice(&bytes.split_off(8 + len));
    let e = Model::from_bytes(&out, "twice.safetensors", None).err().expect("a repeated key is refused").to_string();
    assert!(e.contains("repeats the key `arch`"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn library_misuse_is_an_error_not_a_panic() {
    let m = Arc::new(common::st::fixture_model("resnet18"));
    let other = Model::default_model().unwrap();
    let eng = Engine::new(m.clone(), Cpu).unwrap();
    // wrong-rank inputs
    for shape in [vec![3, 32, 32], vec![1, 3 * 32 * 32], vec![1, 4, 32, 32], vec![0, 3, 32, 32]] {
        let x = Tensor::zeros(&shape);
        assert!(eng.forward(x.clone(), m.output(), &[]).is_err(), "{shape:?}");
        assert!(Saliency::new(&eng).attribute(&x, None).is_err(), "{shape:?}");
        let dream = DeepDream::new(Objective::layer(m.resolve("layer3").unwrap()));
        assert!(dream.run(&eng, &x, &m.preprocess, &mut || {}).is_err(), "{shape:?}");
    }
    // layers of another model (one past this graph's end among them)
    let x = Tensor::zeros(&[1, 3, 32, 32]);
    let foreign = other.resolve("_blocks.15").unwrap();
    let e = eng.forward(x.clone(), foreign, &[]).err().unwrap().to_string();
    assert!(e.contains("another model"), "{e}");
    assert!(eng.forward(x.clone(), m.output(), &[foreign]).is_err());
    let acts = eng.forward(x.clone(), m.output(), &[]).unwrap();
    assert!(eng.backward(&acts, vec![(foreign, x.clone())], &[m.input()], Rule::Gradient).is_err());
    // a layer the forward pass did not keep, a seed of the wrong shape
    let l3 = m.resolve("layer3").unwrap();
    assert!(eng.backward(&acts, vec![(m.output(), Tensor::zeros(&[1, 1000]))], &[l3], Rule::Gradient).is_err());
    assert!(eng.backward(&acts, vec![(m.output(), Tensor::zeros(&[1, 7]))], &[m.input()], Rule::Gradient).is_err());
    // a forward that stops before a kept layer
    assert!(eng.forward(x.clone(), l3, &[m.output()]).is_err());
    // Grad-CAM at the input
    assert!(GradCam::new(&eng, Some("input")).is_err());
}
