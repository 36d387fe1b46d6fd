//! [`SocketProxy`]: an engine socket a test can take away and give back.

use std::path::{Path, PathBuf};

/// A Unix socket forwarding every connection to the engine's socket; stopping it cuts every
/// connection at once (like an engine that went away) until it is started again.
pub struct SocketProxy {
    pub path: PathBuf,
    upstream: PathBuf,
    tokio: Option<tokio::runtime::Runtime>,
}

impl SocketProxy {
    /// A proxy listening on `path` for `upstream`, started.
    pub fn start(path: &Path, upstream: &Path) -> Self {
        let mut proxy = Self {
            path: path.to_owned(),
            upstream: upstream.to_owned(),
            tokio: None,
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
        tokio.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut engine) = tokio::net::UnixStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        self.tokio = Some(tokio);
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.pause();
    }
}
