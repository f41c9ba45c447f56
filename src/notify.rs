//! systemd service notifications (`Type=notify`, `WatchdogSec=`), without libsystemd.
//!
//! systemd passes a datagram socket in `NOTIFY_SOCKET` (a path, or an abstract name starting
//! with `@`) and, with a watchdog, its interval in `WATCHDOG_USEC` (and the process it is meant
//! for in `WATCHDOG_PID`). [`Notifier::from_env`] reads them once and removes them from the
//! environment, so the programs lookout starts (pipe sources, command sinks) do not inherit
//! them. Outside systemd every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The connection to systemd's notification socket, when there is one.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads (and removes) `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. Call it early in
    /// `main`, before other threads start: it changes the process environment.
    pub fn from_env() -> Notifier {
        let path = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(var);
        }
        let for_us = pid
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        let socket = path.and_then(|p| match connect(&p) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!(
                    "Cannot reach systemd's notification socket; readiness and watchdog pings are off. socket={p:?} error={e}"
                );
                None
            }
        });
        Notifier {
            watchdog: watchdog.filter(|_| socket.is_some()),
            socket,
        }
    }

    /// Whether systemd is listening.
    pub fn active(&self) -> bool {
        self.socket.is_some()
    }

    /// The watchdog interval systemd expects pings within, when it runs one.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// `READY=1` with a status line: the model is loaded and frames flow.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the pipeline is making progress.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// `STOPPING=1`: shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=Stopping");
    }

    /// A status line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.socket {
            if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
                log::debug!("systemd notification failed. message={msg:?} error={e}");
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn connect(
    path: &std::ffi::OsStr,
) -> std::io::Result<(UnixDatagram, std::os::unix::net::SocketAddr)> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::SocketAddr;
    let bytes = path.as_bytes();
    let addr = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        Some(b'/') => SocketAddr::from_pathname(path)?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "expected an absolute path or an @abstract name",
            ))
        }
    };
    Ok((UnixDatagram::unbound()?, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_listening_socket_and_nothing_breaks_without_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind");
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = Notifier {
            socket: Some(connect(path.as_os_str()).expect("connect")),
            watchdog: Some(Duration::from_secs(30)),
        };
        let mut buf = [0u8; 256];
        n.ready("Running\nsource=synthetic");
        let len = listener.recv(&mut buf).expect("READY");
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=Running source=synthetic");
        n.watchdog();
        let len = listener.recv(&mut buf).expect("WATCHDOG");
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        n.stopping();
        let len = listener.recv(&mut buf).expect("STOPPING");
        assert!(buf[..len].starts_with(b"STOPPING=1"));

        let none = Notifier::default();
        assert!(!none.active() && none.watchdog_interval().is_none());
        none.ready("x");
        none.watchdog();
    }

    #[test]
    fn abstract_socket_names_are_supported() {
        let name = format!("lookout-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(
            &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
                name.as_bytes(),
            )
            .expect("abstract addr"),
        )
        .expect("bind abstract");
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let n = Notifier {
            socket: Some(connect(std::ffi::OsStr::new(&format!("@{name}"))).expect("connect")),
            watchdog: None,
        };
        n.status("hello");
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).expect("STATUS");
        assert_eq!(&buf[..len], b"STATUS=hello");
    }
}
