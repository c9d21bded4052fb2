//! The emulator's own PKI: one CA, and one server certificate for every
//! Key Vault cloud suffix (Azure Stack Hub's `local` region included), the
//! Entra hosts, `localhost` and 127.0.0.1.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::EmulatorError;

/// Names on the server certificate.
pub const SERVER_DNS_NAMES: [&str; 14] = [
    "*.vault.azure.net",
    "*.vault.azure.cn",
    "*.vault.usgovcloudapi.net",
    "*.vault.local.azurestack.external",
    "login.microsoftonline.com",
    "login.windows.net",
    "login.microsoft.com",
    "sts.windows.net",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
    "login.microsoftonline.us",
    "management.azure.com",
    "localhost",
    "emulator.secretfs.invalid",
];

/// The CA and the server certificate of one emulator run.
pub struct EmulatorPki {
    pub ca_pem: String,
    pub server_cert_der: Vec<u8>,
    server_key_der: Vec<u8>,
    ca_der: Vec<u8>,
}

impl std::fmt::Debug for EmulatorPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorPki").finish_non_exhaustive()
    }
}

impl EmulatorPki {
    /// Create a fresh CA (P-256) and server certificate.
    pub fn generate() -> Result<Self, EmulatorError> {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "secretfs kv-emulator CA");
        dn.push(DnType::OrganizationName, "secretfs");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        ca_params.not_before = now - time::Duration::hours(1);
        ca_params.not_after = now + time::Duration::days(30);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(
            SERVER_DNS_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from(
                std::net::Ipv6Addr::LOCALHOST,
            )));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "*.vault.azure.net");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(30);
        let server_cert = params.signed_by(&server_key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            server_cert_der: server_cert.der().to_vec(),
            server_key_der: server_key.serialize_der(),
        })
    }

    /// A rustls server configuration (aws-lc-rs provider, HTTP/1.1 via ALPN).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, EmulatorError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = vec![
            CertificateDer::from(self.server_cert_der.clone()),
            CertificateDer::from(self.ca_der.clone()),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
