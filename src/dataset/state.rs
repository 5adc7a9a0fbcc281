//! Partial states: what one shard of a dataset command writes, and how shards merge.
//!
//! A partial state is one JSON file (`{command}.shard-{i}-of-{N}.json`): an envelope naming the
//! command, its parameters, the model and the dataset (its folder and a fingerprint of its
//! listing), the shard, the images it read and skipped, and the command's tally — top-k hits
//! per unit with their activation maps, feature vectors, or dissection's per-unit largest
//! values (base64 f32) and integer IoU counts. JSON because the states are small
//! (k hits per unit; one vector per image) and a person can read them; every float is written
//! as the f64 equal to the f32 the engine computed, so it reads back bit for bit.
//!
//! Merging is exact: it checks that the states belong to one job (same command, parameters,
//! model and dataset, the same N) and together hold every shard exactly once, then unions the
//! images, merges the top-k lists by (value descending, image index ascending) — the order a
//! single pass keeps — and concatenates the feature vectors in image order. The merged state
//! is what a single pass (shard `0/1`) would have made.

use serde::{Deserialize, Serialize};

use super::dissect::{IouTally, QuantileTally};
use super::neighbors::NeighborTally;
use super::top::TopTally;
use super::tsne::TsneTally;
use super::{Dataset, Shard, Skipped};
use crate::error::{Error, Result};

/// What identifies the file format.
pub const FORMAT: &str = "deepviz-partial";
pub const VERSION: u32 = 1;

/// The command-specific part of a state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Tally {
    /// top-patches' per-unit best images
    TopPatches(TopTally),
    /// neighbours' feature and pixel vectors
    Neighbors(NeighborTally),
    /// dissect's first pass: per unit the largest activations
    DissectQuantile(QuantileTally),
    /// dissect's second pass: IoU counts
    Dissect(IouTally),
    /// t-SNE's feature vectors
    Tsne(TsneTally),
}

impl Tally {
    /// The command that made it (`top-patches`, `neighbors`, ...).
    pub fn command(&self) -> &'static str {
        match self {
            Tally::TopPatches(_) => "top-patches",
            Tally::Neighbors(_) => "neighbors",
            Tally::DissectQuantile(_) => "dissect-quantile",
            Tally::Dissect(_) => "dissect",
            Tally::Tsne(_) => "tsne",
        }
    }
}

/// One shard's state (or the merged state of all of them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    /// the file format's name, so another JSON is refused
    pub format: String,
    /// the format's version
    pub version: u32,
    /// the model's origin (file or `embedded …`) and architecture
    pub model: String,
    /// the model's architecture
    pub arch: String,
    /// the dataset folder or list file, absolute, and [`Dataset::fingerprint`]
    pub dataset: String,
    /// the dataset's fingerprint, so shards of different datasets do not merge
    pub fingerprint: String,
    /// the command's parameters (layer, k, units, metric…): shards must agree
    pub params: serde_json::Value,
    /// every shard of one job; `[{i, N}]` for one shard, all N after a merge
    pub shards: Vec<Shard>,
    /// dataset indices read, ascending
    pub images: Vec<usize>,
    /// images that could not be read, and why
    pub skipped: Vec<Skipped>,
    /// the command's own state
    pub tally: Tally,
}

impl Partial {
    /// A shard's state of a pass over `ds` with `model`, its parameters and tally.
    pub fn new(model: &crate::model::Model, ds: &Dataset, shard: Shard, params: serde_json::Value, tally: Tally) -> Partial {
        let root = std::fs::canonicalize(&ds.root).unwrap_or_else(|_| ds.root.clone());
        Partial {
            format: FORMAT.into(),
            version: VERSION,
            model: model.origin.clone(),
            arch: model.graph.arch.clone(),
            dataset: root.display().to_string(),
            fingerprint: ds.fingerprint(),
            params,
            shards: vec![shard],
            images: vec![],
            skipped: vec![],
            tally,
        }
    }

    /// The file name a shard's state is written under.
    pub fn file_name(&self) -> String {
        let s = self.shards[0];
        format!("{}.shard-{:04}-of-{:04}.json", self.tally.command(), s.index, s.count)
    }

