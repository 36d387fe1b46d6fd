//! The fake GitHub Actions runner of the test runner images: one static program, installed at
//! each path where a real image has a runner program, that behaves as the program at that path
//! would (`std::env::current_exe`, so a copy at `/actions-runner/config.sh` is `config.sh`).
//! Against the GitHub simulator's runner protocol (`/_sim/runners/...`, see
//! `tests/src/github_sim/runner_http.rs`) it registers, waits for a job it matches, works on it
//! for the job's scripted duration (`sim_duration_ms`), reports completion and exits: an
//! ephemeral runner, one job per process. The rules and their sources: `../README.md`.
//!
//! - `run.sh` (and a custom image's `start`): `ACTIONS_RUNNER_INPUT_JITCONFIG` (or
//!   `--jitconfig`), else the `.runner` file `config.sh` wrote next to it, else "Not
//!   configured".
//! - `bin/Runner.Listener run …`: the same, for the runner directory above `bin/`.
//! - `config.sh --url U --token T [--name --labels --runnergroup --work --ephemeral …]`:
//!   registers with a registration token and writes `.runner`; refuses root without
//!   `RUNNER_ALLOW_RUNASROOT`, and an unattended run without `--url` or `--token`.
//! - `/entrypoint.sh CMD…` (myoung34): refuses a PAT (`ACCESS_TOKEN`, `APP_*`), computes the
//!   URL from `RUNNER_SCOPE`/`REPO_URL`/`ORG_NAME`/`GITHUB_HOST`, runs `./config.sh` from the
//!   working directory (a failure is printed and the script goes on, as the real one does),
//!   requires root (`RUN_AS_ROOT`, default true), then runs `CMD…` without `RUNNER_TOKEN`.
//! - Any variable whose value looks like a GitHub PAT makes every program refuse to start.
//! - `FAKE_RUNNER_EXIT_CODE`: exit with this code after completing the job (default 0).
//!
//! Exit codes: 0 job done, 1 refused by a script rule (root, PAT, no command), 2 bad
//! configuration, 3 registration refused, 4 the simulator failed. Only std, serde_json and
//! base64: the binary is built static and runs in an otherwise empty image. It never prints
//! its registration material. `https://` URLs are spoken to over plain HTTP: the simulator has
//! no TLS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

const CLAIM_INTERVAL: Duration = Duration::from_millis(100);
/// Value prefixes of GitHub personal access and OAuth tokens.
const PAT_PREFIXES: [&str; 4] = ["ghp_", "github_pat_", "gho_", "ghu_"];

#[derive(Debug)]
enum Failure {
    Rule(String),
    Config(String),
    Refused(String),
    Server(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Rule(m) | Failure::Config(m) | Failure::Refused(m) | Failure::Server(m) => m,
        }
    }

    fn code(&self) -> u8 {
        match self {
            Failure::Rule(_) => 1,
            Failure::Config(_) => 2,
            Failure::Refused(_) => 3,
            Failure::Server(_) => 4,
        }
    }
}

fn main() -> ExitCode {
    let exe = std::env::current_exe().unwrap_or_default();
    let program = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&exe, &program, &args) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("{program}: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}

fn dispatch(exe: &Path, program: &str, args: &[String]) -> Result<u8, Failure> {
    if let Some((key, _)) = std::env::vars()
        .find(|(_, v)| PAT_PREFIXES.iter().any(|p| v.trim().starts_with(p)))
    {
        return Err(Failure::Rule(format!(
            "{key} holds a GitHub personal access token: a runner is never given one"
        )));
    }
    let dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    match program {
        "entrypoint.sh" => entrypoint(args),
        "config.sh" => configure(&dir, args),
        "run.sh" | "start" => run(&dir, args),
        "Runner.Listener" => match args.first().map(String::as_str) {
            Some("run") => run(dir.parent().unwrap_or(Path::new("/")), &args[1..]),
            other => Err(Failure::Config(format!(
                "unknown command {other:?}: this Runner.Listener only knows `run`"
            ))),
        },
        other => Err(Failure::Config(format!("no runner program is called {other:?}"))),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().and_then(|u| u.parse().ok()))
        })
        .unwrap_or(0)
}

/// The value after `--name` in `args`, and whether `--flag` is present.
fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .filter(|v| !v.is_empty())
        .cloned()
}

fn flag(args: &[String], name: &str) -> bool {
    args.iter().any(|a| a == name)
}

