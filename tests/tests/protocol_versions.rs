//! Agents and a controller of different versions (issue 13 §5): an agent of the previous
//! protocol revision (1.0, replayed from a fixture of its wire messages) is served; one newer
//! than the controller, or of another major version, is refused with a message that says which
//! side to upgrade.

use std::time::Duration;

use prost::Message;
use proto::v1 as pb;
use tests::harness::{Secured, wait_until};
use tests::raw_agent;

const WAIT: Duration = Duration::from_secs(15);

/// The 1.0 agent's messages, decoded from the fixture's bytes exactly as the controller
/// decodes them off the wire.
fn previous_revision_session() -> Vec<pb::AgentMessage> {
    let text = include_str!("../fixtures/agent-protocol/v1.0-session.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let bytes = hex::decode(l.trim()).expect("hex");
            pb::AgentMessage::decode(bytes.as_slice()).expect("a 1.0 AgentMessage")
        })
        .collect()
}

#[tokio::test]
async fn an_agent_one_minor_revision_older_is_served() {
    let s = Secured::start(Default::default()).await;
    let mut messages = previous_revision_session().into_iter();
    let register = messages.next().expect("the fixture's registration");
    match &register.msg {
        Some(pb::agent_message::Msg::Register(r)) => {
            assert_eq!(r.protocol_minor, 0, "1.0 had no minor field")
        }
        other => panic!("the fixture starts with a registration: {other:?}"),
    }
    let cert = s.ca.client("old-agent", &[]);
    let channel = raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), Some(&cert))
        .await
        .unwrap();
    let (tx, mut inbound) = raw_agent::session(channel, register)
        .await
        .expect("a 1.0 agent is accepted");
    let first = tokio::time::timeout(WAIT, inbound.message())
        .await
        .expect("an answer in time")
        .expect("no error")
        .expect("a message");
    assert!(
        matches!(first.msg, Some(pb::controller_message::Msg::Registered(_))),
        "{first:?}"
    );
    for message in messages {
        tx.send(message)
            .await
            .expect("send the fixture's heartbeat");
    }
    wait_until(WAIT, "the 1.0 agent is listed, connected", || async {
        s.controller
            .agent("old-agent")
            .await
            .is_some_and(|a| a["connected"] == true && a["version"] == "0.1.0")
    })
    .await;
}

#[tokio::test]
async fn an_agent_newer_than_the_controller_is_told_to_wait_for_the_controllers_upgrade() {
    let s = Secured::start(Default::default()).await;
    let cert = s.ca.client("new-agent", &[]);
    let channel = raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), Some(&cert))
        .await
        .unwrap();
    let mut register = raw_agent::register(pb::Arch::Amd64);
    if let Some(pb::agent_message::Msg::Register(r)) = &mut register.msg {
        r.protocol_minor = pb::PROTOCOL_MINOR + 1;
    }
    let status = raw_agent::session(channel, register)
        .await
        .expect_err("a newer minor revision is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let expected = format!(
        "protocol version 1.{} is newer than this controller: this controller serves protocol \
         1.{} to 1.{}; upgrade the controller first",
        pb::PROTOCOL_MINOR + 1,
        pb::PROTOCOL_MINOR - 1,
        pb::PROTOCOL_MINOR
    );
    assert!(status.message().contains(&expected), "{}", status.message());
    assert!(s.controller.agent("new-agent").await.is_none());
}
