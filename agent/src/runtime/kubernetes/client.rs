//! The agent's kube client, from the variables `main` read: `KUBECONFIG` (one path or a
//! colon-separated list, merged as kubectl does) when set, else the pod's service account
//! (in-cluster), else `$HOME/.kube/config`.
//!
//! Taking the variable map rather than reading the process environment keeps the choice
//! testable; only kube's in-cluster detection looks at the process itself.

use std::collections::HashMap;
use std::path::PathBuf;

use kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("KUBECONFIG: cannot use {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: KubeconfigError,
    },
    #[error(
        "not running in a pod ({in_cluster}) and no KUBECONFIG or ~/.kube/config to use instead"
    )]
    NoConfig { in_cluster: InClusterError },
    #[error("cannot build the Kubernetes client")]
    Build(#[source] kube::Error),
}

pub async fn client(env: &HashMap<String, String>) -> Result<Client, ClientError> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let from_files = |paths: Vec<PathBuf>| async move {
        let mut merged: Option<Kubeconfig> = None;
        for path in &paths {
            let failed = |source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let next = Kubeconfig::read_from(path).map_err(failed)?;
            merged = Some(match merged {
                None => next,
                Some(m) => m.merge(next).map_err(failed)?,
            });
        }
        let shown = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let kubeconfig = merged.unwrap_or_default();
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|source| ClientError::Kubeconfig {
                path: shown,
                source,
            })
    };
    let config = match get("KUBECONFIG") {
        Some(list) => {
            from_files(
                list.split(':')
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect(),
            )
            .await?
        }
        None => match Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => {
                let home = get("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
                match home.filter(|p| p.is_file()) {
                    Some(path) => from_files(vec![path]).await?,
                    None => return Err(ClientError::NoConfig { in_cluster }),
                }
            }
        },
    };
    Client::try_from(config).map_err(ClientError::Build)
}
