//! The Broden layout (Bau et al. 2017, "Network Dissection"), read as NetDissect-Lite's
//! `loader/data_loader.py` reads it, so that `dissect` runs on the real Broden:
//!
//! - `index.csv`: `image,split,ih,iw,sh,sw` then one column per category (`color`, `object`,
//!   `part`, `material`, `scene`, `texture`…). A cell holds `;`-separated entries: a label
//!   image's file name (relative to `images/`) whose pixels code the label number as
//!   `R + 256·G`, or a label number that covers the whole image (scene, texture). An empty cell:
//!   the image is not annotated in that category.
//! - `images/`: the pictures and the label images (`sh × sw` pixels).
//! - `label.csv`: `number,name,category,frequency,coverage,syns`; `category` is `cat(n);cat(n)`
//!   (how often the label occurs in each category). Number 0 is "no label".
//! - `category.csv`: `name,…`: the categories to use (others in `index.csv` are ignored).
//!
//! As NetDissect-Lite: an image with no entry in any used category is left out, and a label's
//! primary category is the one where it is most frequent (Lite takes the largest coverage from
//! the `c_*.csv` files; we read the counts of `label.csv` and need no `c_*.csv`; ties go to the
//! category listed first).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One label of `label.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    /// the label's number in the masks
    pub number: usize,
    /// its name
    pub name: String,
    /// index into [`Broden::categories`] of the primary category
    pub category: usize,
}

/// A cell entry of `index.csv`.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// a whole-image label
    Scalar(usize),
    /// a label image, relative to `images/`
    File(String),
}

/// One row of `index.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// the image's path, relative to the dataset's `images/`
    pub image: String,
    /// the label masks' height
    pub sh: usize,
    /// the label masks' width
    pub sw: usize,
    /// per category of [`Broden::categories`], its entries (empty: not annotated)
    pub entries: Vec<Vec<Entry>>,
}

/// A Broden-layout dataset.
#[derive(Clone, Debug)]
pub struct Broden {
    /// the dataset's folder
    pub root: PathBuf,
    /// the category names (`color`, `object`, ...), in `index.csv`'s column order
    pub categories: Vec<String>,
    /// indexed by label number (0: none, an empty name); numbers `label.csv` skips have no category
    pub labels: Vec<Option<Label>>,
    /// the rows of `index.csv`, one per image
    pub rows: Vec<Row>,
}

/// The labels of one image at its label resolution.
#[derive(Clone, Debug, Default)]
pub struct ImageLabels {
    /// the label masks' height
    pub sh: usize,
    /// the label masks' width
    pub sw: usize,
    /// per category: whether the image is annotated in it
    pub annotated: Vec<bool>,
    /// label planes (`sh × sw` label numbers, 0 = none) of every category, concatenated
    pub planes: Vec<Vec<u32>>,
    /// whole-image labels
    pub scalars: Vec<usize>,
}

/// Split one CSV line (fields may be double-quoted, `""` inside quotes is a quote).
fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut chars) = (vec![], String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A CSV file: its header, and its rows with their line numbers.
type Csv = (Vec<String>, Vec<(usize, Vec<String>)>);

/// A CSV file as (header, rows), each row as long as the header; errors name file and line.
fn read_csv(path: &Path) -> Result<Csv> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<String> = lines.next().map(|(_, l)| split_csv(l.trim_end_matches('\r')).into_iter().map(|s| s.trim().to_string()).collect()).ok_or_else(|| Error::InvalidArgument(format!("{}: empty (a CSV with a header line expected)", path.display())))?;
    let mut rows = vec![];
    for (i, l) in lines {
        let f = split_csv(l.trim_end_matches('\r'));
        if f.len() != header.len() {
            return Err(Error::InvalidArgument(format!("{}:{}: {} fields, the header has {}", path.display(), i + 1, f.len(), header.len())));
        }
        rows.push((i + 1, f));
    }
    Ok((header, rows))
}

fn column(path: &Path, header: &[String], name: &str) -> Result<usize> {
    header.iter().position(|h| h == name).ok_or_else(|| Error::InvalidArgument(format!("{}: no `{name}` column (header: {})", path.display(), header.join(","))))
}

impl Broden {
    /// Whether `dir` looks like a Broden dataset (it has `index.csv` and `images/`).
    pub fn is_broden(dir: &Path) -> bool {
        dir.join("index.csv").is_file() && dir.join("images").is_dir()
    }

