//! Opt-in open auditing: who opens which version of which file.
//!
//! A volume mounted with [`MountOptions::audit`](crate::MountOptions) answers
//! OPEN (instead of `ENOSYS`) with `FOPEN_KEEP_CACHE`, so the kernel sends
//! each `open(2)` here while reads stay in the page cache. The first open
//! of each version (inode) by each process (pid and its start time) is
//! handed to the [`OpenObserver`], synchronously, while the opening
//! process is still blocked in `open(2)`: its `/proc` entry is there to
//! read. Volumes without an observer are untouched (OPEN answers `ENOSYS`
//! once and is never sent again).
//!
//! The reader's pid comes from the request header: the pid in the PID
//! namespace of the process that mounted the volume, or 0 when the reader
//! is not visible there. Nothing here reads a file's bytes.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// One first open of a file version by a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEvent {
    /// The opening process (thread group) in this process's PID namespace;
    /// 0 when the kernel could not map it (the opener is in a namespace this
    /// one cannot see).
    pub pid: u32,
    /// The opening thread, as the request header gives it (the process's
    /// pid for a single-threaded program).
    pub tid: u32,
    /// The opener's uid and gid (file-system ids, as the kernel checks them).
    pub uid: u32,
    pub gid: u32,
    /// The inode opened: one version of `path`.
    pub ino: u64,
    /// The file's path in the volume.
    pub path: String,
    /// Whether `ino` is the version the path shows now (`false`: an older
    /// version still held, or one that follows the newest).
    pub current: bool,
}

/// Told of each first open of each version by each process.
pub trait OpenObserver: Send + Sync + 'static {
    /// Called on the FUSE thread while the opener waits: keep it short.
    fn first_open(&self, event: OpenEvent);
}

/// An observer, as held by [`MountOptions`](crate::MountOptions): equal
/// when it is the same observer.
#[derive(Clone)]
pub struct OpenAudit(pub Arc<dyn OpenObserver>);

impl fmt::Debug for OpenAudit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpenAudit")
    }
}

impl PartialEq for OpenAudit {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for OpenAudit {}

/// Most (process, version) pairs remembered per volume; past it the set
/// starts again (an open may then be reported twice, never missed).
const MAX_SEEN: usize = 65_536;

/// Which (pid, pid start time, inode) were reported already.
#[derive(Default)]
pub(crate) struct SeenOpens {
    seen: Mutex<HashSet<(u32, u64, u64)>>,
}

impl SeenOpens {
    /// The process of thread `tid` if this is its first open of `ino` (a
    /// pid reused by a new process has another start time).
    pub(crate) fn first(&self, tid: u32, ino: u64) -> Option<u32> {
        let pid = if tid == 0 { 0 } else { thread_group(tid) };
        let started = if pid == 0 { 0 } else { start_time(pid) };
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_SEEN {
            seen.clear();
        }
        seen.insert((pid, started, ino)).then_some(pid)
    }
}

/// The process (`Tgid` of `/proc/<tid>/status`) thread `tid` belongs to;
/// `tid` itself when it cannot be read.
pub fn thread_group(tid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot);
/// 0 when it cannot be read.
pub fn start_time(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_start_time(&stat))
        .unwrap_or(0)
}

/// The start time in a `/proc/<pid>/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses: fields are
/// counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow; the start time is field 22, the 20th of them.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_is_field_22_counted_after_the_command_name() {
        let stat =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn each_process_and_version_is_first_once() {
        let seen = SeenOpens::default();
        let me = std::process::id();
        assert_eq!(seen.first(me, 10), Some(me));
        assert_eq!(seen.first(me, 10), None);
        assert_eq!(seen.first(me, 11), Some(me), "another version");
        assert_eq!(seen.first(0, 10), Some(0), "an invisible opener");
        assert_eq!(seen.first(0, 10), None);
        assert_eq!(thread_group(me), me);
        assert!(start_time(me) > 0, "this process's start time is readable");
    }
}
