//! Validation problems: the key path of a config value and what is wrong with it, collected
//! by every component's pure `validate()` and reported together by [`crate::config`].

use std::fmt;

/// One validation problem: the key path (`sinks[1].path`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Collects [`Problem`]s during validation.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Checks `lo <= value <= hi`, else records "expected lo..=hi, got value".
    pub fn range<T: PartialOrd + fmt::Display>(&mut self, key: &str, value: T, lo: T, hi: T) {
        if !(value >= lo && value <= hi) {
            self.push(
                key,
                format!("expected a value from {lo} to {hi}, got {value}"),
            );
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
