//! When mounted objects stop (or start) being valid: Key Vault's `exp` and
//! `nbf` attributes and, for certificates and certificate-backed secrets,
//! the certificate chain's `notAfter`/`notBefore`.
//!
//! - [`Validity`]: what the provider learnt about one file's object version
//!   (timestamps only: never a value).
//! - [`Condition`]: expired, not yet valid, or expiring within the warning
//!   threshold (`--expiry-warning`); each becomes a Warning event on the
//!   pod, once per object version per pod (`SecretExpired`,
//!   `SecretNotYetValid`, `SecretExpiringSoon`).
//! - [`ExpiryBoard`]: the node's series of
//!   `secretfs_object_expiry_timestamp_seconds`, one per distinct object
//!   (namespace, class, object, type), the soonest expiry among the volumes
//!   that show it, removed with the last of them.
//!
//! The built-in Azure provider reports validity from Key Vault's attributes
//! and certificates; an external provider's protocol carries no attributes,
//! so its files report one only when they hold PEM certificates
//! (`provider::external`). Lazy volumes report each file's once it loaded
//! (`node::driver`'s `lazy`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;

/// The default of `--expiry-warning`: 7 days.
pub const DEFAULT_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Event reason: the object expires within the warning threshold.
pub const EXPIRING_SOON: &str = "SecretExpiringSoon";
/// Event reason: the object has expired.
pub const EXPIRED: &str = "SecretExpired";
/// Event reason: the object is not valid yet.
pub const NOT_YET_VALID: &str = "SecretNotYetValid";

/// What is known of when one mounted object version is valid. No value.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Validity {
    /// The object version this is about (events are posted once per
    /// version).
    pub version: String,
    /// Key Vault's `nbf` (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    /// Key Vault's `exp` (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// The certificate chain the object holds, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateValidity>,
}

/// The validity of a certificate chain: the earliest `notAfter` and the
/// latest `notBefore` of its certificates, and which certificate each is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateValidity {
    /// The latest `notBefore` of the chain (Unix seconds).
    pub not_before: i64,
    /// Which certificate it is ([`which_certificate`]).
    pub not_before_of: String,
    /// The earliest `notAfter` of the chain (Unix seconds).
    pub not_after: i64,
    /// Which certificate it is ([`which_certificate`]).
    pub not_after_of: String,
}

/// How a certificate of a chain ordered leaf first is named: `leaf`, or
/// `chain certificate 2 of 3` (counting the leaf as 1).
pub fn which_certificate(position: usize, total: usize) -> String {
    if position == 0 {
        "leaf".to_owned()
    } else {
        format!("chain certificate {} of {total}", position + 1)
    }
}

/// A moment and what set it (`Key Vault exp`, `certificate notAfter (leaf)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// Unix seconds.
    pub at: i64,
    /// Which attribute or certificate decided it.
    pub source: String,
}

impl Validity {
    /// Whether anything is known.
    pub fn is_empty(&self) -> bool {
        self.not_before.is_none() && self.expires.is_none() && self.certificate.is_none()
    }

    /// When the object stops being valid: the earlier of Key Vault's `exp`
    /// and the chain's earliest `notAfter`.
    pub fn expires_at(&self) -> Option<Bound> {
        let vault = self.expires.map(|at| Bound {
            at,
            source: "Key Vault exp".to_owned(),
        });
        let cert = self.certificate.as_ref().map(|c| Bound {
            at: c.not_after,
            source: format!("certificate notAfter ({})", c.not_after_of),
        });
        match (vault, cert) {
            (Some(v), Some(c)) => Some(if c.at < v.at { c } else { v }),
            (v, c) => v.or(c),
        }
    }

    /// When the object starts being valid: the later of Key Vault's `nbf`
    /// and the chain's latest `notBefore`.
    pub fn valid_from(&self) -> Option<Bound> {
        let vault = self.not_before.map(|at| Bound {
            at,
            source: "Key Vault nbf".to_owned(),
        });
        let cert = self.certificate.as_ref().map(|c| Bound {
            at: c.not_before,
            source: format!("certificate notBefore ({})", c.not_before_of),
        });
        match (vault, cert) {
            (Some(v), Some(c)) => Some(if c.at > v.at { c } else { v }),
            (v, c) => v.or(c),
        }
    }

    /// What a pod should be warned of at `now` (Unix seconds), with
    /// `warning` the threshold of [`Condition::ExpiringSoon`].
    pub fn condition(&self, now: i64, warning: Duration) -> Option<Condition> {
        if let Some(from) = self.valid_from()
            && from.at > now
        {
            return Some(Condition::NotYetValid(from));
        }
        let until = self.expires_at()?;
        if until.at <= now {
            Some(Condition::Expired(until))
        } else if until.at - now <= i64::try_from(warning.as_secs()).unwrap_or(i64::MAX) {
            Some(Condition::ExpiringSoon(until))
        } else {
            None
        }
    }
}

