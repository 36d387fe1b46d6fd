//! The REST router: the gate every request passes (injected faults, rate limits, scope headers),
//! pagination, and the repository / user / App / rate-limit endpoints.
//!
//! Runner and run endpoints are in [`super::api_actions`], webhooks in [`super::api_hooks`].

use std::collections::HashMap;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::access::{ApiError, Need, Principal, bearer, check_repo, principal, role_of};
use super::payloads;
use super::state::{Bucket, RestFault, State as SimState, TokenKind, epoch, timestamp};
use super::{Shared, api_actions, api_hooks, strict};

/// `X-GitHub-Api-Version` values GitHub accepts (a request without the header gets 2022-11-28).
const SUPPORTED_VERSIONS: [&str; 2] = ["2022-11-28", "2026-03-10"];

/// The API routes (to be nested under the path prefix, e.g. `/api/v3`).
pub fn router(sh: Shared) -> axum::Router {
    axum::Router::new()
        .route("/user", get(get_user))
        .route("/user/repos", get(list_user_repos))
        .route("/users/{name}", get(get_account))
        .route("/users/{name}/repos", get(list_account_repos))
        .route("/orgs/{name}/repos", get(list_account_repos))
        .route("/installation/repositories", get(list_installation_repos))
        .route("/repos/{owner}/{repo}", get(get_repo))
        .route("/rate_limit", get(rate_limit))
        .route("/app", get(get_app))
        .route(
            "/app/installations/{id}/access_tokens",
            post(mint_installation_token),
        )
        .route("/orgs/{name}/installation", get(get_installation))
        .route("/users/{name}/installation", get(get_installation))
        .merge(api_actions::routes())
        .merge(api_hooks::routes())
        .merge(strict::routes())
        .layer(axum::middleware::from_fn_with_state(sh.clone(), gate))
        .with_state(sh)
}

