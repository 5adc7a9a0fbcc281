//! The real-GPU device (`--features cuda`): memory, launches, errors, and that every kernel the
//! launch code uses is in the fatbinaries. Without a GPU each test says "skipped: no CUDA
//! device" and returns. The ops themselves are tested on every device by `gpu_ops.rs`.
#![cfg(feature = "cuda")]

use deepviz::backend::cuda::{self, elementwise};
use deepviz::backend::Act;
use deepviz::device::cuda::CudaDevice;
use deepviz::device::{Arg, Device, LaunchConfig};

/// Writes to stderr directly, in one write: the test harness captures `eprintln!`, and a skip
/// must be seen.
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn skipped(test: &str) {
    say(&format!("{test}: skipped: no CUDA device\n"));
}

/// The first GPU, or `None` after saying why the test is skipped.
fn gpu(test: &str) -> Option<CudaDevice> {
    if !CudaDevice::available() {
        skipped(test);
        return None;
    }
    Some(CudaDevice::new(0).unwrap_or_else(|e| panic!("a CUDA device is present but cannot be opened: {e}")))
}

#[test]
fn without_a_gpu_new_is_an_error_not_a_panic() {
    if CudaDevice::available() {
        return;
    }
    let err = CudaDevice::new(0).expect_err("no GPU, yet CudaDevice::new succeeded").to_string();
    assert!(err.contains("no CUDA"), "unclear error: {err}");
    say(&format!("CudaDevice::new(0) without a GPU: {err}\n"));
}

#[test]
fn round_trip_and_memset() {
    let Some(dev) = gpu("round_trip_and_memset") else { return };
    // an odd size, so nothing relies on multiples of 4 or 256
    let data: Vec<u8> = (0..1001u32).map(|i| (i * 37 % 251) as u8).collect();
    let p = dev.alloc(data.len()).unwrap();
    dev.upload(p, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    dev.download(p, &mut back).unwrap();
    assert_eq!(back, data);

    dev.memset_zero(p, 500).unwrap();
    dev.download(p, &mut back).unwrap();
    assert!(back[..500].iter().all(|&b| b == 0), "memset left non-zero bytes");
    assert_eq!(back[500..], data[500..], "memset wrote past its range");

    let err = dev.upload(p, &vec![0u8; data.len() + 1]).expect_err("upload past the end accepted").to_string();
    assert!(err.contains("allocation"), "{err}");
    dev.free(p);
}

#[test]
fn relu_matches_the_host() {
    let Some(dev) = gpu("relu_matches_the_host") else { return };
    assert!(dev.has_kernel("relu_fwd_f32"));
    // more than one block, not a multiple of the block size
    let n = 3 * 33 * 7 * 13 + 5;
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0).collect();
    let px = dev.alloc(n * 4).unwrap();
    let py = dev.alloc(n * 4).unwrap();
    dev.upload(px, bytemuck::cast_slice(&x)).unwrap();
    elementwise::act(&dev, Act::Relu, px, py, n).unwrap();
    dev.synchronize().unwrap();
    let mut y = vec![0f32; n];
    dev.download(py, bytemuck::cast_slice_mut(&mut y)).unwrap();
    for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
        assert_eq!(yi, xi.max(0.0), "element {i}: relu({xi}) gave {yi}");
    }
    dev.free(px);
    dev.free(py);
}

#[test]
fn unknown_kernel_is_an_error_naming_it() {
    let Some(dev) = gpu("unknown_kernel_is_an_error_naming_it") else { return };
    assert!(!dev.has_kernel("no_such_kernel_f32"));
    let err = dev
        .launch("no_such_kernel_f32", LaunchConfig::linear(1, 32), &[Arg::I64(1)])
        .expect_err("launching an unknown kernel succeeded")
        .to_string();
    assert!(err.contains("no_such_kernel_f32"), "{err}");
}

#[test]
fn a_bad_launch_names_the_kernel() {
    let Some(dev) = gpu("a_bad_launch_names_the_kernel") else { return };
    let p = dev.alloc(4).unwrap();
    // 4096 threads per block is more than any GPU allows
    let cfg = LaunchConfig { grid: [1, 1, 1], block: [4096, 1, 1], shared_bytes: 0 };
    let err = dev.launch("relu_fwd_f32", cfg, &[Arg::Ptr(p), Arg::Ptr(p), Arg::I64(1)]).expect_err("oversized block accepted").to_string();
    assert!(err.contains("relu_fwd_f32"), "{err}");
    dev.synchronize().unwrap();
    dev.free(p);
}

#[test]
fn huge_alloc_says_what_is_free() {
    let Some(dev) = gpu("huge_alloc_says_what_is_free") else { return };
    let pib = 1usize << 50;
    let err = dev.alloc(pib).expect_err("a 1 PiB allocation succeeded").to_string();
    assert!(err.contains(&pib.to_string()) && err.contains("free"), "{err}");
    // the device is still usable
    let p = dev.alloc(16).unwrap();
    dev.free(p);
}

#[test]
fn every_kernel_the_launch_code_uses_is_loaded() {
    let Some(dev) = gpu("every_kernel_the_launch_code_uses_is_loaded") else { return };
    let missing: Vec<String> = cuda::kernel_names().into_iter().filter(|k| !dev.has_kernel(k)).collect();
    assert!(missing.is_empty(), "kernels missing from the fatbinaries: {missing:?}");
}

#[test]
fn usable_from_other_threads() {
    let Some(dev) = gpu("usable_from_other_threads") else { return };
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let dev = &dev;
            s.spawn(move || {
                let data = vec![t; 4096];
                let p = dev.alloc(data.len()).unwrap();
                dev.upload(p, &data).unwrap();
                let mut back = vec![0u8; data.len()];
                dev.download(p, &mut back).unwrap();
                assert_eq!(back, data);
                dev.free(p);
            });
        }
    });
}

/// A kernel that faults poisons the whole CUDA context, so the fault is provoked in a child
/// process: this test binary again, running only [`fault_child`].
#[test]
fn an_asynchronous_fault_names_the_kernel() {
    if !CudaDevice::available() {
        return skipped("an_asynchronous_fault_names_the_kernel");
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "fault_child", "--nocapture", "--test-threads=1"])
        .env("DV_CUDA_FAULT_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // the harness prints "test fault_child ... " on the same line
    let line = text.lines().find_map(|l| l.split_once("fault: ").map(|(_, r)| r)).unwrap_or_else(|| panic!("the child reported no fault:\n{text}"));
    assert!(line.contains("relu_fwd_f32") && line.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{line}");
}

/// Helper of [`an_asynchronous_fault_names_the_kernel`]; does nothing when run normally.
#[test]
fn fault_child() {
    if std::env::var_os("DV_CUDA_FAULT_CHILD").is_none() {
        return;
    }
    let dev = CudaDevice::new(0).unwrap();
    let bad = deepviz::device::DevicePtr(8); // never mapped
    // SAFETY of the test: deliberately not — relu_fwd_f32 reads and writes address 8 onwards.
    let err = match dev.launch("relu_fwd_f32", LaunchConfig::linear(1 << 20, 256), &[Arg::Ptr(bad), Arg::Ptr(bad), Arg::I64(1 << 20)]) {
        Err(e) => e, // CUDA_LAUNCH_BLOCKING=1: the launch itself reports it
        Ok(()) => dev.synchronize().expect_err("reading address 8 did not fault"),
    };
    println!("fault: {err}");
}
