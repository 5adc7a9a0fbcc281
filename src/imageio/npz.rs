//! NumPy `.npz` archives written as results arrive: a zip file of stored (uncompressed) `.npy`
//! entries, readable by `numpy.load`. [`NpzStack`] streams one array of equally shaped float32
//! items (`maps`: `[N, h, w]`) to disk item by item, so memory stays bounded over a folder of any
//! size, and adds small arrays (per-item names and labels as fixed-width unicode) at the end.
//!
//! The stacked entry is written first with a placeholder `.npy` header and zip sizes; [`finish`]
//! rewrites the header in place (numpy pads it so its length does not depend on N), patches the
//! zip local header (its CRC-32 is the header's combined with the data's, computed as the data
//! streamed), then writes the small entries and the central directory. The stacked entry always
//! uses the zip64 extensions (PKWARE APPNOTE 4.5.3), so it may pass 4 GiB; Python's `zipfile`
//! reads them whatever the size.
//!
//! [`finish`]: NpzStack::finish

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const LOCAL: u32 = 0x0403_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;
/// "version needed to extract": 4.5, the zip64 extensions
const VERSION: u16 = 45;
/// 1980-01-01, the earliest MS-DOS date (no clock in the output: the same run, the same bytes)
const DOS_DATE: u16 = 0x21;

/// One entry of the central directory.
struct Entry {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
    zip64: bool,
}

/// A `.npz` being written: one stacked float32 array, then small arrays (see the module docs).
pub struct NpzStack {
    path: PathBuf,
    file: BufWriter<File>,
    key: String,
    item_shape: Option<Vec<usize>>,
    items: usize,
    data_crc: crc32fast::Hasher,
    data_bytes: u64,
    /// where the stacked entry's `.npy` header starts
    header_at: u64,
    header_len: usize,
    entries: Vec<Entry>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// A local file header; stored, no data descriptor; zip64 sizes in its extra field when asked.
fn local_header(name: &str, crc: u32, size: u64, zip64: bool) -> Vec<u8> {
    let mut h = Vec::with_capacity(30 + name.len() + 20);
    h.extend_from_slice(&LOCAL.to_le_bytes());
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // flags
    h.extend_from_slice(&0u16.to_le_bytes()); // method: stored
    h.extend_from_slice(&0u16.to_le_bytes()); // time
    h.extend_from_slice(&DOS_DATE.to_le_bytes());
    h.extend_from_slice(&crc.to_le_bytes());
    let small = if zip64 { u32::MAX } else { size as u32 };
    h.extend_from_slice(&small.to_le_bytes()); // compressed size
    h.extend_from_slice(&small.to_le_bytes()); // uncompressed size
    h.extend_from_slice(&(name.len() as u16).to_le_bytes());
    h.extend_from_slice(&(if zip64 { 20u16 } else { 0 }).to_le_bytes());
    h.extend_from_slice(name.as_bytes());
    if zip64 {
        h.extend_from_slice(&1u16.to_le_bytes()); // the zip64 extra field
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(&size.to_le_bytes()); // uncompressed
        h.extend_from_slice(&size.to_le_bytes()); // compressed
    }
    h
}

fn central_header(e: &Entry) -> Vec<u8> {
    let mut h = Vec::with_capacity(46 + e.name.len() + 28);
    h.extend_from_slice(&CENTRAL.to_le_bytes());
    h.extend_from_slice(&VERSION.to_le_bytes()); // made by
    h.extend_from_slice(&VERSION.to_le_bytes()); // needed
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(&DOS_DATE.to_le_bytes());
    h.extend_from_slice(&e.crc.to_le_bytes());
    let (size, offset) = if e.zip64 { (u32::MAX, u32::MAX) } else { (e.size as u32, e.offset as u32) };
    h.extend_from_slice(&size.to_le_bytes());
    h.extend_from_slice(&size.to_le_bytes());
    h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
    h.extend_from_slice(&(if e.zip64 { 28u16 } else { 0 }).to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes()); // comment
    h.extend_from_slice(&0u16.to_le_bytes()); // disk
    h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
    h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
    h.extend_from_slice(&offset.to_le_bytes());
    h.extend_from_slice(e.name.as_bytes());
    if e.zip64 {
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&24u16.to_le_bytes());
        h.extend_from_slice(&e.size.to_le_bytes());
        h.extend_from_slice(&e.size.to_le_bytes());
        h.extend_from_slice(&e.offset.to_le_bytes());
    }
    h
}

/// The `.npy` bytes of a 1-d array of strings as numpy's fixed-width unicode (`<U{width}`,
/// UTF-32 little-endian, zero-padded).
pub fn unicode_npy(strings: &[String]) -> Vec<u8> {
    let width = strings.iter().map(|s| s.chars().count()).max().unwrap_or(0).max(1);
    let mut out = super::npy::header(&format!("<U{width}"), &[strings.len()]);
    for s in strings {
        let n = s.chars().count();
        s.chars().for_each(|c| out.extend_from_slice(&(c as u32).to_le_bytes()));
        out.resize(out.len() + 4 * (width - n), 0);
    }
    out
}

