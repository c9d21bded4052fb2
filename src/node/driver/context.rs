//! Reading a NodePublishVolume: who the pod is, which class it names, its
//! tokens, and whether the target path is really this pod's.

use std::path::{Component, Path};

use secretfs_csi::{ErrorCode, PublishRequest, VolumeError, error_types, keys};
use secretfs_secrets::SecretString;

use crate::provider::PodRef;

/// Volume-context keys a pod spec may set. Everything else is refused:
/// provider parameters come only from the SecretProviderClass, so a pod
/// cannot point a class at another vault or identity.
const POD_KEYS: [&str; 2] = [keys::SECRET_PROVIDER_CLASS, "providerName"];

/// What the publish flow needs from the request.
#[derive(Debug, Clone)]
pub struct PublishContext {
    pub pod: PodRef,
    /// The SecretProviderClass name, in the pod's namespace.
    pub class: String,
    pub tokens: Option<SecretString>,
}

fn missing(key: &str, fix: &str) -> VolumeError {
    VolumeError::new(
        ErrorCode::InvalidArgument,
        error_types::POD_INFO_MISSING,
        format!("{key} is missing from the volume context: {fix}"),
    )
}

/// Checks the volume context and the target path of `request`.
pub fn read(request: &PublishRequest) -> Result<PublishContext, VolumeError> {
    let ctx = &request.volume_context;
    for (key, _) in ctx.iter() {
        if !key.starts_with("csi.storage.k8s.io/") && !POD_KEYS.contains(&key) {
            return Err(VolumeError::new(
                ErrorCode::InvalidArgument,
                error_types::VOLUME_ATTRIBUTE_NOT_ALLOWED,
                format!(
                    "volume attribute {key:?} is not allowed: provider parameters come only from the \
                     SecretProviderClass; move it to spec.parameters of the class and keep only \
                     secretProviderClass in the pod's volumeAttributes"
                ),
            ));
        }
    }
    let pod_info = "the CSIDriver must set podInfoOnMount: true (the secretfs chart does)";
    let get = |key: &str| ctx.get(key).filter(|v| !v.is_empty());
    let pod = PodRef {
        name: get(keys::POD_NAME)
            .ok_or_else(|| missing(keys::POD_NAME, pod_info))?
            .to_owned(),
        namespace: get(keys::POD_NAMESPACE)
            .ok_or_else(|| missing(keys::POD_NAMESPACE, pod_info))?
            .to_owned(),
        uid: get(keys::POD_UID)
            .ok_or_else(|| missing(keys::POD_UID, pod_info))?
            .to_owned(),
        service_account: get(keys::SERVICE_ACCOUNT_NAME)
            .unwrap_or_default()
            .to_owned(),
    };
    let class = get(keys::SECRET_PROVIDER_CLASS)
        .ok_or_else(|| {
            missing(
                keys::SECRET_PROVIDER_CLASS,
                "set volumeAttributes.secretProviderClass on the pod's csi volume to the name of a SecretProviderClass in its namespace",
            )
        })?
        .to_owned();
    if !valid_object_name(&class) {
        return Err(VolumeError::invalid(format!(
            "secretProviderClass {:?} is not a valid SecretProviderClass name: set \
             volumeAttributes.secretProviderClass to the metadata.name of a SecretProviderClass in the \
             pod's namespace (lowercase letters, digits, '-' and '.', at most 253)",
            shorten(&class)
        )));
    }
    check_target(&request.target_path, &pod.uid)?;
    // Kubernetes ≥ 1.35 may put the tokens in the request secrets instead.
    let tokens = request
        .secrets
        .get(keys::SERVICE_ACCOUNT_TOKENS)
        .or_else(|| ctx.get(keys::SERVICE_ACCOUNT_TOKENS))
        .filter(|t| !t.is_empty())
        .map(SecretString::from);
    Ok(PublishContext { pod, class, tokens })
}

/// A Kubernetes object name (RFC 1123 subdomain). The class name goes into
/// the API path of a live read, so anything else (`/`, `..`, NUL) must
/// never get that far.
fn valid_object_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=253).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// At most 64 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(64).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// Linux's PATH_MAX and NAME_MAX: kubelet never creates a longer target.
const MAX_TARGET_LEN: usize = 4095;
const MAX_TARGET_NAME_LEN: usize = 255;

