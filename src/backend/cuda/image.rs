//! Launches for `kernels/image.cu`: NHWC image batches `[n, h, w, c]`: bilinear resize,
//! (de)normalisation, roll, flip, crop and paste, gathering whole planes, Gaussian blur, affine
//! warp and its adjoint.

use super::{grid_stride, launch, len, ptr};
use crate::device::{Arg, Device, DevicePtr};
use crate::error::{Error, Result};

/// The kernels this file launches, as `(op, variant)` of [`crate::device::kernel_name`].
pub const KERNELS: &[(&str, &str)] = &[
    ("resize_bilinear", "fwd"),
    ("normalize", "fwd"),
    ("normalize", "bwd"),
    ("roll", "fwd"),
    ("flip", "fwd"),
    ("crop", "fwd"),
    ("crop", "bwd"),
    ("gather_planes", "fwd"),
    ("blur", "gaussian"),
    ("warp", "fwd"),
    ("warp", "bwd"),
];

/// Largest blur radius: its 2r+1 weights sit in shared memory (8 KiB here, well inside the 48 KiB
/// every GPU gives a block without opting in); sigma up to 341 px is far beyond any image use.
const MAX_BLUR_RADIUS: usize = 1023;

/// y `[n, oh, ow, c]`: PyTorch's bilinear interpolation, align_corners=False, no antialias.
#[allow(clippy::too_many_arguments)]
pub fn resize_bilinear(dev: &dyn Device, x: DevicePtr, y: DevicePtr, n: usize, c: usize, h: usize, w: usize, oh: usize, ow: usize) -> Result<()> {
    // SAFETY: `resize_bilinear_fwd_f32(const float* x, float* y, n, c, h, w, oh, ow)`; the
    // grid-stride loop writes every y element (h, w > 0: every read is inside x).
    launch(dev, "resize_bilinear", "fwd", grid_stride(n * oh * ow * c), &[ptr(x), ptr(y), len(n), len(c), len(h), len(w), len(oh), len(ow)])
}

/// `y = (x - mean[c]) / std[c]` over `n` elements with `c` channels innermost.
pub fn normalize(dev: &dyn Device, x: DevicePtr, mean: DevicePtr, std: DevicePtr, y: DevicePtr, n: usize, c: usize) -> Result<()> {
    // SAFETY: `normalize_fwd_f32(const float* x, const float* mean, const float* std, float* y,
    // long long n, long long c)`; writes y[i] for every i < n.
    launch(dev, "normalize", "fwd", grid_stride(n), &[ptr(x), ptr(mean), ptr(std), ptr(y), len(n), len(c)])
}

/// `y = x * std[c] + mean[c]`, the inverse of [`normalize`].
pub fn denormalize(dev: &dyn Device, x: DevicePtr, mean: DevicePtr, std: DevicePtr, y: DevicePtr, n: usize, c: usize) -> Result<()> {
    // SAFETY: `normalize_bwd_f32(same signature as normalize_fwd_f32)`; writes y[i], i < n.
    launch(dev, "normalize", "bwd", grid_stride(n), &[ptr(x), ptr(mean), ptr(std), ptr(y), len(n), len(c)])
}

/// torch.roll(x, (dy, dx), dims=(h, w)) (y must not alias x).
#[allow(clippy::too_many_arguments)]
pub fn roll(dev: &dyn Device, x: DevicePtr, y: DevicePtr, n: usize, c: usize, h: usize, w: usize, dy: i64, dx: i64) -> Result<()> {
    // SAFETY: `roll_fwd_f32(const float* x, float* y, n, c, h, w, long long dy, long long dx)`;
    // writes every y element.
    let args = [ptr(x), ptr(y), len(n), len(c), len(h), len(w), Arg::I64(dy), Arg::I64(dx)];
    launch(dev, "roll", "fwd", grid_stride(n * h * w * c), &args)
}

/// torch.flip(x, dims) over h (`fy`) and / or w (`fx`) (y must not alias x).
#[allow(clippy::too_many_arguments)]
pub fn flip(dev: &dyn Device, x: DevicePtr, y: DevicePtr, n: usize, c: usize, h: usize, w: usize, fy: bool, fx: bool) -> Result<()> {
    // SAFETY: `flip_fwd_f32(const float* x, float* y, n, c, h, w, int fy, int fx)`; writes every
    // y element, and every read index is inside x.
    let args = [ptr(x), ptr(y), len(n), len(c), len(h), len(w), Arg::I32(fy as i32), Arg::I32(fx as i32)];
    launch(dev, "flip", "fwd", grid_stride(n * h * w * c), &args)
}

/// y `[n, oh, ow, c]` = the window of x `[n, h, w, c]` at (y0, x0) (the caller checks that it
/// lies inside; y must not alias x).
#[allow(clippy::too_many_arguments)]
pub fn crop(dev: &dyn Device, x: DevicePtr, y: DevicePtr, n: usize, c: usize, h: usize, w: usize, y0: usize, x0: usize, oh: usize, ow: usize) -> Result<()> {
    // SAFETY: `crop_fwd_f32(const float* x, float* y, n, c, h, w, y0, x0, oh, ow)`; writes every
    // y element; reads inside x as the window lies inside it.
    let args = [ptr(x), ptr(y), len(n), len(c), len(h), len(w), len(y0), len(x0), len(oh), len(ow)];
    launch(dev, "crop", "fwd", grid_stride(n * oh * ow * c), &args)
}

