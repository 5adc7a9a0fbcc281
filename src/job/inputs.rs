//! The inputs of a run: image files, folders of them, and preprocessed `.npy` tensors, turned
//! into batches lazily — a folder of any size is read one batch at a time.
//!
//! [`Inputs::expand`] lists every file first (a folder's images in name order) and refuses, before
//! anything is computed, what cannot be an input: a missing path, something that is neither a
//! regular file nor a folder (a FIFO would block forever), an empty folder. [`Inputs::batches`]
//! then decodes and preprocesses as the batches are asked for (a batch's files in parallel); consecutive items of one shape
//! share a batch (an `.npy` of another size starts a new one).

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;

use super::background::{Background, Ticket};
use crate::error::{Error, Result};
use crate::imageio::{self, Preprocess};
use crate::tensor::Tensor;

/// Most images one `.npy` input may hold: its items are made at once, each with its own tensor,
/// picture and name, so a file of many tiny images (`[89478485, 3, 1, 1]` fits in 1 GiB) would
/// take many times its size in memory.
pub const MAX_NPY_ITEMS: usize = 65536;

/// The file extensions a folder is searched for.
pub const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "npy"];

/// One input item: where it came from, the stem of its output names, the picture the network
/// sees (the preprocessed crop, for overlays) and its tensor `[1, 3, h, w]`; for an image file,
/// where that crop lies in it, and (when [`Batches::keeping_originals`]) the decoded original.
pub struct Item {
    /// the file it came from
    pub source: PathBuf,
    /// the stem of its output files' names
    pub stem: String,
    /// the picture the network sees (the preprocessed crop, for overlays)
    pub picture: RgbImage,
    /// its tensor `[1, 3, h, w]`
    pub x: Tensor,
    /// the crop's window in the original image (`None` for an `.npy` tensor)
    pub crop: Option<imageio::CropBox>,
    /// the original image, kept only when asked ([`Batches::keeping_originals`])
    pub original: Option<RgbImage>,
}

/// A batch: its items and their stacked tensor `[n, 3, h, w]`.
pub struct Batch {
    /// the batch's items, in input order
    pub items: Vec<Item>,
    /// their stacked tensor `[n, 3, h, w]`
    pub x: Tensor,
}

/// The files of a run, in order.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// every input file, in order (folders expanded)
    pub files: Vec<PathBuf>,
}

fn is_input_file(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A regular file (following links), or why not.
pub fn check_regular_file(p: &Path) -> Result<()> {
    imageio::regular_file_len(p).map(|_| ())
}

impl Inputs {
    /// Every file named by `paths`: files as given, folders replaced by their images (name order).
    pub fn expand(paths: &[PathBuf]) -> Result<Inputs> {
        let mut files = vec![];
        for p in paths {
            let m = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
            if m.is_dir() {
                let mut found = vec![];
                for e in std::fs::read_dir(p).map_err(|e| Error::io(p, e))? {
                    let f = e.map_err(|e| Error::io(p, e))?.path();
                    // only regular files (a FIFO named x.png in a folder is skipped, not opened)
                    if is_input_file(&f) && std::fs::metadata(&f).is_ok_and(|m| m.is_file()) {
                        found.push(f);
                    }
                }
                found.sort();
                if found.is_empty() {
                    return Err(Error::InvalidArgument(format!("{}: no images in this folder ({})", p.display(), EXTENSIONS.join(", "))));
                }
                files.extend(found);
            } else {
                check_regular_file(p)?;
                files.push(p.clone());
            }
        }
        if files.is_empty() {
            return Err(Error::InvalidArgument("no inputs".into()));
        }
        Ok(Inputs { files })
    }

    /// The batches, at most `size` items each, decoded as they are asked for.
    pub fn batches<'a>(&'a self, pre: &'a Preprocess, size: usize) -> Batches<'a> {
        Batches { inputs: self, pre, size: size.max(1), next_file: 0, pending: vec![], stems: HashSet::new(), keep_originals: false, background: None, ahead: VecDeque::new() }
    }
}

fn is_npy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// The items of one file: an image gives one, an `.npy` `[n, 3, h, w]` gives n (`{stem}_{i}`).
fn load_file(path: &Path, pre: &Preprocess, keep_original: bool) -> Result<Vec<Item>> {
    if is_npy(path) {
        npy_items(path, imageio::read_npy(path)?, pre)
    } else {
        Ok(vec![image_item(path, imageio::load_rgb(path)?, pre, keep_original)])
    }
}

/// What [`Inputs::batches`] makes of a file, for a file already in memory: `bytes` are its
/// content, `path` (not opened) names it and, by its extension, says whether it is an `.npy`
/// tensor or an image. The same decoding, checks and preprocessing; only the file-size limits,
/// checked before a file is read, do not apply.
pub fn decode_items(path: &Path, bytes: &[u8], pre: &Preprocess) -> Result<Vec<Item>> {
    if is_npy(path) {
        npy_items(path, imageio::parse_npy(bytes, path)?, pre)
    } else {
        Ok(vec![image_item(path, imageio::decode_rgb(bytes, path)?, pre, false)])
    }
}

fn stem_of(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into())
}

