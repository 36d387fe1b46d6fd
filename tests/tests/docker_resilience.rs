//! The Docker runtime survives what a host throws at it: the agent killed or stopped mid-run
//! (its containers adopted, never duplicated, never stopped), `gha-agent drain`, the engine
//! briefly unreachable, and two agents sharing one engine.

use std::time::Duration;

use shared::command::AgentCommand;
use shared::ids::RunnerId;
use tests::docker::{Census, DockerSetup, SocketProxy};
use tests::harness::wait_until;

const WAIT: Duration = Duration::from_secs(30);

fn stop(id: &str) -> AgentCommand {
    AgentCommand::StopRunner {
        id: RunnerId::parse(id).unwrap(),
        reason: "test over".into(),
    }
}

fn runner_ids(agent: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = agent["runners"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[tokio::test]
async fn an_agent_killed_mid_run_adopts_its_containers_without_duplicating_them() {
    let s = DockerSetup::start().await;
    let census = Census::start(&s.run).await;
    let mut first = s.agent("host-adopt", &[]);
    first
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let jobs: Vec<u64> = (0..2)
        .map(|_| s.sim.queue(&["self-hosted"], Duration::from_secs(6)))
        .collect();
    let r1 = s.sim.jit_spec("a1", &s.image, &["self-hosted"]).await;
    let r2 = s.sim.jit_spec("a2", &s.image, &["self-hosted"]).await;
    s.start_runner("host-adopt", r1.clone());
    s.start_runner("host-adopt", r2);
    for id in ["a1", "a2"] {
        s.wait_runner("host-adopt", id, "running", WAIT).await;
    }
    let before: Vec<_> = s.run.containers().await.into_iter().map(|c| c.id).collect();
    assert_eq!(before.len(), 2);

    first.kill();
    let second = s.agent("host-adopt", &[]);
    second
        .wait_status(WAIT, "reconnected", |st| st.connected)
        .await;
    assert_eq!(
        second.status.borrow().active_runners,
        2,
        "both running containers adopted"
    );
    // A start replayed for an adopted runner starts nothing; a new one does (commands are
    // handled in order, so once a3 runs the replay has been handled).
    s.start_runner("host-adopt", r1);
    let r3 = s.sim.jit_spec("a3", &s.image, &["idle"]).await;
    s.start_runner("host-adopt", r3);
    s.wait_runner("host-adopt", "a3", "running", WAIT).await;
    // The census follows its own event stream: it may see a3's start after the agent did.
    // Events come in order, so once it has a3 it has every start before it (a duplicate too).
    wait_until(WAIT, "the census sees a3 start", || async {
        census.started().iter().any(|c| c.name == "/gha-a3")
    })
    .await;
    let mut names: Vec<String> = census.started().into_iter().map(|c| c.name).collect();
    names.sort();
    assert_eq!(names, vec!["/gha-a1", "/gha-a2", "/gha-a3"], "no duplicate");

    for id in ["a1", "a2"] {
        let exited = s.wait_runner("host-adopt", id, "exited", WAIT).await;
        assert_eq!(exited["exit_code"], 0, "{exited}");
    }
    for job in jobs {
        assert_eq!(s.sim.sim.job(job).expect("job").status, "completed");
    }
    s.send("host-adopt", stop("a3"));
    s.wait_runner("host-adopt", "a3", "exited", WAIT).await;
    s.wait_no_containers(WAIT).await;
    assert_eq!(census.max_alive(), 3);
}

#[tokio::test]
async fn stopping_the_agent_never_stops_runners_and_drain_exits_after_the_last_one() {
    let s = DockerSetup::start().await;
    let mut first = s.agent("host-drain", &[]);
    first
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let job = s.sim.queue(&["self-hosted"], Duration::from_secs(5)); // long enough to drain while it runs
    let spec = s.sim.jit_spec("d1", &s.image, &["self-hosted"]).await;
    s.start_runner("host-drain", spec);
    s.wait_runner("host-drain", "d1", "running", WAIT).await;

    // A graceful stop (SIGTERM) of the agent leaves the runner running.
    first.stop().await;
    let left = s.run.containers().await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].state,
        Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
    );

    // The next agent adopts it; `gha-agent drain` talks to its control socket.
    let mut second = s.agent("host-drain", &[]);
    second
        .wait_status(WAIT, "adopted and connected", |st| {
            st.connected && st.active_runners == 1
        })
        .await;
    let socket = s.dir.path().join("control.sock");
    let listener = agent::control::bind(&socket).await.expect("control socket");
    let done = tokio_util::sync::CancellationToken::new();
    tokio::spawn(agent::control::serve(
        listener,
        second.drain.clone(),
        second.status.clone(),
        done.clone(),
    ));
    let drain = tokio::spawn({
        let socket = socket.clone();
        async move {
            let mut lines = Vec::new();
            agent::control::request_drain(&socket, true, |l| lines.push(l.to_owned()))
                .await
                .map(|()| lines)
        }
    });
    second.wait_status(WAIT, "draining", |st| st.draining).await;
    wait_until(WAIT, "the controller sees the agent draining", || async {
        s.controller
            .agent("host-drain")
            .await
            .is_some_and(|a| a["draining"] == true)
    })
    .await;
    let refused = s.sim.jit_spec("d2", &s.image, &["self-hosted"]).await;
    s.start_runner("host-drain", refused);
    let failed = s.wait_runner("host-drain", "d2", "failed", WAIT).await;
    assert_eq!(failed["reason"], "the agent is draining");

    second
        .exited(WAIT)
        .await
        .expect("the drained agent exits cleanly");
    done.cancel();
    let lines = drain.await.expect("drain task").expect("drain request");
    assert_eq!(
        lines.first().map(String::as_str),
        Some("draining: 1 runner(s) left, connected")
    );
    assert_eq!(lines.last().map(String::as_str), Some("drained"));
    // The runner was not stopped: it finished its job.
    let exited = s.wait_runner("host-drain", "d1", "exited", WAIT).await;
    assert_eq!(exited["exit_code"], 0);
    assert_eq!(s.sim.sim.job(job).expect("job").conclusion, Some("success"));
    s.wait_no_containers(WAIT).await;
}

