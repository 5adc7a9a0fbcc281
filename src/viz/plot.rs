//! Plots as pictures, without a plotting crate: line plots with labelled axes, ticks and a
//! legend ([`LinePlot`]), and grids of labelled tiles ([`tile_grid`]). Text is drawn from the
//! public-domain 8x8 bitmap glyphs of `font8x8` (ASCII; anything else shows as `?`), so a
//! picture reads at a glance with no font on the machine.

use image::{imageops, Rgb, RgbImage};

/// Width and height of one glyph, in pixels.
pub const GLYPH: u32 = 8;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);

/// Colours of successive series: blue, red, then lighter companions (matplotlib's tab10).
pub const PALETTE: [Rgb<u8>; 6] = [Rgb([31, 119, 180]), Rgb([214, 39, 40]), Rgb([44, 160, 44]), Rgb([255, 127, 14]), Rgb([148, 103, 189]), Rgb([127, 127, 127])];

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// The glyph rows of `ch` (bit 0 of each row is its leftmost pixel).
fn glyph(ch: char) -> [u8; 8] {
    let i = if ch.is_ascii() && !ch.is_ascii_control() { ch as usize } else { '?' as usize };
    font8x8::legacy::BASIC_LEGACY[i]
}

/// Width of `s` in pixels.
pub fn text_width(s: &str) -> u32 {
    s.chars().count() as u32 * GLYPH
}

/// Draw `s` with its top-left corner at (x, y).
pub fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: Rgb<u8>) {
    for (k, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        for (gy, row) in g.iter().enumerate() {
            for gx in 0..8 {
                if row >> gx & 1 == 1 {
                    put(img, x + k as i64 * GLYPH as i64 + gx, y + gy as i64, c);
                }
            }
        }
    }
}

/// Draw `s` reading bottom to top, with its bottom-left corner at (x, y).
pub fn text_up(img: &mut RgbImage, x: i64, y: i64, s: &str, c: Rgb<u8>) {
    for (k, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        for (gy, row) in g.iter().enumerate() {
            for gx in 0..8 {
                if row >> gx & 1 == 1 {
                    put(img, x + gy as i64, y - (k as i64 * GLYPH as i64 + gx), c);
                }
            }
        }
    }
}

/// `s` cut to at most `n` characters, keeping its end (where layer names differ) behind `..`.
pub fn fit(s: &str, n: usize) -> String {
    let len = s.chars().count();
    if len <= n {
        s.to_string()
    } else {
        let keep = n.saturating_sub(2);
        format!("..{}", s.chars().skip(len - keep).collect::<String>())
    }
}

/// A line `width` pixels thick from (x0, y0) to (x1, y1); `dash` draws `dash` pixels of every
/// `2·dash` along it (`phase` carries the pattern across the segments of one polyline).
fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>, width: i64, dash: Option<f64>, phase: &mut f64) {
    let len = ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt();
    let n = (len * 3.0).ceil().max(1.0) as usize;
    for i in 0..=n {
        let t = i as f64 / n as f64;
        let along = *phase + t * len;
        if dash.is_some_and(|d| (along / d) as u64 % 2 == 1) {
            continue;
        }
        let (x, y) = ((x0 + t * (x1 - x0)).round() as i64, (y0 + t * (y1 - y0)).round() as i64);
        for dy in 0..width {
            for dx in 0..width {
                put(img, x + dx - width / 2, y + dy - width / 2, c);
            }
        }
    }
    *phase += len;
}

fn fill(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    for y in y0..y1 {
        for x in x0..x1 {
            put(img, x, y, c);
        }
    }
}

/// One line of a [`LinePlot`].
#[derive(Clone, Debug)]
pub struct Series {
    /// the legend's text
    pub label: String,
    /// the line's colour
    pub color: Rgb<u8>,
    /// drawn dashed
    pub dashed: bool,
    /// (x, y) points in data units, drawn in order; a non-finite point leaves a gap
    pub points: Vec<(f64, f64)>,
}