/// The items of an `.npy` tensor `[n, 3, h, w]` or `[3, h, w]`: checked by [`check_input`], at
/// most [`MAX_NPY_ITEMS`] of them.
fn npy_items(path: &Path, t: Tensor, pre: &Preprocess) -> Result<Vec<Item>> {
    let stem = stem_of(path);
    let t = check_input(&path.display().to_string(), t)?;
    let [n, c, h, w] = t.shape[..] else { unreachable!("rank 4") };
    if n > MAX_NPY_ITEMS {
        return Err(Error::InvalidArgument(format!(
            "{}: {n} images in one .npy; at most {MAX_NPY_ITEMS} are allowed (job::inputs::MAX_NPY_ITEMS): split the file",
            path.display()
        )));
    }
    (0..n)
        .map(|i| {
            let x = Tensor::new(vec![1, c, h, w], t.item(i).to_vec())?;
            let picture = imageio::to_rgb(&x.data, h, w, pre);
            let stem = if n > 1 { format!("{stem}_{i}") } else { stem.clone() };
            Ok(Item { source: path.to_path_buf(), stem, picture, x, crop: None, original: None })
        })
        .collect()
}

/// A preprocessed input tensor `what` as every job takes it: `[n, 3, h, w]` (or `[3, h, w]`,
/// made `[1, 3, h, w]`), n, h, w > 0, at most [`imageio::MAX_INPUT_SIDE`] a side, every value
/// finite. The `.npy` inputs of the CLI and the arrays of the Python package go through it.
pub fn check_input(what: &str, t: Tensor) -> Result<Tensor> {
    let t = match t.rank() {
        3 => {
            let s = t.shape.clone();
            t.reshape(&[1, s[0], s[1], s[2]])?
        }
        4 => t,
        _ => return Err(Error::shape(what, "a float32 [n, 3, h, w] or [3, h, w] tensor", &t.shape)),
    };
    let [n, c, h, w] = t.shape[..] else { unreachable!("rank 4") };
    if c != 3 || h == 0 || w == 0 || n == 0 {
        return Err(Error::shape(what, "a float32 [n, 3, h, w] tensor", &t.shape));
    }
    if h.max(w) > imageio::MAX_INPUT_SIDE {
        return Err(Error::InvalidArgument(format!(
            "{what}: a {h}x{w} input; at most {} pixels a side are allowed (imageio::MAX_INPUT_SIDE)",
            imageio::MAX_INPUT_SIDE
        )));
    }
    if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!("{what}: value {} at index {i} is not a finite number", t.data[i])));
    }
    Ok(t)
}

