//! `bench latency`: how long a job waits for a runner, on the real Docker engine with the
//! GitHub simulator's runner protocol (issue 16).
//!
//! A real controller (SQLite, mutual-TLS gRPC, webhooks from the simulator) and a real agent
//! with the Docker runtime run the locally built fake runner image, which registers with its
//! JIT config and claims jobs from the simulator every 100 ms (the simulator's assignment
//! time). Three scenarios, each on a controller of its own:
//! - **cold** (`MIN_IDLE_RUNNERS=0`), one job at a time: job queued → the controller's runner
//!   record (webhook received, planned: the controller's own share up to the JIT call) →
//!   container `start` event → runner registered at the simulator → job taken;
//! - **warm pool of 2**, one job at a time, the pool refilled before the next: job queued →
//!   job taken;
//! - **burst of 20 with a pool of 5**: 20 jobs queued at once → each taken.
//!
//! - **raw**, the baseline in the same run: bollard `create_container` + `start_container` of
//!   the container body the agent builds, straight to the engine, to its `start` event (as
//!   `docker-bench` does).
//!
//! Times are taken by polling (every 2 ms) from the moment the job is queued at the simulator,
//! which then delivers the signed `workflow_job` webhook. The cold path is also broken down
//! by the controller's and the agent's stage marks ([`PATH`]), taken in this process on the
//! same clock (the bench installs [`crate::stages`]' recorder).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use agent::runtime::docker::config::DockerSettings;
use agent::runtime::docker::spec::{Placement, container_body};
use bollard::query_parameters::{CreateContainerOptions, EventsOptions, RemoveContainerOptions};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::docker::{DockerSetup, TEST_RUN_LABEL, docker};
use crate::harness::get_json;
use crate::stages::Mark;
use shared::stage::names;

const POLL: Duration = Duration::from_millis(2);
const TIMEOUT: Duration = Duration::from_secs(60);

/// Samples of one stage.
#[derive(Debug, Default, Clone)]
pub struct Stage {
    pub samples: Vec<Duration>,
}

impl Stage {
    fn push(&mut self, d: Duration) {
        self.samples.push(d);
    }

    pub fn percentile(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        if s.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
        s[rank.clamp(1, s.len()) - 1]
    }
}

#[derive(Debug, Default)]
pub struct Cold {
    pub planned: Stage,
    pub started: Stage,
    pub registered: Stage,
    pub taken: Stage,
    /// For each of [`PATH`], its time from the job's queueing, per job (`None`: not seen).
    pub path: Vec<Vec<Option<Duration>>>,
}

/// The stages of a cold start's path, in order, each with what it means: the controller's and
/// the agent's marks ([`shared::stage`], recorded in this process by [`crate::stages`]), and
/// the engine's `start` event as the bench's event subscription sees it.
pub const PATH: [(&str, &str); 12] = [
    (WEBHOOK_RECEIVED, "controller: webhook request in"),
    (
        names::WEBHOOK_RECORDED,
        "controller: delivery verified and committed",
    ),
    (
        names::RUNNER_RECORDED,
        "controller: runner planned and recorded",
    ),
    (
        names::REGISTERED,
        "controller: JIT config from the simulator",
    ),
    (names::START_SENT, "controller: StartRunner sent"),
    (names::START_RECEIVED, "agent: StartRunner received"),
    (
        names::IMAGE_READY,
        "agent: image inspected, platform checked",
    ),
    (names::VOLUMES_READY, "agent: cache volume created"),
    (names::CONTAINER_CREATED, "agent: create_container answered"),
    (
        names::PROGRAM_CHECKED,
        "agent: container checked (image id, entry point)",
    ),
    (names::CONTAINER_STARTED, "agent: start_container answered"),
    (START_EVENT, "engine: `start` event seen"),
];

/// The moment the webhook's request arrived (its `webhook_recorded` mark less `handler_us`).
pub const WEBHOOK_RECEIVED: &str = "webhook_received";
/// The engine's `start` event, as the bench's subscription sees it.
pub const START_EVENT: &str = "start_event";