/// The target must be `…/pods/<pod uid>/volumes/kubernetes.io~csi/<name>/mount`
/// with the uid of the pod in the request (upstream's CVE-2020-8568 rule).
pub fn check_target(target: &Path, pod_uid: &str) -> Result<(), VolumeError> {
    let expected = |target: &Path| {
        VolumeError::new(
            ErrorCode::InvalidArgument,
            error_types::UNEXPECTED_TARGET_PATH,
            format!(
                "target path {target:?} is not a volume of pod {pod_uid}: expected \
                 <kubelet dir>/pods/{pod_uid}/volumes/kubernetes.io~csi/<volume>/mount"
            ),
        )
    };
    match target_pod(target, &format!("pod {pod_uid}"))? {
        Some(uid) if uid == pod_uid => Ok(()),
        _ => Err(expected(target)),
    }
}

/// A NodeUnpublishVolume's target must be a kubelet volume path too (of any
/// pod: the request names none): nothing else is unmounted or removed.
pub fn check_unpublish_target(target: &Path) -> Result<(), VolumeError> {
    match target_pod(target, "any pod")? {
        Some(_) => Ok(()),
        None => Err(VolumeError::new(
            ErrorCode::InvalidArgument,
            error_types::UNEXPECTED_TARGET_PATH,
            format!(
                "target path {:?} is not a kubelet volume path: expected \
                 <kubelet dir>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount; nothing was \
                 unmounted or removed",
                shorten(&target.to_string_lossy())
            ),
        )),
    }
}

