//! Heat-map pictures (`viz::render`): upsample, normalise and clip on the backend from its
//! generic primitives, colour and blend on the host. On the CPU engine and the CUDA engine on
//! every available device (the CPU emulation under every schedule; the real GPU when there is
//! one), against the host rule of `imageio::colormap` (`upsample_bilinear` then
//! `normalize_map_clipped`, in f64). Shapes break careless indexing: batch 3, 7x11 maps to odd
//! picture sizes (up, down and the same size); one map is constant (renders as the colour of
//! 0). A map holding NaN or an infinity is an error; clipping at a quantile must brighten a map
//! with one huge outlier.

mod common;

use std::sync::Arc;

use common::seeded;
use deepviz::backend::cpu::Cpu;
use deepviz::backend::cuda::Gpu;
use deepviz::backend::Backend;
use deepviz::device::emu::{EmuDevice, Schedule};
use deepviz::device::Device;
use deepviz::imageio::{clip_threshold, normalize_map_clipped, upsample_bilinear, Colormap};
use deepviz::viz::render::{normalized, pictures, Style};
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

/// Three maps [3, 1, 7, 11]: random, constant, random with a spread of values.
fn maps() -> Tensor {
    let mut data = seeded(11, N * H * W).iter().map(|v| 3.0 * v - 0.5).collect::<Vec<f32>>();
    data[H * W..2 * H * W].fill(0.37);
    Tensor::new(vec![N, 1, H, W], data).unwrap()
}

fn test_pictures(hw: [usize; 2], n: usize) -> Vec<RgbImage> {
    (0..n)
        .map(|i| {
            let px: Vec<u8> = seeded(100 + i as u64, hw[0] * hw[1] * 3).iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
            RgbImage::from_raw(hw[1] as u32, hw[0] as u32, px).unwrap()
        })
        .collect()
}

/// The host rule, item by item.
fn host_normalized(m: &Tensor, out_hw: [usize; 2], clip: Option<f32>) -> Vec<f32> {
    let (n, h, w) = (m.shape[0], m.shape[2], m.shape[3]);
    (0..n).flat_map(|i| normalize_map_clipped(&upsample_bilinear(m.item(i), h, w, out_hw[0], out_hw[1]), clip)).collect()
}

fn check_normalized<B: Backend>(be: &B, m: &Tensor, what: &str) {
    let dm = be.upload(m).unwrap();
    for out_hw in [[19, 23], [5, 4], [H, W]] {
        for clip in [None, Some(0.9), Some(0.995), Some(1.0)] {
            let got = normalized(be, &dm, out_hw, clip).unwrap();
            assert_eq!(got.shape, vec![m.shape[0], 1, out_hw[0], out_hw[1]]);
            common::assert_close(&format!("{what} {out_hw:?} clip {clip:?}"), &got.data, &host_normalized(m, out_hw, clip), 2e-6, 1e-5);
        }
    }
}

#[test]
fn normalized_maps_follow_the_host_rule_on_every_engine() {
    let m = maps();
    check_normalized(&Cpu, &m, "cpu");
    for gpu in gpus() {
        check_normalized(&gpu, &m, gpu.device().name());
    }
}

/// Largest channel difference between two lists of pictures.
fn max_diff(got: &[(RgbImage, RgbImage)], want: &[(RgbImage, RgbImage)]) -> u8 {
    assert_eq!(got.len(), want.len());
    let mut worst = 0u8;
    for ((g1, g2), (w1, w2)) in got.iter().zip(want) {
        for (a, b) in g1.as_raw().iter().chain(g2.as_raw()).zip(w1.as_raw().iter().chain(w2.as_raw())) {
            worst = worst.max(a.abs_diff(*b));
        }
    }
    worst
}

