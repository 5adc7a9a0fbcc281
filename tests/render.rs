//! `Backend::render` (heat maps to RGB pictures on the backend, `kernels/render.cu`): the CUDA
//! engine on every available device (the CPU emulation under every schedule; the real GPU when
//! there is one) against the CPU engine, which renders with the host functions of
//! `imageio::colormap`. Shapes break careless indexing: batch 3, 7x11 maps to odd picture
//! sizes (up, down and the same size); one map is constant (renders as the colour of 0), one
//! holds a NaN (and an infinity). Clipping at a quantile (`clip`) is checked the same way, on
//! those maps and on maps with one huge outlier, where it must brighten the picture.

mod common;

use std::sync::Arc;

use common::seeded;
use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::device::emu::{EmuDevice, Schedule};
use deepviz::device::Device;
use deepviz::imageio::{clip_threshold, Colormap};
use deepviz::Tensor;
use image::RgbImage;

fn gpus() -> Vec<Gpu> {
    let mut v: Vec<Gpu> = Schedule::ALL.iter().map(|&s| Gpu::new(Arc::new(EmuDevice::with_schedule(s)) as Arc<dyn Device>)).collect();
    #[cfg(feature = "cuda")]
    match deepviz::device::cuda::CudaDevice::available() {
        true => v.push(Gpu::new(Arc::new(deepviz::device::cuda::CudaDevice::new(0).expect("a CUDA device is present but cannot be opened")))),
        false => eprintln!("skipped on the real GPU: no CUDA device"),
    }
    #[cfg(not(feature = "cuda"))]
    eprintln!("skipped on the real GPU: no CUDA device (built without the `cuda` feature)");
    v
}

const N: usize = 3;
const H: usize = 7;
const W: usize = 11;

/// Three maps [3, 1, 7, 11]: random, constant, random with a NaN and a +inf.
fn maps() -> Tensor {
    let mut data = seeded(11, N * H * W).iter().map(|v| 3.0 * v - 0.5).collect::<Vec<f32>>();
    data[H * W..2 * H * W].fill(0.37);
    data[2 * H * W + 17] = f32::NAN;
    data[2 * H * W + 40] = f32::INFINITY;
    Tensor::new(vec![N, 1, H, W], data).unwrap()
}

fn pictures(hw: [usize; 2]) -> Vec<RgbImage> {
    (0..N)
        .map(|i| {
            let px: Vec<u8> = seeded(100 + i as u64, hw[0] * hw[1] * 3).iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
            RgbImage::from_raw(hw[1] as u32, hw[0] as u32, px).unwrap()
        })
        .collect()
}

/// Largest channel difference between two lists of pictures (which must have the same sizes).
fn max_diff(what: &str, got: &[RgbImage], want: &[RgbImage]) -> u8 {
    assert_eq!(got.len(), want.len(), "{what}: picture count");
    let mut worst = 0u8;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.dimensions(), w.dimensions(), "{what}: picture {i} size");
        for (a, b) in g.as_raw().iter().zip(w.as_raw()) {
            worst = worst.max(a.abs_diff(*b));
        }
    }
    worst
}

#[test]
fn gpu_render_matches_cpu() {
    let m = maps();
    for gpu in gpus() {
        let dm = gpu.upload(&m).unwrap();
        for out_hw in [[19, 23], [5, 4], [H, W]] {
            let pics = pictures(out_hw);
            for cmap in [Colormap::Turbo, Colormap::Inferno, Colormap::Gray] {
                for (pictures, alpha) in [(None, 0.0), (Some(&pics[..]), 0.5), (Some(&pics[..]), 0.3)] {
                    for clip in [None, Some(0.9), Some(0.995)] {
                        let what = format!("{} {out_hw:?} {cmap:?} pictures {} alpha {alpha} clip {clip:?}", gpu.device().name(), pictures.is_some());
                        let want = Cpu.render(&m, pictures, out_hw, cmap, alpha, clip).unwrap();
                        let got = gpu.render(&dm, pictures, out_hw, cmap, alpha, clip).unwrap();
                        let d = max_diff(&what, &got, &want);
                        assert!(d <= 1, "{what}: a channel differs by {d} levels of 255");
                    }
                }
            }
        }
    }
}

/// Two maps [2, 1, 7, 11] in [0, 1) with one huge outlier each (+1000; -1000 and a NaN in the
/// second, which must not move the upper threshold).
fn outlier_maps() -> Tensor {
    let mut data = seeded(23, 2 * H * W).iter().map(|v| 0.5 * v + 0.5).collect::<Vec<f32>>();
    data[30] = 1000.0;
    data[H * W + 5] = 1000.0;
    data[H * W + 50] = -1000.0;
    data[H * W + 60] = f32::NAN;
    Tensor::new(vec![2, 1, H, W], data).unwrap()
}

fn mean_level(p: &RgbImage) -> f64 {
    p.as_raw().iter().map(|&v| v as f64).sum::<f64>() / p.as_raw().len() as f64
}