/// Every API request: counts it, applies an injected fault, enforces and reports the primary rate
/// limit (`x-ratelimit-*` on every response), reports classic scopes (`x-oauth-scopes`), and
/// answers conditional requests.
///
/// Conditional requests, as GitHub does them (GitHub docs, "Best practices for using the REST
/// API", "Use conditional requests if appropriate"): every `200` to a `GET` carries an `ETag`
/// (weak, `W/"…"`, as GitHub's are) computed from the body; a `GET` whose `If-None-Match` names
/// the current one is answered `304 Not Modified` with no body, and "making a conditional request
/// does not count against your primary rate limit if a 304 response is returned and the request
/// was made while correctly authorized": an authorized 304 gives its unit back (counted in
/// [`super::Counters::not_modified`]); an anonymous one still costs.
async fn gate(State(sh): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let token = bearer(req.headers());
    let conditional = (req.method() == axum::http::Method::GET)
        .then(|| {
            req.headers()
                .get(axum::http::header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .flatten();
    let is_get = req.method() == axum::http::Method::GET;
    let route = format!(
        "{} {}",
        req.method(),
        path.split('/')
            .map(
                |p| if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                    "{n}"
                } else {
                    p
                }
            )
            .collect::<Vec<_>>()
            .join("/")
    );
    let version = req
        .headers()
        .get("x-github-api-version")
        .and_then(|v| v.to_str().ok());
    if version.is_some_and(|v| !SUPPORTED_VERSIONS.contains(&v)) {
        return ApiError::new(
            StatusCode::GONE,
            "The requested API version is not supported",
        )
        .into_response();
    }
    let now = epoch(SystemTime::now());
    let (fault, bucket, exhausted, scopes, enterprise, etags) = {
        let mut st = sh.lock();
        let etags = st.conditional_requests;
        let enterprise = strict::enterprise_version(&st);
        st.counters.rest_requests += 1;
        *st.counters.by_route.entry(route).or_default() += 1;
        let fault = st.faults.take_rest(&path);
        let scopes = match token.as_deref().and_then(|t| st.tokens.get(t)) {
            Some(TokenKind::Classic { scopes, .. }) => Some(scopes.join(", ")),
            _ => None,
        };
        let limit = if token.is_some() {
            st.default_rate_limit
        } else {
            60
        };
        let bucket = st
            .buckets
            .entry(token.clone().unwrap_or_default())
            .or_insert(Bucket {
                limit,
                used: 0,
                reset: now + 3600,
            });
        if now >= bucket.reset {
            bucket.used = 0;
            bucket.reset = now + 3600;
        }
        let exhausted = bucket.used >= bucket.limit;
        // `GET /rate_limit` does not count against the primary limit.
        if !exhausted && !path.ends_with("/rate_limit") {
            bucket.used += 1;
        }
        (fault, bucket.clone(), exhausted, scopes, enterprise, etags)
    };
    // "No more than 100 concurrent requests are allowed. This limit is shared across the REST
    // API and GraphQL API" (GitHub docs, "Rate limits for the REST API", secondary rate limits):
    // the 101st request of a token in flight is refused as a secondary limit.
    let key = token.clone().unwrap_or_default();
    let route_key = format!("{} {path}", method);
    let (over_concurrency, latency) = {
        let mut st = sh.lock();
        let latency = st.faults.rest_latency;
        let c = &mut st.counters;
        let now_in = c.in_flight.entry(key.clone()).or_default();
        *now_in += 1;
        let now_in = *now_in;
        let route_in = c.route_in_flight.entry(route_key.clone()).or_default();
        *route_in += 1;
        let route_in = *route_in;
        let max = c.route_max_in_flight.entry(route_key.clone()).or_default();
        *max = (*max).max(route_in);
        let over = now_in > MAX_CONCURRENT_REQUESTS;
        if over {
            c.concurrency_refusals += 1;
        }
        (over, latency)
    };
    let _in_flight = InFlight {
        sh: sh.clone(),
        key,
        route: route_key,
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = if over_concurrency {
        Some(RestFault::SecondaryRateLimit { retry_after: None })
    } else {
        fault
    };
    let counted = !exhausted && !path.ends_with("/rate_limit");
    let mut rate = vec![
        ("x-ratelimit-limit", bucket.limit.to_string()),
        (
            "x-ratelimit-remaining",
            bucket.limit.saturating_sub(bucket.used).to_string(),
        ),
        ("x-ratelimit-used", bucket.used.to_string()),
        ("x-ratelimit-reset", bucket.reset.to_string()),
        ("x-ratelimit-resource", "core".to_owned()),
    ];
    let primary = |reset: u64, rate: &mut Vec<(&'static str, String)>| {
        rate[1].1 = "0".into();
        rate[3].1 = reset.to_string();
        ApiError::new(
            StatusCode::FORBIDDEN,
            "API rate limit exceeded for user ID 1.",
        )
    };
    let refused = match fault {
        Some(RestFault::ServerError(status)) => Some(ApiError::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "Server Error",
        )),
        Some(RestFault::PrimaryRateLimit { reset_in }) => {
            Some(primary(now + reset_in.as_secs(), &mut rate))
        }
        Some(RestFault::SecondaryRateLimit { retry_after }) => {
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            Some(match retry_after {
                Some(d) => e.header("retry-after", d.as_secs().to_string()),
                None => e,
            })
        }
        None if exhausted => Some(primary(bucket.reset, &mut rate)),
        None => None,
    };
    let mut resp = match refused {
        Some(err) => err.into_response(),
        None => next.run(req).await,
    };
    if etags && is_get && resp.status() == StatusCode::OK {
        let (mut parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let tag = etag_of(&bytes);
        let matches = conditional
            .as_deref()
            .is_some_and(|h| etag_matches(h, &tag));
        if let Ok(v) = tag.parse() {
            parts.headers.insert(axum::http::header::ETAG, v);
        }
        resp = if matches {
            let mut st = sh.lock();
            st.counters.not_modified += 1;
            if let (Some(b), true) = (
                token.as_deref().and_then(|t| st.buckets.get_mut(t)),
                counted,
            ) {
                b.used = b.used.saturating_sub(1);
                rate[1].1 = b.limit.saturating_sub(b.used).to_string();
                rate[2].1 = b.used.to_string();
            }
            parts.status = StatusCode::NOT_MODIFIED;
            parts.headers.remove(axum::http::header::CONTENT_TYPE);
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::empty())
        } else {
            Response::from_parts(parts, axum::body::Body::from(bytes))
        };
    }
    let headers = resp.headers_mut();
    for (k, v) in rate {
        if let Ok(v) = v.parse() {
            headers.insert(k, v);
        }
    }
    if let Some(Ok(v)) = scopes.map(|s| s.parse()) {
        headers.insert("x-oauth-scopes", v);
    }
    if let Some(Ok(v)) = enterprise.map(|s| s.parse()) {
        headers.insert("x-github-enterprise-version", v);
    }
    resp
}

/// GitHub's secondary limit on one user's or app's requests in flight at once.
pub const MAX_CONCURRENT_REQUESTS: usize = 100;

/// One request in flight for its token; dropped when its answer is ready.
struct InFlight {
    sh: Shared,
    key: String,
    route: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.sh.lock();
        if let Some(n) = st.counters.in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
        if let Some(n) = st.counters.route_in_flight.get_mut(&self.route) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A weak validator of `body`, shaped like GitHub's (`W/"<hex>"`).
fn etag_of(body: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("W/\"{:016x}{:x}\"", h.finish(), body.len())
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): a list of tags or `*`, `W/`
/// ignored on both sides.
fn etag_matches(header: &str, tag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    header.trim() == "*" || header.split(',').any(|t| bare(t) == bare(tag))
}

/// Query parameters of paginated lists.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PageQuery {
    pub per_page: Option<usize>,
    pub page: Option<usize>,
    pub status: Option<String>,
    /// Cursor pagination (hook deliveries): `v1_<offset>`.
    pub cursor: Option<String>,
    /// `GET /user/repos`: `owner`, `collaborator`, `organization_member` (comma-separated).
    pub affiliation: Option<String>,
}

/// One cursor-paginated page (GitHub's hook deliveries): only a `rel="next"` link, carrying the
/// cursor of the next item.
pub fn page_by_cursor(
    web_url: &str,
    uri: &OriginalUri,
    q: &PageQuery,
    items: Vec<Value>,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let per = q.per_page.unwrap_or(30).clamp(1, 100);
    let start = match q.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .strip_prefix("v1_")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "Invalid cursor"))?,
    };
    let total = items.len();
    let slice: Vec<Value> = items.into_iter().skip(start).take(per).collect();
    let next = (start + per < total).then(|| {
        let mut pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(uri.0.query().unwrap_or("").as_bytes())
                .into_owned()
                .filter(|(k, _)| k != "cursor")
                .collect();
        pairs.push(("cursor".into(), format!("v1_{}", start + per)));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        format!("<{web_url}{}?{query}>; rel=\"next\"", uri.0.path())
    });
    Ok((slice, next))
}

