//! `lookout train`: a classifier head trained on the device on top of an existing ONNX
//! backbone, written as a new ONNX model lookout and onnxruntime both load.
//!
//! The steps, one file each: `data` reads `DIR/<label>/<image>` and splits it per label with
//! a fixed seed; `graph` finds the backbone's feature tensor (the input of its final
//! Gemm/MatMul, or `--features`), cuts the graph there and later adds the Gemm head; `embed`
//! runs every image through the cut backbone with lookout's own engine on all cores (with a
//! cache keyed by file hash); `logistic` fits a multinomial logistic regression (standardised
//! features, class weights for imbalance, L2 strength chosen on the validation images); `card`
//! writes `NEW.card.json` and the table printed at the end. This module runs them in order and
//! knows nothing of the daemon.

pub mod card;
pub mod data;
pub mod embed;
pub mod graph;
pub mod logistic;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::model::{Model, ModelConfig, ModelError};
use card::{Card, LabelCount, Skipped, Trial};
use logistic::{FitOptions, Head, Matrix, Standardizer};

/// The L2 strengths (scikit-learn's `C`) tried on the validation images, weakest penalty last.
pub const C_GRID: [f64; 5] = [0.01, 0.03, 0.1, 0.3, 1.0];

/// What `lookout train` is asked to do.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub backbone: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    /// The feature tensor (or node) to train on; `None`: the final classifier's input.
    pub features: Option<String>,
    /// The backbone's `[model]` settings: preprocessing, kernels, input shape (its `path` is
    /// replaced by `backbone`).
    pub model: ModelConfig,
    /// Also train on each training image flipped left-right.
    pub flip: bool,
    /// Share of each label's images held out for validation.
    pub validation: f64,
    pub seed: u64,
    /// Embedding cache folder; `None`: no cache.
    pub cache: Option<PathBuf>,
    /// Embedding threads (0: one per core).
    pub threads: usize,
    /// Hand the result to the quantizer (not wired yet: an error that says what to run).
    pub quantize: bool,
}

/// Why training could not run. Each names the file or folder at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("--quantize is not wired into train yet: train without it, then run `lookout quantize --model NEW.onnx --calibrate DATA --out NEW-int8.onnx` (with an fp32 backbone)")]
    NoQuantizer,
    #[error("cannot read training data {path}: --data must be a folder with one subfolder of images per label")]
    Data {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has {found} label folder(s); training needs at least two (one subfolder of images per label)")]
    Classes { path: PathBuf, found: usize },
    #[error("label folder {path} holds no images (.jpg, .jpeg, .png, .bmp, .ppm, .pgm): add some or remove the folder")]
    EmptyClass { path: PathBuf },
    #[error("label folder {path}: none of its {count} images could be read (see the skipped images above)")]
    NoUsableImages { path: PathBuf, count: usize },
    #[error("label folder {path}: only one of its {count} images could be read; each label needs at least 2 (one to train on, one to validate with): add images")]
    OneUsableImage { path: PathBuf, count: usize },
    #[error("{path}: too few images to validate: each label needs at least 2 (found {images} images in all)")]
    TooFew { path: PathBuf, images: usize },
    #[error("cannot read backbone {path}")]
    ReadBackbone {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("backbone {path}: {why}")]
    Backbone { path: PathBuf, why: String },
    #[error("backbone {path}: no recognisable classifier ({why}); name the feature tensor with --features NODE (e.g. the global pooling's output)")]
    NoClassifier { path: PathBuf, why: String },
    #[error("backbone {path}: --features {name:?} is neither a node nor a tensor computed by one")]
    NoSuchFeatures { path: PathBuf, name: String },
    #[error("cannot load the backbone cut at its features")]
    Model(#[source] ModelError),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The default embedding cache: `${XDG_CACHE_HOME:-~/.cache}/lookout/embeddings`.
pub fn default_cache() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|c| c.join("lookout/embeddings"))
}

