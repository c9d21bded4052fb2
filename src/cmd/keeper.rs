//! `secretfs keeper`: the process that holds the node plugin's FUSE
//! connections across its restarts (what it is and its protocol:
//! `node::keeper`).

use crate::cmd::cli::KeeperArgs;
use crate::node::keeper::{KeeperError, KeeperServer};

/// Lets the keeper hold one fd per volume however many volumes the node
/// has: the soft `RLIMIT_NOFILE` is raised to the hard one.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(limit = ?limit.maximum, "raised RLIMIT_NOFILE"),
            Err(e) => tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE"),
        }
    }
}

/// `secretfs keeper`: serves on `--socket` until SIGTERM or SIGINT.
pub fn run(args: &KeeperArgs) -> Result<(), KeeperError> {
    if let Err(err) = secretfs_secrets::hygiene::harden() {
        tracing::warn!(error = %err, "memory hygiene");
    }
    raise_fd_limit();
    let server = KeeperServer::bind(&args.socket)?;
    let stopper = server.stopper();
    // Signals are caught from here on (a runtime of its own, on one thread
    // that does nothing else).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(KeeperError::Signals)?;
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _entered = runtime.enter();
        (
            signal(SignalKind::terminate()).map_err(KeeperError::Signals)?,
            signal(SignalKind::interrupt()).map_err(KeeperError::Signals)?,
        )
    };
    std::thread::Builder::new()
        .name("keeper-signals".into())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            });
            tracing::info!("shutting down");
            stopper.stop();
        })
        .map_err(KeeperError::Signals)?;
    server.serve().map(drop)
}
