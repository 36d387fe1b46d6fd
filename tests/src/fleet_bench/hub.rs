//! GitHub's side of the jobs, played by the bench: the agents' runtime that times each
//! `StartRunner`, the signed deliveries, and the queued jobs and busy runners per owner.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::images::ImageReporter;
use agent::runtime::memory::MemoryRuntime;
use agent::runtime::{RunnerRuntime, RuntimeError};
use shared::arch::{Arch, RuntimeKind};
use shared::command::RunnerSpec;
use shared::ids::RunnerId;
use shared::runner::RunnerState;
use tokio::sync::{Semaphore, mpsc};

use super::{DELIVERY_CONNECTIONS, JobKind, WAIT};
use crate::github_sim::signature_256;
use crate::harness::TEST_WEBHOOK_SECRET;

/// A runner start the agent's runtime was asked for.
pub(super) struct Started {
    pub(super) at: Instant,
    pub(super) agent: usize,
    pub(super) spec: RunnerSpec,
}

/// The memory runtime, timing each start and telling the bench about it.
#[derive(Clone)]
pub struct FleetRuntime {
    pub(super) memory: MemoryRuntime,
    pub(super) agent: usize,
    /// The bench's [`Hub`] task holds the receiver.
    pub(super) started: mpsc::Sender<Started>,
    pub(super) lost: Arc<AtomicU64>,
}

impl RunnerRuntime for FleetRuntime {
    fn kind(&self) -> RuntimeKind {
        self.memory.kind()
    }