/// Trains and writes `opts.out` and its card; prints the card's table to `out`.
pub fn run(opts: &TrainOptions, out: &mut dyn Write) -> Result<Card, TrainError> {
    if opts.quantize {
        return Err(TrainError::NoQuantizer);
    }
    let dataset = data::scan(&opts.data)?;
    let bytes = std::fs::read(&opts.backbone).map_err(|source| TrainError::ReadBackbone {
        path: opts.backbone.clone(),
        source,
    })?;
    let backbone_sha = crate::digest::sha256_hex(&bytes);
    let proto = graph::decode(&bytes, &opts.backbone)?;
    drop(bytes);
    let features = graph::find_features(
        proto.graph.as_ref().expect("decode checked the graph"),
        opts.features.as_deref(),
        &opts.backbone,
    )?;
    let cut = graph::cut(&proto, &features);
    drop(proto);
    let cfg = ModelConfig {
        path: Some(opts.backbone.clone()),
        labels: None,
        output: Some(crate::model::OutputKind::Logits),
        ..opts.model.clone()
    };
    let name = format!("{} (cut at {})", opts.backbone.display(), features.tensor);
    let model = Arc::new(
        Model::load_proto(&cfg, name, cut.clone(), Instant::now()).map_err(TrainError::Model)?,
    );
    let context = format!(
        "lookout-embeddings-v1|{backbone_sha}|{}|{:?}|{:?}|{:?}",
        features.tensor,
        model.preprocess,
        model.input.shape(),
        cfg.kernels
    );
    let cache = opts
        .cache
        .as_ref()
        .map(|root| embed::Cache::new(root, &context));
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let files: Vec<PathBuf> = dataset.images.iter().map(|(p, _)| p.clone()).collect();
    let embedded = embed::embed_all(&model, &files, opts.flip, cache.as_ref(), threads)?;
    let preprocess = format!("{:?}", model.preprocess);
    drop(model);

    let k = dataset.labels.len();
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for ((path, label), r) in dataset.images.iter().zip(embedded.results) {
        match r {
            Ok(e) => usable.push((e, *label)),
            Err(error) => {
                log::warn!(
                    "Skipped an image that cannot be embedded. image={} error={error}",
                    path.display()
                );
                skipped.push(Skipped {
                    file: path.clone(),
                    error,
                })
            }
        }
    }
    // Each label needs two usable images: one to train on and one to validate with.
    for (c, label) in dataset.labels.iter().enumerate() {
        let count = dataset.images.iter().filter(|(_, l)| *l == c).count();
        match usable.iter().filter(|(_, l)| *l == c).count() {
            0 => {
                return Err(TrainError::NoUsableImages {
                    path: opts.data.join(label),
                    count,
                })
            }
            1 => {
                return Err(TrainError::OneUsableImage {
                    path: opts.data.join(label),
                    count,
                })
            }
            _ => {}
        }
    }
    let dim = usable[0].0.plain.len();
    if let Some((e, _)) = usable.iter().find(|(e, _)| e.plain.len() != dim) {
        return Err(TrainError::Backbone {
            path: opts.backbone.clone(),
            why: format!(
                "feature tensor {} has {} values for one image and {dim} for another",
                features.tensor,
                e.plain.len()
            ),
        });
    }
    let trained = Instant::now();
    let y: Vec<usize> = usable.iter().map(|(_, l)| *l).collect();
    let (train_idx, val_idx) = data::stratified_split(&y, k, opts.validation, opts.seed);
    if val_idx.is_empty() {
        return Err(TrainError::TooFew {
            path: opts.data.clone(),
            images: usable.len(),
        });
    }
    let rows = |idx: &[usize], flips: bool| {
        let mut x = Matrix::new(dim);
        let mut labels = Vec::new();
        for &i in idx {
            let (e, l) = &usable[i];
            x.push(&e.plain);
            labels.push(*l);
            if let Some(f) = e.flipped.as_ref().filter(|_| flips) {
                x.push(f);
                labels.push(*l);
            }
        }
        (x, labels)
    };
    let (x_train, y_train) = rows(&train_idx, opts.flip);
    let (x_val, y_val) = rows(&val_idx, false);
    let st = Standardizer::fit(&x_train);
    let (z_train, z_val) = (st.apply(&x_train), st.apply(&x_val));
    let weights = sample_weights(&y_train, k);
    let (chosen, chosen_head, trials) = choose_c(
        &Split {
            x: &z_train,
            y: &y_train,
        },
        &weights,
        &Split {
            x: &z_val,
            y: &y_val,
        },
        &dataset.labels,
    );
    let predicted: Vec<usize> = (0..z_val.rows)
        .map(|i| chosen_head.predict(z_val.row(i)))
        .collect();
    let (accuracy, per_label, confusion) = card::evaluate(&y_val, &predicted, &dataset.labels);

    // The head written: refitted on every image with the chosen C.
    let all: Vec<usize> = (0..usable.len()).collect();
    let (x_all, y_all) = rows(&all, opts.flip);
    let st_all = Standardizer::fit(&x_all);
    let fit_opts = FitOptions {
        c: chosen.c,
        ..FitOptions::default()
    };
    let (head, _) = logistic::fit(
        &st_all.apply(&x_all),
        &y_all,
        &sample_weights(&y_all, k),
        k,
        fit_opts,
        Some(&chosen_head),
    );
    let folded = head.fold(&st_all);
    let train_seconds = trained.elapsed().as_secs_f64();

    let new = graph::with_head(
        &cut,
        &folded,
        &dataset.labels,
        &[
            ("lookout_backbone_sha256", backbone_sha.clone()),
            ("lookout_features", features.tensor.clone()),
            (crate::model::CARD_ACCURACY_KEY, format!("{accuracy}")),
        ],
    );
    let write = |path: &PathBuf, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| TrainError::Write {
            path: path.clone(),
            source,
        })
    };
    write(&opts.out, &graph::encode(&new))?;
    let counts = dataset
        .labels
        .iter()
        .enumerate()
        .map(|(c, label)| LabelCount {
            label: label.clone(),
            train: train_idx.iter().filter(|&&i| usable[i].1 == c).count(),
            validation: val_idx.iter().filter(|&&i| usable[i].1 == c).count(),
        })
        .collect();
    let card = Card {
        model: opts.out.clone(),
        backbone: opts.backbone.clone(),
        backbone_sha256: backbone_sha,
        features: features.tensor.clone(),
        features_found_by: features.found_by.clone(),
        feature_dim: dim,
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        labels: dataset.labels.clone(),
        counts,
        skipped,
        preprocess,
        flip: opts.flip,
        seed: opts.seed,
        validation_fraction: opts.validation,
        trials,
        c: chosen.c,
        validation_accuracy: accuracy,
        per_label,
        confusion,
        embed_seconds: embedded.elapsed.as_secs_f64(),
        train_seconds,
        cached_embeddings: embedded.cached,
    };
    let card_path = card::card_path(&opts.out);
    let json = serde_json::to_vec_pretty(&card).expect("a card serialises");
    write(&card_path, &json)?;
    let _ = write!(out, "{}", card.render());
    let _ = writeln!(
        out,
        "wrote:      {} and {}",
        opts.out.display(),
        card_path.display()
    );
    Ok(card)
}