/// Why a pod is warned about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Valid only from this moment on.
    NotYetValid(Bound),
    /// Expired at this moment.
    Expired(Bound),
    /// Expires at this moment, within the warning threshold.
    ExpiringSoon(Bound),
}

impl Condition {
    /// The event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Condition::NotYetValid(_) => NOT_YET_VALID,
            Condition::Expired(_) => EXPIRED,
            Condition::ExpiringSoon(_) => EXPIRING_SOON,
        }
    }

    /// The event's message about the file `path` showing `object` at
    /// `version`, at `now`: what, when, what decided it, what to do.
    pub fn message(&self, path: &str, object: &str, version: &str, now: i64) -> String {
        let what = if version.is_empty() {
            format!("{object} (file {path})")
        } else {
            format!("{object} (file {path}, version {version})")
        };
        match self {
            Condition::NotYetValid(b) => format!(
                "{what} is not valid until {} (in {}, {}): the application reads a value that is not in force yet; \
                 mount an older version (objectVersion) or move its activation date in the vault",
                rfc3339(b.at),
                span(b.at - now),
                b.source
            ),
            Condition::Expired(b) => format!(
                "{what} expired at {} ({} ago, {}): store a new version in the vault; \
                 the volume shows it at its next refresh",
                rfc3339(b.at),
                span(now - b.at),
                b.source
            ),
            Condition::ExpiringSoon(b) => format!(
                "{what} expires at {} (in {}, {}): store a new version in the vault before then; \
                 the volume shows it at its next refresh",
                rfc3339(b.at),
                span(b.at - now),
                b.source
            ),
        }
    }
}

/// `2026-12-07T20:00:00Z` of Unix seconds `t`.
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A duration for people: `3d 4h`, `5h 2m`, `42s`.
pub fn span(seconds: i64) -> String {
    let s = seconds.max(0);
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", s % 60)
    } else {
        format!("{s}s")
    }
}

/// The labels of `secretfs_object_expiry_timestamp_seconds`: which object,
/// never its value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ExpiryLabels {
    /// The pod's (and class's) namespace.
    pub namespace: String,
    /// The SecretProviderClass.
    pub class: String,
    /// The file the object is mounted as: its alias, else its name (a
    /// version-history slot: `<alias>/<n>`).
    pub object: String,
    /// `secret`, `key` or `cert`; `file` for an external provider's file
    /// (its object id is the file's path: no type).
    pub r#type: String,
}

impl ExpiryLabels {
    /// The labels of the file `path` showing object `object_id`
    /// (`secret/db`) of `class` in `namespace`.
    pub fn new(namespace: &str, class: &str, path: &str, object_id: &str) -> Self {
        let r#type = match object_id.split_once('/') {
            Some((t @ ("secret" | "key" | "cert"), _)) => t,
            _ => "file",
        };
        ExpiryLabels {
            namespace: namespace.to_owned(),
            class: class.to_owned(),
            object: path.to_owned(),
            r#type: r#type.to_owned(),
        }
    }
}

/// The node's expiry series: each volume's objects with their expiry, and
/// per distinct object the soonest of them.
#[derive(Debug, Default)]
pub struct ExpiryBoard {
    volumes: HashMap<PathBuf, BTreeMap<ExpiryLabels, i64>>,
}

impl ExpiryBoard {
    /// Sets what `volume` shows (an empty map: nothing, as at unpublish)
    /// and returns each series whose value changed: its new value, or
    /// `None` when no volume shows that object any more.
    pub fn set(
        &mut self,
        volume: &Path,
        series: BTreeMap<ExpiryLabels, i64>,
    ) -> Vec<(ExpiryLabels, Option<i64>)> {
        let before: BTreeMap<ExpiryLabels, Option<i64>> = self
            .volumes
            .get(volume)
            .into_iter()
            .flatten()
            .chain(series.iter())
            .map(|(labels, _)| (labels.clone(), self.value(labels)))
            .collect();
        if series.is_empty() {
            self.volumes.remove(volume);
        } else {
            self.volumes.insert(volume.to_owned(), series);
        }
        before
            .into_iter()
            .filter_map(|(labels, old)| {
                let new = self.value(&labels);
                (new != old).then_some((labels, new))
            })
            .collect()
    }