    /// The state as JSON bytes (what [`Partial::file_name`] holds).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a state serialises")
    }

    /// Read a state file, checking its format.
    pub fn read(path: &std::path::Path) -> Result<Partial> {
        crate::job::inputs::check_regular_file(path)?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::InvalidArgument(format!("{}: not a deepviz partial state: {e}", path.display())))?;
        if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) || v.get("version").and_then(|f| f.as_u64()) != Some(VERSION as u64) {
            return Err(Error::InvalidArgument(format!("{}: not a deepviz partial state (format {FORMAT} version {VERSION})", path.display())));
        }
        serde_json::from_value(v).map_err(|e| Error::InvalidArgument(format!("{}: a damaged partial state: {e}", path.display())))
    }

    /// The dataset listing this state was made from, opened again and checked.
    pub fn open_dataset(&self) -> Result<Dataset> {
        let ds = Dataset::open(std::path::Path::new(&self.dataset))?;
        if ds.fingerprint() != self.fingerprint {
            return Err(Error::InvalidArgument(format!(
                "the dataset {} has changed since it was read (listing {} now, {} then)",
                self.dataset,
                ds.fingerprint(),
                self.fingerprint
            )));
        }
        Ok(ds)
    }

    /// Merge the states of every shard of one job into the state of a single pass.
    pub fn merge(states: Vec<Partial>) -> Result<Partial> {
        let mut it = states.into_iter();
        let mut acc = it.next().ok_or_else(|| Error::InvalidArgument("merge needs at least one partial state".into()))?;
        for s in it {
            let differ = |what: &str, a: &dyn std::fmt::Display, b: &dyn std::fmt::Display| {
                Error::InvalidArgument(format!("these partial states are not of one job: {what} {a} vs {b}"))
            };
            if s.tally.command() != acc.tally.command() {
                return Err(differ("command", &acc.tally.command(), &s.tally.command()));
            }
            if (&s.model, &s.arch) != (&acc.model, &acc.arch) {
                return Err(differ("model", &acc.model, &s.model));
            }
            if (&s.dataset, &s.fingerprint) != (&acc.dataset, &acc.fingerprint) {
                return Err(differ("dataset", &format!("{} ({})", acc.dataset, acc.fingerprint), &format!("{} ({})", s.dataset, s.fingerprint)));
            }
            if s.params != acc.params {
                return Err(differ("parameters", &acc.params, &s.params));
            }
            if s.shards[0].count != acc.shards[0].count {
                return Err(differ("shard count", &acc.shards[0].count, &s.shards[0].count));
            }
            for sh in &s.shards {
                if acc.shards.contains(sh) {
                    return Err(Error::InvalidArgument(format!("shard {sh} is given twice")));
                }
            }
            acc.shards.extend(s.shards);
            acc.images.extend(s.images);
            acc.skipped.extend(s.skipped);
            acc.tally = match (acc.tally, s.tally) {
                (Tally::TopPatches(a), Tally::TopPatches(b)) => Tally::TopPatches(a.merge(b)?),
                (Tally::Neighbors(a), Tally::Neighbors(b)) => Tally::Neighbors(a.merge(b)),
                (Tally::DissectQuantile(a), Tally::DissectQuantile(b)) => Tally::DissectQuantile(a.merge(b)?),
                (Tally::Dissect(a), Tally::Dissect(b)) => Tally::Dissect(a.merge(b)?),
                (Tally::Tsne(a), Tally::Tsne(b)) => Tally::Tsne(a.merge(b)?),
                _ => unreachable!("commands compared above"),
            };
        }
        let n = acc.shards[0].count;
        let missing: Vec<String> = (0..n).filter(|i| !acc.shards.iter().any(|s| s.index == *i)).map(|i| format!("{i}/{n}")).collect();
        if !missing.is_empty() {
            return Err(Error::InvalidArgument(format!("shards missing: {}", missing.join(", "))));
        }
        acc.shards.sort_by_key(|s| s.index);
        acc.images.sort_unstable();
        acc.skipped.sort_by_key(|s| s.image);
        Ok(acc)
    }
}
