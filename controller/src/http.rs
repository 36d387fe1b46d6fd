//! The HTTP side: health, version, and the REST API under `/api/v1`.
//!
//! Handlers only read state; errors become JSON through [`ApiError`].
//!
//! Who sees what ([`Tokens`]): `/health`, `/ready`, `/version` and `/webhook` (signed) are open;
//! `/status` answers aggregates to anyone and details (repository, job, runner and agent names)
//! only with `Bearer <API_TOKEN>` or the read-only `Bearer <STATUS_TOKEN>`; `/metrics` needs
//! `Bearer <METRICS_TOKEN>` (or the API token) when `METRICS_TOKEN` is set; `/api/v1` needs
//! `Bearer <API_TOKEN>`. Tokens are compared as SHA-256 digests in constant time, so neither
//! their content nor their length leaks through timing.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::ids::AgentName;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::{AgentRegistry, AgentView};
use crate::scheduler::DecisionsHandle;
use crate::store::StateStore;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub registry: AgentRegistry,
    pub tokens: Tokens,
    pub store: Arc<dyn StateStore>,
    pub decisions: DecisionsHandle,
    pub metrics: Arc<Metrics>,
    /// The GitHub client, read for its rate-limit quotas at each `/metrics` scrape.
    pub github: Arc<shared::github::GithubClient>,
    /// The management endpoints' state (hooks, token validation, webhook setup).
    pub management: crate::api::ApiState,
    /// The operator's drains (kept across restarts).
    pub drains: crate::drain::Drains,
    /// Who leads, for `/status` and `/ready`.
    pub leadership: crate::leader::Leadership,
}

/// A bearer token as kept in memory: its SHA-256 digest only.
#[derive(Clone, Copy)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant time over fixed-length digests: no early exit, no length to measure.
    fn matches(&self, given: &TokenDigest) -> bool {
        bool::from(self.0.ct_eq(&given.0))
    }
}

/// The configured bearer tokens (`API_TOKEN`, `STATUS_TOKEN`, `METRICS_TOKEN`), as digests.
#[derive(Clone, Default)]
pub struct Tokens {
    api: Option<TokenDigest>,
    status: Option<TokenDigest>,
    metrics: Option<TokenDigest>,
}

/// What a request's `Authorization` header proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer {
    /// No `Authorization` header.
    Absent,
    /// A bearer token that matches none of the accepted ones (or a malformed header).
    Wrong,
    /// One of the accepted tokens.
    Valid,
}

/// Which configured token a value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `API_TOKEN`: everything.
    Api,
    /// `STATUS_TOKEN`: read-only.
    Status,
    /// Neither.
    None,
}

impl Tokens {
    pub fn from_config(config: &Config) -> Self {
        let digest =
            |t: &Option<crate::config::Secret>| t.as_ref().map(|t| TokenDigest::of(t.expose()));
        Self {
            api: digest(&config.api_token),
            status: digest(&config.status_token),
            metrics: digest(&config.metrics_token),
        }
    }

    /// Whether `API_TOKEN` is configured.
    pub fn api_enabled(&self) -> bool {
        self.api.is_some()
    }

