//! Images in and out: everything between a file on disk and a tensor the network sees.
//!
//! Map of the module:
//! - this file: decoding ([`load_rgb`], [`decode_rgb`], with decompression-bomb limits), the documented
//!   preprocessing ([`resize_crop`], [`Preprocess`], [`to_tensor`], [`to_rgb`]) and safe output
//!   ([`atomic_write`], [`write_png`]).
//! - [`npy`]: NumPy `.npy` arrays ([`read_npy`], [`write_npy`]).
//! - [`colormap`]: heat maps: [`normalize_map`], [`upsample_bilinear`], [`colorize`], [`overlay`],
//!   [`blend`].
//!
//! Nothing here panics, prints or exits on bad input: every failure is an [`Error`] that names
//! the file and says what is wrong with it.

pub mod colormap;
pub mod npy;
pub mod npz;

pub use colormap::{blend, clip_threshold, colorize, normalize_map, normalize_map_clipped, overlay, overlay_in_box, upsample_bilinear, Colormap, CLIP_BINS};
pub use npy::{parse_npy, read_npy, write_npy};

use std::fs;
use std::io::{Cursor, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use image::imageops;
use image::{ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Largest width or height [`load_rgb`] accepts, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 16384;
/// Most memory the decoder may allocate for one image: a 16384×16384 RGB8 image (768 MiB) fits,
/// a forged header asking for more is refused before anything is allocated.
pub const MAX_DECODE_ALLOC: u64 = 1 << 30;

/// Largest side of a network input, in pixels: a model's `input_size`, an `.npy` tensor's h and w.
/// (A 4096x4096 input already needs gigabytes of activations in most networks.)
pub const MAX_INPUT_SIDE: usize = 4096;

/// The length of `path` if it is a regular file (following links); anything else — a folder, a
/// FIFO (whose open would block), a device — is an error before it is opened.
pub fn regular_file_len(path: &Path) -> Result<u64> {
    let m = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !m.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{}: not a regular file (a {})",
            path.display(),
            if m.is_dir() { "folder" } else { "FIFO, socket or device" }
        )));
    }
    Ok(m.len())
}

/// Largest image file [`load_rgb`] reads, in bytes (checked before reading).
pub const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;

/// Whether a JPEG's last scan is followed by its end-of-image marker (FF D9). Inside
/// entropy-coded data every FF byte is followed by 00 or a restart marker, so the marker cannot
/// appear there by chance; an embedded thumbnail's marker comes before the main image's scans.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(sos) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else { return false };
    bytes[sos..].windows(2).any(|w| w == [0xFF, 0xD9])
}

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
    /// The network's input value of pixel level `p` (in [0, 1]) in channel `c`:
    /// `(p − mean[c]) / std[c]` (channels past the third use the third's statistics).
    pub fn normalize(&self, c: usize, p: f32) -> f32 {
        (p - self.mean[c.min(2)]) / self.std[c.min(2)]
    }

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
/// [`MAX_DECODE_ALLOC`] bytes, are refused before decoding (decompression bombs); so are files
/// over [`MAX_IMAGE_FILE_BYTES`]. A JPEG that ends before its last scan does (a truncated file,
/// whose missing rows the decoder would fill with grey) is an error, not a picture.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let fail = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    let len = regular_file_len(path).map_err(|e| match e {
        Error::Io { source, .. } => fail(format!("cannot read: {source}")),
        e => e,
    })?;
    if len > MAX_IMAGE_FILE_BYTES {
        return Err(fail(format!("{len} bytes: larger than the {} MiB an image file may have", MAX_IMAGE_FILE_BYTES >> 20)));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    decode_rgb(&bytes, path)
}

/// [`load_rgb`] for a file already in memory: `bytes` are its content, `path` names it in
/// errors (and is not opened). The same formats, limits and checks.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage> {
    let fail = |msg: String| Error::Image {
        path: path.to_path_buf(),
        msg,
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(fail("truncated JPEG: the file ends inside its last scan (no end-of-image marker after it)".into()));
    }
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
    let Some(ResizeCrop { nw, nh, left, top }) = resize_crop_geometry(w, h, tw, th) else {
        return RgbImage::new(tw, th);
    };
    if (nh, nw) == (h, w) {
        return imageops::crop_imm(img, left, top, tw, th).to_image();
    }
    // only the crop is resampled: a 1x16384 strip would otherwise become 224 x 3.7M pixels
    resize_window(img, nw, nh, left, top, tw, th)
}

/// [`resize_crop`]'s arithmetic: the resized size `nw x nh` and the crop's offset.
struct ResizeCrop {
    nw: u32,
    nh: u32,
    left: u32,
    top: u32,
}

/// The resize and centre crop of a `w x h` image to `tw x th` (`None` for an empty one).
fn resize_crop_geometry(w: u32, h: u32, tw: u32, th: u32) -> Option<ResizeCrop> {
    if w == 0 || h == 0 || th == 0 || tw == 0 {
        return None;
    }
    let (h64, w64, th64, tw64) = (h as u64, w as u64, th as u64, tw as u64);
    // Which side binds: the one whose target/source ratio is larger.
    let (nh, nw) = if th64 * w64 >= tw64 * h64 {
        (th64, (w64 * th64 / h64).max(tw64))
    } else {
        ((h64 * tw64 / w64).max(th64), tw64)
    };
    let (nh, nw) = (nh.min(u32::MAX as u64) as u32, nw.min(u32::MAX as u64) as u32);
    Some(ResizeCrop { nw, nh, left: half_even_half(nw - tw), top: half_even_half(nh - th) })
}

