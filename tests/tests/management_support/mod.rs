//! Shared set-up for the management API tests: a controller pointed at the GitHub simulator, an
//! authenticated JSON client for `/api/v1`, and helpers to look at the simulator's hooks.
//!
//! Each `management_*.rs` test crate uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tests::github_sim::{GithubSim, HookRec, ScopeRec, WebhookRecorder};
use tests::harness::{TestController, init, wait_until};

pub const SECRET: &str = "first-webhook-secret";

/// A controller using `sim`, with `vars` on top of `GITHUB_API_URL` and a fresh `STATE_DIR`.
pub async fn controller(
    sim: &GithubSim,
    vars: &[(&str, String)],
) -> (TestController, tempfile::TempDir) {
    init();
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    env.insert("GITHUB_API_URL".into(), sim.api_url().to_owned());
    env.insert("STATE_DIR".into(), dir.path().display().to_string());
    (TestController::start(env).await, dir)
}

/// The simulator and a webhook receiver for our hooks to point at.
pub async fn sim_and_receiver() -> (GithubSim, WebhookRecorder) {
    init();
    (
        GithubSim::start().await.unwrap(),
        WebhookRecorder::start().await.unwrap(),
    )
}

/// A JSON client for one controller's `/api/v1`.
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// Authenticated with the controller's `API_TOKEN`, if it has one.
    pub fn of(c: &TestController) -> Self {
        Self {
            base: format!("http://{}", c.http_addr),
            token: c.config.api_token.as_ref().map(|t| t.expose().to_owned()),
            http: reqwest::Client::new(),
        }
    }

    /// The same controller with another bearer token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            base: self.base.clone(),
            token: token.map(str::to_owned),
            http: self.http.clone(),
        }
    }

    /// Any request; the status, `Retry-After` and the JSON body (`Null` when empty).
    pub async fn call_full(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("controller answers");
        let status = resp.status();
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = resp.bytes().await.unwrap();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, retry, json)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (s, _, v) = self.call_full(method, path, body).await;
        (s, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(Method::POST, path, body).await
    }

    /// Waits for the start-up setup of `owner` to have run, and returns its report.
    pub async fn startup_report(&self, owner: &str) -> Value {
        let path = format!("/api/v1/owners/{owner}/webhooks/setup");
        wait_until(
            Duration::from_secs(20),
            "the start-up webhook setup",
            || async { !self.get(&path).await.1["last_run"].is_null() },
        )
        .await;
        self.get(&path).await.1["last_run"].clone()
    }
}

/// The hooks the simulator holds on repository `repo_id`.
pub fn repo_hooks(sim: &GithubSim, repo_id: u64) -> Vec<HookRec> {
    sim.hooks()
        .into_iter()
        .filter(|h| h.scope == ScopeRec::Repo(repo_id))
        .collect()
}

/// The hooks the simulator holds on organization `org_id`.
pub fn org_hooks(sim: &GithubSim, org_id: u64) -> Vec<HookRec> {
    sim.hooks()
        .into_iter()
        .filter(|h| h.scope == ScopeRec::Org(org_id))
        .collect()
}

/// Whether a hook is exactly what setup makes.
pub fn is_our_hook(h: &HookRec, url: &str, secret: &str) -> bool {
    let mut events = h.events.clone();
    events.sort();
    h.url == url
        && h.active
        && h.content_type == "json"
        && h.insecure_ssl == "0"
        && events == ["workflow_job", "workflow_run"]
        && h.secret.as_deref() == Some(secret)
}

/// An RSA key made for this test run (never committed), for a GitHub App.
pub fn app_key(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("app.pem");
    let status = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&path)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// Fails the test if `body` contains `secret` anywhere.
pub fn assert_no_secret(body: &Value, secret: &str) {
    let text = body.to_string();
    assert!(!text.contains(secret), "a secret leaked into {text}");
}
