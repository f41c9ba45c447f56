//! Retrying at run time: capped exponential back-off with jitter (reopening a source,
//! reconnecting a sink) and the one-line error chain logged with each failure.

use std::time::{Duration, SystemTime};

/// Capped exponential back-off with jitter, for reopening sources.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            next: min,
            min,
            max,
            seed,
        }
    }

    /// The next delay: doubling from `min` up to `max`, each with +-20% jitter.
    pub fn next_delay(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.8 + 0.4 * (self.seed % 1000) as f64 / 1000.0;
        let d = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// The whole error chain of `e` on one line: `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let d: Vec<f64> = (0..6)
            .map(|_| b.next_delay().as_secs_f64() * 1000.0)
            .collect();
        let nominal = [100.0, 200.0, 400.0, 800.0, 1000.0, 1000.0];
        for (got, want) in d.iter().zip(nominal) {
            assert!(
                *got >= want * 0.8 - 1e-9 && *got <= want * 1.2 + 1e-9,
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[test]
    fn chain_joins_causes() {
        let e = crate::source::SourceError::Io {
            what: "cannot open x".into(),
            source: std::io::Error::other("denied"),
        };
        assert_eq!(chain(&e), "cannot open x: denied");
    }
}
