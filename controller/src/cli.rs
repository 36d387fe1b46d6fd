//! The operator's command line over the HTTP API: `gha-controller status`, `jobs`, `job ID`,
//! `agents`, `drain AGENT`. Human tables by default, the API's JSON with `--json`, and exit
//! codes scripts can use ([`Exit`]).
//!
//! [`run`] does the one request and writes the answer; the tables are pure functions of the
//! API's JSON ([`table`] and the `*_table` builders), tested without a server.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::Value;

/// What a command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    Jobs {
        owner: Option<String>,
        state: Option<String>,
    },
    Job {
        id: String,
        owner: Option<String>,
    },
    Agents,
    Drain {
        agent: String,
    },
}

/// Exit codes: 0 done; 1 the controller could not be reached or failed; 3 the token was
/// refused (or the API is closed); 4 not found (or ambiguous); 5 `status` found the controller
/// degraded; 6 a bad request (e.g. an unknown `--state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Unauthorized = 3,
    NotFound = 4,
    Degraded = 5,
    BadRequest = 6,
}

/// Where and as whom.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The controller's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub token: Option<String>,
}

fn path(request: &Request) -> (reqwest::Method, String) {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    match request {
        Request::Status => (reqwest::Method::GET, "/status".into()),
        Request::Jobs { owner, state } => {
            let mut q = Vec::new();
            if let Some(o) = owner {
                q.push(format!("owner={}", enc(o)));
            }
            if let Some(s) = state {
                q.push(format!("state={}", enc(s)));
            }
            let q = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            (reqwest::Method::GET, format!("/api/v1/jobs{q}"))
        }
        Request::Job { id, owner } => (
            reqwest::Method::GET,
            format!(
                "/api/v1/jobs/{}{}",
                enc(id),
                owner
                    .as_ref()
                    .map(|o| format!("?owner={}", enc(o)))
                    .unwrap_or_default()
            ),
        ),
        Request::Agents => (reqwest::Method::GET, "/api/v1/agents".into()),
        Request::Drain { agent } => (
            reqwest::Method::POST,
            format!("/api/v1/agents/{}/drain", enc(agent)),
        ),
    }
}

/// An aligned text table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<&str>| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(&mut out, header.to_vec());
    for row in rows {
        line(&mut out, row.iter().map(String::as_str).collect());
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

pub fn status_text(v: &Value) -> String {
    let mut out = format!(
        "status: {}{}\nrunners: {} of {}\nqueue: {} waiting\n",
        s(&v["status"]),
        v["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        s(&v["runners"]["current"]),
        s(&v["runners"]["max"]),
        s(&v["queue"]["depth"]),
    );
    if let Some(owners) = v["owners"].as_array() {
        let rows: Vec<Vec<String>> = owners
            .iter()
            .map(|o| {
                vec![
                    s(&o["name"]),
                    format!("{}/{}", s(&o["active_runners"]), s(&o["max_runners"])),
                    s(&o["queued_jobs"]),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["OWNER", "RUNNERS", "QUEUED"], &rows));
    }
    out
}

pub fn jobs_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| {
            vec![
                s(&j["job"]),
                s(&j["owner"]),
                s(&j["repo"]),
                s(&j["state"]),
                s(&j["labels"]),
                s(&j["explanation"]),
            ]
        })
        .collect();
    table(&["JOB", "OWNER", "REPO", "STATE", "LABELS", "WHY"], &rows)
}

pub fn job_text(v: &Value) -> String {
    let j = &v["job"];
    let mut out = format!(
        "job {} of {} ({} in {})\nstate: {}\nlabels: {}\nrunner: {}\n{}\n",
        s(&j["id"]),
        s(&j["owner"]),
        s(&j["name"]),
        s(&j["repo"]),
        s(&j["state"]),
        s(&j["labels"]),
        s(&v["runner"]["name"]),
        s(&v["explanation"]),
    );
    let steps: Vec<Vec<String>> = v["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut what = s(&e["message"]);
            if let Some(d) = e["delivery"].as_str() {
                what.push_str(&format!(" (delivery {d})"));
            }
            vec![s(&e["at"]), s(&e["kind"]), what]
        })
        .collect();
    if !steps.is_empty() {
        out.push_str("\ntimeline:\n");
        out.push_str(&table(&["AT", "KIND", "WHAT"], &steps));
    }
    out
}

pub fn agents_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let state = if a["connected"] != true {
                "disconnected".to_owned()
            } else if a["draining"] == true {
                "draining".to_owned()
            } else if a["healthy"] != true {
                format!("unhealthy: {}", s(&a["unhealthy_reason"]))
            } else {
                "healthy".to_owned()
            };
            vec![
                s(&a["name"]),
                s(&a["architectures"]),
                s(&a["runtime"]),
                format!(
                    "{}/{}",
                    a["runners"].as_array().map_or(0, Vec::len),
                    s(&a["capacity"])
                ),
                s(&a["version"]),
                s(&a["last_heartbeat"]),
                state,
            ]
        })
        .collect();
    table(
        &[
            "AGENT",
            "ARCH",
            "RUNTIME",
            "RUNNERS",
            "VERSION",
            "HEARTBEAT",
            "STATE",
        ],
        &rows,
    )
}

