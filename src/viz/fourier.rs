//! lucid / lucent's decorrelated Fourier image parameterisation (Olah, Mordvintsev, Schubert
//! 2017, "Feature Visualization", §"Preconditioning and parameterization"; lucid's
//! `optvis/param/spatial.py` `fft_image` and `color.py` `to_valid_rgb`, lucent's ports): the
//! optimiser moves a spectrum, not pixels, so a plain gradient step is preconditioned towards
//! natural-looking pictures (large, smooth shapes first; decorrelated colours).
//!
//! In our terms the chain from the spectrum `s` to the model's input `x` is
//!
//! 1. `s` `[n, 3, h, 2·(w/2+1)]` (lucent's `[n, 3, h, w/2+1, 2]`, re and im interleaved), drawn
//!    from N(0, sd²);
//! 2. scaled per frequency by `1 / max(f, 1/max(h, w))^decay_power` (f = √(fx² + fy²), numpy's
//!    `fftfreq`; lucid's `rfft2d_freqs`) and by lucid's "magic" 1/4;
//! 3. `np.fft.irfft2(·, s=(h, w), norm="ortho")` ([`Irfft2`]): a fixed linear map, two GEMMs;
//! 4. per pixel, the colour decorrelation `t ↦ C t` with C lucid's `color_correlation_svd_sqrt`
//!    divided by its largest column norm ([`color_correlation_normalized`]), a 1x1 convolution;
//! 5. a sigmoid to a pixel `p` in (0, 1);
//! 6. the model's normalisation `x = (p − mean) / std` ([`Preprocess`]): the same
//!    per-channel map as [`super::pixel_range`] applies to the pixel range 0 and 1.
//!
//! Everything after step 6 (jitter, scale, rotation, the network) is what the pixel
//! parameterisation does with its picture. The gradient goes back the same way: `x`'s gradient
//! times 1/std, through the sigmoid (its forward input kept), Cᵀ, the transposed GEMMs, and the
//! same per-frequency scale. lucid and lucent reach the same ortho transform differently (lucid
//! TensorFlow's unnormalised `irfft2d` times √(hw), lucent torch's `irfftn(norm="ortho")`).
//!
//! Deviations: for odd `w` lucid and lucent keep one more column of the spectrum (`w/2 + 2`),
//! which lucent's `irfftn(s=(h, w))` trims before transforming — it never reaches the picture
//! and its gradient is 0 — so it is left out here (lucid's TensorFlow path instead transforms to
//! `w + 1` columns and crops one, another picture; we follow lucent and numpy).

use std::sync::Arc;

use super::ops::POINTWISE;
use crate::backend::{Act, Backend, Binary, Role};
use crate::error::{Error, Result};
use crate::imageio::Preprocess;
use crate::tensor::Tensor;

/// The settings of lucid's `to_valid_rgb(fft_image(shape, sd, decay_power), decorrelate)`; the
/// default is lucid's and lucent's: decay power 1, sd 0.01, decorrelated colours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fourier {
    /// the spectrum's amplitudes scale as 1 / max(f, 1/max(h, w))^decay_power
    pub decay_power: f32,
    /// the starting spectrum's standard deviation
    pub sd: f32,
    /// whether the three channels are lucid's decorrelated colour components (else R, G, B)
    pub decorrelate: bool,
}

impl Default for Fourier {
    fn default() -> Self {
        Fourier { decay_power: 1.0, sd: 0.01, decorrelate: true }
    }
}

