//! The multi-host system test (issue 13 §3): the shipped images as separate hosts on private
//! networks this test creates, a steady stream of jobs, and the failures of real hosts.
//!
//! Layout: the controller container (`gha-controller` image) on a `core` network and on three
//! agent networks; three agent containers (`gha-agent` image, enrolled with join tokens minted
//! by `docker exec` in the controller), each on its own network shared with the controller only,
//! the third declaring arm64. The agents start the strict runner image (tests/runner-image) on
//! the same engine through its socket. The GitHub simulator runs in this test process, bound
//! to the `core` network's gateway address, so that the controller container and the runners
//! reach it and the assertions read its state directly.
//!
//! While the jobs flow: 5 % of `workflow_job` deliveries are dropped at the simulator (the REST
//! sweep must find those jobs); agent 1 is cut off its network for longer than
//! `AGENT_HEARTBEAT_TIMEOUT` and healed; agent 2's container is `docker kill`ed and started
//! again (same identity, from its volume); the controller is killed with SIGKILL once and
//! stopped with SIGTERM once, restarted each time on its state volume.
//!
//! Then: every job completed, each by its own runner (served exactly once); never more runner
//! containers alive than `MAX_RUNNERS` of the owner; arm64 jobs only on the arm64 agent; no
//! runner container, registration or volume left; every job's record readable from the
//! controller's API. A guard removes every container, network, volume and image even on failure.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use agent::runtime::docker::labels;
use tests::docker::{Census, SimRunners, TestRun};
use tests::github_sim::DeliveryFault;
use tests::harness::{TEST_WEBHOOK_SECRET, wait_until};
use tests::images::build_images;
use tokio::process::Command;

/// Jobs in the stream (a few per second; the whole test stays within a few minutes).
const JOBS: usize = 120;
const MAX_RUNNERS: usize = 4;
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(90);

/// Marks this test's own hosts (controller, agents), removed by [`Hosts`]; runner containers
/// carry `dev.gha-scaler.test-run` through the agents' `RUNNER_CONTAINER_LABELS`.
const HOST_LABEL: &str = "dev.gha-scaler.test-host";

async fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("docker runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes the hosts (containers labelled [`HOST_LABEL`]) and their volumes, even after a
/// failure; [`TestRun`] then removes runners, networks and images.
struct Hosts {
    run: String,
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let filter = format!("label={HOST_LABEL}={}", self.run);
        let list = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        if let Ok(list) = list {
            let ids: Vec<String> = String::from_utf8_lossy(&list.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .output();
            }
        }
        let volumes = std::process::Command::new("docker")
            .args(["volume", "ls", "-q", "--filter", &filter])
            .output();
        if let Ok(volumes) = volumes {
            let names: Vec<String> = String::from_utf8_lossy(&volumes.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !names.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["volume", "rm", "-f"])
                    .args(&names)
                    .output();
            }
        }
    }
}

/// A named volume of a host, labelled so that [`Hosts`] removes it.
async fn host_volume(run: &TestRun, name: &str) -> String {
    let name = format!("gha-mh-{}-{name}", run.id);
    docker(&[
        "volume",
        "create",
        "--label",
        &format!("{HOST_LABEL}={}", run.id),
        &name,
    ])
    .await;
    name
}

struct Net {
    name: String,
    gateway: String,
}

async fn network(run: &TestRun, suffix: &str) -> Net {
    let name = format!("gha-mh-{}-{suffix}", run.id);
    docker(&["network", "create", "--label", &run.label_pair(), &name]).await;
    let gateway = docker(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
        &name,
    ])
    .await;
    Net { name, gateway }
}

async fn container_ip(container: &str, network: &str) -> String {
    docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        container,
    ])
    .await
}

struct Controller {
    name: String,
    core: String,
    api_token: String,
    http: reqwest::Client,
}

impl Controller {
    async fn url(&self) -> String {
        format!("http://{}:8080", container_ip(&self.name, &self.core).await)
    }