impl NpzStack {
    /// Start `file` (at `path`, for messages) with the stacked float32 array `key` (`maps` gives
    /// the entry `maps.npy`).
    pub fn new(path: &Path, file: File, key: &str) -> Result<Self> {
        let mut s = NpzStack {
            path: path.to_path_buf(),
            file: BufWriter::with_capacity(1 << 20, file),
            key: key.to_string(),
            item_shape: None,
            items: 0,
            data_crc: crc32fast::Hasher::new(),
            data_bytes: 0,
            header_at: 0,
            header_len: 0,
            entries: vec![],
        };
        let name = format!("{key}.npy");
        s.file.write_all(&local_header(&name, 0, 0, true)).map_err(io(path))?;
        s.header_at = 30 + name.len() as u64 + 20;
        // the placeholder header: as long as the final one (the growth padding)
        let header = super::npy::header("<f4", &[0]);
        s.header_len = header.len();
        s.file.write_all(&header).map_err(io(path))?;
        s.entries.push(Entry { name, crc: 0, size: 0, offset: 0, zip64: true });
        Ok(s)
    }

    /// Items so far.
    pub fn len(&self) -> usize {
        self.items
    }

    /// No item added yet.
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Append one item of shape `shape` (every item must have the first item's shape).
    pub fn push(&mut self, shape: &[usize], data: &[f32]) -> Result<()> {
        if shape.iter().product::<usize>() != data.len() {
            return Err(Error::shape("a stacked item", format!("{} values", shape.iter().product::<usize>()), [data.len()]));
        }
        match &self.item_shape {
            None => self.item_shape = Some(shape.to_vec()),
            Some(s) if s != shape => {
                return Err(Error::InvalidArgument(format!(
                    "{}: the stacked `{}` holds items of one shape, {s:?}, and this one is {shape:?} (use per-item .npy files instead)",
                    self.path.display(),
                    self.key
                )))
            }
            _ => {}
        }
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.data_crc.update(&bytes);
        self.data_bytes += bytes.len() as u64;
        self.file.write_all(&bytes).map_err(io(&self.path))?;
        self.items += 1;
        Ok(())
    }

    /// Close the stacked entry, add `small` arrays (`(key, .npy bytes)`), write the central
    /// directory, and flush the file to disk.
    pub fn finish(mut self, small: &[(&str, Vec<u8>)]) -> Result<()> {
        let path = self.path.clone();
        let mut shape = vec![self.items];
        shape.extend(self.item_shape.clone().unwrap_or_default());
        let header = super::npy::header("<f4", &shape);
        debug_assert_eq!(header.len(), self.header_len, "numpy's growth padding keeps the header's length");
        let mut crc = crc32fast::Hasher::new();
        crc.update(&header);
        crc.combine(&self.data_crc);
        let (crc, size) = (crc.finalize(), header.len() as u64 + self.data_bytes);
        let end_of_maps = self.header_at + size;
        self.file.seek(SeekFrom::Start(0)).map_err(io(&path))?;
        self.file.write_all(&local_header(&self.entries[0].name, crc, size, true)).map_err(io(&path))?;
        self.file.write_all(&header).map_err(io(&path))?;
        (self.entries[0].crc, self.entries[0].size) = (crc, size);
        self.file.seek(SeekFrom::Start(end_of_maps)).map_err(io(&path))?;
        let mut at = end_of_maps;
        for (key, bytes) in small {
            let name = format!("{key}.npy");
            let crc = crc32fast::hash(bytes);
            let zip64 = at > u32::MAX as u64 / 2 || bytes.len() as u64 > u32::MAX as u64 / 2;
            let h = local_header(&name, crc, bytes.len() as u64, zip64);
            self.file.write_all(&h).map_err(io(&path))?;
            self.file.write_all(bytes).map_err(io(&path))?;
            self.entries.push(Entry { name, crc, size: bytes.len() as u64, offset: at, zip64 });
            at += (h.len() + bytes.len()) as u64;
        }
        let cd_start = at;
        for e in &self.entries {
            let h = central_header(e);
            self.file.write_all(&h).map_err(io(&path))?;
            at += h.len() as u64;
        }
        let (cd_size, n) = (at - cd_start, self.entries.len() as u64);
        // zip64 end of central directory record and its locator, then the classic record
        let mut end = Vec::with_capacity(56 + 20 + 22);
        end.extend_from_slice(&ZIP64_END.to_le_bytes());
        end.extend_from_slice(&44u64.to_le_bytes());
        end.extend_from_slice(&VERSION.to_le_bytes());
        end.extend_from_slice(&VERSION.to_le_bytes());
        end.extend_from_slice(&0u32.to_le_bytes());
        end.extend_from_slice(&0u32.to_le_bytes());
        end.extend_from_slice(&n.to_le_bytes());
        end.extend_from_slice(&n.to_le_bytes());
        end.extend_from_slice(&cd_size.to_le_bytes());
        end.extend_from_slice(&cd_start.to_le_bytes());
        end.extend_from_slice(&ZIP64_LOCATOR.to_le_bytes());
        end.extend_from_slice(&0u32.to_le_bytes());
        end.extend_from_slice(&at.to_le_bytes());
        end.extend_from_slice(&1u32.to_le_bytes());
        end.extend_from_slice(&END.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&(n as u16).to_le_bytes());
        end.extend_from_slice(&(n as u16).to_le_bytes());
        end.extend_from_slice(&u32::MAX.to_le_bytes());
        end.extend_from_slice(&u32::MAX.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.file.write_all(&end).map_err(io(&path))?;
        let file = self.file.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
        file.sync_all().map_err(io(&path))
    }
}
