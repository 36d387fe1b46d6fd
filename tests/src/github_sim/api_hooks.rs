//! Webhook endpoints for repositories and organizations: list, create (which sends a `ping`),
//! get, update, delete, ping, test (repositories only), deliveries and redelivery.
//!
//! GitHub's rules kept here: `name` must be `web`; `config.url` is required; `content_type`
//! defaults to `form` and `events` to `["push"]`; a PATCH with a `config` but no `secret` removes
//! the secret; a second hook with the same URL and an overlapping event is a 422; a redelivery keeps
//! the original `X-GitHub-Delivery` GUID and is flagged `redelivery: true`.

use axum::Json;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::access::{ApiError, Need};
use super::api::{PageQuery, page, page_by_cursor, with_link};
use super::api_actions::scope;
use super::state::{Access, HookRec, ScopeRec, State as SimState, now};
use super::webhooks::{Outgoing, guid};
use super::{Shared, payloads};

pub fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/repos/{o}/{r}/hooks", get(repo_list).post(repo_create))
        .route("/orgs/{o}/hooks", get(org_list).post(org_create))
        .route(
            "/repos/{o}/{r}/hooks/{id}",
            get(repo_get).patch(repo_update).delete(repo_delete),
        )
        .route(
            "/orgs/{o}/hooks/{id}",
            get(org_get).patch(org_update).delete(org_delete),
        )
        .route("/repos/{o}/{r}/hooks/{id}/pings", post(repo_ping))
        .route("/orgs/{o}/hooks/{id}/pings", post(org_ping))
        .route("/repos/{o}/{r}/hooks/{id}/tests", post(repo_test))
        .route("/repos/{o}/{r}/hooks/{id}/deliveries", get(repo_deliveries))
        .route("/orgs/{o}/hooks/{id}/deliveries", get(org_deliveries))
        .route(
            "/repos/{o}/{r}/hooks/{id}/deliveries/{d}",
            get(repo_delivery),
        )
        .route("/orgs/{o}/hooks/{id}/deliveries/{d}", get(org_delivery))
        .route(
            "/repos/{o}/{r}/hooks/{id}/deliveries/{d}/attempts",
            post(repo_redeliver),
        )
        .route(
            "/orgs/{o}/hooks/{id}/deliveries/{d}/attempts",
            post(org_redeliver),
        )
}

/// Owner, optional repository: which hook scope a route names.
type Target = (String, Option<String>);

fn hook_scope(
    st: &SimState,
    h: &HeaderMap,
    t: &Target,
    access: Access,
) -> Result<ScopeRec, ApiError> {
    let need = if t.1.is_some() {
        Need::RepoHooks(access)
    } else {
        Need::OrgHooks(access)
    };
    scope(st, h, &t.0, t.1.as_deref(), need)
}

fn find_hook(st: &SimState, scope: ScopeRec, id: u64) -> Result<HookRec, ApiError> {
    st.hooks
        .get(&id)
        .filter(|hk| hk.scope == scope)
        .cloned()
        .ok_or_else(ApiError::not_found)
}

/// Queues a delivery of `event` to one hook.
fn send_to(sh: &Shared, st: &mut SimState, hook: HookRec, event: &str, payload: Value) {
    let repository_id = match hook.scope {
        ScopeRec::Repo(id) => Some(id),
        ScopeRec::Org(_) => None,
    };
    let out = Outgoing {
        hook,
        event: event.to_owned(),
        action: None,
        payload,
        guid: guid(),
        redelivery: false,
        repository_id,
        installation_id: None,
        fault: None,
    };
    sh.hooks.send(st, out);
}

fn list(
    sh: &Shared,
    h: &HeaderMap,
    uri: &OriginalUri,
    q: &PageQuery,
    t: Target,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let scope = hook_scope(&st, h, &t, Access::Read)?;
    let items: Vec<Value> = st
        .hooks
        .values()
        .filter(|hk| hk.scope == scope)
        .map(|hk| payloads::hook(&st, hk))
        .collect();
    let (items, link) = page(&st.web_url, uri, q, items);
    Ok(with_link(StatusCode::OK, Value::Array(items), link))
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect()
    })
}

