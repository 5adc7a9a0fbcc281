//! Images in and out: `.npy` files, decoding failures, preprocessing, resampling, colormaps,
//! atomic writes. Shapes are odd on purpose (7×13, batch 3) so that careless indexing shows.

use std::fs;
use std::path::{Path, PathBuf};

use deepviz::imageio::{
    atomic_write, blend, colorize, crop_box, load_rgb, normalize_map, overlay, overlay_in_box, read_npy,
    resize_crop, to_rgb, to_tensor, upsample_bilinear, write_npy, write_png, Colormap, CropBox,
    Preprocess,
};
use deepviz::{Error, Tensor};
use image::{Rgb, RgbImage};

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("imageio")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A deterministic, non-uniform test image.
fn pattern(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 37 + y * 11) as u8,
            (x * 5 + y * 53) as u8,
            (x * y + 7) as u8,
        ])
    })
}

/// Assert `a ≈ b` elementwise within `atol + rtol·|b|`, naming the worst element on failure.
fn assert_close(a: &[f32], b: &[f32], atol: f32, rtol: f32) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let worst = a
        .iter()
        .zip(b)
        .enumerate()
        .map(|(i, (&x, &y))| (i, x, y, (x - y).abs() - (atol + rtol * y.abs())))
        .fold(None, |m: Option<(usize, f32, f32, f32)>, t| match m {
            Some(m) if m.3 >= t.3 => Some(m),
            _ => Some(t),
        });
    if let Some((i, x, y, excess)) = worst {
        assert!(
            excess <= 0.0,
            "element {i}: got {x}, expected {y} (all: {a:?} vs {b:?})"
        );
    }
}

/// The `.npy` preamble numpy writes for a v1 header `dict` (padded to 64 bytes).
fn npy_v1(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.as_bytes().to_vec();
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(b' ');
    }
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend(h);
    out.extend_from_slice(data);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The error's message, checking that it names `path`.
fn err_naming(r: Result<impl std::fmt::Debug, Error>, path: &Path) -> String {
    let e = r.expect_err("expected an error");
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "message does not name the file: {msg}"
    );
    msg
}

// ---------------------------------------------------------------------------------------------
// .npy

#[test]
fn npy_round_trip_keeps_shape_and_bits() {
    let dir = scratch("npy_round_trip");
    let shapes: [&[usize]; 5] = [&[3, 7, 13], &[5], &[], &[2, 0, 4], &[3, 33, 1, 2]];
    for shape in shapes {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|i| (i as f32 * 0.37 - 5.0).sin() * 1e3)
            .collect();
        let t = Tensor::new(shape.to_vec(), data).unwrap();
        let p = dir.join("t.npy");
        write_npy(&p, &t).unwrap();
        let back = read_npy(&p).unwrap();
        assert_eq!(back, t, "shape {shape:?}");
    }
    // Special values survive bit for bit.
    let t = Tensor::new(
        vec![4],
        vec![f32::INFINITY, -0.0, f32::MIN_POSITIVE, f32::MAX],
    )
    .unwrap();
    write_npy(&dir.join("s.npy"), &t).unwrap();
    assert_eq!(read_npy(&dir.join("s.npy")).unwrap(), t);
    assert_eq!(
        entries(&dir),
        ["s.npy", "t.npy"],
        "temporary files left behind"
    );
}

