//! The connection to the Docker engine: built lazily, API version negotiated once, typed errors.
//!
//! Nothing here touches the engine at construction, so an agent whose engine is down (or whose
//! socket does not exist yet) starts, says so through `health`, and connects when it can.
//! bollard keeps no idle connections (one request, one connection), so an engine (or socket
//! proxy) that restarts is simply reached again on the next request.

use std::sync::Mutex;
use std::time::Duration;

use bollard::{API_DEFAULT_VERSION, Docker};

use super::config::DockerHost;

/// How long a request may wait for the engine's answer headers (streams run longer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong talking to the engine. `Display` never repeats the source.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("the Docker engine at {host} is unreachable")]
    Unreachable {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("cannot pull image {image}")]
    Pull {
        image: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("cannot {action}")]
    Api {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// The image is not built for the runner's platform (see `platform::check`); retrying
    /// cannot fix it.
    #[error("{reason}")]
    WrongPlatform { reason: String },
    /// The reference named another image when the container was created than when it was
    /// inspected (retagged, pulled or loaded meanwhile): what was checked is not what would run.
    #[error(
        "image {image} changed while the runner was starting (inspected {inspected}, the container has {found})"
    )]
    ImageChanged {
        image: String,
        inspected: String,
        found: String,
    },
    #[error("a container named {name} already exists and is not runner {runner}'s")]
    NameTaken { name: String, runner: String },
    #[error("runner {runner} was stopped before its container was started")]
    StoppedBeforeStart { runner: String },
    #[error("cannot start image {image}")]
    Launch {
        image: String,
        #[source]
        source: crate::runtime::launch::LaunchError,
    },
    /// Found before the container is started: with an init process (`RUNNER_INIT`) the engine
    /// would start the container and the init would exit 127, which looks like a runner that
    /// ran and failed.
    #[error("image {image} has no entry point {path}: {reason}")]
    EntryPointMissing {
        image: String,
        path: String,
        /// The engine's words.
        reason: String,
    },
}

impl DockerError {
    pub fn api(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let action = action.into();
        move |source| DockerError::Api { action, source }
    }
}

/// The HTTP status of an engine error answer, if it was one.
pub fn status_of(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

pub struct Engine {
    host: DockerHost,
    // Short sections only: the client is cloned out before any request.
    client: Mutex<Option<Docker>>,
    /// The engine's CPU count, once read (short sections only, like `client`).
    cpus: Mutex<Option<i64>>,
}

impl Engine {
    pub fn new(host: DockerHost) -> Self {
        Self {
            host,
            client: Mutex::new(None),
            cpus: Mutex::new(None),
        }
    }

    pub fn host_url(&self) -> String {
        self.host.url()
    }

    fn unreachable(&self, source: bollard::errors::Error) -> DockerError {
        DockerError::Unreachable {
            host: self.host.url(),
            source,
        }
    }

    /// A client speaking an API version the engine supports.
    pub async fn client(&self) -> Result<Docker, DockerError> {
        if let Some(docker) = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(docker);
        }
        let fresh = match &self.host {
            DockerHost::Unix(path) => Docker::connect_with_unix(
                &path.display().to_string(),
                REQUEST_TIMEOUT.as_secs(),
                API_DEFAULT_VERSION,
            ),
            DockerHost::Tcp(addr) => {
                Docker::connect_with_http(addr, REQUEST_TIMEOUT.as_secs(), API_DEFAULT_VERSION)
            }
        }
        .map_err(|e| self.unreachable(e))?;
        let negotiated = fresh
            .negotiate_version()
            .await
            .map_err(|e| self.unreachable(e))?;
        *self.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(negotiated.clone());
        Ok(negotiated)
    }

    /// The engine's CPUs in units of 10⁻⁹ (`NanoCpus` above this is refused), read once;
    /// `None` when the engine does not say (the configured limit is then used as it is).
    pub async fn nano_cpus(&self, docker: &Docker) -> Option<i64> {
        if let Some(n) = *self.cpus.lock().unwrap_or_else(|p| p.into_inner()) {
            return Some(n);
        }
        let n = docker.info().await.ok()?.ncpu.filter(|n| *n > 0)?;
        let nano = n.saturating_mul(1_000_000_000);
        *self.cpus.lock().unwrap_or_else(|p| p.into_inner()) = Some(nano);
        Some(nano)
    }

    /// `Ok` when the engine answers a ping.
    pub async fn ping(&self) -> Result<(), DockerError> {
        let docker = self.client().await?;
        docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| self.unreachable(e))
    }

    /// Wraps a failed request: unreachable when the engine did not answer at all.
    pub fn classify(
        &self,
        action: impl Into<String>,
        error: bollard::errors::Error,
    ) -> DockerError {
        if status_of(&error).is_some() {
            DockerError::Api {
                action: action.into(),
                source: error,
            }
        } else {
            self.unreachable(error)
        }
    }
}
