//! SecretProviderClasses from the Kubernetes API, against a fake API server
//! (a tower service answering kube's requests).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use secretfs::spc::{KubeSpcs, SpcSource};
use secretfs_csi::Readiness;

fn class(namespace: &str, name: &str, provider: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1",
        "kind": "SecretProviderClass",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1", "uid": format!("uid-{name}")},
        "spec": {"provider": provider, "parameters": {"keyvaultName": "kv-demo"}}
    })
}

/// Answers LIST with the listed classes, WATCH with an empty stream, and
/// GET of one class from `live`. Records every path asked.
fn fake_api(
    listed: Vec<serde_json::Value>,
    live: Vec<serde_json::Value>,
    seen: Arc<Mutex<Vec<String>>>,
) -> kube::Client {
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let (listed, live, seen) = (listed.clone(), live.clone(), seen.clone());
        async move {
            let path = req.uri().path().to_owned();
            let query = req.uri().query().unwrap_or("").to_owned();
            seen.lock().unwrap().push(format!("{path}?{query}"));
            let json = |status: StatusCode, body: serde_json::Value| {
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .unwrap()
            };
            let response = if query.contains("watch=true") {
                // An empty watch: the watcher reconnects later.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Response::new(Full::new(Bytes::new()))
            } else if path == "/apis/secrets-store.csi.x-k8s.io/v1/secretproviderclasses" {
                json(
                    StatusCode::OK,
                    serde_json::json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClassList",
                                       "metadata": {"resourceVersion": "10"}, "items": listed}),
                )
            } else {
                let found = live.iter().find(|c| {
                    let ns = c["metadata"]["namespace"].as_str().unwrap();
                    let name = c["metadata"]["name"].as_str().unwrap();
                    path == format!("/apis/secrets-store.csi.x-k8s.io/v1/namespaces/{ns}/secretproviderclasses/{name}")
                });
                match found {
                    Some(c) => json(StatusCode::OK, c.clone()),
                    None => json(
                        StatusCode::NOT_FOUND,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                           "reason": "NotFound", "code": 404, "message": "not found"}),
                    ),
                }
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    kube::Client::new(service, "default")
}

#[tokio::test]
async fn classes_come_from_the_watch_cache_and_a_live_read_fills_gaps() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client = fake_api(
        vec![
            class("default", "azure-kvname", "azure"),
            class("team-a", "azure-kvname", "vault"),
        ],
        vec![class("default", "just-created", "azure")],
        seen.clone(),
    );
    let classes = KubeSpcs::start(client);
    let mut waited = 0;
    while classes.readiness().await != Readiness::Ready {
        assert!(waited < 100, "the watch never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }

    let found = classes
        .get("team-a", "azure-kvname")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.spec.provider, "vault",
        "looked up in the pod's namespace"
    );
    let before = seen.lock().unwrap().len();
    let found = classes
        .get("default", "azure-kvname")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.spec.provider, "azure");
    assert_eq!(
        seen.lock().unwrap().len(),
        before,
        "served from the cache, no request"
    );

    let created = classes.get("default", "just-created").await.unwrap();
    assert!(created.is_some(), "a class not cached yet is read live");
    assert!(classes.get("default", "missing").await.unwrap().is_none());
}

#[tokio::test]
async fn not_ready_until_the_first_list() {
    let client = fake_api(vec![], vec![], Arc::new(Mutex::new(Vec::new())));
    let classes = KubeSpcs::start(client);
    // Immediately after start nothing has been listed.
    assert!(matches!(classes.readiness().await, Readiness::NotReady(_)));
}