/// Where [`resize_crop`]'s picture lies in the image it came from: the window
/// `[x, x + width) x [y, y + height)` of the original, in its pixels (fractional: the resize is
/// rarely an integer scale). A map over the network's input covers exactly this window.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CropBox {
    /// left edge, in the original's pixels
    pub x: f64,
    /// top edge, in the original's pixels
    pub y: f64,
    /// width, in the original's pixels
    pub width: f64,
    /// height, in the original's pixels
    pub height: f64,
    /// the original image's (width, height)
    pub image_size: [u32; 2],
}

/// The [`CropBox`] of [`resize_crop`] for an image of `w x h` pixels and the input size `size`
/// = (h, w): its resize and crop mapped back by each axis's own scale (the whole image when it
/// is already at `size`, or empty).
pub fn crop_box(w: u32, h: u32, size: [usize; 2]) -> CropBox {
    let th = u32::try_from(size[0]).unwrap_or(u32::MAX);
    let tw = u32::try_from(size[1]).unwrap_or(u32::MAX);
    match resize_crop_geometry(w, h, tw, th) {
        Some(ResizeCrop { nw, nh, left, top }) if (h, w) != (th, tw) => {
            let (sx, sy) = (w as f64 / nw as f64, h as f64 / nh as f64);
            CropBox { x: left as f64 * sx, y: top as f64 * sy, width: tw as f64 * sx, height: th as f64 * sy, image_size: [w, h] }
        }
        _ => CropBox { x: 0.0, y: 0.0, width: w as f64, height: h as f64, image_size: [w, h] },
    }
}

/// The window `[x0, x0 + tw) x [y0, y0 + th)` of `imageops::resize(img, nw, nh, Triangle)`,
/// computed alone and bit for bit as the image crate computes the whole (the same f32 weights
/// and sums, its vertical pass then its horizontal pass), so memory follows the window, not the
/// resized image.
fn resize_window(img: &RgbImage, nw: u32, nh: u32, x0: u32, y0: u32, tw: u32, th: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    // image::imageops::sample's triangle filter: output index o reads inputs [left, right) with
    // normalised weights
    let taps = |n_in: u32, n_out: u32, o: u32| -> (u32, Vec<f32>) {
        let ratio = n_in as f32 / n_out as f32;
        let sratio = if ratio < 1.0 { 1.0 } else { ratio };
        let support = sratio; // the triangle's support is 1
        let input = (o as f32 + 0.5) * ratio;
        let left = ((input - support).floor() as i64).clamp(0, n_in as i64 - 1) as u32;
        let right = ((input + support).ceil() as i64).clamp(left as i64 + 1, n_in as i64) as u32;
        let input = input - 0.5;
        let mut ws: Vec<f32> = (left..right)
            .map(|i| {
                let x = ((i as f32 - input) / sratio).abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            })
            .collect();
        let sum: f32 = ws.iter().sum();
        ws.iter_mut().for_each(|v| *v /= sum);
        (left, ws)
    };
    let cols: Vec<(u32, Vec<f32>)> = (x0..x0 + tw).map(|o| taps(w, nw, o)).collect();
    let rows: Vec<(u32, Vec<f32>)> = (y0..y0 + th).map(|o| taps(h, nh, o)).collect();
    // the source columns the window reads
    let c0 = cols.iter().map(|c| c.0).min().unwrap_or(0) as usize;
    let c1 = cols.iter().map(|c| c.0 + c.1.len() as u32).max().unwrap_or(0) as usize;
    // vertical pass over those columns (in f32, accumulated in the crate's order: each output
    // value sums its taps from the first), a source row at a time into `acc`, then stored
    // transposed (`tmp[x][y]`), so that the horizontal pass also sums whole rows
    let (cw, th_, src) = (c1 - c0, th as usize, img.as_raw());
    let row_len = 3 * w as usize;
    let mut tmp = vec![0f32; 3 * cw * th_];
    let mut acc = vec![0f32; 3 * cw];
    for (y, (top, ws)) in rows.iter().enumerate() {
        acc.fill(0.0);
        for (i, &wt) in ws.iter().enumerate() {
            let start = (*top as usize + i) * row_len + 3 * c0;
            for (t, &p) in acc.iter_mut().zip(&src[start..start + 3 * cw]) {
                *t += p as f32 * wt;
            }
        }
        for (x, px) in acc.chunks_exact(3).enumerate() {
            tmp[3 * (x * th_ + y)..][..3].copy_from_slice(px);
        }
    }
    // horizontal pass, an output column at a time (a row of `tmp` per tap), rounded to the
    // nearest u8
    let mut out = RgbImage::new(tw, th);
    let raw: &mut [u8] = out.as_mut();
    let col_len = 3 * th_;
    for (c, (left, ws)) in cols.iter().enumerate() {
        acc.clear();
        acc.resize(col_len, 0.0);
        for (i, &wt) in ws.iter().enumerate() {
            let start = (*left as usize - c0 + i) * col_len;
            for (t, &p) in acc.iter_mut().zip(&tmp[start..start + col_len]) {
                *t += p * wt;
            }
        }
        for (y, px) in acc.chunks_exact(3).enumerate() {
            let o = 3 * (y * tw as usize + c);
            for k in 0..3 {
                raw[o + k] = colormap::round_u8(px[k].clamp(0.0, 255.0));
            }
        }
    }
    out
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
