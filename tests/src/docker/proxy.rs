//! [`SocketProxy`]: an engine socket a test can take away and give back.

use std::path::{Path, PathBuf};

/// A Unix socket forwarding every connection to the engine's socket; stopping it cuts every
/// connection at once (like an engine that went away) until it is started again.
pub struct SocketProxy {
    pub path: PathBuf,
    upstream: PathBuf,
    tokio: Option<tokio::runtime::Runtime>,
    /// Requests held before they are forwarded: (method, path fragment of the request line,
    /// how long). A slow engine or socket: e.g. an event subscription registered that much
    /// later, or a pull that hangs.
    hold: Option<(&'static str, &'static str, std::time::Duration)>,
}

impl SocketProxy {
    /// A proxy listening on `path` for `upstream`, started.
    pub fn start(path: &Path, upstream: &Path) -> Self {
        Self::start_holding(path, upstream, ("", ""), std::time::Duration::ZERO)
    }

    /// A proxy that holds every `GET …/events` request for `delay` before forwarding it.
    pub fn start_with_events_delay(
        path: &Path,
        upstream: &Path,
        delay: std::time::Duration,
    ) -> Self {
        Self::start_holding(path, upstream, ("GET", "/events"), delay)
    }

    /// A proxy that holds every request whose line has `method` and a path containing
    /// `fragment` (e.g. `("POST", "/images/create")`: a pull) for `delay` before forwarding it.
    pub fn start_holding(
        path: &Path,
        upstream: &Path,
        (method, fragment): (&'static str, &'static str),
        delay: std::time::Duration,
    ) -> Self {
        let mut proxy = Self {
            path: path.to_owned(),
            upstream: upstream.to_owned(),
            tokio: None,
            hold: (!delay.is_zero()).then_some((method, fragment, delay)),
        };
        proxy.resume();
        proxy
    }

    /// `unix://<path>`, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Stops forwarding: the socket file disappears and open connections break.
    pub fn pause(&mut self) {
        if let Some(rt) = self.tokio.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// Starts forwarding again.
    pub fn resume(&mut self) {
        self.pause();
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = {
            let _inside = tokio.enter();
            tokio::net::UnixListener::bind(&self.path).expect("proxy socket binds")
        };
        let upstream = self.upstream.clone();
        let hold = self.hold;
        tokio.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut engine) = tokio::net::UnixStream::connect(&upstream).await else {
                        return;
                    };
                    match hold {
                        None => {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                        }
                        Some(hold) => forward_holding(client, engine, hold).await,
                    }
                });
            }
        });
        self.tokio = Some(tokio);
    }
}

/// Forwards one connection, holding each request chunk whose request line has `method` and
/// `fragment` for `delay`.
async fn forward_holding(
    client: tokio::net::UnixStream,
    engine: tokio::net::UnixStream,
    (method, fragment, delay): (&'static str, &'static str, std::time::Duration),
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut engine_read, mut engine_write) = engine.into_split();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let text = String::from_utf8_lossy(chunk);
            if text.starts_with(&format!("{method} "))
                && text.lines().next().is_some_and(|l| l.contains(fragment))
            {
                tokio::time::sleep(delay).await;
            }
            if engine_write.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = engine_write.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut engine_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.pause();
    }
}
