//! The SASS the build made, read without a GPU: the build's fatbinaries
//! (`device::cuda::fatbins`) disassembled for sm_90 (sm_90a for `kernels/*_sm90a.cu`) by
//! cuobjdump + nvdisasm (PyPI wheels that
//! `scripts/install_nvcc.sh` installs into `.toolchain/cuda/bin`). Held to
//! `benches/sass/expected.json`: no kernel touches local memory (a spill or a stack array), the
//! kernels listed as tensor-core kernels issue HMMA, and those listed as call-free make no CALL
//! (on these kernels a CALL is a 64-bit integer division or a slow math path, in a loop). The
//! state of the hot kernels is printed either way.
//!
//! And a measure of the tensor-core kernels' main loops, read without a GPU: the smallest loop
//! (a backward branch) that holds all of a kernel's HMMAs, its instructions per HMMA. A static
//! count: both sides of every branch in the loop, so the conv kernels' element-by-element
//! gather for unaligned channels counts though aligned layers never run it (2026-12-04: 75 a
//! HMMA in the bf16 forward, ~11 executed on its aligned path by hand; benches/RESULTS.md).
//! `mma_loop_instructions_per_hmma` in expected.json is each kernel's ceiling: lower it as the
//! loops get leaner.

#[cfg(feature = "cuda")]
#[test]
fn sass_has_no_local_memory_and_keeps_its_tensor_cores() {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tool = std::env::var_os("CUOBJDUMP")
        .map(PathBuf::from)
        .or_else(|| Some(root.join(".toolchain/cuda/bin/cuobjdump")).filter(|p| p.exists()))
        .or_else(|| std::env::var_os("CUDA_HOME").map(|h| PathBuf::from(h).join("bin/cuobjdump")).filter(|p| p.exists()))
        .expect("no cuobjdump: run scripts/install_nvcc.sh (it installs cuobjdump and nvdisasm into .toolchain/cuda/bin)");
    let bin = tool.parent().unwrap().to_path_buf();
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()))).unwrap();
    let dir = std::env::temp_dir().join(format!("deepviz-sass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // kernel -> (instructions, calls, local-memory ops, HMMAs)
    let mut kernels: BTreeMap<String, (usize, usize, usize, usize)> = BTreeMap::new();
    // kernel -> its instructions as (address, text)
    let mut listing: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for (stem, image) in deepviz::device::cuda::fatbins() {
        let f = dir.join(format!("{stem}.fatbin"));
        std::fs::write(&f, image).unwrap();
        // a `_sm90a` file is SASS for sm_90a alone (wgmma)
        let arch = if stem.ends_with("_sm90a") { "sm_90a" } else { "sm_90" };
        let o = std::process::Command::new(&tool).env("PATH", &path).args(["-sass", "-arch", arch]).arg(&f).output().unwrap();
        assert!(o.status.success(), "cuobjdump {stem}: {}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout);
        let mut cur: Option<String> = None;
        for line in text.lines() {
            if let Some(name) = line.trim().strip_prefix("Function : ") {
                cur = Some(name.trim().to_string());
                kernels.entry(name.trim().to_string()).or_default();
                continue;
            }
            let (Some(k), Some(ins)) = (&cur, line.split("*/").nth(1)) else { continue };
            if let Some(a) = line.trim().strip_prefix("/*").and_then(|r| r.split("*/").next()).and_then(|h| u64::from_str_radix(h, 16).ok()) {
                listing.entry(k.clone()).or_default().push((a, ins.split(';').next().unwrap_or("").trim().to_string()));
            }
            let op = ins.trim().trim_start_matches(['@', '!']).split_whitespace().find(|w| !w.starts_with('P') || w.len() > 3);
            let Some(op) = op else { continue };
            let e = kernels.get_mut(k).unwrap();
            e.0 += 1;
            e.1 += op.starts_with("CALL") as usize;
            e.2 += (op.starts_with("LDL") || op.starts_with("STL")) as usize;
            // HMMA: mma.sync; HGMMA: Hopper's wgmma
            e.3 += (op.starts_with("HMMA") || op.starts_with("HGMMA")) as usize;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(kernels.len() > 40, "only {} kernels in the SASS", kernels.len());

    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("benches/sass/expected.json")).unwrap()).unwrap();
    let list = |k: &str| -> Vec<String> { expected[k].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect() };
    for h in list("hot") {
        let (n, calls, local, hmma) = kernels.get(&h).copied().unwrap_or_else(|| panic!("hot kernel {h} is not in the SASS"));
        eprintln!("{h:<32} {n:>5} instructions, {calls:>3} calls, {hmma:>3} HMMA or HGMMA, {local} local-memory ops");
    }
    let mut bad = vec![];
    for (k, &(_, calls, local, hmma)) in &kernels {
        if local > 0 {
            bad.push(format!("{k}: {local} local-memory instructions (a spill or a stack array)"));
        }
        if list("tensor_core").contains(k) && hmma == 0 {
            bad.push(format!("{k}: no tensor-core instruction (HMMA), but benches/sass/expected.json lists it as a tensor-core kernel"));
        }
        if list("call_free").contains(k) && calls > 0 {
            bad.push(format!("{k}: {calls} CALLs, but benches/sass/expected.json lists it as call-free"));
        }
    }
    let ceilings = expected["mma_loop_instructions_per_hmma"].as_object().expect("mma_loop_instructions_per_hmma in expected.json");
    for (k, ceiling) in ceilings {
        let Some(ins) = listing.get(k) else {
            bad.push(format!("{k}: listed in mma_loop_instructions_per_hmma but not in the SASS"));
            continue;
        };
        match mma_loop(ins) {
            None => bad.push(format!("{k}: no loop holds all of its HMMAs")),
            Some((body, hmma)) => {
                let per = body as f64 / hmma as f64;
                eprintln!("{k:<32} main loop: {body} instructions, {hmma} HMMA: {per:.1} per HMMA (ceiling {ceiling})");
                if per > ceiling.as_f64().unwrap() {
                    bad.push(format!("{k}: its main loop has {per:.1} instructions per HMMA, above the ceiling {ceiling} in benches/sass/expected.json"));
                }
            }
        }
    }
    for k in list("tensor_core").iter().chain(&list("call_free")) {
        if !kernels.contains_key(k) {
            bad.push(format!("{k}: listed in benches/sass/expected.json but not in the SASS"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The smallest loop of a kernel's listing (a branch back to an earlier address) that holds all
/// of its HMMAs (or Hopper's HGMMAs): (its instructions, its HMMAs).
#[cfg(feature = "cuda")]
fn mma_loop(ins: &[(u64, String)]) -> Option<(usize, usize)> {
    let hmma: Vec<usize> = ins.iter().enumerate().filter(|(_, (_, t))| t.contains("HMMA") || t.contains("HGMMA")).map(|(i, _)| i).collect();
    let (&first, &last) = (hmma.first()?, hmma.last()?);
    let index = |a: u64| ins.iter().position(|(x, _)| *x == a);
    ins.iter()
        .enumerate()
        .filter_map(|(i, (a, t))| {
            let target = t.split_whitespace().skip_while(|w| !w.starts_with("BRA")).nth(1)?;
            let target = u64::from_str_radix(target.trim_start_matches("0x"), 16).ok()?;
            let start = index(target)?;
            (target < *a && start <= first && i >= last).then(|| i + 1 - start)
        })
        .min()
        .map(|body| (body, hmma.len()))
}

#[cfg(not(feature = "cuda"))]
#[test]
fn sass_has_no_local_memory_and_keeps_its_tensor_cores() {
    eprintln!("skipped: built without the `cuda` feature (no fatbinaries)");
}
