//! The training images: `DIR/<label>/<image>` read into labelled files, checked (at least two
//! labels, none empty), and split into training and validation sets per label with a fixed
//! seed. Reading and embedding the images is `embed`'s.

use std::path::{Path, PathBuf};

use super::TrainError;

use crate::frame::image_file::is_image_file as is_image;

/// The labelled images of a data folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Label names: the folder names, sorted (the model's output order).
    pub labels: Vec<String>,
    /// Every image with its label's index, by label then by file name.
    pub images: Vec<(PathBuf, usize)>,
}

/// Reads `dir`: each subfolder is a label, its image files are that label's examples. Hidden
/// folders and files are ignored; a file with another extension is ignored.
pub fn scan(dir: &Path) -> Result<Dataset, TrainError> {
    let err = |source| TrainError::Data {
        path: dir.to_owned(),
        source,
    };
    let mut folders: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        folders.push((name, entry.path()));
    }
    folders.sort();
    if folders.len() < 2 {
        return Err(TrainError::Classes {
            path: dir.to_owned(),
            found: folders.len(),
        });
    }
    let mut labels = Vec::new();
    let mut images = Vec::new();
    for (index, (label, folder)) in folders.into_iter().enumerate() {
        let err = |source| TrainError::Data {
            path: folder.clone(),
            source,
        };
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(&folder).map_err(err)? {
            let path = entry.map_err(err)?.path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden && path.is_file() && is_image(&path) {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(TrainError::EmptyClass { path: folder });
        }
        files.sort_by_cached_key(|a| natural_key(a));
        images.extend(files.into_iter().map(|f| (f, index)));
        labels.push(label);
    }
    Ok(Dataset { labels, images })
}

/// File names ordered with their digit runs as numbers (`x_2` before `x_10`).
fn natural_key(path: &Path) -> Vec<(String, u64)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut key = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for ch in name.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
        } else {
            if !digits.is_empty() {
                key.push((
                    std::mem::take(&mut text),
                    digits.parse().unwrap_or(u64::MAX),
                ));
                digits.clear();
            }
            text.push(ch);
        }
    }
    key.push((text, digits.parse().unwrap_or(0)));
    key
}

/// A small deterministic generator (splitmix64) for the split.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Splits sample indices by label (`labels[i]` is sample `i`'s) into training and validation:
/// within each label the samples are shuffled with `seed` and `fraction` of them (rounded, at
/// least one when the label has two or more, never all) go to validation. Both lists are sorted.
pub fn stratified_split(
    labels: &[usize],
    classes: usize,
    fraction: f64,
    seed: u64,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = SplitMix(seed);
    let mut train = Vec::new();
    let mut val = Vec::new();
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i + 1));
        }
        let n = idx.len();
        let k = if n < 2 {
            0
        } else {
            ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
        };
        val.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_seeded_and_complete() {
        let labels: Vec<usize> = (0..30).map(|i| usize::from(i >= 20)).collect();
        let (train, val) = stratified_split(&labels, 2, 0.2, 7);
        assert_eq!(val.iter().filter(|&&i| labels[i] == 0).count(), 4);
        assert_eq!(val.iter().filter(|&&i| labels[i] == 1).count(), 2);
        let mut all: Vec<usize> = train.iter().chain(&val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..30).collect::<Vec<_>>());
        assert_eq!(
            stratified_split(&labels, 2, 0.2, 7),
            (train.clone(), val.clone())
        );
        assert_ne!(stratified_split(&labels, 2, 0.2, 8).1, val);
    }

    #[test]
    fn a_label_with_one_sample_stays_in_training() {
        let (train, val) = stratified_split(&[0, 1, 1, 1], 2, 0.5, 1);
        assert!(train.contains(&0));
        assert_eq!(val.len(), 2);
    }

    #[test]
    fn file_numbers_sort_as_numbers() {
        let mut v = vec![
            PathBuf::from("a_10.jpg"),
            PathBuf::from("a_2.jpg"),
            PathBuf::from("a_1.jpg"),
        ];
        v.sort_by_key(|a| natural_key(a));
        assert_eq!(v, ["a_1.jpg", "a_2.jpg", "a_10.jpg"].map(PathBuf::from));
    }
}
