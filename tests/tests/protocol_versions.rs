//! Agents and a controller of different versions (issue 13 §5): an agent of the previous
//! protocol revision (1.2: the messages of a 1.0 agent, replayed from a fixture of its wire
//! bytes, with the one field 1.1 added, `protocol_minor`; neither 1.1 nor 1.2 changed what an
//! agent sends) is served, and never asked to prepare images (1.3); one older (1.0 itself), one
//! newer than the controller, or of another major version, is refused with a message that says
//! which side to upgrade. An agent of this revision is asked for the runner image right after
//! its registration (issue 16 §2).

use std::time::Duration;

use prost::Message;
use proto::v1 as pb;
use tests::harness::{Secured, post_json, wait_until};
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

/// A 1.2 agent's session: 1.1 added `Register.protocol_minor` to 1.0 and nothing else an agent
/// sends (1.2 added the controller's `Undrain`, 1.3 `PrepareImages` and the agent's image
/// report, which a 1.2 agent never sends).
fn one_revision_older_session() -> Vec<pb::AgentMessage> {
    let mut messages = previous_revision_session();
    match messages.first_mut().and_then(|m| m.msg.as_mut()) {
        Some(pb::agent_message::Msg::Register(r)) => {
            assert_eq!(r.protocol_minor, 0, "1.0 had no minor field");
            r.protocol_minor = pb::PROTOCOL_MINOR - 1;
        }
        other => panic!("the fixture starts with a registration: {other:?}"),
    }
    messages
}

#[tokio::test]
async fn an_agent_older_than_the_previous_revision_is_told_to_upgrade() {
    let s = Secured::start(Default::default()).await;
    let register = previous_revision_session().remove(0);
    let cert = s.ca.client("older-agent", &[]);
    let channel = raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), Some(&cert))
        .await
        .unwrap();
    let status = raw_agent::session(channel, register)
        .await
        .expect_err("a 1.0 agent is refused by a 1.3 controller");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("protocol version 1.0 is too old")
            && status.message().contains("upgrade the agent"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_agent_one_minor_revision_older_is_served() {
    let s = Secured::start(Default::default()).await;
    let mut messages = one_revision_older_session().into_iter();
    let register = messages.next().expect("the fixture's registration");
    let cert = s.ca.client("old-agent", &[]);
    let channel = raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), Some(&cert))
        .await
        .unwrap();
    let (tx, mut inbound) = raw_agent::session(channel, register)
        .await
        .expect("a 1.2 agent is accepted");
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
    wait_until(WAIT, "the 1.2 agent is listed, connected", || async {
        s.controller
            .agent("old-agent")
            .await
            .is_some_and(|a| a["connected"] == true && a["version"] == "0.1.0")
    })
    .await;
    // The next command it gets is the drain asked for now: no PrepareImages came before it.
    let (code, body) = post_json(&s.controller, "/api/v1/agents/old-agent/drain").await;
    assert!((200..300).contains(&code), "{code} {body}");
    let next = tokio::time::timeout(WAIT, inbound.message())
        .await
        .expect("a command in time")
        .expect("no error")
        .expect("a message");
    assert!(
        matches!(next.msg, Some(pb::controller_message::Msg::Drain(_))),
        "a 1.2 agent is sent no PrepareImages: {next:?}"
    );
    let listed = s.controller.agent("old-agent").await.expect("listed");
    assert_eq!(listed["images"], serde_json::json!([]), "{listed}");
}

#[tokio::test]
async fn an_agent_of_this_revision_is_asked_for_the_runner_image_and_its_report_is_listed() {
    let s = Secured::start(Default::default()).await;
    let cert = s.ca.client("current-agent", &[]);
    let channel = raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), Some(&cert))
        .await
        .unwrap();
    let (tx, mut inbound) = raw_agent::session(channel, raw_agent::register(pb::Arch::Amd64))
        .await
        .expect("accepted");
    let mut next = async || {
        tokio::time::timeout(WAIT, inbound.message())
            .await
            .expect("a message in time")
            .expect("no error")
            .expect("a message")
            .msg
    };
    assert!(matches!(
        next().await,
        Some(pb::controller_message::Msg::Registered(_))
    ));
    let image = s.controller.config.runners.image.clone();
    match next().await {
        Some(pb::controller_message::Msg::PrepareImages(p)) => {
            assert_eq!(p.images, vec![image.clone()])
        }
        other => panic!("PrepareImages right after the registration: {other:?}"),
    }
    // Its report, with one image never asked for (not kept).
    let report = pb::ImageReport {
        images: vec![
            pb::ImageStatus {
                image: image.clone(),
                state: pb::ImageState::Pulling as i32,
                detail: "pulling: 2 of 5 layers after 3s".into(),
            },
            pb::ImageStatus {
                image: "attractive/but-never-asked:1".into(),
                state: pb::ImageState::Present as i32,
                detail: String::new(),
            },
        ],
    };
    tx.send(pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Images(report)),
    })
    .await
    .expect("send the report");
    let expected = serde_json::json!([{
        "image": image,
        "state": "pulling",
        "detail": "pulling: 2 of 5 layers after 3s",
    }]);
    wait_until(WAIT, "the report is listed", || async {
        s.controller
            .agent("current-agent")
            .await
            .is_some_and(|a| a["images"] == expected)
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
