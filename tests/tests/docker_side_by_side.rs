//! Two `gha-agent` processes side by side on one host (issue 17 §4): each has its own control
//! socket in its own directory, `gha-agent drain --dir` reaches the one it names, and a drained
//! agent restarted by its supervisor stays drained until `gha-agent undrain`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

/// An agent directory as `gha-agent join` writes it.
fn agent_dir(s: &DockerSetup, name: &str) -> PathBuf {
    let dir = s.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let tls = s.tls(name);
    std::fs::copy(&tls.ca, dir.join("ca.pem")).unwrap();
    std::fs::copy(&tls.cert, dir.join("agent.pem")).unwrap();
    std::fs::copy(&tls.key, dir.join("agent-key.pem")).unwrap();
    dir
}

fn spawn(s: &DockerSetup, dir: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.log"))
        .unwrap();
    Child(
        Command::new(gha_agent_binary())
            .current_dir(dir)
            .env_clear()
            .env("CONTROLLER_URL", s.controller.grpc_url())
            .env("TLS_DIR", dir)
            .env("AGENT_ARCH", "amd64")
            .env("RUNTIME", "docker")
            .env("DOCKER_HOST", format!("unix://{DOCKER_SOCKET}"))
            .env("RUNNER_CONTAINER_LABELS", s.run.label_pair())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("gha-agent starts"),
    )
}

fn cli(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(gha_agent_binary())
        .env_clear()
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("gha-agent runs")
}

async fn agent_state(s: &DockerSetup, name: &str) -> Option<(bool, bool)> {
    s.controller
        .agent(name)
        .await
        .map(|a| (a["connected"] == true, a["draining"] == true))
}

#[tokio::test]
async fn two_agents_on_one_host_are_drained_separately_and_a_drain_outlives_a_restart() {
    let s = DockerSetup::start().await;
    let (a_dir, b_dir) = (agent_dir(&s, "side-a"), agent_dir(&s, "side-b"));
    let mut a = spawn(&s, &a_dir);
    let _b = spawn(&s, &b_dir);
    for name in ["side-a", "side-b"] {
        wait_until(WAIT, "both agents connected", || async {
            agent_state(&s, name).await == Some((true, false))
        })
        .await;
    }
    for dir in [&a_dir, &b_dir] {
        assert!(dir.join("control.sock").exists(), "a socket per agent");
    }

    // `drain --dir` reaches agent a only; with no runner it exits at once.
    let out = tokio::task::spawn_blocking({
        let dir = a_dir.clone();
        move || cli(&["drain"], &dir)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("drained"));
    wait_until(WAIT, "agent a exits", || {
        let exited = a.0.try_wait().ok().flatten().is_some();
        async move { exited }
    })
    .await;
    assert_eq!(agent_state(&s, "side-b").await, Some((true, false)));
    assert!(a_dir.join("drained").exists(), "the drain is remembered");

    // Its supervisor restarts it: it comes back drained and stays (no exit loop).
    let mut a = spawn(&s, &a_dir);
    wait_until(WAIT, "agent a back, drained", || async {
        agent_state(&s, "side-a").await == Some((true, true))
    })
    .await;
    assert!(
        a.0.try_wait().unwrap().is_none(),
        "a held agent keeps running"
    );

    let out = cli(&["undrain"], &a_dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("undrained: accepting runners"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_until(WAIT, "agent a accepts runners again", || async {
        agent_state(&s, "side-a").await == Some((true, false))
    })
    .await;
    assert!(!a_dir.join("drained").exists());
    assert_eq!(agent_state(&s, "side-b").await, Some((true, false)));

    // Without a target the CLI asks which agent, instead of guessing a shared path.
    let out = Command::new(gha_agent_binary())
        .env_clear()
        .arg("drain")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir"));
}
