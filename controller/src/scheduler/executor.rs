//! The scheduler's loop: level-triggered reconciliation of jobs, runners and agents.
//!
//! Each activation (on a nudge from the webhook handler or an agent report, and on a timer)
//! reads the whole picture — queued jobs and runners from the store, agents from the registry —
//! brings runner records in line with what agents report, asks the pure planner what to do,
//! and does it: registration material from GitHub, start/stop commands to agents. Every action
//! is recorded in the store first, so a crash at any point is repaired by the next activation.
//! What it decided and why each job waits is published for `/status` and `/api/v1/jobs/{id}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use shared::command::{AgentCommand, CacheSettings, Registration, RunnerSpec};
use shared::github::{GithubApi, JitConfigRequest, RepoRef, Scope};
use shared::ids::{AgentName, RunnerId};
use shared::runner::{RunnerPhase, now_ms};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::planner::{
    self, ActiveRunner, AgentSupply, OwnerLimits, PendingJob, PlanInput, Start, WaitReason,
};
use crate::config::{Config, OwnerConfig, RegistrationMode};
use crate::metrics::{Metrics, OutcomeLabels, OwnerLabels, RunnerLabels, StateLabels};
use crate::registry::{AgentRegistry, AgentView};
use crate::store::{
    JobRecord, JobState, RunKey, RunnerLifecycle, RunnerRecord, StateStore, StoreError,
};

/// Activations happen at least this often, even without a nudge.
const TICK: Duration = Duration::from_secs(2);
/// The least and most time between the starts of two activations.
const MIN_GAP: Duration = Duration::from_millis(20);
const MAX_GAP: Duration = Duration::from_millis(250);
/// Run fetches attempted per activation.
const RUN_FETCHES_PER_ACTIVATION: usize = 32;
/// A runner told to start that no agent reports within this time is given up.
const START_DEADLINE_MS: i64 = 10 * 60 * 1000;
/// A runner whose agent stays disconnected this long is counted as lost.
const AGENT_LOST_MS: i64 = 5 * 60 * 1000;

/// What the last activation decided, for `/status` and the jobs API.
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    /// Why each queued job is not running yet.
    pub waiting: BTreeMap<u64, WaitReason>,
    pub activations: u64,
    pub last_activation_ms: i64,
    pub last_error: Option<String>,
}

/// A cloneable view of the scheduler's latest decisions.
#[derive(Clone, Default)]
pub struct DecisionsHandle(Arc<Mutex<Decisions>>);

