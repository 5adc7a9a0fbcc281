//! The fuzz targets: one function per parser or loader, from arbitrary bytes to the library's
//! entry point, exactly as a file (or a command line) would reach it. The property every target
//! checks is the library's promise: for any bytes it returns `Ok` or one clean `Error` — no
//! panic, no abort (a huge allocation), no hang.
//!
//! This file is shared, not copied: the libFuzzer binaries (`fuzz/fuzz_targets/*.rs`, run by
//! `scripts/fuzz.sh`) and the bounded run in CI (`tests/fuzz.rs`) both include it with
//! `#[path]`. [`seeds`] makes the starting corpus (`scripts/fuzz.sh seeds` writes it to
//! `fuzz/corpus/<target>/`).

#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use deepviz::imageio::Preprocess;
use deepviz::job::{inputs::decode_items, Inputs, TargetSpec};
use deepviz::model::Model;

/// Every target: its name (the corpus folder and the libFuzzer binary) and its body, which says
/// whether the input was accepted (`Ok`).
pub const TARGETS: &[(&str, fn(&[u8]) -> bool)] = &[
    ("safetensors", safetensors),
    ("safetensors_header", safetensors_header),
    ("npy", npy),
    ("image", image),
    ("cli", cli),
    ("class_file", class_file),
    ("onnx", onnx),
];

/// The body of the target called `name`.
pub fn target(name: &str) -> Option<fn(&[u8]) -> bool> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}

/// A whole `.safetensors` file: length prefix, header JSON, data.
pub fn safetensors(data: &[u8]) -> bool {
    Model::from_bytes(data, "fuzz.safetensors", None).is_ok()
}

/// A whole ONNX model file (protobuf), imported into a graph and checked as `--model m.onnx` is.
pub fn onnx(data: &[u8]) -> bool {
    Model::from_onnx(data, "fuzz.onnx", None).is_ok()
}

/// The architecture whose real-sized data section [`safetensors_header`] puts after the header.
pub const HEADER_ARCH: &str = "squeezenet1_1";

/// The header of a `.safetensors` file (the JSON between the length prefix and the data) in
/// front of the data section of a valid [`HEADER_ARCH`] model (its placeholder weights, 4.9 MB):
/// the fuzzer edits names, dtypes, shapes, offsets and metadata of a model that otherwise loads,
/// so it reaches the checks a whole-file mutation rarely gets past (offsets that cover the
/// data, every tensor present, shapes, dtype conversion, metadata, shape inference).
pub fn safetensors_header(header: &[u8]) -> bool {
    let data = &valid_model().1;
    let mut file = Vec::with_capacity(8 + header.len() + data.len());
    file.extend_from_slice(&(header.len() as u64).to_le_bytes());
    file.extend_from_slice(header);
    file.extend_from_slice(data);
    Model::from_bytes(&file, "fuzz.safetensors", None).is_ok()
}

/// A preprocessed `.npy` input, through what the CLI's input pipeline does with it.
pub fn npy(data: &[u8]) -> bool {
    decode_items(Path::new("fuzz.npy"), data, &pre()).is_ok()
}

/// An image file, decoded and preprocessed as the CLI's input pipeline does it (odd model input
/// size, so the resize and crop are exercised).
pub fn image(data: &[u8]) -> bool {
    decode_items(Path::new("fuzz.png"), data, &pre()).is_ok()
}

/// A command line: arguments separated by NUL bytes, parsed by the binary's own parser; what
/// parses, read as the binary reads it: every value by its parser, the targets through
/// [`deepviz::job::parse_target`].
pub fn cli(data: &[u8]) -> bool {
    let args = std::iter::once("deepviz".to_string()).chain(data.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()));
    let Ok(m) = deepviz::cli::command().try_get_matches_from(args) else { return false };
    let Some((_, sub)) = m.subcommand() else { return false };
    let mut ok = true;
    for (flag, kind) in [("unit", "unit"), ("neuron", "neuron")] {
        if let Ok(Some(vs)) = sub.try_get_many::<String>(flag) {
            for v in vs {
                ok &= deepviz::job::parse_target(&format!("{kind}:{v}")).is_ok();
            }
        }
    }
    ok
}

/// A `--class-file`, checked against a fixed list of inputs.
pub fn class_file(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let inputs = Inputs { files: ["a.png", "photos/b.jpg", "c.npy", "d.png"].iter().map(PathBuf::from).collect() };
    TargetSpec::from_class_text(text, Path::new("fuzz.txt"), &inputs).is_ok()
}