/// The window of dst `[n, h, w, c]` at (y0, x0) = src `[n, oh, ow, c]`, in place (the caller
/// checks that it lies inside; src must not alias dst).
#[allow(clippy::too_many_arguments)]
pub fn paste(dev: &dyn Device, src: DevicePtr, dst: DevicePtr, n: usize, c: usize, h: usize, w: usize, y0: usize, x0: usize, oh: usize, ow: usize) -> Result<()> {
    // SAFETY: `crop_bwd_f32(const float* src, float* dst, n, c, h, w, y0, x0, oh, ow)`; reads
    // every src element, writes only inside dst's window.
    let args = [ptr(src), ptr(dst), len(n), len(c), len(h), len(w), len(y0), len(x0), len(oh), len(ow)];
    launch(dev, "crop", "bwd", grid_stride(n * oh * ow * c), &args)
}

/// y `[m, h, w]` = the planes of x `[n, h, w, c]` numbered `planes` (m device i64 numbers
/// `item * c + channel`, each below n·c: the caller checks; y must not alias x).
pub fn gather_planes(dev: &dyn Device, x: DevicePtr, planes: DevicePtr, y: DevicePtr, m: usize, c: usize, hw: usize) -> Result<()> {
    // SAFETY: `gather_planes_fwd_f32(const float* x, const long long* planes, float* y, m, c, hw)`;
    // the grid-stride loop writes every one of the m*hw y elements, and reads x inside as each
    // plane number is below n*c.
    launch(dev, "gather_planes", "fwd", grid_stride(m * hw), &[ptr(x), ptr(planes), ptr(y), len(m), len(c), len(hw)])
}

/// y = x blurred by a Gaussian of standard deviation `sigma` (pixels) over h and w of each
/// plane, as `torchvision.transforms.functional.gaussian_blur(x, 2r+1, sigma)` with radius
/// r = ceil(3 sigma): weights exp(-t²/2σ²) for t in [-r, r] normalised to sum 1, reflect padding
/// (no repeated edge). Where torch rejects r >= h or w, the reflection repeats periodically.
/// Two passes, along w into `tmp` then along h into y; tmp and y hold n*h*w*c floats, and
/// neither may alias x or each other.
#[allow(clippy::too_many_arguments)]
pub fn gaussian_blur(dev: &dyn Device, x: DevicePtr, tmp: DevicePtr, y: DevicePtr, n: usize, c: usize, h: usize, w: usize, sigma: f32) -> Result<()> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::InvalidArgument(format!("gaussian_blur: sigma must be positive and finite, got {sigma}")));
    }
    let radius = (3.0 * sigma).ceil() as usize;
    if radius > MAX_BLUR_RADIUS {
        return Err(Error::InvalidArgument(format!("gaussian_blur: radius ceil(3 * {sigma}) = {radius} exceeds {MAX_BLUR_RADIUS}")));
    }
    let total = n * h * w * c;
    let mut cfg = grid_stride(total);
    cfg.shared_bytes = ((2 * radius + 1) * 4) as u32;
    for (src, dst, vertical) in [(x, tmp, 0), (tmp, y, 1)] {
        // SAFETY: `blur_gaussian_f32(const float* x, float* y, long long n, long long c,
        // long long h, long long w, float sigma, long long radius, int vertical)` with
        // (2r+1) * 4 bytes of dynamic shared memory for the weights; the grid-stride loop writes
        // every one of the n*h*w*c dst elements, and every read index is reflected into range.
        let args = [ptr(src), ptr(dst), len(n), len(c), len(h), len(w), Arg::F32(sigma), len(radius), Arg::I32(vertical)];
        launch(dev, "blur", "gaussian", cfg, &args)?;
    }
    Ok(())
}

/// y `[n, h, w, c]` = x `[n, h, w, c]` resampled under item i's affine map `theta[i]` (`[n, 2, 3]`,
/// normalised coordinates: [`crate::backend::Backend::warp`]); with `backward`, the adjoint:
/// y = warpᵀ x at the same theta ([`crate::backend::Backend::warp_backward`]). y must not alias
/// x or theta.
#[allow(clippy::too_many_arguments)]
pub fn warp(dev: &dyn Device, x: DevicePtr, theta: DevicePtr, y: DevicePtr, n: usize, c: usize, h: usize, w: usize, backward: bool) -> Result<()> {
    // SAFETY: `warp_fwd_f32` / `warp_bwd_f32(const float* x, const float* theta, float* y, n, c, h,
    // w)`; the grid-stride loop writes every y element; theta holds 6 floats per item, and every
    // x read is of a tap inside the picture.
    let args = [ptr(x), ptr(theta), ptr(y), len(n), len(c), len(h), len(w)];
    launch(dev, "warp", if backward { "bwd" } else { "fwd" }, grid_stride(n * h * w * c), &args)
}
