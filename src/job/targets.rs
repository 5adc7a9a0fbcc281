//! What the user asks the maps to explain, per image.
//!
//! - nothing: each image's top class;
//! - targets for every image: classes (`--class 285` or `--class 285,967`: two maps per image),
//!   units (`--unit layer4:12`: the mean of channel 12 of layer4) and neurons
//!   (`--neuron layer4:12:3:4`: channel 12 at row 3, column 4);
//! - a file mapping images to classes (`--class-file F`): lines `IMAGE,CLASS` (or whitespace
//!   separated; `#` starts a comment; an optional header `image,class`), several lines for several
//!   classes of one image. IMAGE is matched against the input's file name, its path as given, or
//!   its stem; an input without a line is an error, and so is a line that names no input.

use std::collections::HashMap;
use std::path::Path;

use super::inputs::{Inputs, Item};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::viz::Target;

/// Largest `--class-file` read, in bytes (checked before reading).
pub const MAX_CLASS_FILE_BYTES: u64 = 64 << 20;

/// Targets as the user gave them (layers still as names: they resolve on the model).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum TargetSpec {
    /// each image's top class
    #[default]
    Top,
    /// these targets for every image (one map each)
    Each(Vec<TargetName>),
    /// per image (by the key it was listed under), its classes
    PerImage(HashMap<String, Vec<usize>>),
}

/// A target with its layer named.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetName {
    /// `class:N`
    Class(usize),
    /// `unit:LAYER:C`: the mean of channel C of the layer
    Unit {
        /// the layer's module path
        layer: String,
        /// the channel's index
        channel: usize,
    },
    /// `neuron:LAYER:C:Y:X`: one activation of the layer
    Neuron {
        /// the layer's module path
        layer: String,
        /// the channel's index
        channel: usize,
        /// the row
        y: usize,
        /// the column
        x: usize,
    },
}

/// `class:N`, `unit:LAYER:C` or `neuron:LAYER:C:Y:X` (the layer may contain `:`, as `relu:0`;
/// the numbers are the last fields).
pub fn parse_target(s: &str) -> Result<TargetName> {
    let bad = || Error::InvalidArgument(format!("target {s:?}: expected class:N, unit:LAYER:CHANNEL or neuron:LAYER:CHANNEL:Y:X"));
    let num = |v: &str| v.trim().parse::<usize>().map_err(|_| bad());
    let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
    match kind {
        "class" => Ok(TargetName::Class(num(rest)?)),
        "unit" => {
            let (layer, c) = rest.rsplit_once(':').ok_or_else(bad)?;
            Ok(TargetName::Unit { layer: layer.to_string(), channel: num(c)? })
        }
        "neuron" => {
            let f: Vec<&str> = rest.rsplitn(4, ':').collect();
            if f.len() != 4 {
                return Err(bad());
            }
            Ok(TargetName::Neuron { layer: f[3].to_string(), channel: num(f[2])?, y: num(f[1])?, x: num(f[0])? })
        }
        _ => Err(bad()),
    }
}

impl TargetName {
    /// The target on `model`, its layer resolved (an unknown layer is an error listing close matches).
    pub fn resolve(&self, model: &Model) -> Result<Target> {
        Ok(match self {
            TargetName::Class(c) => Target::Class(*c),
            TargetName::Unit { layer, channel } => Target::Channel { layer: model.resolve(layer)?, channel: *channel },
            TargetName::Neuron { layer, channel, y, x } => Target::Neuron { layer: model.resolve(layer)?, channel: *channel, y: *y, x: *x },
        })
    }
}

/// The keys an input answers to in a class file: its file name, its path as given, its stem.
fn keys(p: &Path) -> Vec<String> {
    let mut k = vec![p.display().to_string()];
    k.extend(p.file_name().map(|f| f.to_string_lossy().into_owned()));
    k.extend(p.file_stem().map(|f| f.to_string_lossy().into_owned()));
    k
}

impl TargetSpec {
    /// Read a class file (see the module documentation) and check it against the inputs.
    pub fn from_class_file(path: &Path, inputs: &Inputs) -> Result<TargetSpec> {
        let len = crate::imageio::regular_file_len(path)?;
        if len > MAX_CLASS_FILE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "{}: {len} bytes; a class file may have at most {} MiB (job::MAX_CLASS_FILE_BYTES)",
                path.display(),
                MAX_CLASS_FILE_BYTES >> 20
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_class_text(&text, path, inputs)
    }

    /// [`TargetSpec::from_class_file`] for a class file already in memory (`path`, not opened,
    /// names it in errors).
    pub fn from_class_text(text: &str, path: &Path, inputs: &Inputs) -> Result<TargetSpec> {
        let mut map: HashMap<String, Vec<usize>> = HashMap::new();
        for (no, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split([',', '\t', ' ']).filter(|f| !f.is_empty()).collect();
            let bad = |why: &str| Error::InvalidArgument(format!("{}:{}: {why}: {line:?}", path.display(), no + 1));
            if fields.len() != 2 {
                return Err(bad("expected IMAGE,CLASS"));
            }
            match fields[1].parse::<usize>() {
                Ok(c) => map.entry(fields[0].to_string()).or_default().push(c),
                Err(_) if no == 0 => continue, // a header
                Err(_) => return Err(bad("the class is not a number")),
            }
        }
        // every line names an input, every input has a line
        let all: Vec<Vec<String>> = inputs.files.iter().map(|f| keys(f)).collect();
        if let Some(k) = map.keys().find(|k| !all.iter().any(|ks| ks.contains(k))) {
            return Err(Error::InvalidArgument(format!("{}: `{k}` is not one of the inputs", path.display())));
        }
        if let Some(i) = all.iter().position(|ks| !ks.iter().any(|k| map.contains_key(k))) {
            return Err(Error::InvalidArgument(format!("{}: no class for the input {}", path.display(), inputs.files[i].display())));
        }
        Ok(TargetSpec::PerImage(map))
    }

    /// The targets of one input item (`None`: its top class).
    pub fn for_item(&self, model: &Model, item: &Item) -> Result<Option<Vec<Target>>> {
        match self {
            TargetSpec::Top => Ok(None),
            TargetSpec::Each(v) => Ok(Some(v.iter().map(|t| t.resolve(model)).collect::<Result<_>>()?)),
            TargetSpec::PerImage(map) => {
                let classes = keys(&item.source).iter().find_map(|k| map.get(k)).ok_or_else(|| {
                    Error::InvalidArgument(format!("no class for the input {}", item.source.display()))
                })?;
                Ok(Some(classes.iter().map(|&c| Target::Class(c)).collect()))
            }
        }
    }
}
