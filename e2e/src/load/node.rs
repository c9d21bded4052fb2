//! The node under test: its process, its log, and the cleanup after a run.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::EmulatorHandle;
use anyhow::Context as _;

use super::model::mounts_under;
use super::*;

/// Stops the node and removes the work directory, also on errors.
pub(super) struct Cleanup {
    pub(super) work: PathBuf,
    pub(super) node: Option<Child>,
}

impl Cleanup {
    pub(super) fn stop_node(&mut self) {
        let Some(mut child) = self.node.take() else {
            return;
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.stop_node();
        for point in mounts_under(&self.work) {
            let _ = rustix::mount::unmount(point.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

pub(super) fn spawn_node(
    config: &Config,
    emulator: &EmulatorHandle,
    work: &Path,
    socket: &Path,
) -> anyhow::Result<Child> {
    let addr = emulator.https_addr();
    let log = File::create(work.join("node.log"))?;
    Command::new(&config.secretfs)
        .arg("node")
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .arg("--nodeid=load-node")
        .arg("--spc-dir")
        .arg(work.join("classes"))
        .arg("--metrics-addr=")
        .arg("--admin-socket=")
        .arg("--enable-secret-rotation=true")
        .arg(format!(
            "--rotation-poll-interval={}ms",
            config.rotation_poll_interval.as_millis().max(1)
        ))
        .arg(format!("--azure-ca-file={}", emulator.ca_path().display()))
        .arg(format!("--azure-resolve=*.vault.azure.net={addr}"))
        .arg(format!("--azure-resolve=login.microsoftonline.com={addr}"))
        .arg(format!("--azure-vault-port={}", addr.port()))
        .arg(format!(
            "--azure-authority-host={}",
            emulator.authority_url()
        ))
        .arg(format!("--azure-imds-endpoint={}", emulator.imds_url()))
        .arg(format!("--azure-nmi-endpoint={}", emulator.imds_url()))
        .env("SECRETFS_LOG", &config.node_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", config.secretfs.display()))
}

pub(super) fn node_log_tail(work: &Path) -> String {
    let log = std::fs::read_to_string(work.join("node.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
