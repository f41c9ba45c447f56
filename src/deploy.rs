//! Deploying a model over HTTP (`POST /api/model?name=NAME`): the uploaded ONNX file is checked
//! (it parses, and loads with the settings of the model it replaces), then installed over the
//! file that model's `path` names, the old file kept beside it as `NAME.previous.onnx` (with its
//! model card, if any, as `NAME.previous.card.json`). The daemon then reloads its
//! configuration; a reload that refuses the new model (its labels do not fit a rule, say) puts
//! the previous file back with [`Installed::restore`]. Files are replaced by rename within the
//! model's folder, so a reader sees the old file or the new one, never part of one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;
use tract_onnx::pb;

use crate::config::Config;
use crate::model::{Model, ModelConfig};
use crate::train::card::card_path;

/// A model could not be deployed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("no model named {name:?}; the models are: {known} (use ?name=NAME)")]
    UnknownModel { name: String, known: String },
    #[error("model {name:?} is the bundled model (`[{key}]` has no `path`): set `path` to a file the daemon may write to deploy over HTTP")]
    Bundled { name: String, key: String },
    #[error("the upload is empty: send the ONNX file as the request body")]
    Empty,
    #[error("the upload ({bytes} bytes) is not an ONNX model: {why}")]
    NotOnnx { bytes: usize, why: String },
    #[error("the uploaded model does not load as model {name:?}: {why}")]
    DoesNotLoad { name: String, why: String },
    #[error("cannot {what} {path}: {source}; the daemon needs write access to the model's folder (under systemd, a ReadWritePaths= drop-in, see docs/training.md)")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A model file installed by [`install`]: what to put back should the reload refuse it.
#[derive(Debug)]
pub struct Installed {
    /// The file the configuration names, now the uploaded model.
    pub path: PathBuf,
    /// Where the file it replaced went (`None`: there was none).
    pub previous: Option<PathBuf>,
    /// The card beside the replaced file and where it went.
    card: Option<(PathBuf, PathBuf)>,
}

impl Installed {
    /// What was done, for the reply.
    pub fn describe(&self) -> String {
        match &self.previous {
            Some(p) => format!(
                "Model installed at {} (the previous one is {}).",
                self.path.display(),
                p.display()
            ),
            None => format!("Model installed at {}.", self.path.display()),
        }
    }

    /// Puts the replaced file (and its card) back.
    pub fn restore(self) -> Result<(), DeployError> {
        match &self.previous {
            Some(previous) => rename(previous, &self.path)?,
            None => std::fs::remove_file(&self.path).map_err(|source| DeployError::Io {
                what: "remove",
                path: self.path.clone(),
                source,
            })?,
        }
        if let Some((card, moved)) = &self.card {
            rename(moved, card)?;
        }
        Ok(())
    }
}

/// The file the previous model is kept in: `dir/NAME.onnx` -> `dir/NAME.previous.onnx`.
pub fn previous_path(path: &Path) -> PathBuf {
    path.with_extension("previous.onnx")
}

/// Checks `bytes` as model `name` of `config` and installs them over its file.
pub fn install(config: &Config, name: &str, bytes: &[u8]) -> Result<Installed, DeployError> {
    let (cfg, key) = if name == crate::models::DEFAULT {
        (&config.model, "model".to_owned())
    } else {
        match config.models.get(name) {
            Some(c) => (c, format!("models.{name}")),
            None => {
                return Err(DeployError::UnknownModel {
                    name: name.to_owned(),
                    known: crate::models::names(&config.models).join(", "),
                })
            }
        }
    };
    let Some(path) = cfg.path.clone() else {
        return Err(DeployError::Bundled {
            name: name.to_owned(),
            key,
        });
    };
    if bytes.is_empty() {
        return Err(DeployError::Empty);
    }
    pb::ModelProto::decode(bytes).map_err(|e| DeployError::NotOnnx {
        bytes: bytes.len(),
        why: e.to_string(),
    })?;
    // Staged beside the target (one file system, so the rename below is atomic) and loaded
    // with the replaced model's settings: input size, preprocessing, labels file.
    let staged = path.with_extension("upload.onnx");
    write_synced(&staged, bytes)?;
    let loaded = Model::load(&ModelConfig {
        path: Some(staged.clone()),
        ..cfg.clone()
    });
    if let Err(e) = loaded {
        let _ = std::fs::remove_file(&staged);
        return Err(DeployError::DoesNotLoad {
            name: name.to_owned(),
            why: crate::retry::chain(&e),
        });
    }
    let previous = if path.exists() {
        let p = previous_path(&path);
        rename(&path, &p)?;
        Some(p)
    } else {
        None
    };
    // The old card describes the old model: it goes with it.
    let card = card_path(&path);
    let card = match &previous {
        Some(p) if card.exists() => {
            let moved = card_path(p);
            rename(&card, &moved)?;
            Some((card, moved))
        }
        _ => None,
    };
    rename(&staged, &path)?;
    Ok(Installed {
        path,
        previous,
        card,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), DeployError> {
    let io = |source| DeployError::Io {
        what: "write",
        path: path.to_owned(),
        source,
    };
    let mut f = File::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

fn rename(from: &Path, to: &Path) -> Result<(), DeployError> {
    std::fs::rename(from, to).map_err(|source| DeployError::Io {
        what: "rename",
        path: from.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_file_sits_beside_with_its_own_card_name() {
        let p = Path::new("/m/plant.onnx");
        assert_eq!(previous_path(p), Path::new("/m/plant.previous.onnx"));
        assert_eq!(
            card_path(&previous_path(p)),
            Path::new("/m/plant.previous.card.json")
        );
        assert_eq!(
            previous_path(Path::new("/m/model")),
            Path::new("/m/model.previous.onnx")
        );
    }

    #[test]
    fn refusals_name_the_model_and_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("m.onnx");
        std::fs::write(&file, b"old").expect("write");
        let mut config = Config::parse("", crate::config::Origin::Embedded).expect("empty file");
        config.model.path = Some(file.clone());
        let e = install(&config, "other", b"x").unwrap_err().to_string();
        assert!(e.contains("\"other\"") && e.contains("default"), "{e}");
        let e = install(&config, "default", b"").unwrap_err();
        assert!(matches!(e, DeployError::Empty), "{e}");
        let e = install(&config, "default", b"\x08\x07garbage\xff\xff")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an ONNX model"), "{e}");
        assert_eq!(std::fs::read(&file).expect("read"), b"old");
        let bundled = Config::parse("", crate::config::Origin::Embedded).expect("empty file");
        let e = install(&bundled, "default", b"x").unwrap_err().to_string();
        assert!(e.contains("bundled") && e.contains("[model]"), "{e}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["m.onnx"]);
    }
}
