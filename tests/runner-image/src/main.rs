//! The fake GitHub Actions runner of the test runner image.
//!
//! It reads its registration material from the environment variables real runner images use,
//! registers with the GitHub simulator's runner protocol (`/_sim/runners/...`, see
//! `tests/src/github_sim/runner_http.rs`), waits for a job it matches, works on it for the
//! job's scripted duration (`sim_duration_ms`), reports completion and exits: an ephemeral
//! runner, one job per process.
//!
//! - Official image convention: `ACTIONS_RUNNER_INPUT_JITCONFIG` (base64 JIT config; the
//!   simulator's carries its own `server_url`).
//! - myoung34 convention: `RUNNER_TOKEN` with `REPO_URL`, or `ORG_NAME` (+ `RUNNER_SCOPE=org`)
//!   with `GITHUB_HOST` (host:port, spoken to over plain HTTP: the simulator has no TLS);
//!   `RUNNER_NAME`, `LABELS` (comma-separated), `EPHEMERAL`.
//! - `FAKE_RUNNER_EXIT_CODE`: exit with this code after completing the job (default 0).
//!
//! Exit codes: 0 job done, 2 bad configuration, 3 registration refused, 4 the simulator failed.
//! Only std and serde_json: the binary is built static and runs in an empty image. It never
//! prints its registration material.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

const CLAIM_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
enum Failure {
    Config(String),
    Refused(String),
    Server(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Config(m) | Failure::Refused(m) | Failure::Server(m) => m,
        }
    }

    fn code(&self) -> u8 {
        match self {
            Failure::Config(_) => 2,
            Failure::Refused(_) => 3,
            Failure::Server(_) => 4,
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("fake-runner: {}", failure.message());
            ExitCode::from(failure.code())
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `http://host:port` of a URL such as `http://127.0.0.1:4000/acme/app`.
fn origin(url: &str) -> Result<String, Failure> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| Failure::Config(format!("{url:?}: only http:// is spoken here")))?;
    let host = rest.split('/').next().unwrap_or_default();
    Ok(format!("http://{host}"))
}

fn run() -> Result<u8, Failure> {
    let (server, register) = if let Some(jit) = env("ACTIONS_RUNNER_INPUT_JITCONFIG") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(jit.trim())
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .ok_or_else(|| Failure::Config("the JIT config is not base64 JSON".into()))?;
        let server = decoded["server_url"]
            .as_str()
            .ok_or_else(|| Failure::Config("the JIT config names no server_url".into()))?;
        (origin(server)?, json!({ "jitconfig": jit }))
    } else if let Some(token) = env("RUNNER_TOKEN") {
        let server = match (env("REPO_URL"), env("ORG_NAME"), env("GITHUB_HOST")) {
            (Some(repo_url), _, _) => origin(&repo_url)?,
            (None, Some(_), Some(host)) => format!("http://{host}"),
            _ => {
                return Err(Failure::Config(
                    "RUNNER_TOKEN needs REPO_URL, or ORG_NAME with GITHUB_HOST".into(),
                ));
            }
        };
        let labels: Vec<String> = env("LABELS")
            .unwrap_or_default()
            .split(',')
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        let name = env("RUNNER_NAME").unwrap_or_else(|| "fake-runner".into());
        let ephemeral = matches!(env("EPHEMERAL").as_deref(), Some("1" | "true"));
        (
            server,
            json!({ "token": token, "name": name, "labels": labels, "ephemeral": ephemeral }),
        )
    } else {
        return Err(Failure::Config(
            "neither ACTIONS_RUNNER_INPUT_JITCONFIG nor RUNNER_TOKEN is set".into(),
        ));
    };

    let (status, runner) = post(&server, "/_sim/runners/register", None, &register)?;
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

    let job = loop {
        let (status, body) = post(
            &server,
            &format!("/_sim/runners/{id}/claim"),
            Some(&credential),
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
        &server,
        &format!("/_sim/runners/{id}/complete"),
        Some(&credential),
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