impl DecisionsHandle {
    pub fn get(&self) -> Decisions {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut Decisions)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

pub struct Scheduler {
    pub config: Arc<Config>,
    pub store: Arc<dyn StateStore>,
    pub registry: AgentRegistry,
    pub github: Arc<dyn GithubApi>,
    pub metrics: Arc<Metrics>,
    /// Woken by the webhook handler and agent sessions.
    pub nudge: Arc<Notify>,
    pub decisions: DecisionsHandle,
    /// When this controller started (ms): agents not seen since are "away since" then.
    pub started_ms: i64,
    /// Strays told to stop, and when (so the stop is repeated at most every 30 s). Only the
    /// scheduler's own task touches it.
    pub strays: Mutex<HashMap<String, i64>>,
}

#[derive(Debug, thiserror::Error)]
enum ActivationError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Scheduler {
    /// Runs until `shutdown`. Stopping the scheduler never stops a runner.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let span = info_span!("scheduler_activation");
            let started = tokio::time::Instant::now();
            if let Err(e) = self.activate().instrument(span).await {
                error!(error = %e, "scheduler activation failed; retrying at the next one");
                self.decisions
                    .update(|d| d.last_error = Some(e.to_string()));
            }
            // Nudges that arrive meanwhile are coalesced: during a burst of webhooks the
            // scheduler takes at most about half a core, and a job waits at most one gap.
            let gap = started.elapsed().clamp(MIN_GAP, MAX_GAP);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(gap) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.nudge.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    async fn activate(&self) -> Result<(), ActivationError> {
        let now = now_ms();
        self.fetch_runs().await?;
        let agents = self.registry.snapshot();
        let runners = self.sync_runners(&agents, now).await?;
        self.stop_strays(&agents, &runners, now).await?;
        let jobs = self.store.queued_jobs().await?;

        let owners: Vec<OwnerLimits> = self.config.owners.iter().map(owner_limits).collect();
        let supply: Vec<AgentSupply> = agents
            .iter()
            .filter(|a| a.connected)
            .map(agent_supply)
            .collect();
        let connected: HashMap<&str, bool> = agents
            .iter()
            .map(|a| (a.name.as_str(), a.connected))
            .collect();
        let active: Vec<ActiveRunner> = runners
            .iter()
            // An idle runner on a disconnected agent is likely gone: it neither serves demand
            // nor holds the owner's capacity while its jobs are served elsewhere.
            .filter(|r| {
                r.job_id.is_some() || connected.get(r.agent.as_str()).copied().unwrap_or(false)
            })
            .map(|r| ActiveRunner {
                id: r.id.clone(),
                owner: r.owner.clone(),
                repo: r.repo.clone(),
                agent: r.agent.clone(),
                arch: r.arch,
                labels: r.labels.clone(),
                busy: r.job_id.is_some(),
                running: r.lifecycle == RunnerLifecycle::Running,
                created_ms: r.created_ms,
            })
            .collect();
        let pending: Vec<PendingJob> = jobs
            .iter()
            .map(|j| PendingJob {
                id: j.id,
                owner: j.owner.clone(),
                repo: j.repo.clone(),
                labels: j.labels.clone(),
                queued_ms: j.queued_ms.unwrap_or(j.first_seen_ms),
            })
            .collect();
        let plan = planner::plan(&PlanInput {
            owners: &owners,
            agents: &supply,
            jobs: &pending,
            runners: &active,
            global_labels: &self.config.runners.labels,
            now_ms: now,
            idle_grace_ms: self.config.runners.idle_grace.as_millis() as i64,
            runner_timeout_ms: self.config.runners.timeout.as_millis() as i64,
        });

        for start in &plan.starts {
            self.start_runner(start, now).await?;
        }
        for stop in &plan.stops {
            if let Some(r) = runners.iter().find(|r| r.id == stop.runner_id) {
                self.stop_runner(r, &format!("{:?}", stop.reason).to_ascii_lowercase())
                    .await;
            }
        }
        self.publish(&jobs, &runners, plan.waiting, now).await?;
        Ok(())
    }

    /// Fetches the jobs of requested or running workflow runs (level-triggered: a failed fetch
    /// stays pending and is retried at the next activation).
    async fn fetch_runs(&self) -> Result<(), StoreError> {
        for key in self
            .store
            .run_fetches()
            .await?
            .into_iter()
            .take(RUN_FETCHES_PER_ACTIVATION)
        {
            let repo = RepoRef::new(key.owner.clone(), key.repo.clone());
            match self.github.list_run_jobs(&repo, key.run_id).await {
                Ok(jobs) => {
                    let now = now_ms();
                    let records: Vec<JobRecord> = jobs
                        .into_iter()
                        .filter_map(|j| job_from_rest(&key, j, now))
                        .collect();
                    debug!(
                        run = key.run_id,
                        jobs = records.len(),
                        "fetched a run's jobs"
                    );
                    self.store.upsert_jobs(records).await?;
                    self.store.finish_run_fetch(key).await?;
                }
                Err(e) => {
                    warn!(run = key.run_id, repo = %key.repo, error = %e, "cannot fetch a run's jobs; will retry");
                    self.store.fail_run_fetch(key, e.to_string()).await?;
                }
            }
        }
        Ok(())
    }

