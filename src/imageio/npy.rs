//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0), as described in
//! `numpy/lib/format.py`: a magic string, a version, a header length, a Python-literal dict
//! `{'descr': ..., 'fortran_order': ..., 'shape': (...), }` padded with spaces and a newline, then
//! the raw data.
//!
//! Reading accepts little-endian float32 (`<f4`), float64 (`<f8`) and float16 (`<f2`), converted
//! to f32, in C order, of any rank. Writing produces float32, C order, version 1.0 (2.0 only if
//! the header would not fit), with the header padded exactly as `numpy.save` pads it.

use std::path::Path;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

use super::atomic_write;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy aligns the start of the data to this many bytes.
const ARRAY_ALIGN: usize = 64;
/// numpy pads the header as if the first axis had this many digits, so it can grow in place.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// Largest `.npy` file [`read_npy`] reads, in bytes (checked before reading).
pub const MAX_NPY_BYTES: u64 = 1 << 30;

/// Read a `.npy` file into a tensor of the same shape (a 0-d array gives shape `[]`). Files over
/// [`MAX_NPY_BYTES`] are refused before they are read.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let len = super::regular_file_len(path)?;
    if len > MAX_NPY_BYTES {
        return Err(Error::Image { path: path.to_path_buf(), msg: format!("{len} bytes: larger than the {} MiB an .npy input may have (imageio::npy::MAX_NPY_BYTES)", MAX_NPY_BYTES >> 20) });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes, path)
}

/// [`read_npy`] for a file already in memory: `bytes` are its content, `path` names it in errors
/// (and is not opened).
pub fn parse_npy(bytes: &[u8], path: &Path) -> Result<Tensor> {
    parse(bytes).map_err(|msg| Error::Image {
        path: path.to_path_buf(),
        msg,
    })
}

/// Write `t` as a float32, C-order `.npy` file, atomically (see [`atomic_write`]).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if numel != Some(t.data.len()) {
        return Err(Error::shape(
            format!("tensor written to {}", path.display()),
            &t.shape,
            format!("{} values", t.data.len()),
        ));
    }
    atomic_write(path, &npy_bytes(t))
}

/// The bytes of a `.npy` file holding `t` (`<f4`, C order), for callers that write later.
/// `t`'s shape must match its data (as [`Tensor::new`] guarantees).
pub fn npy_bytes(t: &Tensor) -> Vec<u8> {
    let mut out = header("<f4", &t.shape);
    out.reserve(t.data.len() * 4);
    for v in &t.data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Magic, version, header length and the padded header dict, as `numpy.save` writes them, for
/// an array of `descr` (`<f4`, `<i8`, `<U12`, …). Its length does not depend on the first axis's
/// size (numpy's growth padding), so a header can be rewritten in place once that size is known.
pub(crate) fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_repr = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = dims.first() {
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(first.len())));
    }
    let hlen = dict.len() + 1; // + the final newline
    let (version, len_bytes) = if 8 + 2 + hlen + ARRAY_ALIGN <= u16::MAX as usize {
        (1u8, 2)
    } else {
        (2, 4)
    };
    let pad = ARRAY_ALIGN - (8 + len_bytes + hlen) % ARRAY_ALIGN;
    let total = (hlen + pad) as u32;
    let mut out = Vec::with_capacity(8 + len_bytes + hlen + pad);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    out.extend_from_slice(&total.to_le_bytes()[..len_bytes]);
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out
}

/// Element types we convert from.
#[derive(Clone, Copy)]
enum Dtype {
    F16,
    F32,
    F64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }
}

fn parse(bytes: &[u8]) -> std::result::Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (it does not start with the magic string \\x93NUMPY)".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("truncated .npy header")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        _ => {
            return Err(format!(
                ".npy format version {major}.{minor} is not supported (1.0, 2.0, 3.0 are)"
            ))
        }
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!(
                "truncated .npy header: it claims {hlen} bytes, the file has {}",
                bytes.len() - start
            )
        })?;
    let text =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| "the .npy header is not text")?;
    let fields = Header::parse(text)
        .map_err(|e| format!("malformed .npy header {:?}: {e}", text.trim_end()))?;

    let dtype = match fields.descr.as_str() {
        "<f2" => Dtype::F16,
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        d if d.starts_with('>') => {
            return Err(format!(
                "big-endian data ('{d}') is not supported; save it with arr.astype('<f4')"
            ))
        }
        d => {
            return Err(format!(
                "unsupported dtype '{d}': float32 ('<f4'), float64 ('<f8') or float16 ('<f2') \
                 are read; convert with arr.astype(numpy.float32)"
            ))
        }
    };
    if fields.fortran_order {
        return Err(
            "the array is stored in Fortran order; save a C-ordered array \
                    (numpy.ascontiguousarray(arr))"
                .into(),
        );
    }
    let shape = fields.shape;
    let need = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let data = &bytes[end..];
    if data.len() < need {
        return Err(format!(
            "truncated data: shape {shape:?} of '{}' needs {need} bytes, the file holds {}",
            fields.descr,
            data.len()
        ));
    }
    if data.len() > need {
        return Err(format!(
            "{} unexpected bytes after the data of shape {shape:?} ('{}')",
            data.len() - need,
            fields.descr
        ));
    }
    let values: Vec<f32> = match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect(),
    };
    Ok(Tensor {
        shape,
        data: values,
    })
}

