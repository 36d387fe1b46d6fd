//! A fake Kubernetes API server on loopback, for the Kubernetes runtime's tests (no cluster
//! exists on these machines). Modelled on kube-rs/controller-rs's `fixtures.rs`, but served
//! over real HTTP so the real kube client and kube-runtime's watcher run unmodified.
//!
//! Scope: core/v1 pods, secrets, persistentvolumeclaims (namespaced) and nodes (cluster); list
//! with equality-based label selectors, watch from a resourceVersion with history replay (and
//! 410 Gone after [`FakeApiServer::compact`]), get, create (409 on duplicates), delete (with
//! owner-reference garbage collection), JSON merge patch, and secrets' `stringData` folded into
//! `data`. The test plays scheduler and kubelet through [`FakeApiServer::set_pod_status`].
//!
//! Graceful pod deletion is opt-in ([`FakeApiServer::graceful_pod_deletion`]); otherwise
//! objects go at once. Not modelled: admission and validation of object shapes, strategic
//! merge and server-side apply, set-based and field selectors, pagination (`limit` is ignored,
//! lists are whole), bookmarks, RBAC, and anything the scheduler or kubelet would do on their
//! own.

mod routes;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::Method;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Secret};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use self::store::{ApiFailure, Key, Store};

/// State shared by the handlers and the test.
pub(crate) struct Shared {
    /// Short sections only, never across an await.
    store: Mutex<Store>,
    /// Every request as `METHOD /path?query`, in order.
    requests: Mutex<Vec<String>>,
    /// Cancelled (and replaced) to end every open watch stream at once.
    cut: Mutex<CancellationToken>,
    /// Failures to answer the next matching request with, once each.
    injected: Mutex<Vec<(Method, String, ApiFailure)>>,
    /// Container output by (namespace, pod), as the kubelet would serve it.
    logs: Mutex<HashMap<(String, String), String>>,
    /// Ids of the watch streams open now (a cut empties it at once).
    open_watches: Mutex<HashSet<u64>>,
    next_watch: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    pub fn requests(&self) -> MutexGuard<'_, Vec<String>> {
        lock(&self.requests)
    }

    pub fn log(&self, namespace: &str, pod: &str) -> Option<String> {
        lock(&self.logs)
            .get(&(namespace.to_owned(), pod.to_owned()))
            .cloned()
    }

    /// Registers a new watch stream: its id and the token that cuts it.
    pub fn open_watch(&self) -> (u64, CancellationToken) {
        let id = self.next_watch.fetch_add(1, Ordering::SeqCst);
        let cut = lock(&self.cut);
        lock(&self.open_watches).insert(id);
        (id, cut.clone())
    }

    pub fn close_watch(&self, id: u64) {
        lock(&self.open_watches).remove(&id);
    }

    pub fn take_injected_failure(&self, method: &Method, path: &str) -> Option<ApiFailure> {
        let mut injected = lock(&self.injected);
        let i = injected
            .iter()
            .position(|(m, suffix, _)| m == method && path.ends_with(suffix.as_str()))?;
        Some(injected.remove(i).2)
    }
}

