//! Sessions survive what production throws at them: a controller restart does not lose a
//! runner, a killed or silent agent is noticed within the heartbeat timeout, and commands
//! replayed after a reconnect do no harm.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::v1 as pb;
use shared::arch::Arch;
use shared::command::{AgentCommand, CacheSettings, Registration, RunnerSpec};
use shared::ids::{AgentName, RunnerId};
use shared::runner::RunnerPhase;
use tests::harness::{AgentTls, Secured, TestAgent, wait_until};
use tests::raw_agent;

const WAIT: Duration = Duration::from_secs(15);

fn spec(id: &str) -> RunnerSpec {
    RunnerSpec {
        id: RunnerId::parse(id).unwrap(),
        name: format!("gha-{id}"),
        image: "runner:test".into(),
        launch: Default::default(),
        registration: Registration::JitConfig("eyJqaXQiOiJjb25maWcifQ==".into()),
        labels: vec!["self-hosted".into(), "linux".into(), "x64".into()],
        env: BTreeMap::new(),
        timeout: Duration::from_secs(3600),
        cache: CacheSettings::default(),
        arch: Arch::Amd64,
        owner: "acme".into(),
        repository: Some("app".into()),
    }
}

fn phases(agent: &serde_json::Value) -> Vec<(String, String)> {
    agent["runners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["phase"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn setup() -> Secured {
    Secured::start(Default::default()).await
}

#[tokio::test]
async fn a_controller_restart_loses_no_runner_and_agents_resync() {
    let mut s = setup().await;
    let agent = s.agent("host-1", &[("MAX_RUNNERS", "4")]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let name = AgentName::parse("host-1").unwrap();
    for id in ["r1", "r2"] {
        s.controller
            .registry
            .send(&name, AgentCommand::StartRunner(Box::new(spec(id))))
            .unwrap();
    }
    wait_until(WAIT, "both runners running in the API", || async {
        s.controller.agent("host-1").await.map(|a| phases(&a))
            == Some(vec![
                ("r1".into(), "running".into()),
                ("r2".into(), "running".into()),
            ])
    })
    .await;

    s.controller.stop().await;
    agent
        .wait_status(WAIT, "agent notices the controller is gone", |st| {
            !st.connected
        })
        .await;
    // The runners keep running without a controller, and one finishes meanwhile.
    assert_eq!(agent.runtime.runners().len(), 2);
    agent
        .runtime
        .finish(&RunnerId::parse("r1").unwrap(), 0)
        .await;

    s.controller.restart().await;
    let resynced = agent
        .wait_status(WAIT, "reconnected", |st| st.connected && st.sessions >= 2)
        .await;
    assert_eq!(resynced.agent_name.as_deref(), Some("host-1"));
    wait_until(WAIT, "inventory resynced after restart", || async {
        s.controller.agent("host-1").await.map(|a| phases(&a))
            == Some(vec![
                ("r1".into(), "exited".into()),
                ("r2".into(), "running".into()),
            ])
    })
    .await;
    let r1 = s.controller.agent("host-1").await.unwrap()["runners"][0].clone();
    assert_eq!(r1["exit_code"], 0);

    // A start replayed after the reconnect starts nothing twice.
    s.controller
        .registry
        .send(&name, AgentCommand::StartRunner(Box::new(spec("r2"))))
        .unwrap();
    s.controller
        .registry
        .send(&name, AgentCommand::StartRunner(Box::new(spec("r3"))))
        .unwrap();
    wait_until(WAIT, "r3 running", || async {
        agent
            .runtime
            .runners()
            .iter()
            .any(|r| r.id.as_str() == "r3" && r.phase == RunnerPhase::Running)
    })
    .await;
    let mut starts: Vec<_> = agent
        .runtime
        .start_calls()
        .iter()
        .map(|id| id.to_string())
        .collect();
    starts.sort();
    assert_eq!(
        starts,
        vec!["r1", "r2", "r3"],
        "each runner started exactly once"
    );
}

#[tokio::test]
async fn a_killed_agent_is_marked_disconnected_and_its_runners_are_kept_on_record() {
    let s = setup().await;
    let mut agent = s.agent("doomed", &[("MAX_RUNNERS", "4")]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let name = AgentName::parse("doomed").unwrap();
    s.controller
        .registry
        .send(&name, AgentCommand::StartRunner(Box::new(spec("k1"))))
        .unwrap();
    wait_until(WAIT, "runner running", || async {
        s.controller
            .agent("doomed")
            .await
            .is_some_and(|a| phases(&a) == vec![("k1".into(), "running".into())])
    })
    .await;

    let killed_at = Instant::now();
    agent.kill();
    // Heartbeat timeout is 1 s in these tests: the agent must be gone from the live set by then
    // (a dropped connection is usually noticed at once).
    wait_until(
        Duration::from_secs(5),
        "agent marked disconnected",
        || async {
            s.controller
                .agent("doomed")
                .await
                .is_some_and(|a| a["connected"] == false)
        },
    )
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(3),
        "took {:?}",
        killed_at.elapsed()
    );
    let view = s.controller.agent("doomed").await.unwrap();
    assert!(view["disconnected_at"].is_string());
    assert_eq!(
        phases(&view),
        vec![("k1".to_string(), "running".to_string())]
    );
    assert!(matches!(
        s.controller.registry.send(&name, AgentCommand::Drain),
        Err(controller::registry::SendError::NotConnected(_))
    ));
}

#[tokio::test]
async fn a_silent_agent_is_marked_disconnected_after_the_heartbeat_timeout() {
    let s = setup().await;
    let cert = s.ca.client("silent", &[]);
    let channel = raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), Some(&cert))
        .await
        .unwrap();
    // Keep `tx` alive: the stream stays open but no heartbeat ever comes.
    let (tx, mut inbound) = raw_agent::session(channel, raw_agent::register(pb::Arch::Arm64))
        .await
        .unwrap();
    let registered = inbound.message().await.unwrap().unwrap();
    assert!(matches!(
        registered.msg,
        Some(pb::controller_message::Msg::Registered(ref r)) if r.heartbeat_interval_ms == 200
    ));
    let since = Instant::now();
    assert_eq!(
        s.controller.agent("silent").await.unwrap()["connected"],
        true
    );
    wait_until(WAIT, "silent agent marked disconnected", || async {
        s.controller
            .agent("silent")
            .await
            .is_some_and(|a| a["connected"] == false)
    })
    .await;
    let took = since.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "disconnected before the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let reason = s.controller.agent("silent").await.unwrap()["disconnect_reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("no heartbeat"), "{reason}");
    drop(tx);
}

