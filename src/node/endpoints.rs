//! The HTTP endpoints on `--metrics-addr`: `/metrics` (Prometheus text),
//! `/healthz` (the process serves) and `/readyz` (it can serve publishes:
//! SecretProviderClass source synced).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use secretfs_csi::{Readiness, VolumeManager};

use crate::node::driver::Driver;

/// The operations counted, in [`Driver::fuse_counts`] order.
const FUSE_OPS: [&str; 4] = ["lookup", "getattr", "read", "readdir"];

/// The FUSE request and error counters by operation, in the exposition
/// format, before `# EOF`. `counts` is [`Driver::fuse_counts`]: requests of
/// each op, the error total, then errors of each op. (`open`, `opendir`,
/// `flush` and the xattr calls are answered `ENOSYS` on purpose, as a
/// capability signal the kernel remembers; they are not counted.)
fn with_fuse(mut text: String, counts: [u64; 9]) -> String {
    let eof = text.rfind("# EOF").unwrap_or(text.len());
    let tail = text.split_off(eof);
    text.push_str(
        "# HELP secretfs_fuse_requests FUSE requests that reached the driver, by operation.\n",
    );
    text.push_str("# TYPE secretfs_fuse_requests counter\n");
    for (op, n) in FUSE_OPS.iter().zip(&counts[..4]) {
        text.push_str(&format!(
            "secretfs_fuse_requests_total{{op=\"{op}\"}} {n}\n"
        ));
    }
    text.push_str(
        "# HELP secretfs_fuse_errors FUSE requests answered with an error (ENOENT included), by operation.\n",
    );
    text.push_str("# TYPE secretfs_fuse_errors counter\n");
    for (op, n) in FUSE_OPS.iter().zip(&counts[5..]) {
        text.push_str(&format!("secretfs_fuse_errors_total{{op=\"{op}\"}} {n}\n"));
    }
    text.push_str(&tail);
    text
}

async fn answer(
    driver: Arc<Driver>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let manager: &dyn VolumeManager = driver.as_ref();
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            {
                // Counted now: files cross the threshold as time passes.
                driver.update_unread_files();
                with_fuse(driver.metrics().render(), driver.fuse_counts())
            },
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => match manager.readiness().await {
            Readiness::Ready => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
            Readiness::NotReady(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz, /readyz\n".to_owned(),
        ),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

/// Binds `addr` (`:8095` means every address) and serves until `shutdown`.
pub async fn serve(
    addr: &str,
    manager: Arc<Driver>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let addr: SocketAddr = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_owned(),
    }
    .parse()
    .map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--metrics-addr {addr:?}: {e}"),
        )
    })?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = &mut shutdown => return Ok(()),
        };
        let manager = manager.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| answer(manager.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_requests_and_errors_are_labelled_by_operation() {
        let text = with_fuse("a 1\n# EOF\n".to_owned(), [10, 20, 30, 40, 6, 1, 2, 3, 0]);
        for line in [
            r#"secretfs_fuse_requests_total{op="lookup"} 10"#,
            r#"secretfs_fuse_requests_total{op="readdir"} 40"#,
            r#"secretfs_fuse_errors_total{op="lookup"} 1"#,
            r#"secretfs_fuse_errors_total{op="getattr"} 2"#,
            r#"secretfs_fuse_errors_total{op="read"} 3"#,
            r#"secretfs_fuse_errors_total{op="readdir"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        assert!(!text.contains(r#"op="any""#), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
