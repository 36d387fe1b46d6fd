//! A webhook receiver for tests: records every request it gets, answers with a chosen status.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio_util::sync::CancellationToken;

/// One request the recorder received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The JSON payload, decoding a `form` body's `payload` field when needed.
    pub fn json(&self) -> serde_json::Value {
        if self.header("content-type") == Some("application/x-www-form-urlencoded") {
            let payload = url::form_urlencoded::parse(&self.body)
                .find(|(k, _)| k == "payload")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            serde_json::from_str(&payload).unwrap_or_default()
        } else {
            serde_json::from_slice(&self.body).unwrap_or_default()
        }
    }

    /// `event.action` (or just `event`), for asserting sequences.
    pub fn kind(&self) -> String {
        let event = self.header("x-github-event").unwrap_or("?").to_owned();
        match self.json()["action"].as_str() {
            Some(action) => format!("{event}.{action}"),
            None => event,
        }
    }
}

#[derive(Clone)]
struct Inner {
    /// Appended by the handler, read by the test.
    received: Arc<Mutex<Vec<Received>>>,
    /// The status to answer with (200 unless a test wants failures).
    status: Arc<Mutex<StatusCode>>,
}

/// A receiver on `127.0.0.1:0`; stops when dropped.
pub struct WebhookRecorder {
    inner: Inner,
    url: String,
    shutdown: CancellationToken,
}

impl Drop for WebhookRecorder {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn receive(State(inner): State<Inner>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if let Ok(mut r) = inner.received.lock() {
        r.push(Received {
            headers,
            body: body.to_vec(),
        });
    }
    inner.status.lock().map(|s| *s).unwrap_or(StatusCode::OK)
}

impl WebhookRecorder {
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/webhook", listener.local_addr()?);
        let inner = Inner {
            received: Arc::default(),
            status: Arc::new(Mutex::new(StatusCode::OK)),
        };
        let app = axum::Router::new()
            .route("/webhook", post(receive))
            .with_state(inner.clone());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(Self {
            inner,
            url,
            shutdown,
        })
    }

    /// Where hooks should point.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answer every later delivery with `status`.
    pub fn respond_with(&self, status: StatusCode) {
        if let Ok(mut s) = self.inner.status.lock() {
            *s = status;
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Polls until at least `n` requests arrived; returns them (fewer on time-out).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