/// A line plot: title, axis labels, ticks, grid, and a legend in its top-right corner.
#[derive(Clone, Debug)]
pub struct LinePlot {
    /// the title above the plot
    pub title: String,
    /// the x axis's label
    pub x_label: String,
    /// the y axis's label
    pub y_label: String,
    /// the x axis's (min, max)
    pub x_range: (f64, f64),
    /// the y axis's (min, max)
    pub y_range: (f64, f64),
    /// x tick positions and their labels; `None`: five even ticks with numbers
    pub x_ticks: Option<Vec<(f64, String)>>,
    /// write the x tick labels bottom to top (long names)
    pub x_ticks_vertical: bool,
    /// the lines, drawn in order
    pub series: Vec<Series>,
}

impl LinePlot {
    /// The picture, `width` × `height` pixels (more height is added under the axis for
    /// vertical tick labels).
    pub fn render(&self, width: u32, height: u32) -> RgbImage {
        let tick_room = match (&self.x_ticks, self.x_ticks_vertical) {
            (Some(t), true) => t.iter().map(|(_, s)| text_width(s)).max().unwrap_or(0) + 6,
            _ => GLYPH + 6,
        };
        let (left, right, top) = (64i64, 16i64, 34i64);
        let bottom = tick_room as i64 + 28;
        let (w, h) = (width.max(200) as i64, (height as i64).max(top + bottom + 100));
        let mut img = RgbImage::from_pixel(w as u32, h as u32, WHITE);
        let (pw, ph) = (w - left - right, h - top - bottom);
        let (xr, yr) = (self.x_range, self.y_range);
        let sx = |x: f64| left as f64 + (x - xr.0) / (xr.1 - xr.0).max(f64::MIN_POSITIVE) * pw as f64;
        let sy = |y: f64| (top + ph) as f64 - (y - yr.0) / (yr.1 - yr.0).max(f64::MIN_POSITIVE) * ph as f64;
        // y ticks: five even steps, with a grid line each
        for i in 0..=4 {
            let v = yr.0 + (yr.1 - yr.0) * i as f64 / 4.0;
            let y = sy(v);
            line(&mut img, (left as f64, y), ((left + pw) as f64, y), GRID, 1, None, &mut 0.0);
            let label = format!("{v:.2}");
            text(&mut img, left - 6 - text_width(&label) as i64, y as i64 - 4, &label, BLACK);
        }
        let ticks = self.x_ticks.clone().unwrap_or_else(|| (0..=4).map(|i| xr.0 + (xr.1 - xr.0) * i as f64 / 4.0).map(|v| (v, format!("{v:.2}"))).collect());
        for (v, label) in &ticks {
            let x = sx(*v);
            line(&mut img, (x, top as f64), (x, (top + ph) as f64), GRID, 1, None, &mut 0.0);
            line(&mut img, (x, (top + ph) as f64), (x, (top + ph + 4) as f64), BLACK, 1, None, &mut 0.0);
            if self.x_ticks_vertical {
                text_up(&mut img, x as i64 - 4, top + ph + 6 + text_width(label) as i64, label, BLACK);
            } else {
                text(&mut img, x as i64 - text_width(label) as i64 / 2, top + ph + 7, label, BLACK);
            }
        }
        // the frame
        for (a, b) in [((left, top), (left + pw, top)), ((left, top + ph), (left + pw, top + ph)), ((left, top), (left, top + ph)), ((left + pw, top), (left + pw, top + ph))] {
            line(&mut img, (a.0 as f64, a.1 as f64), (b.0 as f64, b.1 as f64), BLACK, 1, None, &mut 0.0);
        }
        for s in &self.series {
            let mut phase = 0.0;
            let span = yr.1 - yr.0;
            let pts: Vec<Option<(f64, f64)>> = s.points.iter().map(|&(x, y)| (x.is_finite() && y.is_finite()).then(|| (sx(x), sy(y.clamp(yr.0 - span, yr.1 + span))))).collect();
            // a non-finite point breaks the line; a point alone is a dot
            for (i, p) in pts.iter().enumerate() {
                let Some(p) = *p else { continue };
                match pts.get(i + 1).copied().flatten() {
                    Some(q) => line(&mut img, p, q, s.color, 2, s.dashed.then_some(6.0), &mut phase),
                    None if i == 0 || pts[i - 1].is_none() => fill(&mut img, p.0 as i64 - 2, p.1 as i64 - 2, p.0 as i64 + 3, p.1 as i64 + 3, s.color),
                    None => {}
                }
            }
        }
        // labels and title
        text(&mut img, (w - text_width(&self.title) as i64) / 2, 10, &self.title, BLACK);
        text(&mut img, left + (pw - text_width(&self.x_label) as i64) / 2, h - 14, &self.x_label, BLACK);
        text_up(&mut img, 6, top + (ph + text_width(&self.y_label) as i64) / 2, &self.y_label, BLACK);
        // the legend, boxed, in the top-right corner
        if !self.series.is_empty() {
            let lw = self.series.iter().map(|s| text_width(&s.label)).max().unwrap_or(0) as i64 + 36;
            let lh = self.series.len() as i64 * 14 + 6;
            let (x0, y0) = (left + pw - lw - 6, top + 6);
            fill(&mut img, x0, y0, x0 + lw, y0 + lh, WHITE);
            for (i, s) in self.series.iter().enumerate() {
                let y = y0 + 10 + i as i64 * 14;
                line(&mut img, ((x0 + 5) as f64, y as f64), ((x0 + 27) as f64, y as f64), s.color, 2, s.dashed.then_some(6.0), &mut 0.0);
                text(&mut img, x0 + 32, y - 4, &s.label, BLACK);
            }
            for (a, b) in [((x0, y0), (x0 + lw, y0)), ((x0, y0 + lh), (x0 + lw, y0 + lh)), ((x0, y0), (x0, y0 + lh)), ((x0 + lw, y0), (x0 + lw, y0 + lh))] {
                line(&mut img, (a.0 as f64, a.1 as f64), (b.0 as f64, b.1 as f64), GRID, 1, None, &mut 0.0);
            }
        }
        img
    }
}

