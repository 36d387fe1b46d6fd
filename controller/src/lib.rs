//! The gha-scaler controller as a library: `main` parses configuration and calls [`run`];
//! tests call [`Controller::start`] with listeners bound to port 0.
//!
//! - [`config`]: configuration parsed from environment variables.
//! - [`http`]: the whole HTTP surface (axum), one tree with one error type: the webhook
//!   intake, `/status` and `/metrics`, the REST API and its management endpoints, the
//!   dashboard, who may call what, and the server loop (timeouts, connection cap).
//! - [`webhook_setup`]: exactly one webhook of ours per repository or organization, at start-up
//!   and on request.
//! - [`redelivery`]: failed deliveries of our webhooks, found and redelivered once each.
//! - [`grpc`]: the agents' mutual-TLS endpoint (tonic): sessions and enrollment.
//! - [`registry`]: connected agents and their runners; [`agent_policy`]: what the operator
//!   lets each agent serve; [`drain`]: the operator's drains, kept across restarts.
//! - [`store`]: durable state in SQLite; [`join_tokens`]: minting enrollment tokens.
//! - [`pki`]: the built-in CA.
//! - [`leader`]: which replica leads when several share one PostgreSQL; leader-only work
//!   (scheduler, reconciler, retention, redelivery, webhook setup, agent sessions) runs
//!   through [`leader::while_leading`].

pub mod agent_policy;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod drain;
pub mod github;
pub mod grpc;
pub mod http;
pub mod join_tokens;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod pki;
pub mod redelivery;
pub mod registry;
pub mod scheduler;
pub mod store;
pub mod webhook_setup;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::registry::AgentRegistry;

