//! The Kubernetes runtime: one agent inside a cluster turns runner specs into pods.
//!
//! - [`objects`]: the Pod, Secret and PersistentVolumeClaim shapes, as pure functions.
//! - [`status`]: what a pod's status means for the controller (phase, exit code, why Pending).
//! - [`watch`]: the one task that watches our pods (kube-runtime's watcher, which lists, then
//!   watches from the last resourceVersion and resumes a dropped stream), reports every change,
//!   deletes finished pods and those stuck Pending past `KUBERNETES_PENDING_TIMEOUT`.
//! - [`claims`]: exclusive cache claims, so two pods never share a `ReadWriteOnce` volume.
//! - [`capacity`]: runners per architecture from the nodes the agent can see.
//! - [`settings`]: its configuration; [`client`]: the kube client from `KUBECONFIG` or the
//!   pod's service account.
//!
//! Every object carries ownership labels (managed-by, controller id, agent, owner, runner id),
//! so an agent that restarts finds and adopts its pods by label, and two agents or controllers
//! sharing a namespace never touch each other's runners.

pub mod capacity;
mod claims;
pub mod client;
pub mod objects;
pub mod settings;
pub mod status;
mod watch;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use shared::arch::{Arch, RuntimeKind};
use shared::command::RunnerSpec;
use shared::ids::RunnerId;
use shared::runner::{RunnerPhase, RunnerState};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use self::claims::ClaimPicker;
use self::objects::{CacheVolumes, Ownership};
use self::settings::KubernetesSettings;
use super::{EventSink, RunnerRuntime, RuntimeError, launch};

/// What went wrong in the runtime, with what we were doing.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("Kubernetes API: cannot {action}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot start image {image}")]
    Launch {
        image: String,
        #[source]
        source: crate::runtime::launch::LaunchError,
    },
    #[error("no free cache claim for owner {owner} ({arch}) among {slots} slots")]
    NoFreeClaim {
        owner: String,
        arch: Arch,
        slots: u32,
    },
}

impl KubeError {
    fn new(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Api { action, source }
    }
}

impl From<KubeError> for RuntimeError {
    fn from(e: KubeError) -> Self {
        match &e {
            KubeError::Api { source, .. } => RuntimeError(format!("{e}: {}", api_message(source))),
            KubeError::NoFreeClaim { .. } => RuntimeError(e.to_string()),
            KubeError::Launch { source, .. } => RuntimeError(format!("{e}: {source}")),
        }
    }
}

/// The API server's own words for an error (its `Status.message`), else the error's text.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_already_exists() || s.code == 409)
}

/// What the runtime and its watch task share.
pub(crate) struct Context {
    client: Client,
    namespace: String,
    who: Ownership,
    settings: KubernetesSettings,
    sink: EventSink,
    /// Runners the controller asked to stop: the watch task reports their end as a stop.
    /// Written by `stop`, read and cleared by the watch task; short sections only.
    stopping: Mutex<HashSet<RunnerId>>,
}

impl Context {
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Makes `pod` the owner of the Secret `name`, so the garbage collector deletes it with the
    /// pod.
    async fn own_secret(&self, name: &str, pod: &Pod) -> Result<(), KubeError> {
        let Some(owner) = objects::owner_reference(pod) else {
            return Ok(());
        };
        let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
        self.secrets()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(KubeError::new(format!(
                "make pod {} own secret {name}",
                pod.metadata.name.as_deref().unwrap_or_default()
            )))
    }

    fn stopping(&self) -> std::sync::MutexGuard<'_, HashSet<RunnerId>> {
        self.stopping.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs runners as pods in one namespace.
pub struct KubernetesRuntime {
    ctx: Arc<Context>,
    claims: ClaimPicker,
}

impl KubernetesRuntime {
    /// Builds the runtime and starts its watch task, which ends with `shutdown` (the agent's
    /// one shutdown token). `agent` is the name the controller knows this agent by.
    pub fn new(
        client: Client,
        settings: KubernetesSettings,
        agent: &str,
        sink: EventSink,
        shutdown: CancellationToken,
    ) -> Self {
        Self::for_installation(client, settings, agent, None, sink, shutdown)
    }