    fn check(headers: &axum::http::HeaderMap, accepted: &[Option<TokenDigest>]) -> Bearer {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Bearer::Absent;
        };
        let Some(given) = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(TokenDigest::of)
        else {
            return Bearer::Wrong;
        };
        // Every accepted token is compared, matched or not.
        let matched = accepted
            .iter()
            .flatten()
            .fold(false, |any, t| any | t.matches(&given));
        if matched {
            Bearer::Valid
        } else {
            Bearer::Wrong
        }
    }

    /// Which configured token `token` is (the dashboard's login form): every digest is compared.
    pub fn classify(&self, token: &str) -> TokenKind {
        let given = TokenDigest::of(token);
        let is = |t: &Option<TokenDigest>| t.as_ref().is_some_and(|t| t.matches(&given));
        let (api, status) = (is(&self.api), is(&self.status));
        if api {
            TokenKind::Api
        } else if status {
            TokenKind::Status
        } else {
            TokenKind::None
        }
    }

    /// Whether the dashboard can be opened at all (`API_TOKEN` or `STATUS_TOKEN` is set).
    pub fn dashboard_enabled(&self) -> bool {
        self.api.is_some() || self.status.is_some()
    }

    /// The API token.
    pub fn api(&self, headers: &axum::http::HeaderMap) -> Bearer {
        Self::check(headers, &[self.api])
    }

    /// Details of `/status`: the API token or `STATUS_TOKEN`.
    pub fn status(&self, headers: &axum::http::HeaderMap) -> Bearer {
        Self::check(headers, &[self.api, self.status])
    }

    /// `/metrics`: open unless `METRICS_TOKEN` is set; then it or the API token.
    pub fn metrics(&self, headers: &axum::http::HeaderMap) -> Bearer {
        if self.metrics.is_none() {
            return Bearer::Valid;
        }
        Self::check(headers, &[self.metrics, self.api])
    }
}

/// An API error: a status and a JSON reason.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error(
        "the API is disabled because API_TOKEN is not set: set API_TOKEN to a long random value \
         (at least 16 characters) and send it as `Authorization: Bearer <API_TOKEN>`"
    )]
    ApiDisabled,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Ambiguous(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the state store is unavailable")]
    Store(#[from] crate::store::StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::ApiDisabled => (StatusCode::FORBIDDEN, "api_disabled"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Ambiguous(_) => (StatusCode::CONFLICT, "ambiguous"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        };
        let body = Json(json!({ "error": code, "message": self.to_string() }));
        if matches!(self, ApiError::Unauthorized) {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/agents", get(list_agents))
        .route("/agents/{name}", get(get_agent))
        .route("/agents/{name}/drain", post(drain_agent))
        .route("/agents/{name}/undrain", post(undrain_agent))
        .route("/jobs", get(crate::status::jobs))
        .route("/jobs/{id}", get(crate::status::job))
        .merge(crate::api::router(state.management.clone()))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/ready", get(crate::status::ready))
        .route("/status", get(crate::status::status))
        .route("/metrics", get(crate::status::metrics))
        .nest("/api/v1", api)
        .with_state(state)
}

/// `Authorization: Bearer <API_TOKEN>`, compared as digests in constant time. Without
/// `API_TOKEN` the API is closed (403 saying how to open it), never open to anyone.
async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.tokens.api_enabled() {
        return Err(ApiError::ApiDisabled);
    }
    if state.tokens.api(request.headers()) != Bearer::Valid {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn version() -> Json<serde_json::Value> {
    Json(json!({
        "name": "gha-controller",
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": option_env!("GHA_SCALER_GIT_COMMIT").unwrap_or("unknown"),
        "build_date": option_env!("GHA_SCALER_BUILD_DATE").unwrap_or("unknown"),
    }))
}

async fn list_agents(State(state): State<AppState>) -> Json<Vec<AgentView>> {
    Json(state.registry.snapshot())
}

async fn get_agent(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let name = AgentName::parse(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    state
        .registry
        .get(&name)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no agent named {name} has connected")))
}

/// `POST /api/v1/agents/{name}/drain`: the agent takes no new runners; its current ones finish.
/// Kept until `/undrain`, across restarts of the agent and of the controller; an agent not
/// connected now is drained when it connects (`"connected": false`).
async fn drain_agent(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = AgentName::parse(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let applied = state.drains.drain(&name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "agent": name, "draining": true, "connected": applied.sent })),
    ))
}

/// `POST /api/v1/agents/{name}/undrain`: lifts a drain set through the API (a local
/// `gha-agent drain` is lifted by `gha-agent undrain`). 409 for a connected agent older than
/// protocol 1.2, which cannot be told.
async fn undrain_agent(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = AgentName::parse(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let applied = state.drains.undrain(&name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "agent": name, "draining": false, "connected": applied.sent })),
    ))
}