    async fn start(&self, spec: RunnerSpec) -> Result<(), RuntimeError> {
        let at = Instant::now();
        self.memory.start(spec.clone()).await?;
        let started = Started {
            at,
            agent: self.agent,
            spec,
        };
        if self.started.try_send(started).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn stop(&self, id: &RunnerId) -> Result<(), RuntimeError> {
        self.memory.stop(id).await
    }

    async fn inventory(&self) -> Result<Vec<RunnerState>, RuntimeError> {
        self.memory.inventory().await
    }

    async fn health(&self) -> Result<(), String> {
        self.memory.health().await
    }

    fn prepare_images(&self, reporter: ImageReporter) {
        self.memory.prepare_images(reporter)
    }

    async fn capacity(&self, max_runners: u32) -> Option<Vec<(Arch, u32)>> {
        self.memory.capacity(max_runners).await
    }
}

pub(super) fn owner_login(i: usize) -> String {
    format!("org-{i:02}")
}

/// A `workflow_job` delivery body.
pub(super) fn job_body(owner: &str, job: u64, action: &str, runner: Option<&str>) -> Vec<u8> {
    let (status, conclusion) = match action {
        "queued" => ("queued", None),
        "in_progress" => ("in_progress", None),
        _ => ("completed", Some("success")),
    };
    serde_json::to_vec(&serde_json::json!({
        "action": action,
        "workflow_job": {
            "id": job,
            "run_id": job + 500_000_000,
            "name": "build",
            "status": status,
            "labels": ["self-hosted", "linux", "x64"],
            "runner_name": runner,
            "conclusion": conclusion,
            "steps": [],
            "head_sha": "4a3f1b2c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a",
            "html_url": format!("https://github.com/{owner}/app/actions/runs/{job}/job/{job}"),
            "created_at": "2026-12-01T00:00:00Z",
        },
        "repository": {
            "id": 1, "name": "app", "full_name": format!("{owner}/app"), "private": true,
            "owner": {"login": owner, "id": 2, "type": "Organization"},
        },
        "organization": {"login": owner, "id": 2},
        "sender": {"login": "alice", "id": 3, "type": "User"},
    }))
    .unwrap_or_default()
}

/// Signed deliveries to the controller's `/webhook`, at most [`DELIVERY_CONNECTIONS`] at once.
pub(super) struct Deliveries {
    pub(super) client: reqwest::Client,
    pub(super) url: String,
    /// One permit per delivery in flight; [`Deliveries::send`] waits for one.
    pub(super) permits: Arc<Semaphore>,
    pub(super) sent: AtomicU64,
    pub(super) failed: AtomicU64,
}

impl Deliveries {
    pub(super) fn new(url: String) -> Arc<Self> {
        Arc::new(Self {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(DELIVERY_CONNECTIONS)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            url,
            permits: Arc::new(Semaphore::new(DELIVERY_CONNECTIONS)),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// Sends in the background once a connection is free (waits for one).
    pub(super) async fn send(self: &Arc<Self>, body: Vec<u8>) {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            this.post(body).await;
            drop(permit);
        });
    }

    /// Sends and waits for the answer.
    pub(super) async fn send_now(&self, body: Vec<u8>) {
        let Ok(permit) = self.permits.acquire().await else {
            return;
        };
        self.post(body).await;
        drop(permit);
    }

    pub(super) async fn post(&self, body: Vec<u8>) {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        let sig = signature_256(TEST_WEBHOOK_SECRET, &body);
        let ok = self
            .client
            .post(&self.url)
            .header("X-GitHub-Event", "workflow_job")
            .header("X-GitHub-Delivery", format!("fleet-{n}"))
            .header("X-Hub-Signature-256", sig)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until no delivery is in flight (bounded).
    pub(super) async fn settled(&self) {
        let all = DELIVERY_CONNECTIONS as u32;
        if let Ok(Ok(p)) = tokio::time::timeout(WAIT, self.permits.acquire_many(all)).await {
            drop(p);
        }
    }
}

pub(super) struct QueuedJob {
    pub(super) id: u64,
    pub(super) sent: Instant,
    pub(super) kind: JobKind,
}

pub(super) struct Idle {
    pub(super) agent: usize,
    pub(super) runner: RunnerId,
    pub(super) name: String,
}

pub(super) struct Busy {
    pub(super) agent: usize,
    pub(super) runner: RunnerId,
    pub(super) name: String,
    pub(super) owner: usize,
    pub(super) job: u64,
}

/// GitHub's side of the jobs: queued jobs per owner, busy runners, and the latencies measured.
#[derive(Default)]
pub(super) struct HubState {
    pub(super) queued: Vec<VecDeque<QueuedJob>>,
    /// Oldest first: completions take from the front.
    pub(super) busy: VecDeque<Busy>,
    /// Runners started when their owner had no queued job, so far.
    pub(super) unassigned: u64,
    /// Those of them still idle, per owner: GitHub gives them the owner's next job.
    pub(super) idle: Vec<VecDeque<Idle>>,
    /// Jobs that went to an idle runner at once (no `StartRunner` to time).
    pub(super) to_idle: u64,
    /// queued sent → `StartRunner` at the agent, by kind.
    pub(super) latency: BTreeMap<JobKind, Vec<Duration>>,
    pub(super) next_job: u64,
}

#[derive(Clone)]
pub(super) struct Hub {
    /// Short sections only; the hub task and the load generator share it.
    pub(super) state: Arc<Mutex<HubState>>,
    pub(super) deliveries: Arc<Deliveries>,
    pub(super) runtimes: Arc<Vec<MemoryRuntime>>,
    pub(super) owners: usize,
    /// A started runner's `in_progress` delivery comes this long after its start.
    pub(super) boot: Duration,
}

impl Hub {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Receives starts until the channel closes: each runner takes its owner's oldest job.
    pub(super) async fn serve(self, mut started: mpsc::Receiver<Started>) {
        while let Some(s) = started.recv().await {
            let owner = s
                .spec
                .owner
                .strip_prefix("org-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n < self.owners);
            let Some(owner) = owner else { continue };
            let job = {
                let mut st = self.lock();
                match st.queued[owner].pop_front() {
                    Some(job) => {
                        st.latency
                            .entry(job.kind)
                            .or_default()
                            .push(s.at.saturating_duration_since(job.sent));
                        st.busy.push_back(Busy {
                            agent: s.agent,
                            runner: s.spec.id.clone(),
                            name: s.spec.name.clone(),
                            owner,
                            job: job.id,
                        });
                        Some(job.id)
                    }
                    None => {
                        st.unassigned += 1;
                        st.idle[owner].push_back(Idle {
                            agent: s.agent,
                            runner: s.spec.id.clone(),
                            name: s.spec.name.clone(),
                        });
                        None
                    }
                }
            };
            if let Some(job) = job {
                // The runner boots, registers and claims its job before GitHub says so.
                let deliveries = self.deliveries.clone();
                let body = job_body(&owner_login(owner), job, "in_progress", Some(&s.spec.name));
                let boot = self.boot;
                tokio::spawn(async move {
                    tokio::time::sleep(boot).await;
                    deliveries.send(body).await;
                });
            }
        }
    }

    /// Queues `n` jobs round-robin over the owners; a job whose owner has an idle runner goes
    /// to it at once, as GitHub would give it.
    pub(super) async fn queue(&self, n: usize, kind: JobKind) {
        for _ in 0..n {
            let (owner, id, idle) = {
                let mut st = self.lock();
                let id = 1_000_000 + st.next_job;
                let owner = (st.next_job as usize) % self.owners;
                st.next_job += 1;
                let idle = st.idle[owner].pop_front();
                match &idle {
                    Some(r) => {
                        st.to_idle += 1;
                        st.busy.push_back(Busy {
                            agent: r.agent,
                            runner: r.runner.clone(),
                            name: r.name.clone(),
                            owner,
                            job: id,
                        });
                    }
                    None => st.queued[owner].push_back(QueuedJob {
                        id,
                        sent: Instant::now(),
                        kind,
                    }),
                }
                (owner, id, idle)
            };
            let login = owner_login(owner);
            self.deliveries
                .send(job_body(&login, id, "queued", None))
                .await;
            if let Some(r) = idle {
                self.deliveries
                    .send(job_body(&login, id, "in_progress", Some(&r.name)))
                    .await;
            }
        }
    }

    /// Completes the `n` oldest busy runners' jobs; each runner then exits, as an ephemeral
    /// runner does.
    pub(super) async fn complete(&self, n: usize) {
        for _ in 0..n {
            let Some(b) = self.lock().busy.pop_front() else {
                return;
            };
            // GitHub reports the job completed, then the ephemeral runner exits.
            let body = job_body(&owner_login(b.owner), b.job, "completed", Some(&b.name));
            self.deliveries.send_now(body).await;
            if let Some(rt) = self.runtimes.get(b.agent) {
                rt.finish(&b.runner, 0).await;
            }
        }
    }

    pub(super) fn busy(&self) -> usize {
        self.lock().busy.len()
    }

    pub(super) fn queued(&self) -> usize {
        self.lock().queued.iter().map(VecDeque::len).sum()
    }
}
