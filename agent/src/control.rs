//! The agent's local control socket (a Unix socket, `CONTROL_SOCKET`), behind `gha-agent drain`.
//!
//! A line protocol, one request per connection:
//! - `drain` → the agent drains (accepts no new runners) and answers one line each time its
//!   count of unfinished runners changes (`draining: N runner(s) left`), then `drained` and
//!   closes when the agent exits.
//! - `status` → one line, then close.
//!
//! Only local processes that can open the socket file can use it; its permissions are the
//! access control (0600 by default).

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::AgentStatus;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on the control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    if path.exists() && UnixStream::connect(path).await.is_err() {
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

/// How long an exiting agent waits for its control conversations to say their last word.
const FAREWELL: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves the control socket until `done` is cancelled (the agent has exited), which also ends
/// every open `drain` conversation with `drained`; returns once they have (bounded), so the
/// process can exit without cutting that last line off.
pub async fn serve(
    listener: UnixListener,
    drain: CancellationToken,
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
        let (drain, status, done) = (drain.clone(), status.clone(), done.clone());
        conversations.spawn(async move {
            if let Err(e) = conversation(stream, drain, status, done).await {
                debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn conversation(
    stream: UnixStream,
    drain: CancellationToken,
    mut status: watch::Receiver<AgentStatus>,
    done: CancellationToken,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    match line.trim() {
        "drain" => {
            info!("drain requested on the control socket");
            drain.cancel();
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
        "status" => {
            let text = status_line(&status.borrow());
            write.write_all(text.as_bytes()).await?;
        }
        other => {
            write
                .write_all(format!("unknown request {other:?} (drain or status)\n").as_bytes())
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