#[tokio::test]
async fn a_second_connection_with_the_same_identity_replaces_the_first() {
    let s = setup().await;
    let cert = s.ca.client("twin", &[]);
    let tls = AgentTls {
        ca: s.ca.ca_file(),
        cert: cert.cert.clone(),
        key: cert.key.clone(),
    };
    let first = TestAgent::start(&s.controller.grpc_url(), &tls, &[]);
    first
        .wait_status(WAIT, "first connected", |st| st.connected)
        .await;
    let second = TestAgent::start(&s.controller.grpc_url(), &tls, &[("AGENT_ARCH", "arm64")]);
    second
        .wait_status(WAIT, "second connected", |st| st.connected)
        .await;
    let replaced = first
        .wait_status(WAIT, "first told it was replaced", |st| {
            st.last_error
                .as_deref()
                .is_some_and(|e| e.contains("replaced"))
        })
        .await;
    assert!(!replaced.connected);
    let agents = s.controller.agents().await;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["arch"], "arm64");
    let _ = &s.dir;
}

#[tokio::test]
async fn a_drained_agent_takes_no_new_runner_but_keeps_its_own() {
    let s = setup().await;
    let agent = s.agent("to-drain", &[("MAX_RUNNERS", "4")]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let name = AgentName::parse("to-drain").unwrap();
    s.controller
        .registry
        .send(&name, AgentCommand::StartRunner(Box::new(spec("d1"))))
        .unwrap();
    wait_until(WAIT, "d1 running", || async {
        s.controller
            .agent("to-drain")
            .await
            .is_some_and(|a| phases(&a) == vec![("d1".into(), "running".into())])
    })
    .await;
    let (code, body) =
        tests::harness::post_json(&s.controller, "/api/v1/agents/to-drain/drain").await;
    assert_eq!(code, 202, "{body}");
    wait_until(WAIT, "the agent reports draining", || async {
        s.controller
            .agent("to-drain")
            .await
            .is_some_and(|a| a["draining"] == true)
    })
    .await;
    s.controller
        .registry
        .send(&name, AgentCommand::StartRunner(Box::new(spec("d2"))))
        .unwrap();
    wait_until(WAIT, "d2 refused", || async {
        s.controller.agent("to-drain").await.is_some_and(|a| {
            a["runners"].as_array().unwrap().iter().any(|r| {
                r["id"] == "d2" && r["phase"] == "failed" && r["reason"] == "the agent is draining"
            })
        })
    })
    .await;
    assert_eq!(
        agent.runtime.runners().len(),
        1,
        "d1 kept running, d2 never started"
    );
    let (code, _) = tests::harness::post_json(&s.controller, "/api/v1/agents/nobody/drain").await;
    assert_eq!(code, 404);
}

/// A runner the controller does not know is stopped after `STRAY_GRACE` counted from when the
/// controller first saw it, even when its agent re-reports it more often than that (every
/// report carries a fresh `observed_at`: counting from it, the stray was never stopped, as the
/// multi-host test saw after an agent restart).
#[tokio::test]
async fn a_stray_re_reported_more_often_than_the_grace_is_still_stopped() {
    let s = Secured::start([("STRAY_GRACE".to_owned(), "1s".to_owned())].into()).await;
    let cert = s.ca.client("reporter", &[]);
    let channel = raw_agent::channel(&s.controller.grpc_url(), &s.ca.ca_file(), Some(&cert))
        .await
        .unwrap();
    let status = || pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::RunnerStatus(pb::RunnerStatus {
            runner_id: "stray-2".into(),
            name: "gha-stray-2".into(),
            phase: pb::RunnerPhase::Running as i32,
            observed_at_ms: shared::runner::now_ms(),
            ..Default::default()
        })),
    };
    let (tx, mut inbound) = raw_agent::session(channel, raw_agent::register(pb::Arch::Amd64))
        .await
        .unwrap();
    let reporter = tokio::spawn(async move {
        loop {
            if tx.send(status()).await.is_err() {
                return;
            }
            let beat = pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
                    healthy: true,
                    ..Default::default()
                })),
            };
            if tx.send(beat).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(m)) = inbound.message().await {
            if let Some(pb::controller_message::Msg::StopRunner(stop)) = m.msg {
                return stop.runner_id;
            }
        }
        String::new()
    })
    .await
    .expect("the stray is told to stop within the grace and a few activations");
    assert_eq!(stopped, "stray-2");
    reporter.abort();
}