/// The fake API server, serving until dropped.
pub struct FakeApiServer {
    url: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl FakeApiServer {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared {
            store: Mutex::default(),
            requests: Mutex::default(),
            cut: Mutex::default(),
            injected: Mutex::default(),
            logs: Mutex::default(),
            open_watches: Mutex::default(),
            next_watch: AtomicU64::new(1),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let shutdown = CancellationToken::new();
        let app = routes::router(shared.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Self {
            url,
            shared,
            shutdown,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kube client for this server with `namespace` as its default namespace.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().expect("URL"));
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config).expect("kube client")
    }

    fn key(resource: &str, namespace: &str, name: &str) -> Key {
        Key {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Creates an object as a client would (e.g. pods left by a previous agent). Unlike the
    /// API, it keeps a `creationTimestamp` the object brings, to seed objects that are old.
    pub fn create(&self, resource: &str, namespace: &str, object: Value) -> Value {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_owned();
        let key = Self::key(resource, namespace, &name);
        let mut store = self.shared.store();
        let created = store.create(key.clone(), object.clone()).expect("create");
        match object["metadata"].get("creationTimestamp") {
            Some(at) => store
                .merge_patch(&key, &json!({"metadata": {"creationTimestamp": at}}))
                .expect("created"),
            None => created,
        }
    }

    /// Adds a Ready node of `arch` that can take `pods` pods.
    pub fn add_node(&self, name: &str, arch: &str, pods: u32) {
        self.create(
            "nodes",
            "",
            json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/arch": arch, "kubernetes.io/os": "linux"}},
                "spec": {},
                "status": {
                    "allocatable": {"pods": pods.to_string(), "cpu": "4", "memory": "16Gi"},
                    "conditions": [{"type": "Ready", "status": "True"}]
                }
            }),
        );
    }

    /// Replaces a pod's status (the scheduler's and kubelet's part); emits MODIFIED.
    pub fn set_pod_status(&self, namespace: &str, name: &str, status: Value) {
        self.shared
            .store()
            .set_status(&Self::key("pods", namespace, name), status)
            .expect("pod exists");
    }

    /// Deletes an object as `kubectl delete` would (with garbage collection of dependents;
    /// only marked, for pods, under [`graceful_pod_deletion`](Self::graceful_pod_deletion)).
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        self.shared
            .store()
            .delete(&Self::key(resource, namespace, name))
            .expect("object exists");
    }

    /// From now on, deleting a pod marks it with a `deletionTimestamp` and leaves it until
    /// [`finish_deletion`](Self::finish_deletion), as a kubelet does during the grace period.
    pub fn graceful_pod_deletion(&self, on: bool) {
        self.shared.store().graceful_pod_deletion = on;
    }

    /// Sets what `kubectl logs` would print for a pod's runner container.
    pub fn set_pod_log(&self, namespace: &str, pod: &str, text: &str) {
        lock(&self.shared.logs).insert((namespace.to_owned(), pod.to_owned()), text.to_owned());
    }

    /// Ends a pod's graceful deletion: it goes, and its dependents with it.
    pub fn finish_deletion(&self, namespace: &str, name: &str) {
        self.shared
            .store()
            .remove(&Self::key("pods", namespace, name))
            .expect("pod exists");
    }

    fn typed<T: DeserializeOwned>(&self, resource: &str, namespace: &str) -> Vec<T> {
        self.shared
            .store()
            .list(resource, Some(namespace))
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("the fake stores valid objects"))
            .collect()
    }

    pub fn pods(&self, namespace: &str) -> Vec<Pod> {
        self.typed("pods", namespace)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.pods(namespace)
            .into_iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
    }

    pub fn secrets(&self, namespace: &str) -> Vec<Secret> {
        self.typed("secrets", namespace)
    }

    pub fn claims(&self, namespace: &str) -> Vec<PersistentVolumeClaim> {
        self.typed("persistentvolumeclaims", namespace)
    }

    pub fn nodes(&self) -> Vec<Node> {
        self.typed("nodes", "")
    }

    /// Ends every open watch stream, as a load balancer or API server restart would.
    pub fn drop_watches(&self) {
        let mut cut = lock(&self.shared.cut);
        cut.cancel();
        *cut = CancellationToken::new();
        lock(&self.shared.open_watches).clear();
    }

    /// Watch streams open now (none right after [`drop_watches`](Self::drop_watches)).
    pub fn open_watches(&self) -> usize {
        lock(&self.shared.open_watches).len()
    }

    /// Forgets the change history: watches from an older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.requests().clone()
    }

    /// Answers the next `method` request whose path ends with `path_suffix` with `code`.
    pub fn fail_next(&self, method: Method, path_suffix: &str, code: u16, message: &str) {
        lock(&self.shared.injected).push((
            method,
            path_suffix.to_owned(),
            ApiFailure {
                code,
                reason: match code {
                    403 => "Forbidden",
                    404 => "NotFound",
                    409 => "AlreadyExists",
                    _ => "InternalError",
                },
                message: message.to_owned(),
            },
        ));
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.drop_watches();
        self.shutdown.cancel();
    }
}
