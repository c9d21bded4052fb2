//! Listeners and connections: HTTPS (Key Vault + Entra), plain HTTP (IMDS,
//! NMI) and plain HTTP (admin). Each connection is served by hyper's HTTP/1.1
//! server with keep-alive; a handler may ask for the connection to be reset.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming as HyperBody;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::control::Control;
use crate::http::{Body, ConnControl, Handled, Incoming, Outcome, Tally, text};
use crate::route::Route;
use crate::state::Shared;

/// Largest request body accepted (token forms, admin JSON).
const MAX_BODY: usize = 1 << 20;

/// Which service a listener runs.
#[derive(Clone)]
pub enum Service {
    /// Key Vault data plane + Entra ID, over TLS.
    Https(TlsAcceptor),
    /// IMDS and NMI, plain HTTP.
    Imds,
    /// Admin API, plain HTTP; the value is `GET /admin/info`.
    Admin(Arc<Value>),
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Service::Https(_) => "Service::Https",
            Service::Imds => "Service::Imds",
            Service::Admin(_) => "Service::Admin",
        })
    }
}

/// Accept connections until the task is aborted.
pub async fn serve(listener: TcpListener, service: Service, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            // A duplicate of the socket, to set SO_LINGER=0 before closing
            // when a reset is asked for (closing then sends RST).
            let dup: Option<OwnedFd> = tcp.as_fd().try_clone_to_owned().ok();
            match service {
                Service::Https(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) => serve_connection(tls, peer, dup, shared, Kind::Https).await,
                    Err(e) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                },
                Service::Imds => serve_connection(tcp, peer, dup, shared, Kind::Imds).await,
                Service::Admin(info) => {
                    serve_connection(tcp, peer, dup, shared, Kind::Admin(info)).await
                }
            }
        });
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Https,
    Imds,
    Admin(Arc<Value>),
}

async fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    dup: Option<OwnedFd>,
    shared: Arc<Shared>,
    kind: Kind,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stop = shared.shutdown.subscribe();
    let conn_control = ConnControl::default();
    let reset = conn_control.reset.clone();
    let svc = service_fn(move |req: Request<HyperBody>| {
        let shared = shared.clone();
        let kind = kind.clone();
        let conn_control = conn_control.clone();
        async move { Ok::<_, Infallible>(dispatch(req, peer, shared, kind, conn_control).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, %peer, "connection ended with error");
            }
        }
        _ = stop.wait_for(|stopped| *stopped) => {
            // The emulator was stopped: close keep-alive connections too.
        }
        _ = reset.notified() => {
            if let Some(fd) = &dup {
                let _ = socket2::SockRef::from(fd).set_linger(Some(Duration::ZERO));
            }
            // Dropping the connection (and then `dup`) closes the socket: RST.
        }
    }
    drop(dup);
}

async fn read_request(
    req: Request<HyperBody>,
    peer: SocketAddr,
) -> Result<Incoming, Response<Body>> {
    let (parts, body) = req.into_parts();
    let body: Bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
    };
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    Ok(Incoming {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query,
        headers: parts.headers,
        body,
        peer,
    })
}

async fn dispatch(
    req: Request<HyperBody>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    kind: Kind,
    conn: ConnControl,
) -> Response<Body> {
    let incoming = match read_request(req, peer).await {
        Ok(i) => i,
        Err(resp) => return resp,
    };
    let handled = match &kind {
        Kind::Admin(info) => {
            let control = Control {
                shared: shared.clone(),
            };
            return crate::admin::handle(&control, &incoming, info);
        }
        Kind::Imds => crate::imds::handle(&shared, &incoming).await,
        Kind::Https => {
            if crate::keyvault::is_keyvault_path(&incoming) {
                crate::keyvault::handle(&shared, &incoming).await
            } else if let Some((route, tenant)) = crate::entra::route_for(&incoming.segments()) {
                crate::entra::handle(&shared, &incoming, route, &tenant).await
            } else {
                Handled::respond(
                    Tally::new(Route::Unknown),
                    text(StatusCode::NOT_FOUND, "kv-emulator: no such endpoint"),
                )
            }
        }
    };
    let Handled { outcome, tally } = handled;
    match outcome {
        Outcome::Respond(resp) => {
            tracing::debug!(method = %incoming.method, path = %incoming.path, status = resp.status().as_u16(), route = %tally.route, "served");
            shared.counters.record(tally.key(resp.status().as_u16()));
            resp
        }
        Outcome::Reset => {
            tracing::debug!(method = %incoming.method, path = %incoming.path, route = %tally.route, "connection reset (fault)");
            shared.counters.record(tally.key(0));
            conn.reset.notify_one();
            // Never answer: the connection task drops the connection.
            std::future::pending::<Response<Body>>().await
        }
    }
}
