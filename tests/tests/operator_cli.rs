//! The operator's command line (issue 14 §2) against a running controller: `status`, `jobs`,
//! `job ID`, `agents`, `drain AGENT`, tables and `--json`, and the exit codes scripts rely on.

use std::time::Duration;

use controller::cli::{Connection, Exit, Request, run};
use tests::harness::{
    AgentTls, TEST_API_TOKEN, TestAgent, TestController, controller_env, get_json, hook_to, init,
    simulated_github, wait_until,
};
use tests::pki::TestCa;

const WAIT: Duration = Duration::from_secs(60);

async fn cli(conn: &Connection, request: Request, json: bool) -> (Exit, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = run(conn, &request, json, &mut out, &mut err).await;
    (
        exit,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test]
async fn the_cli_reports_jobs_agents_and_drains_with_exit_codes() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(&dir.path().join("pki"), "test CA");
    let server = ca.server();
    let (sim, mut env) = simulated_github().await;
    env.extend(controller_env(
        &dir.path().join("state"),
        &ca.ca_file(),
        &server,
    ));
    let controller = TestController::start(env).await;
    hook_to(&sim, "acme", &controller);
    let cert = ca.client("host-1", &[]);
    let agent = TestAgent::start(
        &controller.grpc_url(),
        &AgentTls {
            ca: ca.ca_file(),
            cert: cert.cert,
            key: cert.key,
        },
        &[],
    );
    agent
        .wait_status(WAIT, "connected", |st| st.connected)
        .await;
    let (_, job) = sim.queue_job("acme", "app", &["self-hosted", "gpu"]);
    wait_until(WAIT, "the job explained", || async {
        let (_, body) = get_json(&controller, &format!("/api/v1/jobs/{job}")).await;
        body["explanation"]
            .as_str()
            .is_some_and(|t| t.contains("gpu"))
    })
    .await;
    let conn = Connection {
        url: format!("http://{}", controller.http_addr),
        token: Some(TEST_API_TOKEN.into()),
    };

    let (exit, out, err) = cli(&conn, Request::Status, false).await;
    assert_eq!(exit, Exit::Ok, "{err}");
    assert!(out.starts_with("status: running\n"), "{out}");
    assert!(out.contains("queue: 1 waiting"), "{out}");

    let jobs = |owner: Option<&str>, state: Option<&str>| Request::Jobs {
        owner: owner.map(Into::into),
        state: state.map(Into::into),
    };
    let (exit, out, _) = cli(&conn, jobs(None, Some("queued")), false).await;
    assert_eq!(exit, Exit::Ok);
    assert!(out.starts_with("JOB"), "{out}");
    assert!(
        out.contains(&job.to_string()) && out.contains("no agent offers the labels gpu"),
        "{out}"
    );
    let (_, out, _) = cli(&conn, jobs(Some("someone-else"), None), true).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["jobs"],
        serde_json::json!([]),
        "another owner's filter shows none"
    );
    let (exit, _, err) = cli(&conn, jobs(None, Some("completed")), false).await;
    assert_eq!(exit, Exit::BadRequest);
    assert!(err.contains("queued or in_progress"), "{err}");

    let (exit, out, _) = cli(
        &conn,
        Request::Job {
            id: job.to_string(),
            owner: None,
        },
        false,
    )
    .await;
    assert_eq!(exit, Exit::Ok);
    assert!(
        out.contains("state: queued") && out.contains("gpu"),
        "{out}"
    );
    let (exit, _, err) = cli(
        &conn,
        Request::Job {
            id: "424242".into(),
            owner: None,
        },
        false,
    )
    .await;
    assert_eq!(exit, Exit::NotFound, "{err}");

    let (exit, out, _) = cli(&conn, Request::Agents, false).await;
    assert_eq!(exit, Exit::Ok);
    assert!(out.contains("host-1") && out.contains("healthy"), "{out}");
    let (exit, out, _) = cli(
        &conn,
        Request::Drain {
            agent: "host-1".into(),
        },
        false,
    )
    .await;
    assert_eq!(exit, Exit::Ok);
    assert_eq!(out, "agent host-1 is draining\n");
    wait_until(WAIT, "the agent draining", || async {
        let (_, out, _) = cli(&conn, Request::Agents, true).await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["draining"] == true
    })
    .await;
    let (exit, _, _) = cli(
        &conn,
        Request::Drain {
            agent: "nobody".into(),
        },
        false,
    )
    .await;
    assert_eq!(exit, Exit::NotFound);

    let wrong = Connection {
        token: Some("wrong-token".into()),
        ..conn.clone()
    };
    let (exit, _, err) = cli(&wrong, Request::Agents, false).await;
    assert_eq!(exit, Exit::Unauthorized, "{err}");
    let unreachable = Connection {
        url: "http://127.0.0.1:9".into(),
        ..conn.clone()
    };
    assert_eq!(
        cli(&unreachable, Request::Status, false).await.0,
        Exit::Failed
    );
}
