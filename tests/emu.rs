//! The CPU emulation of the CUDA execution model (src/device/emu.rs, emu/), on the small kernels
//! of tests/emu_kernels/: that correct kernels give right answers under every schedule, and that
//! planted bugs (a missing barrier, out-of-bounds writes, divergent barriers) are caught.

use deepviz::device::emu::{EmuDevice, Schedule};
use deepviz::device::{Arg, Device, DevicePtr, LaunchConfig};

fn upload_f32(dev: &EmuDevice, x: &[f32]) -> DevicePtr {
    let p = dev.alloc(x.len() * 4).unwrap();
    dev.upload(p, bytemuck::cast_slice(x)).unwrap();
    p
}
fn download_f32(dev: &EmuDevice, p: DevicePtr, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    dev.download(p, bytemuck::cast_slice_mut(&mut v)).unwrap();
    v
}
fn download_u32(dev: &EmuDevice, p: DevicePtr, n: usize) -> Vec<u32> {
    let mut v = vec![0u32; n];
    dev.download(p, bytemuck::cast_slice_mut(&mut v)).unwrap();
    v
}
/// Small integers as floats: sums are exact in any order.
fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7) % 13) as f32 - 6.0).collect()
}
fn block_sums(x: &[f32], block: usize) -> Vec<f32> {
    x.chunks(block).map(|c| c.iter().sum()).collect()
}

const SUM_THREADS: u32 = 256;

fn run_block_sum(dev: &EmuDevice, kernel: &str, x: &[f32]) -> Vec<f32> {
    let blocks = x.len().div_ceil(SUM_THREADS as usize);
    let (px, py) = (upload_f32(dev, x), dev.alloc(blocks * 4).unwrap());
    let cfg = LaunchConfig::linear(x.len(), SUM_THREADS);
    dev.launch(kernel, cfg, &[Arg::Ptr(px), Arg::Ptr(py), Arg::I64(x.len() as i64)]).unwrap();
    let y = download_f32(dev, py, blocks);
    dev.free(px);
    dev.free(py);
    y
}

#[test]
fn shared_memory_reduction_is_right_under_every_schedule() {
    let x = ramp(3 * 256 + 77);
    for s in Schedule::ALL {
        let y = run_block_sum(&EmuDevice::with_schedule(s), "emutest_block_sum_f32", &x);
        assert_eq!(y, block_sums(&x, 256), "{s:?}");
    }
}

#[test]
fn missing_barrier_gives_a_wrong_answer_under_some_schedule() {
    let x = ramp(2 * 256);
    let want = block_sums(&x, 256);
    let wrong: Vec<Schedule> = Schedule::ALL
        .into_iter()
        .filter(|&s| run_block_sum(&EmuDevice::with_schedule(s), "emutest_block_sum_nobarrier_f32", &x) != want)
        .collect();
    assert!(!wrong.is_empty(), "the missing __syncthreads() went unnoticed under every schedule");
}

#[test]
fn warp_shuffles_ballots_and_votes() {
    let dev = EmuDevice::with_schedule(Schedule::Shuffled(7));
    let n = 4 * 96; // 3 warps per block of 96
    let x: Vec<f32> = (0..n).map(|i| if i % 5 == 0 { -(i as f32) } else { (i % 11) as f32 }).collect();
    let warps = n / 32;
    let (px, py, pz, pb) = (upload_f32(&dev, &x), dev.alloc(warps * 4).unwrap(), dev.alloc(warps * 4).unwrap(), dev.alloc(warps * 4).unwrap());
    let args = [Arg::Ptr(px), Arg::Ptr(py), Arg::Ptr(pz), Arg::Ptr(pb), Arg::I64(n as i64)];
    dev.launch("emutest_warp_ops_f32", LaunchConfig::linear(n, 96), &args).unwrap();
    let (y, z, b) = (download_f32(&dev, py, warps), download_f32(&dev, pz, warps), download_u32(&dev, pb, warps));
    for w in 0..warps {
        let lanes = &x[w * 32..w * 32 + 32];
        assert_eq!(y[w], lanes.iter().sum::<f32>(), "sum of warp {w}");
        assert_eq!(z[w], lanes.iter().cloned().fold(f32::MIN, f32::max), "max of warp {w}");
        let ballot = lanes.iter().enumerate().fold(0u32, |m, (l, &v)| m | (((v > 0.0) as u32) << l));
        assert_eq!(b[w], ballot, "ballot of warp {w}");
    }
}

