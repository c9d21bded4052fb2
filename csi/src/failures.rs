//! Every failed call of the CSI server is logged once, here: the method,
//! the gRPC code and the message, for failures of our handlers (publish,
//! unpublish, `Probe`) and of tonic itself (`UNIMPLEMENTED` methods and
//! services, undecodable requests), whether the status comes in the headers
//! (trailers-only answers) or in the trailers.
//!
//! Secrets: the request is never logged. Handlers add what identifies the
//! call (volume id, target path, pod, error type) to the call's span, and
//! the message is the one kubelet gets, which handlers have already
//! scrubbed of the request's secrets; tokens (JWTs) are masked here again,
//! whatever their source (a provider's message that echoes one, say).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::{Code, Status};
use tracing::Span;

/// What replaces a secret or token in a message.
pub const STRIPPED: &str = "***stripped***";

/// The tower layer that logs failed calls (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct FailureLog;

impl<S> tower::Layer<S> for FailureLog {
    type Service = FailureLogService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FailureLogService { inner }
    }
}

/// [`FailureLog`] around a service.
#[derive(Debug, Clone)]
pub struct FailureLogService<S> {
    inner: S,
}

/// The span of one call, with the fields handlers may record.
fn call_span(method: &str) -> Span {
    tracing::warn_span!(
        "csi",
        method,
        volume_id = tracing::field::Empty,
        target = tracing::field::Empty,
        pod = tracing::field::Empty,
        error_type = tracing::field::Empty,
    )
}

fn log(span: &Span, method: &str, status: &Status) {
    if status.code() == Code::Ok {
        return;
    }
    tracing::warn!(
        parent: span,
        method,
        code = ?status.code(),
        error = %redact_tokens(status.message()),
        "CSI call failed"
    );
}

impl<S> tower::Service<Request<Body>> for FailureLogService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // `/csi.v1.Node/NodePublishVolume` → `csi.v1.Node/NodePublishVolume`
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let span = call_span(&method);
        let call = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let response = tracing::Instrument::instrument(call, span.clone()).await?;
            let (parts, body) = response.into_parts();
            if let Some(status) = Status::from_header_map(&parts.headers) {
                // Trailers-only: the whole answer is this status.
                log(&span, &method, &status);
                return Ok(Response::from_parts(parts, body));
            }
            // The status comes in the trailers, after the messages.
            let body = body.map_frame(move |frame| {
                if let Some(status) = frame.trailers_ref().and_then(Status::from_header_map) {
                    log(&span, &method, &status);
                }
                frame
            });
            Ok(Response::from_parts(parts, Body::new(body)))
        })
    }
}

/// Masks JSON web tokens (`eyJ…` `.` `…` `.` `…`, the shape of every
/// service-account token) in `text`.
pub fn redact_tokens(text: &str) -> Cow<'_, str> {
    fn is_b64url(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'='
    }
    let bytes = text.as_bytes();
    // The end of a token starting at `start`, if one does.
    let token_end = |start: usize| -> Option<usize> {
        let mut i = start;
        for segment in 0..3 {
            let begin = i;
            while i < bytes.len() && is_b64url(bytes[i]) {
                i += 1;
            }
            // Header and payload are never empty; the signature may be.
            if i == begin && segment < 2 {
                return None;
            }
            if segment < 2 {
                if bytes.get(i) != Some(&b'.') {
                    return None;
                }
                i += 1;
            }
        }
        Some(i)
    };
    let mut out = String::new();
    let (mut copied, mut i) = (0, 0);
    while let Some(found) = text[i..].find("eyJ") {
        let start = i + found;
        let at_boundary = start == 0 || !is_b64url(bytes[start - 1]);
        match token_end(start).filter(|_| at_boundary) {
            Some(end) => {
                out.push_str(&text[copied..start]);
                out.push_str(STRIPPED);
                copied = end;
                i = end;
            }
            None => i = start + 3,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Replaces every occurrence of `secrets` (values of at least 4 bytes:
/// shorter ones would mask ordinary words) in `text`, then tokens.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(secret) {
            out = out.replace(secret, STRIPPED);
        }
    }
    redact_tokens(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_masked_and_other_text_kept() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl";
        assert_eq!(
            redact_tokens(&format!("token {jwt} refused")),
            format!("token {STRIPPED} refused")
        );
        assert_eq!(
            redact_tokens(&format!("{{\"token\":\"{jwt}\"}}, {jwt}")),
            format!("{{\"token\":\"{STRIPPED}\"}}, {STRIPPED}")
        );
        // Unsigned tokens too.
        assert_eq!(redact_tokens("eyJa.eyJb."), STRIPPED);
        for kept in ["eyJ alone", "keyJar.x.y", "eyJa.b", "no token here", ""] {
            assert_eq!(redact_tokens(kept), kept);
        }
        assert!(matches!(redact_tokens("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn secrets_are_scrubbed_by_value() {
        let text = "vault said: bad password hunter22 for user bob";
        assert_eq!(
            scrub(text, &["hunter22", "bob", ""]),
            format!("vault said: bad password {STRIPPED} for user bob")
        );
    }
}
