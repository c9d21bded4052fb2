//! Certificate chain ordering, as upstream's `fetchCertChains`
//! (`--construct-pem-chain=true`, the default): certificates are linked by
//! matching a certificate's AuthorityKeyIdentifier to another's
//! SubjectKeyIdentifier, the leaf is the first certificate that signs no
//! other, and the chain is walked leaf → intermediates → root.
//!
//! When the walk does not visit every certificate (a missing intermediate, an
//! unrelated certificate, two leaves) the original order is kept and a
//! warning is returned, like upstream. Where upstream returns an error
//! instead (no leaf at all, i.e. a cycle, or a certificate that does not
//! parse) we also keep the original order with a warning: the PFX's content
//! is still delivered. Certificates without an AuthorityKeyIdentifier have no
//! parent here; upstream compares empty identifiers as equal, which links
//! unrelated certificates that both lack the extensions.

use x509_cert::Certificate;
use x509_cert::der::Decode as _;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};

/// Why the original order was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainWarning {
    /// The walk from the leaf did not reach every certificate.
    Incomplete {
        /// Certificates in the walk from the leaf.
        linked: usize,
        /// Certificates in the PFX.
        total: usize,
    },
    /// Every certificate signs another one: there is no leaf.
    NoLeaf,
    /// A certificate could not be parsed.
    Unparsable {
        /// Its position in the PFX.
        index: usize,
    },
}

impl std::fmt::Display for ChainWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainWarning::Incomplete { linked, total } => write!(
                f,
                "certificate chain is not complete (the leaf links to {linked} of {total} certificates, an intermediate or root may be missing): keeping the order stored in Key Vault"
            ),
            ChainWarning::NoLeaf => f.write_str(
                "certificate chain has no leaf (every certificate signs another): keeping the order stored in Key Vault",
            ),
            ChainWarning::Unparsable { index } => write!(
                f,
                "certificate {index} of the chain could not be parsed as X.509: keeping the order stored in Key Vault"
            ),
        }
    }
}

struct KeyIds {
    subject: Option<Vec<u8>>,
    authority: Option<Vec<u8>>,
}

fn key_ids(der: &[u8]) -> Option<KeyIds> {
    let cert = Certificate::from_der(der).ok()?;
    let tbs = cert.tbs_certificate();
    let subject = tbs
        .get_extension::<SubjectKeyIdentifier>()
        .ok()?
        .map(|(_, ski)| ski.0.as_bytes().to_vec());
    let authority = tbs
        .get_extension::<AuthorityKeyIdentifier>()
        .ok()?
        .and_then(|(_, aki)| aki.key_identifier.map(|k| k.as_bytes().to_vec()));
    Some(KeyIds { subject, authority })
}

/// Orders DER certificates leaf → root; returns the new order as indexes
/// into `certs`, and a warning when the original order was kept.
pub fn order_chain(certs: &[&[u8]]) -> (Vec<usize>, Option<ChainWarning>) {
    let original: Vec<usize> = (0..certs.len()).collect();
    if certs.len() < 2 {
        return (original, None);
    }
    let mut ids = Vec::with_capacity(certs.len());
    for (index, der) in certs.iter().enumerate() {
        match key_ids(der) {
            Some(k) => ids.push(k),
            None => return (original, Some(ChainWarning::Unparsable { index })),
        }
    }
    // parent[i] = the first other certificate whose subject key id is i's
    // authority key id.
    let mut parent = vec![None; certs.len()];
    let mut is_parent = vec![false; certs.len()];
    for i in 0..certs.len() {
        let Some(aki) = ids[i].authority.as_deref().filter(|a| !a.is_empty()) else {
            continue;
        };
        if let Some(j) =
            (0..certs.len()).find(|&j| j != i && ids[j].subject.as_deref() == Some(aki))
        {
            parent[i] = Some(j);
            is_parent[j] = true;
        }
    }
    let Some(leaf) = (0..certs.len()).find(|&i| !is_parent[i]) else {
        return (original, Some(ChainWarning::NoLeaf));
    };
    let mut order = Vec::with_capacity(certs.len());
    let mut next = Some(leaf);
    while let Some(i) = next {
        if order.contains(&i) {
            // A cycle below the leaf: cannot be a chain.
            return (original, Some(ChainWarning::NoLeaf));
        }
        order.push(i);
        next = parent[i];
    }
    if order.len() != certs.len() {
        return (
            original,
            Some(ChainWarning::Incomplete {
                linked: order.len(),
                total: certs.len(),
            }),
        );
    }
    (order, None)
}
