//! Webhook delivery as GitHub does it: signed POSTs to each subscribed hook, every attempt
//! recorded for the deliveries API, no automatic retries, plus injected faults.
//!
//! Events are queued (under the state lock) on a bounded channel to one worker that sends them in
//! order, so a test sees GitHub's usual order unless it injects a fault. A full queue records the
//! delivery as failed, as GitHub would when it cannot deliver.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::hmac;
use serde_json::Value;
use tokio::sync::mpsc;

use super::state::{DeliveryFault, DeliveryRec, HookRec, ScopeRec, State, now};

/// Queue depth of the delivery worker.
const QUEUE: usize = 65_536;

/// One delivery to one hook.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub hook: HookRec,
    pub event: String,
    pub action: Option<String>,
    pub payload: Value,
    pub guid: String,
    pub redelivery: bool,
    pub repository_id: Option<u64>,
    pub installation_id: Option<u64>,
    pub fault: Option<DeliveryFault>,
}

/// The sending side of the delivery worker, plus a count of deliveries not yet recorded.
#[derive(Debug, Clone)]
pub struct Deliverer {
    /// The worker task holds the receiver; it ends when every sender is dropped.
    tx: mpsc::Sender<Outgoing>,
    pending: Arc<AtomicUsize>,
}

impl Deliverer {
    /// Starts the worker over `state`.
    pub fn start(state: Arc<Mutex<State>>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        tokio::spawn(worker(rx, state, http, pending.clone()));
        Self { tx, pending }
    }

    /// Deliveries queued or in flight.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// Queues `event` for every hook of the repository (and its organization) subscribed to it.
    pub fn repo_event(
        &self,
        state: &mut State,
        repo_id: u64,
        event: &str,
        action: Option<&str>,
        payload: Value,
    ) {
        let hooks = state.hooks_for_repo(repo_id, event);
        let fault = if hooks.is_empty() {
            None
        } else {
            state.faults.take_delivery(event, action)
        };
        for hook in hooks {
            self.send(
                state,
                Outgoing {
                    hook,
                    event: event.to_owned(),
                    action: action.map(str::to_owned),
                    payload: payload.clone(),
                    guid: guid(),
                    redelivery: false,
                    repository_id: Some(repo_id),
                    installation_id: None,
                    fault,
                },
            );
        }
    }

