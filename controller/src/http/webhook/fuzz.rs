//! Property tests for the webhook edge: whatever a sender puts in the body and headers, the
//! handler answers (never panics), refuses what is not signed with a configured secret, and a
//! valid signature stops being valid when a single byte of the body changes. The payload
//! readers are run on arbitrary bytes and on mutated GitHub fixtures too.
//!
//! They run in the normal test suite with a small case count (a few seconds in all), through
//! the real router and a real SQLite store in a temporary directory.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use tokio::sync::Notify;
use tower::ServiceExt;

use super::payload::{self, Envelope};
use super::signature;
use super::{Intake, router};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::SqliteStore;

const SECRET: &str = "It's a Secret to Everybody";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/src/github_sim/fixtures/webhooks")
        .join(name);
    std::fs::read(path).expect("fixture")
}

fn sign(body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A runtime and a router over a real store, shared by the cases of one property.
struct Rig {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let vars: HashMap<String, String> = [
            ("REPO_OWNER", "Octocoders"),
            ("ALL_REPOS", "true"),
            ("GITHUB_TOKEN", "t"),
            ("WEBHOOK_SECRET", SECRET),
            ("STATE_DIR", dir.path().to_str().expect("utf-8 temp dir")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = Arc::new(Config::from_env(&vars).expect("config"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let app = rt.block_on(async {
            let store = SqliteStore::open(dir.path()).expect("store");
            let intake = Intake::new(
                config,
                Arc::new(store),
                Arc::new(Metrics::new()),
                Arc::new(Notify::new()),
            );
            router(Arc::new(intake))
        });
        Self { rt, app, _dir: dir }
    }

    /// Posts and returns the status and the parsed JSON answer.
    fn post(&self, headers: &[(String, String)], body: Vec<u8>) -> (StatusCode, serde_json::Value) {
        let mut req = Request::post("/webhook");
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Body::from(body)).expect("request");
        self.rt.block_on(async {
            let resp = self.app.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .expect("answer body");
            let json = serde_json::from_slice(&bytes).expect("every answer is JSON");
            (status, json)
        })
    }
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x-github-event".to_owned()),
        Just("x-github-delivery".to_owned()),
        Just("x-hub-signature-256".to_owned()),
        Just("content-type".to_owned()),
        "x-[a-z-]{1,20}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("workflow_job".to_owned()),
        Just("ping".to_owned()),
        Just("application/json".to_owned()),
        Just("application/x-www-form-urlencoded".to_owned()),
        "sha256=[0-9a-f]{64}",
        "sha256=[ -~]{0,70}",
        // Visible ASCII only: other bytes are not a valid header value for the client.
        "[ -~]{0,80}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..2048),
        Just(fixture("workflow_job.queued.json")),
        Just(b"payload=%7B%22action%22%3A%22queued%22%7D".to_vec()),
    ]
}

/// A fixture with one byte changed, at `index` (wrapped), by `flip` (non-zero).
/// The fixtures' owner, serving all its repositories.
fn octocoders() -> crate::config::OwnerConfig {
    Config::from_env(
        &[
            ("REPO_OWNER", "Octocoders"),
            ("ALL_REPOS", "true"),
            ("GITHUB_TOKEN", "t"),
            ("WEBHOOK_SECRET", SECRET),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    )
    .expect("config")
    .owners
    .remove(0)
}

fn mutated(mut body: Vec<u8>, index: usize, flip: u8) -> Vec<u8> {
    let i = index % body.len();
    body[i] ^= flip;
    body
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_deliveries_are_answered_and_never_accepted_unsigned(
        headers in proptest::collection::vec((header_name(), header_value()), 0..6),
        body in body(),
    ) {
        let rig = Rig::new();
        let (status, json) = rig.post(&headers, body);
        // No case here carries a valid signature (guessing one is the only way in).
        prop_assert!(
            status.is_client_error(),
            "status {status} for {json}"
        );
        prop_assert!(json["error"].is_string(), "{json}");
    }

    #[test]
    fn a_valid_signature_over_mutated_bytes_is_refused(
        index in any::<usize>(),
        flip in 1u8..=255,
        name in prop::sample::select(vec![
            "workflow_job.queued.json",
            "workflow_job.completed.success.json",
            "workflow_run.requested.json",
        ]),
    ) {
        let rig = Rig::new();
        let original = fixture(name);
        let signature = sign(&original);
        let headers = |sig: &str| {
            vec![
                ("x-github-event".to_owned(), name.split('.').next().unwrap_or("").to_owned()),
                ("x-github-delivery".to_owned(), format!("d-{index}-{flip}")),
                ("x-hub-signature-256".to_owned(), sig.to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]
        };
        let (status, json) = rig.post(&headers(&signature), mutated(original.clone(), index, flip));
        prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", json);
        prop_assert_eq!(json["error"].as_str(), Some("invalid_signature"));
        // The same signature over the bytes it was made for is accepted.
        let (status, _) = rig.post(&headers(&signature), original);
        prop_assert!(status.is_success(), "{status}");
    }

    #[test]
    fn signature_checks_never_panic(
        secret in proptest::collection::vec(any::<u8>(), 0..80),
        body in proptest::collection::vec(any::<u8>(), 0..512),
        header in proptest::option::of("[ -~]{0,80}|sha256=[0-9a-fA-F]{64}"),
    ) {
        let _ = signature::verify(&secret, &body, header.as_deref());
    }

    #[test]
    fn payload_readers_never_panic_on_bytes_or_mutated_fixtures(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        index in any::<usize>(),
        flip in 1u8..=255,
        event in prop::sample::select(vec!["workflow_job", "workflow_run", "ping", "push"]),
    ) {
        let owner = octocoders();
        let fixture = mutated(fixture("workflow_job.in_progress.json"), index, flip);
        for input in [&bytes, &fixture] {
            if let Ok(envelope) = Envelope::parse(input) {
                let _ = (envelope.owner(), envelope.action());
            }
            let _ = payload::interpret(event, input, &owner, 0);
        }
    }

    /// The handler reads a payload once ([`payload::Read`]); what it reads must be what the
    /// envelope and then [`payload::interpret`] read, for every input, in the same order of
    /// failures (the envelope's first, then the event's).
    #[test]
    fn the_one_pass_reader_reads_what_two_passes_read(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        index in any::<usize>(),
        flip in 1u8..=255,
        file in prop::sample::select(vec![
            "workflow_job.queued.self-hosted.json",
            "workflow_job.in_progress.json",
            "workflow_job.completed.failure.json",
            "workflow_run.requested.json",
        ]),
        event in prop::sample::select(vec!["workflow_job", "workflow_run", "push"]),
    ) {
        let owner = octocoders();
        let original = fixture(file);
        let mutated = mutated(original.clone(), index, flip);
        for input in [&bytes, &original, &mutated] {
            let two_passes = Envelope::parse(input).map(|e| {
                let who = (e.owner().map(str::to_owned), e.action().map(str::to_owned));
                (who, payload::interpret(event, input, &owner, 7).ok())
            });
            let one_pass = payload::Read::parse(event, input).map(|r| {
                let e = r.envelope();
                let who = (e.owner().map(str::to_owned), e.action().map(str::to_owned));
                (who, r.interpret(event, &owner, 7).ok())
            });
            prop_assert_eq!(two_passes.ok(), one_pass.ok());
        }
    }
}
