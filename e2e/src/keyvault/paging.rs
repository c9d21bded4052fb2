//! Paged lists: `maxresults` 1..=25 (default 25), an opaque base64
//! `$skiptoken`, and a `nextLink` with an explicit port and a stale api-version.

use serde_json::{Value, json};

use crate::http::{Incoming, split_host_port};
use crate::util::{b64_std, b64_std_decode, percent_encode};

use super::errors::KvError;

/// Page size when `maxresults` is absent (and its maximum).
pub const MAX_PAGE: usize = 25;

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub offset: usize,
    pub size: usize,
    /// `maxresults` as sent, to carry into `nextLink`.
    pub maxresults: Option<usize>,
}

/// Read `maxresults` and `$skiptoken` from the query.
pub fn page_request(req: &Incoming) -> Result<PageRequest, KvError> {
    let maxresults = match req.query_ci("maxresults") {
        None => None,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Some(n),
            _ => {
                return Err(KvError::new(
                    http::StatusCode::BAD_REQUEST,
                    "BadParameter",
                    format!(
                        "Invalid value '{raw}' for maxresults. The value must be between 1 and {MAX_PAGE}."
                    ),
                ));
            }
        },
    };
    let offset = match req.query_ci("$skiptoken") {
        None => 0,
        Some(token) => decode_skiptoken(token).ok_or_else(|| {
            KvError::new(
                http::StatusCode::BAD_REQUEST,
                "BadParameter",
                "The $skiptoken is invalid.",
            )
        })?,
    };
    Ok(PageRequest {
        offset,
        size: maxresults.unwrap_or(MAX_PAGE),
        maxresults,
    })
}

fn encode_skiptoken(offset: usize) -> String {
    // Shaped like the service's tokens: base64 of a small JSON document.
    b64_std(
        json!({"NextMarker": format!("2!{offset}!emulator"), "TargetLocation": 0})
            .to_string()
            .as_bytes(),
    )
}

fn decode_skiptoken(token: &str) -> Option<usize> {
    // A '+' may have been turned into a space by form decoding.
    let bytes = b64_std_decode(&token.replace(' ', "+"))?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let marker = v.get("NextMarker")?.as_str()?;
    let mut parts = marker.split('!');
    (parts.next()? == "2").then_some(())?;
    parts.next()?.parse().ok()
}

/// One page of `items` as `{"value":[…],"nextLink":…}`; `path` is the list
/// path (e.g. `/secrets/x/versions`).
pub fn page(
    req: &Incoming,
    path: &str,
    items: Vec<Value>,
    p: PageRequest,
    stale_api_version: &str,
) -> Value {
    let total = items.len();
    let start = p.offset.min(total);
    let end = (start + p.size).min(total);
    let value: Vec<Value> = items.into_iter().skip(start).take(end - start).collect();
    let next = if end < total {
        let (host, port) = split_host_port(req.host());
        let port = port.unwrap_or(443);
        let mut link = format!(
            "https://{host}:{port}{path}?api-version={stale_api_version}&$skiptoken={}",
            percent_encode(&encode_skiptoken(end))
        );
        if let Some(n) = p.maxresults {
            link.push_str(&format!("&maxresults={n}"));
        }
        Value::String(link)
    } else {
        Value::Null
    };
    json!({"value": value, "nextLink": next})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skiptoken_round_trips_through_form_decoding() {
        for offset in [0, 1, 25, 1000] {
            let t = encode_skiptoken(offset);
            assert_eq!(decode_skiptoken(&t), Some(offset));
            assert_eq!(decode_skiptoken(&t.replace('+', " ")), Some(offset));
        }
        assert_eq!(decode_skiptoken("not-base64!"), None);
    }
}
