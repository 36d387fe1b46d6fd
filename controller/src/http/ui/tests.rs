//! The dashboard's routes through `oneshot`: who gets in, cookies, CSRF.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use super::*;
use crate::metrics::Metrics;
use crate::registry::AgentRegistry;
use crate::scheduler::DecisionsHandle;

const API: &str = "0123456789abcdef-token";
const STATUS: &str = "read-only-status-0123";

fn app(tokens: &[(&str, &str)]) -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut vars: std::collections::HashMap<String, String> = [
        ("REPO_OWNER", "acme"),
        ("GITHUB_TOKEN", "ghp_unused"),
        ("ALLOW_UNSIGNED_WEBHOOKS", "true"),
        // Nothing listens there: these tests never reach GitHub.
        ("GITHUB_API_URL", "http://127.0.0.1:9"),
        ("ALL_REPOS", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in tokens {
        vars.insert(k.to_string(), v.to_string());
    }
    let config = crate::config::Config::from_env(&vars).unwrap();
    let github: Arc<dyn shared::github::GithubApi> = crate::github::client(&config).unwrap();
    let setup = Arc::new(crate::webhook_setup::WebhookSetup::new(
        &config,
        github.clone(),
        Default::default(),
    ));
    let store = crate::store::SqliteStore::open(dir.path()).unwrap();
    let registry = AgentRegistry::new();
    let state = AppState {
        config: Arc::new(config.clone()),
        registry: registry.clone(),
        tokens: crate::http::Tokens::from_config(&config),
        store: Arc::new(store),
        decisions: DecisionsHandle::default(),
        metrics: Arc::new(Metrics::new()),
        github: crate::github::client(&config).unwrap(),
        management: crate::http::api::ApiState::new(&config, github, setup),
        drains: crate::drain::Drains::new(
            registry,
            crate::store::agents::AgentDirectory::sqlite(dir.path()).unwrap(),
        ),
        leadership: crate::leader::Leadership::sole(crate::leader::Replica {
            id: "test".into(),
            address: String::new(),
        }),
    };
    let ui = UiState::new(state, EventLog::new(10, 10), CancellationToken::new());
    (router(ui), dir)
}

fn both() -> (Router, tempfile::TempDir) {
    app(&[("API_TOKEN", API), ("STATUS_TOKEN", STATUS)])
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(uri: &str) -> axum::http::request::Builder {
    Request::get(uri)
}

fn form(uri: &str) -> axum::http::request::Builder {
    Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
}

async fn login(app: &Router, token: &str) -> (StatusCode, HeaderMap) {
    let body = format!("token={token}");
    let (s, h, _) = send(app, form("/ui/login").body(Body::from(body)).unwrap()).await;
    (s, h)
}

/// Logs in and returns the cookie and the CSRF token from the agents page.
async fn session(app: &Router, token: &str) -> (String, String) {
    let (s, h) = login(app, token).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let cookie = h[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(token),
        "the token itself is never a cookie"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let (s, _, page) = send(
        app,
        get("/ui/agents")
            .header(header::COOKIE, &pair)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_owned();
    (pair, csrf)
}

#[tokio::test]
async fn pages_need_a_login_or_a_bearer_token() {
    let (app, _dir) = both();
    let (s, h, _) = send(&app, get("/").body(Body::empty()).unwrap()).await;
    assert!(s.is_redirection());
    assert_eq!(h[header::LOCATION], "/ui/");
    for page in [
        "/ui/",
        "/ui/queue",
        "/ui/runners",
        "/ui/agents",
        "/ui/events",
    ] {
        let (s, h, _) = send(&app, get(page).body(Body::empty()).unwrap()).await;
        assert!(s.is_redirection(), "{page}");
        assert_eq!(h[header::LOCATION], "/ui/login", "{page}");
        for token in [API, STATUS] {
            let (s, h, body) = send(
                &app,
                get(page)
                    .header(header::AUTHORIZATION, format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{page}");
            assert!(body.contains("<main id=\"content\">"), "{page}");
            assert!(
                h[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("default-src 'self'")
            );
        }
        let (s, _, _) = send(
            &app,
            get(page)
                .header(header::AUTHORIZATION, "Bearer wrong")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{page}");
    }
    let (s, _, _) = send(&app, get("/ui/stream").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, js) = send(&app, get("/ui/assets/app.js").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert!(js.contains("EventSource"));
}

#[tokio::test]
async fn a_wrong_token_is_refused_at_login_and_a_good_one_opens_the_pages() {
    let (app, _dir) = both();
    assert_eq!(login(&app, "nope").await.0, StatusCode::UNAUTHORIZED);
    let (cookie, csrf) = session(&app, API).await;
    assert_eq!(
        csrf.len(),
        64,
        "the agents page carries the session's CSRF token"
    );
    let (s, _, body) = send(
        &app,
        get("/ui/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("Overview") && body.contains("data-owner=\"acme\""),
        "{body}"
    );
    // Only the content, for the live refresh.
    let (_, _, part) = send(
        &app,
        get("/ui/")
            .header(header::COOKIE, &cookie)
            .header("x-fragment", "1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(
        !part.contains("<html") && part.contains("Overview"),
        "{part}"
    );
    // A made-up session id is no session.
    let (s, _, _) = send(
        &app,
        get("/ui/")
            .header(header::COOKIE, "gha_scaler_session=00ff")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(s.is_redirection());
}

#[tokio::test]
async fn draining_needs_the_sessions_csrf_token_the_same_origin_and_write_access() {
    let (app, _dir) = both();
    let (cookie, csrf) = session(&app, API).await;
    let drain = |csrf: &str, origin: Option<&str>, cookie: &str| {
        let body = format!("csrf={csrf}");
        let mut req = form("/ui/agents/host-1/drain")
            .header(header::COOKIE, cookie)
            .header(header::HOST, "127.0.0.1:8080");
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        req.body(Body::from(body)).unwrap()
    };
    let (s, _, body) = send(&app, drain("forged", None, &cookie)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("CSRF"), "{body}");
    let (s, _, body) = send(&app, drain(&csrf, Some("https://evil.example"), &cookie)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("another site"), "{body}");
    // The right token from our own page reaches the registry: no such agent here.
    let (s, _, body) = send(&app, drain(&csrf, Some("http://127.0.0.1:8080"), &cookie)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("host-1"), "{body}");
    // A read-only session may look, not drain.
    let (read_cookie, read_csrf) = session(&app, STATUS).await;
    let (s, _, body) = send(&app, drain(&read_csrf, None, &read_cookie)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("read-only"), "{body}");
}

#[tokio::test]
async fn without_tokens_the_dashboard_is_closed_and_says_how_to_open_it() {
    let (app, _dir) = app(&[]);
    for page in ["/ui/", "/ui/login"] {
        let (s, _, body) = send(&app, get(page).body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{page}");
        assert!(body.contains("set API_TOKEN"), "{body}");
    }
}

fn login_from(ip: [u8; 4], token: &str) -> Request<Body> {
    let mut req = form("/ui/login")
        .header(header::ACCEPT, "text/html")
        .body(Body::from(format!("token={token}")))
        .unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            ip, 40000,
        ))));
    req
}

#[tokio::test]
async fn login_attempts_are_limited_per_client_address_with_retry_after() {
    let (app, _dir) = both();
    for _ in 0..login_limit::PER_CLIENT_PER_MINUTE {
        let (s, _, _) = send(&app, login_from([10, 0, 0, 1], "nope")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // Past the burst even the right token is refused, so guessing learns nothing.
    let (s, h, page) = send(&app, login_from([10, 0, 0, 1], API)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = h[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(
        page.contains("Too many login attempts from your address"),
        "{page}"
    );
    assert!(h.get(header::SET_COOKIE).is_none());
    let mut req = login_from([10, 0, 0, 1], API);
    req.headers_mut()
        .insert(header::ACCEPT, "application/json".parse().unwrap());
    let (s, h, body) = send(&app, req).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key(header::RETRY_AFTER));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "login_rate_limited");
    assert_eq!(v["scope"], "client");
    // Another address still logs in.
    let (s, _, _) = send(&app, login_from([10, 0, 0, 2], API)).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn login_attempts_from_many_addresses_meet_the_global_limit() {
    let (app, _dir) = both();
    for n in 0..login_limit::GLOBAL_PER_MINUTE {
        let ip = [10, 1, (n / 250) as u8, (n % 250) as u8];
        let (s, _, _) = send(&app, login_from(ip, "nope")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    let (s, h, page) = send(&app, login_from([10, 2, 0, 1], API)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key(header::RETRY_AFTER));
    assert!(page.contains("from everyone"), "{page}");
}