#[test]
fn atomics_from_many_blocks() {
    let dev = EmuDevice::new();
    let n = 10_000usize;
    let bins = 7;
    let x: Vec<i32> = (0..n).map(|i| ((i * 31) % bins) as i32).collect();
    let px = dev.alloc(n * 4).unwrap();
    dev.upload(px, bytemuck::cast_slice(&x)).unwrap();
    let (hist, sum, mx) = (dev.alloc(bins * 4).unwrap(), dev.alloc(4).unwrap(), dev.alloc(4).unwrap());
    for p in [hist, sum, mx] {
        dev.memset_zero(p, if p == hist { bins * 4 } else { 4 }).unwrap();
    }
    let cfg = LaunchConfig { grid: [13, 1, 1], block: [128, 1, 1], shared_bytes: 0 };
    dev.launch("emutest_atomics", cfg, &[Arg::Ptr(px), Arg::Ptr(hist), Arg::Ptr(sum), Arg::Ptr(mx), Arg::I64(n as i64)])
        .unwrap();
    let mut want = vec![0u32; bins];
    x.iter().for_each(|&v| want[v as usize] += 1);
    assert_eq!(download_u32(&dev, hist, bins), want);
    assert_eq!(download_f32(&dev, sum, 1)[0], n as f32);
    assert_eq!(download_u32(&dev, mx, 1)[0], bins as u32 - 1);
}

#[test]
fn dynamic_shared_memory() {
    let n = 3 * 64 + 21;
    let x = ramp(n);
    for s in Schedule::ALL {
        let dev = EmuDevice::with_schedule(s);
        let (px, py) = (upload_f32(&dev, &x), dev.alloc(n * 4).unwrap());
        let cfg = LaunchConfig { shared_bytes: 64 * 4, ..LaunchConfig::linear(n, 64) };
        dev.launch("emutest_dyn_reverse_f32", cfg, &[Arg::Ptr(px), Arg::Ptr(py), Arg::I64(n as i64)]).unwrap();
        let mut want = x.clone();
        want[..3 * 64].chunks_mut(64).for_each(|c| c.reverse());
        assert_eq!(download_f32(&dev, py, n), want, "{s:?}");
    }
}

#[test]
fn too_little_dynamic_shared_memory_is_out_of_bounds() {
    let dev = EmuDevice::new();
    let n = 64;
    let (px, py) = (upload_f32(&dev, &ramp(n)), dev.alloc(n * 4).unwrap());
    let cfg = LaunchConfig { shared_bytes: 32 * 4, ..LaunchConfig::linear(n, 64) };
    let err = dev.launch("emutest_dyn_reverse_f32", cfg, &[Arg::Ptr(px), Arg::Ptr(py), Arg::I64(n as i64)]).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("out-of-bounds write") && msg.contains("offset 128 of the 128-byte dynamic shared memory, past its end"), "{msg}");
}

#[test]
fn two_dimensional_grid_and_block() {
    let dev = EmuDevice::with_schedule(Schedule::Reverse);
    let (rows, cols) = (13usize, 21usize);
    let x = ramp(rows * cols);
    let (px, py) = (upload_f32(&dev, &x), dev.alloc(rows * cols * 4).unwrap());
    let cfg = LaunchConfig { grid: [cols.div_ceil(8) as u32, rows.div_ceil(8) as u32, 1], block: [8, 8, 1], shared_bytes: 0 };
    dev.launch("emutest_transpose_f32", cfg, &[Arg::Ptr(px), Arg::Ptr(py), Arg::I32(rows as i32), Arg::I32(cols as i32)])
        .unwrap();
    let y = download_f32(&dev, py, rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            assert_eq!(y[c * rows + r], x[r * cols + c], "y[{c}, {r}]");
        }
    }
}

