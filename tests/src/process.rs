//! The real `gha-controller` binary as a child process, for what only a process can show:
//! `kill -9` in the middle of work, and a restart on the same state directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The path of a workspace binary built next to this test executable (`target/<profile>/`),
/// building it with cargo if it is not there.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    // A test runs from target/<profile>/deps, a binary of this crate (`bench`) from
    // target/<profile>.
    let dir = exe.parent().expect("an executable has a directory");
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>/deps has a parent")
    } else {
        dir
    };
    let path = profile_dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bin", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --bin {name} failed");
    }
    path
}

/// A free loopback port (bound and released; good enough for tests that start a process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A controller process with fixed ports, restartable on the same state.
pub struct ControllerProcess {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    env: HashMap<String, String>,
    log: PathBuf,
    child: Option<Child>,
}

impl ControllerProcess {
    /// Starts `gha-controller` with `env` (ports are chosen here) and waits for `/health`.
    pub async fn start(env: HashMap<String, String>, log: PathBuf) -> Self {
        Self::start_on(env, log, free_port(), free_port()).await
    }

    /// [`Self::start`] on the given ports (a test that must name them in `env` first, e.g.
    /// `ADVERTISE_GRPC_URL`, picks them with [`free_port`]).
    pub async fn start_on(
        mut env: HashMap<String, String>,
        log: PathBuf,
        http: u16,
        grpc: u16,
    ) -> Self {
        env.insert("PORT".into(), http.to_string());
        env.insert("GRPC_PORT".into(), grpc.to_string());
        let mut process = Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], http)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], grpc)),
            env,
            log,
            child: None,
        };
        process.spawn().await;
        process
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open controller log");
        let child = Command::new(workspace_binary("gha-controller"))
            .env_clear()
            .envs(&self.env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start gha-controller");
        self.child = Some(child);
        let url = format!("http://{}/health", self.http_addr);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "gha-controller exited with {status}; log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gha-controller did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again with the same environment, ports and state.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// The running process's id (for `/proc/<pid>`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn grpc_url(&self) -> String {
        format!("https://{}", self.grpc_addr)
    }

    /// The controller's log so far (for a failing assertion's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
