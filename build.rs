//! Build steps of the crate:
//! - the default model: `cfg(deepviz_bundled_model)` when `weights/efficientnet_lite0.safetensors`
//!   is there (a checkout of the repository; the crates.io package leaves the 18.8 MB out), so
//!   `src/model.rs` embeds it only then;
//! - the CPU emulation of our CUDA kernels (`emu` feature): the runtime `emu/*.cpp` plus every
//!   `kernels/*.cu` and `tests/emu_kernels/*.cu` (when there: not in the package), compiled as
//!   C++17 against `emu/cuda_emu.h` into the static library `deepviz_emu` that
//!   `src/device/emu.rs` calls;
//! - the real-GPU fatbinaries (`cuda` feature): `build/nvcc.rs`.

#[path = "build/nvcc.rs"]
mod nvcc;

use std::path::{Path, PathBuf};

fn main() {
    bundled_model();
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_EMU");
    if std::env::var_os("CARGO_FEATURE_EMU").is_some() {
        emu();
    }
    nvcc::build();
}

/// Embed the default weights only where the file exists. Watching the folder (always in the
/// package: the class names) reruns this when the file comes or goes.
fn bundled_model() {
    let weights = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("weights");
    println!("cargo::rustc-check-cfg=cfg(deepviz_bundled_model)");
    println!("cargo:rerun-if-changed={}", weights.display());
    if weights.join("efficientnet_lite0.safetensors").is_file() {
        println!("cargo:rustc-cfg=deepviz_bundled_model");
    }
}

/// Every `.{ext}` file of `dir`, sorted (none if the folder does not exist yet).
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

/// Each kernel file is compiled through a wrapper that names its registration function
/// (`DV_EMU_UNIT`); one generated function calls them all, so the linker keeps every file.
fn emu() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let header = root.join("emu/cuda_emu.h");
    // (a path that does not exist would rerun this on every build: the package has no tests/)
    for p in ["emu", "kernels", "tests/emu_kernels"].map(|p| root.join(p)).into_iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .warnings(false)
        .extra_warnings(false)
        .define("DV_EMU", None)
        .flag("-include")
        .flag(header.to_str().expect("a UTF-8 path"))
        .include(root.join("kernels"))
        .flag("-fno-strict-aliasing")
        // a kernel frame larger than its fiber's stack probes every page, so it hits the guard
        // page (reported as a stack overflow) instead of silently writing into the next stack
        .flag("-fstack-clash-protection")
        // __FILE__ in error messages relative to the crate: kernels/reduce.cu:42
        .flag(format!("-fmacro-prefix-map={}/=", root.display()))
        .files(files(&root.join("emu"), "cpp"));

    let (mut decls, mut calls) = (String::new(), String::new());
    for dir in ["kernels", "tests/emu_kernels"] {
        for src in files(&root.join(dir), "cu") {
            println!("cargo:rerun-if-changed={}", src.display());
            let stem = src.file_stem().unwrap().to_string_lossy().into_owned();
            let unit = format!("{}_{}", dir.replace('/', "_"), stem.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
            let wrapper = out.join(format!("emu_{unit}.cpp"));
            write_if_changed(&wrapper, &format!("#define DV_EMU_UNIT {unit}\n#include {:?}\n", src.display().to_string()));
            build.file(&wrapper);
            let text = std::fs::read_to_string(&src).unwrap_or_default();
            if text.lines().any(|l| l.trim_start().starts_with("DV_REGISTER_KERNELS(")) {
                decls.push_str(&format!("extern \"C\" void dv_emu_register_{unit}();\n"));
                calls.push_str(&format!("    dv_emu_register_{unit}();\n"));
            } else {
                println!("cargo:warning={dir}/{stem}.cu has no DV_REGISTER_KERNELS(...) line: the emulator cannot launch its kernels");
            }
        }
    }
    let reg = out.join("emu_registry.cpp");
    write_if_changed(&reg, &format!("{decls}extern \"C\" void dv_emu_register_all() {{\n{calls}}}\n"));
    build.file(&reg);
    build.compile("deepviz_emu");
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}
