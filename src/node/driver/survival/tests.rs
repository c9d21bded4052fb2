//! The survival formats: record names, and the keeper's blob (round trips
//! and damage).

use std::collections::BTreeMap;

use secretfs_secrets::SecretString;
use zeroize::Zeroizing;

use super::blob::*;
use super::record::*;

#[test]
fn record_names_are_stable_and_distinct() {
    let a = record_name("/var/lib/kubelet/pods/a/volumes/x/mount");
    assert_eq!(a, record_name("/var/lib/kubelet/pods/a/volumes/x/mount"));
    assert_ne!(a, record_name("/var/lib/kubelet/pods/b/volumes/x/mount"));
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn damaged_blobs_are_refused_not_trusted() {
    assert_eq!(decode_secrets(b"").unwrap_err(), "truncated");
    assert_eq!(decode_secrets(b"XXXX").unwrap_err(), "unknown format");
    let mut blob = BLOB_MAGIC.to_vec();
    blob.extend_from_slice(&u32::MAX.to_le_bytes());
    blob.extend_from_slice(&0u32.to_le_bytes());
    blob.extend_from_slice(&1u32.to_le_bytes());
    blob.extend_from_slice(&100u32.to_le_bytes());
    assert_eq!(decode_secrets(&blob).unwrap_err(), "truncated");
    let mut ok = BLOB_MAGIC.to_vec();
    ok.extend_from_slice(&u32::MAX.to_le_bytes());
    ok.extend_from_slice(&0u32.to_le_bytes());
    ok.extend_from_slice(&0u32.to_le_bytes());
    let decoded = decode_secrets(&ok).unwrap();
    assert!(decoded.tokens.is_none() && decoded.files.is_empty());
    ok.push(0);
    assert_eq!(decode_secrets(&ok).unwrap_err(), "trailing bytes");
}

/// Arbitrary secret halves: tokens or none, publish secrets, files.
#[allow(clippy::type_complexity)]
fn secret_half() -> impl proptest::strategy::Strategy<
    Value = (
        Option<String>,
        BTreeMap<String, String>,
        BTreeMap<String, Vec<u8>>,
    ),
> {
    use proptest::prelude::*;
    let text = || proptest::string::string_regex("(?s).{0,24}").unwrap();
    (
        proptest::option::of(proptest::string::string_regex("(?s).{0,300}").unwrap()),
        proptest::collection::btree_map(text(), text(), 0..6),
        proptest::collection::btree_map(
            text(),
            prop_oneof![
                4 => proptest::collection::vec(any::<u8>(), 0..128),
                1 => proptest::collection::vec(any::<u8>(), 0..20_000),
            ],
            0..6,
        ),
    )
}

fn blob_of(
    tokens: &Option<String>,
    secrets: &BTreeMap<String, String>,
    files: &BTreeMap<String, Vec<u8>>,
) -> Zeroizing<Vec<u8>> {
    let secrets: Vec<(&str, &str)> = secrets
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let files: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    encode_blob(tokens.as_deref().map(str::as_bytes), &secrets, &files)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Encode then decode is the identity: tokens, secrets and files.
    #[test]
    fn any_secret_half_round_trips((tokens, secrets, files) in secret_half()) {
        let blob = blob_of(&tokens, &secrets, &files);
        let decoded = decode_secrets(&blob).unwrap();
        proptest::prop_assert_eq!(decoded.tokens.as_ref().map(SecretString::expose), tokens.as_deref());
        let pairs: BTreeMap<String, String> = decoded
            .secrets
            .expose()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        proptest::prop_assert_eq!(&pairs, &secrets);
        let got: BTreeMap<String, Vec<u8>> = decoded
            .files
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_vec()))
            .collect();
        proptest::prop_assert_eq!(&got, &files);
    }

    /// Every truncation of a blob is refused.
    #[test]
    fn every_truncation_is_refused((tokens, secrets, files) in secret_half(), cut in proptest::prelude::any::<proptest::sample::Index>()) {
        let blob = blob_of(&tokens, &secrets, &files);
        let cut = cut.index(blob.len());
        proptest::prop_assert!(decode_secrets(&blob[..cut]).is_err(), "{} of {} bytes accepted", cut, blob.len());
    }

    /// A flipped bit gives an error or another well-formed half, never
    /// a panic; in the magic it is always refused.
    #[test]
    fn a_flipped_bit_is_refused_cleanly((tokens, secrets, files) in secret_half(), at in proptest::prelude::any::<proptest::sample::Index>(), bit in 0u8..8) {
        let mut blob = blob_of(&tokens, &secrets, &files);
        let at = at.index(blob.len());
        blob[at] ^= 1 << bit;
        let decoded = decode_secrets(&blob);
        if at < 4 {
            proptest::prop_assert_eq!(decoded.unwrap_err(), "unknown format");
        }
    }
}
