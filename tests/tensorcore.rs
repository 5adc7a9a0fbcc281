//! The tensor-core wrappers of `kernels/tensorcore.cuh` and the TF32 GEMM built on them
//! (`kernels/gemm_tc.cu`), on the emulated GPU under every schedule and on the real GPU when
//! there is one. `mma_probe_bf16` runs one ldmatrix.x4 + one mma.m16n8k16 on random tiles: a
//! match with the host product on both devices proves the fragment layouts the emulator assumes
//! are the hardware's.

mod common;

use common::{assert_close, seeded};
use deepviz::backend::cuda::gemm_tc;
use deepviz::device::{Arg, Device, DevicePtr, LaunchConfig};

use common::devices;

fn put<T: bytemuck::Pod>(dev: &dyn Device, v: &[T]) -> DevicePtr {
    let bytes: &[u8] = bytemuck::cast_slice(v);
    let p = dev.alloc(bytes.len().max(4)).unwrap();
    dev.upload(p, bytes).unwrap();
    p
}
fn get(dev: &dyn Device, p: DevicePtr, n: usize) -> Vec<f32> {
    dev.synchronize().unwrap();
    let mut v = vec![0f32; n];
    dev.download(p, bytemuck::cast_slice_mut(&mut v)).unwrap();
    v
}

/// f32 -> bf16 bits, round to nearest even (finite inputs).
fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}
fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `(c0 + A·B, Σ|a||b|)` in f64 for row-major A [m, k], B [k, n], c0 [m, n].
fn gemm_ref(a: &[f32], b: &[f32], c0: &[f32], m: usize, n: usize, k: usize) -> (Vec<f32>, f64) {
    let (mut out, mut scale) = (vec![0f32; m * n], 0f64);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut abs) = (c0[i * n + j] as f64, 0f64);
            for p in 0..k {
                let t = a[i * k + p] as f64 * b[p * n + j] as f64;
                s += t;
                abs += t.abs();
            }
            out[i * n + j] = s as f32;
            scale = scale.max(abs);
        }
    }
    (out, scale)
}

/// TF32 keeps 10 mantissa bits: each product is off by at most ~2^-10 relative, so the error of
/// an element is below 1e-3·Σ|a||b| (atol, from the largest such sum) — 2e-3 relative to the
/// result for well-conditioned sums. Odd sizes take the scalar edge path, multiples of 4 the
/// cp.async path with ragged tiles, and 128x64x256 whole tiles only.
#[test]
fn gemm_tf32_matches_f64_reference() {
    let shapes = [(37, 29, 53), (128, 64, 256), (1, 1, 1), (33, 40, 68)];
    for dev in devices() {
        let d = dev.as_ref();
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            let s = 10 * si as u64;
            let (a, b, c0) = (seeded(s + 1, m * k), seeded(s + 2, k * n), seeded(s + 3, m * n));
            let (pa, pb) = (put(d, &a), put(d, &b));
            for accumulate in [false, true] {
                let pc = put(d, &c0);
                gemm_tc::gemm_tf32(d, pa, pb, pc, m, n, k, accumulate).unwrap();
                let zeros = vec![0f32; m * n];
                let (want, scale) = gemm_ref(&a, &b, if accumulate { &c0 } else { &zeros }, m, n, k);
                let what = format!("{}.gemm_tf32 m={m} n={n} k={k} accumulate={accumulate}", d.name());
                assert_close(&what, &get(d, pc, m * n), &want, (1e-3 * scale) as f32 + 1e-6, 2e-3);
                d.free(pc);
            }
            d.free(pa);
            d.free(pb);
        }
    }
}

/// One warp: A [16, 16] bf16 through ldmatrix.x4, B [16, 8] bf16, C [16, 8] f32, one
/// mma.m16n8k16. The bf16 products are exact in f32, so only the f32 accumulation of 16 terms
/// separates device and host (well under 1e-5); a wrong lane mapping moves whole terms.
#[test]
fn mma_bf16_probe_matches_host_product() {
    let a: Vec<u16> = seeded(101, 16 * 16).iter().map(|&x| bf16(x)).collect();
    let b: Vec<u16> = seeded(102, 16 * 8).iter().map(|&x| bf16(x)).collect();
    let c = seeded(103, 16 * 8);
    let (af, bf): (Vec<f32>, Vec<f32>) = (a.iter().map(|&h| bf16_to_f32(h)).collect(), b.iter().map(|&h| bf16_to_f32(h)).collect());
    let (want, _) = gemm_ref(&af, &bf, &c, 16, 8, 16);
    for dev in devices() {
        let d = dev.as_ref();
        let (pa, pb, pc, pd) = (put(d, &a), put(d, &b), put(d, &c), put(d, &vec![f32::NAN; 16 * 8]));
        let cfg = LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], shared_bytes: 0 };
        d.launch("mma_probe_bf16", cfg, &[Arg::Ptr(pa), Arg::Ptr(pb), Arg::Ptr(pc), Arg::Ptr(pd)]).unwrap();
        assert_close(&format!("{}.mma_probe_bf16", d.name()), &get(d, pd, 16 * 8), &want, 1e-5, 1e-5);
        for p in [pa, pb, pc, pd] {
            d.free(p);
        }
    }
}

