//! Model-run time per model: one histogram per model name, for the daemon with several models
//! (`[models.NAME]`). The workers record into them; `/metrics` exports them as
//! `lookout_model_inference_seconds{model="NAME"}`.

use std::sync::{Arc, RwLock};

use super::Histogram;

/// The per-model histograms, by name, in the order the models were first seen. The workers of
/// each generation look theirs up once ([`ModelTimes::of`]) and record without the lock; a
/// reload keeps the histograms of the names still in use ([`ModelTimes::keep`]).
#[derive(Debug, Default)]
pub struct ModelTimes {
    /// Written when a generation starts (workers and [`ModelTimes::keep`]), read by `/metrics`.
    by_name: RwLock<Vec<(String, Arc<Histogram>)>>,
}

impl ModelTimes {
    /// The histogram of model `name`, added when new.
    pub fn of(&self, name: &str) -> Arc<Histogram> {
        let mut list = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, h)) = list.iter().find(|(n, _)| n == name) {
            return Arc::clone(h);
        }
        let h = Arc::new(Histogram::default());
        list.push((name.to_owned(), Arc::clone(&h)));
        h
    }

    /// Drops the histograms of the models not in `names` (a reload that stopped using them).
    pub fn keep(&self, names: &[&str]) {
        self.by_name
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(n, _)| names.contains(&n.as_str()));
    }

    /// Every model's name and histogram.
    pub fn all(&self) -> Vec<(String, Arc<Histogram>)> {
        self.by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_model_has_its_own_histogram_and_a_reload_drops_the_unused() {
        let t = ModelTimes::default();
        t.of("default").record(Duration::from_millis(3));
        t.of("plant").record(Duration::from_millis(1));
        t.of("plant").record(Duration::from_millis(2));
        let counts: Vec<(String, u64)> = t
            .all()
            .iter()
            .map(|(n, h)| (n.clone(), h.count()))
            .collect();
        assert_eq!(counts, [("default".to_owned(), 1), ("plant".to_owned(), 2)]);
        t.keep(&["plant"]);
        let names: Vec<String> = t.all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["plant"]);
    }
}
