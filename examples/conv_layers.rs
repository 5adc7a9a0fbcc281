//! The CUDA engine's convolutions at resnet50's layer shapes, forward and backward-data, in each
//! precision: milliseconds per call and TFLOP/s (RESULTS.md, "Owed on the GPU", item 2). Its
//! PyTorch / cuDNN counterpart is `scripts/gpu/conv_layers_torch.py`, which times the same
//! shapes and prints the same JSON lines; `scripts/gpu/run.sh` runs both in one call and
//! prints their ratio.
//!
//!     cargo run --release --features cuda --example conv_layers -- [BATCH] [DEVICE] [REPS] [--json FILE] [--stem]
//!
//! `--layer I` runs only shape I of the table (0-based), `--precision P` only that precision
//! (for a profiler: `ncu ... conv_layers 64 cuda 1 --layer 16 --precision bf16`). In tf32 and
//! bf16 each layer the engine stages by tap slices is also timed staged by gathering (passes
//! `fwd_gather` / `bwd_data_gather`: the A/B of kernels/conv_tc.cu's two loaders); in fp32
//! those layers are also timed as 3xTF32 on the tensor cores (passes `fwd_x3` / `bwd_data_x3`:
//! the A/B of `cuda::conv::f32_tensor_cores`). Where the engine splits a layer's reduction
//! (`cuda::conv::SplitK`: grids under a wave, so at small batches) it is also timed unsplit
//! (passes `fwd_unsplit` / `bwd_data_unsplit`), and a last line sums the A/B. In bf16, where
//! Hopper's wgmma kernel runs (a CC 9.0 card; 64-channel slices), the forward is also timed on
//! it (pass `fwd_wgmma`, same split as `fwd`: the A/B of `cuda::conv::wgmma_forward`).
//! `--stem` times instead the first layer's backward data (3 input channels, 7x7 stride 2 at
//! 224², the gradient saliency needs) by every version of `cuda::conv::backward_data_as`, for 32,
//! 64 and 128 output channels (`--cout N`: only N), with and without the fused ReLU mask: what the engine's choices
//! (`Col2im` in each precision) cost against the others (RESULTS.md, "Owed on the GPU", item 2).
//!
//! (defaults 64, `cuda`, 20; DEVICE `emu` is the dry run on the emulation, at a small batch).
//! Each shape is timed after two warm-up calls, REPS calls between two device synchronisations
//! (the launches queue back to back, as in a model's pass); inputs are random, never zeros.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use deepviz::backend::cuda::conv::{backward_data_as, backward_data_parts, backward_data_version, col2im_len, forward_fused_as, forward_parts, rows_weight, wgmma_applies, BackwardData, ConvShape, SplitK, TcStaging};
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Act;
use deepviz::backend::{Backend, Conv2dGeom, Precision, Role};
use deepviz::device::Device;
use deepviz::Tensor;

/// (cin, cout, k, stride, hw_in, how many in resnet50)
pub const RESNET50: [(usize, usize, usize, usize, usize, usize); 23] = [
    (3, 64, 7, 2, 224, 1),
    (64, 64, 1, 1, 56, 1),
    (64, 64, 3, 1, 56, 3),
    (64, 256, 1, 1, 56, 4),
    (256, 64, 1, 1, 56, 2),
    (256, 128, 1, 1, 56, 1),
    (128, 128, 3, 2, 56, 1),
    (128, 512, 1, 1, 28, 4),
    (256, 512, 1, 2, 56, 1),
    (512, 128, 1, 1, 28, 3),
    (128, 128, 3, 1, 28, 3),
    (512, 256, 1, 1, 28, 1),
    (256, 256, 3, 2, 28, 1),
    (256, 1024, 1, 1, 14, 6),
    (512, 1024, 1, 2, 28, 1),
    (1024, 256, 1, 1, 14, 5),
    (256, 256, 3, 1, 14, 5),
    (1024, 512, 1, 1, 14, 1),
    (512, 512, 3, 2, 14, 1),
    (512, 2048, 1, 1, 7, 3),
    (1024, 2048, 1, 2, 14, 1),
    (2048, 512, 1, 1, 7, 2),
    (512, 512, 3, 1, 7, 2),
];

fn random(shape: Vec<usize>, seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect();
    Tensor::new(shape, data).unwrap()
}

/// Milliseconds a call of `f`: two warm-up calls, then `reps` calls between two device
/// synchronisations (launched back to back, as in a model's pass).
fn time_ms(dev: &dyn Device, reps: usize, f: impl Fn() -> deepviz::Result<()>) -> deepviz::Result<f64> {
    f()?;
    f()?;
    dev.synchronize()?;
    let t = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    dev.synchronize()?;
    Ok(t.elapsed().as_secs_f64() * 1e3 / reps as f64)
}