#[test]
fn pictures_agree_between_engines() {
    let m = maps();
    let pics = test_pictures([19, 23], N);
    for cmap in [Colormap::Turbo, Colormap::Inferno, Colormap::Gray] {
        for clip in [None, Some(0.9)] {
            let style = Style { colormap: cmap, clip, alpha: 0.3 };
            let want = pictures(&Cpu, &m, &pics, &style).unwrap();
            // the constant map is the colour of 0, blended
            let zero = deepviz::imageio::colorize(&[0.0], 1, 1, cmap).get_pixel(0, 0).0;
            assert!(want[1].0.pixels().all(|p| p.0 == zero), "{cmap:?}: the constant map is not the colour of 0");
            for gpu in gpus() {
                let got = pictures(&gpu, &gpu.upload(&m).unwrap(), &pics, &style).unwrap();
                let d = max_diff(&got, &want);
                assert!(d <= 1, "{} {cmap:?} clip {clip:?}: a channel differs by {d} levels of 255", gpu.device().name());
            }
        }
    }
}

/// Two maps [2, 1, 7, 11] in [0, 1) with one huge outlier each (+1000; and -1000 in the second).
fn outlier_maps() -> Tensor {
    let mut data = seeded(23, 2 * H * W).iter().map(|v| 0.5 * v + 0.5).collect::<Vec<f32>>();
    data[30] = 1000.0;
    data[H * W + 5] = 1000.0;
    data[H * W + 50] = -1000.0;
    Tensor::new(vec![2, 1, H, W], data).unwrap()
}

fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
}

#[test]
fn clipping_an_outlier_brightens_the_map() {
    let m = outlier_maps();
    let out_hw = [14, 22];
    for (name, plain, clipped) in std::iter::once(("cpu".to_string(), normalized(&Cpu, &m, out_hw, None).unwrap(), normalized(&Cpu, &m, out_hw, Some(0.9)).unwrap()))
        .chain(gpus().into_iter().map(|g| {
            let dm = g.upload(&m).unwrap();
            (g.device().name().to_string(), normalized(&g, &dm, out_hw, None).unwrap(), normalized(&g, &dm, out_hw, Some(0.9)).unwrap())
        }))
    {
        // unclipped, the outlier squeezes everything else into a few levels
        let (a, b) = (mean(plain.item(0)), mean(clipped.item(0)));
        assert!(a < 0.04 && b > 0.25, "{name} map 0: mean {a:.3} unclipped, {b:.3} clipped at 0.9");
        let (a, b) = (mean(plain.item(1)), mean(clipped.item(1)));
        assert!(b > a + 0.2, "{name} map 1: mean {a:.3} unclipped, {b:.3} clipped at 0.9");
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

fn check_refusals<B: Backend>(be: &B, what: &str) {
    let m = maps();
    let dm = be.upload(&m).unwrap();
    let style = Style { colormap: Colormap::Turbo, clip: None, alpha: 0.5 };
    // two pictures for three maps; pictures of two sizes; an empty output; a bad quantile
    assert!(pictures(be, &dm, &test_pictures([8, 8], 2), &style).is_err(), "{what}");
    let mut mixed = test_pictures([8, 8], 2);
    mixed.extend(test_pictures([8, 9], 1));
    assert!(pictures(be, &dm, &mixed, &style).is_err(), "{what}");
    assert!(normalized(be, &dm, [0, 9], None).is_err(), "{what}");
    for q in [0.0, -0.5, 1.5, f32::NAN] {
        assert!(normalized(be, &dm, [8, 8], Some(q)).is_err(), "{what}: quantile {q}");
    }
    // a map holding NaN or an infinity is an error naming the item
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut m2 = m.clone();
        m2.data[2 * H * W + 17] = bad;
        let e = normalized(be, &be.upload(&m2).unwrap(), [8, 8], Some(0.9)).unwrap_err().to_string();
        assert!(e.contains("item 2") && e.contains("NaN or infinite"), "{what} {bad}: {e}");
    }
}

#[test]
fn bad_arguments_and_non_finite_maps_are_errors() {
    check_refusals(&Cpu, "cpu");
    for gpu in gpus() {
        check_refusals(&gpu, gpu.device().name());
    }
}
