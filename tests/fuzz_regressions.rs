//! One regression test per defect the fuzzing work found (tests/fuzz.rs, scripts/fuzz.sh), each
//! on the smallest input that showed it; the inputs are in `fuzz/corpus/` too, so the CI fuzz
//! run replays them as well.

use std::path::{Path, PathBuf};

use deepviz::imageio::Preprocess;
use deepviz::job::inputs::{decode_items, MAX_NPY_ITEMS};
use deepviz::job::{Inputs, TargetSpec};
use deepviz::Tensor;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deepviz-fuzzreg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Found writing the `npy` target (by reading, not by a crash): every image of an `.npy` is made
/// at once, each with its own tensor, picture, name and path — several allocations for the 12
/// bytes of a 1x1 image — so the largest file allowed (1 GiB: `[89478485, 3, 1, 1]`) cost many
/// times its size in memory. Now at most `MAX_NPY_ITEMS` images per file, refused before any
/// item is made.
#[test]
fn an_npy_of_too_many_images_is_refused() {
    let pre = Preprocess::imagenet([13, 11]);
    let ok = deepviz::imageio::npy::npy_bytes(&Tensor::zeros(&[MAX_NPY_ITEMS, 3, 1, 1]));
    assert_eq!(decode_items(Path::new("many.npy"), &ok, &pre).unwrap().len(), MAX_NPY_ITEMS);
    let over = deepviz::imageio::npy::npy_bytes(&Tensor::zeros(&[MAX_NPY_ITEMS + 1, 3, 1, 1]));
    let e = decode_items(Path::new("many.npy"), &over, &pre).err().expect("refused").to_string();
    assert!(e.contains("many.npy") && e.contains("MAX_NPY_ITEMS"), "{e}");
}

/// Found writing the `class_file` target: a class file was read whole whatever its size. Now
/// refused past `MAX_CLASS_FILE_BYTES`, before it is read (the file here is sparse).
#[test]
fn a_huge_class_file_is_refused_before_it_is_read() {
    let d = tmp("classfile");
    let f = d.join("classes.txt");
    std::fs::File::create(&f).unwrap().set_len(deepviz::job::MAX_CLASS_FILE_BYTES + 1).unwrap();
    let inputs = Inputs { files: vec![PathBuf::from("a.png")] };
    let e = TargetSpec::from_class_file(&f, &inputs).err().expect("refused").to_string();
    assert!(e.contains("classes.txt") && e.contains("MAX_CLASS_FILE_BYTES"), "{e}");
    std::fs::write(&f, "a.png,3\n").unwrap();
    assert!(TargetSpec::from_class_file(&f, &inputs).is_ok());
    let _ = std::fs::remove_dir_all(&d);
}
