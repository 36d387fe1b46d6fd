//! The fake API server's HTTP surface: the core/v1 paths a kube client uses for the resources
//! in [`RESOURCES`](super::store::RESOURCES): list (with `labelSelector`), watch (`watch=true`
//! from a `resourceVersion`, newline-delimited events, `timeoutSeconds`), get, create, delete
//! and merge-patch; and pods' `log` subresource.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use super::store::{ApiFailure, Change, Key, kind_of, selector_matches};

type Params = Query<HashMap<String, String>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{ns}/{resource}",
            get(list_namespaced).post(create_namespaced),
        )
        .route(
            "/api/v1/namespaces/{ns}/{resource}/{name}",
            get(get_namespaced)
                .delete(delete_namespaced)
                .patch(patch_namespaced),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
        .route("/api/v1/{resource}", get(list_cluster).post(create_cluster))
        .route(
            "/api/v1/{resource}/{name}",
            get(get_cluster).delete(delete_cluster).patch(patch_cluster),
        )
        .fallback(|uri: Uri| async move {
            failure(&ApiFailure {
                code: 404,
                reason: "NotFound",
                message: format!("the fake API server does not serve {uri}"),
            })
        })
        .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
        .with_state(shared)
}

async fn record(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", request.method(), request.uri());
    shared.requests().push(line.clone());
    if let Some(fail) = shared.take_injected_failure(request.method(), request.uri().path()) {
        return failure(&fail);
    }
    next.run(request).await
}

fn failure(f: &ApiFailure) -> Response {
    let code = StatusCode::from_u16(f.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, axum::Json(f.status())).into_response()
}

fn key(resource: &str, namespace: &str, name: &str) -> Result<Key, ApiFailure> {
    match kind_of(resource) {
        Some((_, namespaced)) if namespaced != namespace.is_empty() => Ok(Key {
            resource: resource.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }),
        _ => Err(ApiFailure {
            code: 404,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ({resource})"),
        }),
    }
}

async fn list_namespaced(
    State(s): State<Arc<Shared>>,
    Path((ns, resource)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    list(s, &resource, &ns, q).await
}

async fn list_cluster(
    State(s): State<Arc<Shared>>,
    Path(resource): Path<String>,
    Query(q): Params,
) -> Response {
    list(s, &resource, "", q).await
}

async fn list(s: Arc<Shared>, resource: &str, ns: &str, q: HashMap<String, String>) -> Response {
    let (kind, _) = match key(resource, ns, "") {
        Ok(_) => kind_of(resource).unwrap_or(("Unknown", true)),
        Err(f) => return failure(&f),
    };
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        return watch(s, resource, ns, &selector, &q);
    }
    let store = s.store();
    let items: Vec<Value> = store
        .list(resource, Some(ns))
        .into_iter()
        .filter(|o| selector_matches(&selector, &o["metadata"]["labels"]))
        .collect();
    axum::Json(json!({
        "apiVersion": "v1",
        "kind": format!("{kind}List"),
        "metadata": {"resourceVersion": store.resource_version().to_string()},
        "items": items,
    }))
    .into_response()
}