    /// Brings runner records in line with what agents report; returns the active ones.
    async fn sync_runners(
        &self,
        agents: &[AgentView],
        now: i64,
    ) -> Result<Vec<RunnerRecord>, StoreError> {
        let by_agent: HashMap<&str, &AgentView> =
            agents.iter().map(|a| (a.name.as_str(), a)).collect();
        let mut active = Vec::new();
        for mut r in self.store.active_runners().await? {
            let before = (r.lifecycle, r.exit_code, r.reason.clone());
            let agent = by_agent.get(r.agent.as_str());
            let reported = agent.and_then(|a| a.runners.iter().find(|s| s.id.as_str() == r.id));
            match (agent, reported) {
                (_, Some(state)) => match state.phase {
                    // Still starting; the agent may say why (a pod Pending: unschedulable,
                    // image pull back-off), which `explain` shows.
                    RunnerPhase::Starting => r.reason = state.reason.clone(),
                    RunnerPhase::Running => {
                        if r.lifecycle != RunnerLifecycle::Running {
                            r.lifecycle = RunnerLifecycle::Running;
                            self.observe_started(&r).await;
                        }
                    }
                    RunnerPhase::Exited | RunnerPhase::Failed => {
                        r.lifecycle = RunnerLifecycle::Finished;
                        r.exit_code = state.exit_code;
                        r.reason = if state.reason.is_empty() {
                            format!("{:?}", state.phase).to_ascii_lowercase()
                        } else {
                            state.reason.clone()
                        };
                    }
                },
                (Some(a), None) if a.connected => match r.lifecycle {
                    // Recorded but never handed to the agent (the controller stopped in between):
                    // its registration is spent, so it is replaced rather than retried.
                    RunnerLifecycle::Requested => {
                        r.lifecycle = RunnerLifecycle::Finished;
                        r.reason =
                            "never started (the controller restarted before sending it)".into();
                    }
                    // The agent's inventory is complete: a runner it no longer lists is gone.
                    RunnerLifecycle::Running => {
                        r.lifecycle = RunnerLifecycle::Finished;
                        r.reason = "no longer on its agent".into();
                    }
                    _ if now - r.updated_ms > START_DEADLINE_MS => {
                        r.lifecycle = RunnerLifecycle::Finished;
                        r.reason = "the agent never reported this runner".into();
                    }
                    _ => {}
                },
                (agent, None) => {
                    // The agent is away: its runners may well be running; give it time to return.
                    let away_since = agent
                        .and_then(|a| a.disconnected_at_ms)
                        .unwrap_or(self.started_ms)
                        .max(r.updated_ms);
                    if now - away_since > AGENT_LOST_MS {
                        r.lifecycle = RunnerLifecycle::Finished;
                        r.reason = "its agent is gone".into();
                    }
                }
            }
            if (r.lifecycle, r.exit_code, r.reason.clone()) != before {
                r.updated_ms = now;
                info!(runner = %r.name, lifecycle = r.lifecycle.as_str(), reason = %r.reason, "runner state");
                self.store.upsert_runner(r.clone()).await?;
            }
            if r.lifecycle.is_active() {
                active.push(r);
            }
        }
        Ok(active)
    }

    /// Runners that agents run but this controller does not know (or knows as finished): left
    /// by a controller that lost its state, or started by hand. Stopped after `STRAY_GRACE`.
    async fn stop_strays(
        &self,
        agents: &[AgentView],
        active: &[RunnerRecord],
        now: i64,
    ) -> Result<(), StoreError> {
        let grace = self.config.runners.stray_grace.as_millis() as i64;
        for agent in agents.iter().filter(|a| a.connected) {
            for state in &agent.runners {
                if state.phase.is_terminal()
                    || now - state.observed_at_ms < grace
                    || active.iter().any(|r| r.id == state.id.as_str())
                {
                    continue;
                }
                let known = self.store.runner_by_name(&state.name).await?;
                if known.as_ref().is_some_and(|r| r.lifecycle.is_active()) {
                    continue;
                }
                {
                    let mut told = self.strays.lock().unwrap_or_else(|p| p.into_inner());
                    told.retain(|_, at| now - *at < 600_000);
                    if told
                        .get(state.id.as_str())
                        .is_some_and(|at| now - at < 30_000)
                    {
                        continue;
                    }
                    told.insert(state.id.to_string(), now);
                }
                warn!(runner = %state.name, agent = %agent.name, "stopping a runner this controller does not know");
                if let Err(e) = self.registry.send(
                    &agent.name,
                    AgentCommand::StopRunner {
                        id: state.id.clone(),
                        reason: "unknown to the controller".into(),
                    },
                ) {
                    warn!(runner = %state.name, error = %e, "cannot send stop");
                }
            }
        }
        Ok(())
    }

    async fn observe_started(&self, r: &RunnerRecord) {
        if let Some(job_id) = r.for_job
            && let Ok(Some(job)) = self.store.job(job_id).await
        {
            let from = job.queued_ms.unwrap_or(job.first_seen_ms);
            self.metrics
                .queued_to_started_seconds
                .observe((now_ms() - from).max(0) as f64 / 1000.0);
        }
    }