    /// Queues one delivery (a ping, a test, a redelivery, or one of [`Self::repo_event`]).
    pub fn send(&self, state: &mut State, out: Outgoing) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(err) = self.tx.try_send(out) {
            let out = match err {
                mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
            };
            let (headers, body) = render(&out);
            record(
                state,
                &out,
                headers,
                &body,
                Err("delivery queue full".into()),
                0.0,
            );
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A fresh `X-GitHub-Delivery` GUID.
pub fn guid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `sha256=<hex>`: GitHub's `X-Hub-Signature-256` of `body` under `secret`.
pub fn signature_256(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// `sha1=<hex>`: the legacy `X-Hub-Signature` GitHub still sends.
pub fn signature_1(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    format!("sha1={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

/// The headers and exact body bytes of a delivery.
fn render(out: &Outgoing) -> (Vec<(String, String)>, Vec<u8>) {
    let json = out.payload.to_string();
    let (content_type, body) = if out.hook.content_type == "form" {
        let form = serde_urlencoded::to_string([("payload", json.as_str())]).unwrap_or_default();
        ("application/x-www-form-urlencoded", form.into_bytes())
    } else {
        ("application/json", json.into_bytes())
    };
    let (target_type, target_id) = match out.hook.scope {
        ScopeRec::Repo(id) => ("repository", id),
        ScopeRec::Org(id) => ("organization", id),
    };
    let mut headers = vec![
        ("Accept".to_owned(), "*/*".to_owned()),
        ("User-Agent".to_owned(), "GitHub-Hookshot/sim".to_owned()),
        ("X-GitHub-Delivery".to_owned(), out.guid.clone()),
        ("X-GitHub-Event".to_owned(), out.event.clone()),
        ("X-GitHub-Hook-ID".to_owned(), out.hook.id.to_string()),
        (
            "X-GitHub-Hook-Installation-Target-ID".to_owned(),
            target_id.to_string(),
        ),
        (
            "X-GitHub-Hook-Installation-Target-Type".to_owned(),
            target_type.to_owned(),
        ),
        ("content-type".to_owned(), content_type.to_owned()),
    ];
    if let Some(secret) = &out.hook.secret {
        headers.push(("X-Hub-Signature".to_owned(), signature_1(secret, &body)));
        headers.push((
            "X-Hub-Signature-256".to_owned(),
            signature_256(secret, &body),
        ));
    }
    (headers, body)
}

async fn worker(
    mut rx: mpsc::Receiver<Outgoing>,
    state: Arc<Mutex<State>>,
    http: reqwest::Client,
    pending: Arc<AtomicUsize>,
) {
    let mut held: Option<Outgoing> = None;
    loop {
        // A held (reordered) delivery goes out after the next one, or after a quiet moment.
        let next = if held.is_some() {
            match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    if let Some(h) = held.take() {
                        deliver(&http, &state, &h, &pending).await;
                    }
                    continue;
                }
            }
        } else {
            rx.recv().await
        };
        let Some(out) = next else { break };
        match out.fault {
            Some(DeliveryFault::Drop) => {
                let (headers, body) = render(&out);
                if let Ok(mut st) = state.lock() {
                    record(
                        &mut st,
                        &out,
                        headers,
                        &body,
                        Err("Failed to connect to host".into()),
                        0.0,
                    );
                }
                pending.fetch_sub(1, Ordering::SeqCst);
            }
            Some(DeliveryFault::Delay(delay)) => {
                let (http, state, pending) = (http.clone(), state.clone(), pending.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    deliver(&http, &state, &out, &pending).await;
                });
            }
            Some(DeliveryFault::Duplicate) => {
                pending.fetch_add(1, Ordering::SeqCst);
                deliver(&http, &state, &out, &pending).await;
                deliver(&http, &state, &out, &pending).await;
            }
            Some(DeliveryFault::Reorder) if held.is_none() => held = Some(out),
            _ => {
                deliver(&http, &state, &out, &pending).await;
                if let Some(h) = held.take() {
                    deliver(&http, &state, &h, &pending).await;
                }
            }
        }
    }
}

/// Sends one delivery and records its outcome.
async fn deliver(
    http: &reqwest::Client,
    state: &Mutex<State>,
    out: &Outgoing,
    pending: &AtomicUsize,
) {
    let (headers, body) = render(out);
    let mut req = http.post(&out.hook.url).body(body.clone());
    for (k, v) in &headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let started = Instant::now();
    let outcome = match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let resp_headers = resp
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                .collect::<Vec<_>>();
            let text = resp.text().await.unwrap_or_default();
            Ok((
                status,
                resp_headers,
                text.chars().take(2000).collect::<String>(),
            ))
        }
        Err(err) if err.is_timeout() => Err("timed out".to_owned()),
        Err(_) => Err("Failed to connect to host".to_owned()),
    };
    let duration = started.elapsed().as_secs_f64();
    if let Ok(mut st) = state.lock() {
        record(&mut st, out, headers, &body, outcome, duration);
    }
    pending.fetch_sub(1, Ordering::SeqCst);
}

type Outcome = Result<(u16, Vec<(String, String)>, String), String>;

fn record(
    state: &mut State,
    out: &Outgoing,
    headers: Vec<(String, String)>,
    _body: &[u8],
    outcome: Outcome,
    duration: f64,
) {
    let (status, code, resp_headers, resp_body) = match outcome {
        Ok((code, h, b)) if (200..300).contains(&code) => ("OK".to_owned(), code as i64, h, b),
        Ok((code, h, b)) => (format!("Invalid HTTP Response: {code}"), code as i64, h, b),
        Err(why) => (why, 0, Vec::new(), String::new()),
    };
    let id = state.next_id();
    if let Some(hook) = state.hooks.get_mut(&out.hook.id) {
        hook.last_response = Some((
            code,
            if status == "OK" {
                "active".into()
            } else {
                status.clone()
            },
        ));
    }
    state.deliveries.push(DeliveryRec {
        id,
        hook_id: out.hook.id,
        guid: out.guid.clone(),
        delivered_at: now(),
        redelivery: out.redelivery,
        duration,
        status,
        status_code: code,
        event: out.event.clone(),
        action: out.action.clone(),
        installation_id: out.installation_id,
        repository_id: out.repository_id,
        url: out.hook.url.clone(),
        request_headers: headers,
        payload: out.payload.clone(),
        response_headers: resp_headers,
        response_body: resp_body,
    });
}