    /// [`KubernetesRuntime::new`] for an agent of `installation`: its objects carry the
    /// installation as well as `CONTROLLER_ID` and the agent's name, and only such objects are
    /// adopted or removed (see [`objects::INSTALLATION_LABEL`]).
    pub fn for_installation(
        client: Client,
        settings: KubernetesSettings,
        agent: &str,
        installation: Option<String>,
        sink: EventSink,
        shutdown: CancellationToken,
    ) -> Self {
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let who = Ownership {
            controller_id: settings.controller_id.clone(),
            installation,
            agent: agent.to_owned(),
        };
        info!(%namespace, selector = %who.selector(), "Kubernetes runtime ready");
        let ctx = Arc::new(Context {
            client,
            namespace,
            who,
            settings,
            sink,
            stopping: Mutex::default(),
        });
        tokio::spawn(watch::PodWatch::new(ctx.clone()).run(shutdown));
        Self {
            ctx,
            claims: ClaimPicker::default(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.ctx.namespace
    }

    async fn create_pod(&self, spec: &RunnerSpec) -> Result<(), KubeError> {
        let ctx = &self.ctx;
        let name = objects::pod_name(spec);
        // Kubernetes cannot inspect an image: `auto` is decided from its reference.
        let plan = launch::detect_from_reference(spec)
            .and_then(|layout| launch::plan(layout, spec))
            .map_err(|source| KubeError::Launch {
                image: spec.image.clone(),
                source,
            })?;
        let caches = if !spec.cache.enabled || spec.cache.volumes.is_empty() {
            CacheVolumes::None
        } else if spec.cache.kubernetes_pvcs
            && let Some(whose) = ctx.settings.cache_scope.key(spec)
        {
            let claim = self.claims.reserve(ctx, spec, &whose).await?;
            CacheVolumes::Claim(claim)
        } else {
            // Without claims, or without the repository the claim would be keyed by (an older
            // controller): the pod's own emptyDir, which no other job ever mounts.
            CacheVolumes::EmptyDir
        };
        let result = self.create_pod_with(spec, &name, &caches, &plan).await;
        if let CacheVolumes::Claim(claim) = &caches {
            // The pod (if created) now shows the claim as in use; the reservation can go.
            self.claims.release(claim);
        }
        result
    }

    async fn create_pod_with(
        &self,
        spec: &RunnerSpec,
        name: &str,
        caches: &CacheVolumes,
        plan: &launch::Plan,
    ) -> Result<(), KubeError> {
        let ctx = &self.ctx;
        let secret = objects::secret(&ctx.who, spec, &ctx.namespace);
        let secret_name = objects::secret_name(name);
        match ctx.secrets().create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            // A start repeated after a crash: the secret is immutable, so make it anew.
            Err(e) if is_already_exists(&e) => {
                if let Err(e) = ctx
                    .secrets()
                    .delete(&secret_name, &DeleteParams::default())
                    .await
                    && !is_not_found(&e)
                {
                    return Err(KubeError::new(format!("replace secret {secret_name}"))(e));
                }
                ctx.secrets()
                    .create(&PostParams::default(), &secret)
                    .await
                    .map_err(KubeError::new(format!("create secret {secret_name}")))?;
            }
            Err(e) => return Err(KubeError::new(format!("create secret {secret_name}"))(e)),
        }
        let pod = objects::pod(&ctx.who, &ctx.settings, spec, &ctx.namespace, caches, plan);
        let created = match ctx.pods().create(&PostParams::default(), &pod).await {
            Ok(pod) => pod,
            // Created meanwhile by a start that raced this one: that pod is the runner.
            Err(e) if is_already_exists(&e) => ctx
                .pods()
                .get(name)
                .await
                .map_err(KubeError::new(format!("read pod {name}")))?,
            Err(e) => {
                // Leave no registration material behind without a pod to own it.
                if let Err(e) = ctx
                    .secrets()
                    .delete(&secret_name, &DeleteParams::default())
                    .await
                    && !is_not_found(&e)
                {
                    warn!(secret = %secret_name, error = %e, "cannot delete the secret of a pod that was not created; the sweep will");
                }
                return Err(KubeError::new(format!("create pod {name}"))(e));
            }
        };
        ctx.own_secret(&secret_name, &created).await?;
        info!(runner = %spec.id, pod = %name, namespace = %ctx.namespace, "runner pod created");
        Ok(())
    }
}

impl RunnerRuntime for KubernetesRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Kubernetes
    }