#[test]
fn npy_header_is_numpys() {
    let dir = scratch("npy_header");
    let p = dir.join("h.npy");
    write_npy(&p, &Tensor::zeros(&[2, 3])).unwrap();
    let bytes = fs::read(&p).unwrap();
    // What numpy 2.x writes for np.save(f, np.zeros((2, 3), np.float32)).
    let mut want = b"\x93NUMPY\x01\x00\x76\x00".to_vec();
    want.extend_from_slice(b"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
    want.resize(127, b' ');
    want.push(b'\n');
    assert_eq!(&bytes[..128], &want[..]);
    assert_eq!(bytes.len(), 128 + 6 * 4);
    // One-dimensional shapes are written as Python one-tuples.
    write_npy(&p, &Tensor::zeros(&[5])).unwrap();
    let bytes = fs::read(&p).unwrap();
    assert!(String::from_utf8_lossy(&bytes[10..128]).contains("'shape': (5,), }"));
    assert_eq!(bytes[127], b'\n');
}

#[test]
fn npy_reads_hand_made_files() {
    let dir = scratch("npy_hand_made");
    let p = dir.join("a.npy");
    // v1, float32, written by hand (double quotes and odd spacing are valid Python too).
    let vals = [1.5f32, -2.0, 3.25, 0.0, 7.0, -0.5];
    fs::write(
        &p,
        npy_v1(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &f32_bytes(&vals),
        ),
    )
    .unwrap();
    let t = read_npy(&p).unwrap();
    assert_eq!(t.shape, [2, 3]);
    assert_eq!(t.data, vals);
    fs::write(
        &p,
        npy_v1(
            "{\"shape\":(3,2),\"fortran_order\":False,\"descr\":\"<f4\"}",
            &f32_bytes(&vals),
        ),
    )
    .unwrap();
    assert_eq!(read_npy(&p).unwrap().shape, [3, 2]);
    // Python 2 longs.
    fs::write(
        &p,
        npy_v1(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (6L,), }",
            &f32_bytes(&vals),
        ),
    )
    .unwrap();
    assert_eq!(read_npy(&p).unwrap().shape, [6]);

    // float64 and float16 are converted.
    let f8: Vec<u8> = [0.1f64, -3.0, 1e10]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    fs::write(
        &p,
        npy_v1(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }",
            &f8,
        ),
    )
    .unwrap();
    assert_eq!(read_npy(&p).unwrap().data, [0.1f32, -3.0, 1e10]);
    let f2: Vec<u8> = [0x3C00u16, 0xC000, 0x3555]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    fs::write(
        &p,
        npy_v1(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (1, 3), }",
            &f2,
        ),
    )
    .unwrap();
    let t = read_npy(&p).unwrap();
    assert_eq!(t.shape, [1, 3]);
    assert_close(&t.data, &[1.0, -2.0, 0.33325195], 0.0, 1e-7);

    // Version 2.0: a four-byte header length.
    let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
    let mut h = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }".to_vec();
    h.resize(128 - 12 - 1, b' ');
    h.push(b'\n');
    v2.extend_from_slice(&(h.len() as u32).to_le_bytes());
    v2.extend(h);
    v2.extend(f32_bytes(&[4.0, 5.0]));
    fs::write(&p, &v2).unwrap();
    assert_eq!(read_npy(&p).unwrap().data, [4.0, 5.0]);
}

#[test]
fn npy_bad_files_are_errors_naming_the_file() {
    let dir = scratch("npy_bad");
    let data = f32_bytes(&[1.0; 6]);
    let good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "magic.npy",
            [b"\x93NUMPX\x01\x00".as_slice(), &npy_v1(good, &data)[8..]].concat(),
            "magic",
        ),
        ("text.npy", b"just some text, not numpy\n".to_vec(), "magic"),
        ("empty.npy", Vec::new(), "magic"),
        (
            "fortran.npy",
            npy_v1(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                &data,
            ),
            "Fortran",
        ),
        ("truncated.npy", npy_v1(good, &data[..17]), "truncated data"),
        (
            "long.npy",
            npy_v1(good, &[data.as_slice(), &[0u8; 3]].concat()),
            "unexpected bytes",
        ),
        (
            "int64.npy",
            npy_v1(
                "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
                &[0u8; 24],
            ),
            "'<i8'",
        ),
        (
            "bigendian.npy",
            npy_v1(
                "{'descr': '>f4', 'fortran_order': False, 'shape': (6,), }",
                &data,
            ),
            "big-endian",
        ),
        (
            "struct.npy",
            npy_v1(
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (6,), }",
                &data,
            ),
            "structured",
        ),
        (
            "noshape.npy",
            npy_v1("{'descr': '<f4', 'fortran_order': False, }", &data),
            "'shape'",
        ),
        (
            "unclosed.npy",
            npy_v1(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3",
                &data,
            ),
            "malformed",
        ),
        (
            "badshape.npy",
            npy_v1(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }",
                &data,
            ),
            "malformed",
        ),
        (
            "huge.npy",
            npy_v1(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }",
                &data,
            ),
            "too large",
        ),
        (
            "version.npy",
            [b"\x93NUMPY\x09\x00".as_slice(), &npy_v1(good, &data)[8..]].concat(),
            "version",
        ),
    ];
    // A header length that runs past the end of the file.
    let mut short = npy_v1(good, &[]);
    short[8] = 0xff;
    short[9] = 0x7f;
    cases.push(("header_len.npy", short, "truncated .npy header"));
    // Deeply nested brackets must not overflow the stack.
    let nested = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': {}",
        "(".repeat(5000)
    );
    cases.push(("nested.npy", npy_v1(&nested, &data), "malformed"));

    for (name, bytes, needle) in cases {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        let msg = err_naming(read_npy(&p), &p);
        assert!(
            msg.contains(needle),
            "{name}: message {msg:?} lacks {needle:?}"
        );
    }
    let missing = dir.join("missing.npy");
    err_naming(read_npy(&missing), &missing);
}

