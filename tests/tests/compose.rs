//! The shipped compose file as a user runs it (issue 13 §2, issue 17 §1 and §5): the images
//! of `deploy/build-images.sh`, a seed-style `.env` beside the project, `docker compose up -d`,
//! and the controller's API says a local agent enrolled by itself; restarts (SIGKILL and a
//! restart) keep both identities. Plus what compose itself must refuse or merge: a missing
//! `.env` names the example to copy, `TLS_SANS` from `.env` is merged with `controller`, and the
//! published ports follow `PORT`/`GRPC_PORT`.
//!
//! The GitHub simulator runs as its own image (`github-sim`), added by a second compose file in
//! the test's directory; `GITHUB_API_URL` in the `.env` points at it, as a user's would at GitHub.
//! Each run has its own project name, image tag, ports and `CONTROLLER_ID`, so two runs can share
//! an engine; a guard runs `down -v` and removes the images even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tests::docker::TestRun;
use tests::harness::wait_until;
use tests::images::{Images, build_images};
use tests::process::free_port;

const WAIT: Duration = Duration::from_secs(120);

fn repo_compose_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker-compose.yml")
}

/// `docker compose` when the plugin is there, else Debian's `docker-compose`.
fn compose_program() -> Vec<&'static str> {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if plugin {
        vec!["docker", "compose"]
    } else {
        vec!["docker-compose"]
    }
}

/// One compose project in a directory of its own, with only the environment a user's shell
/// would pass (none of the test process's variables).
struct Project {
    name: String,
    dir: tempfile::TempDir,
    files: Vec<PathBuf>,
}

impl Project {
    fn new(run: &TestRun) -> Self {
        Self {
            name: format!("gha-test-{}", run.id),
            dir: tempfile::tempdir().expect("project dir"),
            files: vec![repo_compose_file()],
        }
    }

    fn compose(&self, args: &[&str]) -> Output {
        let program = compose_program();
        let mut command = Command::new(program[0]);
        command.args(&program[1..]);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .args(["-p", &self.name, "--project-directory"])
            .arg(self.dir.path());
        for file in &self.files {
            command.arg("-f").arg(file);
        }
        command.args(args).output().expect("compose runs")
    }

    fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "compose {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write project file");
        path
    }

    fn logs(&self, service: &str) -> String {
        let out = self.compose(&["logs", "--no-color", service]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// Takes the project down with its volumes, even after a failure.
struct Down<'a>(&'a Project);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

#[test]
fn a_missing_env_file_says_to_copy_the_example() {
    let run = TestRun::new();
    let project = Project::new(&run);
    let out = project.compose(&["config"]);
    assert!(
        !out.status.success(),
        "compose accepted a project without .env"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("copy deploy/.env.example to .env"),
        "compose's message: {stderr}"
    );
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/.env.example")
            .is_file(),
        "the example it names is shipped"
    );
}

#[test]
fn tls_sans_from_env_are_merged_and_ports_follow_port_and_grpc_port() {
    let run = TestRun::new();
    let project = Project::new(&run);
    project.write(
        ".env",
        "GITHUB_TOKEN=x\nREPO_OWNER=acme\nREPO_NAME=app\nWEBHOOK_SECRET=s\nPORT=18123\nGRPC_PORT=19443\nTLS_SANS=ci.example.com,10.0.0.5\n",
    );
    let text = project.compose_ok(&["config"]);
    let config: serde_json::Value = serde_saphyr::from_str(&text).expect("compose config YAML");
    let controller = &config["services"]["controller"];
    assert_eq!(
        controller["environment"]["TLS_SANS"], "controller,ci.example.com,10.0.0.5",
        "merged, not replaced"
    );
    let ports: Vec<(String, String)> = controller["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            let s = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (s(&p["published"]), s(&p["target"]))
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            ("18123".to_owned(), "18123".to_owned()),
            ("19443".to_owned(), "19443".to_owned())
        ]
    );
    assert_eq!(
        config["services"]["agent"]["environment"]["CONTROLLER_URL"],
        "https://controller:19443"
    );

    // Without TLS_SANS the certificate still names `controller` (and localhost).
    project.write(
        ".env",
        "GITHUB_TOKEN=x\nREPO_OWNER=acme\nREPO_NAME=app\nWEBHOOK_SECRET=s\n",
    );
    let text = project.compose_ok(&["config"]);
    let config: serde_json::Value = serde_saphyr::from_str(&text).expect("compose config YAML");
    assert_eq!(
        config["services"]["controller"]["environment"]["TLS_SANS"],
        "controller,localhost"
    );
}