/// Applies `config` from a create or update body.
fn apply_config(hook: &mut HookRec, config: &Value) -> Result<(), ApiError> {
    let url = config["url"]
        .as_str()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .ok_or_else(|| {
            ApiError::validation("Hook", "url", "custom", "url is missing or not a valid URL")
        })?;
    let content_type = config["content_type"].as_str().unwrap_or("form");
    if content_type != "json" && content_type != "form" {
        return Err(ApiError::validation(
            "Hook",
            "content_type",
            "invalid",
            "content_type must be json or form",
        ));
    }
    hook.url = url.to_owned();
    hook.content_type = content_type.to_owned();
    // "If you previously had a secret set, you must provide the same secret or set a new secret or
    // the secret will be removed."
    hook.secret = config["secret"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    hook.insecure_ssl = match &config["insecure_ssl"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => "0".into(),
    };
    Ok(())
}

fn check_overlap(st: &SimState, hook: &HookRec) -> Result<(), ApiError> {
    let clash = st.hooks.values().any(|other| {
        other.id != hook.id
            && other.scope == hook.scope
            && other.url == hook.url
            && other.events.iter().any(|e| {
                hook.events.contains(e) || e == "*" || hook.events.iter().any(|x| x == "*")
            })
    });
    if clash {
        let what = if matches!(hook.scope, ScopeRec::Repo(_)) {
            "repository"
        } else {
            "organization"
        };
        return Err(ApiError::validation(
            "Hook",
            "",
            "custom",
            &format!("Hook already exists on this {what}"),
        ));
    }
    Ok(())
}

fn create(sh: &Shared, h: &HeaderMap, t: Target, body: Value) -> Result<Response, ApiError> {
    let mut st = sh.lock();
    let scope = hook_scope(&st, h, &t, Access::Write)?;
    if body.get("name").is_some_and(|n| n != "web") || (t.1.is_none() && body["name"] != "web") {
        return Err(ApiError::validation(
            "Hook",
            "name",
            "invalid",
            "name must be passed as \"web\"",
        ));
    }
    let id = st.next_id();
    let created = now();
    let mut hook = HookRec {
        id,
        scope,
        active: body["active"].as_bool().unwrap_or(true),
        events: string_list(&body["events"]).unwrap_or_else(|| vec!["push".into()]),
        url: String::new(),
        content_type: "form".into(),
        secret: None,
        insecure_ssl: "0".into(),
        created_at: created.clone(),
        updated_at: created,
        last_response: None,
    };
    apply_config(&mut hook, &body["config"])?;
    check_overlap(&st, &hook)?;
    st.hooks.insert(id, hook.clone());
    let view = payloads::hook(&st, &hook);
    // Creating a hook sends it a ping.
    let ping = payloads::ping(&st, &hook);
    send_to(sh, &mut st, hook, "ping", ping);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

fn update(
    sh: &Shared,
    h: &HeaderMap,
    t: Target,
    id: u64,
    body: Value,
) -> Result<Response, ApiError> {
    let mut st = sh.lock();
    let scope = hook_scope(&st, h, &t, Access::Write)?;
    let mut hook = find_hook(&st, scope, id)?;
    if body.get("config").is_some() {
        apply_config(&mut hook, &body["config"])?;
    }
    if let Some(events) = string_list(&body["events"]) {
        hook.events = events;
    }
    if let Some(active) = body["active"].as_bool() {
        hook.active = active;
    }
    check_overlap(&st, &hook)?;
    hook.updated_at = now();
    st.hooks.insert(id, hook.clone());
    Ok(Json(payloads::hook(&st, &hook)).into_response())
}

fn one(sh: &Shared, h: &HeaderMap, t: Target, id: u64, delete: bool) -> Result<Response, ApiError> {
    let mut st = sh.lock();
    let scope = hook_scope(
        &st,
        h,
        &t,
        if delete { Access::Write } else { Access::Read },
    )?;
    let hook = find_hook(&st, scope, id)?;
    if delete {
        st.hooks.remove(&id);
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(Json(payloads::hook(&st, &hook)).into_response())
}

fn ping(sh: &Shared, h: &HeaderMap, t: Target, id: u64, test: bool) -> Result<Response, ApiError> {
    let mut st = sh.lock();
    let scope = hook_scope(&st, h, &t, Access::Write)?;
    let hook = find_hook(&st, scope, id)?;
    if !test {
        let body = payloads::ping(&st, &hook);
        send_to(sh, &mut st, hook, "ping", body);
    } else if hook.wants("push") {
        // "This will trigger the hook with the latest push to the current repository if the
        // hook is subscribed to push events."
        let mut body = payloads::fixture(payloads::PUSH);
        if let (ScopeRec::Repo(repo_id), Some(map)) = (hook.scope, body.as_object_mut())
            && let Some(repo) = st.repos.get(&repo_id)
        {
            map.insert(
                "repository".into(),
                payloads::repository(&st, repo, None, false),
            );
        }
        send_to(sh, &mut st, hook, "push", body);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn deliveries(
    sh: &Shared,
    h: &HeaderMap,
    uri: &OriginalUri,
    q: &PageQuery,
    t: Target,
    id: u64,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let scope = hook_scope(&st, h, &t, Access::Read)?;
    find_hook(&st, scope, id)?;
    // Newest first. The REST description's `webhook-delivery-status` parameter: `success` is a
    // `status_code` in 200–399, `failure` one in 400–599. So a receiver that could not be
    // reached (`status_code` 0) is in neither: a client looking for lost deliveries must read
    // the unfiltered list.
    let items: Vec<Value> = st
        .deliveries
        .iter()
        .rev()
        .filter(|d| d.hook_id == id)
        .filter(|d| match q.status.as_deref() {
            Some("success") => (200..400).contains(&d.status_code),
            Some("failure") => (400..600).contains(&d.status_code),
            _ => true,
        })
        .map(|d| payloads::delivery(d, false))
        .collect();
    let (items, link) = page_by_cursor(&st.web_url, uri, q, items)?;
    Ok(with_link(StatusCode::OK, Value::Array(items), link))
}

fn delivery(
    sh: &Shared,
    h: &HeaderMap,
    t: Target,
    id: u64,
    d: u64,
    redeliver: bool,
) -> Result<Response, ApiError> {
    let mut st = sh.lock();
    let scope = hook_scope(
        &st,
        h,
        &t,
        if redeliver {
            Access::Write
        } else {
            Access::Read
        },
    )?;
    let hook = find_hook(&st, scope, id)?;
    let rec = st
        .deliveries
        .iter()
        .find(|x| x.id == d && x.hook_id == id)
        .cloned()
        .ok_or_else(ApiError::not_found)?;
    if !redeliver {
        return Ok(Json(payloads::delivery(&rec, true)).into_response());
    }
    let out = Outgoing {
        hook,
        event: rec.event.clone(),
        action: rec.action.clone(),
        payload: rec.payload.clone(),
        guid: rec.guid.clone(),
        redelivery: true,
        repository_id: rec.repository_id,
        installation_id: rec.installation_id,
        fault: None,
    };
    sh.hooks.send(&mut st, out);
    Ok((StatusCode::ACCEPTED, Json(json!({}))).into_response())
}

// Thin route adapters: repository and organization variants of the same operation.

async fn repo_list(
    State(sh): State<Shared>,
    Path((o, r)): Path<(String, String)>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    list(&sh, &h, &uri, &q, (o, Some(r)))
}
async fn org_list(
    State(sh): State<Shared>,
    Path(o): Path<String>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    list(&sh, &h, &uri, &q, (o, None))
}
async fn repo_create(
    State(sh): State<Shared>,
    Path((o, r)): Path<(String, String)>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> Result<Response, ApiError> {
    create(&sh, &h, (o, Some(r)), b)
}
async fn org_create(
    State(sh): State<Shared>,
    Path(o): Path<String>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> Result<Response, ApiError> {
    create(&sh, &h, (o, None), b)
}
async fn repo_get(
    State(sh): State<Shared>,
    Path((o, r, id)): Path<(String, String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    one(&sh, &h, (o, Some(r)), id, false)
}
async fn org_get(
    State(sh): State<Shared>,
    Path((o, id)): Path<(String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    one(&sh, &h, (o, None), id, false)
}
async fn repo_delete(
    State(sh): State<Shared>,
    Path((o, r, id)): Path<(String, String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    one(&sh, &h, (o, Some(r)), id, true)
}
async fn org_delete(
    State(sh): State<Shared>,
    Path((o, id)): Path<(String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    one(&sh, &h, (o, None), id, true)
}
async fn repo_update(
    State(sh): State<Shared>,
    Path((o, r, id)): Path<(String, String, u64)>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> Result<Response, ApiError> {
    update(&sh, &h, (o, Some(r)), id, b)
}
async fn org_update(
    State(sh): State<Shared>,
    Path((o, id)): Path<(String, u64)>,
    h: HeaderMap,
    Json(b): Json<Value>,
) -> Result<Response, ApiError> {
    update(&sh, &h, (o, None), id, b)
}
async fn repo_ping(
    State(sh): State<Shared>,
    Path((o, r, id)): Path<(String, String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    ping(&sh, &h, (o, Some(r)), id, false)
}
async fn org_ping(
    State(sh): State<Shared>,
    Path((o, id)): Path<(String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    ping(&sh, &h, (o, None), id, false)
}
async fn repo_test(
    State(sh): State<Shared>,
    Path((o, r, id)): Path<(String, String, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    ping(&sh, &h, (o, Some(r)), id, true)
}
async fn repo_deliveries(
    State(sh): State<Shared>,
    Path((o, r, id)): Path<(String, String, u64)>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    deliveries(&sh, &h, &uri, &q, (o, Some(r)), id)
}
async fn org_deliveries(
    State(sh): State<Shared>,
    Path((o, id)): Path<(String, u64)>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    deliveries(&sh, &h, &uri, &q, (o, None), id)
}
async fn repo_delivery(
    State(sh): State<Shared>,
    Path((o, r, id, d)): Path<(String, String, u64, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    delivery(&sh, &h, (o, Some(r)), id, d, false)
}
async fn org_delivery(
    State(sh): State<Shared>,
    Path((o, id, d)): Path<(String, u64, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    delivery(&sh, &h, (o, None), id, d, false)
}
async fn repo_redeliver(
    State(sh): State<Shared>,
    Path((o, r, id, d)): Path<(String, String, u64, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    delivery(&sh, &h, (o, Some(r)), id, d, true)
}
async fn org_redeliver(
    State(sh): State<Shared>,
    Path((o, id, d)): Path<(String, u64, u64)>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    delivery(&sh, &h, (o, None), id, d, true)
}
