//! The crates.io package (Cargo.toml's `include`): under crates.io's 10 MB limit, without the
//! default weights, and with every file the library's build reads. Asks cargo for the list
//! (`cargo package --list --offline`: it resolves from the lock file and the local registry
//! cache, builds nothing, about 0.2 s) and measures the listed files uncompressed, which bounds
//! the compressed `.crate` from above.

use std::path::Path;
use std::process::Command;

/// crates.io's limit on a `.crate` file.
const LIMIT_BYTES: u64 = 10 * 1000 * 1000;

fn package_list() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO"))
        .args(["package", "-p", "deepviz", "--list", "--offline", "--locked", "--allow-dirty"])
        .current_dir(root)
        .output()
        .expect("running cargo");
    assert!(out.status.success(), "cargo package --list failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 paths").lines().map(str::to_owned).collect()
}

#[test]
fn the_package_fits_crates_io_and_holds_what_the_build_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = package_list();
    let has = |f: &str| files.iter().any(|p| p == f);

    // cargo writes these itself (normalised manifest, VCS info): not files of the tree
    let bytes: u64 = files.iter().filter_map(|f| std::fs::metadata(root.join(f)).ok()).map(|m| m.len()).sum();
    assert!(bytes < LIMIT_BYTES, "the package's files add up to {bytes} bytes uncompressed; crates.io takes {LIMIT_BYTES}: {files:#?}");
    assert!(!has("weights/efficientnet_lite0.safetensors"), "the 18.8 MB default weights are in the package");
    assert!(!files.iter().any(|f| f.starts_with("tests/") || f.starts_with("python/")), "tests or the Python package are in it: {files:#?}");

    // what build.rs, build/nvcc.rs and the sources read (include_str!/include_bytes! outside
    // the bundled-model cfg, the README's doctest, the kernels both builds compile)
    for f in ["Cargo.toml", "Cargo.lock", "README.md", "build.rs", "build/nvcc.rs", "src/lib.rs", "src/main.rs", "emu/cuda_emu.h", "weights/imagenet_classes.txt"] {
        assert!(has(f), "{f} is not in the package: {files:#?}");
    }
    for dir in ["kernels", "emu", "build"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let f = format!("{dir}/{}", e.file_name().to_string_lossy());
            assert!(has(&f), "{f} is not in the package, and the build reads every file of {dir}/");
        }
    }
    let mut missing = Vec::new();
    visit_rs(&root.join("src"), &mut |p| {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        if !has(&rel) {
            missing.push(rel);
        }
    });
    assert!(missing.is_empty(), "sources left out of the package: {missing:?}");
}

fn visit_rs(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            visit_rs(&p, f);
        } else if p.extension().is_some_and(|x| x == "rs") {
            f(&p);
        }
    }
}
