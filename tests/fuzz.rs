//! The fuzz targets ([`lookout::fuzz`]) on every `cargo test`: each committed corpus input
//! (`fuzz/corpus/<target>/`, seeds plus what `cargo fuzz` runs found worth keeping), then
//! deterministic mutations of them (bit flips, byte insertions and deletions, truncations,
//! splices of two inputs, runs of 0x00/0xFF). A panic, a failed invariant or an endless loop in a
//! parser fails the test. `cargo fuzz` (see `fuzz/README.md`) explores much further.

use std::path::Path;

/// Mutations per target per run; `LOOKOUT_FUZZ_ROUNDS` sets more for a longer local campaign.
fn rounds() -> usize {
    std::env::var("LOOKOUT_FUZZ_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).expect("read corpus file"))
        .collect();
    assert!(
        inputs.len() >= 2,
        "corpus {} holds {} inputs",
        dir.display(),
        inputs.len()
    );
    inputs
}

fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..=rng.below(4) {
        let len = v.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(16).min(len - i);
                v.drain(i..i + n);
            }
            3 => v.truncate(rng.below(len + 1)),
            4 => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(64).min(len - i);
                let b = if rng.below(2) == 0 { 0x00 } else { 0xFF };
                v[i..i + n].fill(b);
            }
            _ if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

fn run(target: &str, f: fn(&[u8])) {
    let inputs = corpus(target);
    for input in &inputs {
        f(input);
    }
    let seed = std::env::var("LOOKOUT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15u64);
    let mut rng = Rng((seed ^ target.len() as u64) | 1);
    for round in 0..rounds() {
        let base = &inputs[round % inputs.len()];
        let other = &inputs[rng.below(inputs.len())];
        let input = mutate(&mut rng, base, other);
        let result = std::panic::catch_unwind(|| f(&input));
        if result.is_err() {
            let keep = std::env::temp_dir().join(format!("lookout-fuzz-{target}-{round}.bin"));
            let _ = std::fs::write(&keep, &input);
            panic!(
                "fuzz target {target} failed on mutation {round}; input saved to {}",
                keep.display()
            );
        }
    }
}

#[test]
fn frame() {
    run("frame", lookout::fuzz::frame);
}

#[test]
fn jpeg_stream() {
    run("jpeg_stream", lookout::fuzz::jpeg_stream);
}

#[test]
fn multipart() {
    run("multipart", lookout::fuzz::multipart);
}

#[test]
fn config() {
    run("config", lookout::fuzz::config);
}

#[test]
fn labels() {
    run("labels", lookout::fuzz::labels);
}
