//! The agent's local control socket (a Unix socket, `CONTROL_SOCKET`, by default
//! `control.sock` in the agent's own directory), behind `gha-agent drain` and `undrain`.
//!
//! A line protocol, one request per connection:
//! - `drain` → the agent drains (accepts no new runners) and answers one line each time its
//!   count of unfinished runners changes (`draining: N runner(s) left`), then `drained` and
//!   closes when the agent exits. The drain is written to a marker file first, so an agent
//!   its supervisor restarts comes back drained (held, without exiting) until `undrain`.
//! - `undrain` → the marker is removed and a held agent accepts runners again; one line.
//! - `status` → the state line (`running: N runner(s) left, connected`), then the agent's
//!   name, its sessions and connection attempts, the last connection error, and one
//!   `runner: NAME (PHASE)` line per unfinished runner; then close
//!   (`gha-agent status`).
//!
//! Only local processes that can open the socket file can use it; its permissions are the
//! access control (0600 by default). Each agent needs its own socket: binding one that a live
//! agent serves is refused ([`ControlError::InUse`]) rather than taken over.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::AgentStatus;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on the control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the control socket {path} is in use by another running agent; give each agent its own \
         (its own TLS_DIR, or CONTROL_SOCKET)"
    )]
    InUse { path: PathBuf },
    #[error("cannot reach the agent's control socket {path} (is the agent running?)")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the control connection to {path} broke")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `path`, replacing a stale socket file left by an agent that is gone.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse {
                path: path.to_owned(),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
        path: path.to_owned(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(listener)
}

fn status_line(s: &AgentStatus) -> String {
    format!(
        "{}: {} runner(s) left, {}\n",
        if s.draining { "draining" } else { "running" },
        s.active_runners,
        if s.connected {
            "connected"
        } else {
            "not connected"
        }
    )
}

/// The lines after the state line of a `status` answer.
fn status_details(s: &AgentStatus) -> String {
    let mut out = format!(
        "agent: {}\nsessions: {}, connection attempts: {}\nlast error: {}\n",
        s.agent_name.as_deref().unwrap_or("(not registered yet)"),
        s.sessions,
        s.attempts,
        s.last_error.as_deref().unwrap_or("none"),
    );
    for r in &s.runners {
        out.push_str(&format!("runner: {r}\n"));
    }
    out
}

/// Asks the agent at `path` for its status; returns the answer's lines.
pub async fn request_status(path: &Path) -> Result<String, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    write.write_all(b"status\n").await.map_err(io)?;
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut BufReader::new(read), &mut text)
        .await
        .map_err(io)?;
    Ok(text)
}

/// How long an exiting agent waits for its control conversations to say their last word.
const FAREWELL: std::time::Duration = std::time::Duration::from_secs(2);

/// What the control socket acts on.
#[derive(Clone)]
pub struct Controls {
    /// Cancelled by `drain`: the agent drains and exits once empty.
    pub drain: CancellationToken,
    /// Set to false by `undrain` (see [`crate::Agent::drain_hold`]).
    pub hold: Option<Arc<watch::Sender<bool>>>,
    /// Where a drain is remembered across restarts.
    pub marker: Option<PathBuf>,
}

/// The file in the agent's directory that says it was drained (see [`Controls::marker`]).
pub const DRAIN_MARKER: &str = "drained";

/// Serves the control socket until `done` is cancelled (the agent has exited), which also ends
/// every open `drain` conversation with `drained`; returns once they have (bounded), so the
/// process can exit without cutting that last line off.
pub async fn serve(
    listener: UnixListener,
    drain: CancellationToken,
    status: watch::Receiver<AgentStatus>,
    done: CancellationToken,
) {
    let controls = Controls {
        drain,
        hold: None,
        marker: None,
    };
    serve_controls(listener, controls, status, done).await
}

