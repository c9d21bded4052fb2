//! JSON shapes of the data plane: SecretBundle, KeyBundle, CertificateBundle
//! and their list items. `base` is `https://<Host header>`.

use serde_json::{Map, Value, json};

use crate::pki::KeySpec;
use crate::store::{Attributes, CertificateVersion, KeyVersion, SecretVersion};

const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
const RECOVERABLE_DAYS: u32 = 90;

/// Object attributes in Unix seconds.
pub fn attributes(a: &Attributes) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("enabled".into(), json!(a.enabled));
    if let Some(nbf) = a.nbf {
        m.insert("nbf".into(), json!(nbf));
    }
    if let Some(exp) = a.exp {
        m.insert("exp".into(), json!(exp));
    }
    m.insert("created".into(), json!(a.created));
    m.insert("updated".into(), json!(a.updated));
    m.insert("recoveryLevel".into(), json!(RECOVERY_LEVEL));
    m.insert("recoverableDays".into(), json!(RECOVERABLE_DAYS));
    m
}

fn put_tags(obj: &mut Map<String, Value>, tags: &std::collections::BTreeMap<String, String>) {
    if !tags.is_empty() {
        obj.insert("tags".into(), json!(tags));
    }
}

/// `SecretBundle` with `value` (already converted if asked).
pub fn secret_bundle(
    base: &str,
    name: &str,
    s: &SecretVersion,
    value: &str,
    content_type: Option<&str>,
) -> Value {
    let mut o = Map::new();
    o.insert("value".into(), json!(value));
    if let Some(ct) = content_type {
        o.insert("contentType".into(), json!(ct));
    }
    o.insert(
        "id".into(),
        json!(format!("{base}/secrets/{name}/{}", s.version)),
    );
    o.insert(
        "attributes".into(),
        Value::Object(attributes(&s.attributes)),
    );
    put_tags(&mut o, &s.tags);
    if s.certificate.is_some() {
        o.insert(
            "kid".into(),
            json!(format!("{base}/keys/{name}/{}", s.version)),
        );
        o.insert("managed".into(), json!(true));
    }
    Value::Object(o)
}

/// `SecretItem` (no value).
pub fn secret_item(base: &str, name: &str, s: &SecretVersion) -> Value {
    let mut o = Map::new();
    o.insert(
        "id".into(),
        json!(format!("{base}/secrets/{name}/{}", s.version)),
    );
    o.insert(
        "attributes".into(),
        Value::Object(attributes(&s.attributes)),
    );
    put_tags(&mut o, &s.tags);
    if let Some(ct) = &s.content_type {
        o.insert("contentType".into(), json!(ct));
    }
    if s.certificate.is_some() {
        o.insert("managed".into(), json!(true));
    }
    Value::Object(o)
}

fn key_attributes(k: &KeyVersion) -> Value {
    let mut a = attributes(&k.attributes);
    a.insert("exportable".into(), json!(false));
    Value::Object(a)
}

/// `KeyBundle`: the public JWK only.
pub fn key_bundle(base: &str, name: &str, k: &KeyVersion) -> Value {
    let mut jwk = match serde_json::to_value(&k.jwk) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    jwk.insert(
        "kid".into(),
        json!(format!("{base}/keys/{name}/{}", k.version)),
    );
    jwk.insert("key_ops".into(), json!(k.jwk.key_ops()));
    let mut o = Map::new();
    o.insert("key".into(), Value::Object(jwk));
    o.insert("attributes".into(), key_attributes(k));
    put_tags(&mut o, &k.tags);
    if k.managed {
        o.insert("managed".into(), json!(true));
    }
    Value::Object(o)
}

/// `KeyItem`.
pub fn key_item(base: &str, name: &str, k: &KeyVersion) -> Value {
    let mut o = Map::new();
    o.insert(
        "kid".into(),
        json!(format!("{base}/keys/{name}/{}", k.version)),
    );
    o.insert("attributes".into(), key_attributes(k));
    put_tags(&mut o, &k.tags);
    if k.managed {
        o.insert("managed".into(), json!(true));
    }
    Value::Object(o)
}

/// `CertificatePolicy` (`GET /certificates/{name}/policy`, and inside a
/// `CertificateBundle`).
pub fn policy(base: &str, name: &str, c: &CertificateVersion) -> Value {
    let key_props = match c.spec {
        KeySpec::Rsa { bits } => {
            json!({"exportable": c.exportable, "kty": "RSA", "key_size": bits, "reuse_key": false})
        }
        KeySpec::Ec { curve } => {
            json!({"exportable": c.exportable, "kty": "EC", "crv": curve.jwk_name(), "reuse_key": false})
        }
    };
    let mut x509 = json!({
        "subject": c.material.subject,
        "ekus": ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"],
        "key_usage": ["digitalSignature", "keyEncipherment"],
        "validity_months": c.validity_months,
        "basic_constraints": {"ca": false},
    });
    if !c.dns_names.is_empty() {
        x509["sans"] = json!({"dns_names": c.dns_names});
    }
    json!({
        "id": format!("{base}/certificates/{name}/policy"),
        "key_props": key_props,
        "secret_props": {"contentType": c.content_type},
        "x509_props": x509,
        "lifetime_actions": [{"trigger": {"lifetime_percentage": 80}, "action": {"action_type": "AutoRenew"}}],
        "issuer": {"name": "Self"},
        "attributes": {"enabled": true, "created": c.attributes.created, "updated": c.attributes.updated},
    })
}

/// `CertificateBundle`: `cer` (standard base64 DER), `x5t` (base64url SHA-1),
/// `kid`/`sid` with the same version, and the policy.
pub fn certificate_bundle(base: &str, name: &str, c: &CertificateVersion) -> Value {
    let mut o = Map::new();
    o.insert(
        "id".into(),
        json!(format!("{base}/certificates/{name}/{}", c.version)),
    );
    o.insert(
        "kid".into(),
        json!(format!("{base}/keys/{name}/{}", c.version)),
    );
    o.insert(
        "sid".into(),
        json!(format!("{base}/secrets/{name}/{}", c.version)),
    );
    o.insert("x5t".into(), json!(c.material.x5t()));
    o.insert("cer".into(), json!(c.material.cer_base64()));
    o.insert(
        "attributes".into(),
        Value::Object(attributes(&c.attributes)),
    );
    put_tags(&mut o, &c.tags);
    o.insert("policy".into(), policy(base, name, c));
    Value::Object(o)
}

/// `CertificateItem`.
pub fn certificate_item(base: &str, name: &str, c: &CertificateVersion) -> Value {
    let mut o = Map::new();
    o.insert(
        "id".into(),
        json!(format!("{base}/certificates/{name}/{}", c.version)),
    );
    o.insert("x5t".into(), json!(c.material.x5t()));
    o.insert(
        "attributes".into(),
        Value::Object(attributes(&c.attributes)),
    );
    put_tags(&mut o, &c.tags);
    Value::Object(o)
}