/// One page of `items` and its `link` header (`next`, `last`, `first`, `prev`), like GitHub's.
pub fn page(
    web_url: &str,
    uri: &OriginalUri,
    q: &PageQuery,
    items: Vec<Value>,
) -> (Vec<Value>, Option<String>) {
    let per = q.per_page.unwrap_or(30).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let total = items.len();
    let last = total.div_ceil(per).max(1);
    let link_to = |n: usize| {
        let mut pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(uri.0.query().unwrap_or("").as_bytes())
                .into_owned()
                .filter(|(k, _)| k != "page")
                .collect();
        pairs.push(("page".into(), n.to_string()));
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        format!("<{web_url}{}?{query}>", uri.0.path())
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
        links.push(format!("{}; rel=\"last\"", link_to(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", link_to(1)));
    }
    let slice = items.into_iter().skip((page - 1) * per).take(per).collect();
    (slice, (!links.is_empty()).then(|| links.join(", ")))
}

/// A JSON response with an optional `link` header.
pub fn with_link(status: StatusCode, body: Value, link: Option<String>) -> Response {
    let mut resp = (status, Json(body)).into_response();
    if let Some(Ok(v)) = link.map(|l| l.parse()) {
        resp.headers_mut().insert("link", v);
    }
    resp
}

fn user_login(p: &Principal) -> Result<&str, ApiError> {
    match p {
        Principal::User { login, .. } => Ok(login),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        )),
    }
}

async fn get_user(State(sh): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let st = sh.lock();
    let p = principal(&st, &headers)?;
    let login = user_login(&p)?;
    let account = st.account(login).ok_or_else(ApiError::bad_credentials)?;
    Ok(Json(payloads::account(&st, account)).into_response())
}

async fn get_account(
    State(sh): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    principal(&st, &headers)?;
    let account = st.account(&name).ok_or_else(ApiError::not_found)?;
    Ok(Json(payloads::account(&st, account)).into_response())
}

/// The repositories `p` can see, with its role on each.
fn visible_repos(
    st: &SimState,
    p: &Principal,
    filter: impl Fn(&super::state::RepoRec) -> bool,
) -> Vec<Value> {
    st.repos
        .values()
        .filter(|r| filter(r))
        .filter_map(|r| match check_repo(st, p, r, Need::RepoMeta) {
            Ok(role) => Some(payloads::repository(st, r, role, true)),
            Err(_) => None,
        })
        .collect()
}

async fn list_user_repos(
    State(sh): State<Shared>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let p = principal(&st, &headers)?;
    let login = user_login(&p)?.to_owned();
    let affiliation = q
        .affiliation
        .clone()
        .unwrap_or_else(|| "owner,collaborator,organization_member".into());
    let wants = |a: &str| affiliation.split(',').any(|x| x.trim() == a);
    let items = visible_repos(&st, &p, |r| {
        let owner = st.accounts.get(&r.owner_id);
        let owned = owner.is_some_and(|o| o.login.eq_ignore_ascii_case(&login));
        let member =
            owner.is_some_and(|o| o.is_org && o.members.contains_key(&login.to_ascii_lowercase()));
        let collaborator = r.collaborators.contains_key(&login.to_ascii_lowercase());
        role_of(&st, &login, r).is_some()
            && (owned && wants("owner")
                || collaborator && wants("collaborator")
                || member && wants("organization_member"))
    });
    let (items, link) = page(&st.web_url, &uri, &q, items);
    Ok(with_link(StatusCode::OK, Value::Array(items), link))
}

async fn list_account_repos(
    State(sh): State<Shared>,
    Path(name): Path<String>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let p = principal(&st, &headers)?;
    let account = st.account(&name).ok_or_else(ApiError::not_found)?;
    let is_orgs_path = uri.0.path().contains("/orgs/");
    if is_orgs_path && !account.is_org {
        return Err(ApiError::not_found());
    }
    let id = account.id;
    // `/users/{u}/repos` lists public repositories only, whoever asks (the `/user/repos` of the
    // authenticated user is where private ones are).
    let public_only = !is_orgs_path;
    let items = visible_repos(&st, &p, |r| r.owner_id == id && !(public_only && r.private));
    let (items, link) = page(&st.web_url, &uri, &q, items);
    Ok(with_link(StatusCode::OK, Value::Array(items), link))
}

async fn list_installation_repos(
    State(sh): State<Shared>,
    uri: OriginalUri,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let p = principal(&st, &headers)?;
    if !matches!(p, Principal::Installation(_)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "This endpoint requires an installation access token",
        ));
    }
    let items = visible_repos(&st, &p, |_| true);
    let total = items.len();
    let (items, link) = page(&st.web_url, &uri, &q, items);
    Ok(with_link(
        StatusCode::OK,
        json!({"total_count": total, "repository_selection": "selected", "repositories": items}),
        link,
    ))
}

