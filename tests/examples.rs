//! The user-facing examples (`examples/saliency.rs`, `gradcam_folder.rs`, `deepdream.rs`,
//! `backend.rs`) run as a user runs them, on the CPU engine and (the backend one) on the
//! emulated GPU engine: they print what their docs say, write pictures that decode, and fail
//! on bad input with a message and exit status 1, not a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXAMPLES: [&str; 4] = ["saliency", "gradcam_folder", "deepdream", "backend"];

/// The examples' binaries, built (once per test process) in this test's profile.
fn example(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let exe = std::env::current_exe().expect("the test binary");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..").join("examples");
    BUILT.get_or_init(|| {
        // `cargo test --all-targets` builds the examples as test harnesses only: build the four
        // binaries in one call (in parallel, linking once each), in this test's own profile,
        // whose deepviz is already compiled (`--profile test` builds plain binaries with the
        // test profile's settings, into the same folder). Always asked, so a binary left from
        // older sources is never run; cargo does nothing when they are up to date.
        let profile = if dir.parent().and_then(Path::file_name).is_some_and(|d| d == "release") { "--release" } else { "--profile=test" };
        let mut args = vec!["build", "--locked", profile];
        EXAMPLES.iter().for_each(|e| args.extend(["--example", e]));
        let status = Command::new(env!("CARGO")).args(&args).current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("cargo");
        assert!(status.success(), "building the examples");
    });
    dir.join(name)
}

fn run(name: &str, args: &[&str]) -> Output {
    let out = Command::new(example(name)).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("run the example");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{name} {args:?} panicked:\n{err}");
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn decodes(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (img.width(), img.height())
}

#[test]
fn examples_run_as_documented() {
    let tmp = std::env::temp_dir().join(format!("deepviz-examples-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let t = |p: &str| tmp.join(p).to_string_lossy().into_owned();

    let o = run("saliency", &["samples/chelsea.png", &t("sal"), "--device", "cpu"]);
    assert!(o.status.success() && stdout(&o).contains("class 285 (Egyptian cat)"), "{}", stdout(&o));
    assert_eq!(decodes(&tmp.join("sal/chelsea_saliency.png")), (224, 224));
    assert_eq!(decodes(&tmp.join("sal/chelsea_saliency_overlay.png")), (224, 224));

    let o = run("gradcam_folder", &["samples", &t("gc"), "--device", "cpu", "--batch", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = stdout(&o);
    assert!(s.contains("[1/2] chelsea.png: class 285") && s.contains("[2/2] coffee.png: class 967"), "{s}");
    for f in ["chelsea", "coffee"] {
        assert_eq!(decodes(&tmp.join(format!("gc/{f}_gradcam_overlay.png"))), (224, 224));
    }

    let o = run("deepdream", &["samples/chelsea.png", &t("dream.png"), "--device", "cpu", "--octaves", "2", "--steps", "2", "--size", "96"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(decodes(&tmp.join("dream.png")), (144, 96));
    assert_ne!(image::open(tmp.join("dream.png")).unwrap().to_rgb8().into_raw(), imageio_resized("samples/chelsea.png", 144, 96), "the dream changed nothing");

    for device in ["cpu", "emu"] {
        let o = run("backend", &["samples/chelsea.png", "--device", device]);
        let s = stdout(&o);
        assert!(o.status.success() && s.contains("285 Egyptian cat"), "{device}: {s}");
        // the printed directional derivative agrees with its finite difference to 2%
        let line = s.lines().find(|l| l.starts_with("directional derivative")).expect("the check's line");
        let nums: Vec<f64> = line.split(|c: char| c == ' ' || c == ',').filter_map(|w| w.parse().ok()).collect();
        assert!(nums.len() == 2 && (nums[0] - nums[1]).abs() < 0.02 * nums[0].abs(), "{device}: {line}");
    }

    // bad input: one message, status 1 (2 for a usage error), nothing written
    let o = run("saliency", &["no/such.png", &t("bad"), "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error: "), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!tmp.join("bad").exists());
    let o = run("gradcam_folder", &["samples", &t("gc2"), "--device", "cpu", "--layer", "no.such.layer"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no.such.layer"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(run("deepdream", &[]).status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The photo as the dream example starts from it (resized to w x h), to see that it changed.
fn imageio_resized(path: &str, w: u32, h: u32) -> Vec<u8> {
    let img = image::open(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap().to_rgb8();
    image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle).into_raw()
}
