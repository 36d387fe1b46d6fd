//! The Docker runtime: ephemeral runner containers on the local engine, through bollard.
//!
//! - [`config`]: the runtime's settings (`DOCKER_HOST`, `RUNNER_NETWORK`, limits, caches, …).
//! - [`spec`]: the pure mapping from a [`RunnerSpec`] to a container (env by image convention,
//!   labels, mounts, limits).
//! - [`engine`]: the lazily built, version-negotiated client and its typed errors.
//! - [`image`]: pulls of missing images, and what an image says about itself, from which
//!   [`crate::runtime::launch`] decides entry point, command and registration variables; the
//!   program it would run first is looked up in the created container before it is started.
//! - [`mirror`]: `REGISTRY_MIRROR`, Docker Hub pulls through a mirror.
//! - `program`: the check that a created container is of the image inspected for it and
//!   holds the program it runs first, remembered per image id.
//! - `prepull`: the controller's runner images pulled ahead of need (bounded, retried, given
//!   up on), with their states on the agent's image board; `platform`: the check that an image
//!   is built for the runner's architecture, before any runner of it starts.
//! - `events`: the engine's event stream, the only source of `running` and `exited`, and the
//!   clean-up of exited containers.
//! - `inventory`: what exists now (on start and on every return of the event stream), adoption
//!   of running containers, and strays.
//!
//! State: one `Tracked` entry per runner container this agent knows (started or adopted),
//! with its container id, the cache volumes it leases, its timeout timer and why it is ending.
//! Ownership is by label ([`labels`]): the agent only ever lists, watches, adopts and removes
//! containers labelled with its own name. Dropping the runtime (stopping the agent) stops the
//! event watcher and timers, never a runner.

pub mod config;
pub mod engine;
mod events;
pub mod image;
mod inventory;
pub mod labels;
pub mod mirror;
mod platform;
mod prepull;
mod program;
pub mod spec;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use shared::arch::RuntimeKind;
use shared::command::RunnerSpec;
use shared::ids::RunnerId;
use shared::runner::{RunnerPhase, RunnerState};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::config::{CacheSharing, DockerSettings};
use self::engine::{DockerError, Engine, status_of};
use self::image::LocalImage;
use self::spec::{CacheMount, Placement};
use super::launch::{self, ImageFacts, Plan};
use super::{EventSink, RunnerRuntime, RuntimeError};
use crate::connection::error_chain;
use shared::stage::names;

/// Marks a cold start's stage (see [`shared::stage`]).
fn stage(name: &'static str, runner: &str) {
    tracing::debug!(target: shared::stage::TARGET, stage = name, runner, "stage");
}

/// One runner container this agent knows.
#[derive(Debug)]
struct Tracked {
    name: String,
    /// Unknown until the container is created.
    container: Option<String>,
    /// Cache volumes it mounts (leased, so no other runner mounts them meanwhile).
    caches: Vec<String>,
    /// Why it is ending, when we ended it (stop, timeout) or the engine told us (OOM).
    ending: Option<String>,
    timer: Option<AbortHandle>,
}

/// Who reports a container's exit (see `Inner::claim_finish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// The caller: read the exit, report it, remove the container.
    Mine,
    /// Someone else is reading it now: leave it to them.
    InProgress,
    /// Already reported (its removal may still be due).
    Reported,
}

/// How many finished containers are remembered, so replayed events about them are ignored.
const FINISHED_MEMORY: usize = 1024;

#[derive(Default)]
struct State {
    runners: HashMap<RunnerId, Tracked>,
    /// Containers whose exit was reported (oldest first), so replayed events about them are
    /// ignored.
    finished: std::collections::VecDeque<String>,
    /// Containers whose exit is being read right now (by the event handler or an inventory):
    /// the one that claimed it reports it, the other leaves it alone (see `claim_finish`).
    finishing: std::collections::HashSet<String>,
    /// The controller this agent last registered with (the `controller` label of new objects).
    controller: String,
    /// Runners stopped before their start got as far as tracking them: their start gives up.
    cancelled: std::collections::HashSet<RunnerId>,
    /// Why the event stream is down, while it is.
    watch_error: Option<String>,
    /// Where the controller's runner images are reported (the last set's), so a start that
    /// pulls one records it present.
    images: Option<crate::images::ImageReporter>,
}