/// Where each of [`PATH`] was passed for `job`, from `t0`: the job's first delivery, the
/// runner the controller recorded for it, and that runner's marks; `started` is the start
/// event's time.
fn path_of(
    marks: &[Mark],
    job: u64,
    t0: Instant,
    started: Option<Duration>,
) -> Vec<Option<Duration>> {
    let since = |at: Instant| at.checked_duration_since(t0);
    let webhook = marks
        .iter()
        .find(|m| m.stage == names::WEBHOOK_RECORDED && m.job == Some(job));
    let runner = marks
        .iter()
        .find(|m| m.stage == names::RUNNER_RECORDED && m.job == Some(job))
        .and_then(|m| m.runner.clone());
    PATH.iter()
        .map(|(stage, _)| match *stage {
            WEBHOOK_RECEIVED => webhook.and_then(|m| {
                since(m.at)
                    .map(|d| d.saturating_sub(Duration::from_micros(m.handler_us.unwrap_or(0))))
            }),
            names::WEBHOOK_RECORDED => webhook.and_then(|m| since(m.at)),
            START_EVENT => started,
            stage => marks
                .iter()
                .find(|m| m.stage == stage && m.runner.is_some() && m.runner == runner)
                .and_then(|m| since(m.at)),
        })
        .collect()
}

/// Samples of the time from stage `from` to stage `to` of [`PATH`] (by index), over the jobs
/// where both were seen.
pub fn between(path: &[Vec<Option<Duration>>], from: usize, to: usize) -> Stage {
    Stage {
        samples: path
            .iter()
            .filter_map(|p| Some(p.get(to).copied()??.saturating_sub(p.get(from).copied()??)))
            .collect(),
    }
}

/// The baseline's samples: create answered, start answered, `start` event seen, each from
/// the create request.
#[derive(Debug, Default)]
pub struct Raw {
    pub created: Stage,
    pub started: Stage,
    pub event: Stage,
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Names of the run's containers as their `start` events arrive.
async fn start_events(run: &str) -> mpsc::UnboundedReceiver<String> {
    let docker = docker().await;
    let (tx, rx) = mpsc::unbounded_channel();
    let filters = HashMap::from([
        ("label".to_owned(), vec![format!("{TEST_RUN_LABEL}={run}")]),
        ("type".to_owned(), vec!["container".to_owned()]),
        ("event".to_owned(), vec!["start".to_owned()]),
    ]);
    let mut events = docker.events(Some(EventsOptions {
        since: None,
        until: None,
        filters: Some(filters),
    }));
    tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            let name = event
                .actor
                .and_then(|a| a.attributes)
                .and_then(|a| a.get("name").cloned())
                .unwrap_or_default();
            if tx.send(name).is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    rx
}

fn taken(s: &DockerSetup, job: u64) -> bool {
    s.sim.sim.job(job).is_some_and(|j| j.status != "queued")
}

/// Connected runners at the simulator that have no job: the ready pool.
fn idle_registered(s: &DockerSetup) -> usize {
    s.sim
        .sim
        .runners()
        .iter()
        .filter(|r| r.connected && r.job.is_none())
        .count()
}

async fn wait(what: &str, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while !f() {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

async fn system(max: u32, min_idle: u32) -> anyhow::Result<DockerSetup> {
    let min = min_idle.to_string();
    let s = DockerSetup::start_e2e(max, &[("MIN_IDLE_RUNNERS", min.as_str())]).await;
    Ok(s)
}

/// Cold starts, one job at a time.
pub async fn cold(jobs: usize) -> anyhow::Result<Cold> {
    let s = system(4, 0).await?;
    let mut events = start_events(&s.run.id).await;
    let agent = s.agent("bench-cold", &[("MAX_RUNNERS", "4")]);
    agent
        .wait_status(TIMEOUT, "connected", |st| st.connected)
        .await;
    let mut out = Cold::default();
    crate::stages::take();
    for _ in 0..jobs {
        let known: BTreeSet<String> = s.sim.sim.runners().into_iter().map(|r| r.name).collect();
        let (t0, t0_ms) = (Instant::now(), unix_ms());
        let job = s.sim.queue(&["self-hosted"], Duration::ZERO);
        let (mut started, mut registered, mut took) = (None, None, None);
        let deadline = Instant::now() + TIMEOUT;
        while took.is_none() || started.is_none() || registered.is_none() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "job {job} not served: started {started:?}, registered {registered:?}, taken {took:?}"
            );
            if started.is_none() && events.try_recv().is_ok() {
                started = Some(t0.elapsed());
            }
            if registered.is_none()
                && s.sim
                    .sim
                    .runners()
                    .iter()
                    .any(|r| r.connected && !known.contains(&r.name))
            {
                registered = Some(t0.elapsed());
            }
            if took.is_none() && taken(&s, job) {
                took = Some(t0.elapsed());
                // A runner that took its job has registered (seen here or not: a zero-length
                // job can come and go between two polls).
                registered = registered.or(took);
            }
            tokio::time::sleep(POLL).await;
        }
        // The controller's record of the runner it planned for the job.
        let (_, status) = get_json(&s.controller, "/status").await;
        let created = status["runners"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["for_job"] == job)
            .and_then(|r| r["created_ms"].as_i64());
        if let Some(created) = created {
            out.planned
                .push(Duration::from_millis((created - t0_ms).max(0) as u64));
        }
        let (marks, dropped) = crate::stages::take();
        anyhow::ensure!(dropped == 0, "{dropped} stage marks dropped");
        out.path.push(path_of(&marks, job, t0, started));
        out.started.push(started.unwrap_or_default());
        out.registered.push(registered.unwrap_or_default());
        out.taken.push(took.unwrap_or_default());
        s.wait_no_containers(TIMEOUT).await;
        while events.try_recv().is_ok() {}
    }
    drop(agent);
    Ok(out)
}

/// Jobs taken from a warm pool of `pool`: `burst` jobs queued at once, `rounds` times, the pool
/// refilled before each round.
pub async fn warm(pool: u32, burst: usize, rounds: usize) -> anyhow::Result<Stage> {
    let max = (pool as usize).max(burst) as u32;
    let s = system(max, pool).await?;
    let max_s = max.to_string();
    let agent = s.agent("bench-warm", &[("MAX_RUNNERS", max_s.as_str())]);
    agent
        .wait_status(TIMEOUT, "connected", |st| st.connected)
        .await;
    let mut out = Stage::default();
    for _ in 0..rounds {
        wait("the pool registered and idle", || {
            idle_registered(&s) >= pool as usize
        })
        .await?;
        let t0 = Instant::now();
        let jobs: Vec<u64> = (0..burst)
            .map(|_| s.sim.queue(&["self-hosted"], Duration::ZERO))
            .collect();
        let mut left: BTreeSet<u64> = jobs.iter().copied().collect();
        let deadline = Instant::now() + TIMEOUT;
        while !left.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} job(s) not served",
                left.len()
            );
            left.retain(|j| {
                let done = taken(&s, *j);
                if done {
                    out.push(t0.elapsed());
                }
                !done
            });
            tokio::time::sleep(POLL).await;
        }
    }
    drop(agent);
    Ok(out)
}

