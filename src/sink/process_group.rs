//! A command's process group: signalling it, and telling whether anything in it still runs.
//!
//! The `command` sink starts each program as the leader of a group of its own and stops the
//! group with these. "Still runs" must not count zombies: a member that has exited but is not
//! reaped yet still answers `killpg(pgid, 0)`, and the members a program leaves behind are
//! reparented to init, which reaps them when it likes (seconds, on some hosts). So liveness is
//! read from `/proc` (Linux, where lookout runs), falling back to `killpg` where it cannot be
//! read.

/// Sends `sig` to process group `pgid`. `Ok(false)`: the group has no process left (ESRCH).
pub(super) fn signal(pgid: libc::pid_t, sig: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: killpg takes two integers and touches no memory of ours; `pgid` is the pid of a
    // child we spawned as its own group leader and have not reaped, or the group it led.
    let rc = unsafe { libc::killpg(pgid, sig) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Whether a process of group `pgid` still runs (is not a zombie).
pub(super) fn alive(pgid: libc::pid_t) -> std::io::Result<bool> {
    if !signal(pgid, 0)? {
        return Ok(false);
    }
    Ok(running_members(pgid).is_none_or(|n| n > 0))
}

/// How many processes of group `pgid` are not zombies, from `/proc/*/stat`; `None` when
/// `/proc` cannot be read.
fn running_members(pgid: libc::pid_t) -> Option<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Gone meanwhile: not running.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if stat_is_running_member(&stat, pgid) {
            n += 1;
        }
    }
    Some(n)
}

/// Whether a `/proc/PID/stat` line ("pid (comm) state ppid pgrp ...") is of a process in group
/// `pgid` that is not a zombie. `comm` may hold spaces and parentheses: the fields start after
/// the last ')'.
fn stat_is_running_member(stat: &str, pgid: libc::pid_t) -> bool {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    let pgrp = fields.nth(1).and_then(|g| g.parse::<libc::pid_t>().ok());
    pgrp == Some(pgid) && !matches!(state, Some("Z") | Some("X") | None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_after_the_command_name() {
        let line = "4242 (odd) name)) S 1 777 777 0 -1 4194560 100 0 0 0";
        assert!(stat_is_running_member(line, 777));
        assert!(!stat_is_running_member(line, 4242));
        assert!(!stat_is_running_member(
            "4243 (sleep) Z 1 777 777 0 -1",
            777
        ));
        assert!(!stat_is_running_member("garbage", 777));
    }

    #[test]
    fn a_group_of_zombies_is_not_alive() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .expect("sleep");
        let pgid = child.id() as libc::pid_t;
        // The group exists once the child has run its setpgid: before spawn returns on Linux
        // (posix_spawn's vfork), but maybe later under qemu-user (the ARM tests), which runs
        // vfork as fork.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !signal(pgid, 0).expect("signal") && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(alive(pgid).expect("alive"));
        signal(pgid, libc::SIGKILL).expect("kill");
        // Killed but not reaped: a zombie, still a member for killpg.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while alive(pgid).expect("alive") && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(pgid).expect("alive"), "only a zombie is left");
        assert!(
            signal(pgid, 0).expect("signal"),
            "the zombie still counts for killpg"
        );
        child.wait().expect("reap");
        assert!(
            !signal(pgid, 0).expect("signal"),
            "reaped: the group is gone"
        );
    }
}
