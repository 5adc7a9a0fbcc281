//! The output set of a run: all of it, or none of it, and never over an input.
//!
//! Files are written as results arrive, so memory stays bounded over a folder of any size, but
//! into a hidden staging folder inside the output folder (`.deepviz-partial-<pid>-<n>/`). Only
//! when the whole run has succeeded does [`OutputSet::commit`] move them to their names, each
//! with one `rename` inside one filesystem; a file already at a name is set aside first and put
//! back if any later move fails. A run that fails or is dropped before `commit`, or is
//! interrupted ([`abort_all`], which the CLI calls from its Ctrl-C / SIGTERM handler), removes
//! its staging folder and the output folders it created, and leaves everything as it was.
//!
//! No output may replace an input: every file the run reads is registered with
//! [`OutputSet::protect`] by its identity (device and inode, through symlinks and hard links), and
//! an output whose name is taken by one is refused when it is added, before anything else is
//! written, and again when the set is committed.
//!
//! The one thing this cannot undo is a `SIGKILL` (or power loss) in the middle of a run: the
//! staging folder (hidden, named for the process) is then left behind, and the commit's renames
//! are each atomic but not all together.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// What identifies a file whatever the path used to reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileId {
    dev: u64,
    ino: u64,
}

#[cfg(unix)]
fn file_id(m: &fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some(FileId { dev: m.dev(), ino: m.ino() })
}

#[cfg(not(unix))]
fn file_id(_m: &fs::Metadata) -> Option<FileId> {
    None
}

/// The identities of `path` itself and of what it points to (when it is a symlink).
fn ids_of(path: &Path) -> Vec<FileId> {
    [fs::symlink_metadata(path).ok(), fs::metadata(path).ok()].into_iter().flatten().filter_map(|m| file_id(&m)).collect()
}

/// The folders and files a live set has on disk, for [`abort_all`].
struct Live {
    key: u64,
    staging: PathBuf,
    /// output folders this set created, outermost first
    created: Vec<PathBuf>,
}

/// Every live set of the process. Held while a set writes a file or commits, so that an
/// interrupt waits for the file (or the whole commit) and then removes a consistent state.
static LIVE: Mutex<Vec<Live>> = Mutex::new(Vec::new());
static ABORTED: AtomicBool = AtomicBool::new(false);
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn live() -> std::sync::MutexGuard<'static, Vec<Live>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn interrupted() -> Error {
    Error::InvalidArgument("interrupted: no output was written".into())
}

