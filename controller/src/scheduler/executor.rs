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
use shared::github::{CallKind, GithubApi, RepoRef, Scope};
use shared::ids::{AgentName, RunnerId};
use shared::logsafe::Untrusted;
use shared::owner::Owner;
use shared::runner::now_ms;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::backoff::{Blocked, Failure, Key};
use super::containment;
use super::journal;
use super::lifecycle::{self, AgentSeen, Ending, Observation, Report};
use super::memory::SchedulerMemory;
use super::planner::warm;
use super::planner::{
    self, ActiveRunner, AgentSupply, JobKey, OwnerLimits, PendingJob, PlanInput, Start, StopReason,
    WaitReason,
};
use super::registrar::{RegisterError, Registrar, RegistrationStatus};
use super::run_fetch;
use super::steps::{Step, Stopwatch};
use super::window;
use crate::config::{Config, OwnerConfig, RegistrationMode, RunnerDefaults};
use crate::metrics::{CauseLabels, Metrics, OutcomeLabels, OwnerLabels, RunnerLabels, StateLabels};
use crate::registry::{AgentRegistry, AgentView};
use crate::store::{
    ClassKey, JobRecord, JobState, QueueHead, RunKey, RunnerLifecycle, RunnerRecord, StateStore,
    StoreError,
};

/// Activations happen at least this often, even without a nudge.
const TICK: Duration = Duration::from_secs(2);
/// The least and most time between the starts of two activations.
const MIN_GAP: Duration = Duration::from_millis(20);
const MAX_GAP: Duration = Duration::from_millis(250);
/// A runner GitHub says is busy is not asked again for this long.
const BUSY_RECHECK_MS: i64 = 30_000;
/// Runner starts (registration, command, writes) in flight at once in a pass, and for one owner.
const STARTS_AT_ONCE: usize = 32;
const STARTS_AT_ONCE_PER_OWNER: usize = 8;
/// Run fetches attempted per activation.
const RUN_FETCHES_PER_ACTIVATION: usize = 32;
/// The lifecycle's time limits.
const LIMITS: lifecycle::Limits = lifecycle::Limits {
    start_deadline_ms: 10 * 60 * 1000,
    agent_lost_ms: 5 * 60 * 1000,
    stop_deadline_ms: 2 * 60 * 1000,
    boot_window_ms: 2 * 60 * 1000,
};

/// What the last activation decided, for `/status` and the jobs API.
#[derive(Debug, Clone, Default)]
pub struct Decisions {
    /// Why each queued job the last activation read is not running yet.
    /// Keyed by owner and job id.
    pub waiting: BTreeMap<JobKey, WaitReason>,
    /// Why the jobs it did not read wait (those behind a class's heads, see `window`): keyed by
    /// owner, repository and labels.
    pub class_waiting: BTreeMap<ClassKey, WaitReason>,
    pub activations: u64,
    pub last_activation_ms: i64,
    pub last_error: Option<String>,
    /// Causes whose starts are failing: back-offs and open circuits.
    pub containment: Vec<Blocked>,
    /// The latest sweep of each owner's registrations.
    pub sweeps: Vec<super::sweep::SweepReport>,
    /// Where runners register (owner kinds, groups, a GHES token fallback).
    pub registration: Option<RegistrationStatus>,
    /// The latest pass of failed-delivery recovery (`redelivery`).
    pub redelivery: Option<crate::redelivery::PassReport>,
    /// This installation's tag in runner names (`gha-{owner}-{installation}-…`, see
    /// [`super::naming`]).
    pub installation: String,
    /// Every owner's warm pools as the last activation left them.
    pub warm: Vec<warm::OwnerWarmStatus>,
}

impl Decisions {
    /// Why the queued `job` waits: its own reason if the last activation read it, else its
    /// class's.
    pub fn reason(&self, job: &JobRecord) -> Option<&WaitReason> {
        self.waiting.get(&(job.owner.clone(), job.id)).or_else(|| {
            self.class_waiting
                .get(&(job.owner.clone(), job.repo.clone(), job.labels.clone()))
        })
    }
}

/// A cloneable view of the scheduler's latest decisions.
#[derive(Clone, Default)]
pub struct DecisionsHandle(Arc<Mutex<Decisions>>);

impl DecisionsHandle {
    pub fn get(&self) -> Decisions {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Decisions)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

pub struct Scheduler {
    pub config: Arc<Config>,
    pub store: Arc<dyn StateStore>,
    pub registry: AgentRegistry,
    pub github: Arc<dyn GithubApi>,
    /// Registration targets (user vs org, groups, JIT or tokens), shared with the reconciler.
    pub registrar: Arc<Registrar>,
    pub metrics: Arc<Metrics>,
    /// Woken by the webhook handler and agent sessions.
    pub nudge: Arc<Notify>,
    pub decisions: DecisionsHandle,
    /// When this controller started (ms): agents not seen since are "away since" then.
    pub started_ms: i64,
    /// The names of this installation's runner registrations.
    pub names: super::naming::RunnerNames,
    /// Stops, deletions and strays between activations (only the scheduler's task uses it).
    pub state: SchedulerMemory,
    /// When each failing run fetch last failed (only the scheduler's task uses it; bounded by
    /// the pending fetches, each forgotten when fetched or given up).
    pub run_fetch_failures: Mutex<HashMap<RunKey, i64>>,
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
            self.metrics
                .scheduler_activation_seconds
                .observe(started.elapsed().as_secs_f64());
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
        let mut watch = Stopwatch::new();
        let result = self.pass(&mut watch).await;
        watch.record(&self.metrics.scheduler_step_seconds);
        result
    }