fn pre() -> Preprocess {
    Preprocess::imagenet([13, 11])
}

/// The [`HEADER_ARCH`] model with placeholder weights: its header JSON and its data section.
pub fn valid_model() -> &'static (Vec<u8>, Vec<u8>) {
    static M: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    M.get_or_init(|| {
        let m = Model::placeholder(HEADER_ARCH).expect("a zoo architecture");
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({ "arch": HEADER_ARCH }));
        let mut data = vec![];
        for (spec, t) in m.graph.params.iter().zip(&m.params) {
            let start = data.len();
            data.extend(t.data.iter().flat_map(|v| v.to_le_bytes()));
            header.insert(spec.name.clone(), serde_json::json!({ "dtype": "F32", "shape": spec.shape, "data_offsets": [start, data.len()] }));
        }
        (serde_json::to_vec(&header).expect("JSON"), data)
    })
}

/// A `.safetensors` file in memory from (name, dtype, shape, bytes) and metadata.
fn st_file(tensors: &[(&str, &str, &[usize], Vec<u8>)], meta: &[(&str, &str)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !meta.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = meta.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        header.insert("__metadata__".into(), m.into());
    }
    let mut data = vec![];
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(name.to_string(), serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [start, data.len()] }));
    }
    let mut h = serde_json::to_vec(&header).expect("JSON");
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn encode(img: &::image::DynamicImage, format: ::image::ImageFormat) -> Vec<u8> {
    let mut out = vec![];
    img.write_to(&mut Cursor::new(&mut out), format).expect("encodes");
    out
}

