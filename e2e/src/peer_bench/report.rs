//! What a run measured (serialized as the `--json` file), and the markdown
//! table that compares the drivers.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::config::{M, RETRY_AFTER, ROTATE_PODS};

#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Latencies {
    pub(super) first_ms: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) n: usize,
}

#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Reads {
    pub(super) p50_us: f64,
    pub(super) p99_us: f64,
    pub(super) tmpfs_p50_us: f64,
    pub(super) tmpfs_p99_us: f64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Memory {
    pub(super) idle_kib: u64,
    pub(super) loaded_kib: u64,
    /// Bytes the volumes' tmpfs hold (upstream only).
    pub(super) tmpfs_kib: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Cycle {
    pub(super) pods: usize,
    pub(super) gets: u64,
    pub(super) republishes: u64,
    pub(super) challenges: u64,
}

/// A pod started while its vault throttles.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct PodStart {
    /// Seconds until NodePublishVolume succeeded (None: not within the limit).
    pub(super) started_s: Option<f64>,
    /// Files in the volume when it succeeded (the class has M).
    pub(super) files_at_start: usize,
    /// Seconds until the volume held all M files (None: not within 5 min).
    pub(super) complete_s: Option<f64>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Throttle {
    pub(super) requests: u64,
    pub(super) throttled: u64,
    pub(super) same_class: Vec<PodStart>,
    pub(super) new_class: Vec<PodStart>,
}

/// What one driver's run measured (rows not measured stay empty).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Results {
    pub(super) publish_seed: Option<Latencies>,
    pub(super) publish_ten: Option<Latencies>,
    pub(super) read: Option<Reads>,
    pub(super) memory: Option<Memory>,
    pub(super) cycles: Vec<Cycle>,
    /// IMDS token requests in the cycle window.
    pub(super) cycle_tokens: Option<u64>,
    /// The first mounts of the steady row (131 pods): IMDS token requests
    /// and 401 challenges they cost.
    pub(super) mounts: usize,
    pub(super) mount_tokens: u64,
    pub(super) mount_challenges: u64,
    /// The whole run: pods created, and IMDS token requests.
    pub(super) run_pods: usize,
    pub(super) run_tokens: u64,
    /// Seconds from each vault write to the new bytes, per write, per pod.
    /// The first write comes after more than an interval without changes,
    /// the others 5 s after the previous one reached every pod.
    pub(super) rotation_s: Vec<Vec<f64>>,
    /// With `secretfs refresh` after the write (secretfs only).
    pub(super) rotation_on_demand_s: Vec<f64>,
    pub(super) throttle: Option<Throttle>,
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0..=1) of sorted values.
pub(super) fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(super) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.1} ms")
    }
}

fn ratio(upstream: f64, ours: f64) -> String {
    if upstream.is_finite() && ours.is_finite() && ours > 0.0 {
        format!("{:.2}", upstream / ours)
    } else {
        "–".into()
    }
}

fn secs(v: &[f64]) -> (f64, f64) {
    let s = sorted(v.to_vec());
    (quantile(&s, 0.5), s.last().copied().unwrap_or(f64::NAN))
}

fn started(v: &[PodStart]) -> String {
    let n = v.iter().filter(|s| s.started_s.is_some()).count();
    let worst = |f: fn(&PodStart) -> Option<f64>| v.iter().filter_map(f).fold(0.0, f64::max);
    let mut text = if n == 0 {
        format!("0/{} started", v.len())
    } else {
        format!(
            "{n}/{} started, the last after {:.1} s",
            v.len(),
            worst(|p| p.started_s)
        )
    };
    let empty = v
        .iter()
        .filter(|p| p.started_s.is_some() && p.files_at_start < M)
        .count();
    if empty > 0 {
        let least = v.iter().map(|p| p.files_at_start).min().unwrap_or(0);
        write!(text, "; {empty} of them with {least} of {M} files").unwrap();
        let complete = v.iter().filter(|p| p.complete_s.is_some()).count();
        if complete == v.len() {
            write!(text, ", all {M} after {:.0} s", worst(|p| p.complete_s)).unwrap();
        } else {
            write!(text, ", {complete} complete within 5 min").unwrap();
        }
    }
    text
}