#[tokio::test]
async fn a_runner_started_before_the_engine_registered_the_event_subscription_is_still_seen() {
    // The engine registers an event subscription some time after the agent asks for it (a
    // busy engine, a slow socket): here the proxy holds the request for 3 s. A runner that
    // starts meanwhile must still be reported running (its `start` is replayed), not stay
    // "starting" until it exits.
    let s = DockerSetup::start().await;
    let socket = s.dir.path().join("docker-slow-events.sock");
    let _proxy = SocketProxy::start_with_events_delay(
        &socket,
        std::path::Path::new("/var/run/docker.sock"),
        Duration::from_secs(3),
    );
    let host = format!("unix://{}", socket.display());
    let agent = s.agent("host-slow", &[("DOCKER_HOST", host.as_str())]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let spec = s.sim.jit_spec("w1", &s.image, &["idle"]).await;
    s.start_runner("host-slow", spec);
    s.wait_runner("host-slow", "w1", "running", WAIT).await;
    s.send("host-slow", stop("w1"));
    s.wait_runner("host-slow", "w1", "exited", WAIT).await;
    s.wait_no_containers(WAIT).await;
}

#[tokio::test]
async fn an_engine_briefly_unreachable_is_reported_and_recovered_from() {
    let s = DockerSetup::start().await;
    let socket = s.dir.path().join("docker-proxy.sock");
    let mut proxy = SocketProxy::start(&socket, std::path::Path::new("/var/run/docker.sock"));
    let agent = s.agent(
        "host-proxy",
        &[("DOCKER_HOST", proxy.docker_host().as_str())],
    );
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let job = s.sim.queue(&["self-hosted"], Duration::from_secs(2));
    let spec = s.sim.jit_spec("p1", &s.image, &["self-hosted"]).await;
    s.start_runner("host-proxy", spec);
    s.wait_runner("host-proxy", "p1", "running", WAIT).await;

    proxy.pause();
    wait_until(WAIT, "the controller sees the agent unhealthy", || async {
        s.controller
            .agent("host-proxy")
            .await
            .is_some_and(|a| a["healthy"] == false)
    })
    .await;
    // Meanwhile the runner finishes its job; the agent cannot see it yet.
    wait_until(
        WAIT,
        "the job completes while the engine is away",
        || async { s.sim.sim.job(job).is_some_and(|j| j.status == "completed") },
    )
    .await;
    wait_until(WAIT, "the container has exited", || async {
        s.run
            .containers()
            .await
            .iter()
            .all(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::EXITED))
    })
    .await;
    assert_eq!(
        s.runner("host-proxy", "p1").await.expect("p1")["phase"],
        "running",
        "nothing reported while the engine was unreachable"
    );

    proxy.resume();
    let exited = s.wait_runner("host-proxy", "p1", "exited", WAIT).await;
    assert_eq!(
        exited["exit_code"], 0,
        "the missed exit is replayed: {exited}"
    );
    wait_until(WAIT, "healthy again", || async {
        s.controller
            .agent("host-proxy")
            .await
            .is_some_and(|a| a["healthy"] == true)
    })
    .await;
    s.wait_no_containers(WAIT).await;

    // And it takes new runners again.
    let job = s.sim.queue(&["self-hosted"], Duration::ZERO);
    let spec = s.sim.jit_spec("p2", &s.image, &["self-hosted"]).await;
    s.start_runner("host-proxy", spec);
    s.wait_runner("host-proxy", "p2", "exited", WAIT).await;
    assert_eq!(s.sim.sim.job(job).expect("job").status, "completed");
    s.wait_no_containers(WAIT).await;
}