    /// The soonest expiry of `labels` among the volumes.
    pub fn value(&self, labels: &ExpiryLabels) -> Option<i64> {
        self.volumes
            .values()
            .filter_map(|series| series.get(labels).copied())
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const WEEK: Duration = DEFAULT_WARNING;

    fn cert(not_before: i64, not_after: i64, of: &str) -> CertificateValidity {
        CertificateValidity {
            not_before,
            not_before_of: "leaf".into(),
            not_after,
            not_after_of: of.into(),
        }
    }

    #[test]
    fn the_earlier_of_exp_and_the_chain_decides_and_says_which() {
        let mut v = Validity {
            version: "v1".into(),
            expires: Some(100 * DAY),
            ..Default::default()
        };
        assert_eq!(v.expires_at().unwrap().source, "Key Vault exp");
        v.certificate = Some(cert(0, 30 * DAY, "chain certificate 2 of 3"));
        let until = v.expires_at().unwrap();
        assert_eq!(until.at, 30 * DAY);
        assert_eq!(
            until.source,
            "certificate notAfter (chain certificate 2 of 3)"
        );
        v.expires = Some(10 * DAY);
        assert_eq!(v.expires_at().unwrap().source, "Key Vault exp");
        v.expires = None;
        assert_eq!(v.expires_at().unwrap().at, 30 * DAY);
        assert!(Validity::default().expires_at().is_none());
        assert!(Validity::default().is_empty());
    }

    #[test]
    fn conditions_at_their_boundaries() {
        let now = 1_000 * DAY;
        let exp = |at| Validity {
            expires: Some(at),
            ..Default::default()
        };
        assert_eq!(exp(now + 8 * DAY).condition(now, WEEK), None);
        assert_eq!(
            exp(now + 7 * DAY).condition(now, WEEK).unwrap().reason(),
            EXPIRING_SOON
        );
        assert_eq!(
            exp(now + 1).condition(now, WEEK).unwrap().reason(),
            EXPIRING_SOON
        );
        assert_eq!(exp(now).condition(now, WEEK).unwrap().reason(), EXPIRED);
        assert_eq!(
            exp(now - DAY).condition(now, WEEK).unwrap().reason(),
            EXPIRED
        );
        // A zero threshold warns only of what has expired.
        assert_eq!(exp(now + 1).condition(now, Duration::ZERO), None);
        let nbf = Validity {
            not_before: Some(now + DAY),
            expires: Some(now + 2 * DAY),
            ..Default::default()
        };
        assert_eq!(nbf.condition(now, WEEK).unwrap().reason(), NOT_YET_VALID);
        let started = Validity {
            not_before: Some(now),
            ..Default::default()
        };
        assert_eq!(started.condition(now, WEEK), None);
        // A certificate not valid yet, with an earlier nbf in Key Vault.
        let v = Validity {
            not_before: Some(now - DAY),
            certificate: Some(cert(now + 60, now + 400 * DAY, "leaf")),
            ..Default::default()
        };
        match v.condition(now, WEEK) {
            Some(Condition::NotYetValid(b)) => {
                assert_eq!(b.source, "certificate notBefore (leaf)")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_name_the_object_time_and_source_only() {
        let now = 1_796_000_000;
        let c = Condition::ExpiringSoon(Bound {
            at: now + DAY + 3600,
            source: "Key Vault exp".into(),
        });
        let m = c.message("DB_PASSWORD", "secret/db", "abc123", now);
        assert!(
            m.starts_with("secret/db (file DB_PASSWORD, version abc123) expires at ")
                && m.contains("(in 1d 1h, Key Vault exp)"),
            "{m}"
        );
        let m = Condition::Expired(Bound {
            at: now - 90,
            source: "certificate notAfter (leaf)".into(),
        })
        .message("tls", "cert/web", "", now);
        assert!(
            m.starts_with("cert/web (file tls) expired at ")
                && m.contains("(1m 30s ago, certificate notAfter (leaf))"),
            "{m}"
        );
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_083_199), "2026-11-30T23:59:59Z");
        assert_eq!(rfc3339(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(span(59), "59s");
        assert_eq!(span(3 * DAY + 4 * 3600 + 5), "3d 4h");
    }

    fn labels(ns: &str, object: &str) -> ExpiryLabels {
        ExpiryLabels::new(ns, "azure-kvname", object, "secret/db")
    }

    #[test]
    fn one_series_per_object_the_soonest_of_its_volumes_removed_with_the_last() {
        let mut board = ExpiryBoard::default();
        let (a, b) = (Path::new("/a"), Path::new("/b"));
        let db = labels("default", "DB");
        assert_eq!(db.r#type, "secret");
        // An external provider's file: its id is its path, of no type.
        for path in ["tls.pem", "certs/tls.pem"] {
            assert_eq!(ExpiryLabels::new("ns", "c", path, path).r#type, "file");
        }
        let changes = board.set(a, [(db.clone(), 500)].into());
        assert_eq!(changes, vec![(db.clone(), Some(500))]);
        // A second pod with the same object, rotated later to an older
        // expiry: the soonest is shown.
        assert_eq!(board.set(b, [(db.clone(), 500)].into()), vec![]);
        assert_eq!(
            board.set(b, [(db.clone(), 300)].into()),
            vec![(db.clone(), Some(300))]
        );
        // Another namespace is another object.
        let other = labels("prod", "DB");
        board.set(b, [(db.clone(), 300), (other.clone(), 900)].into());
        assert_eq!(board.value(&other), Some(900));
        // b goes: a's value comes back, prod's series goes.
        let mut changes = board.set(b, BTreeMap::new());
        changes.sort();
        assert_eq!(
            changes,
            vec![(db.clone(), Some(500)), (other.clone(), None)]
        );
        assert_eq!(board.set(a, BTreeMap::new()), vec![(db, None)]);
        assert!(board.volumes.is_empty());
    }
}