/// The table's rows (without its header): secretfs, upstream and the
/// ratio for each figure both drivers measured.
pub fn table(results: &BTreeMap<&str, Results>) -> String {
    let empty = Results::default();
    let s = results.get("secretfs").unwrap_or(&empty);
    let u = results.get("upstream").unwrap_or(&empty);
    let mut out = String::new();
    let mut row = |figure: &str, sv: String, uv: String, r: String| {
        writeln!(out, "| {figure} | {sv} | {uv} | {r} |").unwrap();
    };
    for (sc, uc) in s.cycles.iter().zip(&u.cycles) {
        row(
            &format!(
                "vault GETs in one 2-min interval, {} pod(s) × {M} objects (republishes sent)",
                sc.pods
            ),
            format!("{} ({})", sc.gets, sc.republishes),
            format!("{} ({})", uc.gets, uc.republishes),
            ratio(uc.gets as f64, sc.gets as f64),
        );
    }
    for (sc, uc) in s.cycles.iter().zip(&u.cycles) {
        row(
            &format!(
                "unauthenticated requests (401 challenges) in that interval, {} pod(s)",
                sc.pods
            ),
            sc.challenges.to_string(),
            uc.challenges.to_string(),
            ratio(uc.challenges as f64, sc.challenges as f64),
        );
    }
    if s.run_pods > 0 && u.run_pods > 0 {
        row(
            "IMDS token requests in the whole run (pods mounted)",
            format!("{} ({})", s.run_tokens, s.run_pods),
            format!("{} ({})", u.run_tokens, u.run_pods),
            "–".into(),
        );
    }
    if let (Some(st), Some(ut)) = (s.cycle_tokens, u.cycle_tokens) {
        row(
            "IMDS token requests in that interval, all pods",
            st.to_string(),
            ut.to_string(),
            "–".into(),
        );
    }
    if s.mounts > 0 && u.mounts > 0 {
        row(
            &format!(
                "{} first mounts (one identity): IMDS token requests / 401 challenges",
                s.mounts
            ),
            format!("{} / {}", s.mount_tokens, s.mount_challenges),
            format!("{} / {}", u.mount_tokens, u.mount_challenges),
            "–".into(),
        );
    }
    for (name, sl, ul) in [
        ("seed class", &s.publish_seed, &u.publish_seed),
        ("10 objects", &s.publish_ten, &u.publish_ten),
    ] {
        if let (Some(sl), Some(ul)) = (sl, ul) {
            row(
                &format!("NodePublishVolume, {name}, 25 ms vault latency: first mount"),
                fmt_ms(sl.first_ms),
                fmt_ms(ul.first_ms),
                ratio(ul.first_ms, sl.first_ms),
            );
            row(
                &format!("NodePublishVolume, {name}: later pods p50 (n = {})", sl.n),
                fmt_ms(sl.p50_ms),
                fmt_ms(ul.p50_ms),
                ratio(ul.p50_ms, sl.p50_ms),
            );
            row(
                &format!("NodePublishVolume, {name}: later pods p99"),
                fmt_ms(sl.p99_ms),
                fmt_ms(ul.p99_ms),
                ratio(ul.p99_ms, sl.p99_ms),
            );
        }
    }
    if let (Some(sm), Some(um)) = (&s.memory, &u.memory) {
        let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
        row(
            "RSS, node plugin + provider (secretfs: + keeper), idle",
            mib(sm.idle_kib),
            mib(um.idle_kib),
            ratio(um.idle_kib as f64, sm.idle_kib as f64),
        );
        row(
            "RSS at 110 volumes × 10 objects × 4 KiB",
            mib(sm.loaded_kib),
            mib(um.loaded_kib),
            ratio(um.loaded_kib as f64, sm.loaded_kib as f64),
        );
        row(
            "RSS + the volumes' tmpfs pages",
            mib(sm.loaded_kib + sm.tmpfs_kib),
            mib(um.loaded_kib + um.tmpfs_kib),
            ratio(
                (um.loaded_kib + um.tmpfs_kib) as f64,
                (sm.loaded_kib + sm.tmpfs_kib) as f64,
            ),
        );
    }
    if !s.rotation_s.is_empty() && !u.rotation_s.is_empty() {
        let first = |r: &Results| r.rotation_s[0].clone();
        let later = |r: &Results| r.rotation_s[1..].concat();
        for (what, sv, uv) in [
            (
                "after more than 2 min without a change".to_owned(),
                first(s),
                first(u),
            ),
            (
                format!(
                    "{} more writes, each 5 s after the last reached every pod",
                    s.rotation_s.len() - 1
                ),
                later(s),
                later(u),
            ),
        ] {
            if sv.is_empty() || uv.is_empty() {
                continue;
            }
            let (sp, sm) = secs(&sv);
            let (up, um) = secs(&uv);
            row(
                &format!("vault write → new bytes in {ROTATE_PODS} pods' files, p50 / max: {what}"),
                format!("{sp:.1} s / {sm:.1} s"),
                format!("{up:.1} s / {um:.1} s"),
                ratio(up, sp),
            );
        }
        if !s.rotation_on_demand_s.is_empty() {
            let (op, om) = secs(&s.rotation_on_demand_s);
            row(
                "… with `secretfs refresh` after the write (no upstream equivalent since v1.6)",
                format!("{op:.2} s / {om:.2} s"),
                "–".into(),
                "–".into(),
            );
        }
    }
    if let (Some(st), Some(ut)) = (&s.throttle, &u.throttle) {
        row(
            &format!(
                "requests to a vault answering 429 + Retry-After: {RETRY_AFTER} for 60 s (429s)"
            ),
            format!("{} ({})", st.requests, st.throttled),
            format!("{} ({})", ut.requests, ut.throttled),
            ratio(ut.requests as f64, st.requests as f64),
        );
        row(
            "… pods started in it, class already mounted",
            started(&st.same_class),
            started(&ut.same_class),
            "–".into(),
        );
        row(
            "… pods started in it, new class",
            started(&st.new_class),
            started(&ut.new_class),
            "–".into(),
        );
    }
    if let (Some(sr), Some(ur)) = (&s.read, &u.read) {
        row(
            "warm open+read+close of a 4 KiB file, p50 (tmpfs in the same run)",
            format!("{:.1} µs ({:.1})", sr.p50_us, sr.tmpfs_p50_us),
            format!("{:.1} µs ({:.1})", ur.p50_us, ur.tmpfs_p50_us),
            ratio(ur.p50_us, sr.p50_us),
        );
        row(
            "… p99",
            format!("{:.1} µs ({:.1})", sr.p99_us, sr.tmpfs_p99_us),
            format!("{:.1} µs ({:.1})", ur.p99_us, ur.tmpfs_p99_us),
            ratio(ur.p99_us, sr.p99_us),
        );
    }
    out
}