#[test]
fn write_npy_rejects_inconsistent_tensor() {
    let dir = scratch("npy_inconsistent");
    let t = Tensor {
        shape: vec![2, 3],
        data: vec![0.0; 5],
    };
    assert!(write_npy(&dir.join("x.npy"), &t).is_err());
    assert!(entries(&dir).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Decoding

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn load_rgb_reads_what_write_png_wrote() {
    let dir = scratch("png_round_trip");
    let img = pattern(13, 7);
    let p = dir.join("a.png");
    write_png(&p, &img).unwrap();
    assert_eq!(load_rgb(&p).unwrap(), img);
    // The format comes from the content, not the extension.
    let q = dir.join("really_a_png.jpg");
    fs::copy(&p, &q).unwrap();
    assert_eq!(load_rgb(&q).unwrap(), img);
    assert_eq!(entries(&dir), ["a.png", "really_a_png.jpg"]);
}

#[test]
fn load_rgb_bad_files_are_errors_naming_the_file() {
    let dir = scratch("png_bad");
    let good = dir.join("good.png");
    write_png(&good, &pattern(40, 30)).unwrap();
    let bytes = fs::read(&good).unwrap();

    let truncated = dir.join("truncated.png");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    err_naming(load_rgb(&truncated), &truncated);

    let header_only = dir.join("header_only.png");
    fs::write(&header_only, &bytes[..20]).unwrap();
    err_naming(load_rgb(&header_only), &header_only);

    let corrupt = dir.join("corrupt.png");
    let mut c = bytes.clone();
    let idat = c.windows(4).position(|w| w == b"IDAT").unwrap();
    for b in &mut c[idat + 8..idat + 24] {
        *b ^= 0x5a;
    }
    fs::write(&corrupt, &c).unwrap();
    err_naming(load_rgb(&corrupt), &corrupt);

    let text = dir.join("notes.png");
    fs::write(&text, "this is a text file, not an image\n").unwrap();
    err_naming(load_rgb(&text), &text);

    let unknown = dir.join("notes.xyz");
    fs::write(&unknown, "plain text").unwrap();
    let msg = err_naming(load_rgb(&unknown), &unknown);
    assert!(msg.contains("not a recognised image"), "{msg}");

    let empty = dir.join("empty.png");
    fs::write(&empty, b"").unwrap();
    err_naming(load_rgb(&empty), &empty);

    let missing = dir.join("missing.png");
    let e = load_rgb(&missing).unwrap_err();
    assert!(matches!(e, Error::Image { .. }), "{e:?}");
    err_naming(Err::<(), _>(e), &missing);

    err_naming(load_rgb(&dir), &dir);
}

#[test]
fn load_rgb_refuses_decompression_bombs() {
    let dir = scratch("png_bomb");
    let mut png = Vec::new();
    pattern(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    // Claim 100000 × 100000 pixels in IHDR (bytes 16..24) and fix its CRC.
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    let p = dir.join("bomb.png");
    fs::write(&p, &png).unwrap();
    let msg = err_naming(load_rgb(&p), &p);
    assert!(msg.contains("refused"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// Preprocessing

/// The crop box says where resize_crop cut: on a linear ramp (R = x, G = y), which the triangle
/// filter keeps linear away from the edges, each picture pixel holds the original coordinate of
/// its centre as mapped through the box.
#[test]
fn crop_box_is_where_resize_crop_cut() {
    let ramp = |w: u32, h: u32| RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 0]));
    for (w, h, size) in [(240u32, 180u32, [64usize, 64usize]), (150, 250, [56, 40]), (200, 120, [120, 200]), (97, 61, [40, 40])] {
        let (img, b) = (ramp(w, h), crop_box(w, h, size));
        assert_eq!(b.image_size, [w, h]);
        assert!(b.x >= 0.0 && b.y >= 0.0 && b.x + b.width <= w as f64 + 1e-9 && b.y + b.height <= h as f64 + 1e-9, "{b:?}");
        let pic = resize_crop(&img, size);
        let (th, tw) = (size[0] as u32, size[1] as u32);
        for c in 2..tw - 2 {
            let want = b.x + (c as f64 + 0.5) * b.width / tw as f64 - 0.5;
            let got = pic.get_pixel(c, th / 2).0[0] as f64;
            assert!((got - want).abs() <= 1.0, "{w}x{h} -> {size:?}: column {c} holds x = {got}, the box says {want:.2} ({b:?})");
        }
        for r in 2..th - 2 {
            let want = b.y + (r as f64 + 0.5) * b.height / th as f64 - 0.5;
            let got = pic.get_pixel(tw / 2, r).0[1] as f64;
            assert!((got - want).abs() <= 1.0, "{w}x{h} -> {size:?}: row {r} holds y = {got}, the box says {want:.2} ({b:?})");
        }
    }
    // already at size: the whole image
    assert_eq!(crop_box(13, 7, [7, 13]), CropBox { x: 0.0, y: 0.0, width: 13.0, height: 7.0, image_size: [13, 7] });
}

/// On the whole image at the map's size, the full-size overlay is the plain overlay; over a
/// window, the pixels outside it are the original halved and the inside is blended.
#[test]
fn overlay_in_box_matches_overlay_and_darkens_outside() {
    let base = pattern(13, 7);
    let map: Vec<f32> = (0..13 * 7).map(|i| (i % 11) as f32 / 10.0).collect();
    let whole = CropBox { x: 0.0, y: 0.0, width: 13.0, height: 7.0, image_size: [13, 7] };
    assert_eq!(overlay_in_box(&base, &map, 7, 13, &whole, Colormap::Turbo, 0.6), overlay(&base, &map, Colormap::Turbo, 0.6));
    let window = CropBox { x: 3.0, y: 2.0, width: 6.0, height: 4.0, image_size: [13, 7] };
    let full = overlay_in_box(&base, &map, 7, 13, &window, Colormap::Turbo, 1.0);
    // alpha 1: inside, the colours of the map resampled to the window's 6x4 pixels
    let heat = colorize(&upsample_bilinear(&map, 7, 13, 4, 6), 4, 6, Colormap::Turbo);
    for (x, y, px) in full.enumerate_pixels() {
        let inside = (3..9).contains(&x) && (2..6).contains(&y);
        let halved = base.get_pixel(x, y).0.map(|v| v / 2);
        if inside {
            let want = heat.get_pixel(x - 3, y - 2).0;
            assert!((0..3).all(|k| want[k].abs_diff(px.0[k]) <= 1), "({x}, {y}): {:?}, want {want:?}", px.0);
        } else {
            assert_eq!(px.0, halved, "({x}, {y}) outside the window");
        }
    }
}

#[test]
fn resize_crop_leaves_exact_size_untouched() {
    let img = pattern(13, 7);
    assert_eq!(resize_crop(&img, [7, 13]), img);
}

#[test]
fn resize_crop_sizes_and_offsets() {
    // Landscape and portrait to a square target; both to a non-square target.
    for (w, h) in [(40, 25), (25, 40), (300, 7), (7, 300), (5, 3)] {
        for size in [[16, 16], [7, 13], [13, 7], [224, 224]] {
            let out = resize_crop(&pattern(w, h), size);
            assert_eq!(
                (out.height() as usize, out.width() as usize),
                (size[0], size[1]),
                "{w}x{h} -> {size:?}"
            );
        }
    }
    // Shorter side already at the target: no resampling, only the centre crop (round half even:
    // 13 - 7 = 6 → offset 3; 14 - 7 = 7 → offset round(3.5) = 4).
    let img = pattern(13, 7);
    assert_eq!(
        resize_crop(&img, [7, 7]),
        image::imageops::crop_imm(&img, 3, 0, 7, 7).to_image()
    );
    let img = pattern(14, 7);
    assert_eq!(
        resize_crop(&img, [7, 7]),
        image::imageops::crop_imm(&img, 4, 0, 7, 7).to_image()
    );
    let img = pattern(7, 16);
    assert_eq!(
        resize_crop(&img, [7, 7]),
        image::imageops::crop_imm(&img, 0, 4, 7, 7).to_image()
    );
    // A flat image stays flat after resampling.
    let flat = RgbImage::from_pixel(37, 23, Rgb([10, 200, 99]));
    assert!(resize_crop(&flat, [11, 11])
        .pixels()
        .all(|p| *p == Rgb([10, 200, 99])));
    // An empty image gives black, not a panic.
    let out = resize_crop(&RgbImage::new(0, 0), [3, 5]);
    assert_eq!(out.dimensions(), (5, 3));
}

/// Pseudo-random pixels (a pattern with structure at every scale).
fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503) ^ seed).wrapping_mul(2246822519);
        Rgb([(v >> 24) as u8, (v >> 16) as u8, (v >> 8) as u8])
    })
}

