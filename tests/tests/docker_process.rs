//! The `gha-agent` binary itself with `RUNTIME=docker`: its name from its certificate, the
//! Docker settings from its environment, and `gha-agent drain` over its control socket, as an
//! operator would use them; its debug log holds no registration material.

use std::process::Command;
use std::time::{Duration, Instant};

use tests::docker::{DOCKER_SOCKET, DockerSetup, gha_agent_binary};
use tests::harness::wait_until;

const WAIT: Duration = Duration::from_secs(30);

/// Kills the child on drop, so a failing test leaves no agent behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn gha_agent_drain_waits_for_the_last_runner_and_the_agent_exits() {
    let s = DockerSetup::start().await;
    let tls = s.tls("proc-host");
    let socket = s.dir.path().join("agent.sock");
    let binary = gha_agent_binary();
    let log_path = s.dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut agent = Child(
        Command::new(binary)
            .current_dir(s.dir.path())
            .env_clear()
            .env("CONTROLLER_URL", s.controller.grpc_url())
            .env("TLS_CA_FILE", &tls.ca)
            .env("TLS_CERT_FILE", &tls.cert)
            .env("TLS_KEY_FILE", &tls.key)
            .env("AGENT_ARCH", "amd64")
            .env("RUNTIME", "docker")
            .env("DOCKER_HOST", format!("unix://{DOCKER_SOCKET}"))
            .env("RUNNER_NETWORK", "host")
            .env("RUNNER_CONTAINER_LABELS", s.run.label_pair())
            .env("CONTROL_SOCKET", &socket)
            // Everything, bollard's requests included: the log must still hold no secret.
            .env("RUST_LOG", "debug")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("gha-agent starts"),
    );
    wait_until(
        WAIT,
        "the agent registers as proc-host, docker, healthy",
        || async {
            s.controller.agent("proc-host").await.is_some_and(|a| {
                a["connected"] == true && a["runtime"] == "docker" && a["healthy"] == true
            })
        },
    )
    .await;
    let job = s.sim.queue(&["self-hosted"], Duration::from_secs(4));
    let spec = s.sim.jit_spec("p1", &s.image, &["self-hosted"]).await;
    let jit = match &spec.registration {
        shared::command::Registration::JitConfig(jit) => jit.clone(),
        other => panic!("a JIT spec: {other:?}"),
    };
    s.start_runner("proc-host", spec);
    s.wait_runner("proc-host", "p1", "running", WAIT).await;

    let started = Instant::now();
    let drain = tokio::task::spawn_blocking(move || {
        Command::new(gha_agent_binary())
            .args(["drain", "--socket"])
            .arg(&socket)
            .output()
            .expect("gha-agent drain runs")
    });
    wait_until(WAIT, "the controller sees the agent draining", || async {
        s.controller
            .agent("proc-host")
            .await
            .is_some_and(|a| a["draining"] == true)
    })
    .await;
    let out = drain.await.expect("drain task");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"draining: 1 runner(s) left, connected")
    );
    assert_eq!(lines.last(), Some(&"drained"));
    // drain returned because the agent exited, after the job, not before.
    assert_eq!(s.sim.sim.job(job).expect("job").status, "completed");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = agent.0.try_wait().expect("agent status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the agent did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "the drained agent exits cleanly: {status}"
    );
    assert!(started.elapsed() < WAIT);
    let exited = s.wait_runner("proc-host", "p1", "exited", WAIT).await;
    assert_eq!(exited["exit_code"], 0);
    s.wait_no_containers(WAIT).await;

    let log = std::fs::read_to_string(&log_path).expect("agent log");
    assert!(
        log.contains("runner container started"),
        "a debug log was written"
    );
    assert!(
        !log.contains(&jit),
        "the JIT config reached the agent's log"
    );
    assert!(!log.contains(&s.sim.pat), "the PAT reached the agent's log");
}