fn exit_for(status: u16) -> Exit {
    match status {
        200..=299 => Exit::Ok,
        401 | 403 => Exit::Unauthorized,
        404 | 409 => Exit::NotFound,
        400 => Exit::BadRequest,
        _ => Exit::Failed,
    }
}

/// Sends `request`, writes the answer to `out` (errors to `err`), and says how to exit.
pub async fn run(
    conn: &Connection,
    request: &Request,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Exit {
    let (method, path) = path(request);
    let url = format!("{}{path}", conn.url.trim_end_matches('/'));
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: cannot build an HTTP client: {e}");
            return Exit::Failed;
        }
    };
    let mut req = client.request(method, &url);
    if let Some(t) = &conn.token {
        req = req.bearer_auth(t);
    }
    let response = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: cannot reach the controller at {url}: {e}");
            return Exit::Failed;
        }
    };
    let status = response.status().as_u16();
    let body: Value = match response.json().await {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(err, "error: {url} answered {status} without JSON: {e}");
            return Exit::Failed;
        }
    };
    let exit = exit_for(status);
    if exit != Exit::Ok {
        let _ = writeln!(
            err,
            "error: {} ({status} {})",
            body["message"].as_str().unwrap_or("the controller refused"),
            s(&body["error"])
        );
        return exit;
    }
    let text = if json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&body).unwrap_or_default()
        )
    } else {
        match request {
            Request::Status => status_text(&body),
            Request::Jobs { .. } => jobs_table(&body),
            Request::Job { .. } => job_text(&body),
            Request::Agents => agents_table(&body),
            Request::Drain { agent } => format!("agent {agent} is draining\n"),
        }
    };
    let _ = out.write_all(text.as_bytes());
    if matches!(request, Request::Status) && body["status"] != "running" {
        return Exit::Degraded;
    }
    Exit::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    w\n");
    }

    #[test]
    fn paths_encode_their_arguments() {
        let (_, p) = path(&Request::Jobs {
            owner: Some("ac me".into()),
            state: Some("queued".into()),
        });
        assert_eq!(p, "/api/v1/jobs?owner=ac+me&state=queued");
        let (m, p) = path(&Request::Drain {
            agent: "host/1".into(),
        });
        assert_eq!(
            (m, p.as_str()),
            (reqwest::Method::POST, "/api/v1/agents/host%2F1/drain")
        );
        let (_, p) = path(&Request::Job {
            id: "7".into(),
            owner: Some("bob".into()),
        });
        assert_eq!(p, "/api/v1/jobs/7?owner=bob");
    }

    #[test]
    fn views_of_the_apis_json() {
        let jobs = json!({ "jobs": [{ "job": 7, "owner": "acme", "repo": "app", "state": "queued",
            "labels": ["self-hosted", "gpu"], "explanation": "no agent offers the labels gpu" }] });
        let t = jobs_table(&jobs);
        assert!(t.starts_with("JOB  OWNER  REPO  STATE   LABELS"), "{t}");
        assert!(
            t.contains("7    acme   app   queued  self-hosted,gpu  no agent offers"),
            "{t}"
        );
        let job = json!({ "job": { "id": 7, "owner": "acme", "name": "build", "repo": "app",
            "state": "queued", "labels": ["self-hosted"] }, "runner": null, "explanation": "x",
            "timeline": [{ "at": "2026-01-01T00:00:00Z", "kind": "webhook",
                "message": "webhook workflow_job: job queued", "delivery": "d-1" },
              { "at": "2026-01-01T00:00:01Z", "kind": "runner",
                "message": "runner r-1 planned on agent host-1" }] });
        let t = job_text(&job);
        assert!(t.contains("timeline:\nAT  "), "{t}");
        assert!(
            t.contains("webhook  webhook workflow_job: job queued (delivery d-1)"),
            "{t}"
        );
        assert!(
            t.contains("runner   runner r-1 planned on agent host-1"),
            "{t}"
        );
        let agents = json!([{ "name": "host-1", "architectures": ["amd64"], "runtime": "docker",
            "runners": [{}], "capacity": 4, "version": "0.1.0", "last_heartbeat": "t",
            "connected": true, "healthy": true, "draining": true }]);
        assert!(agents_table(&agents).contains("1/4"));
        assert!(agents_table(&agents).contains("draining"));
        let st = json!({ "status": "degraded", "reason": "r", "runners": { "current": 1, "max": 5 },
            "queue": { "depth": 2 }, "owners": [{ "name": "acme", "active_runners": 1,
            "max_runners": 5, "queued_jobs": 2 }] });
        let t = status_text(&st);
        assert!(
            t.starts_with("status: degraded (r)\nrunners: 1 of 5\nqueue: 2 waiting"),
            "{t}"
        );
        assert!(t.contains("acme   1/5      2"), "{t}");
        for (code, exit) in [
            (200, Exit::Ok),
            (401, Exit::Unauthorized),
            (403, Exit::Unauthorized),
            (404, Exit::NotFound),
            (409, Exit::NotFound),
            (400, Exit::BadRequest),
            (503, Exit::Failed),
        ] {
            assert_eq!(exit_for(code), exit);
        }
    }
}
