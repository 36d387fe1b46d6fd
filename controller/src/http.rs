//! The HTTP side: health, version, and the REST API under `/api/v1`.
//!
//! Handlers only read state; errors become JSON through [`ApiError`].

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
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
    pub api_token: Option<Arc<str>>,
    pub store: Arc<dyn StateStore>,
    pub decisions: DecisionsHandle,
    pub metrics: Arc<Metrics>,
    /// The GitHub client, read for its rate-limit quotas at each `/metrics` scrape.
    pub github: Arc<shared::github::GithubClient>,
    /// The management endpoints' state (hooks, token validation, webhook setup).
    pub management: crate::api::ApiState,
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

/// `Authorization: Bearer <API_TOKEN>`, compared in constant time. Without `API_TOKEN` the API
/// is closed (403 saying how to open it), never open to anyone.
async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = &state.api_token else {
        return Err(ApiError::ApiDisabled);
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
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
async fn drain_agent(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = AgentName::parse(&name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    match state
        .registry
        .send(&name, shared::command::AgentCommand::Drain)
    {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "agent": name, "draining": true })),
        )),
        Err(crate::registry::SendError::NotConnected(_)) => {
            Err(ApiError::NotFound(format!("agent {name} is not connected")))
        }
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    const TOKEN: &str = "0123456789abcdef-token";

    fn app(token: Option<&str>) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let vars = [
            ("REPO_OWNER", "acme"),
            ("GITHUB_TOKEN", "ghp_unused"),
            ("ALL_REPOS", "true"),
            ("ALLOW_UNSIGNED_WEBHOOKS", "true"),
            // Nothing listens there: these tests never reach GitHub.
            ("GITHUB_API_URL", "http://127.0.0.1:9"),
        ];
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
        let store = crate::store::SqliteStore::open(&dir.keep()).unwrap();
        router(AppState {
            config: Arc::new(config.clone()),
            registry: AgentRegistry::new(),
            api_token: token.map(Arc::from),
            store: Arc::new(store),
            decisions: DecisionsHandle::default(),
            metrics: Arc::new(Metrics::new()),
            github: crate::github::client(&config).unwrap(),
            management: crate::api::ApiState::new(&config, github, setup),
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

    #[tokio::test]
    async fn an_unknown_agent_is_a_json_404() {
        let bearer = format!("Bearer {TOKEN}");
        let (s, body) = call(app(Some(TOKEN)), "/api/v1/agents/nobody", Some(&bearer)).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(body["error"], "not_found");
    }
}
