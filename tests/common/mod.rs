//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared test assets (`../shared/assets`, see its README): `LOOKOUT_ASSETS`, else the
/// folder beside the checkout. A test that needs them fails with a clear message when they are
/// missing; only an explicit `LOOKOUT_SKIP_ASSET_TESTS=1` turns that into a printed skip.
pub fn assets() -> Option<PathBuf> {
    let dir = std::env::var_os("LOOKOUT_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/assets"));
    if dir.join("README.md").exists() {
        return Some(dir);
    }
    if std::env::var("LOOKOUT_SKIP_ASSET_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED: test assets not found at {} (LOOKOUT_SKIP_ASSET_TESTS=1)",
            dir.display()
        );
        return None;
    }
    panic!(
        "test assets not found at {}: set LOOKOUT_ASSETS to the shared assets folder (or LOOKOUT_SKIP_ASSET_TESTS=1 to skip)",
        dir.display()
    );
}

/// The `lookout` binary built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lookout"))
}

/// A command that runs the `lookout` binary built for these tests. When the tests themselves run
/// under an emulator (`scripts/build-arm.sh --test`), `LOOKOUT_TEST_RUNNER` names it (program and
/// arguments, space-separated), because the host cannot exec a foreign binary directly.
pub fn lookout_command() -> std::process::Command {
    match std::env::var("LOOKOUT_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut cmd = std::process::Command::new(parts.next().expect("non-empty runner"));
            cmd.args(parts).arg(bin());
            cmd
        }
        _ => std::process::Command::new(bin()),
    }
}