/// Remove what `l` put on disk: its staging folder and the (then empty) folders it created.
fn clean(l: &Live) {
    let _ = fs::remove_dir_all(&l.staging);
    for d in l.created.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

/// Undo every live output set of the process (staging folders and created folders removed;
/// a commit in progress first finishes or rolls back) and refuse any further writes. For a
/// signal handler that then exits; safe to call from any thread.
pub fn abort_all() {
    let mut sets = live();
    ABORTED.store(true, Ordering::SeqCst);
    for l in sets.drain(..) {
        clean(&l);
    }
}

/// One staged file.
struct Staged {
    name: String,
    dest: PathBuf,
}

/// The files of one run, staged until [`OutputSet::commit`]. See the module documentation.
pub struct OutputSet {
    out_dir: PathBuf,
    key: u64,
    /// the staging folder, once the first file was added
    staging: Option<PathBuf>,
    files: Vec<Staged>,
    /// the staged files' names (each check is O(1): a run over a folder of any size)
    names: HashSet<String>,
    /// the inputs no output may replace, by file identity (the first path given for each)
    protected: HashMap<FileId, PathBuf>,
    committed: bool,
}

impl OutputSet {
    /// A set of files for `out_dir`. Nothing is created on disk until the first [`add`](Self::add).
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        OutputSet {
            out_dir: out_dir.into(),
            key: COUNTER.fetch_add(1, Ordering::Relaxed),
            staging: None,
            files: vec![],
            names: HashSet::new(),
            protected: HashMap::new(),
            committed: false,
        }
    }

    /// The folder the outputs are committed to.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Register a file the run reads (an image, a model): no output may replace it.
    pub fn protect(&mut self, path: &Path) {
        for id in ids_of(path) {
            self.protected.entry(id).or_insert_with(|| path.to_path_buf());
        }
    }

    /// The input `dest` would replace, if any.
    fn clobbers(&self, dest: &Path) -> Option<&Path> {
        ids_of(dest).iter().find_map(|i| self.protected.get(i)).map(PathBuf::as_path)
    }

    /// Where a file named `name` goes.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.out_dir.join(name)
    }

    /// Create the output folder (recording what was created) and the staging folder inside it.
    fn ensure_staging(&mut self, sets: &mut Vec<Live>) -> Result<PathBuf> {
        if let Some(s) = &self.staging {
            return Ok(s.clone());
        }
        let mut missing = vec![];
        let mut d = self.out_dir.clone();
        while !d.as_os_str().is_empty() && fs::symlink_metadata(&d).is_err() {
            missing.push(d.clone());
            d = match d.parent() {
                Some(p) => p.to_path_buf(),
                None => break,
            };
        }
        missing.reverse();
        let mut created = vec![];
        let staging = self.out_dir.join(format!(".deepviz-partial-{}-{}", std::process::id(), self.key));
        let made = (|| {
            for d in &missing {
                fs::create_dir(d).map_err(|e| Error::io(d, e))?;
                created.push(d.clone());
            }
            if !self.out_dir.as_os_str().is_empty() && !self.out_dir.is_dir() {
                return Err(Error::InvalidArgument(format!("--out {}: not a folder", self.out_dir.display())));
            }
            fs::create_dir(&staging).map_err(|e| Error::io(&staging, e))
        })();
        let l = Live { key: self.key, staging: staging.clone(), created };
        if let Err(e) = made {
            clean(&l);
            return Err(e);
        }
        sets.push(l);
        self.staging = Some(staging.clone());
        Ok(staging)
    }

    /// Stage the file `name` (a plain file name inside the output folder) with `bytes`. Refused
    /// when the name would replace an input, repeats a name of this set, or is not a plain name.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        self.stage(name, |tmp, dest| fs::write(tmp, bytes).map_err(|e| Error::io(dest, e))).map(|(dest, ())| dest)
    }

    /// Stage the file `name` to be written as a stream (a large array written as results
    /// arrive): its final path and the file, open for writing, in the staging folder. The same
    /// checks as [`add`](Self::add); the file is committed (or removed) with the rest.
    pub fn create(&mut self, name: &str) -> Result<(PathBuf, fs::File)> {
        self.stage(name, |tmp, dest| fs::File::create(tmp).map_err(|e| Error::io(dest, e)))
    }

    /// Check `name`, then make its staged file at `tmp` with `make(tmp, dest)`.
    fn stage<T>(&mut self, name: &str, make: impl FnOnce(&Path, &Path) -> Result<T>) -> Result<(PathBuf, T)> {
        let mut comps = Path::new(name).components();
        if !matches!((comps.next(), comps.next()), (Some(Component::Normal(_)), None)) || name.starts_with(".deepviz-partial-") {
            return Err(Error::InvalidArgument(format!("output name {name:?} is not a plain file name")));
        }
        let dest = self.path_of(name);
        if self.names.contains(name) {
            return Err(Error::InvalidArgument(format!("two outputs of this run are both named {}", dest.display())));
        }
        if let Some(input) = self.clobbers(&dest) {
            return Err(Error::InvalidArgument(format!(
                "refusing to overwrite the input {} with an output {}; choose another --out",
                input.display(),
                dest.display()
            )));
        }
        let mut sets = live();
        if ABORTED.load(Ordering::SeqCst) {
            return Err(interrupted());
        }
        let staging = self.ensure_staging(&mut sets)?;
        let made = make(&staging.join(name), &dest)?;
        self.names.insert(name.to_string());
        self.files.push(Staged { name: name.to_string(), dest: dest.clone() });
        Ok((dest, made))
    }

    /// The names of the staged files, in the order they were added.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.dest.clone()).collect()
    }

    /// Move every staged file to its name; all of them, or (on any error) none, with the files
    /// that were there before left as they were. Returns the paths written, in order.
    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        self.commit_inner(None)
    }

    fn commit_inner(&mut self, fail_at: Option<usize>) -> Result<Vec<PathBuf>> {
        let mut sets = live();
        if ABORTED.load(Ordering::SeqCst) {
            return Err(interrupted());
        }
        let Some(staging) = self.staging.clone() else {
            self.committed = true;
            return Ok(vec![]);
        };
        // every name is free, or a file (or link) that is not an input
        for f in &self.files {
            if let Ok(m) = fs::symlink_metadata(&f.dest) {
                if m.is_dir() {
                    return Err(Error::InvalidArgument(format!("cannot write {}: a folder has that name", f.dest.display())));
                }
                if !m.is_file() && !m.file_type().is_symlink() {
                    return Err(Error::InvalidArgument(format!("cannot write {}: something that is not a file has that name", f.dest.display())));
                }
            }
            if let Some(input) = self.clobbers(&f.dest) {
                return Err(Error::InvalidArgument(format!(
                    "refusing to overwrite the input {} with an output; choose another --out",
                    input.display()
                )));
            }
        }
        let aside = staging.join(".replaced");
        let mut set_aside: Vec<(PathBuf, PathBuf)> = vec![]; // (old file moved to, its name)
        let mut placed: Vec<(PathBuf, PathBuf)> = vec![]; // (new file now at, came from)
        let moved = (|| -> Result<()> {
            for (i, f) in self.files.iter().enumerate() {
                if fail_at == Some(i) {
                    return Err(Error::io(&f.dest, std::io::Error::other("injected failure")));
                }
                if fs::symlink_metadata(&f.dest).is_ok() {
                    if set_aside.is_empty() {
                        fs::create_dir(&aside).map_err(|e| Error::io(&aside, e))?;
                    }
                    let to = aside.join(&f.name);
                    fs::rename(&f.dest, &to).map_err(|e| Error::io(&f.dest, e))?;
                    set_aside.push((to, f.dest.clone()));
                }
                let from = staging.join(&f.name);
                fs::rename(&from, &f.dest).map_err(|e| Error::io(&f.dest, e))?;
                placed.push((f.dest.clone(), from));
            }
            Ok(())
        })();
        if let Err(e) = moved {
            // undo in reverse: the new files out, the old ones back
            let mut undo_failed = vec![];
            for (at, from) in placed.iter().rev() {
                if fs::rename(at, from).is_err() && fs::remove_file(at).is_err() {
                    undo_failed.push(at.display().to_string());
                }
            }
            for (at, name) in set_aside.iter().rev() {
                if fs::rename(at, name).is_err() {
                    undo_failed.push(format!("{} (its earlier version is in {})", name.display(), at.display()));
                }
            }
            if !undo_failed.is_empty() {
                // keep the staging folder: it holds what could not be put back
                sets.retain(|l| l.key != self.key);
                self.staging = None;
                return Err(Error::InvalidArgument(format!("{e}; and could not restore {}", undo_failed.join(", "))));
            }
            return Err(e);
        }
        self.committed = true;
        let _ = fs::remove_dir_all(&staging);
        sets.retain(|l| l.key != self.key);
        Ok(self.paths())
    }
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        if self.committed || self.staging.is_none() {
            return;
        }
        let mut sets = live();
        if let Some(i) = sets.iter().position(|l| l.key == self.key) {
            clean(&sets.remove(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("deepviz-output-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn listing(d: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let bytes = if p.is_file() { fs::read(&p).unwrap() } else { b"<dir>".to_vec() };
                (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_commit_restores_everything() {
        let d = tmp("rollback");
        fs::write(d.join("b.png"), b"old b").unwrap();
        let before = listing(&d);
        for fail_at in 0..3 {
            let mut s = OutputSet::new(&d);
            for n in ["a.png", "b.png", "c.png"] {
                s.add(n, n.as_bytes()).unwrap();
            }
            assert!(s.commit_inner(Some(fail_at)).is_err());
            drop(s);
            assert_eq!(listing(&d), before, "after a failure at file {fail_at}");
        }
        let mut s = OutputSet::new(&d);
        s.add("a.png", b"new a").unwrap();
        s.add("b.png", b"new b").unwrap();
        s.commit().unwrap();
        assert_eq!(listing(&d), vec![("a.png".into(), b"new a".to_vec()), ("b.png".into(), b"new b".to_vec())]);
    }

    #[test]
    fn created_folders_go_when_the_set_is_dropped() {
        let d = tmp("created");
        let out = d.join("x/y");
        let mut s = OutputSet::new(&out);
        s.add("a.png", b"a").unwrap();
        drop(s);
        assert!(!d.join("x").exists());
    }

    #[test]
    fn names_must_be_plain_and_distinct() {
        let d = tmp("names");
        let mut s = OutputSet::new(&d);
        for bad in ["../a.png", "a/b.png", "", ".deepviz-partial-1-2"] {
            assert!(s.add(bad, b"x").is_err(), "{bad:?}");
        }
        s.add("a.png", b"x").unwrap();
        assert!(s.add("a.png", b"y").is_err());
    }
}
