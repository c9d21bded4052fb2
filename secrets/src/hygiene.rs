//! Process-wide memory hygiene for secret material: no swap, no core dumps,
//! no ptrace by other users.
//!
//! - `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`: every page the
//!   process uses, now and later, is locked in RAM when first touched, so
//!   secrets never reach swap (`ONFAULT` keeps untouched reservations such
//!   as thread stacks from being populated).
//! - `PR_SET_DUMPABLE 0`: no core dump is written and other processes of
//!   the same user cannot ptrace it or read `/proc/<pid>/mem`.
//!
//! Secret bytes themselves ([`crate::SecretBytes`]) also live in
//! mappings of their own that are `mlock`ed and marked `MADV_DONTDUMP`, so
//! they stay out of swap and out of any core dump (a root-owned one written
//! under `fs.suid_dumpable=2` included) even where `harden` could not apply.
//!
//! Every long-running command calls [`harden`]: `node`, `provider`,
//! `keeper` and `mount`.

use rustix::mm::{MlockAllFlags, mlockall};
use rustix::process::{DumpableBehavior, set_dumpable_behavior};

/// What could not be applied; the driver logs it and goes on (a node whose
/// memlock limit is too low still serves, without the guarantee).
#[derive(Debug, thiserror::Error)]
pub enum HygieneError {
    #[error(
        "mlockall failed ({0}): secrets may be swapped out; give the driver CAP_IPC_LOCK or an unlimited memlock limit"
    )]
    Lock(#[source] std::io::Error),
    #[error("PR_SET_DUMPABLE failed ({0}): a crash could write secrets to a core dump")]
    Dumpable(#[source] std::io::Error),
}

/// Locks memory and makes the process non-dumpable.
pub fn harden() -> Result<(), HygieneError> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|e| HygieneError::Dumpable(e.into()))?;
    mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT)
        .map_err(|e| HygieneError::Lock(e.into()))?;
    Ok(())
}

/// `VmLck` of `/proc/<pid>/status`, in kB.
pub fn locked_kb(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0))
}

/// Whether this process may be dumped (and ptraced by its user).
pub fn dumpable() -> bool {
    rustix::process::dumpable_behavior() != Ok(DumpableBehavior::NotDumpable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nextest runs each test in its own process, so this changes only it.
    #[test]
    fn harden_locks_memory_and_forbids_dumps() {
        assert!(dumpable());
        harden().unwrap();
        assert!(!dumpable());
        let before = locked_kb(std::process::id()).unwrap();
        assert!(before > 0, "VmLck shows locked memory");
        // Memory touched later is locked too (MCL_FUTURE | MCL_ONFAULT).
        let buffer = vec![1u8; 8 << 20];
        let after = locked_kb(std::process::id()).unwrap();
        assert!(after >= before + 8 * 1024 - 64, "{before} kB → {after} kB");
        drop(buffer);
    }

    /// Secret bytes are in a mapping of their own, locked and excluded from
    /// core dumps (`lo` and `dd` in `/proc/self/smaps`).
    #[test]
    fn secret_bytes_are_locked_and_not_dumped() {
        harden().unwrap();
        let value = crate::SecretBytes::from_slice(b"not-in-any-core-dump");
        let addr = value.expose().as_ptr() as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let mut flags = None;
        for line in smaps.lines() {
            if let Some((lo, hi)) = line.split(' ').next().and_then(|r| r.split_once('-'))
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
            } else if inside && let Some(f) = line.strip_prefix("VmFlags:") {
                flags = Some(f.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
                break;
            }
        }
        let flags = flags.expect("a mapping holds the value");
        assert!(flags.iter().any(|f| f == "dd"), "MADV_DONTDUMP: {flags:?}");
        assert!(flags.iter().any(|f| f == "lo"), "locked: {flags:?}");
        assert!(!dumpable());
        assert!(locked_kb(std::process::id()).unwrap() > 0);
    }
}