    /// A Kubernetes agent cannot pre-pull: the kubelet of whichever node a pod is scheduled on
    /// pulls its image (the pod's default pull policy). It says so for each image.
    fn prepare_images(&self, reporter: crate::images::ImageReporter) {
        for image in reporter.images() {
            reporter.set(
                image,
                shared::image::ImageState::Unknown,
                "not pre-pulled: on Kubernetes the kubelet of the node a runner pod lands on \
                 pulls the image (pre-pull with a DaemonSet of the image if pulls are slow)",
            );
        }
    }

    async fn start(&self, spec: RunnerSpec) -> Result<(), RuntimeError> {
        let name = objects::pod_name(&spec);
        match self.ctx.pods().get_opt(&name).await {
            // Already there (a repeated start after an agent restart): the watch reports it.
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(KubeError::new(format!("read pod {name}"))(e).into()),
        }
        self.create_pod(&spec).await.map_err(RuntimeError::from)
    }

    async fn stop(&self, id: &RunnerId) -> Result<(), RuntimeError> {
        let ctx = &self.ctx;
        let selector = objects::runner_selector(&ctx.who, id);
        let pods = ctx
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(KubeError::new(format!("find the pod of runner {id}")))?;
        if pods.items.is_empty() {
            let mut gone = RunnerState::new(id.clone(), "", RunnerPhase::Exited);
            gone.exit_code = Some(143);
            gone.reason = "stopped by the controller (its pod was already gone)".into();
            ctx.sink.report(gone).await;
            return Ok(());
        }
        ctx.stopping().insert(id.clone());
        for pod in pods.items {
            let name = pod.metadata.name.unwrap_or_default();
            match ctx.pods().delete(&name, &DeleteParams::default()).await {
                Ok(_) => info!(runner = %id, pod = %name, "runner pod deleted"),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(KubeError::new(format!("delete pod {name}"))(e).into()),
            }
        }
        Ok(())
    }

    async fn inventory(&self) -> Result<Vec<RunnerState>, RuntimeError> {
        let ctx = &self.ctx;
        let pods = ctx
            .pods()
            .list(&ListParams::default().labels(&ctx.who.selector()))
            .await
            .map_err(KubeError::new("list this agent's pods"))?;
        Ok(pods.items.iter().filter_map(status::runner_state).collect())
    }

    async fn health(&self) -> Result<(), String> {
        self.ctx
            .pods()
            .list(
                &ListParams::default()
                    .labels(&self.ctx.who.selector())
                    .limit(1),
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "the Kubernetes API does not answer for namespace {}: {}",
                    self.ctx.namespace,
                    api_message(&e)
                )
            })
    }

    async fn capacity(&self, max_runners: u32) -> Option<Vec<(Arch, u32)>> {
        let nodes: Api<Node> = Api::all(self.ctx.client.clone());
        match nodes.list(&ListParams::default()).await {
            Ok(list) => {
                let by_arch = capacity::by_arch(&list.items, &self.ctx.settings, max_runners);
                if by_arch.is_empty() {
                    warn!(
                        nodes = list.items.len(),
                        "no Ready node can run runner pods; registering the agent's own architecture"
                    );
                    None
                } else {
                    Some(by_arch)
                }
            }
            Err(e) => {
                warn!(error = %api_message(&e), "cannot list nodes; registering the agent's own architecture");
                None
            }
        }
    }
}