fn main() -> deepviz::Result<()> {
    let mut pos = vec![];
    let mut json = None;
    let mut stem_only = false;
    let (mut only_layer, mut only_precision, mut stem_cout) = (None::<usize>, None::<String>, None::<usize>);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--json" {
            json = it.next();
        } else if a == "--layer" {
            only_layer = Some(it.next().and_then(|v| v.parse().ok()).expect("--layer INDEX"));
        } else if a == "--precision" {
            only_precision = Some(it.next().expect("--precision fp32|tf32|bf16"));
        } else if a == "--cout" {
            stem_cout = Some(it.next().and_then(|v| v.parse().ok()).expect("--cout N"));
        } else if a == "--stem" {
            stem_only = true;
        } else {
            pos.push(a);
        }
    }
    let batch: usize = pos.first().map_or(64, |s| s.parse().expect("BATCH"));
    let device = pos.get(1).map_or("cuda", |s| s.as_str()).to_string();
    let reps: usize = pos.get(2).map_or(20, |s| s.parse().expect("REPS"));
    let dev: Arc<dyn Device> = match device.as_str() {
        #[cfg(feature = "cuda")]
        "cuda" => Arc::new(deepviz::device::cuda::CudaDevice::new(0)?),
        #[cfg(feature = "emu")]
        "emu" => Arc::new(deepviz::device::emu::EmuDevice::new()),
        d => panic!("unknown or unavailable device {d}"),
    };
    if stem_only {
        return stem(dev.as_ref(), batch, reps, stem_cout);
    }
    let mut lines = vec![];
    let (mut total_ms, mut total_flop) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    // split-K's A/B: (ms split, ms unsplit) over the layers the engine splits, weighted by use
    let mut split_ab: std::collections::BTreeMap<(&str, &str), (f64, f64)> = std::collections::BTreeMap::new();
    // precision -> (wgmma ms, mma.sync ms) over the layers the wgmma forward runs, weighted by use
    let mut wgmma_ab: std::collections::BTreeMap<&str, (f64, f64)> = std::collections::BTreeMap::new();
    println!("{:<28}{:>6}{:>16}{:>11}{:>10}", "layer", "prec", "pass", "ms/call", "TFLOP/s");
    for (i, &(ci, co, k, s, hw, count)) in RESNET50.iter().enumerate() {
        if only_layer.is_some_and(|l| l != i) {
            continue;
        }
        let p = k / 2;
        let g = Conv2dGeom { stride: [s, s], pad: [p; 4], dilation: [1, 1], groups: 1 };
        let x = random(vec![batch, ci, hw, hw], 1 + i as u64, 2.0);
        let w = Arc::new(random(vec![co, ci, k, k], 100 + i as u64, 0.1));
        let b = Arc::new(random(vec![co], 200 + i as u64, 0.1));
        let oh = (hw + 2 * p - k) / s + 1;
        let gy = random(vec![batch, co, oh, oh], 300 + i as u64, 1.0);
        let flop = 2.0 * (batch * co * oh * oh * ci * k * k) as f64;
        let name = format!("{ci}->{co} k{k} s{s} {hw}x{hw}");
        for prec in Precision::ALL {
            if only_precision.as_deref().is_some_and(|p| p != prec.name()) {
                continue;
            }
            let be = Gpu::new(dev.clone()).with_precision(prec);
            let unsplit = be.clone().with_split_k(false);
            let (xd, gyd) = (be.upload(&x)?, be.upload(&gy)?);
            let (wd, bd) = (be.weight(&w, Role::ConvWeight)?, be.weight(&b, Role::Vector)?);
            // The engine's passes, and in tf32 / bf16, where the engine stages by tap slices, the
            // same convolution staged by gathering (the A/B of kernels/conv_tc.cu's two loaders),
            // straight into scratch buffers of the same shapes.
            let shape = ConvShape { n: batch, h: hw, w: hw, c: ci, cout: co, kh: k, kw: k };
            let (yd, gxd) = (dev.alloc(batch * oh * oh * co * 4)?, dev.alloc(batch * ci * hw * hw * 4)?);
            let mut passes = vec!["fwd", "bwd_data"];
            if prec != Precision::F32 && TcStaging::forward(&shape, &g) == TcStaging::Tap {
                passes.push("fwd_gather");
            }
            if prec != Precision::F32 && backward_data_version(&shape, &g, prec) == BackwardData::TensorCore(prec, TcStaging::Tap) {
                passes.push("bwd_data_gather");
            }
            // fp32 as 3xTF32 by tap slices, reading OHWI rows made here (the engine makes them
            // only when it runs 3xTF32)
            let x3_rows = dev.alloc(co * ci * k * k * 4)?;
            rows_weight(dev.as_ref(), wd.ptr(), x3_rows, co, ci, k, k)?;
            if prec == Precision::F32 && TcStaging::forward(&shape, &g) == TcStaging::Tap {
                passes.push("fwd_x3");
            }
            if prec == Precision::F32 && BackwardData::TensorCore(prec, TcStaging::Tap).applies(&shape, &g) {
                passes.push("bwd_data_x3");
            }
            // bf16 on Hopper's wgmma (a CC 9.0 card; the engine takes it with DEEPVIZ_WGMMA=1)
            // against the engine's mma.sync tap kernel (`fwd`), same split
            let wgmma = prec == Precision::Bf16 && wd.rows_ptr().is_some() && wgmma_applies(dev.as_ref(), &shape, &g);
            if wgmma {
                passes.push("fwd_wgmma");
            }
            let wgmma_split = if wgmma { forward_parts(dev.as_ref(), prec, true, &shape, &g) } else { 1 };
            let wgmma_ws = if wgmma_split > 1 { Some(dev.alloc(wgmma_split * batch * oh * oh * co * 4)?) } else { None };
            // where the engine splits K (small batches), the same without (the A/B of split-K)
            if forward_parts(dev.as_ref(), prec, wd.rows_ptr().is_some(), &shape, &g) > 1 {
                passes.push("fwd_unsplit");
            }
            if backward_data_parts(dev.as_ref(), backward_data_version(&shape, &g, prec), &shape, &g) > 1 {
                passes.push("bwd_data_unsplit");
            }
            let mut layer_ms = std::collections::HashMap::new(); // this layer's times, by pass
            for pass in passes {
                let call = || -> deepviz::Result<()> {
                    match pass {
                        "fwd" => drop(be.conv2d(&xd, &wd, Some(&bd), &g)?),
                        "bwd_data" => drop(be.conv2d_backward_data(&gyd, &wd, &x.shape, &g)?),
                        "fwd_unsplit" => drop(unsplit.conv2d(&xd, &wd, Some(&bd), &g)?),
                        "bwd_data_unsplit" => drop(unsplit.conv2d_backward_data(&gyd, &wd, &x.shape, &g)?),
                        "fwd_gather" => forward_fused_as(dev.as_ref(), prec, TcStaging::Gather, xd.ptr(), wd.ptr(), None, Some(bd.ptr()), None, yd, co, 0, &shape, &g, None, SplitK::NONE)?,
                        "fwd_wgmma" => {
                            let split = wgmma_ws.map_or(SplitK::NONE, |ws| SplitK { parts: wgmma_split, ws });
                            forward_fused_as(dev.as_ref(), prec, TcStaging::Wgmma, xd.ptr(), wd.ptr(), wd.rows_ptr(), Some(bd.ptr()), None, yd, co, 0, &shape, &g, None, split)?
                        }
                        "fwd_x3" => forward_fused_as(dev.as_ref(), prec, TcStaging::Tap, xd.ptr(), wd.ptr(), Some(x3_rows), Some(bd.ptr()), None, yd, co, 0, &shape, &g, None, SplitK::NONE)?,
                        "bwd_data_x3" => backward_data_as(dev.as_ref(), BackwardData::TensorCore(prec, TcStaging::Tap), gyd.ptr(), wd.ptr(), gxd, &shape, &g, None, None, SplitK::NONE)?,
                        _ => backward_data_as(dev.as_ref(), BackwardData::TensorCore(prec, TcStaging::Gather), gyd.ptr(), wd.ptr(), gxd, &shape, &g, None, None, SplitK::NONE)?,
                    }
                    Ok(())
                };
                let ms = time_ms(dev.as_ref(), reps, call)?;
                let tflops = flop / ms / 1e9;
                println!("{name:<28}{:>6}{pass:>16}{ms:>11.3}{tflops:>10.1}", prec.name());
                *total_ms.entry((prec.name(), pass)).or_insert(0.0) += ms * count as f64;
                if pass == "fwd_wgmma" {
                    // against the engine's mma.sync tap kernel (`fwd`), timed before this one
                    if let Some(&fm) = layer_ms.get("fwd") {
                        let a = wgmma_ab.entry(prec.name()).or_insert((0.0, 0.0));
                        a.0 += ms * count as f64;
                        a.1 += fm * count as f64;
                    }
                }
                if let Some(base) = pass.strip_suffix("_unsplit") {
                    // against the engine's (split) pass of the same layer, timed before this one
                    if let Some(&sm) = layer_ms.get(base) {
                        let a = split_ab.entry((prec.name(), base)).or_insert((0.0, 0.0));
                        a.0 += sm * count as f64;
                        a.1 += ms * count as f64;
                    }
                }
                layer_ms.insert(pass, ms);
                *total_flop.entry((prec.name(), pass)).or_insert(0.0) += flop * count as f64;
                lines.push(format!(
                    r#"{{"kind":"conv","engine":"deepviz","layer":"{name}","index":{i},"count":{count},"precision":"{}","pass":"{pass}","batch":{batch},"ms":{ms},"tflops":{tflops}}}"#,
                    prec.name()
                ));
            }
            dev.free(yd);
            if let Some(ws) = wgmma_ws {
                dev.free(ws);
            }
            dev.free(gxd);
            dev.free(x3_rows);
        }
    }
    for ((prec, pass), ms) in &total_ms {
        let f = total_flop[&(*prec, *pass)];
        println!("resnet50 convs, all {count} weighted by use: {prec} {pass}: {ms:.2} ms, {:.1} TFLOP/s", f / ms / 1e9, count = RESNET50.len());
    }
    for ((prec, pass), (sm, um)) in &split_ab {
        println!("split-K, {prec} {pass}, the layers it splits weighted by use: {sm:.3} ms split against {um:.3} ms not, {:.2}x", um / sm);
    }
    for (prec, (wm, mm)) in &wgmma_ab {
        println!("wgmma, {prec} fwd, the layers it runs weighted by use: {wm:.3} ms on wgmma against {mm:.3} ms on mma.sync, {:.2}x", mm / wm);
    }
    if let Some(p) = json {
        let mut f = std::fs::File::create(&p).expect("--json FILE");
        for l in &lines {
            writeln!(f, "{l}").expect("write --json FILE");
        }
    }
    Ok(())
}

