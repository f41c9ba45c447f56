//! The `modbus` sink against a real Modbus server (pymodbus, tests/fixtures/modbus_server.py) on
//! loopback: the `lookout` binary writes coils and registers over TCP or over RTU through a socat
//! pseudo-terminal pair, and the test reads them back over a second TCP port of the same
//! datastore. Needs python with pymodbus (LOOKOUT_PYTHON, else .venv/bin/python) and socat:
//! scripts/test installs both.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_port, get, sample, wait_until, Daemon};
use tokio_modbus::client::sync::Reader;

fn python() -> PathBuf {
    let py = std::env::var_os("LOOKOUT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", "import pymodbus, serial"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import pymodbus and pyserial: run scripts/test (it makes .venv and installs requirements.txt), or set LOOKOUT_PYTHON to a python that has them",
        py.display()
    );
    py
}

/// A running child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The fixture server, up once it printed "ready".
fn server(args: &[String]) -> Proc {
    let mut child = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/modbus_server.py"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the modbus fixture server");
    let out = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    assert_eq!(
        line.trim(),
        "ready",
        "fixture server did not start: {args:?}"
    );
    Proc(child)
}

/// Coils and holding registers read back over the readback port (a fresh connection each time:
/// the server may have been restarted).
fn coils(port: u16, addr: u16, n: u16) -> Option<Vec<bool>> {
    let mut ctx = tokio_modbus::client::sync::tcp::connect_slave_with_timeout(
        ([127, 0, 0, 1], port).into(),
        tokio_modbus::Slave(1),
        Some(Duration::from_secs(2)),
    )
    .ok()?;
    ctx.read_coils(addr, n).ok()?.ok()
}

fn registers(port: u16, addr: u16, n: u16) -> Option<Vec<u16>> {
    let mut ctx = tokio_modbus::client::sync::tcp::connect_slave_with_timeout(
        ([127, 0, 0, 1], port).into(),
        tokio_modbus::Slave(1),
        Some(Duration::from_secs(2)),
    )
    .ok()?;
    ctx.read_holding_registers(addr, n).ok()?.ok()
}

/// Coil 0 pulses per "scratch" event, coil 1 follows every event, coil 2 (safe = on) matches no
/// event and so always shows the safe value; registers 10.. get the event, 20 the heartbeat.
fn sink_config(link: &str) -> String {
    format!(
        "[source]\ntype = \"synthetic\"\nfps = 10\n\
         [[sinks]]\ntype = \"modbus\"\nname = \"plc\"\n{link}\n\
         timeout_ms = 500\nreconnect_min_secs = 0.1\nreconnect_max_secs = 0.5\n\
         coils = [{{ address = 0, hold_ms = 300, labels = [\"scratch\"] }}, {{ address = 1, mode = \"follow\", hold_ms = 3000 }}, {{ address = 2, safe = true, labels = [\"no-such-label\"] }}]\n\
         label_register = 10\nscore_register = 11\ncounter_register = 12\nframe_seq_register = 13\n\
         heartbeat_register = 20\nheartbeat_secs = 0.2\n"
    )
}

fn sigterm(d: &mut Daemon) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status();
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = d.child.try_wait().ok().flatten();
        status.is_some()
    });
    status.expect("lookout exits within 20 s of SIGTERM")
}

fn metric(d: &Daemon, name: &str) -> f64 {
    let body = String::from_utf8(get(&format!("{}/metrics", d.base), None).1).expect("utf8");
    sample(&body, &format!("{name}{{sink=\"plc\"}}"))
}

