//! The progress line long commands (`train`'s embeddings, `quantize`'s calibration) draw on
//! stderr, only when stderr is a terminal: `label [#####     ] done/total extra`.

use std::io::{IsTerminal, Write};

/// Width of the bar in characters.
const WIDTH: usize = 30;

/// One progress line.
pub struct Progress {
    label: &'static str,
    tty: bool,
}

impl Progress {
    pub fn new(label: &'static str) -> Progress {
        Progress {
            label,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Whether the line is drawn at all.
    pub fn shown(&self) -> bool {
        self.tty
    }

    /// Redraws the line: `done` of `total`, then `extra`.
    pub fn show(&self, done: usize, total: usize, extra: &str) {
        if !self.tty {
            return;
        }
        let filled = (done.min(total) * WIDTH)
            .checked_div(total)
            .unwrap_or(WIDTH);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{}{}] {done}/{total}{extra}",
            self.label,
            "#".repeat(filled),
            " ".repeat(WIDTH - filled)
        );
        let _ = err.flush();
    }

    /// Ends the line.
    pub fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