#[test]
fn clipping_an_outlier_brightens_the_picture_on_every_engine() {
    let m = outlier_maps();
    let out_hw = [14, 22];
    let pics = &pictures(out_hw)[..2];
    let plain = Cpu.render(&m, None, out_hw, Colormap::Gray, 0.0, None).unwrap();
    let clip_90 = Cpu.render(&m, None, out_hw, Colormap::Gray, 0.0, Some(0.9)).unwrap();
    // q = 1 clips nothing
    assert_eq!(Cpu.render(&m, None, out_hw, Colormap::Gray, 0.0, Some(1.0)).unwrap(), plain);
    // unclipped, the outlier (spread over 4x4 pixels by the upsampling: 5 % of the picture)
    // squeezes everything else into a few levels (the first map: at the bottom; the second,
    // whose low outlier stays: in the middle)
    let (a, b) = (mean_level(&plain[0]), mean_level(&clip_90[0]));
    assert!(a < 10.0 && b > 60.0, "map 0: mean level {a:.1} unclipped, {b:.1} clipped at 0.9");
    let (a, b) = (mean_level(&plain[1]), mean_level(&clip_90[1]));
    assert!(b > a + 60.0, "map 1: mean level {a:.1} unclipped, {b:.1} clipped at 0.9");
    for gpu in gpus() {
        let dm = gpu.upload(&m).unwrap();
        for cmap in [Colormap::Gray, Colormap::Turbo] {
            for (pictures, alpha) in [(None, 0.0), (Some(pics), 0.5)] {
                for clip in [None, Some(0.9), Some(0.95), Some(0.995), Some(1.0)] {
                    let what = format!("{} outliers {cmap:?} pictures {} clip {clip:?}", gpu.device().name(), pictures.is_some());
                    let want = Cpu.render(&m, pictures, out_hw, cmap, alpha, clip).unwrap();
                    let got = gpu.render(&dm, pictures, out_hw, cmap, alpha, clip).unwrap();
                    let d = max_diff(&what, &got, &want);
                    assert!(d <= 1, "{what}: a channel differs by {d} levels of 255");
                }
            }
        }
    }
}

#[test]
fn clip_threshold_is_the_histogram_quantile() {
    // 0, 1, ..., 100: the 91st value (ceil(0.9 * 101)) is 90, in bin floor(90 / 100 * 4096) =
    // 3686, whose upper edge is 3687 / 4096 * 100
    let v: Vec<f32> = (0..=100).map(|i| i as f32).collect();
    assert_eq!(clip_threshold(&v, 0.9), Some((3687.0f64 / 4096.0 * 100.0) as f32));
    assert_eq!(clip_threshold(&v, 1.0), None);
    assert_eq!(clip_threshold(&[2.0; 9], 0.5), None);
    assert_eq!(clip_threshold(&[f32::NAN, f32::INFINITY], 0.5), None);
    // the smallest q still clips at the first bin's edge
    assert_eq!(clip_threshold(&v, 1e-6), Some((100.0f64 / 4096.0) as f32));
}

#[test]
fn constant_map_renders_as_zero() {
    let m = maps();
    let cpu = Cpu.render(&m, None, [9, 13], Colormap::Turbo, 0.0, None).unwrap();
    let zero = Cpu.render(&Tensor::zeros(&[1, 1, 2, 2]), None, [1, 1], Colormap::Turbo, 0.0, None).unwrap()[0].get_pixel(0, 0).0;
    assert!(cpu[1].pixels().all(|p| p.0 == zero), "the constant map is not the colour of 0 on the CPU");
    for gpu in gpus() {
        let got = gpu.render(&gpu.upload(&m).unwrap(), None, [9, 13], Colormap::Turbo, 0.0, None).unwrap();
        assert!(got[1].pixels().all(|p| p.0 == zero), "{}: the constant map is not the colour of 0", gpu.device().name());
    }
}

#[test]
fn render_refuses_bad_arguments() {
    let m = maps();
    let pics = pictures([8, 8]);
    for gpu in gpus() {
        let dm = gpu.upload(&m).unwrap();
        // two pictures for three maps; pictures of another size; an empty output
        assert!(Cpu.render(&m, Some(&pics[..2]), [8, 8], Colormap::Turbo, 0.5, None).is_err());
        assert!(gpu.render(&dm, Some(&pics[..2]), [8, 8], Colormap::Turbo, 0.5, None).is_err());
        assert!(Cpu.render(&m, Some(&pics), [8, 9], Colormap::Turbo, 0.5, None).is_err());
        assert!(gpu.render(&dm, Some(&pics), [8, 9], Colormap::Turbo, 0.5, None).is_err());
        assert!(Cpu.render(&m, None, [0, 9], Colormap::Turbo, 0.5, None).is_err());
        assert!(gpu.render(&dm, None, [0, 9], Colormap::Turbo, 0.5, None).is_err());
        // a clip quantile outside (0, 1]
        for q in [0.0, -0.5, 1.5, f32::NAN] {
            assert!(Cpu.render(&m, None, [8, 8], Colormap::Turbo, 0.5, Some(q)).is_err());
            assert!(gpu.render(&dm, None, [8, 8], Colormap::Turbo, 0.5, Some(q)).is_err());
        }
    }
}