#[test]
fn resize_crop_resamples_only_the_crop_and_matches_the_full_resize_bit_for_bit() {
    // the crop of image's whole Triangle resize, against resize_crop (which resamples the
    // window alone): identical bytes, up and down, square and not
    for (w, h, size) in [(40, 25, [16, 16]), (25, 40, [7, 13]), (300, 7, [13, 7]), (7, 300, [224, 224]), (5, 3, [16, 9]), (640, 480, [224, 224]), (97, 61, [33, 50])] {
        let img = noise(w, h, w * 7 + h);
        let (th, tw) = (size[0] as u64, size[1] as u64);
        let (nh, nw) = if th * w as u64 >= tw * h as u64 { (th, (w as u64 * th / h as u64).max(tw)) } else { ((h as u64 * tw / w as u64).max(th), tw) };
        let full = image::imageops::resize(&img, nw as u32, nh as u32, image::imageops::FilterType::Triangle);
        let half_even = |d: u64| if d % 2 == 1 && (d / 2) % 2 == 1 { d / 2 + 1 } else { d / 2 };
        let want = image::imageops::crop_imm(&full, half_even(nw - tw) as u32, half_even(nh - th) as u32, tw as u32, th as u32).to_image();
        assert_eq!(resize_crop(&img, size), want, "{w}x{h} -> {size:?}");
    }
    // a 16384x1 strip: 224 x 3.7M pixels if resized whole; the window is 224 x 224
    let strip = noise(16384, 1, 5);
    let t = std::time::Instant::now();
    let out = resize_crop(&strip, [224, 224]);
    assert_eq!(out.dimensions(), (224, 224));
    assert!(t.elapsed().as_secs_f64() < 5.0, "the strip took {:?}", t.elapsed());
}