/// The starting corpus: (target, file name, bytes), small valid inputs of every kind the
/// parsers take and a few near misses.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use ::image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
    let mut out: Vec<(&'static str, String, Vec<u8>)> = vec![];
    let mut add = |t: &'static str, name: &str, bytes: Vec<u8>| out.push((t, name.to_string(), bytes));

    // whole safetensors files: small, valid as files (the loader then names what is missing)
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    add("safetensors", "empty.safetensors", st_file(&[], &[]));
    add("safetensors", "arch_only.safetensors", st_file(&[], &[("arch", HEADER_ARCH)]));
    add("safetensors", "one_tensor.safetensors", st_file(&[("features.0.bias", "F32", &[4], f32s(&[1.0, -2.0, 0.5, 3.0]))], &[("arch", HEADER_ARCH)]));
    add(
        "safetensors",
        "dtypes.safetensors",
        st_file(
            &[
                ("a", "F16", &[2], vec![0, 60, 0, 188]),
                ("b", "BF16", &[1, 2], vec![128, 63, 0, 64]),
                ("c", "F64", &[1], 2.5f64.to_le_bytes().to_vec()),
                ("d", "I64", &[], 7i64.to_le_bytes().to_vec()),
            ],
            &[("arch", "resnet18"), ("input_size", "31,17"), ("mean", "0.5"), ("std", "0.25,0.5,1"), ("transform_input", "true")],
        ),
    );
    let (header, _) = valid_model();
    add("safetensors", "truncated_valid.safetensors", {
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header);
        f.extend_from_slice(&[0u8; 64]);
        f
    });

    // ONNX models exported by torch.onnx.export (tests/fixtures/onnx/, under 64 KiB); the
    // LayerNorm ConvNeXt is a near miss (refused for its operators)
    add("onnx", "resnext.onnx", include_bytes!("../tests/fixtures/onnx/resnext.onnx").to_vec());
    add("onnx", "convnext.onnx", include_bytes!("../tests/fixtures/onnx/convnext.onnx").to_vec());
    add("onnx", "convnext_ln.onnx", include_bytes!("../tests/fixtures/onnx/convnext_ln.onnx").to_vec());

    // headers in front of a valid model's data
    add("safetensors_header", "valid.json", header.clone());
    let text = String::from_utf8(header.clone()).expect("JSON is text");
    let with = |meta: &str| text.replacen(&format!("{{\"arch\":\"{HEADER_ARCH}\"}}"), meta, 1).into_bytes();
    add("safetensors_header", "meta.json", with(&format!("{{\"arch\":\"{HEADER_ARCH}\",\"input_size\":\"97,61\",\"mean\":\"0.5,0.5,0.5\",\"std\":\"0.5\",\"transform_input\":\"1\"}}")));
    add("safetensors_header", "f16_dtype.json", text.replacen("\"F32\"", "\"F16\"", 1).into_bytes());

    // .npy inputs
    let npy_f32 = |shape: &[usize]| {
        let n: usize = shape.iter().product();
        let t = deepviz::Tensor { shape: shape.to_vec(), data: (0..n).map(|i| (i as f32 * 0.37).sin()).collect() };
        deepviz::imageio::npy::npy_bytes(&t)
    };
    add("npy", "nchw.npy", npy_f32(&[2, 3, 4, 5]));
    add("npy", "chw.npy", npy_f32(&[3, 7, 6]));
    add("npy", "scalar.npy", npy_f32(&[]));
    let retype = |b: Vec<u8>, descr: &str, elem: usize| {
        // same header, another dtype: the data is re-encoded
        let text_end = b.iter().position(|&c| c == b'\n').expect("a header") + 1;
        let mut out = b[..text_end].to_vec();
        let at = out.windows(5).position(|w| w == b"'<f4'").expect("a descr");
        out[at + 1..at + 4].copy_from_slice(descr.as_bytes());
        let vals: Vec<f32> = b[text_end..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect();
        for v in vals {
            match elem {
                2 => out.extend(half::f16::from_f32(v).to_le_bytes()),
                8 => out.extend((v as f64).to_le_bytes()),
                _ => out.extend(v.to_le_bytes()),
            }
        }
        out
    };
    add("npy", "f8.npy", retype(npy_f32(&[1, 3, 3, 2]), "<f8", 8));
    add("npy", "f2.npy", retype(npy_f32(&[1, 3, 2, 3]), "<f2", 2));
    add("npy", "v2.npy", {
        let mut b = npy_f32(&[1, 3, 2, 2]);
        // version 2.0: a 4-byte header length
        let hlen = u16::from_le_bytes([b[8], b[9]]) as u32;
        b[6] = 2;
        let mut out = b[..8].to_vec();
        out.extend(hlen.to_le_bytes());
        out.extend_from_slice(&b.split_off(10));
        out
    });

    // images: every format the decoder takes, odd sizes
    let rgb = RgbImage::from_fn(7, 5, |x, y| Rgb([(x * 36) as u8, (y * 50) as u8, ((x + y) * 20) as u8]));
    let rgba = RgbaImage::from_fn(5, 9, |x, y| Rgba([(x * 50) as u8, (y * 28) as u8, 90, (x * y * 7) as u8]));
    let (rgb, rgba) = (DynamicImage::ImageRgb8(rgb), DynamicImage::ImageRgba8(rgba));
    add("image", "rgb.png", encode(&rgb, ImageFormat::Png));
    add("image", "rgba.png", encode(&rgba, ImageFormat::Png));
    add("image", "gray16.png", encode(&DynamicImage::ImageLuma16(rgb.to_luma16()), ImageFormat::Png));
    add("image", "rgb.jpg", encode(&rgb, ImageFormat::Jpeg));
    add("image", "rgb.bmp", encode(&rgb, ImageFormat::Bmp));
    add("image", "rgba.gif", encode(&rgba, ImageFormat::Gif));
    add("image", "rgb.tiff", encode(&rgb, ImageFormat::Tiff));
    add("image", "rgba.webp", encode(&rgba, ImageFormat::WebP));

    // command lines (arguments separated by NUL)
    for (i, line) in [
        "saliency --image a.png --class 285,967 --clip-percentile 99.5 --alpha 0.3 --raw --json",
        "gradcam --image a.png b.npy --layer layer4 --unit layer4:12 --neuron relu:0:3:4:5 --device emu --batch-size 3",
        "cam --image d --class-file c.txt --out o",
        "dream --image a.png --octaves 2 --octave-scale 1.4 --steps 3 --lr 0.02 --jitter 8 --seed 7 --layer features.3",
        "classify --image a.png --top 3 --model m.safetensors --arch resnet50",
        "layers --model m.safetensors --json",
        "trace saliency --arch resnet50 --batch-size 8 --size 97,61 --json",
        "saliency --help",
    ]
    .iter()
    .enumerate()
    {
        add("cli", &format!("line{i}"), line.replace(' ', "\0").into_bytes());
    }

    // class files
    add("class_file", "csv.txt", b"image,class\na.png,285\nphotos/b.jpg,967 # a comment\nc,1\nc,2\nd.png,3\n".to_vec());
    add("class_file", "tabs.txt", b"a\t1\nb 2\nc.npy\t3\n".to_vec());
    out
}