/// The first layer's backward data by every version, cout 32 / 64 / 128, mask off and on.
fn stem(dev: &dyn Device, batch: usize, reps: usize, only_cout: Option<usize>) -> deepviz::Result<()> {
    let g = Conv2dGeom { stride: [2, 2], pad: [3; 4], dilation: [1, 1], groups: 1 };
    let put = |t: &Tensor| -> deepviz::Result<deepviz::device::DevicePtr> {
        let p = dev.alloc(t.data.len() * 4)?;
        dev.upload(p, bytemuck::cast_slice(&t.data))?;
        Ok(p)
    };
    println!("{:<12}{:>6}{:>7}{:>11}{:>10}", "version", "cout", "mask", "ms/call", "TFLOP/s");
    for cout in [32, 64, 128] {
        if only_cout.is_some_and(|c| c != cout) {
            continue;
        }
        let s = ConvShape { n: batch, h: 224, w: 224, c: 3, cout, kh: 7, kw: 7 };
        let (oh, ow) = s.out_hw(&g)?;
        // KKIO weights, gy, the mask (the forward input of the ReLU before the conv: the image
        // here, whose sign decides), and gx
        let wp = put(&random(vec![7, 7, 3, cout], 7, 0.1))?;
        let gy = put(&random(vec![batch, oh, ow, cout], 8, 1.0))?;
        let mask = put(&random(vec![batch, 224, 224, 3], 9, 2.0))?;
        let gx = dev.alloc(batch * 224 * 224 * 3 * 4)?;
        let col = dev.alloc(col2im_len(&s, &g)? * 4)?; // v5's column matrix
        let flop = 2.0 * (batch * cout * oh * ow * 3 * 49) as f64;
        for v in [
            BackwardData::Direct,
            BackwardData::Direct4,
            BackwardData::Phased,
            BackwardData::Gemm,
            BackwardData::TensorCore(Precision::Tf32, TcStaging::Gather),
            BackwardData::TensorCore(Precision::Bf16, TcStaging::Gather),
            BackwardData::Col2im(Precision::F32),
            BackwardData::Col2im(Precision::Tf32),
            BackwardData::Col2im(Precision::Bf16),
        ] {
            let name: String = match v {
                BackwardData::TensorCore(p, _) => format!("TC {p}"),
                BackwardData::Col2im(p) => format!("Col2im {p}"),
                v => format!("{v:?}"),
            };
            if !v.applies(&s, &g) {
                println!("{name:<12}{cout:>6}  (does not apply)");
                continue;
            }
            for masked in [false, true] {
                let m = masked.then_some((mask, Act::Relu));
                let ms = time_ms(dev, reps, || backward_data_as(dev, v, gy, wp, gx, &s, &g, m, Some(col), SplitK::NONE))?;
                println!("{name:<12}{cout:>6}{:>7}{ms:>11.3}{:>10.1}", if masked { "relu" } else { "-" }, flop / ms / 1e9);
            }
        }
        for p in [wp, gy, mask, gx, col] {
            dev.free(p);
        }
    }
    Ok(())
}