#[test]
fn to_tensor_and_back() {
    let p = Preprocess::imagenet([7, 13]);
    let imgs: Vec<RgbImage> = (0..3)
        .map(|k| {
            RgbImage::from_fn(13, 7, |x, y| {
                Rgb([
                    (x * 19 + y * 3 + k * 50) as u8,
                    (255 - x * 7 - y * 11) as u8,
                    (k * 80 + x * y) as u8,
                ])
            })
        })
        .collect();
    let t = to_tensor(&imgs, &p);
    assert_eq!(t.shape, [3, 3, 7, 13]);
    // Spot check the formula: image 2, channel 1 (green), y = 4, x = 9.
    let v = t.data[((2 * 3 + 1) * 7 + 4) * 13 + 9];
    let px = imgs[2].get_pixel(9, 4).0[1] as f32;
    assert!((v - (px / 255.0 - 0.456) / 0.224).abs() < 1e-6);
    for (i, img) in imgs.iter().enumerate() {
        let back = to_rgb(t.item(i), 7, 13, &p);
        for (a, b) in back.pixels().zip(img.pixels()) {
            for c in 0..3 {
                assert!(
                    (a.0[c] as i32 - b.0[c] as i32).abs() <= 1,
                    "image {i}: {a:?} vs {b:?}"
                );
            }
        }
    }
    // Out-of-range and NaN values clamp.
    let x = [f32::NAN, 100.0, -100.0];
    assert_eq!(to_rgb(&x, 1, 1, &p).get_pixel(0, 0).0, [0, 255, 0]);
    // An image at the wrong size is fitted first; an empty batch is a [0, 3, h, w] tensor.
    assert_eq!(to_tensor(&[pattern(30, 20)], &p).shape, [1, 3, 7, 13]);
    assert_eq!(to_tensor(&[], &p).shape, [0, 3, 7, 13]);
}

// ---------------------------------------------------------------------------------------------
// Maps