/// The pod uid in a target of the shape kubelet makes, `None` for any other
/// shape; too long a path is an error of its own (`whose` names the pod in
/// it).
fn target_pod<'a>(target: &'a Path, whose: &str) -> Result<Option<&'a str>, VolumeError> {
    let too_long = target.as_os_str().len() > MAX_TARGET_LEN
        || target
            .components()
            .any(|c| c.as_os_str().len() > MAX_TARGET_NAME_LEN);
    if too_long {
        return Err(VolumeError::new(
            ErrorCode::InvalidArgument,
            error_types::UNEXPECTED_TARGET_PATH,
            format!(
                "target path {:?} ({} bytes) is longer than a path kubelet creates (at most {MAX_TARGET_LEN} \
                 bytes, {MAX_TARGET_NAME_LEN} per name): it is not a volume of {whose}",
                shorten(&target.to_string_lossy()),
                target.as_os_str().len()
            ),
        ));
    }
    let names: Vec<&str> = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => n.to_str(),
            _ => None,
        })
        .collect();
    // A name that is not UTF-8 is left out of `names`, so such a target
    // could match with a foreign directory in the pod's place
    // (`pods/<not UTF-8>/<uid>/…`); kubelet never makes one: refuse it.
    let clean = target.is_absolute()
        && target.to_str().is_some()
        && !target
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
    if !clean {
        return Ok(None);
    }
    Ok(match names.as_slice() {
        [
            ..,
            "pods",
            uid,
            "volumes",
            "kubernetes.io~csi",
            volume,
            "mount",
        ] if !volume.is_empty() && !uid.is_empty() => Some(*uid),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secretfs_csi::VolumeContext;
    use secretfs_secrets::SecretMap;

    const UID: &str = "0d5cb5a2-1f6b-4d8c-9a57-4f0c3e2b1a90";

    fn target() -> String {
        format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/secrets-store-inline/mount")
    }

    fn request(extra: &[(&str, &str)]) -> PublishRequest {
        let mut ctx = vec![
            (keys::POD_NAME, "nginx-secrets-store-inline"),
            (keys::POD_NAMESPACE, "default"),
            (keys::POD_UID, UID),
            (keys::SERVICE_ACCOUNT_NAME, "default"),
            (keys::EPHEMERAL, "true"),
            (keys::SECRET_PROVIDER_CLASS, "azure-kvname"),
        ];
        ctx.extend_from_slice(extra);
        PublishRequest {
            volume_id: "csi-1".into(),
            target_path: target().into(),
            volume_context: VolumeContext::new(
                ctx.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())),
            ),
            secrets: SecretMap::default(),
            mount_group: None,
            mount_flags: vec![],
        }
    }

    #[test]
    fn the_seed_pod_reads_fine() {
        let ctx = read(&request(&[])).unwrap();
        assert_eq!(ctx.pod.name, "nginx-secrets-store-inline");
        assert_eq!(ctx.pod.namespace, "default");
        assert_eq!(ctx.class, "azure-kvname");
        assert!(ctx.tokens.is_none());
    }

    #[test]
    fn pod_attributes_cannot_set_provider_parameters() {
        for key in ["keyvaultName", "clientID", "objects", "tenantId"] {
            let err = read(&request(&[(key, "evil")])).unwrap_err();
            assert_eq!(err.error_type, "VolumeAttributeNotAllowed");
            assert!(
                err.message.contains(key) && err.message.contains("SecretProviderClass"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn missing_pod_info_names_the_key_and_the_fix() {
        let mut req = request(&[]);
        req.volume_context = VolumeContext::new(
            req.volume_context
                .iter()
                .filter(|(k, _)| *k != keys::POD_UID)
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let err = read(&req).unwrap_err();
        assert!(
            err.message.contains("pod.uid") && err.message.contains("podInfoOnMount"),
            "{}",
            err.message
        );
    }

    #[test]
    fn tokens_come_from_secrets_first_then_the_context() {
        let mut req = request(&[(keys::SERVICE_ACCOUNT_TOKENS, "{\"from\":\"context\"}")]);
        assert_eq!(
            read(&req).unwrap().tokens.unwrap().expose(),
            "{\"from\":\"context\"}"
        );
        req.secrets = SecretMap::new([(
            keys::SERVICE_ACCOUNT_TOKENS.to_owned(),
            "{\"from\":\"secrets\"}".to_owned(),
        )]);
        assert_eq!(
            read(&req).unwrap().tokens.unwrap().expose(),
            "{\"from\":\"secrets\"}"
        );
    }

    #[test]
    fn the_target_must_belong_to_the_pod() {
        assert!(check_target(Path::new(&target()), UID).is_ok());
        for bad in [
            "/var/lib/kubelet/pods/other-uid/volumes/kubernetes.io~csi/v/mount".to_owned(),
            format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/v/mount/../../x/mount"),
            format!("/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~empty-dir/v/mount"),
            format!("pods/{UID}/volumes/kubernetes.io~csi/v/mount"),
            "/etc".to_owned(),
            format!(
                "/var/lib/kubelet/pods/{UID}/volumes/kubernetes.io~csi/{}/mount",
                "v".repeat(256)
            ),
            format!(
                "/var/lib/kubelet/{}/pods/{UID}/volumes/kubernetes.io~csi/v/mount",
                "d/".repeat(2100)
            ),
        ] {
            let err = check_target(Path::new(&bad), UID).unwrap_err();
            assert_eq!(err.error_type, "UnexpectedTargetPath", "{bad}");
            assert!(err.message.len() < 512, "{}", err.message);
        }
    }

    #[test]
    fn an_unpublish_target_must_be_a_kubelet_volume_path() {
        assert!(check_unpublish_target(Path::new(&target())).is_ok());
        for bad in [
            "/etc",
            "/tmp/empty-dir",
            "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount/../../../../../../tmp/x",
            "/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/v/mount",
            "var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount",
            "/var/lib/kubelet/pods//volumes/kubernetes.io~csi/v/mount",
        ] {
            let err = check_unpublish_target(Path::new(bad)).unwrap_err();
            assert_eq!(
                (err.code, err.error_type),
                (ErrorCode::InvalidArgument, "UnexpectedTargetPath"),
                "{bad}"
            );
            assert!(
                err.message.contains("not a kubelet volume path")
                    && err.message.contains("nothing was unmounted or removed"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn the_class_name_must_be_a_kubernetes_name() {
        for good in ["azure-kvname", "a", "v1.class-2", &"c".repeat(253)] {
            let req = request(&[]);
            let mut ctx: Vec<(String, String)> = req
                .volume_context
                .iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            ctx.retain(|(k, _)| k != keys::SECRET_PROVIDER_CLASS);
            ctx.push((keys::SECRET_PROVIDER_CLASS.to_owned(), good.to_owned()));
            let req = PublishRequest {
                volume_context: VolumeContext::new(ctx),
                ..req
            };
            assert_eq!(read(&req).unwrap().class, good);
        }
        for bad in [
            "../x",
            "a/b",
            "A",
            "a\0b",
            "-a",
            "a.",
            &"c".repeat(254),
            "a b",
        ] {
            let req = request(&[]);
            let ctx = req
                .volume_context
                .iter()
                .map(|(k, v)| {
                    let v = if k == keys::SECRET_PROVIDER_CLASS {
                        bad
                    } else {
                        v
                    };
                    (k.to_owned(), v.to_owned())
                })
                .collect::<Vec<_>>();
            let req = PublishRequest {
                volume_context: VolumeContext::new(ctx),
                ..req
            };
            let err = read(&req).unwrap_err();
            assert!(
                err.message
                    .contains("is not a valid SecretProviderClass name"),
                "{bad}: {}",
                err.message
            );
        }
    }
}
