//! The Docker runtime on the real engine: runner containers of the locally built test runner
//! image, started by a real agent on a real controller's command, registering with the GitHub
//! simulator, running their job and being cleaned up. (The scheduler-driven end-to-end tests
//! come with issue 4: these drive agents with `registry.send`.)

use std::time::{Duration, Instant};

use shared::command::{AgentCommand, RunnerSpec};
use shared::ids::RunnerId;
use tests::docker::{Census, DockerSetup, RunnerLayout, SimRunners, SocketProxy, test_network};
use tests::harness::wait_until;

const WAIT: Duration = Duration::from_secs(30);

fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

#[tokio::test]
async fn a_jit_runner_runs_its_job_reports_its_exit_and_is_removed() {
    let s = DockerSetup::start().await;
    let official = s.run.runner_image_of(RunnerLayout::Official).await;
    let census = Census::start(&s.run).await;
    let agent = s.agent("host-jit", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let job = s
        .sim
        .queue(&["self-hosted", "linux"], Duration::from_millis(1500));
    let spec = s
        .sim
        .jit_spec("r-jit", &official, &["self-hosted", "linux"])
        .await;
    let jit = match &spec.registration {
        shared::command::Registration::JitConfig(j) => j.clone(),
        _ => unreachable!(),
    };
    s.start_runner("host-jit", spec);
    s.wait_runner("host-jit", "r-jit", "running", WAIT).await;
    let exited = s.wait_runner("host-jit", "r-jit", "exited", WAIT).await;
    assert_eq!(exited["exit_code"], 0, "{exited}");
    let job = s.sim.sim.job(job).expect("job");
    assert_eq!(job.status, "completed");
    assert_eq!(job.conclusion, Some("success"));
    assert_eq!(
        job.runner.map(|(_, name)| name).as_deref(),
        Some("gha-r-jit")
    );
    s.wait_no_containers(WAIT).await;

    // The official image's convention: run.sh with the JIT config in the environment.
    let started = census.started();
    assert_eq!(started.len(), 1);
    let c = &started[0];
    assert_eq!(c.name, "/gha-r-jit");
    assert_eq!(
        env_value(&c.env, "ACTIONS_RUNNER_INPUT_JITCONFIG"),
        Some(jit.as_str())
    );
    assert!(
        c.cmd.iter().any(|a| a == "/home/runner/run.sh"),
        "{:?}",
        c.cmd
    );
    for (key, value) in [
        ("dev.gha-scaler.managed-by", "gha-scaler"),
        ("dev.gha-scaler.agent", "host-jit"),
        ("dev.gha-scaler.owner", "acme"),
        ("dev.gha-scaler.runner-id", "r-jit"),
    ] {
        assert_eq!(c.labels.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert_eq!(
        c.labels.get("dev.gha-scaler.controller"),
        Some(&format!("ctl-{}", s.run.id))
    );
    // The default sandbox, as the engine recorded it (and the job still ran under it).
    let hc = c.host_config.clone().expect("host config");
    assert_eq!(
        hc.security_opt,
        Some(vec!["no-new-privileges:true".to_owned()])
    );
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    let kept = hc.cap_add.clone().unwrap_or_default();
    assert!(kept.iter().any(|c| c.ends_with("SETUID")), "{kept:?}");
    assert!(!kept.iter().any(|c| c.ends_with("NET_RAW")), "{kept:?}");
    assert_ne!(hc.privileged, Some(true));
    assert_eq!(hc.pids_limit, Some(4096));
    assert_eq!(hc.memory, Some(7 << 30));
    let cpus = hc.nano_cpus.expect("a CPU limit by default");
    assert!(cpus > 0 && cpus <= 2_000_000_000, "{cpus}");
    census.assert_never_given(&s.sim.pat);
}

#[tokio::test]
async fn a_registration_token_runner_follows_the_myoung34_convention() {
    let s = DockerSetup::start().await;
    let census = Census::start(&s.run).await;
    let agent = s.agent("host-token", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let job = s
        .sim
        .queue(&["self-hosted", "gpu"], Duration::from_millis(300));
    let spec = s
        .sim
        .token_spec("r-tok", &s.image, &["self-hosted", "gpu"])
        .await;
    s.start_runner("host-token", spec);
    let exited = s.wait_runner("host-token", "r-tok", "exited", WAIT).await;
    assert_eq!(exited["exit_code"], 0, "{exited}");
    assert_eq!(s.sim.sim.job(job).expect("job").status, "completed");
    assert!(
        s.sim.sim.runners().is_empty(),
        "the ephemeral runner is gone from GitHub after its job"
    );
    s.wait_no_containers(WAIT).await;

    let c = &census.started()[0];
    assert!(env_value(&c.env, "RUNNER_TOKEN").is_some());
    assert_eq!(
        env_value(&c.env, "REPO_URL"),
        Some(s.sim.repo_url().as_str())
    );
    assert_eq!(env_value(&c.env, "RUNNER_NAME"), Some("gha-r-tok"));
    assert_eq!(env_value(&c.env, "LABELS"), Some("self-hosted,gpu"));
    assert_eq!(env_value(&c.env, "EPHEMERAL"), Some("1"));
    assert_eq!(env_value(&c.env, "DISABLE_AUTO_UPDATE"), Some("1"));
    assert!(env_value(&c.env, "ACTIONS_RUNNER_INPUT_JITCONFIG").is_none());
    census.assert_never_given(&s.sim.pat);
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_runner_with_a_clear_reason() {
    let s = DockerSetup::start().await;
    let agent = s.agent("host-pull", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    // A registry on a closed loopback port: the pull fails at once, nothing leaves the host.
    let spec = s
        .sim
        .jit_spec(
            "r-pull",
            "localhost:1/missing/runner:nope",
            &["self-hosted"],
        )
        .await;
    s.start_runner("host-pull", spec);
    let failed = s.wait_runner("host-pull", "r-pull", "failed", WAIT).await;
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot pull image localhost:1/missing/runner:nope"),
        "{reason}"
    );
    assert!(s.run.containers().await.is_empty());
}

#[tokio::test]
async fn a_runner_past_its_timeout_is_stopped_and_one_stopped_by_the_controller_too() {
    let s = DockerSetup::start().await;
    let agent = s.agent("host-stop", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    // No job is queued: both runners wait for work, like real ones.
    let mut slow = s.sim.jit_spec("r-slow", &s.image, &["idle"]).await;
    slow.timeout = Duration::from_secs(2);
    let idle = s.sim.jit_spec("r-idle", &s.image, &["idle"]).await;
    let started = Instant::now();
    s.start_runner("host-stop", slow);
    s.start_runner("host-stop", idle);
    s.wait_runner("host-stop", "r-idle", "running", WAIT).await;
    s.send(
        "host-stop",
        AgentCommand::StopRunner {
            id: RunnerId::parse("r-idle").unwrap(),
            reason: "job cancelled".into(),
        },
    );
    let stopped = s.wait_runner("host-stop", "r-idle", "exited", WAIT).await;
    assert_eq!(stopped["reason"], "stopped by the controller", "{stopped}");
    assert_eq!(stopped["exit_code"], 143, "SIGTERM ends it: {stopped}");

    let timed_out = s.wait_runner("host-stop", "r-slow", "exited", WAIT).await;
    let took = started.elapsed();
    assert!(
        timed_out["reason"]
            .as_str()
            .is_some_and(|r| r.contains("timed out")),
        "{timed_out}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(12),
        "timed out after {took:?}"
    );
    s.wait_no_containers(WAIT).await;
}

#[tokio::test]
async fn limits_network_and_exclusive_cache_volumes_are_applied() {
    let s = DockerSetup::start().await;
    let (network, gateway) = test_network(&s.run).await;
    // Runners on the test's own bridge network reach a simulator bound on its gateway.
    let sim = SimRunners::start_on(gateway).await;
    let census = Census::start(&s.run).await;
    let agent = s.agent(
        "host-limits",
        &[
            ("RUNNER_NETWORK", network.as_str()),
            ("RUNNER_CPUS", "0.5"),
            ("RUNNER_MEMORY", "64m"),
        ],
    );
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let cached = |mut spec: RunnerSpec| {
        spec.cache.enabled = true;
        spec
    };
    for id in ["c1", "c2"] {
        let spec = cached(sim.jit_spec(id, &s.image, &["idle"]).await);
        s.start_runner("host-limits", spec);
    }
    for id in ["c1", "c2"] {
        s.wait_runner("host-limits", id, "running", WAIT).await;
    }
    wait_until(WAIT, "both containers inspected", || async {
        census.started().len() == 2
    })
    .await;
    let mut volumes = Vec::new();
    for c in census.started() {
        let hc = c.host_config.clone().expect("host config");
        assert_eq!(hc.network_mode.as_deref(), Some(network.as_str()));
        assert_eq!(hc.nano_cpus, Some(500_000_000));
        assert_eq!(hc.memory, Some(64 << 20));
        assert_eq!(c.mounts.len(), 1, "{:?}", c.mounts);
        assert_eq!(
            c.mounts[0].destination.as_deref(),
            Some("/opt/hostedtoolcache")
        );
        assert_eq!(
            env_value(&c.env, "RUNNER_TOOL_CACHE"),
            Some("/opt/hostedtoolcache")
        );
        volumes.push(c.mounts[0].name.clone().expect("a named volume"));
    }
    volumes.sort();
    let prefix = format!("gha-test-{}-acme.app-amd64-toolcache", s.run.id);
    assert_eq!(
        volumes,
        vec![format!("{prefix}-0"), format!("{prefix}-1")],
        "concurrent runners never share a cache volume"
    );
    // Idle runners stay up on the network (they reach the simulator) until stopped.
    assert_eq!(s.run.containers().await.len(), 2);
    for id in ["c1", "c2"] {
        s.send(
            "host-limits",
            AgentCommand::StopRunner {
                id: RunnerId::parse(id).unwrap(),
                reason: "test".into(),
            },
        );
    }
    for id in ["c1", "c2"] {
        s.wait_runner("host-limits", id, "exited", WAIT).await;
    }
    s.wait_no_containers(WAIT).await;
    // The caches outlive their runners, and the next runner takes the first free slot.
    let mut kept = s.run.volumes().await;
    kept.sort();
    assert_eq!(kept, vec![format!("{prefix}-0"), format!("{prefix}-1")]);
    let job = sim.queue(&["self-hosted"], Duration::ZERO);
    s.start_runner(
        "host-limits",
        cached(sim.jit_spec("c3", &s.image, &["self-hosted"]).await),
    );
    s.wait_runner("host-limits", "c3", "exited", WAIT).await;
    assert_eq!(sim.sim.job(job).expect("job").status, "completed");
    let c3 = census.started().pop().expect("c3 inspected");
    assert_eq!(
        c3.mounts[0].name.as_deref(),
        Some(format!("{prefix}-0").as_str())
    );
}

#[tokio::test]
async fn an_unreachable_engine_makes_the_agent_unhealthy_until_it_is_back() {
    let s = DockerSetup::start().await;
    let socket = s.dir.path().join("engine.sock");
    let host = format!("unix://{}", socket.display());
    let agent = s.agent("host-noengine", &[("DOCKER_HOST", host.as_str())]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    wait_until(WAIT, "the controller sees the agent unhealthy", || async {
        s.controller.agent("host-noengine").await.is_some_and(|a| {
            a["healthy"] == false
                && a["unhealthy_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("unreachable"))
        })
    })
    .await;
    let spec = s.sim.jit_spec("r-none", &s.image, &["self-hosted"]).await;
    s.start_runner("host-noengine", spec);
    let failed = s
        .wait_runner("host-noengine", "r-none", "failed", WAIT)
        .await;
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("is unreachable")),
        "{failed}"
    );
    assert!(!agent.has_exited(), "the agent keeps running");

    let _engine = SocketProxy::start(&socket, std::path::Path::new("/var/run/docker.sock"));
    wait_until(WAIT, "healthy again once the engine answers", || async {
        s.controller
            .agent("host-noengine")
            .await
            .is_some_and(|a| a["healthy"] == true)
    })
    .await;
    let job = s.sim.queue(&["self-hosted"], Duration::ZERO);
    let spec = s.sim.jit_spec("r-back", &s.image, &["self-hosted"]).await;
    s.start_runner("host-noengine", spec);
    let exited = s
        .wait_runner("host-noengine", "r-back", "exited", WAIT)
        .await;
    assert_eq!(exited["exit_code"], 0);
    assert_eq!(s.sim.sim.job(job).expect("job").status, "completed");
    s.wait_no_containers(WAIT).await;
}

#[tokio::test]
async fn containers_of_another_controller_are_removed_after_the_grace_period() {
    let s = DockerSetup::start().await;
    let mut first = s.agent("host-stray", &[]);
    first
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let spec = s.sim.jit_spec("r-old", &s.image, &["idle"]).await;
    s.start_runner("host-stray", spec);
    s.wait_runner("host-stray", "r-old", "running", WAIT).await;
    first.kill();

    // The host now answers to another controller (a new install, its state lost).
    let server = s.ca.server();
    let mut env =
        tests::harness::controller_env(&s.dir.path().join("state-2"), &s.ca.ca_file(), &server);
    env.insert("CONTROLLER_ID".into(), "ctl-new".into());
    let other = tests::harness::TestController::start(env).await;
    let second = tests::docker::DockerAgent::start(
        &other.grpc_url(),
        &s.tls("host-stray"),
        "host-stray",
        &s.run,
        &[("STRAY_GRACE", "1s")],
    );
    second
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    wait_until(WAIT, "the stray is stopped and reported", || async {
        other.agent("host-stray").await.is_some_and(|a| {
            a["runners"].as_array().is_some_and(|rs| {
                rs.iter().any(|r| {
                    r["id"] == "r-old"
                        && r["phase"] == "exited"
                        && r["reason"]
                            .as_str()
                            .is_some_and(|why| why.contains("stray"))
                })
            })
        })
    })
    .await;
    s.wait_no_containers(WAIT).await;
}

#[tokio::test]
async fn a_runner_stopped_while_it_is_starting_leaves_no_container_running() {
    let s = DockerSetup::start().await;
    let agent = s.agent("host-race", &[]);
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    // Stops right behind the starts: some land before the container exists, some after.
    let ids = ["q1", "q2", "q3", "q4"];
    for (i, id) in ids.iter().enumerate() {
        let spec = s.sim.jit_spec(id, &s.image, &["idle"]).await;
        s.start_runner("host-race", spec);
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        s.send(
            "host-race",
            AgentCommand::StopRunner {
                id: RunnerId::parse(id).unwrap(),
                reason: "cancelled".into(),
            },
        );
    }
    for id in ids {
        wait_until(WAIT, "every runner ends", || async {
            s.runner("host-race", id)
                .await
                .is_some_and(|r| r["phase"] == "exited" || r["phase"] == "failed")
        })
        .await;
    }
    // Idle runners never exit by themselves: any container still here escaped the stop.
    s.wait_no_containers(WAIT).await;
}