    /// Read the tables of the dataset at `root` (no image is opened).
    pub fn open(root: &Path) -> Result<Broden> {
        if !Self::is_broden(root) {
            return Err(Error::InvalidArgument(format!("{}: not a Broden dataset (index.csv and images/ expected; `deepviz gen-dataset --broden` writes one)", root.display())));
        }
        let cat_path = root.join("category.csv");
        let (h, rows) = read_csv(&cat_path)?;
        let name = column(&cat_path, &h, "name")?;
        let categories: Vec<String> = rows.into_iter().map(|(_, r)| r[name].trim().to_string()).collect();
        if categories.is_empty() {
            return Err(Error::InvalidArgument(format!("{}: no categories", cat_path.display())));
        }

        let label_path = root.join("label.csv");
        let (h, rows) = read_csv(&label_path)?;
        let (num, name, cat) = (column(&label_path, &h, "number")?, column(&label_path, &h, "name")?, column(&label_path, &h, "category")?);
        let mut labels: Vec<Option<Label>> = vec![];
        for (line, r) in rows {
            let bad = |why: String| Error::InvalidArgument(format!("{}:{line}: {why}", label_path.display()));
            let number: usize = r[num].trim().parse().map_err(|_| bad(format!("label number {:?} is not a number", r[num])))?;
            // `cat(n);cat(n)`: the primary category is the most frequent one we use
            let mut best: Option<(usize, usize)> = None;
            for part in r[cat].split(';').map(str::trim).filter(|p| !p.is_empty()) {
                let (c, n) = part.strip_suffix(')').and_then(|p| p.split_once('(')).ok_or_else(|| bad(format!("category {part:?} is not of the form name(count)")))?;
                let n: usize = n.trim().parse().map_err(|_| bad(format!("category {part:?}: the count is not a number")))?;
                if let Some(ci) = categories.iter().position(|x| x == c.trim()) {
                    if best.is_none_or(|(_, bn)| n > bn) {
                        best = Some((ci, n));
                    }
                }
            }
            if number >= labels.len() {
                labels.resize(number + 1, None);
            }
            if let Some((category, _)) = best {
                labels[number] = Some(Label { number, name: r[name].trim().to_string(), category });
            }
        }

        let index_path = root.join("index.csv");
        let (h, rows) = read_csv(&index_path)?;
        let meta: Vec<usize> = ["image", "split", "ih", "iw", "sh", "sw"].iter().map(|c| column(&index_path, &h, c)).collect::<Result<_>>()?;
        let cat_cols: Vec<Option<usize>> = categories.iter().map(|c| h.iter().position(|x| x == c)).collect();
        if cat_cols.iter().all(Option::is_none) {
            return Err(Error::InvalidArgument(format!("{}: none of the categories of category.csv ({}) is a column", index_path.display(), categories.join(", "))));
        }
        let mut out = vec![];
        for (line, r) in rows {
            let bad = |why: String| Error::InvalidArgument(format!("{}:{line}: {why}", index_path.display()));
            let size = |i: usize| -> Result<usize> {
                let v: usize = r[meta[i]].trim().parse().map_err(|_| bad(format!("{} = {:?} is not a number", h[meta[i]], r[meta[i]])))?;
                if v == 0 || v > 1 << 14 {
                    return Err(bad(format!("{} = {v} is out of range (1..=16384)", h[meta[i]])));
                }
                Ok(v)
            };
            let (sh, sw) = (size(4)?, size(5)?);
            let mut entries = vec![];
            for (ci, col) in cat_cols.iter().enumerate() {
                let mut es = vec![];
                for e in col.map_or("", |c| r[c].as_str()).split(';').map(str::trim).filter(|e| !e.is_empty()) {
                    if e.bytes().all(|b| b.is_ascii_digit()) {
                        let n: usize = e.parse().map_err(|_| bad(format!("label {e:?} is out of range")))?;
                        if labels.get(n).is_none_or(|l| l.is_none()) {
                            return Err(bad(format!("label {n} in column {} is not in label.csv (or not of a category of category.csv)", categories[ci])));
                        }
                        es.push(Entry::Scalar(n));
                    } else {
                        if e.contains("..") || e.starts_with('/') {
                            return Err(bad(format!("label image {e:?} is outside images/")));
                        }
                        es.push(Entry::File(e.to_string()));
                    }
                }
                entries.push(es);
            }
            let image = r[meta[0]].trim().to_string();
            if image.is_empty() || image.contains("..") || image.starts_with('/') {
                return Err(bad(format!("image {image:?} is not a file name under images/")));
            }
            if entries.iter().any(|e| !e.is_empty()) {
                out.push(Row { image, sh, sw, entries });
            }
        }
        if out.is_empty() {
            return Err(Error::InvalidArgument(format!("{}: no image is annotated in any category of category.csv", index_path.display())));
        }
        Ok(Broden { root: root.to_path_buf(), categories, labels, rows: out })
    }

    /// The path of an image (or label image) named in `index.csv`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join("images").join(name)
    }

    /// A label's name (`#n` for a number `label.csv` does not name).
    pub fn label_name(&self, n: usize) -> String {
        self.labels.get(n).and_then(|l| l.as_ref()).map_or(format!("#{n}"), |l| l.name.clone())
    }

    /// Read the labels of row `i`: every label image decoded (`R + 256·G`), checked to be
    /// `sh × sw` and to hold only labels of `label.csv`.
    pub fn image_labels(&self, i: usize) -> Result<ImageLabels> {
        let row = &self.rows[i];
        let mut out = ImageLabels { sh: row.sh, sw: row.sw, annotated: row.entries.iter().map(|e| !e.is_empty()).collect(), ..Default::default() };
        for (ci, es) in row.entries.iter().enumerate() {
            for e in es {
                match e {
                    Entry::Scalar(n) => out.scalars.push(*n),
                    Entry::File(f) => {
                        let path = self.file(f);
                        let img = crate::imageio::load_rgb(&path).map_err(|e| Error::InvalidArgument(format!("label image of {} ({}): {e}", row.image, self.categories[ci])))?;
                        if (img.height() as usize, img.width() as usize) != (row.sh, row.sw) {
                            return Err(Error::InvalidArgument(format!("{}: {}x{} pixels, index.csv says sh x sw = {}x{}", path.display(), img.height(), img.width(), row.sh, row.sw)));
                        }
                        let plane: Vec<u32> = img.pixels().map(|p| p[0] as u32 + 256 * p[1] as u32).collect();
                        if let Some(&bad) = plane.iter().find(|&&n| n != 0 && self.labels.get(n as usize).is_none_or(|l| l.is_none())) {
                            return Err(Error::InvalidArgument(format!("{}: label {bad} is not in label.csv (or not of a category of category.csv)", path.display())));
                        }
                        out.planes.push(plane);
                    }
                }
            }
        }
        Ok(out)
    }
}