/// lucid's `color_correlation_svd_sqrt`: the square root of ImageNet's colour correlation
/// matrix (rows: R, G, B out; columns: the decorrelated components in).
pub const COLOR_CORRELATION_SVD_SQRT: [[f32; 3]; 3] = [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

/// [`COLOR_CORRELATION_SVD_SQRT`] divided by its largest column norm, in f32 as numpy computes
/// lucid's `color_correlation_normalized` (`np.max(np.linalg.norm(c, axis=0))`).
pub fn color_correlation_normalized() -> [[f32; 3]; 3] {
    let c = COLOR_CORRELATION_SVD_SQRT;
    let max = (0..3).map(|j| (0..3).map(|i| c[i][j] * c[i][j]).sum::<f32>().sqrt()).fold(0.0f32, f32::max);
    c.map(|row| row.map(|v| v / max))
}

/// The frequency of every bin of an `h x w` real spectrum, `[h, w/2 + 1]` row-major: lucid's
/// `rfft2d_freqs`, `√(fx² + fy²)` with numpy's `fftfreq` (without lucid's extra column for odd
/// `w`, which the inverse transform never reads).
pub fn rfft2d_freqs(h: usize, w: usize) -> Vec<f64> {
    let freq = |k: usize, n: usize| if k <= (n - 1) / 2 { k as f64 / n as f64 } else { (k as f64 - n as f64) / n as f64 };
    (0..h).flat_map(|ky| (0..w / 2 + 1).map(move |kx| freq(ky, h).hypot(freq(kx, w)))).collect()
}

/// (cos, sin) of 2π·k·j / n, the angle reduced exactly first.
fn twiddle(k: usize, j: usize, n: usize) -> (f64, f64) {
    let a = 2.0 * std::f64::consts::PI * ((k * j) % n) as f64 / n as f64;
    (a.cos(), a.sin())
}

/// numpy's `irfft2(s, s=(h, w), norm="ortho")` as two GEMMs with bases built once on the host.
///
/// With X = Xr + i·Xi the spectrum `[h, w/2+1]`, numpy transforms the columns (a complex
/// inverse DFT of length h) and then each row back to w reals, reading only the real part of
/// the DC bin and, for even w, of the Nyquist bin, and counting every other bin twice (its
/// conjugate twin). Written out, x = C_h·U − S_h·V with U = Xr·Cwᵀ − Xi·Swᵀ and
/// V = Xr·Swᵀ + Xi·Cwᵀ, where C_h, S_h `[h, h]` hold cos, sin(2π·y·ky/h)/√h and Cw, Sw
/// `[w, w/2+1]` hold c_kx·cos, c_kx·sin(2π·x·kx/w)/√w, c_kx = 1 for the DC and Nyquist bins and
/// 2 for the others (their sines are 0: the imaginary parts numpy ignores). So:
/// - the rows: one [`Backend::linear`] of every spectrum row (re, im interleaved, `2·(w/2+1)`
///   values) by `[[Cw, −Sw], [Sw, Cw]]`, giving the row `[U | V]` of `2w` values;
/// - the columns: read as `[n·c, 2h, 1, w]` (channel 2·ky + {0: U, 1: V}), one 1x1
///   [`Backend::conv2d`] by `[C_h, −S_h]` interleaved the same way, `[h, 2h, 1, 1]`.
///
/// The adjoint ([`Irfft2::adjoint`]) is the same two GEMMs transposed, in the other order
/// ([`Backend::conv2d_backward_data`], [`Backend::linear_backward_data`]).
pub struct Irfft2<B: Backend> {
    rows: B::W,
    cols: B::W,
    h: usize,
    w: usize,
}

impl<B: Backend> Irfft2<B> {
    /// The map for `h x w` pictures, its bases uploaded once.
    pub fn new(be: &B, h: usize, w: usize) -> Result<Self> {
        if h == 0 || w == 0 {
            return Err(Error::InvalidArgument(format!("the inverse Fourier transform needs a picture of at least 1x1 pixels, not {h}x{w}")));
        }
        let bins = w / 2 + 1;
        let mut rows = vec![0f32; 2 * w * 2 * bins];
        for x in 0..w {
            for kx in 0..bins {
                let edge = kx == 0 || 2 * kx == w;
                let weight = if edge { 1.0 } else { 2.0 } / (w as f64).sqrt();
                let (c, s) = twiddle(kx, x, w);
                let (c, s) = (c * weight, if edge { 0.0 } else { s * weight });
                // U = Xr·c − Xi·s (row x), V = Xr·s + Xi·c (row w + x)
                let (u, v) = (x * 2 * bins, (w + x) * 2 * bins);
                (rows[u + 2 * kx], rows[u + 2 * kx + 1]) = (c as f32, -s as f32);
                (rows[v + 2 * kx], rows[v + 2 * kx + 1]) = (s as f32, c as f32);
            }
        }
        let mut cols = vec![0f32; h * 2 * h];
        for y in 0..h {
            for ky in 0..h {
                let (c, s) = twiddle(ky, y, h);
                let k = 1.0 / (h as f64).sqrt();
                (cols[y * 2 * h + 2 * ky], cols[y * 2 * h + 2 * ky + 1]) = ((c * k) as f32, (-s * k) as f32);
            }
        }
        Ok(Irfft2 {
            rows: be.weight(&Arc::new(Tensor::new(vec![2 * w, 2 * bins], rows)?), Role::LinearWeight)?,
            cols: be.weight(&Arc::new(Tensor::new(vec![h, 2 * h, 1, 1], cols)?), Role::ConvWeight)?,
            h,
            w,
        })
    }

    /// The spectrum's shape for `n` items of `c` channels: `[n, c, h, 2·(w/2+1)]`.
    pub fn spectrum_shape(&self, n: usize, c: usize) -> [usize; 4] {
        [n, c, self.h, 2 * (self.w / 2 + 1)]
    }

    /// The pictures `[n, c, h, w]` of the spectra `s` `[n, c, h, 2·(w/2+1)]`.
    pub fn forward(&self, be: &B, s: &B::T) -> Result<B::T> {
        let (n, c) = self.items(be.shape(s), &self.spectrum_shape(1, 1), "spectrum")?;
        let (h, w) = (self.h, self.w);
        let rows = be.linear(&be.reshape(s.clone(), &[n * c * h, 2 * (w / 2 + 1)])?, &self.rows, None)?;
        let x = be.conv2d(&be.reshape(rows, &[n * c, 2 * h, 1, w])?, &self.cols, None, &POINTWISE)?;
        be.reshape(x, &[n, c, h, w])
    }

    /// The adjoint map: ⟨forward(s), y⟩ = ⟨s, adjoint(y)⟩ for `y` `[n, c, h, w]`.
    pub fn adjoint(&self, be: &B, y: &B::T) -> Result<B::T> {
        let (n, c) = self.items(be.shape(y), &[1, 1, self.h, self.w], "picture")?;
        let (h, w) = (self.h, self.w);
        let y = be.reshape(y.clone(), &[n * c, h, 1, w])?;
        let rows = be.conv2d_backward_data(&y, &self.cols, &[n * c, 2 * h, 1, w], &POINTWISE)?;
        let s = be.linear_backward_data(&be.reshape(rows, &[n * c * h, 2 * w])?, &self.rows)?;
        be.reshape(s, &[n, c, h, 2 * (w / 2 + 1)])
    }

    /// (n, c) of a tensor that must be `[n, c, plane[2], plane[3]]`.
    fn items(&self, shape: &[usize], plane: &[usize], what: &str) -> Result<(usize, usize)> {
        match shape {
            [n, c, a, b] if [*a, *b] == plane[2..] && n * c > 0 => Ok((*n, *c)),
            _ => Err(Error::shape(format!("the inverse Fourier transform's {what}"), [0, 0, plane[2], plane[3]], shape)),
        }
    }
}

/// The whole chain from a spectrum to the model's input (module documentation), prepared once
/// for `h x w` pictures of 3 channels: its bases, scale, colour matrix and normalisation live on
/// the backend.
pub struct FourierImage<B: Backend> {
    irfft: Irfft2<B>,
    /// `[1, 1, h, 2·(w/2+1)]`: 1 / max(f, 1/max(h, w))^decay_power / 4, twice per bin (re, im)
    scale: B::T,
    /// lucid's normalised colour matrix as a 1x1 convolution `[3, 3, 1, 1]`; `None`: RGB as is
    color: Option<B::W>,
    /// `[1, 3, 1, 1]`: 1 / std and −mean / std, pixel to normalised input
    norm: (B::T, B::T),
}

impl<B: Backend> FourierImage<B> {
    /// The chain of `p` (its decay power and colours; the start's `sd` is the caller's) for
    /// `h x w` pictures, for a model that normalises as `pre`.
    pub fn new(be: &B, h: usize, w: usize, p: &Fourier, pre: &Preprocess) -> Result<Self> {
        let floor = 1.0 / h.max(w) as f64;
        let scale: Vec<f32> = rfft2d_freqs(h, w).iter().flat_map(|&f| [(1.0 / f.max(floor).powf(p.decay_power as f64) / 4.0) as f32; 2]).collect();
        let color = match p.decorrelate {
            true => Some(be.weight(&Arc::new(Tensor::new(vec![3, 3, 1, 1], color_correlation_normalized().concat())?), Role::ConvWeight)?),
            false => None,
        };
        let per_channel = |f: &dyn Fn(usize) -> f32| be.upload(&Tensor::new(vec![1, 3, 1, 1], (0..3).map(f).collect())?);
        Ok(FourierImage {
            irfft: Irfft2::new(be, h, w)?,
            scale: be.upload(&Tensor::new(vec![1, 1, h, 2 * (w / 2 + 1)], scale)?)?,
            color,
            norm: (per_channel(&|c| 1.0 / pre.std[c])?, per_channel(&|c| -pre.mean[c] / pre.std[c])?),
        })
    }

    /// The spectrum's shape for `n` pictures: `[n, 3, h, 2·(w/2+1)]`.
    pub fn spectrum_shape(&self, n: usize) -> [usize; 4] {
        self.irfft.spectrum_shape(n, 3)
    }

    /// The model's inputs `[n, 3, h, w]` for the spectra `s`, and the sigmoid's input (kept for
    /// [`FourierImage::backward`]).
    pub fn image(&self, be: &B, s: &B::T) -> Result<(B::T, B::T)> {
        let mut t = self.irfft.forward(be, &be.binary(s, &self.scale, Binary::Mul)?)?;
        if let Some(c) = &self.color {
            t = be.conv2d(&t, c, None, &POINTWISE)?;
        }
        let p = be.act(&t, Act::Sigmoid)?;
        Ok((be.binary(&be.binary(&p, &self.norm.0, Binary::Mul)?, &self.norm.1, Binary::Add)?, t))
    }

    /// The gradient with respect to the spectra of a function of the inputs whose gradient is
    /// `gx`; `t` is the sigmoid's input that [`FourierImage::image`] returned.
    pub fn backward(&self, be: &B, t: &B::T, gx: &B::T) -> Result<B::T> {
        let mut g = be.act_backward(t, &be.binary(gx, &self.norm.0, Binary::Mul)?, Act::Sigmoid)?;
        if let Some(c) = &self.color {
            g = be.conv2d_backward_data(&g, c, be.shape(t), &POINTWISE)?;
        }
        be.binary(&self.irfft.adjoint(be, &g)?, &self.scale, Binary::Mul)
    }
}