#[tokio::test]
async fn two_agents_on_one_engine_only_ever_touch_their_own_containers() {
    let s = DockerSetup::start().await;
    let mut amd = s.agent("amd-host", &[]);
    // An arm64 agent in name only: it runs the host's test image, so its check is off.
    let arm = s.agent(
        "arm-host",
        &[("AGENT_ARCH", "arm64"), ("IMAGE_PLATFORM_CHECK", "false")],
    );
    for a in [&amd, &arm] {
        a.wait_status(WAIT, "connected", |st| st.connected).await;
    }
    assert_eq!(
        s.controller.agent("arm-host").await.expect("arm-host")["arch"],
        "arm64"
    );
    let a1 = s.sim.jit_spec("x1", &s.image, &["idle"]).await;
    let mut b1 = s.sim.jit_spec("y1", &s.image, &["idle"]).await;
    b1.arch = shared::arch::Arch::Arm64;
    s.start_runner("amd-host", a1);
    s.start_runner("arm-host", b1);
    s.wait_runner("amd-host", "x1", "running", WAIT).await;
    s.wait_runner("arm-host", "y1", "running", WAIT).await;

    // A restarted agent adopts its own container and not its neighbour's.
    amd.kill();
    let amd = s.agent("amd-host", &[]);
    amd.wait_status(WAIT, "reconnected", |st| st.connected)
        .await;
    assert_eq!(amd.status.borrow().active_runners, 1);
    assert_eq!(
        runner_ids(&s.controller.agent("amd-host").await.expect("amd")),
        vec!["x1"]
    );
    assert_eq!(
        runner_ids(&s.controller.agent("arm-host").await.expect("arm")),
        vec!["y1"]
    );
    // Stopping on one agent never touches the other's runner.
    s.send("amd-host", stop("x1"));
    s.wait_runner("amd-host", "x1", "exited", WAIT).await;
    assert_eq!(
        s.runner("arm-host", "y1").await.expect("y1")["phase"],
        "running"
    );
    s.send("arm-host", stop("y1"));
    s.wait_runner("arm-host", "y1", "exited", WAIT).await;
    s.wait_no_containers(WAIT).await;
}

#[tokio::test]
async fn a_runner_that_exits_while_its_agent_is_down_is_reported_when_it_returns() {
    let s = DockerSetup::start().await;
    let mut first = s.agent("host-down", &[]);
    first
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let job = s.sim.queue(&["self-hosted"], Duration::from_secs(1));
    let spec = s.sim.jit_spec("e1", &s.image, &["self-hosted"]).await;
    s.start_runner("host-down", spec);
    s.wait_runner("host-down", "e1", "running", WAIT).await;
    first.kill();
    wait_until(WAIT, "the runner exits with no agent watching", || async {
        s.run
            .containers()
            .await
            .iter()
            .all(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::EXITED))
    })
    .await;
    assert_eq!(
        s.run.containers().await.len(),
        1,
        "left for the agent to report"
    );

    let second = s.agent("host-down", &[]);
    second.wait_status(WAIT, "back", |st| st.connected).await;
    let exited = s.wait_runner("host-down", "e1", "exited", WAIT).await;
    assert_eq!(exited["exit_code"], 0, "the exit code survives: {exited}");
    assert_eq!(s.sim.sim.job(job).expect("job").status, "completed");
    s.wait_no_containers(WAIT).await;
    assert_eq!(second.status.borrow().active_runners, 0);
}

#[tokio::test]
async fn a_controller_restart_mid_run_loses_no_runner_and_no_exit() {
    let mut s = DockerSetup::start().await;
    let agent = s.agent("host-ctl", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let short = s
        .sim
        .queue(&["self-hosted", "short"], Duration::from_secs(1));
    let long = s
        .sim
        .queue(&["self-hosted", "long"], Duration::from_secs(5));
    let r1 = s
        .sim
        .jit_spec("c1", &s.image, &["self-hosted", "short"])
        .await;
    let r2 = s
        .sim
        .jit_spec("c2", &s.image, &["self-hosted", "long"])
        .await;
    s.start_runner("host-ctl", r1);
    s.start_runner("host-ctl", r2);
    for id in ["c1", "c2"] {
        s.wait_runner("host-ctl", id, "running", WAIT).await;
    }

    s.controller.stop().await;
    // c1 finishes while there is no controller to tell.
    wait_until(WAIT, "the short job completes", || async {
        s.sim
            .sim
            .job(short)
            .is_some_and(|j| j.status == "completed")
    })
    .await;
    s.controller.restart().await;
    let c1 = s.wait_runner("host-ctl", "c1", "exited", WAIT).await;
    assert_eq!(c1["exit_code"], 0, "the exit that happened meanwhile: {c1}");
    assert_eq!(
        s.runner("host-ctl", "c2").await.expect("c2 known again")["phase"],
        "running"
    );
    let c2 = s.wait_runner("host-ctl", "c2", "exited", WAIT).await;
    assert_eq!(c2["exit_code"], 0);
    assert_eq!(s.sim.sim.job(long).expect("job").status, "completed");
    s.wait_no_containers(WAIT).await;
}
