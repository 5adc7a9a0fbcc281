//! The engine's overheads, held without a GPU: every zoo architecture and job traced on the
//! recording device (`deepviz trace`, batch 1 at the architecture's input size), against the
//! committed figures in `benches/trace/baseline.json`. A figure that grows — launches,
//! allocations, frees, host syncs, bytes copied, device bytes moved and held, multiply-adds
//! executed — or an `sm_fill` that drops fails the test; the
//! useful multiply-adds must not change at all (they are the model's). A figure that improves
//! is reported; rewrite the file with `DEEPVIZ_UPDATE_TRACE=1 cargo test --test trace`.
//! The standing targets are checked too: resnet50 saliency allocates nothing, does not
//! make the host wait, executes at most 1.3x its useful multiply-adds, and once warm asks the
//! driver for a handful of graph replays instead of a launch per kernel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use deepviz::backend::Precision;
use deepviz::job::{trace, trace_jobs};
use deepviz::model::Model;
use deepviz::zoo::ARCHS;
use serde_json::{json, Value};

const FIGURES: &[&str] = &["launches", "driver_launches", "allocations", "frees", "host_syncs", "bytes_host_to_device", "bytes_device_to_host", "device_bytes", "device_memory_peak", "executed_macs"];

fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/trace/baseline.json")
}

fn current() -> BTreeMap<String, Value> {
    let mut all = BTreeMap::new();
    for arch in ARCHS {
        let model = Arc::new(Model::placeholder(arch).unwrap());
        for job in trace_jobs() {
            match trace(model.clone(), job, 1, model.preprocess.size, Precision::F32) {
                Ok(t) => {
                    let mut v = t.to_json();
                    v.as_object_mut().unwrap().remove("kernels");
                    v.as_object_mut().unwrap().remove("work");
                    all.insert(format!("{arch}/{job}"), v);
                }
                // CAM needs a GAP + linear head
                Err(e) if job == "cam" && e.to_string().contains("CAM needs") => {}
                Err(e) => panic!("{arch}/{job}: {e}"),
            }
        }
    }
    all
}

#[test]
fn engine_overheads_do_not_regress() {
    let now = current();
    let r50 = &now["resnet50/saliency"];
    assert_eq!(r50["allocations"], 0, "resnet50 saliency allocates after its first run: {r50}");
    assert_eq!(r50["host_syncs"], 0, "resnet50 saliency makes the host wait mid-job: {r50}");
    let ratio = r50["executed_macs"].as_f64().unwrap() / r50["useful_macs"].as_f64().unwrap();
    assert!(ratio <= 1.3, "resnet50 saliency executes {ratio:.2}x its useful multiply-adds");
    let (launches, driver) = (r50["launches"].as_u64().unwrap(), r50["driver_launches"].as_u64().unwrap());
    assert!(driver * 16 <= launches, "resnet50 saliency, warm: {driver} driver launches for {launches} kernels (graphs not replayed?): {r50}");

    if std::env::var("DEEPVIZ_UPDATE_TRACE").is_ok() {
        let p = baseline_path();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let doc = json!({
            "made_by": "DEEPVIZ_UPDATE_TRACE=1 cargo test --test trace (deepviz trace JOB --arch ARCH, batch 1, the arch's input size)",
            "traces": now,
        });
        std::fs::write(&p, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
        eprintln!("wrote {}", p.display());
        return;
    }
    let base: Value = serde_json::from_str(&std::fs::read_to_string(baseline_path()).expect("benches/trace/baseline.json")).unwrap();
    let base = base["traces"].as_object().unwrap();
    let mut worse = vec![];
    let mut better = vec![];
    for (key, v) in &now {
        let Some(b) = base.get(key) else {
            worse.push(format!("{key}: not in the baseline"));
            continue;
        };
        if v["useful_macs"] != b["useful_macs"] {
            worse.push(format!("{key}: useful multiply-adds {} (baseline {})", v["useful_macs"], b["useful_macs"]));
        }
        for f in FIGURES {
            let (x, y) = (v[f].as_u64().unwrap(), b[f].as_u64().unwrap());
            if x > y {
                worse.push(format!("{key}: {f} {x} (baseline {y})"));
            } else if x < y {
                better.push(format!("{key}: {f} {x} (baseline {y})"));
            }
        }
        // the share of the card the GEMMs' grids fill: higher is better
        let (x, y) = (v["sm_fill"].as_f64().unwrap(), b["sm_fill"].as_f64().unwrap());
        if x < y {
            worse.push(format!("{key}: sm_fill {x} (baseline {y})"));
        } else if x > y {
            better.push(format!("{key}: sm_fill {x} (baseline {y})"));
        }
    }
    for b in &better {
        eprintln!("improved: {b}");
    }
    if !better.is_empty() {
        eprintln!("(record the improvements: DEEPVIZ_UPDATE_TRACE=1 cargo test --test trace)");
    }
    assert!(worse.is_empty(), "the engine's overheads grew:\n{}", worse.join("\n"));
}

/// The tensor-core precisions trace too (every launch names a kernel the devices have: a
/// version missing from a `KERNELS` list fails here, not on a card), and hold the same targets
/// for resnet50 saliency: no allocation or host wait after the first run (the column matrix of
/// the first layer's backward data comes from the pool), the tap-slice kernels on every
/// convolution past the first, the column matrix for the first.
#[test]
fn tensor_core_precisions_trace_and_keep_the_targets() {
    for prec in [Precision::Tf32, Precision::Bf16] {
        for arch in ARCHS {
            let model = Arc::new(Model::placeholder(arch).unwrap());
            for job in trace_jobs() {
                match trace(model.clone(), job, 1, model.preprocess.size, prec) {
                    Ok(t) if *arch == "resnet50" && job == "saliency" => {
                        let v = t.to_json();
                        assert_eq!(v["allocations"], 0, "{prec} resnet50 saliency allocates after its first run: {v}");
                        assert_eq!(v["host_syncs"], 0, "{prec} resnet50 saliency makes the host wait mid-job: {v}");
                        let count = |k: &str| v["kernels"].as_array().unwrap().iter().find(|e| e[0] == k).map_or(0, |e| e[1].as_u64().unwrap());
                        let p = prec.name();
                        // the 52 past the stem, and the column matrix's 1x1 product
                        assert_eq!(count(&format!("conv2d_fwd_{p}_tap_f32")), 53, "{prec}: {v}");
                        assert_eq!(count(&format!("conv2d_bwd_data_{p}_tap_f32")), 52, "{prec}: {v}");
                        assert_eq!(count("conv2d_col2im_f32"), 1, "{prec}: {v}");
                        assert_eq!(count(&format!("conv2d_fwd_{p}_f32")) + count("conv2d_bwd_data_direct_f32"), 1, "{prec}: only the stem's forward gathers: {v}");
                    }
                    Ok(_) => {}
                    Err(e) if job == "cam" && e.to_string().contains("CAM needs") => {}
                    Err(e) => panic!("{prec} {arch}/{job}: {e}"),
                }
            }
        }
    }
}
