//! Whole jobs through the library ([`deepviz::job`]): what the batching and the background
//! host thread (decoding ahead, pictures encoded while the next batch is computed) must not
//! change — the files, their bytes, the records and their order, and which error is reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deepviz::backend::cpu::Cpu;
use deepviz::engine::Engine;
use deepviz::job::{Inputs, MapJob, MapRecord};
use deepviz::model::Model;
use deepviz::output::OutputSet;
use deepviz::viz::MethodOptions;

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples").join(name)
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deepviz-jobs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Seven inputs of four sizes (so the crops and full-size overlays differ), one stem twice.
fn inputs(d: &Path) -> Vec<PathBuf> {
    let chelsea = image::open(sample("chelsea.png")).unwrap().to_rgb8();
    let coffee = image::open(sample("coffee.png")).unwrap().to_rgb8();
    let mut files = vec![];
    let mut save = |name: &str, img: &image::RgbImage| {
        let p = d.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        img.save(&p).unwrap();
        files.push(p);
    };
    save("a.png", &chelsea);
    save("b.png", &coffee);
    save("c.png", &image::imageops::resize(&chelsea, 300, 180, image::imageops::FilterType::Triangle));
    save("d.png", &image::imageops::resize(&coffee, 160, 240, image::imageops::FilterType::Triangle));
    save("e.png", &image::imageops::crop_imm(&chelsea, 40, 10, 250, 250).to_image());
    save("again/a.png", &coffee);
    save("f.png", &image::imageops::flip_horizontal(&coffee));
    files
}

fn job(batch_size: usize) -> MapJob {
    MapJob {
        method: "gradcam".into(),
        options: MethodOptions::default(),
        targets: Default::default(),
        clip_percentile: None,
        alpha: 0.5,
        raw: true,
        batch_size,
        full_size: true,
        colormap: None,
        npz: true,
    }
}

/// Every file of a folder, by name, with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())).collect()
}

/// A record with its files named relative to the output folder.
fn relative(mut r: MapRecord) -> MapRecord {
    r.files = r.files.iter().map(|f| PathBuf::from(f.file_name().unwrap())).collect();
    r
}

#[test]
fn batch_size_changes_no_file_and_no_record() {
    let d = tmp("batches");
    let files = inputs(&d.join("in"));
    let eng = Engine::new(Arc::new(Model::default_model().unwrap()), Cpu).unwrap();
    let inputs = Inputs::expand(&files).unwrap();
    let mut runs = vec![];
    for batch in [1, 3, 8] {
        let out_dir = d.join(format!("out{batch}"));
        let mut out = OutputSet::new(&out_dir);
        let mut advanced = 0;
        let records = job(batch)
            .run(&eng, &inputs, &mut out, &mut |p| {
                if let deepviz::job::Progress::Advance(k) = p {
                    advanced += k
                }
            })
            .unwrap();
        out.commit().unwrap();
        assert_eq!(advanced, files.len(), "progress at batch {batch}");
        runs.push((batch, records.into_iter().map(relative).collect::<Vec<_>>(), contents(&out_dir)));
    }
    let (_, records, files_1) = &runs[0];
    // one record per image, in input order, the repeated stem renamed
    let images: Vec<PathBuf> = records.iter().map(|r| r.image.clone()).collect();
    assert_eq!(images, files);
    assert!(files_1.contains_key("a-2_gradcam_overlay_full.png"), "{:?}", files_1.keys());
    // 7 x (map, overlay, full-size overlay, .npy) + the .npz
    assert_eq!(files_1.len(), 7 * 4 + 1);
    for (batch, r, f) in &runs[1..] {
        assert_eq!(r, records, "records at batch {batch}");
        assert_eq!(f.keys().collect::<Vec<_>>(), files_1.keys().collect::<Vec<_>>(), "file names at batch {batch}");
        for (name, bytes) in f {
            assert!(bytes == &files_1[name], "{name} differs at batch {batch}");
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_corrupt_file_read_ahead_is_the_error_reported() {
    let d = tmp("corrupt");
    let mut files = inputs(&d.join("in"));
    // the fifth file: decoded ahead, on the background thread, while the first batch runs
    let bad = d.join("in").join("bad.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n not a picture").unwrap();
    files.insert(4, bad);
    let eng = Engine::new(Arc::new(Model::default_model().unwrap()), Cpu).unwrap();
    let inputs = Inputs::expand(&files).unwrap();
    for batch in [1, 2, 3] {
        let mut out = OutputSet::new(d.join("out"));
        let err = job(batch).run(&eng, &inputs, &mut out, &mut |_| {}).expect_err("a corrupt input");
        assert!(err.to_string().contains("bad.png"), "batch {batch}: {err}");
        drop(out);
        assert!(!d.join("out").exists(), "batch {batch}: an output folder was left");
    }
    let _ = std::fs::remove_dir_all(&d);
}