async fn agents(port: u16, token: &str) -> Vec<serde_json::Value> {
    let Ok(response) = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/api/v1/agents"))
        .bearer_auth(token)
        .send()
        .await
    else {
        return Vec::new();
    };
    if !response.status().is_success() {
        return Vec::new();
    }
    response.json().await.unwrap_or_default()
}

async fn wait_local_agent_connected(project: &Project, port: u16, token: &str, what: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = agents(port, token).await;
        if list
            .iter()
            .any(|a| a["name"] == "local" && a["connected"] == true && a["runtime"] == "docker")
        {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{what}: no connected agent `local` ({list:?})\ncontroller:\n{}\nagent:\n{}",
                project.logs("controller"),
                project.logs("agent")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The `tar tv` line of an image's `/tmp` (mode, owner, …), from a container created (never
/// started) from it and removed again.
fn tmp_entry(image: &str) -> String {
    let created = Command::new("docker")
        .args(["create", image])
        .output()
        .expect("docker create");
    assert!(created.status.success(), "docker create {image}");
    let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let listing = Command::new("sh")
        .args([
            "-c",
            &format!("docker export {id} | tar --numeric-owner -tvf -"),
        ])
        .output()
        .expect("docker export");
    let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find(|l| l.ends_with(" tmp/") || l.ends_with(" tmp"))
        .unwrap_or_else(|| panic!("{image} has no /tmp"))
        .to_owned()
}

#[tokio::test]
async fn compose_up_with_a_seed_env_gives_a_controller_and_an_enrolled_agent_that_survive_restarts()
{
    tests::harness::init();
    let run = TestRun::new();
    // The images carry the run's label: `run` removes them when dropped, after `down -v`.
    let images: Images = build_images(&run);
    // The images run as 65532 and need a writable /tmp (a FROM scratch image has none unless it
    // is given one; COPY alone makes it root-owned 0755, and SQLite's spilled statement
    // journals then failed in the controller's database after restarts).
    for image in [images.controller(), images.agent()] {
        assert_eq!(
            tmp_entry(&image).split_whitespace().nth(1),
            Some("65532/65532"),
            "{image}: /tmp belongs to the image's user"
        );
    }
    let mut project = Project::new(&run);
    let (port, grpc_port) = (free_port(), free_port());
    let api_token = random_hex(20);
    let pat = format!("ghp_{}", &random_hex(18));
    // The seed's .env, as its README writes it, pointed at the simulator, plus our API token,
    // this run's ports, image tag and controller id.
    project.write(
        ".env",
        &format!(
            "GITHUB_TOKEN={pat}\nREPO_OWNER=acme\nREPO_NAME=app\nWEBHOOK_SECRET={}\nMAX_RUNNERS=5\n\
             PORT={port}\nDEBUG=false\nGITHUB_API_URL=http://github-sim:8080\nAPI_TOKEN={api_token}\n\
             GRPC_PORT={grpc_port}\nIMAGE_TAG={}\nCONTROLLER_ID=gha-test-{}\n",
            random_hex(16),
            images.tag,
            run.id
        ),
    );
    let sim = project.write(
        "github-sim.yml",
        "services:\n  github-sim:\n    image: github-sim:${IMAGE_TAG}\n    \
         command: [\"--org\", \"acme\", \"--owner\", \"admin\", \"--repos\", \"app\", \"--token\", \"${GITHUB_TOKEN}\"]\n",
    );
    project.files.push(sim);
    let _down = Down(&project);
    project.compose_ok(&["up", "-d"]);

    wait_until(WAIT, "the controller's /health answers", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    wait_local_agent_connected(&project, port, &api_token, "after up -d").await;

    // Host loss for the controller (SIGKILL), then a normal restart of the agent: the agent
    // comes back with the identity it enrolled with (its certificate still verifies against the
    // persisted CA), and no second token or agent appears.
    project.compose_ok(&["kill", "-s", "SIGKILL", "controller"]);
    project.compose_ok(&["start", "controller"]);
    project.compose_ok(&["restart", "-t", "5", "agent"]);
    wait_local_agent_connected(&project, port, &api_token, "after the restarts").await;
    let list = agents(port, &api_token).await;
    assert_eq!(list.len(), 1, "one agent, enrolled once: {list:?}");
    let controller_log = project.logs("controller");
    assert!(
        controller_log.contains("the local agent is enrolled already"),
        "the restarted controller minted no new token: {controller_log}"
    );
    let agent_log = project.logs("agent");
    assert_eq!(
        agent_log.matches("waiting for the join token file").count(),
        1,
        "the agent joined once and kept its identity: {agent_log}"
    );
    assert!(!agent_log.contains(&pat) && !controller_log.contains(&pat));
}