/// Rows and their labels.
struct Split<'a> {
    x: &'a Matrix,
    y: &'a [usize],
}

/// Fits a head for each `C` of [`C_GRID`] on `train` (each starting from the previous one) and
/// returns the best on `val` (accuracy, then log loss), its head, and every trial.
fn choose_c(
    train: &Split,
    weights: &[f64],
    val: &Split,
    labels: &[String],
) -> (Trial, Head, Vec<Trial>) {
    let k = labels.len();
    let mut trials = Vec::new();
    let mut best: Option<(Trial, Head)> = None;
    let mut warm: Option<Head> = None;
    for c in C_GRID {
        let opts = FitOptions {
            c,
            ..FitOptions::default()
        };
        let (head, iters) = logistic::fit(train.x, train.y, weights, k, opts, warm.as_ref());
        let predicted: Vec<usize> = (0..val.x.rows)
            .map(|i| head.predict(val.x.row(i)))
            .collect();
        let (acc, _, _) = card::evaluate(val.y, &predicted, labels);
        let loss = (0..val.x.rows)
            .map(|i| -head.proba(val.x.row(i))[val.y[i]].max(1e-300).ln())
            .sum::<f64>()
            / val.x.rows.max(1) as f64;
        log::info!("Tried an L2 strength. c={c} iterations={iters} validation_accuracy={acc:.4} validation_log_loss={loss:.4}");
        let trial = Trial {
            c,
            validation_accuracy: acc,
            validation_log_loss: loss,
        };
        let better = best.as_ref().is_none_or(|(b, _)| {
            acc > b.validation_accuracy
                || (acc == b.validation_accuracy && loss < b.validation_log_loss)
        });
        if better {
            best = Some((trial.clone(), head.clone()));
        }
        trials.push(trial);
        warm = Some(head);
    }
    let (chosen, head) = best.expect("C_GRID is not empty");
    (chosen, head, trials)
}

/// Balanced class weights, one per sample.
fn sample_weights(y: &[usize], classes: usize) -> Vec<f64> {
    let per_class = logistic::balanced_weights(y, classes);
    y.iter().map(|&c| per_class[c]).collect()
}
