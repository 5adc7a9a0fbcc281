//! Images in and out: everything between a file on disk and a tensor the network sees.
//!
//! Map of the module:
//! - this file: decoding ([`load_rgb`], with decompression-bomb limits), the documented
//!   preprocessing ([`resize_crop`], [`Preprocess`], [`to_tensor`], [`to_rgb`]) and safe output
//!   ([`atomic_write`], [`write_png`]).
//! - [`npy`]: NumPy `.npy` arrays ([`read_npy`], [`write_npy`]).
//! - [`colormap`]: heat maps: [`normalize_map`], [`upsample_bilinear`], [`colorize`], [`overlay`].
//!
//! Nothing here panics, prints or exits on bad input: every failure is an [`Error`] that names
//! the file and says what is wrong with it.

pub mod colormap;
pub mod npy;

pub use colormap::{clip_threshold, colorize, normalize_map, normalize_map_clipped, overlay, upsample_bilinear, Colormap, CLIP_BINS};
pub use npy::{read_npy, write_npy};

use std::fs;
use std::io::{Cursor, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use image::imageops::{self, FilterType};
use image::{ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Largest width or height [`load_rgb`] accepts, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// Most memory the decoder may allocate for one image: a 16384×16384 RGB8 image (768 MiB) fits,
/// a forged header asking for more is refused before anything is allocated.
pub const MAX_DECODE_ALLOC: u64 = 1 << 30;

/// How the model wants its input: spatial size and per-channel normalisation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preprocess {
    /// (height, width) of the network input.
    pub size: [usize; 2],
    /// Per-channel (R, G, B) mean, on the [0, 1] pixel scale.
    pub mean: [f32; 3],
    /// Per-channel (R, G, B) standard deviation, on the [0, 1] pixel scale.
    pub std: [f32; 3],
}

impl Preprocess {
    /// The ImageNet statistics torchvision's models were trained with.
    pub fn imagenet(size: [usize; 2]) -> Self {
        Preprocess {
            size,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

/// Decode an image file (PNG, JPEG, BMP, GIF, TIFF or WebP; the format is recognised from the
/// content, the extension is only a fallback) into 8-bit RGB. Alpha is dropped, 16-bit samples
/// are scaled to 8 bits, a GIF gives its first frame.
///
/// Images wider or taller than [`MAX_IMAGE_SIDE`], or whose decoding would allocate more than
/// [`MAX_DECODE_ALLOC`] bytes, are refused before decoding (decompression bombs).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let fail = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    let reader = ImageReader::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let Some(format) = reader.format() else {
        return Err(fail(
            "not a recognised image (expected PNG, JPEG, BMP, GIF, TIFF or WebP content)".into(),
        ));
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => fail(format!(
            "refused to decode: {l} (at most {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels and \
             {} MiB are allowed)",
            MAX_DECODE_ALLOC >> 20
        )),
        e => fail(format!("cannot decode as {format:?}: {e}")),
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(fail(format!(
            "image is empty ({}x{} pixels)",
            img.width(),
            img.height()
        )));
    }
    Ok(img.into_rgb8())
}

/// The documented preprocessing: resize so that the image just covers `size` = (h, w) with its
/// aspect ratio kept (for a square target: the shorter side becomes the target; the longer side
/// is truncated to an integer as torchvision does), then crop the centre.
///
/// Resampling is bilinear with antialiasing when downscaling (image's `Triangle` filter, which
/// follows PIL's bilinear resize, as torchvision's `Resize(antialias=True)` does). A side that
/// already has its final length is not resampled, and an image already at `size` is returned
/// unchanged. The crop offset rounds half to even, like torchvision's `CenterCrop`.
///
/// An empty image gives a black image of `size`.
pub fn resize_crop(img: &RgbImage, size: [usize; 2]) -> RgbImage {
    let th = u32::try_from(size[0]).unwrap_or(u32::MAX);
    let tw = u32::try_from(size[1]).unwrap_or(u32::MAX);
    let (w, h) = img.dimensions();
    if (h, w) == (th, tw) {
        return img.clone();
    }
    if w == 0 || h == 0 || th == 0 || tw == 0 {
        return RgbImage::new(tw, th);
    }
    let (h64, w64, th64, tw64) = (h as u64, w as u64, th as u64, tw as u64);
    // Which side binds: the one whose target/source ratio is larger.
    let (nh, nw) = if th64 * w64 >= tw64 * h64 {
        (th64, (w64 * th64 / h64).max(tw64))
    } else {
        ((h64 * tw64 / w64).max(th64), tw64)
    };
    let (nh, nw) = (
        nh.min(u32::MAX as u64) as u32,
        nw.min(u32::MAX as u64) as u32,
    );
    let resized;
    let src = if (nh, nw) == (h, w) {
        img
    } else {
        resized = imageops::resize(img, nw, nh, FilterType::Triangle);
        &resized
    };
    let top = half_even_half(nh - th);
    let left = half_even_half(nw - tw);
    imageops::crop_imm(src, left, top, tw, th).to_image()
}

/// `round(d / 2)` with ties to even, as Python's `round` (used by torchvision's centre crop).
fn half_even_half(d: u32) -> u32 {
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Stack images into an NCHW f32 batch: `x = (pixel / 255 - mean[c]) / std[c]`.
///
/// Every image should already be `p.size` (as [`resize_crop`] makes it); one that is not is
/// passed through [`resize_crop`] first. An empty slice gives a `[0, 3, h, w]` tensor.
pub fn to_tensor(imgs: &[RgbImage], p: &Preprocess) -> Tensor {
    let [h, w] = p.size;
    let plane = h * w;
    // One table per channel: exact, and the same value for the same pixel everywhere.
    let lut: [[f32; 256]; 3] =
        std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 / 255.0 - p.mean[c]) / p.std[c]));
    let mut data = vec![0.0f32; imgs.len() * 3 * plane];
    for (img, out) in imgs.iter().zip(data.chunks_exact_mut(3 * plane)) {
        let fitted;
        let img = if img.dimensions() == (w as u32, h as u32) {
            img
        } else {
            fitted = resize_crop(img, p.size);
            &fitted
        };
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = lut[c][px.0[c] as usize];
            }
        }
    }
    Tensor {
        shape: vec![imgs.len(), 3, h, w],
        data,
    }
}

/// The inverse of [`to_tensor`] for one CHW image: denormalise, clamp to [0, 1], round to 8 bits.
/// NaN gives 0; if `x` holds fewer than `3 * h * w` values the missing pixels stay black.
pub fn to_rgb(x: &[f32], h: usize, w: usize, p: &Preprocess) -> RgbImage {
    let plane = h * w;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        for c in 0..3 {
            if let Some(&v) = x.get(c * plane + i) {
                let v = (v * p.std[c] + p.mean[c]).clamp(0.0, 1.0);
                // `as u8` saturates and maps NaN to 0.
                px.0[c] = (v * 255.0).round() as u8;
            }
        }
    }
    img
}

/// Write `bytes` to `path` so that `path` is either untouched or complete: write a temporary
/// file in the same directory, flush it to disk, then rename it over `path`. On failure the
/// temporary file is removed.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        return Err(Error::InvalidArgument(format!(
            "output path {} does not name a file",
            path.display()
        )));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".{}.{}.{n}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Encode `img` as PNG in memory, then [`atomic_write`] it to `path`.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut buf = Vec::new();
    img.write_to(&mut Cursor::new(&mut buf), ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            msg: format!("cannot encode PNG: {e}"),
        })?;
    atomic_write(path, &buf)
}