/// The three keys numpy writes.
struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A Python literal, as far as `.npy` headers use them.
enum Lit {
    Str(String),
    Bool(bool),
    Int(usize),
    Seq(Vec<Lit>),
    Other,
}

impl Header {
    fn parse(text: &str) -> std::result::Result<Header, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let items = p.dict(0)?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("unexpected text after the dict at byte {}", p.i));
        }
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        for (k, v) in items {
            let Lit::Str(k) = k else { continue };
            match (k.as_str(), v) {
                ("descr", Lit::Str(s)) => descr = Some(s),
                ("descr", _) => return Err("structured dtypes are not supported".into()),
                ("fortran_order", Lit::Bool(b)) => fortran = Some(b),
                ("fortran_order", _) => return Err("'fortran_order' is not True or False".into()),
                ("shape", Lit::Seq(dims)) => {
                    let dims = dims
                        .into_iter()
                        .map(|d| match d {
                            Lit::Int(n) => Ok(n),
                            _ => Err("'shape' holds something other than non-negative integers"),
                        })
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    shape = Some(dims);
                }
                ("shape", _) => return Err("'shape' is not a tuple".into()),
                _ => {}
            }
        }
        Ok(Header {
            descr: descr.ok_or("no 'descr' key")?,
            fortran_order: fortran.ok_or("no 'fortran_order' key")?,
            shape: shape.ok_or("no 'shape' key")?,
        })
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

type PResult<T> = std::result::Result<T, String>;

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }
    fn expect(&mut self, c: u8) -> PResult<()> {
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            Some(x) => Err(format!(
                "expected '{}' at byte {}, found '{}'",
                c as char, self.i, x as char
            )),
            None => Err(format!(
                "expected '{}', found the end of the header",
                c as char
            )),
        }
    }
    /// `{key: value, ...}` as (key, value) pairs.
    fn dict(&mut self, depth: usize) -> PResult<Vec<(Lit, Lit)>> {
        self.expect(b'{')?;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(items);
            }
            let k = self.value(depth + 1)?;
            self.expect(b':')?;
            let v = self.value(depth + 1)?;
            items.push((k, v));
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(format!("expected ',' or '}}' at byte {}", self.i)),
            }
        }
    }
    fn value(&mut self, depth: usize) -> PResult<Lit> {
        if depth > 32 {
            return Err("nested too deeply".into());
        }
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.i += 1;
                let start = self.i;
                while self.s.get(self.i).is_some_and(|&c| c != q) {
                    self.i += 1;
                }
                if self.i >= self.s.len() {
                    return Err("unterminated string".into());
                }
                let s = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
                self.i += 1;
                Ok(Lit::Str(s))
            }
            Some(open @ (b'(' | b'[')) => {
                let close = if open == b'(' { b')' } else { b']' };
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(close) {
                        self.i += 1;
                        return Ok(Lit::Seq(items));
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(c) if c == close => {}
                        _ => {
                            return Err(format!(
                                "expected ',' or '{}' at byte {}",
                                close as char, self.i
                            ))
                        }
                    }
                }
            }
            Some(b'{') => self.dict(depth + 1).map(|_| Lit::Other),
            Some(c) if c.is_ascii_alphanumeric() || c == b'-' || c == b'+' => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b"-+_.".contains(c))
                {
                    self.i += 1;
                }
                let word = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                Ok(match word {
                    "True" => Lit::Bool(true),
                    "False" => Lit::Bool(false),
                    // Python 2 wrote longs with an `L` suffix.
                    w => match w.trim_end_matches('L').parse::<usize>() {
                        Ok(n) => Lit::Int(n),
                        Err(_) => Lit::Other,
                    },
                })
            }
            Some(c) => Err(format!("unexpected '{}' at byte {}", c as char, self.i)),
            None => Err("unexpected end of the header".into()),
        }
    }
}