/// `http://host:port` of a URL such as `https://127.0.0.1:4000/acme/app`.
fn origin(url: &str) -> Result<String, Failure> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| Failure::Config(format!("{url:?} is not an http(s) URL")))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(Failure::Config(format!("{url:?} names no host")));
    }
    Ok(format!("http://{host}"))
}

/// myoung34's `/entrypoint.sh`: configure from the environment, then run the command.
fn entrypoint(command: &[String]) -> Result<u8, Failure> {
    for pat in ["ACCESS_TOKEN", "APP_ID", "APP_PRIVATE_KEY", "APP_LOGIN"] {
        if env(pat).is_some() {
            return Err(Failure::Rule(format!(
                "{pat} is set: the real script would mint a token with the owner's credential; \
                 a runner is only ever given its own registration"
            )));
        }
    }
    let host = env("GITHUB_HOST").unwrap_or_else(|| "github.com".into());
    let host = host
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let scope = env("RUNNER_SCOPE")
        .unwrap_or_else(|| "repo".into())
        .to_ascii_lowercase();
    let url = if scope.starts_with("org") {
        match env("ORG_NAME") {
            Some(org) => format!("https://{host}/{org}"),
            None => {
                println!("ORG_NAME required for org runners");
                format!("https://{host}/")
            }
        }
    } else {
        env("REPO_URL").unwrap_or_else(|| {
            println!("REPO_URL required for repo runners");
            String::new()
        })
    };
    let mut config = vec![
        "--url".to_owned(),
        url,
        "--token".into(),
        env("RUNNER_TOKEN").unwrap_or_default(),
        "--name".into(),
        env("RUNNER_NAME").unwrap_or_else(|| "github-runner-fake".into()),
        "--work".into(),
        env("RUNNER_WORKDIR").unwrap_or_else(|| "/_work".into()),
        "--labels".into(),
        env("LABELS").unwrap_or_else(|| "default".into()),
        "--runnergroup".into(),
        env("RUNNER_GROUP").unwrap_or_else(|| "Default".into()),
        "--unattended".into(),
        "--replace".into(),
    ];
    if env("EPHEMERAL").is_some() {
        config.push("--ephemeral".into());
    }
    if env("DISABLE_AUTO_UPDATE").is_some() {
        config.push("--disableupdate".into());
    }
    println!("Configuring");
    // `./config.sh`, relative to the working directory, as the real script calls it.
    match std::process::Command::new("./config.sh")
        .args(&config)
        .env("RUNNER_ALLOW_RUNASROOT", "1")
        .status()
    {
        Ok(status) if status.success() => {}
        // The real script has no `set -e`: it goes on to the command.
        Ok(status) => println!("config.sh failed ({status})"),
        Err(e) => println!("./config.sh: {e}"),
    }
    let as_root = env("RUN_AS_ROOT").is_none_or(|v| v == "true");
    if as_root && uid() != 0 {
        return Err(Failure::Rule(format!(
            "ERROR: RUN_AS_ROOT env var is set to true but the user has been overridden and is \
             not running as root, but UID '{}'",
            uid()
        )));
    }
    let Some((program, rest)) = command.split_first() else {
        return Err(Failure::Rule("no command to run after configuring".into()));
    };
    let status = std::process::Command::new(program)
        .args(rest)
        .env_remove("RUNNER_TOKEN")
        .env("RUNNER_ALLOW_RUNASROOT", "1")
        .status()
        .map_err(|e| Failure::Config(format!("cannot run {program}: {e}")))?;
    Ok(status.code().map_or(1, |c| c as u8))
}

/// `config.sh`: registers with a registration token and writes `.runner` into `dir`.
fn configure(dir: &Path, args: &[String]) -> Result<u8, Failure> {
    if uid() == 0 && env("RUNNER_ALLOW_RUNASROOT").is_none() {
        return Err(Failure::Rule("Must not run with sudo".into()));
    }
    let (Some(url), Some(token)) = (arg(args, "--url"), arg(args, "--token")) else {
        return Err(Failure::Config(
            "Invalid configuration provided for url or token. Terminating unattended \
             configuration."
                .into(),
        ));
    };
    let server = origin(&url)?;
    let labels: Vec<String> = arg(args, "--labels")
        .unwrap_or_default()
        .split(',')
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    let name = arg(args, "--name").unwrap_or_else(|| "fake-runner".into());
    let register = json!({
        "token": token,
        "name": name,
        "labels": labels,
        "ephemeral": flag(args, "--ephemeral"),
    });
    let runner = register_runner(&server, &register)?;
    let file = dir.join(".runner");
    let saved = json!({ "server": server, "id": runner.0, "credential": runner.1 });
    std::fs::write(&file, saved.to_string())
        .map_err(|e| Failure::Config(format!("cannot write {}: {e}", file.display())))?;
    println!("Runner successfully added");
    Ok(0)
}