/// [`serve`] with undrain and a drain that outlives restarts.
pub async fn serve_controls(
    listener: UnixListener,
    controls: Controls,
    status: watch::Receiver<AgentStatus>,
    done: CancellationToken,
) {
    let conversations = tokio_util::task::TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = done.cancelled() => {
                conversations.close();
                let _ = tokio::time::timeout(FAREWELL, conversations.wait()).await;
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "control socket accept failed");
                    continue;
                }
            },
        };
        let (controls, status, done) = (controls.clone(), status.clone(), done.clone());
        conversations.spawn(async move {
            if let Err(e) = conversation(stream, controls, status, done).await {
                debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn conversation(
    stream: UnixStream,
    controls: Controls,
    mut status: watch::Receiver<AgentStatus>,
    done: CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    match line.trim() {
        "drain" => {
            info!("drain requested on the control socket");
            if let Some(marker) = &controls.marker
                && let Err(e) = std::fs::write(marker, "drained with gha-agent drain\n")
            {
                warn!(error = %e, marker = %marker.display(),
                      "cannot remember the drain: a restart will accept runners again");
            }
            controls.drain.cancel();
            // The first answer confirms the agent has taken the request.
            tokio::select! {
                _ = done.cancelled() => {}
                _ = status.wait_for(|s| s.draining) => {}
            }
            loop {
                let text = status_line(&status.borrow_and_update());
                write.write_all(text.as_bytes()).await?;
                tokio::select! {
                    _ = done.cancelled() => break,
                    changed = status.changed() => if changed.is_err() { break },
                }
            }
            write.write_all(b"drained\n").await?;
        }
        "undrain" => {
            info!("undrain requested on the control socket");
            if let Some(marker) = &controls.marker {
                match std::fs::remove_file(marker) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        let text = format!("cannot remove {}: {e}\n", marker.display());
                        write.write_all(text.as_bytes()).await?;
                        return write.shutdown().await;
                    }
                }
            }
            if let Some(hold) = &controls.hold {
                hold.send_replace(false);
            }
            let text = if controls.drain.is_cancelled() {
                "undrained: the agent is finishing a drain and exits once its runners end; it \
                 starts undrained\n"
            } else {
                "undrained: accepting runners\n"
            };
            write.write_all(text.as_bytes()).await?;
        }
        "status" => {
            let text = {
                let s = status.borrow();
                format!("{}{}", status_line(&s), status_details(&s))
            };
            write.write_all(text.as_bytes()).await?;
        }
        other => {
            write
                .write_all(
                    format!("unknown request {other:?} (drain, undrain or status)\n").as_bytes(),
                )
                .await?;
        }
    }
    write.shutdown().await
}

/// Asks the agent at `path` to drain; calls `on_line` with each progress line and returns once
/// the agent has exited (or at once after the first line when `wait` is false).
pub async fn request_drain(
    path: &Path,
    wait: bool,
    mut on_line: impl FnMut(&str),
) -> Result<(), ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    write.write_all(b"drain\n").await.map_err(io)?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await.map_err(io)? {
        on_line(&line);
        if !wait {
            break;
        }
    }
    Ok(())
}

/// Asks the agent at `path` to accept runners again; returns its answer.
pub async fn request_undrain(path: &Path) -> Result<String, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    write.write_all(b"undrain\n").await.map_err(io)?;
    let mut line = String::new();
    BufReader::new(read)
        .read_line(&mut line)
        .await
        .map_err(io)?;
    Ok(line.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_answer_says_connection_runners_and_last_error() {
        let s = AgentStatus {
            connected: false,
            agent_name: Some("host-1".into()),
            last_error: Some("controller unreachable".into()),
            sessions: 2,
            attempts: 5,
            active_runners: 1,
            runners: vec!["gha-acme-1 (running)".into()],
            draining: false,
        };
        assert_eq!(
            format!("{}{}", status_line(&s), status_details(&s)),
            "running: 1 runner(s) left, not connected\nagent: host-1\n\
             sessions: 2, connection attempts: 5\nlast error: controller unreachable\n\
             runner: gha-acme-1 (running)\n"
        );
    }

    #[tokio::test]
    async fn a_socket_a_live_agent_serves_is_refused_as_in_use_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let first = bind(&path).await.expect("first bind");
        let err = bind(&path).await.expect_err("in use");
        assert!(matches!(err, ControlError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(first);
        // The file is left behind by a listener that is gone: taken over.
        bind(&path).await.expect("a stale socket is replaced");
    }
}
