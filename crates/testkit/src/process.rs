//! Small process and port helpers shared by the guards.
//!
//! `unsafe` is forbidden in this workspace, so signals other than SIGKILL go through the
//! `kill(1)` program rather than `libc::kill`, and process state is read from `/proc`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

/// A port on 127.0.0.1 that was free a moment ago.
///
/// The listener is dropped before the port is used, so another process could take it in
/// between; callers that can retry on "address in use" do so.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Sends `signal` (a name such as `INT`, `QUIT`, `STOP`, `KILL`) to `pid`.
pub(crate) fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "kill -s {signal} {pid} failed: {status}");
    Ok(())
}

/// Whether `pid` no longer runs: gone from `/proc`, or a zombie.
///
/// A zombie counts as gone: it holds no memory, ports or files. An orphan that exits stays a
/// zombie until PID 1 reaps it, which may be seconds later (or never, under an init that does
/// not reap), and waiting for that would only slow tests down.
pub(crate) fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => matches!(stat_field(&stat, 0), Some("Z") | Some("X") | None),
    }
}

/// The pids whose parent is `parent`, read from `/proc`.
pub(crate) fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = parent.to_string();
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|stat| stat_field(&stat, 1) == Some(parent.as_str()))
        })
        .collect()
}

/// Field `n` after the command name in `/proc/<pid>/stat`: 0 is the state, 1 the parent pid.
///
/// The command name is in parentheses and may itself contain spaces and parentheses, so the
/// fields start after the last `)`.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n)
}

/// The last few KiB of a log file, for error messages: a server that failed to start almost
/// always said why on its last lines.
pub(crate) fn log_tail(path: &Path) -> String {
    const TAIL: usize = 4096;
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(TAIL);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_skip_a_command_name_with_spaces_and_parens() {
        let stat = "123 (a (b) c) S 45 123 123 0";
        assert_eq!(stat_field(stat, 0), Some("S"));
        assert_eq!(stat_field(stat, 1), Some("45"));
    }

    #[test]
    fn this_process_runs_and_a_reaped_child_is_gone() {
        assert!(!process_gone(std::process::id()));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(process_gone(pid));
    }

    #[test]
    fn children_of_finds_a_spawned_child() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let found = children_of(std::process::id()).contains(&child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found);
    }
}