async fn draining(s: &Secured, want: bool) {
    wait_until(
        WAIT,
        &format!("the agent reports draining={want}"),
        || async {
            s.controller
                .agent("kept")
                .await
                .is_some_and(|a| a["connected"] == true && a["draining"] == want)
        },
    )
    .await;
}

/// A drain through the API outlives restarts of the agent and of the controller, until
/// `/undrain`; then the agent takes runners again.
#[tokio::test]
async fn an_api_drain_outlives_restarts_until_undrained() {
    let mut s = setup().await;
    let agent = s.agent("kept", &[("MAX_RUNNERS", "4")]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let (code, body) = tests::harness::post_json(&s.controller, "/api/v1/agents/kept/drain").await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["connected"], true, "{body}");
    draining(&s, true).await;

    // The agent restarts (its supervisor starts it again): drained at once.
    drop(agent);
    wait_until(WAIT, "the agent is gone", || async {
        s.controller
            .agent("kept")
            .await
            .is_some_and(|a| a["connected"] == false)
    })
    .await;
    let agent = s.agent("kept", &[("MAX_RUNNERS", "4")]);
    draining(&s, true).await;
    agent
        .wait_status(WAIT, "the agent itself drains", |st| st.draining)
        .await;

    // The controller restarts, then the agent again: the drain is in the controller's state
    // (neither remembers it in memory any more).
    s.controller.restart().await;
    drop(agent);
    let agent = s.agent("kept", &[("MAX_RUNNERS", "4")]);
    draining(&s, true).await;
    agent
        .wait_status(WAIT, "the agent itself drains", |st| st.draining)
        .await;

    let (code, body) =
        tests::harness::post_json(&s.controller, "/api/v1/agents/kept/undrain").await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["draining"], false, "{body}");
    draining(&s, false).await;
    let name = AgentName::parse("kept").unwrap();
    s.controller
        .registry
        .send(&name, AgentCommand::StartRunner(Box::new(spec("u1"))))
        .unwrap();
    wait_until(WAIT, "u1 running", || async {
        s.controller
            .agent("kept")
            .await
            .is_some_and(|a| phases(&a) == vec![("u1".into(), "running".into())])
    })
    .await;
    let (code, _) = tests::harness::post_json(&s.controller, "/api/v1/agents/nobody/undrain").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_capacity_change_reaches_the_controller_without_a_reconnect() {
    let s = setup().await;
    let agent = s.agent("elastic", &[("MAX_RUNNERS", "4")]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    assert_eq!(
        s.controller.agent("elastic").await.unwrap()["capacity_by_arch"],
        serde_json::json!({ "amd64": 4 })
    );
    // Nodes of both architectures appear (a cluster scaled up); the next heartbeat says so.
    agent
        .runtime
        .set_capacity(Some(vec![(Arch::Amd64, 2), (Arch::Arm64, 9)]));
    wait_until(WAIT, "the new capacity in the API", || async {
        s.controller.agent("elastic").await.unwrap()["capacity_by_arch"]
            == serde_json::json!({ "amd64": 2, "arm64": 4 })
    })
    .await;
    assert_eq!(agent.status.borrow().sessions, 1, "no reconnect was needed");
}