    /// One pass, its steps timed by `watch`.
    async fn pass(&self, watch: &mut Stopwatch) -> Result<(), ActivationError> {
        let now = now_ms();
        CallKind::JobServing.scope(self.fetch_runs()).await?;
        watch.lap(Step::FetchRuns);
        let agents = self.registry.snapshot();
        let runners = self.sync_runners(&agents, now).await?;
        watch.lap(Step::SyncRunners);
        let settling = self.settling(now).await?;
        watch.lap(Step::Settling);
        self.stop_strays(&agents, &runners, now).await?;
        watch.lap(Step::StopStrays);
        // Every GitHub call is classified here, at its call site, for the API budget: sweeps and
        // stale checks are background work (paused first when quota is low), registrations for
        // queued jobs keep a reserve, the rest serves jobs.
        CallKind::Background
            .scope(self.sweep_registrations(now))
            .await?;
        watch.lap(Step::Sweep);
        let owners: Vec<OwnerLimits> = self
            .config
            .owners
            .iter()
            .map(|o| owner_limits(o, self.registrar.repo_level(o)))
            .collect();
        let held_agents = self.held_agents(now);
        let supply: Vec<AgentSupply> = agents
            .iter()
            .filter(|a| a.connected)
            .map(|a| agent_supply(a, &self.config.runners.image))
            .map(|mut a| {
                // An agent whose starts back off takes none now; others may.
                if held_agents.iter().any(|b| {
                    b.key
                        == (Key::Agent {
                            agent: a.name.to_string(),
                        })
                }) {
                    a.available = false;
                }
                a
            })
            .collect();
        let presence: HashMap<&str, lifecycle::AgentPresence> = agents
            .iter()
            .map(|a| {
                let p = if a.connected {
                    lifecycle::AgentPresence::Connected
                } else {
                    lifecycle::AgentPresence::Disconnected
                };
                (a.name.as_str(), p)
            })
            .collect();
        let active: Vec<ActiveRunner> = runners
            .iter()
            .filter(|r| {
                let agent = presence
                    .get(r.agent.as_str())
                    .copied()
                    .unwrap_or(lifecycle::AgentPresence::NotYetSeen);
                lifecycle::holds_capacity(r.job_id.is_some(), agent, now, self.started_ms)
            })
            .map(|r| ActiveRunner {
                id: r.id.clone(),
                owner: r.owner.to_string(),
                repo: r.repo.clone(),
                agent: r.agent.clone(),
                arch: r.arch,
                labels: r.labels.clone(),
                busy: r.job_id.is_some(),
                running: r.lifecycle == RunnerLifecycle::Running,
                created_ms: r.created_ms,
                settling: false,
            })
            .chain(settling.iter().map(|r| ActiveRunner {
                id: r.id.clone(),
                owner: r.owner.to_string(),
                repo: r.repo.clone(),
                agent: r.agent.clone(),
                arch: r.arch,
                labels: r.labels.clone(),
                busy: false,
                running: false,
                created_ms: r.created_ms,
                settling: true,
            }))
            .collect();
        // Only the heads of the queue: in each class the jobs this pass could serve and one
        // more, whose reason the rest share (see `window`).
        let limits = window::head_limits(&owners, &supply, &active);
        let mut heads = self.store.queue_heads(limits.clone()).await?;
        let mut jobs = head_jobs(&heads);
        watch.lap(Step::QueueHeads);
        if CallKind::Background
            .scope(self.recheck_stale(&jobs, now))
            .await?
        {
            heads = self.store.queue_heads(limits).await?;
            jobs = head_jobs(&heads);
        }
        watch.lap(Step::Stale);
        let targets: Vec<(String, String)> = jobs
            .iter()
            .map(|j| (j.owner.to_string(), j.repo.clone()))
            .collect();
        CallKind::Registration
            .scope(self.registrar.prepare(&targets))
            .await;
        watch.lap(Step::Prepare);
        // Where runners register (repository or organization) depends on the owner kinds that
        // `prepare` may only now have learnt: the limits read before the queue do not know them,
        // and an organization's first runner would register at the repository otherwise.
        let owners: Vec<OwnerLimits> = self
            .config
            .owners
            .iter()
            .map(|o| owner_limits(o, self.registrar.repo_level(o)))
            .collect();

        // Jobs no runner can be registered for (unknown group, public repository in a closed
        // group, a registration failing with back-off) wait with the reason instead.
        let mut blocked = BTreeMap::new();
        let pending: Vec<PendingJob> = jobs
            .iter()
            // A job without labels (`runs-on: { group: ... }`) names no runner we could start;
            // `GET /api/v1/jobs/{id}` explains it. Any runner would match an empty set.
            .filter(|j| !j.labels.is_empty())
            .filter(|j| {
                let problem = self
                    .config
                    .owner(j.owner.as_str())
                    .and_then(|o| self.registrar.blocked(o, &j.repo, now));
                match problem {
                    Some(problem) => {
                        blocked.insert(
                            (j.owner.clone(), j.id),
                            WaitReason::Registration { problem },
                        );
                        false
                    }
                    None => true,
                }
            })
            .map(|j| PendingJob {
                id: j.id,
                owner: j.owner.to_string(),
                repo: j.repo.clone(),
                labels: j.labels.clone(),
                queued_ms: j.queued_ms.unwrap_or(j.first_seen_ms),
            })
            .collect();
        let input = PlanInput {
            owners: &owners,
            agents: &supply,
            jobs: &pending,
            runners: &active,
            global_labels: &self.config.runners.labels,
            now_ms: now,
            idle_grace_ms: self.config.runners.idle_grace.as_millis() as i64,
            runner_timeout_ms: self.config.runners.timeout.as_millis() as i64,
        };
        let mut plan = planner::plan(&input);
        let warm_pools = self.warm_pools(now);
        let warm_plan = warm::apply(
            &mut plan,
            &input,
            &warm::WarmInput {
                owners: &warm_pools,
                max_age_ms: self.config.runners.warm_max_age.as_millis() as i64,
            },
        );

        watch.lap(Step::Plan);
        let mut waiting = plan.waiting;
        waiting.extend(self.start_runners(&plan.starts, now).await?);
        watch.lap(Step::Starts);
        // Warm runners after the jobs' (the planner gave jobs the capacity first).
        let mut warm_status = warm_plan.status;
        for start in &warm_plan.starts {
            if let Some(held) = self.held_owner(&start.owner, now) {
                let why = containment::wait_reason(&held, now);
                if let Some(o) = warm_status.iter_mut().find(|o| o.owner == start.owner) {
                    o.detail = Some(format!("starts are held: {why:?}"));
                }
                continue;
            }
            let launch = Launch {
                for_job: None,
                owner: &start.owner,
                repo: start.repo.as_ref(),
                job_repo: start.repo.as_deref().unwrap_or_default(),
                agent: &start.agent,
                arch: start.arch,
                labels: &start.labels,
            };
            CallKind::Registration
                .scope(self.launch(launch, now))
                .await?;
        }
        self.decisions.update(|d| d.warm = warm_status);
        watch.lap(Step::Warm);
        if let Some(held) = held_agents.first() {
            for reason in waiting.values_mut() {
                if *reason == WaitReason::AgentsUnavailable {
                    *reason = containment::wait_reason(held, now);
                }
            }
        }
        for stop in &plan.stops {
            if let Some(r) = runners.iter().find(|r| r.id == stop.runner_id) {
                self.stop_runner(r, stop.reason, now).await;
            }
        }
        watch.lap(Step::Stops);
        waiting.extend(blocked);
        let class_waiting = window::class_reasons(&heads, &waiting, &owners);
        self.publish(&heads, &runners, waiting, class_waiting, now)
            .await?;
        watch.lap(Step::Publish);
        Ok(())
    }