/// Pictures side by side, each with its caption under it (cut to the tile's width), `columns`
/// to a row; every picture is scaled to `tile` × `tile` pixels.
pub fn tile_grid(tiles: &[(RgbImage, String)], tile: u32, columns: usize) -> RgbImage {
    let columns = columns.clamp(1, tiles.len().max(1));
    let rows = tiles.len().div_ceil(columns).max(1);
    let (gap, caption) = (6u32, GLYPH + 6);
    let (cw, ch) = (tile + gap, tile + caption + gap);
    let mut img = RgbImage::from_pixel(gap + columns as u32 * cw, gap + rows as u32 * ch, WHITE);
    let chars = (tile / GLYPH) as usize;
    for (i, (pic, label)) in tiles.iter().enumerate() {
        let (x, y) = (gap + (i % columns) as u32 * cw, gap + (i / columns) as u32 * ch);
        let scaled = if (pic.width(), pic.height()) == (tile, tile) { pic.clone() } else { imageops::resize(pic, tile, tile, imageops::FilterType::Triangle) };
        imageops::replace(&mut img, &scaled, x as i64, y as i64);
        let label = fit(label, chars);
        text(&mut img, x as i64 + (tile as i64 - text_width(&label) as i64) / 2, (y + tile + 3) as i64, &label, BLACK);
    }
    img
}

/// `a` and `b` side by side on white, their tops aligned.
pub fn beside(a: &RgbImage, b: &RgbImage) -> RgbImage {
    let mut img = RgbImage::from_pixel(a.width() + b.width(), a.height().max(b.height()), WHITE);
    imageops::replace(&mut img, a, 0, 0);
    imageops::replace(&mut img, b, a.width() as i64, 0);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_lines_land_where_asked() {
        let mut img = RgbImage::from_pixel(40, 20, WHITE);
        text(&mut img, 0, 0, "1", BLACK);
        // the glyph of `1` has ink in its first column band, and nothing right of 8 pixels
        assert!((0..8).any(|y| (0..8).any(|x| img.get_pixel(x, y) == &BLACK)));
        assert!((0..20).all(|y| (8..40).all(|x| img.get_pixel(x, y) == &WHITE)));
        assert_eq!(fit("layer4.1.conv2", 8), "...conv2");
        assert_eq!(fit("fc", 8), "fc");
        let p = LinePlot { title: "t".into(), x_label: "x".into(), y_label: "y".into(), x_range: (0.0, 1.0), y_range: (0.0, 1.0), x_ticks: None, x_ticks_vertical: false, series: vec![Series { label: "a".into(), color: PALETTE[0], dashed: false, points: vec![(0.0, 0.0), (1.0, 1.0)] }] };
        let img = p.render(300, 200);
        assert_eq!((img.width(), img.height()), (300, 200));
        assert!(img.pixels().any(|px| *px == PALETTE[0]));
    }
}
