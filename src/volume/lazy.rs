//! Files of lazy volumes (`secretfs.io/fetch: lazy`): each loads on its
//! first access by asking the provider with the pod's newest request; the
//! shared cache makes the other files of the volume cheap to load next.

use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use secretfs_fuse::{ContentSource, LoadError, SecretBytes};

use crate::provider::{MountRequest, Provider};

/// The content source of one lazy file.
pub struct LazyFile {
    provider: Arc<dyn Provider>,
    request: Arc<Mutex<MountRequest>>,
    path: String,
}

impl LazyFile {
    pub fn new(provider: Arc<dyn Provider>, request: Arc<Mutex<MountRequest>>, path: &str) -> Self {
        Self {
            provider,
            request,
            path: path.to_owned(),
        }
    }
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
        async move {
            let response = provider.mount(&request).await.map_err(|e| {
                tracing::warn!(file = %path, error = %e, "loading a lazy file failed; the next access retries");
                LoadError::new(e.to_string())
            })?;
            response
                .files
                .into_iter()
                .find(|f| f.path == path)
                .map(|f| f.contents)
                .ok_or_else(|| LoadError::new(format!("the provider returned no file {path:?}")))
        }
        .boxed()
    }
}
