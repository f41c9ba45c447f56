//! The model card `NEW.card.json`: what the head was trained on and how well it did on the
//! validation images (accuracy, per-label precision and recall, the confusion matrix), and the
//! same as a table for the terminal. The daemon reads [`Card::validation_accuracy`] back for
//! `/api/status` ([`read_accuracy`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Images per label.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelCount {
    pub label: String,
    pub train: usize,
    pub validation: usize,
}

/// Precision and recall of one label on the validation images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelScore {
    pub label: String,
    /// Validation images of this label.
    pub support: usize,
    /// Of the images predicted as this label, the share that are (`null`: none predicted).
    pub precision: Option<f64>,
    /// Of this label's images, the share predicted as it (`null`: none in validation).
    pub recall: Option<f64>,
}

/// One `C` tried and how the head it gave did on the validation images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trial {
    pub c: f64,
    pub validation_accuracy: f64,
    pub validation_log_loss: f64,
}

/// An image left out, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Skipped {
    pub file: PathBuf,
    pub error: String,
}

/// `NEW.card.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Card {
    pub model: PathBuf,
    pub backbone: PathBuf,
    pub backbone_sha256: String,
    /// The feature tensor, and how it was found (the classifier node it feeds, or `--features`).
    pub features: String,
    pub features_found_by: String,
    pub feature_dim: usize,
    /// When it was trained (RFC 3339, UTC).
    pub date: String,
    pub labels: Vec<String>,
    pub counts: Vec<LabelCount>,
    pub skipped: Vec<Skipped>,
    pub preprocess: String,
    pub flip: bool,
    pub seed: u64,
    pub validation_fraction: f64,
    /// The L2 strengths tried (scikit-learn's `C`), the one chosen, and their scores.
    pub trials: Vec<Trial>,
    pub c: f64,
    /// Of the head trained on the training images with the chosen `C`; the head written was
    /// then refitted on every image with that `C`.
    pub validation_accuracy: f64,
    pub per_label: Vec<LabelScore>,
    /// Rows: the true label, columns: the predicted one (validation images).
    pub confusion: Vec<Vec<usize>>,
    pub embed_seconds: f64,
    pub train_seconds: f64,
    pub cached_embeddings: usize,
}

/// Accuracy, per-label scores and the confusion matrix of `predicted` against `truth`.
pub fn evaluate(
    truth: &[usize],
    predicted: &[usize],
    labels: &[String],
) -> (f64, Vec<LabelScore>, Vec<Vec<usize>>) {
    let k = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        confusion[t][p] += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let accuracy = if truth.is_empty() {
        0.0
    } else {
        correct as f64 / truth.len() as f64
    };
    let scores = (0..k)
        .map(|i| {
            let support: usize = confusion[i].iter().sum();
            let predicted: usize = confusion.iter().map(|r| r[i]).sum();
            let hit = confusion[i][i] as f64;
            LabelScore {
                label: labels[i].clone(),
                support,
                precision: (predicted > 0).then(|| hit / predicted as f64),
                recall: (support > 0).then(|| hit / support as f64),
            }
        })
        .collect();
    (accuracy, scores, confusion)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

impl Card {
    /// The card as a table for the terminal.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let width = self
            .labels
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(5)
            .max(5);
        s.push_str(&format!(
            "model:      {}\nbackbone:   {} (sha256 {})\nfeatures:   {} ({} values, found by {})\n",
            self.model.display(),
            self.backbone.display(),
            &self.backbone_sha256[..self.backbone_sha256.len().min(16)],
            self.features,
            self.feature_dim,
            self.features_found_by
        ));
        s.push_str(&format!(
            "images:     {} train, {} validation, {} skipped; flip {}; seed {}\n",
            self.counts.iter().map(|c| c.train).sum::<usize>(),
            self.counts.iter().map(|c| c.validation).sum::<usize>(),
            self.skipped.len(),
            if self.flip { "on" } else { "off" },
            self.seed
        ));
        s.push_str(&format!(
            "L2:         C = {} chosen of {}\n",
            self.c,
            self.trials
                .iter()
                .map(|t| format!("{} ({:.1}%)", t.c, t.validation_accuracy * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        s.push_str(&format!(
            "validation: accuracy {:.1}%\ntime:       embeddings {:.1} s ({} cached), training {:.1} s\n\n",
            self.validation_accuracy * 100.0,
            self.embed_seconds,
            self.cached_embeddings,
            self.train_seconds
        ));
        s.push_str(&format!(
            "{:width$}  {:>5}  {:>5}  {:>9}  {:>7}   confusion (rows true, columns predicted)\n",
            "label", "train", "val", "precision", "recall"
        ));
        for (i, (c, p)) in self.counts.iter().zip(&self.per_label).enumerate() {
            let row = self.confusion[i]
                .iter()
                .map(|v| format!("{v:>4}"))
                .collect::<String>();
            s.push_str(&format!(
                "{:width$}  {:>5}  {:>5}  {:>9}  {:>7}  {row}\n",
                c.label,
                c.train,
                c.validation,
                pct(p.precision),
                pct(p.recall)
            ));
        }
        for sk in &self.skipped {
            s.push_str(&format!("skipped: {}: {}\n", sk.file.display(), sk.error));
        }
        s
    }
}

/// The card's path beside a model: `NAME.onnx` -> `NAME.card.json`.
pub fn card_path(model: &Path) -> PathBuf {
    model.with_extension("card.json")
}

/// The validation accuracy of the card beside `model`, if there is one that can be read.
pub fn read_accuracy(model: &Path) -> Option<f64> {
    #[derive(Deserialize)]
    struct Accuracy {
        validation_accuracy: f64,
    }
    let text = std::fs::read_to_string(card_path(model)).ok()?;
    serde_json::from_str::<Accuracy>(&text)
        .ok()
        .map(|a| a.validation_accuracy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_recall_and_confusion() {
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let (acc, scores, confusion) = evaluate(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 1], &labels);
        assert_eq!(acc, 3.0 / 5.0);
        assert_eq!(confusion, vec![vec![1, 1, 0], vec![0, 2, 0], vec![0, 1, 0]]);
        assert_eq!(scores[0].precision, Some(1.0));
        assert_eq!(scores[0].recall, Some(0.5));
        assert_eq!(scores[1].precision, Some(0.5));
        assert_eq!(scores[2].precision, None);
        assert_eq!(scores[2].recall, Some(0.0));
    }

    #[test]
    fn card_sits_beside_the_model() {
        assert_eq!(
            card_path(Path::new("m/new.onnx")),
            Path::new("m/new.card.json")
        );
    }
}