async fn get_repo(
    State(sh): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let p = principal(&st, &headers)?;
    let repo = st.repo(&owner, &name).ok_or_else(ApiError::not_found)?;
    let role = check_repo(&st, &p, repo, Need::RepoMeta)?;
    Ok(Json(payloads::repository(&st, repo, role, true)).into_response())
}

async fn rate_limit(State(sh): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let st = sh.lock();
    if let Some(refused) = strict::rate_limit_refusal(&st) {
        return Err(refused);
    }
    let token = bearer(&headers).unwrap_or_default();
    let b = st.buckets.get(&token).cloned().unwrap_or(Bucket {
        limit: st.default_rate_limit,
        used: 0,
        reset: epoch(SystemTime::now()) + 3600,
    });
    let core = json!({"limit": b.limit, "used": b.used, "remaining": b.limit.saturating_sub(b.used), "reset": b.reset});
    let reg = json!({"limit": 10000, "used": 0, "remaining": 10000, "reset": b.reset});
    Ok(
        Json(
            json!({"resources": {"core": core, "actions_runner_registration": reg}, "rate": core}),
        )
        .into_response(),
    )
}

fn app_of(p: &Principal) -> Result<u64, ApiError> {
    match p {
        Principal::App(id) => Ok(*id),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        )),
    }
}

