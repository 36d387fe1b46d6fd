//! Two installations on one Docker host (issue 17 §4): a staging and a production controller,
//! each with its own CA, whose agents share a name and the engine. Ownership labels carry the
//! installation (the CA's fingerprint), so neither agent adopts, reports or removes the other's
//! runner containers as strays.

use std::time::Duration;

use tests::docker::{DockerAgent, DockerSetup};
use tests::harness::{AgentTls, TestController, controller_env};
use tests::pki::TestCa;

const WAIT: Duration = Duration::from_secs(30);

fn runner_count(agent: &serde_json::Value) -> usize {
    agent["runners"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn agents_of_two_installations_sharing_a_name_never_touch_each_others_runners() {
    // Production: the usual set-up, one runner running on agent host-1.
    let prod = DockerSetup::start().await;
    let prod_agent = prod.agent("host-1", &[("STRAY_GRACE", "1s")]);
    prod_agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let spec = prod.sim.jit_spec("r-prod", &prod.image, &["idle"]).await;
    prod.start_runner("host-1", spec);
    prod.wait_runner("host-1", "r-prod", "running", WAIT).await;

    // Staging: its own CA and state, the same CONTROLLER_ID (the default) and agent name.
    let ca = TestCa::new(&prod.dir.path().join("pki-staging"), "staging CA");
    let server = ca.server();
    let mut env = controller_env(
        &prod.dir.path().join("state-staging"),
        &ca.ca_file(),
        &server,
    );
    env.insert("STRAY_GRACE".into(), "1s".into());
    let staging = TestController::start(env).await;
    let cert = ca.client("host-1", &[]);
    let staging_agent = DockerAgent::start(
        &staging.grpc_url(),
        &AgentTls {
            ca: ca.ca_file(),
            cert: cert.cert,
            key: cert.key,
        },
        "host-1",
        &prod.run,
        &[("STRAY_GRACE", "1s")],
    );
    staging_agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    assert_eq!(
        staging_agent.status.borrow().active_runners,
        0,
        "production's runner is not adopted by staging's agent"
    );

    // Several of both grace periods (1 s each) pass: production's runner stays.
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        let seen = staging.agent("host-1").await.expect("staging agent");
        assert_eq!(runner_count(&seen), 0, "staging sees no runner: {seen:#}");
        let runner = prod.runner("host-1", "r-prod").await.expect("r-prod");
        assert_eq!(runner["phase"], "running", "{runner:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let running = prod.run.containers().await;
    assert_eq!(running.len(), 1, "production's container is still there");

    // Production still owns it: stopping it works and leaves nothing behind.
    prod.send(
        "host-1",
        shared::command::AgentCommand::StopRunner {
            id: shared::ids::RunnerId::parse("r-prod").unwrap(),
            reason: "test over".into(),
        },
    );
    prod.wait_runner("host-1", "r-prod", "exited", WAIT).await;
    prod.wait_no_containers(WAIT).await;
}