#[test]
fn syncthreads_count_and_a_partial_warp_with_exited_lanes() {
    let n = 2 * 48 - 5; // blocks of 48: the second warp of each block is partial, the last block short
    let x: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { -1.0 } else { i as f32 }).collect();
    for s in Schedule::ALL {
        let dev = EmuDevice::with_schedule(s);
        let (px, py, pz) = (upload_f32(&dev, &x), dev.alloc(2 * 4).unwrap(), dev.alloc(n * 4).unwrap());
        dev.launch("emutest_count_pairs_f32", LaunchConfig::linear(n, 48), &[Arg::Ptr(px), Arg::Ptr(py), Arg::Ptr(pz), Arg::I64(n as i64)])
            .unwrap();
        let want_y: Vec<f32> = x.chunks(48).map(|c| c.iter().filter(|&&v| v > 0.0).count() as f32).collect();
        assert_eq!(download_f32(&dev, py, 2), want_y, "{s:?}");
        let want_z: Vec<f32> = (0..n).map(|i| if (i ^ 1) < n { x[i] + x[i ^ 1] } else { x[i] }).collect();
        assert_eq!(download_f32(&dev, pz, n), want_z, "{s:?}");
    }
}

fn launch_err(dev: &EmuDevice, kernel: &str, cfg: LaunchConfig, args: &[Arg]) -> String {
    dev.launch(kernel, cfg, args).expect_err("the launch should fail").to_string()
}

#[test]
fn writing_past_the_end_is_an_error_naming_the_kernel() {
    let dev = EmuDevice::new();
    let n = 100;
    let y = dev.alloc(n * 4).unwrap();
    let msg = launch_err(&dev, "emutest_write_past_end_f32", LaunchConfig::linear(n + 1, 32), &[Arg::Ptr(y), Arg::I64(n as i64)]);
    assert!(msg.contains("emutest_write_past_end_f32") && msg.contains("out-of-bounds write"), "{msg}");
    assert!(msg.contains("offset 400 of a 400-byte allocation, past its end"), "{msg}");
    assert!(msg.contains("thread (4,0,0) of block (3,0,0)"), "{msg}");
    // the device stays usable
    let x = ramp(300);
    assert_eq!(run_block_sum(&dev, "emutest_block_sum_f32", &x), block_sums(&x, 256));
}

#[test]
fn reading_past_the_end_is_an_error() {
    let dev = EmuDevice::with_schedule(Schedule::Shuffled(1));
    let (x, y) = (dev.alloc(33 * 4).unwrap(), dev.alloc(33 * 4).unwrap());
    let msg = launch_err(&dev, "emutest_read_past_end_f32", LaunchConfig::linear(33, 64), &[Arg::Ptr(x), Arg::Ptr(y), Arg::I64(33)]);
    assert!(msg.contains("out-of-bounds read") && msg.contains("offset 132 of a 132-byte allocation, past its end"), "{msg}");
    assert!(msg.contains("thread (32,0,0) of block (0,0,0)"), "{msg}");
}

#[test]
fn writing_before_the_start_is_an_error() {
    let dev = EmuDevice::new();
    let y = dev.alloc(64 * 4).unwrap();
    let msg = launch_err(&dev, "emutest_write_before_start_f32", LaunchConfig::linear(64, 64), &[Arg::Ptr(y), Arg::I64(64)]);
    assert!(msg.contains("emutest_write_before_start_f32") && msg.contains("wrote before the start of a 256-byte allocation"), "{msg}");
    assert!(msg.contains("(4 bytes before it)"), "{msg}");
}

