//! The HTTP surface, one tree: [`router`] assembles it, [`auth`] decides who may call what,
//! [`error::HttpError`] is how every part refuses, [`edge`] serves it (timeouts, connection cap,
//! graceful shutdown).
//!
//! - `/health`, `/version` (here), `/ready`, `/status`, `/metrics` ([`status`]);
//! - `/api/v1`: agents ([`api::agents`]), jobs ([`status`]), and the management endpoints
//!   ([`api`]: hooks, token validation, repositories), all behind [`auth::require_token`];
//! - `/webhook` ([`webhook`]): signed deliveries, verified before they are parsed;
//! - `/ui/` ([`ui`]): the operator's dashboard.

pub mod api;
pub mod auth;
pub mod edge;
pub mod error;
pub mod status;
pub mod ui;
pub mod webhook;

use std::sync::Arc;

use axum::middleware;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use self::auth::{Bearer, TokenKind, Tokens};
pub use self::error::HttpError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::AgentRegistry;
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
    pub management: crate::http::api::ApiState,
    /// The operator's drains (kept across restarts).
    pub drains: crate::drain::Drains,
    /// Who leads, for `/status` and `/ready`.
    pub leadership: crate::leader::Leadership,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/agents", get(api::agents::list))
        .route("/agents/{name}", get(api::agents::get))
        .route("/agents/{name}/drain", post(api::agents::drain))
        .route("/agents/{name}/undrain", post(api::agents::undrain))
        .route("/jobs", get(crate::http::status::jobs))
        .route("/jobs/{id}", get(crate::http::status::job))
        .merge(crate::http::api::router(state.management.clone()))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .route("/ready", get(crate::http::status::ready))
        .route("/status", get(crate::http::status::status))
        .route("/metrics", get(crate::http::status::metrics))
        .nest("/api/v1", api)
        .with_state(state)
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{StatusCode, header};
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
            management: crate::http::api::ApiState::new(&config, github, setup),
            drains: crate::drain::Drains::new(
                registry,
                crate::store::agents::AgentDirectory::sqlite(&state_dir).unwrap(),
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