/// The baseline: raw create + start of the agent's container body, to its `start` event.
pub async fn raw(count: usize) -> anyhow::Result<Raw> {
    let s = DockerSetup::start().await;
    let mut events = start_events(&s.run.id).await;
    let docker = docker().await;
    let settings = DockerSettings {
        network: Some("host".into()),
        extra_labels: [(TEST_RUN_LABEL.to_owned(), s.run.id.clone())].into(),
        ..Default::default()
    };
    let mut out = Raw::default();
    for i in 0..count {
        s.sim.queue(&["self-hosted"], Duration::ZERO);
        let spec = s
            .sim
            .jit_spec(&format!("raw{i}"), &s.image, &["self-hosted"])
            .await;
        let placement = Placement {
            agent: "bench-raw".into(),
            controller: "bench".into(),
            deadline_ms: i64::MAX / 2,
            caches: Vec::new(),
            engine_nano_cpus: None,
        };
        let plan = agent::runtime::launch::plan(agent::runtime::launch::Layout::Myoung34, &spec)
            .map_err(|e| anyhow::anyhow!("launch plan: {e:?}"))?;
        let (body, _) = container_body(&spec, &settings, &placement, &plan);
        let name = spec.name.clone();
        let t0 = Instant::now();
        docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: String::new(),
                }),
                body,
            )
            .await?;
        out.created.push(t0.elapsed());
        docker.start_container(&name, None).await?;
        out.started.push(t0.elapsed());
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(seen)) if seen == name => break,
                Ok(Some(_)) => {}
                _ => anyhow::bail!("no start event for {name}"),
            }
        }
        out.event.push(t0.elapsed());
        let mut exit = docker.wait_container(&name, None);
        while exit.next().await.is_some() {}
        docker
            .remove_container(
                &name,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    link: false,
                }),
            )
            .await?;
    }
    Ok(out)
}