#[test]
fn unknown_kernels_and_bad_launches_are_errors() {
    let dev = EmuDevice::new();
    assert!(!dev.has_kernel("emutest_nope_f32") && dev.has_kernel("emutest_block_sum_f32"));
    let y = dev.alloc(1024).unwrap();
    let msg = launch_err(&dev, "emutest_nope_f32", LaunchConfig::linear(1, 1), &[]);
    assert!(msg.contains("`emutest_nope_f32`") && msg.contains("no such kernel") && msg.contains("emutest_block_sum_f32"), "{msg}");
    let big = LaunchConfig { grid: [1, 1, 1], block: [32, 33, 1], shared_bytes: 0 };
    let msg = launch_err(&dev, "emutest_write_past_end_f32", big, &[Arg::Ptr(y), Arg::I64(1)]);
    assert!(msg.contains("too large"), "{msg}");
    let cfg = LaunchConfig::linear(1, 32);
    let msg = launch_err(&dev, "emutest_write_past_end_f32", cfg, &[Arg::Ptr(y), Arg::I32(1)]);
    assert!(msg.contains("argument 1 is int but the kernel declares a 64-bit integer"), "{msg}");
    let msg = launch_err(&dev, "emutest_write_past_end_f32", cfg, &[Arg::Ptr(y)]);
    assert!(msg.contains("1 arguments passed, the kernel declares 2"), "{msg}");
    let host = [0f32; 4];
    let msg = launch_err(&dev, "emutest_write_past_end_f32", cfg, &[Arg::Ptr(DevicePtr(host.as_ptr() as u64)), Arg::I64(1)]);
    assert!(msg.contains("argument 0") && msg.contains("not in any device allocation"), "{msg}");
    assert!(dev.upload(y, &[0u8; 1025]).unwrap_err().to_string().contains("1025 bytes"));
}

#[test]
fn divergent_barriers_and_deadlocks_are_errors() {
    let dev = EmuDevice::new();
    let y = dev.alloc(64 * 4).unwrap();
    let msg = launch_err(&dev, "emutest_divergent_barrier_f32", LaunchConfig::linear(64, 64), &[Arg::Ptr(y), Arg::I64(64)]);
    assert!(msg.contains("barrier divergence") && msg.contains("emutest.cu"), "{msg}");
    let msg = launch_err(&dev, "emutest_shfl_deadlock_f32", LaunchConfig::linear(64, 64), &[Arg::Ptr(y), Arg::I64(64)]);
    assert!(msg.contains("deadlock") && msg.contains("__shfl_xor_sync"), "{msg}");
}

#[test]
fn fresh_allocations_hold_nan() {
    let dev = EmuDevice::new();
    let p = dev.alloc(12).unwrap();
    assert!(download_f32(&dev, p, 3).iter().all(|v| v.is_nan()));
    dev.free(p);
}

/// The cp.async emulation (kernels/tensorcore.cuh) lands copies as late as the hardware may:
/// a correct wait + barrier reads the data; a read before the thread's wait, a read of another
/// thread's copy without the barrier after its wait, and a read of a stage that wait_group left
/// in flight are each refused with the call site, under every schedule. A copy with src-size 0
/// lands zeros without reading its source, and is in flight until its wait like any other.
#[test]
fn cp_async_reads_before_their_wait_are_refused() {
    let src: Vec<f32> = (0..128).map(|i| i as f32 * 0.5 - 7.0).collect();
    let want: Vec<f32> = (0..128).map(|i| src[(i + 4) % 128]).collect();
    for s in Schedule::ALL {
        let dev = EmuDevice::with_schedule(s);
        let (ps, po) = (upload_f32(&dev, &src), dev.alloc(128 * 4).unwrap());
        let run = |mode: i32| dev.launch("emutest_cp_async_f32", LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], shared_bytes: 0 }, &[Arg::Ptr(ps), Arg::Ptr(po), Arg::I32(mode)]);
        run(0).unwrap();
        assert_eq!(download_f32(&dev, po, 128), want, "{s:?}");
        // src-size 0: odd threads' chunks are zeros (read by their even neighbours)
        run(4).unwrap();
        let zfilled: Vec<f32> = (0..128).map(|i| if (i / 4 + 1) % 2 == 0 { want[i] } else { 0.0 }).collect();
        assert_eq!(download_f32(&dev, po, 128), zfilled, "{s:?} zfill");
        for mode in [1, 2, 3, 5] {
            let msg = run(mode).unwrap_err().to_string();
            assert!(msg.contains("has not landed") && msg.contains("emutest.cu"), "{s:?} mode {mode}: {msg}");
        }
        dev.free(ps);
        dev.free(po);
    }
}
