//! Agents register over mutual TLS with the identity of their certificate; everything else
//! is refused with a reason.

use std::time::Duration;

use proto::v1 as pb;
use tests::harness::{AgentTls, Secured, TestAgent, wait_until};
use tests::pki::TestCa;
use tests::raw_agent;
use time::OffsetDateTime;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(15);

async fn setup() -> Secured {
    Secured::start(Default::default()).await
}

#[tokio::test]
async fn an_agent_registers_with_the_identity_of_its_certificate() {
    let s = setup().await;
    // The CN says one thing and the first DNS SAN another: the SAN wins.
    let cert = s.ca.client("cn-is-not-used", &["edge-amd64-1", "alias"]);
    let agent = TestAgent::start(
        &s.controller.grpc_url(),
        &s.tls(&cert),
        &[("MAX_RUNNERS", "3"), ("LABELS", "gpu,big-disk")],
    );
    let status = agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    assert_eq!(status.agent_name.as_deref(), Some("edge-amd64-1"));

    let listed = s
        .controller
        .agent("edge-amd64-1")
        .await
        .expect("agent listed under its SAN");
    assert_eq!(listed["arch"], "amd64");
    assert_eq!(listed["runtime"], "memory");
    assert_eq!(listed["capacity"], 3);
    assert_eq!(listed["labels"], serde_json::json!(["gpu", "big-disk"]));
    assert_eq!(listed["connected"], true);
    assert!(
        listed["last_heartbeat"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert_eq!(listed["runners"], serde_json::json!([]));
    assert_eq!(
        s.controller.agents().await.len(),
        1,
        "no entry under the CN"
    );

    // Heartbeats keep arriving: last_heartbeat moves on.
    let first = listed["last_heartbeat"].as_str().unwrap().to_owned();
    wait_until(WAIT, "a newer heartbeat", || async {
        s.controller.agent("edge-amd64-1").await.unwrap()["last_heartbeat"]
            .as_str()
            .unwrap()
            != first
    })
    .await;
}

#[tokio::test]
async fn agents_of_both_architectures_register_side_by_side() {
    let s = setup().await;
    let amd = s.ca.client("host-amd", &[]);
    let arm = s.ca.client("host-arm", &[]);
    let a = TestAgent::start(
        &s.controller.grpc_url(),
        &s.tls(&amd),
        &[("AGENT_ARCH", "amd64")],
    );
    let b = TestAgent::start(
        &s.controller.grpc_url(),
        &s.tls(&arm),
        &[("AGENT_ARCH", "arm64")],
    );
    a.wait_status(WAIT, "amd connected", |st| st.connected)
        .await;
    b.wait_status(WAIT, "arm connected", |st| st.connected)
        .await;
    let agents = s.controller.agents().await;
    let arches: Vec<_> = agents
        .iter()
        .map(|a| (a["name"].clone(), a["arch"].clone()))
        .collect();
    assert_eq!(
        arches,
        vec![
            (serde_json::json!("host-amd"), serde_json::json!("amd64")),
            (serde_json::json!("host-arm"), serde_json::json!("arm64")),
        ]
    );
    assert_eq!(
        agents[1]["capacity_by_arch"],
        serde_json::json!({ "arm64": 5 })
    );
}

/// Registers through a raw client and waits for the controller's first answer.
async fn raw_session(channel: Channel) -> Result<(), tonic::Status> {
    let (_tx, mut inbound) =
        raw_agent::session(channel, raw_agent::register(pb::Arch::Amd64)).await?;
    inbound.message().await?;
    Ok(())
}

#[tokio::test]
async fn a_client_without_certificate_is_refused_at_the_session() {
    let s = setup().await;
    let channel = raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), None)
        .await
        .expect("TLS without a client certificate is allowed (for enrollment)");
    let status = raw_session(channel)
        .await
        .expect_err("no session without a certificate");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("client certificate"),
        "{}",
        status.message()
    );
    assert!(s.controller.agents().await.is_empty());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_and_the_agent_keeps_trying() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let foreign = TestCa::new(dir.path(), "foreign CA");
    let cert = foreign.client("intruder", &[]);
    let agent = TestAgent::start(
        &s.controller.grpc_url(),
        &AgentTls {
            ca: s.ca.ca_file(),
            cert: cert.cert.clone(),
            key: cert.key.clone(),
        },
        &[],
    );
    let status = agent
        .wait_status(WAIT, "a TLS error", |st| st.last_error.is_some())
        .await;
    let error = status.last_error.unwrap();
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("UnknownCA"),
        "{error}"
    );
    assert!(!status.connected);
    // Still retrying (slowly), never registered.
    let later = agent
        .wait_status(WAIT, "a second attempt", |st| st.attempts >= 2)
        .await;
    assert!(!later.connected);
    assert_eq!(later.sessions, 0);
    assert!(s.controller.agents().await.is_empty());
}

