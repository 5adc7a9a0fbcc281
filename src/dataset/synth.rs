//! A generated dataset whose right answers are known: small pictures of one planted shape (a
//! square, a disc or horizontal stripes) in one colour (red, green, blue or yellow) on a noisy
//! grey background, at a random place. Deterministic from a seed (a 64-bit xorshift), so tests
//! and demos need no downloaded data. [`generate_broden`] writes it in the Broden layout
//! ([`super::broden`]) with a `color` category named from the pixels and a `shape` category
//! from the planted regions, so that dissection's right answer is known.

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::output::OutputSet;

/// The planted shapes' colours: name and RGB.
pub const COLOURS: &[(&str, [u8; 3])] = &[("red", [220, 30, 30]), ("green", [30, 200, 40]), ("blue", [30, 60, 220]), ("yellow", [230, 220, 30])];
/// The planted shapes' names.
pub const SHAPES: &[&str] = &["square", "disc", "stripes"];

/// One generated picture: its file name, what was planted and where (`[x0, y0, x1, y1)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Planted {
    /// `{colour} {shape}`
    pub name: String,
    /// its colour, one of [`COLOURS`]
    pub colour: &'static str,
    /// its shape, one of [`SHAPES`]
    pub shape: &'static str,
    /// its bounding box `[x0, y0, x1, y1)` in pixels
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
    let (img, p, _) = picture_and_region(i, seed, side);
    (img, p)
}

/// [`picture`] and the shape's region (row-major, `side × side`): the square, the disc, or the
/// whole striped patch (stripes are a texture: the region is the patch, not only its stripes).
pub fn picture_and_region(i: usize, seed: u64, side: u32) -> (RgbImage, Planted, Vec<bool>) {
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
    let mut region = vec![false; (side * side) as usize];
    for y in 0..size {
        for x in 0..size {
            let (inside, painted) = match shape {
                "square" => (true, true),
                "disc" => {
                    let d = (x as f32 - c).powi(2) + (y as f32 - c).powi(2) <= c * c;
                    (d, d)
                }
                _ => (true, (y / 3) % 2 == 0),
            };
            region[((y0 + y) * side + x0 + x) as usize] = inside;
            if painted {
                img.put_pixel(x0 + x, y0 + y, Rgb(rgb));
            }
        }
    }
    (img, Planted { name: format!("{i:04}_{colour}_{shape}.png"), colour, shape, bbox: [x0, y0, x0 + size, y0 + size] }, region)
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

/// The basic colour terms (Berlin & Kay's eleven) and a prototype of each in sRGB: Broden's
/// `color` category names each pixel by its colour; we name it by the nearest prototype.
pub const COLOUR_NAMES: &[(&str, [u8; 3])] = &[
    ("black", [0, 0, 0]),
    ("blue", [0, 0, 255]),
    ("brown", [139, 69, 19]),
    ("grey", [128, 128, 128]),
    ("green", [0, 255, 0]),
    ("orange", [255, 165, 0]),
    ("pink", [255, 192, 203]),
    ("purple", [128, 0, 128]),
    ("red", [255, 0, 0]),
    ("white", [255, 255, 255]),
    ("yellow", [255, 255, 0]),
];

/// The index into [`COLOUR_NAMES`] of a pixel's colour: the nearest prototype (squared RGB
/// distance; ties to the first).
pub fn colour_name(p: [u8; 3]) -> usize {
    let d = |q: [u8; 3]| (0..3).map(|i| (p[i] as i32 - q[i] as i32).pow(2)).sum::<i32>();
    (0..COLOUR_NAMES.len()).min_by_key(|&i| d(COLOUR_NAMES[i].1)).expect("colours")
}

/// The Broden label number of colour `i` of [`COLOUR_NAMES`] and of shape `j` of [`SHAPES`].
pub fn colour_label(i: usize) -> usize {
    1 + i
}
/// The Broden label number of shape `j` of [`SHAPES`].
pub fn shape_label(j: usize) -> usize {
    1 + COLOUR_NAMES.len() + j
}

/// A label image: label numbers as `R + 256·G`, as Broden codes them.
fn label_png(labels: &[usize], side: u32) -> Result<Vec<u8>> {
    let img = RgbImage::from_fn(side, side, |x, y| {
        let n = labels[(y * side + x) as usize];
        Rgb([(n % 256) as u8, (n / 256) as u8, 0])
    });
    crate::job::png_bytes(&img)
}

/// Stage `n` pictures in the Broden layout: in `images` (the folder `images/`) `NNNN.png` with
/// its label images `NNNN_color.png` (every pixel named by [`colour_name`]) and
/// `NNNN_shape.png` (the shape's region; 0 elsewhere); in `out` `index.csv`, `label.csv` and
/// `category.csv`. Labels are at the pictures' resolution. Commit `images` first: a folder is a
/// Broden dataset once its `index.csv` exists.
pub fn generate_broden(out: &mut OutputSet, images: &mut OutputSet, n: usize, seed: u64, side: u32) -> Result<Vec<Planted>> {
    if side < 8 {
        return Err(Error::InvalidArgument(format!("generated pictures need at least 8 pixels a side, not {side}")));
    }
    let mut index = String::from("image,split,ih,iw,sh,sw,color,shape\n");
    let mut colour_count = vec![0usize; COLOUR_NAMES.len()];
    let mut planted = vec![];
    for i in 0..n {
        let (img, p, region) = picture_and_region(i, seed, side);
        let colours: Vec<usize> = img.pixels().map(|px| colour_label(colour_name(px.0))).collect();
        for &c in &colours {
            colour_count[c - 1] += 1;
        }
        let shape = shape_label(SHAPES.iter().position(|&s| s == p.shape).expect("a shape"));
        let shapes: Vec<usize> = region.iter().map(|&r| if r { shape } else { 0 }).collect();
        images.add(&format!("{i:04}.png"), &crate::job::png_bytes(&img)?)?;
        images.add(&format!("{i:04}_color.png"), &label_png(&colours, side)?)?;
        images.add(&format!("{i:04}_shape.png"), &label_png(&shapes, side)?)?;
        index += &format!("{i:04}.png,train,{side},{side},{side},{side},{i:04}_color.png,{i:04}_shape.png\n");
        planted.push(Planted { name: format!("{i:04}.png"), ..p });
    }
    let mut labels = String::from("number,name,category,frequency,coverage,syns\n");
    for (i, (name, _)) in COLOUR_NAMES.iter().enumerate() {
        labels += &format!("{},{name},color({}),{},0,\n", colour_label(i), colour_count[i], colour_count[i]);
    }
    for (j, s) in SHAPES.iter().enumerate() {
        let k = planted.iter().filter(|p| p.shape == *s).count();
        labels += &format!("{},{s},shape({k}),{k},0,\n", shape_label(j));
    }
    out.add("index.csv", index.as_bytes())?;
    out.add("label.csv", labels.as_bytes())?;
    out.add("category.csv", format!("name,first,last,count,frequency\ncolor,1,{},{},{n}\nshape,{},{},{},{n}\n", COLOUR_NAMES.len(), COLOUR_NAMES.len(), shape_label(0), shape_label(SHAPES.len() - 1), SHAPES.len()).as_bytes())?;
    Ok(planted)
}