#[test]
fn upsample_bilinear_matches_pytorch() {
    // F.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4), mode="bilinear",
    // align_corners=False)
    let out = upsample_bilinear(&[1.0, 2.0, 3.0, 4.0], 2, 2, 4, 4);
    #[rustfmt::skip]
    let want = [
        1.0, 1.25, 1.75, 2.0,
        1.5, 1.75, 2.25, 2.5,
        2.5, 2.75, 3.25, 3.5,
        3.0, 3.25, 3.75, 4.0,
    ];
    assert_close(&out, &want, 1e-6, 0.0);

    // 1×3 -> 1×5 (non-integer scale 0.6): source x = 0.6 d - 0.2, clamped at 0:
    // 0, 0.4, 1.0, 1.6, 2.2 (the last clamps to the last element).
    let out = upsample_bilinear(&[0.0, 10.0, 30.0], 1, 3, 1, 5);
    assert_close(&out, &[0.0, 4.0, 10.0, 22.0, 30.0], 1e-5, 0.0);

    // Downsampling without antialiasing, 4 -> 2: source 0.5 and 2.5.
    let out = upsample_bilinear(&[1.0, 2.0, 4.0, 8.0], 1, 4, 1, 2);
    assert_close(&out, &[1.5, 6.0], 1e-6, 0.0);

    // 3×2 -> 7×5, checked against the separable formula computed on paper for one element:
    // out[3][2]: y = (3.5)·3/7 - 0.5 = 1.0 → row 1; x = 2.5·2/5 - 0.5 = 0.5 → mean of the row.
    let map = [1.0, 3.0, 5.0, 11.0, -2.0, 0.0];
    let out = upsample_bilinear(&map, 3, 2, 7, 5);
    assert_eq!(out.len(), 35);
    assert!((out[3 * 5 + 2] - 8.0).abs() < 1e-5, "{}", out[3 * 5 + 2]);

    // Same size is the identity; degenerate sizes give zeros, not panics.
    assert_eq!(upsample_bilinear(&map, 3, 2, 3, 2), map);
    assert_eq!(upsample_bilinear(&[], 0, 0, 2, 2), [0.0; 4]);
    assert_eq!(upsample_bilinear(&[1.0], 2, 2, 2, 2), [1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn normalize_map_handles_edge_cases() {
    assert_eq!(normalize_map(&[2.0, 4.0, 3.0]), [0.0, 1.0, 0.5]);
    assert_eq!(normalize_map(&[5.0; 4]), [0.0; 4]);
    assert_eq!(normalize_map(&[]), Vec::<f32>::new());
    assert_eq!(normalize_map(&[f32::NAN, 1.0, 3.0]), [0.0, 0.0, 1.0]);
    assert_eq!(normalize_map(&[f32::NAN, f32::NAN]), [0.0, 0.0]);
    assert_eq!(
        normalize_map(&[f32::NEG_INFINITY, 1.0, 2.0, f32::INFINITY]),
        [0.0, 0.0, 1.0, 1.0]
    );
    let v = normalize_map(&[-f32::MAX, f32::MAX]);
    assert_eq!(v, [0.0, 1.0]);
}

#[test]
fn colormaps_have_their_published_ends() {
    let map = [0.0, 0.5, 1.0, f32::NAN, 2.0];
    let gray = colorize(&map, 1, 5, Colormap::Gray);
    let g: Vec<u8> = gray.pixels().map(|p| p.0[0]).collect();
    assert_eq!(g, [0, 128, 255, 0, 255]);

    // Inferno: matplotlib's table is (0.001462, 0.000466, 0.013866) at 0, (0.735683, 0.215906,
    // 0.330245) at 0.5 (entry 128) and (0.988362, 0.998364, 0.644924) at 1.
    let inf = colorize(&[0.0, 128.0 / 255.0, 1.0], 1, 3, Colormap::Inferno);
    let want = [
        [0.001462, 0.000466, 0.013866],
        [0.735683, 0.215906, 0.330245],
        [0.988362, 0.998364, 0.644924],
    ];
    for (p, w) in inf.pixels().zip(want) {
        for c in 0..3 {
            assert!(
                (p.0[c] as f32 - w[c] * 255.0).abs() <= 2.0,
                "{p:?} vs {w:?}"
            );
        }
    }
    // Turbo (the polynomial): dark at 0, blue at 0.1, bright green in the middle, dark red at 1.
    let t = colorize(&[0.0, 0.1, 0.5, 1.0], 1, 4, Colormap::Turbo);
    let [zero, lo, mid, hi] = [0, 1, 2, 3].map(|x| t.get_pixel(x, 0).0);
    assert_eq!(zero, [35, 23, 27]);
    assert!(lo[2] > 200 && lo[2] > lo[0] && lo[2] > lo[1], "{lo:?}");
    assert!(
        mid[1] > 240 && mid[1] > mid[0] && mid[1] > mid[2],
        "{mid:?}"
    );
    assert!(hi[0] > 100 && hi[1] < 30 && hi[2] < 30, "{hi:?}");
    // Colours change monotonically enough to be readable: no two neighbours are identical
    // over a fine ramp (except where 8-bit rounding forbids it).
    let ramp: Vec<f32> = (0..64).map(|i| i as f32 / 63.0).collect();
    for cmap in [Colormap::Turbo, Colormap::Inferno] {
        let img = colorize(&ramp, 1, 64, cmap);
        let distinct = img
            .pixels()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] != w[1])
            .count();
        assert_eq!(distinct, 63, "{cmap:?}");
    }
}

#[test]
fn overlay_blends() {
    let base = RgbImage::from_pixel(5, 3, Rgb([100, 50, 200]));
    let map = vec![1.0; 15];
    assert_eq!(overlay(&base, &map, Colormap::Gray, 0.0), base);
    assert!(overlay(&base, &map, Colormap::Gray, 1.0)
        .pixels()
        .all(|p| p.0 == [255, 255, 255]));
    let half = overlay(&base, &map, Colormap::Gray, 0.5);
    assert_eq!(half.get_pixel(4, 2).0, [178, 153, 228]);
    assert_eq!(overlay(&base, &map, Colormap::Gray, f32::NAN), base);
    // A short map leaves the rest of the image as it was.
    let short = overlay(&base, &[1.0; 2], Colormap::Gray, 1.0);
    assert_eq!(short.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(short.get_pixel(4, 2).0, [100, 50, 200]);
}

/// Every (picture level, colour level) pair at several opacities, including 0.5 where half of
/// the sums fall exactly on a half: `blend` rounds each as `f32::round` does (half away from
/// zero), and `overlay` is `blend` of `colorize`.
#[test]
fn blend_rounds_as_f32_round_and_overlay_is_blend_of_colorize() {
    let base = RgbImage::from_fn(256, 256, |x, y| Rgb([x as u8, y as u8, (x ^ y) as u8]));
    let heat = RgbImage::from_fn(256, 256, |x, y| Rgb([y as u8, x as u8, (x + y) as u8]));
    for a in [0.5, 0.25, 0.3, 0.7, 1.0 / 3.0, 0.999, 1e-3] {
        let got = blend(&base, &heat, a);
        for ((g, &p), &c) in got.as_raw().iter().zip(base.as_raw()).zip(heat.as_raw()) {
            let want = ((1.0 - a) * p as f32 + a * c as f32).round() as u8;
            assert_eq!(*g, want, "alpha {a}: picture {p}, colour {c}");
        }
    }
    let map: Vec<f32> = (0..91).map(|i| ((i * 37) % 91) as f32 / 90.0).collect();
    let small = RgbImage::from_fn(13, 7, |x, y| Rgb([(x * 19) as u8, (y * 31) as u8, 77]));
    for cmap in Colormap::ALL {
        let heat = colorize(&map, 7, 13, cmap);
        assert_eq!(overlay(&small, &map, cmap, 0.45), blend(&small, &heat, 0.45), "{cmap:?}");
    }
}

/// Levels round half away from zero: around each (k + 0.5) / 255, a sweep of neighbouring f32
/// values gives the level `(v * 255).round()` gives.
#[test]
fn gray_levels_round_as_f32_round() {
    let mut vs = vec![];
    for k in 0..255 {
        let mid = (k as f32 + 0.5) / 255.0;
        for d in -40i32..=40 {
            vs.push(f32::from_bits((mid.to_bits() as i32 + d) as u32));
        }
    }
    let img = colorize(&vs, 1, vs.len(), Colormap::Gray);
    for (p, &v) in img.pixels().zip(&vs) {
        assert_eq!(p.0[0], (v * 255.0).round() as u8, "{v:e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Output

#[test]
fn atomic_write_leaves_no_temporary_file() {
    let dir = scratch("atomic");
    let p = dir.join("out.bin");
    atomic_write(&p, b"first").unwrap();
    atomic_write(&p, b"second, longer").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"second, longer");
    assert_eq!(entries(&dir), ["out.bin"]);

    // A failure (the target is a non-empty directory) keeps nothing half-written.
    let blocker = dir.join("blocker");
    fs::create_dir(&blocker).unwrap();
    fs::write(blocker.join("inside"), b"x").unwrap();
    let msg = err_naming(atomic_write(&blocker, b"data"), &blocker);
    assert!(!msg.is_empty());
    assert_eq!(entries(&dir), ["blocker", "out.bin"]);
    // Into a directory that does not exist.
    let nowhere = dir.join("no/such/dir/out.png");
    err_naming(write_png(&nowhere, &pattern(3, 2)), &nowhere);
    assert_eq!(entries(&dir), ["blocker", "out.bin"]);
    // A path that names no file.
    assert!(atomic_write(Path::new("/"), b"x").is_err());

    // Concurrent writers to the same path: each rename is whole, the result is one of them.
    std::thread::scope(|s| {
        for k in 0..4u8 {
            let p = &p;
            s.spawn(move || atomic_write(p, &[k; 4096]).unwrap());
        }
    });
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), 4096);
    assert!(got.iter().all(|&b| b == got[0]));
    assert_eq!(entries(&dir), ["blocker", "out.bin"]);
}

/// The entries of a zip archive as its central directory lists them (stored, zip64-aware), each
/// checked against its CRC-32 and its local header's name: (name, data).
fn unzip(b: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap()) as usize;
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap()) as u64;
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let end = b.len() - 22;
    assert_eq!(u32_at(end), 0x0605_4b50, "end of central directory");
    let (mut n, mut cd) = (u16_at(end + 10) as u64, u32_at(end + 16));
    if cd == u32::MAX as u64 {
        let loc = end - 20;
        assert_eq!(u32_at(loc), 0x0706_4b50, "zip64 locator");
        let z = u64_at(loc + 8) as usize;
        assert_eq!(u32_at(z), 0x0606_4b50, "zip64 end record");
        (n, cd) = (u64_at(z + 32), u64_at(z + 48));
    }
    let mut at = cd as usize;
    (0..n)
        .map(|_| {
            assert_eq!(u32_at(at), 0x0201_4b50, "central header");
            let (crc, mut size, name_len, extra_len, mut offset) = (u32_at(at + 16) as u32, u32_at(at + 24), u16_at(at + 28), u16_at(at + 30), u32_at(at + 42));
            let name = String::from_utf8(b[at + 46..at + 46 + name_len].to_vec()).unwrap();
            if size == u32::MAX as u64 {
                let x = at + 46 + name_len;
                assert_eq!((u16_at(x), u16_at(x + 2)), (1, 24), "zip64 extra of {name}");
                (size, offset) = (u64_at(x + 4), u64_at(x + 20));
            }
            at += 46 + name_len + extra_len + u16_at(at + 32);
            let l = offset as usize;
            assert_eq!(u32_at(l), 0x0403_4b50, "local header of {name}");
            assert_eq!(&b[l + 30..l + 30 + u16_at(l + 26)], name.as_bytes());
            let start = l + 30 + u16_at(l + 26) + u16_at(l + 28);
            let data = b[start..start + size as usize].to_vec();
            assert_eq!(crc32fast::hash(&data), crc, "CRC-32 of {name}");
            (name, data)
        })
        .collect()
}