/// The sockets the controller serves on, bound by the caller.
pub struct Listeners {
    /// Webhooks and the REST API (`PORT`).
    pub http: TcpListener,
    /// Agents, mutual TLS (`GRPC_PORT`).
    pub grpc: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the built-in PKI")]
    Pki(#[source] pki::PkiError),
    #[error("cannot load the CA key for agent enrollment")]
    CaKey(#[source] pki::PkiError),
    #[error("cannot set up TLS for the agents' endpoint")]
    Tls(#[from] grpc::tls::TlsSetupError),
    #[error("cannot open the state store")]
    Store(#[from] store::StoreError),
    #[error("cannot set up the GitHub client")]
    Github(#[from] github::GithubSetupError),
    #[error("cannot read a listener's address")]
    Listener(#[source] std::io::Error),
    #[error("cannot read the CA certificate {0} (TLS_CA_FILE)")]
    CaCert(PathBuf, #[source] shared::tls::PemError),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
    #[error("the agents' gRPC server failed")]
    Grpc(#[source] tonic::transport::Error),
    #[error("a server task panicked")]
    Panicked,
}

/// A running controller.
pub struct Controller {
    pub registry: AgentRegistry,
    /// The GitHub client, authenticating as each configured owner.
    pub github: Arc<dyn shared::github::GithubApi>,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// What the scheduler decided last, and why jobs wait.
    pub decisions: scheduler::DecisionsHandle,
    /// Whether this replica leads.
    pub leadership: leader::Leadership,
    http: JoinHandle<Result<(), RunError>>,
    grpc: JoinHandle<Result<(), RunError>>,
    scheduler: JoinHandle<()>,
}

/// This installation's runner names: from the CA the agents trust and `CONTROLLER_ID`.
fn runner_names(config: &Config) -> Result<scheduler::naming::RunnerNames, StartError> {
    let ca = &config.tls.ca_file;
    let certs = shared::tls::read_certs(ca).map_err(|e| StartError::CaCert(ca.to_path_buf(), e))?;
    let fingerprint = certs
        .first()
        .map(shared::tls::fingerprint)
        .unwrap_or_default();
    Ok(scheduler::naming::RunnerNames::for_installation(
        &fingerprint,
        &config.controller_id,
    ))
}

/// Who leads: with a PostgreSQL `DATABASE_URL`, the lease in it (renewed by a task of its own,
/// plus the work-notification listener); with SQLite, this replica alone, always.
fn leadership(
    config: &Config,
    nudge: Arc<tokio::sync::Notify>,
    shutdown: &CancellationToken,
) -> leader::Leadership {
    let me = leader::Replica {
        id: config
            .ha
            .replica_id
            .clone()
            .unwrap_or_else(leader::generated_replica_id),
        address: config.ha.advertise_grpc_url.clone().unwrap_or_default(),
    };
    let Some(url) = &config.database_url else {
        return leader::Leadership::sole(me);
    };
    if me.address.is_empty() {
        warn!(
            "ADVERTISE_GRPC_URL is not set: a standby cannot tell agents where the leader is \
             (they try their next CONTROLLER_URL instead)"
        );
    }
    info!(replica = %me.id, address = %me.address, lease = ?config.ha.lease, "electing a leader among the replicas on PostgreSQL");
    leader::wake::spawn(url.clone(), nudge, shutdown.clone());
    leader::task::spawn(url.clone(), me, config.ha.lease, shutdown.clone())
}

/// Creates the built-in PKI on first start when the configuration asks for it.
pub fn ensure_pki(config: &Config) -> Result<(), StartError> {
    if let Some(dir) = &config.tls.auto_init_dir
        && !config.tls.ca_file.exists()
    {
        let made = pki::init(dir, &config.tls_sans, false).map_err(StartError::Pki)?;
        info!(
            dir = %dir.display(),
            ca_fingerprint = %made.ca_fingerprint,
            "created the built-in PKI; mint agent join tokens with `gha-controller agents join-token`"
        );
        return Ok(());
    }
    // The built-in PKI follows TLS_SANS (and WEBHOOK_URL's host): names added since the
    // certificate was made are added to a new one from the same CA (agents are unaffected).
    if let Some(dir) = &config.tls.auto_init_dir
        && !config.tls_sans.is_empty()
        && config.tls.cert_file.exists()
    {
        let missing =
            pki::missing_names(&config.tls.cert_file, &config.tls_sans).map_err(StartError::Pki)?;
        if !missing.is_empty() {
            let made = pki::reissue(dir, &missing, false).map_err(StartError::Pki)?;
            info!(added = %missing.join(","), names = %made.names.join(","),
                  "reissued the controller's server certificate for TLS_SANS (same CA)");
        }
    } else if config.tls.auto_init_dir.is_none()
        && let Ok(missing) = pki::missing_names(&config.tls.cert_file, &config.tls_sans)
        && !missing.is_empty()
    {
        warn!(missing = %missing.join(","), cert = %config.tls.cert_file.display(),
              "the server certificate lacks names of TLS_SANS; agents dialing them are refused: \
               `gha-controller certs reissue --san …` (built-in PKI) or reissue it from your CA");
    }
    Ok(())
}

fn load_ca(config: &Config) -> Result<Option<Arc<pki::CertificateAuthority>>, StartError> {
    let Some(key) = &config.tls.ca_key_file else {
        return Ok(None);
    };
    if !key.exists() {
        info!(
            ca_key = %key.display(),
            "no CA key: agent enrollment with join tokens is off; agents need certificates from your CA"
        );
        return Ok(None);
    }
    pki::CertificateAuthority::load(&config.tls.ca_file, key)
        .map(|ca| Some(Arc::new(ca)))
        .map_err(StartError::CaKey)
}

impl Controller {
    /// Starts serving on `listeners` until `shutdown` is cancelled.
    pub async fn start(
        config: &Config,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<Controller, StartError> {
        ensure_pki(config)?;
        let (store, directory) = store::open_with_directory(config).await?;
        if let Some(url) = &config.database_url {
            info!(database = %url.redacted(), "state and the agent directory in PostgreSQL");
            // The directory is shared, the PKI is files: replicas must be given the same ones.
            if let Some(dir) = &config.tls.auto_init_dir {
                warn!(
                    pki = %dir.display(),
                    "the built-in PKI is in this replica's STATE_DIR; replicas sharing \
                     DATABASE_URL must share one CA and server certificate (TLS_DIR or the \
                     TLS_* files, e.g. one Secret), else agents enrolled through one are \
                     refused by another"
                );
            }
        }
        let revoked = grpc::revocation::RevokedNames::load(&directory).await?;
        revoked
            .clone()
            .keep_fresh(directory.clone(), shutdown.clone());
        let tls = grpc::tls::server_config(
            &config.tls.ca_file,
            &config.tls.cert_file,
            &config.tls.key_file,
            revoked,
        )?;
        let ca = load_ca(config)?;
        let nudge = Arc::new(tokio::sync::Notify::new());
        let leadership = leadership(config, nudge.clone(), &shutdown);
        let registry = AgentRegistry::notifying(nudge.clone());
        let github_client = github::client(config)?;
        let github: Arc<dyn shared::github::GithubApi> = github_client.clone();
        let github_budget = github_client.budget();
        let config = Arc::new(config.clone());
        let metrics = Arc::new(metrics::Metrics::new());
        metrics.fleet.owners(
            &config
                .owners
                .iter()
                .map(|o| o.name.clone())
                .collect::<Vec<_>>(),
        );
        let decisions = scheduler::DecisionsHandle::default();
        let names = runner_names(&config)?;
        decisions.update(|d| d.installation = names.installation().to_owned());
        let http_addr = listeners.http.local_addr().map_err(StartError::Listener)?;
        let grpc_addr = listeners.grpc.local_addr().map_err(StartError::Listener)?;
        if config.allow_unsigned_webhooks {
            warn!(
                "ALLOW_UNSIGNED_WEBHOOKS=true: webhooks of owners without a secret are accepted unsigned; \
                 anyone who can reach /webhook can queue work for them"
            );
        }
        if config.api_token.is_none() {
            warn!("API_TOKEN is not set: /api/v1 answers 403 until it is set");
        }
        let webhooks = Arc::new(webhook_setup::WebhookSetup::new(
            &config,
            github.clone(),
            webhook_setup::SetupOptions::default(),
        ));
        {
            let webhooks = webhooks.clone();
            tokio::spawn(leader::while_leading(
                leadership.clone(),
                shutdown.clone(),
                "webhook setup",
                move |tenure| {
                    let webhooks = webhooks.clone();
                    async move {
                        if let Some(task) = webhook_setup::spawn(webhooks, tenure.clone()) {
                            let _ = task.await;
                        }
                        tenure.cancelled().await;
                    }
                },
            ));
        }
        if let Some(interval) = config.containment.redelivery_interval {
            let redelivery = Arc::new(redelivery::Redelivery::new(
                github.clone(),
                webhooks.clone(),
                metrics.clone(),
                decisions.clone(),
            ));
            tokio::spawn(leader::while_leading(
                leadership.clone(),
                shutdown.clone(),
                "redelivery",
                move |tenure| {
                    let redelivery = redelivery.clone();
                    async move {
                        redelivery.spawn(interval, tenure.clone());
                        tenure.cancelled().await;
                    }
                },
            ));
        }

        let app_state = http::AppState {
            config: config.clone(),
            registry: registry.clone(),
            tokens: http::Tokens::from_config(&config),
            store: store.clone(),
            decisions: decisions.clone(),
            metrics: metrics.clone(),
            github: github_client,
            management: http::api::ApiState::new(&config, github.clone(), webhooks),
            drains: drain::Drains::new(registry.clone(), directory.clone()),
            leadership: leadership.clone(),
        };
        let events =
            http::ui::events::EventLog::new(http::ui::EVENT_CAPACITY, http::ui::SERVED_CAPACITY);
        tokio::spawn(
            http::ui::observer::Observer {
                store: store.clone(),
                registry: registry.clone(),
                decisions: decisions.clone(),
                log: events.clone(),
                interval: std::time::Duration::from_millis(500),
            }
            .run(shutdown.clone()),
        );
        let app = http::router(app_state.clone())
            .merge(http::ui::router(http::ui::UiState::new(
                app_state,
                events,
                shutdown.clone(),
            )))
            .merge(http::webhook::router(Arc::new(http::webhook::Intake::new(
                config.clone(),
                store.clone(),
                metrics.clone(),
                nudge.clone(),
            ))));
        let http_shutdown = shutdown.clone();
        let http_limits = config.http.clone();
        let http = tokio::spawn(async move {
            http::edge::serve(listeners.http, app, &http_limits, http_shutdown)
                .await
                .map_err(RunError::Http)
        });

        let sessions = grpc::SessionService {
            registry: registry.clone(),
            directory: directory.clone(),
            store: store.clone(),
            ca: ca.clone(),
            heartbeat_interval: config.heartbeat_interval,
            heartbeat_timeout: config.heartbeat_timeout,
            controller_id: config.controller_id.clone(),
            runner_images: vec![config.runners.image.clone()],
            shutdown: shutdown.clone(),
            leadership: leadership.clone(),
        };
        let enrollment = grpc::Enrollment { directory, ca };
        let registrar = Arc::new(scheduler::registrar::Registrar::new(
            config.clone(),
            github.clone(),
        ));
        {
            let registrar = registrar.clone();
            tokio::spawn(
                shared::github::CallKind::Background
                    .scope(async move { registrar.startup_check().await }),
            );
        }
        // A new scheduler for every tenure: its memory (stops, strays, back-offs) starts
        // fresh, as after a restart; the store and the agents' reports are the truth.
        let make_scheduler = {
            let (config, store, registry, github) = (
                config.clone(),
                store.clone(),
                registry.clone(),
                github.clone(),
            );
            let (registrar, nudge, decisions, metrics) = (
                registrar.clone(),
                nudge.clone(),
                decisions.clone(),
                metrics.clone(),
            );
            move |tenure: CancellationToken| {
                scheduler::Scheduler {
                    config: config.clone(),
                    store: store.clone(),
                    registry: registry.clone(),
                    github: github.clone(),
                    registrar: registrar.clone(),
                    metrics: metrics.clone(),
                    nudge: nudge.clone(),
                    decisions: decisions.clone(),
                    // This tenure's start: agents it has not heard from are away since then.
                    started_ms: shared::runner::now_ms(),
                    names: names.clone(),
                    state: scheduler::memory::SchedulerMemory::new(scheduler::containment::policy(
                        &config,
                    )),
                    run_fetch_failures: Default::default(),
                }
                .run(tenure)
            }
        };
        let scheduler = tokio::spawn(leader::while_leading(
            leadership.clone(),
            shutdown.clone(),
            "scheduler",
            make_scheduler,
        ));
        {
            let (store, retention) = (store.clone(), config.retention);
            tokio::spawn(leader::while_leading(
                leadership.clone(),
                shutdown.clone(),
                "retention",
                move |tenure| store::prune_periodically(store.clone(), retention, tenure),
            ));
        }
        if let Some(interval) = config.reconcile_interval {
            let (config, store, github) = (config.clone(), store.clone(), github.clone());
            let (nudge, metrics) = (nudge.clone(), metrics.clone());
            tokio::spawn(leader::while_leading(
                leadership.clone(),
                shutdown.clone(),
                "reconciler",
                move |tenure| {
                    scheduler::reconcile::Reconciler {
                        config: config.clone(),
                        store: store.clone(),
                        github: github.clone(),
                        budget: github_budget.clone(),
                        registrar: registrar.clone(),
                        nudge: nudge.clone(),
                        interval,
                        metrics: metrics.clone(),
                    }
                    .run(tenure)
                },
            ));
        }
        let grpc = tokio::spawn(async move {
            grpc::serve(listeners.grpc, tls, sessions, enrollment, shutdown)
                .await
                .map_err(RunError::Grpc)
        });
        info!(%http_addr, %grpc_addr, "controller listening");
        Ok(Controller {
            registry,
            github,
            decisions,
            leadership,
            http_addr,
            grpc_addr,
            http,
            grpc,
            scheduler,
        })
    }

    /// Waits until both servers have stopped.
    pub async fn wait(self) -> Result<(), RunError> {
        let (http, grpc, scheduler) = tokio::join!(self.http, self.grpc, self.scheduler);
        scheduler.map_err(|_| RunError::Panicked)?;
        http.map_err(|_| RunError::Panicked)??;
        grpc.map_err(|_| RunError::Panicked)??;
        Ok(())
    }
}

/// Why the controller stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs the controller until `shutdown` is cancelled.
pub async fn run(
    config: &Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    let controller = Controller::start(config, listeners, shutdown).await?;
    controller.wait().await?;
    Ok(())
}