    async fn start_runner(&self, start: &Start, now: i64) -> Result<(), StoreError> {
        let Some(owner) = self.config.owner(&start.owner) else {
            return Ok(());
        };
        let mut id_bytes = [0u8; 6];
        rand::rng().fill_bytes(&mut id_bytes);
        let short = hex::encode(id_bytes);
        let mut record = RunnerRecord {
            id: format!("r-{short}"),
            name: format!("gha-{}-{short}", start.owner),
            owner: start.owner.clone(),
            repo: start.repo.clone(),
            agent: start.agent.to_string(),
            arch: start.arch,
            labels: start.labels.clone(),
            lifecycle: RunnerLifecycle::Requested,
            for_job: Some(start.for_job),
            job_id: None,
            github_id: None,
            exit_code: None,
            reason: String::new(),
            created_ms: now,
            updated_ms: now,
        };
        // Recorded first: the owner's limit counts it from now on, whatever happens next.
        self.store.upsert_runner(record.clone()).await?;
        let outcome = match self.registration(owner, &record).await {
            Ok((registration, github_id)) => {
                record.github_id = github_id;
                let spec = self.spec(&record, registration);
                self.registry
                    .send(&start.agent, AgentCommand::StartRunner(Box::new(spec)))
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e),
        };
        record.updated_ms = now_ms();
        match outcome {
            Ok(()) => {
                info!(runner = %record.name, agent = %record.agent, job = start.for_job, "runner starting");
                record.lifecycle = RunnerLifecycle::Starting;
                self.metrics
                    .runner_starts
                    .get_or_create(&OutcomeLabels {
                        outcome: "sent".into(),
                    })
                    .inc();
            }
            Err(reason) => {
                warn!(runner = %record.name, %reason, "could not start a runner; the job stays queued");
                record.lifecycle = RunnerLifecycle::Finished;
                record.reason = reason;
                self.metrics
                    .runner_starts
                    .get_or_create(&OutcomeLabels {
                        outcome: "failed".into(),
                    })
                    .inc();
            }
        }
        self.store.upsert_runner(record).await
    }

    fn scope(&self, owner: &OwnerConfig, record: &RunnerRecord) -> Scope {
        match &record.repo {
            Some(repo) => Scope::Repo(RepoRef::new(owner.name.clone(), repo.clone())),
            None => Scope::Org(owner.name.clone()),
        }
    }

    /// Registration material for one runner: never the owner's PAT or App key.
    async fn registration(
        &self,
        owner: &OwnerConfig,
        record: &RunnerRecord,
    ) -> Result<(Registration, Option<u64>), String> {
        let scope = self.scope(owner, record);
        match self.config.runners.registration {
            RegistrationMode::Jit => {
                let request = JitConfigRequest {
                    name: record.name.clone(),
                    runner_group_id: owner
                        .runner_group
                        .as_deref()
                        .and_then(|g| g.parse().ok())
                        .unwrap_or(1),
                    labels: record.labels.clone(),
                    work_folder: None,
                };
                let jit = self
                    .github
                    .generate_jit_config(&scope, &request)
                    .await
                    .map_err(|e| format!("GitHub refused a JIT runner config: {e}"))?;
                Ok((
                    Registration::JitConfig(jit.encoded_jit_config.expose().to_owned()),
                    Some(jit.runner.id),
                ))
            }
            RegistrationMode::Token => {
                let token = self
                    .github
                    .registration_token(&scope)
                    .await
                    .map_err(|e| format!("GitHub refused a registration token: {e}"))?;
                let base = web_url(&self.config.github_api_url);
                let url = match &record.repo {
                    Some(repo) => format!("{base}/{}/{repo}", owner.name),
                    None => format!("{base}/{}", owner.name),
                };
                Ok((
                    Registration::Token {
                        token: token.token.expose().to_owned(),
                        url,
                        runner_group: owner.runner_group.clone().unwrap_or_default(),
                    },
                    None,
                ))
            }
        }
    }

    fn spec(&self, record: &RunnerRecord, registration: Registration) -> RunnerSpec {
        let defaults = &self.config.runners;
        let mut volumes = BTreeMap::new();
        if defaults.cache_volumes {
            volumes.insert(
                format!("gha-cache-{}-{}-toolcache", record.owner, record.arch),
                "/opt/hostedtoolcache".to_owned(),
            );
        }
        RunnerSpec {
            id: RunnerId::parse(&record.id).expect("runner ids are generated valid"),
            name: record.name.clone(),
            image: defaults.image.clone(),
            registration,
            labels: record.labels.clone(),
            env: BTreeMap::new(),
            timeout: defaults.timeout,
            cache: CacheSettings {
                enabled: defaults.cache_volumes,
                volumes,
                kubernetes_pvcs: defaults.kubernetes_pvcs,
            },
            arch: record.arch,
            owner: record.owner.clone(),
        }
    }