async fn get_app(State(sh): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    let st = sh.lock();
    let app_id = app_of(&principal(&st, &headers)?)?;
    let app = st.apps.get(&app_id).ok_or_else(ApiError::not_found)?;
    Ok(
        Json(json!({"id": app.id, "slug": app.slug, "client_id": app.client_id, "name": app.slug}))
            .into_response(),
    )
}

async fn get_installation(
    State(sh): State<Shared>,
    Path(name): Path<String>,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let st = sh.lock();
    let app_id = app_of(&principal(&st, &headers)?)?;
    let account = st.account(&name).ok_or_else(ApiError::not_found)?;
    if uri.0.path().contains("/orgs/") && !account.is_org {
        return Err(ApiError::not_found());
    }
    let inst = st
        .installations
        .values()
        .find(|i| i.app_id == app_id && i.account_id == account.id)
        .ok_or_else(ApiError::not_found)?;
    let perms: serde_json::Map<String, Value> = inst
        .permissions
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    Ok(Json(json!({
        "id": inst.id, "app_id": app_id, "account": payloads::account(&st, account),
        "target_type": if account.is_org { "Organization" } else { "User" },
        "repository_selection": if inst.repos.is_some() { "selected" } else { "all" },
        "permissions": perms, "events": ["workflow_job", "workflow_run"],
    }))
    .into_response())
}

async fn mint_installation_token(
    State(sh): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut st = sh.lock();
    let app_id = app_of(&principal(&st, &headers)?)?;
    let inst = st
        .installations
        .get(&id)
        .filter(|i| i.app_id == app_id)
        .cloned()
        .ok_or_else(ApiError::not_found)?;
    let token = format!("ghs_{}", hex::encode(rand::random::<[u8; 18]>()));
    let expires_at = SystemTime::now() + st.installation_token_ttl;
    st.tokens.insert(
        token.clone(),
        TokenKind::Installation {
            installation_id: id,
            expires_at,
        },
    );
    st.counters.installation_tokens += 1;
    let perms: HashMap<&String, &str> = inst
        .permissions
        .iter()
        .map(|(k, v)| (k, v.as_str()))
        .collect();
    let body = json!({
        "token": token, "expires_at": timestamp(expires_at), "permissions": perms,
        "repository_selection": if inst.repos.is_some() { "selected" } else { "all" },
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}