/// Hopper's wgmma (kernels/wgmma_sm90a.cu, `wgmma_probe_bf16`): D [64, 64] = A [64, K] · B^T
/// through four m64n64k16 a 64-wide K tile, the operands staged by plain stores in the 128-byte
/// swizzle layout and read through shared-memory descriptors. On the emulator everywhere; on a
/// card only at CC 9.0 (the module is sm_90a SASS alone; elsewhere the kernel is absent). A
/// match on the card proves the descriptor, swizzle and accumulator layouts wgmma.cuh's
/// emulation assumes. bf16 products are exact in f32: only the accumulation order of K = 192
/// terms separates device and host.
#[test]
fn wgmma_bf16_probe_matches_host_product() {
    let k = 192;
    let a: Vec<u16> = seeded(111, 64 * k).iter().map(|&x| bf16(x)).collect();
    let b: Vec<u16> = seeded(112, 64 * k).iter().map(|&x| bf16(x)).collect();
    let af: Vec<f32> = a.iter().map(|&h| bf16_to_f32(h)).collect();
    // B^T as the reference's [k, n]
    let mut bkn = vec![0f32; k * 64];
    for n in 0..64 {
        for p in 0..k {
            bkn[p * 64 + n] = bf16_to_f32(b[n * k + p]);
        }
    }
    let (want, _) = gemm_ref(&af, &bkn, &vec![0.0; 64 * 64], 64, 64, k);
    let smem = 1024 + 2 * 64 * 128;
    let mut ran = 0;
    for dev in devices() {
        let d = dev.as_ref();
        if !d.has_kernel("wgmma_probe_bf16") {
            eprintln!("{}: no wgmma_probe_bf16 (sm_90a only): skipped", d.name());
            continue;
        }
        let emulated = d.name().contains("emu");
        let (pa, pb) = (put(d, &a), put(d, &b));
        for misuse in if emulated { vec![0, 1, 2, 3] } else { vec![0] } {
            let pd = put(d, &vec![f32::NAN; 64 * 64]);
            let cfg = LaunchConfig { grid: [1, 1, 1], block: [128, 1, 1], shared_bytes: smem };
            let r = d.launch("wgmma_probe_bf16", cfg, &[Arg::Ptr(pa), Arg::Ptr(pb), Arg::I32(k as i32), Arg::Ptr(pd), Arg::I32(misuse)]).and_then(|_| d.synchronize());
            match misuse {
                0 => {
                    r.unwrap();
                    let got = get(d, pd, 64 * 64);
                    layout_hint(&got, &want);
                    assert_close(&format!("{}.wgmma_probe_bf16", d.name()), &got, &want, 1e-5, 1e-5);
                }
                1 => assert!(r.is_err_and(|e| e.to_string().contains("without a wgmma.fence")), "{}: a wgmma with no fence ran", d.name()),
                2 => assert!(r.is_err_and(|e| e.to_string().contains("written before a wgmma.wait_group")), "{}: A overwritten under the wgmma went unseen", d.name()),
                _ => assert!(r.is_err_and(|e| e.to_string().contains("no wgmma.wait_group covered")), "{}: a wgmma never waited for went unseen", d.name()),
            }
            d.free(pd);
        }
        for p in [pa, pb] {
            d.free(p);
        }
        ran += 1;
    }
    assert!(ran > 0, "the emulator has every kernel");
}

/// Where a wrong layout put things (printed before the assertion fails, for the card's log):
/// each output is a sum of 192 random products, so its value is all but unique, and a value
/// found at another place of the reference names the permutation (a wrong D layout moves whole
/// values; a wrong descriptor or swizzle makes values found nowhere).
fn layout_hint(got: &[f32], want: &[f32]) {
    let bad: Vec<usize> = (0..got.len()).filter(|&i| (got[i] - want[i]).abs() > 1e-4 * (1.0 + want[i].abs())).collect();
    if bad.is_empty() {
        return;
    }
    let at = |v: f32| want.iter().position(|&w| (w - v).abs() <= 1e-5 * (1.0 + v.abs()));
    let moved: Vec<String> = bad.iter().take(16).map(|&i| match at(got[i]) {
        Some(j) => format!("D[{}][{}] holds D[{}][{}]", i / 64, i % 64, j / 64, j % 64),
        None => format!("D[{}][{}] holds a value found nowhere", i / 64, i % 64),
    }).collect();
    let found = bad.iter().filter(|&&i| at(got[i]).is_some()).count();
    eprintln!("wgmma probe: {} of 4096 outputs wrong, {found} of them values from elsewhere in D; first: {}", bad.len(), moved.join("; "));
}