#[tokio::test]
async fn an_expired_certificate_is_refused_by_the_controller_and_by_the_agent_itself() {
    let s = setup().await;
    let now = OffsetDateTime::now_utc();
    let expired = s.ca.client_valid(
        "expired-agent",
        &[],
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    );
    // The controller refuses it during the handshake...
    let refused =
        match raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), Some(&expired)).await {
            Err(e) => e,
            Ok(channel) => raw_session(channel)
                .await
                .expect_err("expired certificate refused")
                .to_string(),
        };
    assert!(
        refused.to_lowercase().contains("expired")
            || refused.to_lowercase().contains("certificate"),
        "{refused}"
    );
    // ...and the agent refuses to use it, saying why, rather than retrying forever.
    let mut agent = TestAgent::start(&s.controller.grpc_url(), &s.tls(&expired), &[]);
    let outcome = agent
        .exited(WAIT)
        .await
        .expect_err("agent stops on an expired certificate");
    assert!(outcome.to_string().contains("expired"), "{outcome}");
    assert!(s.controller.agents().await.is_empty());
}

#[tokio::test]
async fn an_unsupported_protocol_version_is_refused_with_a_reason() {
    let s = setup().await;
    let cert = s.ca.client("future-agent", &[]);
    let channel = raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), Some(&cert))
        .await
        .unwrap();
    let future = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            protocol_version: 99,
            ..Default::default()
        })),
    };
    let status = raw_agent::session(channel, future)
        .await
        .expect_err("version 99 refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("protocol version 99"));
}

#[tokio::test]
async fn runners_an_agent_invents_are_bounded_by_its_capacity() {
    let s = setup().await;
    let cert = s.ca.client("inventor", &[]);
    let channel = raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), Some(&cert))
        .await
        .unwrap();
    let invented = |prefix: &str, n: usize| -> Vec<pb::RunnerStatus> {
        (0..n)
            .map(|i| {
                let id = shared::ids::RunnerId::parse(&format!("{prefix}-{i}")).unwrap();
                shared::wire::runner_state_to_wire(&shared::runner::RunnerState::new(
                    id,
                    format!("{prefix}-{i}"),
                    shared::runner::RunnerPhase::Running,
                ))
            })
            .collect()
    };
    let mut register = raw_agent::register(pb::Arch::Amd64);
    if let Some(pb::agent_message::Msg::Register(r)) = &mut register.msg {
        r.inventory = invented("made-up", 500);
    }
    let (tx, mut inbound) = raw_agent::session(channel, register).await.unwrap();
    inbound.message().await.unwrap();
    for status in invented("later", 500) {
        tx.send(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::RunnerStatus(status)),
        })
        .await
        .unwrap();
    }
    // The last report is a heartbeat: when the controller has applied it, it has applied all.
    tx.send(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
            healthy: false,
            unhealthy_reason: "marker".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    wait_until(WAIT, "every report applied", || async {
        s.controller
            .agent("inventor")
            .await
            .is_some_and(|a| a["unhealthy_reason"] == "marker")
    })
    .await;
    let listed = s.controller.agent("inventor").await.unwrap();
    let runners = listed["runners"].as_array().unwrap();
    assert_eq!(
        runners.len(),
        1,
        "an agent of capacity 1 keeps at most one runner the controller never sent"
    );
}