impl From<crate::drain::DrainError> for ApiError {
    fn from(e: crate::drain::DrainError) -> Self {
        use crate::drain::DrainError;
        match e {
            DrainError::UnknownAgent(_) => ApiError::NotFound(e.to_string()),
            DrainError::Unsupported(_) => ApiError::Conflict(e.to_string()),
            DrainError::Send(_) => ApiError::Unavailable(e.to_string()),
            DrainError::Store(e) => ApiError::Store(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use serde_json::Value;
    use tower::ServiceExt;

    const TOKEN: &str = "0123456789abcdef-token";

    fn app(token: Option<&str>) -> Router {
        app_with(token, &[])
    }

    fn app_with(token: Option<&str>, extra: &[(&str, &str)]) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let mut vars = vec![
            ("REPO_OWNER", "acme"),
            ("GITHUB_TOKEN", "ghp_unused"),
            ("ALLOW_UNSIGNED_WEBHOOKS", "true"),
            // Nothing listens there: these tests never reach GitHub.
            ("GITHUB_API_URL", "http://127.0.0.1:9"),
            ("REPO_NAME", "secret-project"),
            ("ALL_REPOS", "false"),
        ];
        if let Some(token) = token {
            vars.push(("API_TOKEN", token));
        }
        vars.extend_from_slice(extra);
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = crate::config::Config::from_env(&vars).unwrap();
        let github: Arc<dyn shared::github::GithubApi> = crate::github::client(&config).unwrap();
        let setup = Arc::new(crate::webhook_setup::WebhookSetup::new(
            &config,
            github.clone(),
            Default::default(),
        ));
        let state_dir = dir.keep();
        let store = crate::store::SqliteStore::open(&state_dir).unwrap();
        let registry = AgentRegistry::new();
        router(AppState {
            config: Arc::new(config.clone()),
            registry: registry.clone(),
            tokens: Tokens::from_config(&config),
            store: Arc::new(store),
            decisions: DecisionsHandle::default(),
            metrics: Arc::new(Metrics::new()),
            github: crate::github::client(&config).unwrap(),
            management: crate::api::ApiState::new(&config, github, setup),
            drains: crate::drain::Drains::new(
                registry,
                crate::store::agents::AgentDirectory::open(&state_dir).unwrap(),
            ),
            leadership: crate::leader::Leadership::sole(crate::leader::Replica {
                id: "test".into(),
                address: String::new(),
            }),
        })
    }

    async fn call(app: Router, uri: &str, auth: Option<&str>) -> (StatusCode, serde_json::Value) {
        let mut req = axum::http::Request::get(uri);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn the_api_requires_the_token() {
        let token = TOKEN;
        let (s, body) = call(app(Some(token)), "/api/v1/agents", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "unauthorized");
        let (s, _) = call(app(Some(token)), "/api/v1/agents", Some("Bearer wrong")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, body) = call(
            app(Some(token)),
            "/api/v1/agents",
            Some(&format!("Bearer {token}")),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, json!([]));
        let (s, _) = call(app(Some(token)), "/health", None).await;
        assert_eq!(s, StatusCode::OK);
    }

    #[tokio::test]
    async fn without_api_token_the_api_is_closed_and_says_how_to_open_it() {
        for uri in ["/api/v1/agents", "/api/v1/owners/acme/token/validate"] {
            let (s, body) = call(app(None), uri, None).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{uri}");
            assert_eq!(body["error"], "api_disabled");
            assert!(body["message"].as_str().unwrap().contains("set API_TOKEN"));
        }
        let (s, _) = call(app(None), "/health", None).await;
        assert_eq!(s, StatusCode::OK);
    }

    #[tokio::test]
    async fn management_routes_sit_behind_the_token() {
        let uri = "/api/v1/repos/acme/app/hooks";
        let (s, _) = call(app(Some(TOKEN)), uri, Some("Bearer nope")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let bearer = format!("Bearer {TOKEN}");
        let (s, body) = call(
            app(Some(TOKEN)),
            "/api/v1/owners/nobody/repositories",
            Some(&bearer),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "unknown_owner");
    }

    async fn call_text(app: Router, uri: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = axum::http::Request::get(uri);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let resp = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    const STATUS_TOKEN: &str = "read-only-status-0123";

    #[tokio::test]
    async fn status_shows_aggregates_to_anyone_and_details_only_with_a_token() {
        let app = || app_with(Some(TOKEN), &[("STATUS_TOKEN", STATUS_TOKEN)]);
        let (s, open) = call(app(), "/status", None).await;
        assert_eq!(s, StatusCode::OK);
        // The seed's shape, without names.
        assert_eq!(open["status"], "running");
        assert_eq!(open["config"]["max_runners"], 5);
        assert_eq!(open["config"]["repository"], Value::Null);
        assert_eq!(open["runners"]["list"], json!([]));
        assert_eq!(open["runners"]["max"], 5);
        assert_eq!(open["queue"]["depth"], 0);
        assert!(!open.to_string().contains("secret-project"), "{open}");
        assert!(!open.to_string().contains("acme"), "{open}");
        for bearer in [format!("Bearer {STATUS_TOKEN}"), format!("Bearer {TOKEN}")] {
            let (s, full) = call(app(), "/status", Some(&bearer)).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(full["config"]["repository"], "acme/secret-project");
            assert_eq!(full["owners"][0]["name"], "acme");
        }
        let (s, body) = call(app(), "/status", Some("Bearer wrong")).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
        // The status token is read-only: it opens no API route.
        let bearer = format!("Bearer {STATUS_TOKEN}");
        assert_eq!(
            call(app(), "/api/v1/agents", Some(&bearer)).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn metrics_can_require_their_own_token() {
        let (s, text) = call_text(app(Some(TOKEN)), "/metrics", None).await;
        assert_eq!(s, StatusCode::OK, "open without METRICS_TOKEN");
        assert!(text.contains("gha_scaler_"));
        let metrics_token = "scraper-token-0123456";
        let app = || app_with(Some(TOKEN), &[("METRICS_TOKEN", metrics_token)]);
        let (s, text) = call_text(app(), "/metrics", None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(text.contains("\"unauthorized\""), "{text}");
        let (s, text) =
            call_text(app(), "/metrics", Some(&format!("Bearer {metrics_token}"))).await;
        assert_eq!(s, StatusCode::OK);
        assert!(text.contains("gha_scaler_"));
    }

    #[test]
    fn tokens_are_compared_as_digests_whatever_their_length() {
        let t = TokenDigest::of(TOKEN);
        assert!(t.matches(&TokenDigest::of(TOKEN)));
        for other in ["", "0", "0123456789abcdef-toke", "0123456789abcdef-tokenX"] {
            assert!(!t.matches(&TokenDigest::of(other)), "{other:?}");
        }
    }

    #[tokio::test]
    async fn owner_and_repository_names_from_the_path_are_validated_before_github() {
        let bearer = format!("Bearer {TOKEN}");
        for uri in [
            "/api/v1/repos/acme/../hooks",
            "/api/v1/repos/acme/./hooks",
            "/api/v1/repos/acme/..%2F..%2Fuser/hooks",
            "/api/v1/repos/acme/a%20b/token/validate",
            "/api/v1/repos/acme/a%3Fx=1/hooks/5",
            "/api/v1/owners/..%2Forgs%2Facme/repositories",
            "/api/v1/owners/ac%23me/token/scopes",
        ] {
            let (s, body) = call(app(Some(TOKEN)), uri, Some(&bearer)).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert_eq!(body["error"], "bad_request", "{uri}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("not a GitHub name"),
                "{uri}"
            );
        }
        // A good name passes the check (and then fails at the unreachable GitHub: 502).
        let (s, body) = call(
            app(Some(TOKEN)),
            "/api/v1/repos/acme/my.repo-1_x/hooks",
            Some(&bearer),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    }

    #[tokio::test]
    async fn an_unknown_agent_is_a_json_404() {
        let bearer = format!("Bearer {TOKEN}");
        let (s, body) = call(app(Some(TOKEN)), "/api/v1/agents/nobody", Some(&bearer)).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "not_found");
    }
}