/// The item of a decoded image: the centre crop at the model's size and its tensor.
fn image_item(path: &Path, img: RgbImage, pre: &Preprocess, keep_original: bool) -> Item {
    let picture = imageio::resize_crop(&img, pre.size);
    let x = imageio::to_tensor(std::slice::from_ref(&picture), pre);
    let crop = Some(imageio::crop_box(img.width(), img.height(), pre.size));
    Item { source: path.to_path_buf(), stem: stem_of(path), picture, x, crop, original: keep_original.then_some(img) }
}

/// The iterator of [`Inputs::batches`].
pub struct Batches<'a> {
    inputs: &'a Inputs,
    pre: &'a Preprocess,
    size: usize,
    next_file: usize,
    pending: Vec<Item>,
    /// output stems given so far (a repeated stem becomes `stem-2`, `stem-3`, …)
    stems: HashSet<String>,
    keep_originals: bool,
    /// where the next batch's files are decoded while this one is computed
    background: Option<&'a Background>,
    /// those files' results, in file order (their files are before `next_file`)
    ahead: VecDeque<Ticket<Result<Vec<Item>>>>,
}

impl<'a> Batches<'a> {
    /// Decode the next batch's files on `background` as soon as a batch is handed out, so
    /// that its decoding overlaps the work on this one ([`Background`]); the batches are the
    /// same.
    pub(crate) fn prefetching(mut self, background: &'a Background) -> Self {
        self.background = Some(background);
        self
    }

    /// The files the next [`Self::fill`] will want, given to the background thread.
    fn read_ahead(&mut self) {
        let Some(bg) = self.background else { return };
        let want = (self.size + 1).saturating_sub(self.pending.len()).min(self.inputs.files.len() - self.next_file);
        for f in &self.inputs.files[self.next_file..self.next_file + want] {
            let (f, pre, keep) = (f.clone(), *self.pre, self.keep_originals);
            self.ahead.push_back(bg.spawn(move || load_file(&f, &pre, keep)));
        }
        self.next_file += want;
    }

    /// Keep each image's decoded original in its [`Item`] (for pictures at the original's
    /// resolution): memory grows by the originals of about one batch.
    pub fn keeping_originals(mut self) -> Self {
        self.keep_originals = true;
        self
    }

    fn fill(&mut self) -> Result<()> {
        while self.pending.len() < self.size + 1 && (!self.ahead.is_empty() || self.next_file < self.inputs.files.len()) {
            // the files still wanted (at least one), decoded and preprocessed in parallel (or
            // already on the background thread), then taken in order (the first failure in
            // file order is the one reported)
            let loaded: Vec<Result<Vec<Item>>> = if self.ahead.is_empty() {
                let want = (self.size + 1 - self.pending.len()).min(self.inputs.files.len() - self.next_file);
                let files = &self.inputs.files[self.next_file..self.next_file + want];
                self.next_file += want;
                let (pre, keep) = (self.pre, self.keep_originals);
                files.par_iter().map(|f| load_file(f, pre, keep)).collect()
            } else {
                Background::wait_all(self.ahead.drain(..).collect())
            };
            for mut it in loaded.into_iter().collect::<Result<Vec<_>>>()?.into_iter().flatten() {
                let base = it.stem.clone();
                let mut k = 2;
                while !self.stems.insert(it.stem.clone()) {
                    it.stem = format!("{base}-{k}");
                    k += 1;
                }
                self.pending.push(it);
            }
        }
        Ok(())
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        if let Err(e) = self.fill() {
            self.next_file = self.inputs.files.len();
            self.pending.clear();
            self.ahead.clear();
            return Some(Err(e));
        }
        if self.pending.is_empty() {
            return None;
        }
        let shape = self.pending[0].x.shape.clone();
        let take = self.pending.iter().take(self.size).take_while(|it| it.x.shape == shape).count();
        let items: Vec<Item> = self.pending.drain(..take).collect();
        let mut data = Vec::with_capacity(items.len() * items[0].x.numel());
        for it in &items {
            data.extend_from_slice(&it.x.data);
        }
        self.read_ahead();
        Some(Tensor::new(vec![items.len(), shape[1], shape[2], shape[3]], data).map(|x| Batch { items, x }))
    }
}