    async fn stop_runner(&self, r: &RunnerRecord, reason: &str) {
        let Ok(agent) = AgentName::parse(&r.agent) else {
            return;
        };
        let Ok(id) = RunnerId::parse(&r.id) else {
            return;
        };
        info!(runner = %r.name, %reason, "stopping runner");
        if let Err(e) = self.registry.send(
            &agent,
            AgentCommand::StopRunner {
                id,
                reason: reason.to_owned(),
            },
        ) {
            warn!(runner = %r.name, error = %e, "cannot send stop");
        }
        // An ephemeral runner that never took a job stays registered at GitHub: remove it.
        if r.job_id.is_none()
            && let (Some(github_id), Some(owner)) = (r.github_id, self.config.owner(&r.owner))
        {
            let scope = self.scope(owner, r);
            if let Err(e) = self.github.delete_runner(&scope, github_id).await {
                warn!(runner = %r.name, error = %e, "cannot deregister the runner at GitHub");
            }
        }
    }

    async fn publish(
        &self,
        jobs: &[JobRecord],
        runners: &[RunnerRecord],
        waiting: BTreeMap<u64, WaitReason>,
        now: i64,
    ) -> Result<(), StoreError> {
        for (state, count) in self.store.job_states().await? {
            self.metrics
                .jobs
                .get_or_create(&StateLabels {
                    state: state.as_str().into(),
                })
                .set(count as i64);
        }
        for owner in &self.config.owners {
            let name = owner.name.to_ascii_lowercase();
            let depth = jobs.iter().filter(|j| j.owner == name).count();
            self.metrics
                .queue_depth
                .get_or_create(&OwnerLabels { owner: name })
                .set(depth as i64);
        }
        self.metrics.runners.clear();
        for r in runners {
            self.metrics
                .runners
                .get_or_create(&RunnerLabels {
                    state: r.lifecycle.as_str().into(),
                    owner: r.owner.clone(),
                    arch: r.arch.to_string(),
                })
                .inc();
        }
        self.decisions.update(|d| {
            d.waiting = waiting;
            d.activations += 1;
            d.last_activation_ms = now;
            d.last_error = None;
        });
        Ok(())
    }
}

/// `https://api.github.com` → `https://github.com`; `https://HOST/api/v3` → `https://HOST`.
fn web_url(api_url: &str) -> String {
    let trimmed = api_url.trim_end_matches('/');
    if let Some(host) = trimmed.strip_suffix("/api/v3") {
        return host.to_owned();
    }
    trimmed.replace("://api.", "://")
}

fn owner_limits(o: &OwnerConfig) -> OwnerLimits {
    OwnerLimits {
        name: o.name.to_ascii_lowercase(),
        max_runners: o.max_runners,
        labels: o.labels.clone(),
        // Org-wide runners only for owners serving all their repositories; a single-repository
        // owner (and every user account) registers runners per repository.
        repo_level: !o.all_repos || o.repo_name.is_some(),
    }
}

fn agent_supply(a: &AgentView) -> AgentSupply {
    AgentSupply {
        name: a.name.clone(),
        runtime: a.runtime,
        capacity: a.capacity_by_arch.clone(),
        max_runners: a.capacity,
        labels: a.labels.clone(),
        available: a.connected && a.healthy && !a.draining,
        owners: (!a.all_owners).then(|| a.owners.iter().cloned().collect()),
    }
}

fn job_from_rest(key: &RunKey, job: shared::github::Job, now: i64) -> Option<JobRecord> {
    let state = match job.status.as_str() {
        "queued" => JobState::Queued,
        "in_progress" => JobState::InProgress,
        "completed" => JobState::Completed,
        "waiting" | "pending" | "requested" => JobState::Waiting,
        _ => return None,
    };
    Some(JobRecord {
        id: job.id,
        run_id: job.run_id,
        owner: key.owner.clone(),
        repo: key.repo.clone(),
        name: job.name.unwrap_or_default(),
        labels: job.labels,
        state,
        runner_name: job.runner_name.filter(|n| !n.is_empty()),
        conclusion: job.conclusion,
        first_seen_ms: now,
        queued_ms: (state == JobState::Queued).then_some(now),
        updated_ms: now,
    })
}

#[cfg(test)]
mod tests {
    use super::web_url;

    #[test]
    fn the_web_url_follows_the_api_url() {
        assert_eq!(web_url("https://api.github.com"), "https://github.com");
        assert_eq!(
            web_url("https://ghe.example.com/api/v3/"),
            "https://ghe.example.com"
        );
    }
}