/// Streams changes after `resourceVersion`: first those in the history, then live ones, until
/// `timeoutSeconds`, the client leaves, or the test drops every watch.
fn watch(
    s: Arc<Shared>,
    resource: &str,
    ns: &str,
    selector: &str,
    q: &HashMap<String, String>,
) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let (backlog, mut live, gone) = {
        let store = s.store();
        // Subscribe before reading the history, so nothing falls between the two.
        let live = store.changes.subscribe();
        if from != 0 && from < store.compacted_to {
            (Vec::new(), live, true)
        } else if from == 0 {
            // "Any version": the current objects as ADDED, like the real server.
            let now = store.resource_version();
            let added = store
                .list(resource, Some(ns))
                .into_iter()
                .map(|object| Change {
                    rv: now,
                    resource: resource.to_owned(),
                    namespace: ns.to_owned(),
                    kind: "ADDED",
                    object,
                })
                .collect();
            (added, live, false)
        } else {
            (store.history_after(from, resource, Some(ns)), live, false)
        }
    };
    let (watch_id, dropped) = s.open_watch();
    let (resource, ns, selector) = (resource.to_owned(), ns.to_owned(), selector.to_owned());
    let shared = s.clone();
    tokio::spawn(async move {
        let send = |change: &Change| {
            let line = json!({"type": change.kind, "object": change.object}).to_string() + "\n";
            tx.send(Ok(Bytes::from(line)))
        };
        let cut = dropped.clone();
        // Resolves when the client is gone (hyper drops the body with the connection).
        let client_gone = tx.clone();
        let stream = async {
            if gone {
                let status = ApiFailure {
                    code: 410,
                    reason: "Expired",
                    message: format!("too old resource version: {from}"),
                }
                .status();
                let line = json!({"type": "ERROR", "object": status}).to_string() + "\n";
                let _ = tx.send(Ok(Bytes::from(line))).await;
                return;
            }
            let mut last = from;
            for change in backlog {
                if selector_matches(&selector, &change.object["metadata"]["labels"])
                    && send(&change).await.is_err()
                {
                    return;
                }
                last = last.max(change.rv);
            }
            loop {
                match live.recv().await {
                    Ok(_) if cut.is_cancelled() => return,
                    Ok(change) => {
                        if change.rv <= last
                            || change.resource != resource
                            || change.namespace != ns
                        {
                            continue;
                        }
                        last = change.rv;
                        if selector_matches(&selector, &change.object["metadata"]["labels"])
                            && send(&change).await.is_err()
                        {
                            return;
                        }
                    }
                    // Lagged or closed: end the stream; the client resumes from its last version.
                    Err(_) => return,
                }
            }
        };
        // A cut stream must not deliver what was committed after the cut: check it first.
        tokio::select! {
            biased;
            _ = dropped.cancelled() => {}
            _ = client_gone.closed() => {}
            _ = tokio::time::sleep(timeout) => {}
            _ = stream => {}
        }
        shared.close_watch(watch_id);
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn get_namespaced(
    State(s): State<Arc<Shared>>,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    get_one(s, &resource, &ns, &name)
}

async fn get_cluster(
    State(s): State<Arc<Shared>>,
    Path((resource, name)): Path<(String, String)>,
) -> Response {
    get_one(s, &resource, "", &name)
}

fn get_one(s: Arc<Shared>, resource: &str, ns: &str, name: &str) -> Response {
    let k = match key(resource, ns, name) {
        Ok(k) => k,
        Err(f) => return failure(&f),
    };
    match s.store().get(&k) {
        Some(o) => axum::Json(o.clone()).into_response(),
        None => failure(&ApiFailure::not_found(&k)),
    }
}

/// A pod's log as plain text, the last `tailLines` lines if asked.
async fn pod_log(
    State(s): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    let k = Key {
        resource: "pods".into(),
        namespace: ns.clone(),
        name: name.clone(),
    };
    if s.store().get(&k).is_none() {
        return failure(&ApiFailure::not_found(&k));
    }
    let text = s.log(&ns, &name).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = q
        .get("tailLines")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(lines.len())
        .min(lines.len());
    let mut body = lines[lines.len() - tail..].join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    ([("content-type", "text/plain")], body).into_response()
}

async fn create_namespaced(
    State(s): State<Arc<Shared>>,
    Path((ns, resource)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    create(s, &resource, &ns, &body)
}

async fn create_cluster(
    State(s): State<Arc<Shared>>,
    Path(resource): Path<String>,
    body: Bytes,
) -> Response {
    create(s, &resource, "", &body)
}

fn create(s: Arc<Shared>, resource: &str, ns: &str, body: &[u8]) -> Response {
    let object: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("invalid JSON body: {e}")),
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return bad_request("metadata.name is required (generateName is not supported)".into());
    };
    if let Some(body_ns) = object["metadata"]["namespace"].as_str()
        && body_ns != ns
    {
        return bad_request(format!(
            "the namespace of the object ({body_ns}) does not match the request ({ns})"
        ));
    }
    let k = match key(resource, ns, &name) {
        Ok(k) => k,
        Err(f) => return failure(&f),
    };
    match s.store().create(k, object) {
        Ok(o) => (StatusCode::CREATED, axum::Json(o)).into_response(),
        Err(f) => failure(&f),
    }
}

async fn delete_namespaced(
    State(s): State<Arc<Shared>>,
    Path((ns, resource, name)): Path<(String, String, String)>,
) -> Response {
    delete(s, &resource, &ns, &name)
}

async fn delete_cluster(
    State(s): State<Arc<Shared>>,
    Path((resource, name)): Path<(String, String)>,
) -> Response {
    delete(s, &resource, "", &name)
}

fn delete(s: Arc<Shared>, resource: &str, ns: &str, name: &str) -> Response {
    let k = match key(resource, ns, name) {
        Ok(k) => k,
        Err(f) => return failure(&f),
    };
    match s.store().delete(&k) {
        Ok(o) => axum::Json(o).into_response(),
        Err(f) => failure(&f),
    }
}

async fn patch_namespaced(
    State(s): State<Arc<Shared>>,
    Path((ns, resource, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch(s, &resource, &ns, &name, &headers, &body)
}

async fn patch_cluster(
    State(s): State<Arc<Shared>>,
    Path((resource, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    patch(s, &resource, "", &name, &headers, &body)
}

fn patch(
    s: Arc<Shared>,
    resource: &str,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/merge-patch+json" {
        return failure(&ApiFailure {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!("the fake API server only takes merge patches, not {content_type:?}"),
        });
    }
    let patch: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("invalid JSON patch: {e}")),
    };
    let k = match key(resource, ns, name) {
        Ok(k) => k,
        Err(f) => return failure(&f),
    };
    match s.store().merge_patch(&k, &patch) {
        Ok(o) => axum::Json(o).into_response(),
        Err(f) => failure(&f),
    }
}

fn bad_request(message: String) -> Response {
    failure(&ApiFailure {
        code: 400,
        reason: "BadRequest",
        message,
    })
}
