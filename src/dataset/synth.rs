//! A generated dataset whose right answers are known: small pictures of one planted shape (a
//! square, a disc or horizontal stripes) in one colour (red, green, blue or yellow) on a noisy
//! grey background, at a random place. Deterministic from a seed (a 64-bit xorshift), so tests
//! and demos need no downloaded data.

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::output::OutputSet;

pub const COLOURS: &[(&str, [u8; 3])] = &[("red", [220, 30, 30]), ("green", [30, 200, 40]), ("blue", [30, 60, 220]), ("yellow", [230, 220, 30])];
pub const SHAPES: &[&str] = &["square", "disc", "stripes"];

/// One generated picture: its file name, what was planted and where (`[x0, y0, x1, y1)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Planted {
    pub name: String,
    pub colour: &'static str,
    pub shape: &'static str,
    pub bbox: [u32; 4],
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Picture `i` of the dataset of `seed`, `side` pixels square.
pub fn picture(i: usize, seed: u64, side: u32) -> (RgbImage, Planted) {
    let mut r = Rng((seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_add((i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)) | 1);
    for _ in 0..4 {
        r.next();
    }
    let (colour, rgb) = COLOURS[i % COLOURS.len()];
    let shape = SHAPES[(i / COLOURS.len()) % SHAPES.len()];
    let size = side / 3 + r.below((side / 4) as u64) as u32;
    let (x0, y0) = (r.below((side - size) as u64) as u32, r.below((side - size) as u64) as u32);
    let mut img = RgbImage::from_fn(side, side, |_, _| {
        let g = 110 + r.below(40) as u8;
        Rgb([g, g, g])
    });
    let c = (size as f32 - 1.0) / 2.0;
    for y in 0..size {
        for x in 0..size {
            let inside = match shape {
                "square" => true,
                "disc" => (x as f32 - c).powi(2) + (y as f32 - c).powi(2) <= c * c,
                _ => (y / 3) % 2 == 0,
            };
            if inside {
                img.put_pixel(x0 + x, y0 + y, Rgb(rgb));
            }
        }
    }
    (img, Planted { name: format!("{i:04}_{colour}_{shape}.png"), colour, shape, bbox: [x0, y0, x0 + size, y0 + size] })
}

/// Stage `n` pictures of `side` pixels in `out` (the caller commits it).
pub fn generate(out: &mut OutputSet, n: usize, seed: u64, side: u32) -> Result<Vec<Planted>> {
    if side < 8 {
        return Err(Error::InvalidArgument(format!("generated pictures need at least 8 pixels a side, not {side}")));
    }
    (0..n)
        .map(|i| {
            let (img, p) = picture(i, seed, side);
            out.add(&p.name, &crate::job::png_bytes(&img)?)?;
            Ok(p)
        })
        .collect()
}