    /// Fetches the jobs of requested or running workflow runs (level-triggered: a failed fetch
    /// stays pending and is retried with its own back-off, then given up; see [`run_fetch`]).
    async fn fetch_runs(&self) -> Result<(), StoreError> {
        let pending = self.store.run_fetch_attempts().await?;
        let plan = {
            let failed = self
                .run_fetch_failures
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            run_fetch::plan(&pending, &failed, now_ms(), RUN_FETCHES_PER_ACTIVATION)
        };
        for key in plan.give_up {
            warn!(run = key.run_id, repo = %key.repo, attempts = run_fetch::MAX_ATTEMPTS,
                  "giving up fetching a run's jobs; the reconciler asks again if the run changes");
            self.forget_fetch_failure(&key);
            self.metrics
                .run_fetches
                .get_or_create(&OutcomeLabels {
                    outcome: "given_up".into(),
                })
                .inc();
            self.store.finish_run_fetch(key).await?;
        }
        for key in plan.fetch {
            // Webhooks already told us about a job of this run that is not finished: they are
            // flowing for it, and fetching would spend a call to learn nothing. (A later job of
            // the run whose webhook was lost is found by the reconciler once the run changes.)
            let known = self.store.run_job_states(&key).await?;
            if known.iter().any(|s| *s != JobState::Completed) {
                debug!(
                    run = key.run_id,
                    "the run's jobs are known from webhooks; not fetched"
                );
                self.forget_fetch_failure(&key);
                self.metrics
                    .run_fetches
                    .get_or_create(&OutcomeLabels {
                        outcome: "covered_by_webhooks".into(),
                    })
                    .inc();
                self.store.finish_run_fetch(key).await?;
                continue;
            }
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
                    // Jobs no webhook told us of: what the REST API recovered.
                    let mut recovered = 0;
                    for r in &records {
                        if self.store.job(&r.owner, r.id).await?.is_none() {
                            recovered += 1;
                        }
                    }
                    if recovered > 0 {
                        info!(owner = %key.owner, run = key.run_id, jobs = recovered,
                              "recovered jobs no webhook told us of");
                        self.metrics.fleet.recovered(key.owner.as_str(), recovered);
                    }
                    self.store.upsert_jobs(records).await?;
                    self.forget_fetch_failure(&key);
                    self.metrics
                        .run_fetches
                        .get_or_create(&OutcomeLabels {
                            outcome: "fetched".into(),
                        })
                        .inc();
                    self.store.finish_run_fetch(key).await?;
                }
                Err(e) => {
                    warn!(run = key.run_id, repo = %Untrusted(&key.repo), error = %e, "cannot fetch a run's jobs; will retry after a back-off");
                    self.run_fetch_failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.clone(), now_ms());
                    self.metrics
                        .run_fetches
                        .get_or_create(&OutcomeLabels {
                            outcome: "failed".into(),
                        })
                        .inc();
                    self.store.fail_run_fetch(key, e.to_string()).await?;
                }
            }
        }
        Ok(())
    }

    fn forget_fetch_failure(&self, key: &RunKey) {
        self.run_fetch_failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Brings runner records in line with what agents report (the rules are
    /// [`lifecycle::next`]); returns the active ones.
    async fn sync_runners(
        &self,
        agents: &[AgentView],
        now: i64,
    ) -> Result<Vec<RunnerRecord>, StoreError> {
        let by_agent: HashMap<&str, &AgentView> =
            agents.iter().map(|a| (a.name.as_str(), a)).collect();
        let mut active = Vec::new();
        // The pass's changes, decided first and written together (below).
        let mut changed: Vec<Changed> = Vec::new();
        for mut r in self.store.active_runners().await? {
            let agent = by_agent.get(r.agent.as_str());
            let seen = match agent {
                Some(a) if a.connected => {
                    AgentSeen::Connected(a.runners.iter().find(|s| s.id.as_str() == r.id).map(
                        |s| Report {
                            phase: s.phase,
                            exit_code: s.exit_code,
                            reason: &s.reason,
                        },
                    ))
                }
                _ => AgentSeen::Away {
                    since_ms: agent.and_then(|a| a.disconnected_at_ms),
                },
            };
            let obs = Observation {
                agent: seen,
                stop_sent_ms: self.state.stop_sent(&r.id),
                now_ms: now,
                started_ms: self.started_ms,
            };
            if let Some(change) = lifecycle::next(&r, &obs, &LIMITS) {
                let started = change.lifecycle == RunnerLifecycle::Running
                    && r.lifecycle != RunnerLifecycle::Running;
                let settles = lifecycle::settles(&r, &obs, &change);
                r.lifecycle = change.lifecycle;
                r.exit_code = change.exit_code;
                r.reason = change.reason;
                r.updated_ms = now;
                let ending =
                    (!r.lifecycle.is_active()).then(|| lifecycle::ending(&r, &obs, &LIMITS));
                // The reason is the agent's words.
                info!(runner = %r.name, lifecycle = r.lifecycle.as_str(), reason = %Untrusted(&r.reason), "runner state");
                changed.push(Changed {
                    runner: r.clone(),
                    started,
                    settles,
                    ending,
                });
            }
            if r.lifecycle.is_active() {
                active.push(r);
            }
        }
        // Written concurrently, so the store commits them in one group (one fsync) instead of
        // one after another: a pass with hundreds of changes took seconds (bench fleet), and no
        // job is planned while a pass runs. What follows a change (metrics, settling, the
        // ending's accounting) happens only for the changes that were written; a failed write
        // is decided again at the next pass.
        let written = futures::future::join_all(
            changed
                .iter()
                .map(|c| self.store.upsert_runner(c.runner.clone())),
        )
        .await;
        let mut failure = None;
        let mut entries = Vec::new();
        let mut done = Vec::new();
        for (c, result) in changed.into_iter().zip(written) {
            match result {
                Ok(()) => {
                    entries.extend(journal::entry(
                        &c.runner,
                        now,
                        journal::state_change(&c.runner),
                    ));
                    done.push(c);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if !entries.is_empty()
            && let Err(error) = self.store.append_timeline(entries).await
        {
            debug!(%error, "cannot add the runners' state changes to their jobs' timelines");
        }
        for c in done {
            if c.started {
                self.observe_started(&c.runner).await;
            }
            if let Some(ending) = c.ending {
                if c.settles {
                    self.state.settle(c.runner.clone(), now);
                }
                self.runner_ended(&c.runner, ending, now).await;
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(active),
        }
    }

    /// The runners that ended cleanly moments ago whose job GitHub has not reported yet (those
    /// it has reported are forgotten here).
    async fn settling(&self, now: i64) -> Result<Vec<RunnerRecord>, StoreError> {
        let mut still = Vec::new();
        for r in self.state.settling(now) {
            let reported = self
                .store
                .runner_by_name(&r.name)
                .await?
                .is_none_or(|stored| stored.owner != r.owner || stored.job_id.is_some());
            if reported {
                self.state.settled(&r.id);
            } else {
                still.push(r);
            }
        }
        Ok(still)
    }

    /// A runner just finished: forget its stop, remove a registration it left behind, and feed
    /// the back-offs (a crash holds its owner's image, an engine refusal its agent).
    async fn runner_ended(&self, r: &RunnerRecord, ending: Ending, now: i64) {
        self.state.forget_stop(&r.id);
        let image = Key::Image {
            owner: r.owner.to_string(),
            image: self.config.runners.image.clone(),
        };
        match ending {
            Ending::Served => self.record_success(&image),
            Ending::Crashed => {
                let failure = Failure {
                    reason: format!(
                        "owner {}: runners of image {} end without taking a job (last: {}, exit code {})",
                        r.owner,
                        self.config.runners.image,
                        r.reason,
                        r.exit_code.map_or("none".into(), |c| c.to_string())
                    ),
                    permanent: false,
                };
                self.record_failure(image, failure, now);
            }
            Ending::Refused => {
                let failure = Failure {
                    reason: format!(
                        "agent {}: the runner failed to start: {}",
                        r.agent, r.reason
                    ),
                    permanent: false,
                };
                self.record_failure(
                    Key::Agent {
                        agent: r.agent.clone(),
                    },
                    failure,
                    now,
                );
            }
            Ending::Unused => {}
        }
        let token_mode = self.registrar.mode() == RegistrationMode::Token;
        match lifecycle::deregistration(token_mode, ending, r.github_id.is_some()) {
            lifecycle::Deregistration::None => {}
            lifecycle::Deregistration::ById => self.deregister(r).await,
            lifecycle::Deregistration::ByName => self.deregister_by_name(r).await,
        }
    }

    /// A runner whose GitHub id is not on record (token mode, or a JIT registration its
    /// controller died before recording): found by name.
    async fn deregister_by_name(&self, r: &RunnerRecord) {
        let Some(owner) = self.config.owner(r.owner.as_str()) else {
            return;
        };
        let scope = self.scope(owner, r);
        match self.github.list_runners(&scope).await {
            Ok(runners) => {
                if let Some(found) = runners
                    .iter()
                    .find(|x| x.name.eq_ignore_ascii_case(&r.name))
                {
                    let mut known = r.clone();
                    known.github_id = Some(found.id);
                    self.deregister(&known).await;
                }
            }
            Err(e) => {
                warn!(runner = %r.name, error = %e, "cannot list runners to deregister a runner found by name")
            }
        }
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
        let mut unknown = std::collections::HashSet::new();
        // A set: 10 000 reported runners against 10 000 active ones took 300 ms (bench fleet).
        let active: std::collections::HashSet<&str> =
            active.iter().map(|r| r.id.as_str()).collect();
        for agent in agents.iter().filter(|a| a.connected) {
            for state in &agent.runners {
                if state.phase.is_terminal() || active.contains(state.id.as_str()) {
                    continue;
                }
                let known = self.store.runner_by_name(&state.name).await?;
                if known.as_ref().is_some_and(|r| r.lifecycle.is_active()) {
                    continue;
                }
                // The grace counts from this controller's first sighting: the agent's
                // `observed_at` is renewed by every re-report of the same state, so a runner
                // re-reported more often than the grace would never be stopped.
                unknown.insert(state.id.to_string());
                if now - self.state.unknown_since(state.id.as_str(), now) < grace {
                    continue;
                }
                if !self.state.stray_due(state.id.as_str(), now) {
                    continue;
                }
                warn!(runner = %Untrusted(&state.name), agent = %agent.name, "stopping a runner this controller does not know");
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
        self.state.keep_unknown(&unknown);
        Ok(())
    }

    /// Adds `message` about runner `r` to its job's timeline; a failure is logged and dropped.
    async fn journal(&self, r: &RunnerRecord, now: i64, message: String) {
        if let Some(entry) = journal::entry(r, now, message)
            && let Err(error) = self.store.append_timeline(vec![entry]).await
        {
            debug!(runner = %r.name, %error, "cannot add to the job's timeline");
        }
    }

    async fn observe_started(&self, r: &RunnerRecord) {
        if let Some(job_id) = r.for_job
            && let Ok(Some(job)) = self.store.job(&r.owner, job_id).await
        {
            let from = job.queued_ms.unwrap_or(job.first_seen_ms);
            self.metrics.queue.started(
                job.owner.as_str(),
                &job.labels,
                (now_ms() - from).max(0) as f64 / 1000.0,
            );
        }
    }

    /// Starts the planned runners, up to [`STARTS_AT_ONCE`] at a time and
    /// [`STARTS_AT_ONCE_PER_OWNER`] for one owner, and returns the jobs whose start is held.
    ///
    /// One after another, each start waited for its own writes and its registration: a burst
    /// of 2 000 jobs took a pass of tens of seconds (bench fleet), during which no other job was
    /// planned. At once, the writes of the starts in flight share a group commit. The bounds
    /// keep an owner's registrations well inside GitHub's secondary limit of 100 concurrent
    /// requests per user or app ("Rate limits for the REST API": "No more than 100 concurrent
    /// requests are allowed"), and containment still works: an owner's first start of the pass
    /// goes alone (one refused registration then holds all the others, as one after another
    /// did), and each start checks whether its owner is held when it gets its turn, so a later
    /// failure holds the starts that have not begun (at most the owner's bound are in flight).
    async fn start_runners(
        &self,
        starts: &[Start],
        now: i64,
    ) -> Result<BTreeMap<(Owner, u64), WaitReason>, StoreError> {
        let all = tokio::sync::Semaphore::new(STARTS_AT_ONCE);
        let mut per_owner: HashMap<&str, tokio::sync::Semaphore> = HashMap::new();
        for start in starts {
            per_owner
                .entry(start.owner.as_str())
                .or_insert_with(|| tokio::sync::Semaphore::new(STARTS_AT_ONCE_PER_OWNER));
        }
        let held_reason = |start: &Start| {
            self.held(start, now)
                .map(|held| containment::wait_reason(&held, now))
        };
        let mut first = std::collections::HashSet::new();
        let outcomes = futures::future::join_all(starts.iter().map(|start| {
            let (all, mine) = (&all, &per_owner[start.owner.as_str()]);
            // The owner's first start takes all its permits: it goes alone.
            let permits = if first.insert(start.owner.as_str()) {
                STARTS_AT_ONCE_PER_OWNER as u32
            } else {
                1
            };
            async move {
                // Semaphores are fair, so an owner's starts begin in the planner's order.
                let _mine = mine
                    .acquire_many(permits)
                    .await
                    .expect("the semaphore is never closed");
                let _all = all.acquire().await.expect("the semaphore is never closed");
                // Checked when the start gets its turn: a failure before holds it.
                if let Some(reason) = held_reason(start) {
                    return Ok(Some(reason));
                }
                CallKind::Registration
                    .scope(self.start_runner(start, now))
                    .await?;
                Ok::<_, StoreError>(held_reason(start))
            }
        }))
        .await;
        let mut held = BTreeMap::new();
        let mut failure = None;
        for (start, outcome) in starts.iter().zip(outcomes) {
            match outcome {
                Ok(Some(reason)) => {
                    held.insert((Owner::new(&start.owner), start.for_job), reason);
                }
                Ok(None) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(held),
        }
    }

    async fn start_runner(&self, start: &Start, now: i64) -> Result<(), StoreError> {
        let launch = Launch {
            for_job: Some(start.for_job),
            owner: &start.owner,
            repo: start.repo.as_ref(),
            job_repo: &start.job_repo,
            agent: &start.agent,
            arch: start.arch,
            labels: &start.labels,
        };
        self.launch(launch, now).await
    }

    /// The pools of every owner that has some, as they apply at `now`.
    fn warm_pools(&self, now: i64) -> Vec<warm::OwnerPools> {
        self.config
            .owners
            .iter()
            .filter(|o| !o.warm.pools.is_empty())
            .map(|o| {
                let mode = match (&o.warm.schedule, self.registrar.repo_level(o)) {
                    (Some(s), _) if !s.matches(now) => warm::Mode::OutsideSchedule {
                        schedule: s.to_string(),
                    },
                    (_, false) => warm::Mode::Active { repo: None },
                    (_, true) => match &o.repo_name {
                        Some(repo) => warm::Mode::Active {
                            repo: Some(repo.clone()),
                        },
                        None => warm::Mode::Impossible {
                            reason: format!(
                                "runners of {} register per repository (a user account serving \
                                 all its repositories), so a warm runner would have to pick one: \
                                 no pool is kept",
                                o.name
                            ),
                        },
                    },
                };
                let mode = match &mode {
                    warm::Mode::Active { repo } => {
                        let repo = repo.as_deref().unwrap_or_default();
                        match self.registrar.blocked(o, repo, now) {
                            Some(problem) => warm::Mode::Held {
                                reason: format!("registration: {problem}"),
                            },
                            None => mode,
                        }
                    }
                    _ => mode,
                };
                warm::OwnerPools {
                    owner: o.name.to_ascii_lowercase(),
                    pools: o
                        .warm
                        .pools
                        .iter()
                        .map(|p| warm::Pool {
                            labels: p.labels.clone(),
                            min_idle: p.min_idle,
                        })
                        .collect(),
                    mode,
                }
            })
            .collect()
    }

    /// Registers and starts one runner: for a job (`for_job`) or warm.
    async fn launch(&self, start: Launch<'_>, now: i64) -> Result<(), StoreError> {
        let Some(owner) = self.config.owner(start.owner) else {
            return Ok(());
        };
        let mut id_bytes = [0u8; 6];
        rand::rng().fill_bytes(&mut id_bytes);
        let short = hex::encode(id_bytes);
        let mut record = RunnerRecord {
            id: format!("r-{short}"),
            name: self.names.name(start.owner, &short),
            owner: Owner::new(start.owner),
            repo: start.repo.cloned(),
            agent: start.agent.to_string(),
            arch: start.arch,
            labels: start.labels.to_vec(),
            lifecycle: RunnerLifecycle::Requested,
            for_job: start.for_job,
            job_id: None,
            github_id: None,
            exit_code: None,
            reason: String::new(),
            created_ms: now,
            updated_ms: now,
        };
        // Recorded first: the owner's limit counts it from now on, whatever happens next.
        self.store.upsert_runner(record.clone()).await?;
        debug!(target: shared::stage::TARGET, stage = shared::stage::names::RUNNER_RECORDED,
               job = start.for_job, runner = %record.name, "stage");
        let owner_key = Key::Owner {
            owner: start.owner.to_owned(),
        };
        let outcome = match self.registration(owner, &record).await {
            Ok((registration, github_id)) => {
                debug!(target: shared::stage::TARGET, stage = shared::stage::names::REGISTERED,
                       runner = %record.name, "stage");
                self.record_success(&owner_key);
                record.github_id = github_id;
                let spec = self.spec(&record, registration, start.job_repo);
                let sent = self
                    .registry
                    .send(start.agent, AgentCommand::StartRunner(Box::new(spec)));
                match sent {
                    Ok(()) => {
                        debug!(target: shared::stage::TARGET, stage = shared::stage::names::START_SENT,
                               runner = %record.name, "stage");
                        self.record_success(&Key::Agent {
                            agent: start.agent.to_string(),
                        });
                        Ok(())
                    }
                    Err(e) => {
                        // The registration exists but no runner will use it: remove it.
                        self.deregister(&record).await;
                        let reason = format!("agent {}: cannot take the runner: {e}", start.agent);
                        let failure = Failure {
                            reason: reason.clone(),
                            permanent: false,
                        };
                        let agent = Key::Agent {
                            agent: start.agent.to_string(),
                        };
                        self.record_failure(agent, failure, now);
                        Err(("agent", reason))
                    }
                }
            }
            Err(RegisterError::Github { what, source }) => {
                let failure = containment::github_failure(
                    start.owner,
                    what,
                    &self.config.github_api_url,
                    &source,
                );
                let reason = failure.reason.clone();
                self.record_failure(owner_key, failure, now);
                Err(("github", reason))
            }
            // Refused before asking GitHub (a JIT limit, an unknown runner group): the
            // registrar holds the owner's jobs with that reason itself.
            Err(RegisterError::Local(problem)) => Err(("refused", problem)),
        };
        record.updated_ms = now_ms();
        // One line per decision, with every id an operator searches by (issue 14 §4): the
        // job's last webhook delivery comes from its stored timeline.
        let delivery = match start.for_job {
            Some(job) => self
                .store
                .job_timeline(&shared::owner::Owner::new(start.owner), job)
                .await
                .ok()
                .and_then(|t| crate::store::timeline::last_delivery(&t)),
            None => None,
        };
        match outcome {
            Ok(()) => {
                info!(decision = "start", outcome = "sent", job = start.for_job, runner = %record.name,
                      agent = %record.agent, owner = %start.owner, delivery = delivery.as_deref(),
                      warm = start.for_job.is_none(), "scheduling decision: runner starting");
                let text = format!(
                    "decided: runner {} starts on agent {}",
                    record.name, record.agent
                );
                self.journal(&record, now, text).await;
                record.lifecycle = RunnerLifecycle::Starting;
                self.metrics.runner_start("sent", "started");
            }
            Err((why, reason)) => {
                warn!(decision = "start", outcome = "failed", job = start.for_job, runner = %record.name,
                      agent = %record.agent, owner = %start.owner, delivery = delivery.as_deref(),
                      %reason, cause = why, "scheduling decision: could not start a runner; the job stays queued");
                let text = format!(
                    "could not start runner {} on agent {}: {reason}",
                    record.name, record.agent
                );
                self.journal(&record, now, text).await;
                record.lifecycle = RunnerLifecycle::Finished;
                record.reason = reason;
                self.metrics.runner_start("failed", why);
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
    ) -> Result<(Registration, Option<u64>), RegisterError> {
        self.registrar.register(owner, record, &self.metrics).await
    }

    fn spec(
        &self,
        record: &RunnerRecord,
        registration: Registration,
        job_repo: &str,
    ) -> RunnerSpec {
        runner_spec(&self.config.runners, record, registration, job_repo)
    }

    pub(super) async fn stop_runner(&self, r: &RunnerRecord, why: StopReason, now: i64) {
        let Ok(agent) = AgentName::parse(&r.agent) else {
            return;
        };
        let Ok(id) = RunnerId::parse(&r.id) else {
            return;
        };
        if self.state.stop_sent(&r.id).is_none()
            && matches!(
                why,
                StopReason::Idle | StopReason::WarmExpired | StopReason::MakeRoom
            )
            && self.busy_at_github(r, now).await
        {
            return;
        }
        if !self.state.stop_due(&r.id, now) {
            return;
        }
        let reason = format!("{why:?}").to_ascii_lowercase();
        info!(decision = "stop", job = r.job_id.or(r.for_job), runner = %r.name, agent = %r.agent,
              owner = %r.owner, %reason, "scheduling decision: stopping runner");
        self.journal(
            r,
            now,
            format!("decided: stop runner {} ({reason})", r.name),
        )
        .await;
        if let Err(e) = self
            .registry
            .send(&agent, AgentCommand::StopRunner { id, reason })
        {
            warn!(runner = %r.name, error = %e, "cannot send stop");
        }
        // An ephemeral runner that never took a job stays registered at GitHub: remove it.
        if r.job_id.is_none() {
            self.deregister(r).await;
        }
    }

    /// Before an idle runner is stopped, GitHub must agree it is idle: a runner that took a job
    /// whose webhooks were lost looks idle here but is `busy` there. When GitHub cannot be asked,
    /// the runner is kept (it is stopped at `RUNNER_TIMEOUT` at the latest).
    async fn busy_at_github(&self, r: &RunnerRecord, now: i64) -> bool {
        if self.state.busy_vetoed(&r.id, now) {
            return true;
        }
        let (Some(github_id), Some(owner)) = (r.github_id, self.config.owner(r.owner.as_str()))
        else {
            return false;
        };
        let busy = match self
            .github
            .get_runner(&self.scope(owner, r), github_id)
            .await
        {
            Ok(runner) => runner.busy,
            // Not registered (any more): nothing runs on it.
            Err(e) if e.is_not_found() => false,
            Err(e) => {
                warn!(runner = %r.name, error = %e, "cannot ask GitHub whether the runner is busy; keeping it");
                true
            }
        };
        if busy {
            info!(runner = %r.name, "idle here but busy at GitHub (its job's webhooks were lost?); not stopping it");
            self.metrics.containment.idle_stops_vetoed.inc();
            self.state.veto_busy(&r.id, now + BUSY_RECHECK_MS);
        }
        busy
    }

    /// Deletes the runner's registration at GitHub, once (a DELETE is not re-sent every pass).
    async fn deregister(&self, r: &RunnerRecord) {
        let (Some(github_id), Some(owner)) = (r.github_id, self.config.owner(r.owner.as_str()))
        else {
            return;
        };
        if !self.state.claim_delete(&r.owner, github_id, now_ms()) {
            return;
        }
        let scope = self.scope(owner, r);
        match self.github.delete_runner(&scope, github_id).await {
            Ok(()) => debug!(runner = %r.name, "registration deleted"),
            // Gone already (GitHub removes an ephemeral runner after its job).
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                warn!(runner = %r.name, error = %e, "cannot deregister the runner at GitHub; retrying later");
                self.state.release_delete(&r.owner, github_id);
            }
        }
    }

    async fn publish(
        &self,
        heads: &[QueueHead],
        runners: &[RunnerRecord],
        waiting: BTreeMap<JobKey, WaitReason>,
        class_waiting: BTreeMap<ClassKey, WaitReason>,
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
            let depth: u64 = heads
                .iter()
                .filter(|h| h.owner == name.as_str())
                .map(|h| h.queued)
                .sum();
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
                    owner: r.owner.to_string(),
                    arch: r.arch.to_string(),
                })
                .inc();
        }
        self.metrics.containment.jobs_held.clear();
        for reason in waiting.values() {
            if let WaitReason::BackingOff {
                cause,
                circuit_open,
                ..
            } = reason
            {
                let kind = if *circuit_open { "circuit" } else { "backoff" };
                self.metrics
                    .containment
                    .jobs_held
                    .get_or_create(&CauseLabels {
                        cause: cause.clone(),
                        kind: kind.into(),
                    })
                    .inc();
            }
        }
        let containment = self.backoffs(|b| b.all());
        self.decisions.update(|d| {
            d.containment = containment;
            d.waiting = waiting;
            d.class_waiting = class_waiting;
            d.activations += 1;
            d.last_activation_ms = now;
            d.last_error = None;
            d.registration = Some(self.registrar.status());
        });
        Ok(())
    }
}

/// One runner to register and start, for a job or for a warm pool.
struct Launch<'a> {
    /// `None`: a warm runner.
    for_job: Option<u64>,
    owner: &'a str,
    /// Set for repository-level registration.
    repo: Option<&'a String>,
    /// Where its caches are kept (empty: no repository).
    job_repo: &'a str,
    agent: &'a AgentName,
    arch: shared::arch::Arch,
    labels: &'a [String],
}

fn owner_limits(o: &OwnerConfig, repo_level: bool) -> OwnerLimits {
    OwnerLimits {
        name: o.name.to_ascii_lowercase(),
        max_runners: o.max_runners,
        labels: o.labels.clone(),
        // Org-wide runners only for organizations serving all their repositories; a
        // single-repository owner and every user account register per repository.
        repo_level,
    }
}

/// `a` as the planner sees it; `image` is the runner image (`RUNNER_IMAGE`).
fn agent_supply(a: &AgentView, image: &str) -> AgentSupply {
    AgentSupply {
        has_image: a
            .images
            .iter()
            .any(|i| i.image == image && i.state == shared::image::ImageState::Present),
        name: a.name.clone(),
        runtime: a.runtime,
        capacity: a.capacity_by_arch.clone(),
        max_runners: a.capacity,
        labels: a.labels.clone(),
        available: a.connected && a.healthy && !a.draining,
        owners: (!a.all_owners).then(|| a.owners.iter().cloned().collect()),
    }
}

/// The jobs of `heads`, oldest first (as [`StateStore::queued_jobs`] orders them).
fn head_jobs(heads: &[QueueHead]) -> Vec<JobRecord> {
    let mut jobs: Vec<JobRecord> = heads
        .iter()
        .flat_map(|h| h.oldest.iter().cloned())
        .collect();
    jobs.sort_by_key(|j| (j.queued_ms, j.id));
    jobs
}

pub(super) fn job_from_rest(key: &RunKey, job: shared::github::Job, now: i64) -> Option<JobRecord> {
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

/// The cache every runner gets when `CACHE_VOLUMES` is on: its name and mount path. The agent
/// names the volume (per repository by default, see `CACHE_VOLUME_SCOPE` on the agent).
pub const TOOL_CACHE: (&str, &str) = ("toolcache", "/opt/hostedtoolcache");

/// What an agent is told to start for `record`, whose job is in `job_repo`.
pub fn runner_spec(
    defaults: &RunnerDefaults,
    record: &RunnerRecord,
    registration: Registration,
    job_repo: &str,
) -> RunnerSpec {
    let mut volumes = BTreeMap::new();
    if defaults.cache_volumes {
        volumes.insert(TOOL_CACHE.0.to_owned(), TOOL_CACHE.1.to_owned());
    }
    RunnerSpec {
        id: RunnerId::parse(&record.id).expect("runner ids are generated valid"),
        name: record.name.clone(),
        image: defaults.image.clone(),
        launch: defaults.launch.clone(),
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
        owner: record.owner.to_string(),
        repository: (!job_repo.is_empty()).then(|| job_repo.to_owned()),
    }
}

/// One runner's change decided in a pass, and what follows it once it is written.
struct Changed {
    runner: RunnerRecord,
    /// It now runs (it did not before): the queue-time metric.
    started: bool,
    /// It ended cleanly and its job's report may still be on its way.
    settles: bool,
    /// It ended, and how.
    ending: Option<lifecycle::Ending>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::arch::Arch;
    use shared::command::ImageLaunch;

    use super::*;

    #[test]
    fn a_spec_names_the_cache_and_the_jobs_repository_and_the_agent_names_the_volume() {
        let defaults = RunnerDefaults {
            image: "runner".into(),
            launch: ImageLaunch::default(),
            timeout: Duration::from_secs(60),
            cache_volumes: true,
            kubernetes_pvcs: false,
            labels: vec![],
            registration: RegistrationMode::Jit,
            idle_grace: Duration::from_secs(60),
            warm_max_age: Duration::from_secs(3600),
            stray_grace: Duration::from_secs(60),
        };
        let record = RunnerRecord {
            id: "r-1".into(),
            name: "gha-acme-1".into(),
            owner: "acme".into(),
            repo: None,
            agent: "host-1".into(),
            arch: Arch::Amd64,
            labels: vec![],
            lifecycle: RunnerLifecycle::Requested,
            for_job: Some(7),
            job_id: None,
            github_id: None,
            exit_code: None,
            reason: String::new(),
            created_ms: 0,
            updated_ms: 0,
        };
        let spec = runner_spec(
            &defaults,
            &record,
            Registration::JitConfig("j".into()),
            "app",
        );
        // The cache's name only: a volume name here was prefixed again by the agent
        // (`gha-cache-acme-amd64-gha-cache-acme-amd64-toolcache-0`).
        assert_eq!(
            spec.cache.volumes,
            BTreeMap::from([("toolcache".to_owned(), "/opt/hostedtoolcache".to_owned())])
        );
        assert_eq!(spec.repository.as_deref(), Some("app"));
        assert_eq!(
            runner_spec(&defaults, &record, Registration::JitConfig("j".into()), "").repository,
            None
        );
    }
}
