//! Files of lazy volumes (`secretfs.io/fetch: lazy`): each loads on its
//! first access, and only its own object is asked for.
//!
//! A load narrows the pod's newest request to the one entry of the class's
//! `objects` array that makes the file (found with the provider's plan, so
//! no vault call), and mounts that: reading 1 file of a 10-object class costs
//! one vault request, and the other files neither cost nor fail with it. The
//! provider answers through the node's shared cache, so reloads within the
//! refresh interval cost nothing.
//!
//! Errors stay with their file: a missing *required* object makes reads of
//! its file fail with `EIO` (retried on the next access); a missing
//! `optional: true` object is left out by the provider, and its file, listed
//! since the mount (listing happens before anything is fetched), answers
//! `ENOENT`. See docs/SEMANTICS.md.
//!
//! A load reports the validity of the object version it got (timestamps
//! only) to [`LazyLoads`]; the driver takes it into the volume's expiry
//! (series, warnings, status) and keeps it when a refresh drops the bytes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use secretfs_fuse::{ContentSource, LoadError};
use secretfs_secrets::SecretBytes;

use crate::expiry::Validity;
use crate::provider::{MountRequest, Provider};

/// The parameter listing a class's objects (`array:` of YAML strings).
const OBJECTS: &str = "objects";

/// The validities lazy loads learnt, not yet taken by the driver: (target,
/// path, validity of the version loaded), timestamps only.
#[derive(Default)]
pub struct LazyLoads {
    pending: Mutex<Vec<(PathBuf, String, Option<Validity>)>>,
    notify: tokio::sync::Notify,
}

impl LazyLoads {
    fn push(&self, target: PathBuf, path: String, validity: Option<Validity>) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((target, path, validity));
        self.notify.notify_one();
    }

    /// Reports taken but not used yet (their volume was busy), in front of
    /// any newer ones; the rotation scheduler is woken to take them (it
    /// waits for the volume).
    pub fn put_back(&self, reports: impl IntoIterator<Item = (PathBuf, String, Option<Validity>)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let newer = std::mem::take(&mut *pending);
        pending.extend(reports);
        pending.extend(newer);
        drop(pending);
        self.notify.notify_one();
    }

    /// Everything reported since the last call.
    pub fn take(&self) -> Vec<(PathBuf, String, Option<Validity>)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Resolves once a load reported something (or already had).
    pub async fn reported(&self) {
        self.notify.notified().await;
    }
}

/// Where a lazy file's loads report: the node's [`LazyLoads`] and the
/// volume's target.
#[derive(Clone)]
pub struct LoadSink {
    pub loads: Arc<LazyLoads>,
    pub target: PathBuf,
}

/// The content source of one lazy file.
pub struct LazyFile {
    provider: Arc<dyn Provider>,
    request: Arc<Mutex<MountRequest>>,
    path: String,
    sink: LoadSink,
}

impl LazyFile {
    pub fn new(
        provider: Arc<dyn Provider>,
        request: Arc<Mutex<MountRequest>>,
        path: &str,
        sink: LoadSink,
    ) -> Self {
        Self {
            provider,
            request,
            path: path.to_owned(),
            sink,
        }
    }
}

/// `request` narrowed to the one entry of its `objects` array whose planned
/// files include `path`; `None` when there is nothing to narrow (one object,
/// no `objects` array, or no entry plans `path`): the whole request is used.
pub(crate) fn one_object_request(
    provider: &dyn Provider,
    request: &MountRequest,
    path: &str,
) -> Option<MountRequest> {
    let objects: serde_yaml::Value = serde_yaml::from_str(request.parameters.get(OBJECTS)?).ok()?;
    let array = objects.get("array")?.as_sequence()?;
    if array.len() < 2 {
        return None;
    }
    array.iter().find_map(|entry| {
        let mut one = serde_yaml::Mapping::new();
        one.insert(
            "array".into(),
            serde_yaml::Value::Sequence(vec![entry.clone()]),
        );
        let mut narrowed = request.clone();
        narrowed
            .parameters
            .insert(OBJECTS.to_owned(), serde_yaml::to_string(&one).ok()?);
        let planned = provider.plan(&narrowed)?.ok()?;
        planned.iter().any(|f| f.path == path).then_some(narrowed)
    })
}

impl ContentSource for LazyFile {
    fn load(&self) -> BoxFuture<'static, Result<Arc<SecretBytes>, LoadError>> {
        let provider = self.provider.clone();
        let request = self
            .request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let path = self.path.clone();
        let sink = self.sink.clone();
        async move {
            let request = one_object_request(&*provider, &request, &path).unwrap_or(request);
            let response = provider.mount(&request).await.map_err(|e| {
                tracing::warn!(file = %path, error = %e, "loading a lazy file failed; the next access retries");
                LoadError::new(e.to_string())
            })?;
            if response.files.iter().any(|f| f.path == path) {
                // `None`: this version has no known validity (an earlier
                // version's is dropped).
                let validity = response.validity.get(&path).cloned();
                sink.loads.push(sink.target, path.clone(), validity);
            }
            match response.files.into_iter().find(|f| f.path == path) {
                Some(file) => Ok(file.contents),
                // The provider left the file out: an optional object that is
                // not in the vault (its warning says so).
                None => {
                    for warning in &response.warnings {
                        tracing::info!(file = %path, "{warning}");
                    }
                    Err(LoadError::not_found(format!(
                        "the provider returned no file {path:?} (an optional object missing from the vault?)"
                    )))
                }
            }
        }
        .boxed()
    }
}
