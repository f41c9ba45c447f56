//! `lookout dataset import SRC`: an existing image folder into the collect dataset, so its
//! images are reviewed on `/collect` and trained on with the collected frames.
//!
//! `SRC/<label>/<image>` is taken as labelled by a person (reviewed); images directly in
//! `SRC` need `--label`, and arrive unreviewed under that label for a person to sort on the
//! page. Every image is checked by decoding it; one that does not decode is skipped and
//! counted. Imported images are never deleted by the collect bounds. Importing the same file
//! again is a no-op: the stored name carries the first 8 hex digits of its sha256.

use std::path::{Path, PathBuf};

use super::dataset::{check_label, Dataset, DatasetError, Item, Why};
use crate::frame::image_file::{is_image_file, visible_entries};
use crate::frame::{decode_rgb, Frame, PixelFormat, RgbBuf};

/// What an import did.
#[derive(Debug, Default, PartialEq)]
pub struct Imported {
    pub added: usize,
    /// Already in the dataset (same label, same content).
    pub already: usize,
    /// Files that could not be read or decoded, with why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Labels that received images, with how many.
    pub labels: Vec<(String, usize)>,
}

impl Imported {
    /// What `lookout dataset import` prints.
    pub fn describe(&self, into: &Path) -> String {
        let mut s = format!(
            "Imported {} images into {} ({} already there, {} skipped).\n",
            self.added,
            into.display(),
            self.already,
            self.skipped.len()
        );
        for (label, n) in &self.labels {
            s.push_str(&format!("  {label}: {n}\n"));
        }
        for (path, why) in &self.skipped {
            s.push_str(&format!("  skipped {}: {why}\n", path.display()));
        }
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has no images: put them in a folder per label (SRC/<label>/*.jpg), or directly in SRC and pass --label", .0.display())]
    Empty(PathBuf),
    #[error("{} has {count} images directly in it (not in a label folder): pass --label NAME to import them under NAME", dir.display())]
    Unlabelled { dir: PathBuf, count: usize },
    #[error(transparent)]
    Dataset(#[from] DatasetError),
}

/// Imports `src` into `dataset`; `label`: the label of the images directly in `src`.
pub fn import(dataset: &Dataset, src: &Path, label: Option<&str>) -> Result<Imported, ImportError> {
    if let Some(l) = label {
        check_label(l)?;
    }
    let read = |path: &Path| {
        visible_entries(path).map_err(|source| ImportError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let top = read(src)?;
    let flat: Vec<PathBuf> = top
        .iter()
        .filter(|p| p.is_file() && is_image_file(p))
        .cloned()
        .collect();
    // (label, reviewed, files)
    let mut groups: Vec<(String, bool, Vec<PathBuf>)> = Vec::new();
    if !flat.is_empty() {
        let Some(l) = label else {
            return Err(ImportError::Unlabelled {
                dir: src.to_owned(),
                count: flat.len(),
            });
        };
        groups.push((l.to_owned(), false, flat));
    }
    for folder in top.iter().filter(|p| p.is_dir()) {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let files: Vec<PathBuf> = read(folder)?
            .into_iter()
            .filter(|p| p.is_file() && is_image_file(p))
            .collect();
        if !files.is_empty() {
            check_label(&name)?;
            groups.push((name, true, files));
        }
    }
    if groups.is_empty() {
        return Err(ImportError::Empty(src.to_owned()));
    }
    let mut out = Imported::default();
    let mut rgb = RgbBuf::default();
    let now = crate::event::rfc3339(std::time::SystemTime::now());
    for (label, reviewed, files) in groups {
        let mut n = 0;
        for path in files {
            let data = match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) => {
                    out.skipped.push((path, e.to_string()));
                    continue;
                }
            };
            let frame = Frame::new(PixelFormat::Encoded, 0, 0, data);
            if let Err(e) = decode_rgb(&frame, None, &mut rgb) {
                out.skipped.push((path, e.to_string()));
                continue;
            }
            let sha = crate::digest::sha256_hex(&frame.data);
            let name = stored_name(&path, &sha);
            if dataset.path_of(&format!("{label}/{name}")).is_some() {
                out.already += 1;
                continue;
            }
            let item = Item {
                file: String::new(),
                label: label.clone(),
                predicted: None,
                top: Vec::new(),
                time: now.clone(),
                source: None,
                region: None,
                model: None,
                model_sha256: None,
                why: Why::Import,
                bytes: 0,
                reviewed,
            };
            dataset.add(item, &name, &frame.data, None)?;
            out.added += 1;
            n += 1;
        }
        if n > 0 {
            out.labels.push((label, n));
        }
    }
    Ok(out)
}

/// `leaf_12-0a1b2c3d.jpg` for `leaf_12.JPG` whose sha256 starts 0a1b2c3d: safe characters,
/// the extension lower-cased, the hash making a second import of the same file a no-op.
fn stored_name(path: &Path, sha: &str) -> String {
    let stem: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_else(|| "jpg".into());
    format!("{stem}-{}.{ext}", &sha[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg() -> Vec<u8> {
        let rgb = RgbBuf {
            width: 8,
            height: 8,
            data: vec![120; 8 * 8 * 3],
        };
        crate::frame::encode_jpeg(&rgb, 90).unwrap()
    }

    #[test]
    fn labelled_folders_import_reviewed_flat_ones_need_a_label_and_bad_images_are_counted() {
        let src = tempfile::tempdir().unwrap();
        let into = tempfile::tempdir().unwrap();
        let d = Dataset::open(into.path()).unwrap();
        std::fs::create_dir(src.path().join("rust")).unwrap();
        std::fs::write(src.path().join("rust/a.jpg"), jpeg()).unwrap();
        std::fs::write(src.path().join("rust/bad.jpg"), b"not a jpeg").unwrap();
        std::fs::write(src.path().join("rust/notes.txt"), b"ignored").unwrap();
        std::fs::write(src.path().join("loose.JPG"), jpeg()).unwrap();
        let e = import(&d, src.path(), None).unwrap_err();
        assert!(e.to_string().contains("1 images directly in it"), "{e}");

        let got = import(&d, src.path(), Some("unsorted")).unwrap();
        assert_eq!(got.added, 2);
        assert_eq!(got.skipped.len(), 1);
        assert!(got.skipped[0].0.ends_with("rust/bad.jpg"));
        assert_eq!(got.labels, [("unsorted".into(), 1), ("rust".into(), 1)]);
        let items = d.list(None, None, 10);
        assert!(items.iter().any(|i| i.label == "rust" && i.reviewed));
        assert!(items
            .iter()
            .any(|i| i.label == "unsorted" && !i.reviewed && i.file.ends_with(".jpg")));

        // Again: nothing new.
        let again = import(&d, src.path(), Some("unsorted")).unwrap();
        assert_eq!((again.added, again.already), (0, 2));

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            import(&d, empty.path(), None),
            Err(ImportError::Empty(_))
        ));
        assert!(matches!(
            import(&d, &empty.path().join("missing"), None),
            Err(ImportError::Read { .. })
        ));
    }
}