    async fn get(&self, path: &str) -> Option<serde_json::Value> {
        let url = format!("{}{path}", self.url().await);
        let response = self
            .http
            .get(url)
            .bearer_auth(&self.api_token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// The status and body of a GET, for a failure message.
    async fn get_raw(&self, path: &str) -> String {
        let url = format!("{}{path}", self.url().await);
        match self
            .http
            .get(url)
            .bearer_auth(&self.api_token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => format!("no answer: {e}"),
        }
    }

    async fn agents(&self) -> Vec<serde_json::Value> {
        self.get("/api/v1/agents")
            .await
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    async fn wait_agent(&self, name: &str, connected: bool) {
        wait_until(
            WAIT,
            &format!("agent {name} connected={connected}"),
            || async {
                self.agents()
                    .await
                    .iter()
                    .any(|a| a["name"] == name && a["connected"] == connected)
            },
        )
        .await;
    }

    async fn wait_ready(&self) {
        wait_until(WAIT, "the controller answers /ready", || async {
            let url = format!("{}/ready", self.url().await);
            self.http
                .get(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }
}

// Once ignored (4 of 7 runs passed on 2026-12-02): a completed job unknown to the controller,
// whose `in_progress`/`completed` deliveries had been answered 500 after a controller restart,
// "cannot commit - no transaction is active". The SQLite writer's group commit had lost its
// transaction to one operation's error and refused the whole group (store/sqlite.rs
// `commit_group_with` now commits the rest of such a group one by one). The failure message
// prints what the simulator recorded for such a job and the controller's own store warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_serve_a_stream_of_jobs_through_partitions_kills_and_controller_restarts() {
    tests::harness::init();
    let run = TestRun::new();
    let images = build_images(&run);
    let runner_image = run.runner_image().await;
    let _hosts = Hosts {
        run: run.id.clone(),
    };
    let core = network(&run, "core").await;
    let agent_nets = [
        network(&run, "a1").await,
        network(&run, "a2").await,
        network(&run, "a3").await,
    ];
    let sim = SimRunners::start_on(core.gateway.parse().expect("gateway address")).await;
    let census = Census::start(&run).await;
    // What the engine runs, sampled: when the census sees too many at once, this says on which
    // agents and at which point of the script.
    let phase = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sampler = tokio::spawn({
        let (phase, samples, filter) = (
            phase.clone(),
            samples.clone(),
            format!("label={}", run.label_pair()),
        );
        async move {
            loop {
                let out = Command::new("docker")
                    .args([
                        "ps",
                        "--filter",
                        &filter,
                        "--format",
                        "{{.Label \"dev.gha-scaler.agent\"}} {{.Names}} {{.Status}}",
                    ])
                    .output()
                    .await;
                if let Ok(out) = out {
                    let text = String::from_utf8_lossy(&out.stdout).into_owned();
                    let runners = text.lines().filter(|l| !l.starts_with(' ')).count();
                    if runners > MAX_RUNNERS {
                        samples
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!(
                                "at job {}:\n{text}",
                                phase.load(std::sync::atomic::Ordering::Relaxed)
                            ));
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    let host_label = format!("{HOST_LABEL}={}", run.id);

    // The controller: its state on a volume, its certificate naming `controller` (the alias
    // the agents use on their networks).
    let api_token = hex::encode(rand::random::<[u8; 16]>());
    let controller_name = format!("gha-mh-{}-controller", run.id);
    let env = [
        ("REPO_OWNER", "acme".to_owned()),
        ("ALL_REPOS", "true".to_owned()),
        ("GITHUB_TOKEN", sim.pat.clone()),
        ("WEBHOOK_SECRET", TEST_WEBHOOK_SECRET.to_owned()),
        ("GITHUB_API_URL", sim.sim.api_url().to_owned()),
        ("MAX_RUNNERS", MAX_RUNNERS.to_string()),
        ("API_TOKEN", api_token.clone()),
        ("TLS_SANS", "controller".to_owned()),
        ("RUNNER_IMAGE", runner_image.clone()),
        ("CONTROLLER_ID", format!("ctl-{}", run.id)),
        ("CACHE_VOLUMES", "false".to_owned()),
        ("AGENT_HEARTBEAT_INTERVAL", "1s".to_owned()),
        (
            "AGENT_HEARTBEAT_TIMEOUT",
            format!("{}s", HEARTBEAT_TIMEOUT.as_secs()),
        ),
        ("RUNNER_IDLE_GRACE", "2s".to_owned()),
        // Finds the jobs whose webhooks were dropped.
        ("RECONCILE_INTERVAL", "5s".to_owned()),
        ("BACKOFF_INITIAL", "1s".to_owned()),
        ("BACKOFF_MAX", "5s".to_owned()),
        // A runner whose start raced a controller kill is known only to its agent: a stray,
        // stopped after this.
        ("STRAY_GRACE", "10s".to_owned()),
        // A job whose `in_progress` and `completed` deliveries were both dropped stays queued
        // here (the REST sweep lists active runs only): an idle runner would wait for it until
        // the stale check asks GitHub. Time is compressed, so is the check.
        ("STALE_JOB_AGE", "10s".to_owned()),
    ];
    let mut args: Vec<String> = [
        "create",
        "--name",
        &controller_name,
        "--label",
        &host_label,
        "--network",
        &core.name,
        "--network-alias",
        "controller",
        "-v",
        &format!("{}:/data", host_volume(&run, "state").await),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for (k, v) in &env {
        args.push("-e".into());
        args.push(format!("{k}={v}"));
    }
    args.push(images.controller());
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    for net in &agent_nets {
        docker(&[
            "network",
            "connect",
            "--alias",
            "controller",
            &net.name,
            &controller_name,
        ])
        .await;
    }
    docker(&["start", &controller_name]).await;
    let controller = Controller {
        name: controller_name.clone(),
        core: core.name.clone(),
        api_token: api_token.clone(),
        http: reqwest::Client::new(),
    };
    controller.wait_ready().await;
    let hook_url = format!("{}/webhook", controller.url().await);
    let mut hook_urls = vec![hook_url.clone()];
    sim.sim.add_hook(
        "acme",
        None,
        &hook_url,
        Some(TEST_WEBHOOK_SECRET),
        "json",
        &["workflow_job", "workflow_run"],
    );

    // Three agents, each enrolled with a token minted in the controller's container.
    let arches = ["amd64", "amd64", "arm64"];
    let mut agent_names = Vec::new();
    for (i, net) in agent_nets.iter().enumerate() {
        // Names unique to the run: an agent only ever touches containers labelled with its name.
        let agent = format!("mh-{}-{}", run.id, i + 1);
        let token = docker(&[
            "exec",
            &controller_name,
            "/gha-controller",
            "agents",
            "join-token",
            "--name",
            &agent,
            "--max-runners",
            "2",
            "--ttl",
            "10m",
        ])
        .await;
        let container = format!("gha-{agent}");
        let identity = host_volume(&run, &format!("identity-{}", i + 1)).await;
        docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--label",
            &host_label,
            "--network",
            &net.name,
            "--user",
            "0:0",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            &format!("{identity}:/var/lib/gha-agent"),
            "-e",
            "CONTROLLER_URL=https://controller:9443",
            "-e",
            &format!("JOIN_TOKEN={token}"),
            "-e",
            &format!("AGENT_ARCH={}", arches[i]),
            // The arm64 agent is one in name only: it runs the host's test image.
            "-e",
            "IMAGE_PLATFORM_CHECK=false",
            "-e",
            "MAX_RUNNERS=2",
            "-e",
            "RUNTIME=docker",
            "-e",
            "RUNNER_NETWORK=host",
            "-e",
            "RUNNER_STOP_GRACE=2s",
            "-e",
            &format!("RUNNER_CONTAINER_LABELS={}", run.label_pair()),
            "-e",
            "RECONNECT_MAX_BACKOFF=2s",
            &images.agent(),
        ])
        .await;
        agent_names.push((agent, container));
    }
    for (agent, _) in &agent_names {
        controller.wait_agent(agent, true).await;
    }

    // The stream: a third each of unlabelled-arch, x64 and arm64 jobs; about 5 % of the
    // `workflow_job` deliveries are dropped (the simulator records them as failed, as GitHub
    // does when the receiver is unreachable).
    let mixes: [&[&str]; 3] = [
        &["self-hosted", "linux"],
        &["self-hosted", "linux", "x64"],
        &["self-hosted", "linux", "arm64"],
    ];
    let mut jobs: Vec<(u64, usize)> = Vec::new();
    let (partitioned, _) = &agent_names[0];
    let killed_container = &agent_names[1].1;
    let a1 = &agent_nets[0].name;
    let a1_container = &agent_names[0].1;
    for i in 0..JOBS {
        phase.store(i, std::sync::atomic::Ordering::Relaxed);
        if i % 20 == 7 {
            sim.sim
                .fault_delivery("workflow_job", Some("queued"), DeliveryFault::Drop);
        }
        jobs.push((sim.queue(mixes[i % 3], Duration::from_millis(300)), i % 3));
        match i {
            20 => {
                docker(&["network", "disconnect", a1, a1_container]).await;
            }
            30 => {
                controller.wait_agent(partitioned, false).await;
                docker(&["network", "connect", a1, a1_container]).await;
            }
            45 => {
                docker(&["kill", killed_container]).await;
            }
            55 => {
                docker(&["start", killed_container]).await;
            }
            70 | 95 => {
                if i == 70 {
                    docker(&["kill", "-s", "KILL", &controller_name]).await;
                } else {
                    docker(&["stop", "-t", "10", &controller_name]).await;
                }
                docker(&["start", &controller_name]).await;
                controller.wait_ready().await;
                // The engine may give the restarted container another address: the hook
                // follows it (the old one then fails, as a hook to a moved host does).
                let url = format!("{}/webhook", controller.url().await);
                if !hook_urls.contains(&url) {
                    sim.sim.add_hook(
                        "acme",
                        None,
                        &url,
                        Some(TEST_WEBHOOK_SECRET),
                        "json",
                        &["workflow_job", "workflow_run"],
                    );
                    hook_urls.push(url);
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Healed and back: every agent connected again with its own identity.
    for (agent, _) in &agent_names {
        controller.wait_agent(agent, true).await;
    }

    // Every job completed successfully, each by a runner of its own.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let pending: Vec<u64> = jobs
            .iter()
            .filter(|(j, _)| sim.sim.job(*j).is_none_or(|r| r.status != "completed"))
            .map(|(j, _)| *j)
            .collect();
        if pending.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let logs = docker(&["logs", "--tail", "80", &controller_name]).await;
            let queue = controller
                .get("/status")
                .await
                .map_or_else(String::new, |s| format!("{} {}", s["queue"], s["runners"]));
            panic!(
                "jobs not completed: {pending:?}\ncontroller's queue and runners: {queue}\ncontroller log:\n{logs}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut runners_seen = HashSet::new();
    let started = census.started();
    let arm64_agent = agent_names[2].0.clone();
    let agent_of: HashMap<String, String> = started
        .iter()
        .filter_map(|c| {
            Some((
                c.labels.get(labels::RUNNER_NAME)?.clone(),
                c.labels.get(labels::AGENT)?.clone(),
            ))
        })
        .collect();
    for (job, mix) in &jobs {
        let rec = sim.sim.job(*job).expect("job record");
        assert_eq!(rec.conclusion, Some("success"), "job {job}: {rec:?}");
        let (_, runner) = rec.runner.clone().expect("the job had a runner");
        assert!(
            runners_seen.insert(runner.clone()),
            "runner {runner} served two jobs"
        );
        if *mix == 2 {
            assert_eq!(
                agent_of.get(&runner).map(String::as_str),
                Some(arm64_agent.as_str()),
                "arm64 job {job} ran on the arm64 agent"
            );
        } else if *mix == 1 {
            assert_ne!(
                agent_of.get(&runner).map(String::as_str),
                Some(arm64_agent.as_str()),
                "x64 job {job} stayed off the arm64 agent"
            );
        }
        if controller
            .get(&format!("/api/v1/jobs/{job}"))
            .await
            .is_none()
        {
            // What GitHub tried to tell the controller about it.
            let attempts: Vec<String> = sim
                .sim
                .deliveries()
                .iter()
                .filter(|d| d.payload["workflow_job"]["id"].as_u64() == Some(*job))
                .map(|d| {
                    format!(
                        "{}.{} -> {} {} (redelivery: {})",
                        d.event,
                        d.action.as_deref().unwrap_or(""),
                        d.status_code,
                        d.status,
                        d.redelivery
                    )
                })
                .collect();
            // And why the controller refused them (its log across restarts).
            let log = docker(&["logs", &controller_name]).await;
            let refusals: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("not recorded") || l.contains("the store"))
                .collect();
            panic!(
                "job {job} readable from the controller's API: {}; its deliveries: {attempts:?}; \
                 the controller's refusals: {refusals:?}",
                controller.get_raw(&format!("/api/v1/jobs/{job}")).await
            );
        }
    }
    sampler.abort();
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
    let controller_log = if census.max_runners_alive() > MAX_RUNNERS {
        docker(&["logs", "--tail", "150", &controller_name]).await
    } else {
        String::new()
    };
    assert!(
        census.max_runners_alive() <= MAX_RUNNERS,
        "{} runner containers alive at once (MAX_RUNNERS {MAX_RUNNERS}); samples:\n{}\ncontroller log:\n{}",
        census.max_runners_alive(),
        samples,
        controller_log
    );
    // The PAT stays in the controller: no runner container was given it.
    let runners: Vec<_> = started
        .iter()
        .filter(|c| c.labels.contains_key(labels::RUNNER_ID))
        .collect();
    assert!(runners.len() >= JOBS, "{} runner containers", runners.len());
    for c in runners {
        assert!(
            !c.env
                .iter()
                .chain(c.cmd.iter())
                .chain(c.labels.values())
                .any(|v| v.contains(&sim.pat)),
            "runner container {} was given the PAT",
            c.name
        );
    }

    // Nothing left behind: runner containers, registrations, volumes.
    // (The hosts carry the run's label too, inherited from its images: runners are those with
    // a runner id.)
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let containers: Vec<String> = run
            .containers()
            .await
            .into_iter()
            .filter(|c| {
                c.labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(labels::RUNNER_ID))
            })
            .filter_map(|c| c.names.and_then(|n| n.first().cloned()))
            .collect();
        let registrations: Vec<String> = sim.sim.runners().into_iter().map(|r| r.name).collect();
        let volumes = run.volumes().await;
        if containers.is_empty() && registrations.is_empty() && volumes.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let log = docker(&["logs", "--tail", "400", &controller_name]).await;
            let about: Vec<&str> = log
                .lines()
                .filter(|l| registrations.iter().any(|r| l.contains(r.as_str())))
                .collect();
            panic!(
                "left behind: containers {containers:?}, registrations {registrations:?}, \
                 volumes {volumes:?}\nagents: {:?}\nqueue: {}\ncontroller log about them:\n{}",
                controller.agents().await,
                controller
                    .get("/status")
                    .await
                    .map_or_else(String::new, |s| s["queue"].to_string()),
                about.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // For the record of a passing run (shown with --no-capture): what the store had to recover.
    let log = docker(&["logs", &controller_name]).await;
    for line in log.lines().filter(|l| l.contains("the store")) {
        eprintln!("controller: {line}");
    }
}