pub(crate) struct Inner {
    engine: Engine,
    settings: DockerSettings,
    agent: String,
    /// The installation whose objects are ours (see [`labels::installation_id`]); `None` for
    /// runtimes made without one (then ownership is by agent name alone).
    installation: Option<String>,
    sink: EventSink,
    // Short sections only, never across an await.
    state: Mutex<State>,
    puller: image::Puller,
    /// Programs already found in images (short sections only, never across an await).
    programs: Mutex<program::ProgramsSeen>,
    /// Cancelled when the runtime is dropped: ends the watcher and the stray sweeps.
    stop: CancellationToken,
}

/// The Docker runtime. Construct it inside a tokio runtime: it starts its event watcher.
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

impl Drop for DockerRuntime {
    fn drop(&mut self) {
        // Stops watching; the runners keep running.
        self.inner.stop.cancel();
        for tracked in self.inner.lock().runners.values() {
            if let Some(timer) = &tracked.timer {
                timer.abort();
            }
        }
    }
}

fn runtime_error(e: &DockerError) -> RuntimeError {
    RuntimeError(error_chain(e))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl DockerRuntime {
    /// A runtime for the agent named `agent` (its certificate identity), reporting on `sink`,
    /// that tells its objects apart by agent name alone; see [`DockerRuntime::for_installation`].
    pub fn new(settings: DockerSettings, agent: &str, sink: EventSink) -> Self {
        Self::for_installation(settings, agent, None, sink)
    }

    /// A runtime whose objects carry `installation` as well as the agent's name, and which
    /// lists, adopts and removes only objects that carry both.
    pub fn for_installation(
        mut settings: DockerSettings,
        agent: &str,
        installation: Option<String>,
        sink: EventSink,
    ) -> Self {
        if let Some(id) = &installation {
            // On everything we create, like RUNNER_CONTAINER_LABELS.
            settings
                .extra_labels
                .insert(labels::INSTALLATION.to_owned(), id.clone());
        }
        if !settings.platform_check {
            warn!(
                "IMAGE_PLATFORM_CHECK=false: runner images are not checked against the runner's \
                 architecture"
            );
        }
        if settings.mount_docker_socket {
            warn!(
                "RUNNER_DOCKER_SOCKET=true: every job can control this host's Docker engine (root \
                 on the host); use only for trusted repositories"
            );
        }
        let inner = Arc::new(Inner {
            engine: Engine::new(settings.host.clone()),
            settings,
            agent: agent.to_owned(),
            installation,
            sink,
            state: Mutex::new(State::default()),
            puller: image::Puller::default(),
            programs: Mutex::default(),
            stop: CancellationToken::new(),
        });
        tokio::spawn(events::watch(inner.clone()));
        Self { inner }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn list_options(&self) -> ListContainersOptions {
        ListContainersOptions {
            all: true,
            filters: Some(labels::agent_filter(
                &self.agent,
                self.installation.as_deref(),
            )),
            ..Default::default()
        }
    }

    /// Starts tracking a new runner: picks its cache volumes and leases them (exclusive: the
    /// lowest free slot of each cache; shared: the one volume). `None` when the runner was
    /// stopped before it got here.
    /// Caches are keyed by [`CacheScope::key`](crate::runtime::cache_scope::CacheScope::key);
    /// a runner whose repository is not known in the repository scope gets none.
    fn lease_caches(&self, spec: &RunnerSpec) -> Option<Vec<CacheMount>> {
        let mut requested = spec::requested_caches(spec);
        let whose = self.settings.cache_scope.key(spec);
        if whose.is_none() && !requested.is_empty() {
            warn!(
                runner = %spec.id,
                "no cache volumes: the controller did not say which repository the runner is for"
            );
            requested.clear();
        }
        let whose = whose.unwrap_or_default();
        let mut st = self.lock();
        if st.cancelled.remove(&spec.id) {
            return None;
        }
        let taken: std::collections::HashSet<String> = st
            .runners
            .values()
            .flat_map(|t| t.caches.iter().cloned())
            .collect();
        let mounts: Vec<CacheMount> = requested
            .into_iter()
            .map(|(cache, path)| {
                let prefix = &self.settings.cache_prefix;
                let volume = match self.settings.cache_sharing {
                    CacheSharing::Shared => spec::volume_name(prefix, &whose, spec, &cache, None),
                    CacheSharing::Exclusive => (0u32..)
                        .map(|slot| spec::volume_name(prefix, &whose, spec, &cache, Some(slot)))
                        .find(|name| !taken.contains(name))
                        .unwrap_or_default(),
                };
                CacheMount {
                    cache,
                    volume,
                    path,
                }
            })
            .collect();
        st.runners.insert(
            spec.id.clone(),
            Tracked {
                name: spec.name.clone(),
                container: None,
                caches: mounts.iter().map(|m| m.volume.clone()).collect(),
                ending: None,
                timer: None,
            },
        );
        Some(mounts)
    }

    /// Claims the report of `container`'s exit: only one of the event handler and an
    /// inventory (the agent's own at start, the watcher's after each subscription) may read
    /// and report it, or one of them could find it removed by the other and report exit -1.
    fn claim_finish(&self, container: &str) -> Claim {
        let mut st = self.lock();
        if st.finished.iter().any(|c| c == container) {
            Claim::Reported
        } else if !st.finishing.insert(container.to_owned()) {
            Claim::InProgress
        } else {
            Claim::Mine
        }
    }

    /// Remembers that `container`'s exit was reported (and ends its claim).
    fn mark_finished(&self, container: &str) {
        let mut st = self.lock();
        st.finishing.remove(container);
        if !st.finished.iter().any(|c| c == container) {
            if st.finished.len() >= FINISHED_MEMORY {
                st.finished.pop_front();
            }
            st.finished.push_back(container.to_owned());
        }
    }

    fn is_finished(&self, container: &str) -> bool {
        self.lock().finished.iter().any(|c| c == container)
    }

    fn forget(&self, id: &RunnerId) -> Option<Tracked> {
        let tracked = self.lock().runners.remove(id);
        if let Some(timer) = tracked.as_ref().and_then(|t| t.timer.as_ref()) {
            timer.abort();
        }
        tracked
    }

    /// Stops the runner's container when `deadline_ms` (Unix milliseconds) passes.
    fn arm_timeout(self: &Arc<Self>, id: &RunnerId, deadline_ms: i64) {
        let left = deadline_ms.saturating_sub(shared::runner::now_ms()).max(0);
        // A year stands for "never" (a container without a readable deadline).
        let wait = Duration::from_millis(left as u64).min(Duration::from_secs(365 * 86_400));
        let inner = self.clone();
        let runner = id.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(container) = ({
                let mut st = inner.lock();
                st.runners.get_mut(&runner).and_then(|t| {
                    t.ending = Some("timed out: stopped by the agent".into());
                    t.container.clone()
                })
            }) else {
                return;
            };
            warn!(runner = %runner, "runner timed out; stopping it");
            inner.stop_container(&container).await;
        })
        .abort_handle();
        if let Some(t) = self.lock().runners.get_mut(id) {
            if let Some(old) = t.timer.replace(timer) {
                old.abort();
            }
        } else {
            timer.abort();
        }
    }

    async fn stop_container(&self, container: &str) {
        let grace = self.settings.stop_grace.as_secs().max(1) as i32;
        let result = async {
            let docker = self.engine.client().await?;
            docker
                .stop_container(
                    container,
                    Some(StopContainerOptions {
                        t: Some(grace),
                        signal: None,
                    }),
                )
                .await
                .map_err(|e| {
                    self.engine
                        .classify(format!("stop container {container}"), e)
                })
        }
        .await;
        match result {
            Ok(()) => {}
            Err(DockerError::Api { source, .. }) if status_of(&source) == Some(404) => {}
            Err(e) => warn!(%container, error = %error_chain(&e), "cannot stop a runner container"),
        }
    }

    async fn start(self: &Arc<Self>, mut spec: RunnerSpec) -> Result<(), DockerError> {
        let docker = self.engine.client().await?;
        let engine_nano_cpus = self.engine.nano_cpus(&docker).await;
        let controller = self.lock().controller.clone();
        let Some(caches) = self.lease_caches(&spec) else {
            return Err(DockerError::StoppedBeforeStart {
                runner: spec.id.to_string(),
            });
        };
        let placement = Placement {
            agent: self.agent.clone(),
            controller,
            deadline_ms: shared::runner::now_ms()
                .saturating_add(spec.timeout.as_millis().min(i64::MAX as u128) as i64),
            caches,
            engine_nano_cpus,
        };
        // The image and the cache volumes do not depend on each other: both are made ready at
        // once, and the container is created only when both are (an image refused for its
        // platform is still never started).
        let (image, volumes) = tokio::join!(
            self.prepare_image(&docker, &spec),
            self.create_volumes(&docker, &spec, &placement)
        );
        let outcome = match (image, volumes) {
            (Ok(_), Ok(())) if self.stopping(&spec.id) => Err(DockerError::StoppedBeforeStart {
                runner: spec.id.to_string(),
            }),
            (Ok((local, facts, plan)), Ok(())) => {
                // The local reference: the mirror's name of an image pulled through
                // REGISTRY_MIRROR.
                spec.image = local.reference;
                let image_id = local.inspected.id.as_deref();
                self.create_and_start(&docker, &spec, &placement, (&plan, &facts, image_id))
                    .await
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        match outcome {
            Ok(container) => {
                let stopped_meanwhile = {
                    let mut st = self.lock();
                    st.runners.get_mut(&spec.id).is_some_and(|t| {
                        t.container = Some(container.clone());
                        t.ending.is_some()
                    })
                };
                self.arm_timeout(&spec.id, placement.deadline_ms);
                if stopped_meanwhile {
                    info!(runner = %spec.id, "stopped while it was starting; stopping it now");
                    self.stop_container(&container).await;
                }
                Ok(())
            }
            Err(e) => {
                self.forget(&spec.id);
                Err(e)
            }
        }
    }

    /// The runner's image ready to run ([`Inner::make_ready`]) and how to start it: the local
    /// reference, what the image says about itself, and the launch plan.
    async fn prepare_image(
        &self,
        docker: &bollard::Docker,
        spec: &RunnerSpec,
    ) -> Result<(LocalImage, ImageFacts, Plan), DockerError> {
        let local = self
            .make_ready(docker, &spec.image, spec.arch, &|_, _, _| {})
            .await?;
        self.image_ready(&spec.image);
        let facts = image::facts(&local.inspected);
        let plan = launch::detect(spec, &facts)
            .and_then(|layout| launch::plan(layout, spec))
            .map_err(|source| DockerError::Launch {
                image: local.reference.clone(),
                source,
            })?;
        info!(runner = %spec.id, image = %local.reference, layout = ?plan.layout, "runner image layout");
        stage(names::IMAGE_READY, &spec.name);
        Ok((local, facts, plan))
    }

    /// The runner's cache volumes (creating one that exists changes nothing).
    async fn create_volumes(
        &self,
        docker: &bollard::Docker,
        spec: &RunnerSpec,
        placement: &Placement,
    ) -> Result<(), DockerError> {
        for mount in &placement.caches {
            let request = spec::volume_request(spec, &self.settings, placement, mount);
            docker.create_volume(request).await.map_err(|e| {
                self.engine
                    .classify(format!("create volume {}", mount.volume), e)
            })?;
        }
        stage(names::VOLUMES_READY, &spec.name);
        Ok(())
    }

    /// Whether runner `id`, tracked but not created yet, was stopped meanwhile.
    fn stopping(&self, id: &RunnerId) -> bool {
        self.lock()
            .runners
            .get(id)
            .is_some_and(|t| t.ending.is_some())
    }

    async fn create_and_start(
        &self,
        docker: &bollard::Docker,
        spec: &RunnerSpec,
        placement: &Placement,
        (plan, facts, image_id): (&Plan, &ImageFacts, Option<&str>),
    ) -> Result<String, DockerError> {
        let (body, dropped) = spec::container_body(spec, &self.settings, placement, plan);
        let check = program::Check {
            spec,
            plan,
            facts,
            image_id,
            covered: program::path_to_check(plan, facts)
                .is_some_and(|path| program::covered_by_mount(&body, &path)),
        };
        if !dropped.is_empty() {
            warn!(
                runner = %spec.id,
                variables = ?dropped,
                "not passing variables that would carry a GitHub credential"
            );
        }
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    platform: String::new(),
                }),
                body,
            )
            .await;
        let container = match created {
            Ok(c) => c.id,
            Err(e) if status_of(&e) == Some(409) => {
                // A replayed start, or an agent that died between create and start: the same
                // runner's container is reused; anyone else's name is not taken over.
                let existing = docker
                    .inspect_container(&spec.name, None)
                    .await
                    .map_err(|e| self.engine.classify(format!("inspect {}", spec.name), e))?;
                let owner = existing
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(labels::RUNNER_ID).cloned());
                if owner.as_deref() != Some(spec.id.as_str()) {
                    return Err(DockerError::NameTaken {
                        name: spec.name.clone(),
                        runner: spec.id.to_string(),
                    });
                }
                existing.id.unwrap_or_else(|| spec.name.clone())
            }
            Err(e) => {
                return Err(self
                    .engine
                    .classify(format!("create container {}", spec.name), e));
            }
        };
        stage(names::CONTAINER_CREATED, &spec.name);
        if let Some(t) = self.lock().runners.get_mut(&spec.id) {
            t.container = Some(container.clone());
        }
        let started = match self.check_container(docker, &container, &check).await {
            Ok(()) => {
                stage(names::PROGRAM_CHECKED, &spec.name);
                docker.start_container(&container, None).await.map_err(|e| {
                    self.engine
                        .classify(format!("start container {}", spec.name), e)
                })
            }
            Err(e) => Err(e),
        };
        if let Err(error) = started {
            // Forgotten first, so the removal's `destroy` event is not taken for a loss.
            self.forget(&spec.id);
            let _ = docker
                .remove_container(
                    &container,
                    Some(RemoveContainerOptions {
                        v: true,
                        force: true,
                        link: false,
                    }),
                )
                .await;
            return Err(error);
        }
        stage(names::CONTAINER_STARTED, &spec.name);
        info!(runner = %spec.id, name = %spec.name, container = %short(&container), "runner container started");
        Ok(container)
    }

    async fn stop(&self, id: &RunnerId) -> Result<(), DockerError> {
        let known = {
            let mut st = self.lock();
            st.runners.get_mut(id).map(|t| {
                t.ending = Some("stopped by the controller".into());
                t.container.clone()
            })
        };
        let container = match known {
            Some(Some(c)) => Some(c),
            // Being started right now: `start` sees `ending` and stops it once it runs.
            Some(None) => return Ok(()),
            None => {
                let docker = self.engine.client().await?;
                let mut options = self.list_options();
                if let Some(filters) = options.filters.as_mut() {
                    filters
                        .entry("label".into())
                        .or_default()
                        .push(format!("{}={id}", labels::RUNNER_ID));
                }
                docker
                    .list_containers(Some(options))
                    .await
                    .map_err(|e| self.engine.classify("list runner containers", e))?
                    .into_iter()
                    .find_map(|c| c.id)
            }
        };
        match container {
            Some(c) => self.stop_container(&c).await,
            None => {
                // Not created (yet). Either a start began tracking it while we looked (then it
                // sees `ending` and stops the container once it runs), or a start still on its
                // way gives up when it sees `cancelled`. Decided under one lock, so no start
                // can slip between the two.
                let started_meanwhile = {
                    let mut st = self.lock();
                    match st.runners.get_mut(id) {
                        Some(t) => {
                            t.ending = Some("stopped by the controller".into());
                            Some(t.container.clone())
                        }
                        None => {
                            if st.cancelled.len() < FINISHED_MEMORY {
                                st.cancelled.insert(id.clone());
                            }
                            None
                        }
                    }
                };
                match started_meanwhile {
                    Some(Some(container)) => {
                        self.stop_container(&container).await;
                        return Ok(());
                    }
                    Some(None) => return Ok(()),
                    None => {}
                }
                let name = self.forget(id).map(|t| t.name).unwrap_or_default();
                let mut gone = RunnerState::new(id.clone(), name, RunnerPhase::Failed);
                gone.reason = "stopped before its container was started".into();
                self.sink.report(gone).await;
            }
        }
        Ok(())
    }

    async fn health(&self) -> Result<(), String> {
        self.engine.ping().await.map_err(|e| error_chain(&e))?;
        match self.lock().watch_error.clone() {
            Some(why) => Err(format!("not watching container events: {why}")),
            None => Ok(()),
        }
    }
}