/// A streamed `.npz`: the stacked array and the small ones come back as written, through the
/// zip64 records, with their CRCs; items of another shape are refused.
#[test]
fn npz_stack_streams_a_readable_archive() {
    use deepviz::imageio::npz::{unicode_npy, NpzStack};
    let dir = std::env::temp_dir().join(format!("deepviz-npz-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("maps.npz");
    let mut st = NpzStack::new(&path, fs::File::create(&path).unwrap(), "maps").unwrap();
    let items: Vec<Vec<f32>> = (0..3).map(|i| (0..6).map(|j| (i * 10 + j) as f32 - 7.5).collect()).collect();
    for it in &items {
        st.push(&[2, 3], it).unwrap();
    }
    let err = st.push(&[3, 2], &items[0]).unwrap_err().to_string();
    assert!(err.contains("one shape"), "{err}");
    assert_eq!(st.len(), 3);
    let names: Vec<String> = ["a", "bé", "cat_c285"].map(String::from).to_vec();
    st.finish(&[("stems", unicode_npy(&names))]).unwrap();
    let entries = unzip(&fs::read(&path).unwrap());
    assert_eq!(entries.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["maps.npy", "stems.npy"]);
    let maps = deepviz::imageio::npy::parse_npy(&entries[0].1, &path).unwrap();
    assert_eq!((maps.shape.clone(), maps.data), (vec![3, 2, 3], items.concat()));
    // numpy's fixed-width unicode: UTF-32LE, zero-padded to the longest
    let s = &entries[1].1;
    let header = String::from_utf8_lossy(&s[..s.len() - 3 * 8 * 4]);
    assert!(header.contains("'descr': '<U8'") && header.contains("'shape': (3,)"), "{header}");
    let body: Vec<u32> = s[s.len() - 96..].chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(&body[8..11], &['b' as u32, 'é' as u32, 0]);
    let _ = fs::remove_dir_all(&dir);
}