fn register_runner(server: &str, body: &Value) -> Result<(u64, String), Failure> {
    let (status, runner) = post(server, "/_sim/runners/register", None, body)?;
    if status != 200 {
        return Err(Failure::Refused(format!(
            "registration answered {status}: {}",
            runner["message"]
        )));
    }
    let id = runner["id"]
        .as_u64()
        .ok_or_else(|| Failure::Server("registration answer has no id".into()))?;
    let credential = runner["credential"]
        .as_str()
        .ok_or_else(|| Failure::Server("registration answer has no credential".into()))?
        .to_owned();
    println!("runner {id} ({}) online", runner["name"]);
    Ok((id, credential))
}

/// `run.sh` / `Runner.Listener run` for the runner directory `root`.
fn run(root: &Path, args: &[String]) -> Result<u8, Failure> {
    let jit = arg(args, "--jitconfig").or_else(|| env("ACTIONS_RUNNER_INPUT_JITCONFIG"));
    let (server, id, credential) = if let Some(jit) = jit {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(jit.trim())
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .ok_or_else(|| Failure::Config("the JIT config is not base64 JSON".into()))?;
        let server = decoded["server_url"]
            .as_str()
            .ok_or_else(|| Failure::Config("the JIT config names no server_url".into()))?;
        let server = origin(server)?;
        let (id, credential) = register_runner(&server, &json!({ "jitconfig": jit }))?;
        (server, id, credential)
    } else {
        let file: PathBuf = root.join(".runner");
        let saved: Value = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                Failure::Config("Not configured. Run config.(sh/cmd) to configure the runner.".into())
            })?;
        (
            saved["server"].as_str().unwrap_or_default().to_owned(),
            saved["id"].as_u64().unwrap_or_default(),
            saved["credential"].as_str().unwrap_or_default().to_owned(),
        )
    };
    work(&server, id, &credential)
}

fn work(server: &str, id: u64, credential: &str) -> Result<u8, Failure> {
    let job = loop {
        let (status, body) = post(
            server,
            &format!("/_sim/runners/{id}/claim"),
            Some(credential),
            &json!({}),
        )?;
        match status {
            200 => break body,
            204 => std::thread::sleep(CLAIM_INTERVAL),
            other => return Err(Failure::Server(format!("claim answered {other}"))),
        }
    };
    let job_id = job["id"].as_u64().unwrap_or_default();
    let duration = Duration::from_millis(job["sim_duration_ms"].as_u64().unwrap_or(0));
    println!("running job {job_id} for {duration:?}");
    std::thread::sleep(duration);

    let exit_code: u8 = env("FAKE_RUNNER_EXIT_CODE")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let conclusion = if exit_code == 0 { "success" } else { "failure" };
    let (status, _) = post(
        server,
        &format!("/_sim/runners/{id}/complete"),
        Some(credential),
        &json!({ "conclusion": conclusion }),
    )?;
    if status != 200 {
        return Err(Failure::Server(format!("complete answered {status}")));
    }
    println!("job {job_id} completed: {conclusion}");
    Ok(exit_code)
}

/// One HTTP/1.1 POST with `Connection: close`; returns the status and the JSON body (or null).
fn post(
    origin: &str,
    path: &str,
    bearer: Option<&str>,
    body: &Value,
) -> Result<(u16, Value), Failure> {
    let authority = origin.trim_start_matches("http://");
    let mut stream = TcpStream::connect(authority)
        .map_err(|e| Failure::Server(format!("cannot connect to {authority}: {e}")))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| Failure::Server(e.to_string()))?;
    let payload = body.to_string();
    let auth = bearer
        .map(|c| format!("Authorization: Bearer {c}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{auth}Connection: close\r\n\r\n{payload}",
        payload.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| Failure::Server(format!("cannot send to {authority}: {e}")))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| Failure::Server(format!("cannot read from {authority}: {e}")))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| Failure::Server("a response without headers".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Failure::Server(format!("a bad status line: {head:?}")))?;
    let mut content = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        content = dechunk(&content);
    }
    let json = serde_json::from_slice(&content).unwrap_or(Value::Null);
    Ok((status, json))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
    out
}