/// The first 12 characters of a container id, as `docker ps` shows it.
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl RunnerRuntime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    async fn start(&self, spec: RunnerSpec) -> Result<(), RuntimeError> {
        self.inner.start(spec).await.map_err(|e| runtime_error(&e))
    }

    async fn stop(&self, id: &RunnerId) -> Result<(), RuntimeError> {
        self.inner.stop(id).await.map_err(|e| runtime_error(&e))
    }

    async fn inventory(&self) -> Result<Vec<RunnerState>, RuntimeError> {
        self.inner.inventory().await.map_err(|e| runtime_error(&e))
    }

    async fn health(&self) -> Result<(), String> {
        self.inner.health().await
    }

    fn prepare_images(&self, reporter: crate::images::ImageReporter) {
        self.inner.lock().images = Some(reporter.clone());
        tokio::spawn(prepull::prepare(self.inner.clone(), reporter));
    }

    fn registered(&self, controller_id: &str) {
        self.inner.lock().controller = controller_id.to_owned();
        let inner = self.inner.clone();
        let grace = inner.settings.stray_grace;
        tokio::spawn(async move {
            // Once now, once when the youngest possible stray has aged past the grace period.
            for wait in [Duration::ZERO, grace + Duration::from_secs(1)] {
                tokio::select! {
                    _ = inner.stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                if let Err(e) = inner.sweep_strays().await {
                    warn!(error = %error_chain(&e), "cannot look for stray runner containers");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shared::arch::Arch;
    use shared::command::{CacheSettings, Registration};

    use super::config::DockerHost;
    use super::*;
    use crate::runtime::cache_scope::CacheScope;

    fn spec(id: &str, arch: Arch) -> RunnerSpec {
        RunnerSpec {
            id: RunnerId::parse(id).unwrap(),
            name: id.into(),
            image: "runner".into(),
            launch: Default::default(),
            registration: Registration::JitConfig("j".into()),
            labels: vec![],
            env: BTreeMap::new(),
            timeout: Duration::from_secs(60),
            cache: CacheSettings {
                enabled: true,
                ..Default::default()
            },
            arch,
            owner: "acme".into(),
            repository: Some("app".into()),
        }
    }

    fn runtime(sharing: CacheSharing) -> DockerRuntime {
        scoped(sharing, CacheScope::Owner)
    }

    fn scoped(sharing: CacheSharing, scope: CacheScope) -> DockerRuntime {
        let settings = DockerSettings {
            // Never contacted by these tests.
            host: DockerHost::Unix("/nonexistent/docker.sock".into()),
            cache_sharing: sharing,
            cache_scope: scope,
            ..Default::default()
        };
        DockerRuntime::new(settings, "host-1", crate::runtime::event_channel().0)
    }

    fn volume(mounts: &[CacheMount]) -> &str {
        mounts[0].volume.as_str()
    }

    #[tokio::test]
    async fn exclusive_caches_take_the_lowest_free_slot_per_owner_and_arch() {
        let rt = runtime(CacheSharing::Exclusive);
        let inner = &rt.inner;
        let a = inner.lease_caches(&spec("a", Arch::Amd64)).unwrap();
        let b = inner.lease_caches(&spec("b", Arch::Amd64)).unwrap();
        let arm = inner.lease_caches(&spec("c", Arch::Arm64)).unwrap();
        assert_eq!(volume(&a), "gha-cache-acme-amd64-toolcache-0");
        assert_eq!(volume(&b), "gha-cache-acme-amd64-toolcache-1");
        assert_eq!(volume(&arm), "gha-cache-acme-arm64-toolcache-0");
        inner.forget(&RunnerId::parse("a").unwrap());
        let d = inner.lease_caches(&spec("d", Arch::Amd64)).unwrap();
        assert_eq!(
            volume(&d),
            "gha-cache-acme-amd64-toolcache-0",
            "slot 0 is free again"
        );
    }

    #[tokio::test]
    async fn caches_are_per_repository_by_default() {
        let rt = scoped(CacheSharing::Shared, CacheScope::default());
        let app = rt.inner.lease_caches(&spec("a", Arch::Amd64)).unwrap();
        let mut other = spec("b", Arch::Amd64);
        other.repository = Some("Site".into());
        let site = rt.inner.lease_caches(&other).unwrap();
        assert_eq!(volume(&app), "gha-cache-acme.app-amd64-toolcache");
        assert_eq!(volume(&site), "gha-cache-acme.site-amd64-toolcache");
        // Without the repository (an older controller), no cache rather than a shared one.
        let mut unknown = spec("c", Arch::Amd64);
        unknown.repository = None;
        assert_eq!(rt.inner.lease_caches(&unknown).unwrap(), vec![]);
    }

    #[tokio::test]
    async fn shared_caches_are_one_volume() {
        let rt = runtime(CacheSharing::Shared);
        let a = rt.inner.lease_caches(&spec("a", Arch::Amd64)).unwrap();
        let b = rt.inner.lease_caches(&spec("b", Arch::Amd64)).unwrap();
        assert_eq!(volume(&a), "gha-cache-acme-amd64-toolcache");
        assert_eq!(volume(&a), volume(&b));
    }

    #[tokio::test]
    async fn an_unreachable_engine_is_unhealthy_with_the_reason() {
        let rt = runtime(CacheSharing::Exclusive);
        let why = rt.health().await.unwrap_err();
        assert!(
            why.contains("the Docker engine at unix:///nonexistent/docker.sock is unreachable"),
            "{why}"
        );
        let err = rt.start(spec("x", Arch::Amd64)).await.unwrap_err();
        assert!(err.0.contains("is unreachable"), "{err}");
    }
}