#[test]
fn tcp_writes_events_and_heartbeat_survives_a_server_restart_and_sigterm_leaves_coils_safe() {
    let (port, readback) = (free_port(), free_port());
    let ports = vec![
        "--tcp".to_string(),
        port.to_string(),
        "--tcp".into(),
        readback.to_string(),
    ];
    let srv = server(&ports);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::start(
        dir.path(),
        &sink_config(&format!("host = \"127.0.0.1\"\nport = {port}")),
        "",
        &[],
    );

    // Events arrive: the follow coil is on, the safe-on coil shows its safe value, registers fill.
    let live = wait_until(Duration::from_secs(60), || {
        coils(readback, 0, 3).is_some_and(|c| c[1] && c[2])
            && registers(readback, 12, 1).is_some_and(|r| r[0] > 0)
    });
    assert!(
        live,
        "follow coil on and events counted: coils={:?} regs={:?}",
        coils(readback, 0, 3),
        registers(readback, 10, 5)
    );
    let first = registers(readback, 10, 5).expect("registers");
    let seq = |r: &[u16]| (u32::from(r[3]) << 16) | u32::from(r[4]);
    let counting = wait_until(Duration::from_secs(10), || {
        registers(readback, 10, 5).is_some_and(|r| r[2] > first[2] && seq(&r) > seq(&first))
    });
    assert!(
        counting,
        "the event counter and the frame sequence (high word first) go up: {first:?} then {:?}",
        registers(readback, 10, 5)
    );
    let r = registers(readback, 10, 5).expect("registers");
    assert!(r[0] < 4, "label index of one of the 4 labels: {r:?}");
    assert!(r[1] > 0 && r[1] <= 1000, "score x1000: {r:?}");
    let h1 = registers(readback, 20, 1).expect("heartbeat")[0];
    let beating = wait_until(Duration::from_secs(5), || {
        registers(readback, 20, 1).is_some_and(|h| h[0] > h1)
    });
    assert!(beating, "the heartbeat register increments (was {h1})");
    assert!(metric(&d, "lookout_sink_link_writes_total") > 0.0);
    assert_eq!(metric(&d, "lookout_sink_link_connected"), 1.0);

    // The server dies: writes fail, the sink shows disconnected and keeps retrying.
    drop(srv);
    let down = wait_until(Duration::from_secs(20), || {
        metric(&d, "lookout_sink_link_connected") == 0.0
            && metric(&d, "lookout_sink_link_write_failures_total") > 0.0
    });
    assert!(down, "the sink notices the server is gone");
    let status: serde_json::Value = common::get_json(&format!("{}/api/status", d.base));
    let text = status.to_string();
    assert!(
        text.contains("\"write_failures\""),
        "status shows link counters: {text}"
    );

    // A new server starts with every coil off: the sink reconnects and restores the follow coil
    // (on) and the safe-on coil.
    let _srv = server(&ports);
    let restored = wait_until(Duration::from_secs(30), || {
        coils(readback, 0, 3).is_some_and(|c| c[1] && c[2])
    });
    assert!(
        restored,
        "coils restored after reconnect: {:?}",
        coils(readback, 0, 3)
    );
    assert!(metric(&d, "lookout_sink_link_connects_total") >= 2.0);

    // SIGTERM: lookout exits cleanly and leaves every coil at its safe value.
    let status = sigterm(&mut d);
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    assert_eq!(
        coils(readback, 0, 3),
        Some(vec![false, false, true]),
        "safe state after SIGTERM"
    );
}

#[test]
fn rtu_over_a_socat_pty_pair_writes_coils_and_registers_and_sigterm_leaves_them_safe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let socat = Command::new("socat")
        .args(["-d", "-d"])
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stderr(Stdio::null())
        .spawn();
    let _socat =
        Proc(socat.expect("socat must be installed: run scripts/test (it installs socat)"));
    assert!(
        wait_until(Duration::from_secs(10), || a.exists() && b.exists()),
        "socat made the pty pair"
    );
    let readback = free_port();
    let _srv = server(&[
        "--tcp".into(),
        readback.to_string(),
        "--rtu".into(),
        b.display().to_string(),
        "--baud".into(),
        "19200".into(),
    ]);
    let mut d = Daemon::start(
        dir.path(),
        &sink_config(&format!(
            "transport = \"rtu\"\ndevice = \"{}\"\nbaud = 19200\nunit_id = 1",
            a.display()
        )),
        "",
        &[],
    );
    let live = wait_until(Duration::from_secs(60), || {
        coils(readback, 0, 3).is_some_and(|c| c[1] && c[2])
            && registers(readback, 12, 1).is_some_and(|r| r[0] > 0)
    });
    assert!(
        live,
        "RTU writes arrive: coils={:?} regs={:?}",
        coils(readback, 0, 3),
        registers(readback, 10, 5)
    );
    let h1 = registers(readback, 20, 1).expect("heartbeat")[0];
    assert!(
        wait_until(Duration::from_secs(5), || registers(readback, 20, 1)
            .is_some_and(|h| h[0] > h1)),
        "heartbeat over RTU"
    );
    let status = sigterm(&mut d);
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    assert_eq!(coils(readback, 0, 3), Some(vec![false, false, true]));
}

#[test]
fn check_rejects_bad_modbus_addresses_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (sink, key) in [
        (
            "host = \"plc\"\ncoils = [{ address = 0 }, { address = 65536 }]",
            "sinks[1].coils[1].address",
        ),
        (
            "host = \"plc\"\nframe_seq_register = 65535",
            "sinks[1].frame_seq_register",
        ),
        (
            "transport = \"rtu\"\ncoils = [{ address = 0 }]",
            "sinks[1].device",
        ),
        ("host = \"plc\"", "sinks[1].coils"),
    ] {
        let conf = dir.path().join("bad.toml");
        std::fs::write(
            &conf,
            format!("[[sinks]]\ntype = \"log\"\n[[sinks]]\ntype = \"modbus\"\n{sink}\n"),
        )
        .expect("write config");
        let out = common::lookout_command()
            .args(["check", "--config"])
            .arg(&conf)
            .output()
            .expect("lookout check runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sink}: {err}");
        assert!(err.contains(key), "{sink}: expected {key} in: {err}");
    }
}
