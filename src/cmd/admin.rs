//! `secretfs status` and `secretfs refresh`: calls to the node's admin
//! socket (`node::admin`) and what they print.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::node::admin::{AdminError, NodeReadiness, RefreshResult};
use crate::node::driver::VolumeStatus;

async fn call(path: &Path, method: Method, uri: &str) -> Result<Bytes, AdminError> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|source| AdminError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| AdminError::Http(e.to_string()))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "secretfs")
        .body(Full::new(Bytes::new()))
        .map_err(|e| AdminError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| AdminError::Http(e.to_string()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| AdminError::Http(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(AdminError::Status {
            status: status.as_u16(),
            message: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(body)
}

/// `GET /volumes`.
pub async fn volumes(path: &Path) -> Result<Vec<VolumeStatus>, AdminError> {
    let body = call(path, Method::GET, "/volumes").await?;
    serde_json::from_slice(&body).map_err(|e| AdminError::Http(e.to_string()))
}

/// `GET /readiness`; `None` from a node too old to answer it.
pub async fn readiness(path: &Path) -> Result<Option<NodeReadiness>, AdminError> {
    match call(path, Method::GET, "/readiness").await {
        Ok(body) => serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| AdminError::Http(e.to_string())),
        Err(AdminError::Status { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The line `secretfs status` prints above the volumes when the node is
/// not ready.
pub fn render_readiness(readiness: &NodeReadiness) -> String {
    match (&readiness.ready, &readiness.reason) {
        (true, _) => String::new(),
        (false, Some(reason)) => format!("node not ready: {reason}\n"),
        (false, None) => "node not ready\n".to_owned(),
    }
}

/// `POST /refresh`, for one target or all.
pub async fn refresh(path: &Path, target: Option<&Path>) -> Result<Vec<RefreshResult>, AdminError> {
    let uri = match target {
        Some(t) => format!(
            "/refresh?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("target", &t.to_string_lossy())
                .finish()
        ),
        None => "/refresh".to_owned(),
    };
    let body = call(path, Method::POST, &uri).await?;
    serde_json::from_slice(&body).map_err(|e| AdminError::Http(e.to_string()))
}

/// The table `secretfs status` prints.
pub fn render_status(volumes: &[VolumeStatus]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    render_status_at(volumes, now)
}

/// [`render_status`] at `now` (Unix seconds).
fn render_status_at(volumes: &[VolumeStatus], now: u64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if volumes.is_empty() {
        out.push_str("no volumes published\n");
    }
    for v in volumes {
        let _ = writeln!(
            out,
            "{}\n  pod {}  class {}  provider {}  synced {}",
            v.target, v.pod, v.class, v.provider, v.synced
        );
        let interval = match v.interval_seconds {
            Some(s) => format!("every {s}s (class)"),
            None => "node interval".to_owned(),
        };
        let next = match v.next_refresh_at {
            None => "next refresh not scheduled (rotation off, or the volume is new)".to_owned(),
            Some(at) if at <= now => "next refresh now".to_owned(),
            Some(at) => format!("next refresh in {}s", at - now),
        };
        let failures = match v.refresh_failures {
            0 => String::new(),
            1 => " after 1 failed refresh".to_owned(),
            n => format!(" after {n} failed refreshes"),
        };
        let _ = writeln!(
            out,
            "  last refresh {}s ago, {interval}; {next}{failures}",
            now.saturating_sub(v.refreshed_at),
        );
        if let Some(err) = &v.last_error {
            let _ = writeln!(out, "  last error: {err}");
        }
        match &v.audit {
            None => {}
            Some(audit) => match &audit.problem {
                None => {
                    let _ = writeln!(out, "  reads audited (secretfs.io/audit: reads)");
                }
                Some(problem) => {
                    let _ = writeln!(
                        out,
                        "  reads audited, but auditing cannot attribute reads on this node: {problem}"
                    );
                }
            },
        }
        for f in &v.files {
            let _ = writeln!(
                out,
                "    {:<30} {:<40} {} ({} bytes)",
                f.path, f.object, f.version, f.bytes
            );
            if let Some(expiry) = &f.expiry {
                let _ = writeln!(out, "      {}", expiry_line(expiry, now));
            }
            if let Some(line) = read_line(f, now) {
                let _ = writeln!(out, "      {line}");
            }
        }
        // Versions no file shows (an external provider's object ids are
        // its own, not file paths): listed as the provider reported them.
        let unshown: Vec<_> = v
            .objects
            .iter()
            .filter(|o| {
                !v.files
                    .iter()
                    .any(|f| f.object == o.id && !f.version.is_empty())
            })
            .collect();
        if !unshown.is_empty() {
            let _ = writeln!(out, "  object versions reported by the provider:");
            for o in unshown {
                let _ = writeln!(out, "    {:<40} {}", o.id, o.version);
            }
        }
    }
    let unused: Vec<(&VolumeStatus, &crate::node::driver::FileStatus)> = volumes
        .iter()
        .flat_map(|v| v.files.iter().filter(|f| f.unused).map(move |f| (v, f)))
        .collect();
    if !unused.is_empty() {
        let threshold = volumes
            .iter()
            .find_map(|v| v.unread_threshold_seconds)
            .map_or_else(String::new, |s| {
                format!(" for longer than {}", crate::expiry::span(s as i64))
            });
        let _ = writeln!(
            out,
            "\nfiles never read{threshold} ({}):",
            crate::node::driver::UNUSED_HINT
        );
        for (v, f) in unused {
            let _ = writeln!(out, "  class {}  file {}  pod {}", v.class, f.path, v.pod);
        }
    }
    out
}

/// Whether a file was read since it was shown: `first read <time>`, `not
/// read yet (shown <span> ago)`, or, past the threshold, `never read since
/// <time> (<span>): mounted but unused: …`. `None` from a node too old to
/// say.
fn read_line(f: &crate::node::driver::FileStatus, now: u64) -> Option<String> {
    use crate::expiry::{rfc3339, span};
    let secs = |ms: u64| i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    if let Some(first) = f.first_read_ms {
        return Some(format!("first read {}", rfc3339(secs(first))));
    }
    let since = secs(f.shown_since_ms?);
    let ago = span(now.saturating_sub(since).max(0));
    Some(if f.unused {
        format!(
            "never read since {} ({ago}): {}",
            rfc3339(since),
            crate::node::driver::UNUSED_HINT
        )
    } else {
        format!("not read yet (shown since {}, {ago} ago)", rfc3339(since))
    })
}

/// A file's validity in the table: `expires 2026-12-07T20:00:00Z, in 1d 0h
/// (Key Vault exp)`, `EXPIRED …`, `NOT VALID until …`.
fn expiry_line(expiry: &crate::node::driver::FileExpiry, now: u64) -> String {
    use crate::expiry::{rfc3339, span};
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let by = |source: &Option<String>| source.as_deref().unwrap_or("").to_owned();
    let mut parts = Vec::new();
    if let Some(from) = expiry.valid_from
        && from > now
    {
        parts.push(format!(
            "NOT VALID until {}, in {} ({})",
            rfc3339(from),
            span(from - now),
            by(&expiry.valid_from_by)
        ));
    }
    match expiry.expires_at {
        Some(at) if at <= now => parts.push(format!(
            "EXPIRED at {}, {} ago ({})",
            rfc3339(at),
            span(now - at),
            by(&expiry.expires_by)
        )),
        Some(at) => parts.push(format!(
            "expires {}, in {} ({})",
            rfc3339(at),
            span(at - now),
            by(&expiry.expires_by)
        )),
        None => parts.push("no expiry".to_owned()),
    }
    parts.join("; ")
}

/// `secretfs status` and `secretfs refresh`.
pub fn command(
    args: &super::cli::AdminArgs,
    refresh_target: Option<Option<std::path::PathBuf>>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match refresh_target {
            None => {
                let volumes = volumes(&args.admin_socket).await?;
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&volumes)?);
                } else {
                    if let Some(readiness) = readiness(&args.admin_socket).await? {
                        print!("{}", render_readiness(&readiness));
                    }
                    print!("{}", render_status(&volumes));
                }
            }
            Some(target) => {
                let results = refresh(&args.admin_socket, target.as_deref()).await?;
                for r in &results {
                    match &r.error {
                        None => println!(
                            "{}: {} replaced, {} added, {} removed",
                            r.target, r.replaced, r.added, r.removed
                        ),
                        Some(e) => println!("{}: failed: {e}", r.target),
                    }
                }
                if results.iter().any(|r| r.error.is_some()) {
                    return Err("some refreshes failed".into());
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::driver::FileStatus;

    fn volume(interval: Option<u64>, next: Option<u64>, failures: u32) -> VolumeStatus {
        VolumeStatus {
            target: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount".into(),
            pod: "default/app".into(),
            class: "azure-kvname".into(),
            provider: "azure".into(),
            files: vec![FileStatus {
                path: "SECRET_1".into(),
                object: "secret/sql-password".into(),
                version: "c55925c29c6743dcb9bb4bf091be03b0".into(),
                bytes: 25,
                expiry: None,
                shown_since_ms: None,
                first_read_ms: None,
                unused: false,
            }],
            objects: vec![crate::node::driver::ObjectStatus {
                id: "secret/sql-password".into(),
                version: "c55925c29c6743dcb9bb4bf091be03b0".into(),
            }],
            refreshed_at: 1_000,
            interval_seconds: interval,
            next_refresh_at: next,
            refresh_failures: failures,
            synced: true,
            last_error: (failures > 0).then(|| "secret/sql-password: 429".to_owned()),
            unread_threshold_seconds: Some(86_400),
            audit: None,
        }
    }

    #[test]
    fn each_file_says_whether_it_was_read_and_unused_ones_are_listed() {
        let now = 1_796_083_200; // 2026-12-01T00:00:00Z
        let mut v = volume(None, None, 0);
        // A node too old to say: no line.
        let table = render_status_at(std::slice::from_ref(&v), now);
        assert!(!table.contains("read"), "{table}");

        v.files[0].shown_since_ms = Some((now - 3_600) * 1000);
        let table = render_status_at(std::slice::from_ref(&v), now);
        assert!(
            table.contains("\n      not read yet (shown since 2026-11-30T23:00:00Z, 1h 0m ago)\n"),
            "{table}"
        );
        assert!(!table.contains(crate::node::driver::UNUSED_HINT), "{table}");

        v.files[0].first_read_ms = Some((now - 60) * 1000 + 250);
        let table = render_status_at(std::slice::from_ref(&v), now);
        assert!(
            table.contains("\n      first read 2026-11-30T23:59:00Z\n"),
            "{table}"
        );

        v.files[0].first_read_ms = None;
        v.files[0].shown_since_ms = Some((now - 2 * 86_400) * 1000);
        v.files[0].unused = true;
        let table = render_status_at(std::slice::from_ref(&v), now);
        assert!(
            table.contains(
                "never read since 2026-11-29T00:00:00Z (2d 0h): mounted but unused: consider removing from the class"
            ),
            "{table}"
        );
        assert!(
            table.contains(
                "\nfiles never read for longer than 1d 0h (mounted but unused: consider removing from the class):\n  class azure-kvname  file SECRET_1  pod default/app\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn the_table_shows_the_next_refresh_the_scheduler_planned() {
        let table = render_status_at(&[volume(None, Some(1_108), 0)], 1_010);
        assert!(
            table.contains("last refresh 10s ago, node interval; next refresh in 98s\n"),
            "{table}"
        );
        assert!(table.contains("SECRET_1") && table.contains("c55925c29c6743dcb9bb4bf091be03b0"));

        let table = render_status_at(&[volume(Some(30), Some(1_040), 3)], 1_010);
        assert!(
            table.contains("every 30s (class); next refresh in 30s after 3 failed refreshes\n"),
            "{table}"
        );
        assert!(
            table.contains("last error: secret/sql-password: 429"),
            "{table}"
        );

        let table = render_status_at(&[volume(None, Some(1_005), 0)], 1_010);
        assert!(table.contains("; next refresh now\n"), "{table}");
        let table = render_status_at(&[volume(None, None, 0)], 1_010);
        assert!(table.contains("next refresh not scheduled"), "{table}");
        assert_eq!(render_status_at(&[], 0), "no volumes published\n");
    }

    #[test]
    fn each_files_expiry_is_shown_with_what_decided_it() {
        let mut v = volume(None, None, 0);
        let now = 1_796_083_200; // 2026-12-01T00:00:00Z
        v.files[0].expiry = Some(crate::node::driver::FileExpiry {
            expires_at: Some(now + 86_400 + 7_200),
            expires_by: Some("Key Vault exp".into()),
            valid_from: Some(now - 10),
            valid_from_by: Some("Key Vault nbf".into()),
        });
        let table = render_status_at(std::slice::from_ref(&v), now as u64);
        assert!(
            table.contains("\n      expires 2026-12-02T02:00:00Z, in 1d 2h (Key Vault exp)\n"),
            "{table}"
        );
        v.files[0].expiry = Some(crate::node::driver::FileExpiry {
            expires_at: Some(now - 60),
            expires_by: Some("certificate notAfter (leaf)".into()),
            valid_from: None,
            valid_from_by: None,
        });
        let table = render_status_at(std::slice::from_ref(&v), now as u64);
        assert!(
            table.contains(
                "EXPIRED at 2026-11-30T23:59:00Z, 1m 0s ago (certificate notAfter (leaf))"
            ),
            "{table}"
        );
        v.files[0].expiry = Some(crate::node::driver::FileExpiry {
            expires_at: None,
            expires_by: None,
            valid_from: Some(now + 3_600),
            valid_from_by: Some("Key Vault nbf".into()),
        });
        let table = render_status_at(&[v], now as u64);
        assert!(
            table.contains(
                "NOT VALID until 2026-12-01T01:00:00Z, in 1h 0m (Key Vault nbf); no expiry"
            ),
            "{table}"
        );
        // No expiry known: no line.
        let table = render_status_at(&[volume(None, None, 0)], now as u64);
        assert!(
            !table.contains("expires") && !table.contains("no expiry"),
            "{table}"
        );
    }

    #[test]
    fn versions_no_file_shows_are_listed_as_the_provider_reported_them() {
        let mut v = volume(None, None, 0);
        v.provider = "vault".into();
        v.files[0].object = "SECRET_1".into();
        v.files[0].version = String::new();
        v.objects = vec![crate::node::driver::ObjectStatus {
            id: "secret/foo".into(),
            version: "v1".into(),
        }];
        let table = render_status_at(&[v], 1_010);
        assert!(
            table.contains("  object versions reported by the provider:\n")
                && table.contains("secret/foo")
                && table.contains(" v1\n"),
            "{table}"
        );
        // Shown by their files already: not listed twice.
        let table = render_status_at(&[volume(None, None, 0)], 1_010);
        assert!(!table.contains("reported by the provider"), "{table}");
    }

    #[test]
    fn the_json_of_an_older_node_without_a_schedule_still_reads() {
        let mut json = serde_json::to_value(volume(None, Some(5), 1)).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("next_refresh_at");
        object.remove("refresh_failures");
        object.remove("objects");
        let read: VolumeStatus = serde_json::from_value(json).unwrap();
        assert_eq!((read.next_refresh_at, read.refresh_failures), (None, 0));
    }
}
