//! The dashboard in a real browser (issue 14): Debian's chromium, headless, against a running
//! controller with the GitHub simulator and one agent. The overview shows the right counts, a
//! waiting job's reason appears, a new job appears without a reload (server-sent events), and
//! the drain button drains the agent.
//!
//! Screenshots are written to `target/dashboard-screenshots/` (the path is printed); with
//! `UPDATE_DOCS_SCREENSHOT=1` the overview also replaces `docs/dashboard-overview.png`.

use std::path::PathBuf;
use std::time::Duration;

use tests::browser::Browser;
use tests::harness::{
    AgentTls, TEST_API_TOKEN, TestAgent, TestController, controller_env, get_json, hook_to, init,
    simulated_github, wait_until,
};
use tests::pki::TestCa;

const WAIT: Duration = Duration::from_secs(60);

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("dashboard-screenshots")
}

/// The text of the first element matching `selector`, as a JavaScript expression.
fn text(selector: &str) -> String {
    format!("((document.querySelector({selector:?}) || {{}}).textContent || '')")
}

#[tokio::test]
async fn the_dashboard_shows_counts_reasons_live_jobs_and_drains_an_agent() {
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

    // A job no agent can take: it waits, and says why.
    let (_, gpu_job) = sim.queue_job("acme", "app", &["self-hosted", "gpu"]);
    wait_until(WAIT, "the controller explains the gpu job", || async {
        let (_, body) = get_json(&controller, &format!("/api/v1/jobs/{gpu_job}")).await;
        body["explanation"]
            .as_str()
            .is_some_and(|t| t.contains("gpu"))
    })
    .await;

    let base = format!("http://{}", controller.http_addr);
    let shots = artifacts();
    println!("dashboard screenshots: {}", shots.display());
    let mut b = Browser::start().await.expect("chromium starts");

    // `/` leads to the login form; the API token logs in.
    b.goto(&format!("{base}/")).await.unwrap();
    b.wait_for(
        WAIT,
        "the login form",
        "location.pathname === '/ui/login' && !!document.querySelector('#token')",
    )
    .await
    .unwrap();
    b.eval(&format!(
        "document.querySelector('#token').value = {TEST_API_TOKEN:?}; \
         document.querySelector('form').submit(); true"
    ))
    .await
    .unwrap();
    b.wait_for(
        WAIT,
        "the overview after login",
        "location.pathname === '/ui/' && !!document.querySelector('#count-queued')",
    )
    .await
    .unwrap();

    // The right counts, and the waiting job's reason, in words.
    b.wait_for(
        WAIT,
        "1 job waiting, 0 runners, 1 agent",
        &format!(
            "{} === '1' && {} === '0' && {} === '1'",
            text("#count-queued"),
            text("#count-runners"),
            text("#count-agents")
        ),
    )
    .await
    .unwrap();
    let owner_row = b
        .eval(&text("tr[data-owner='acme']"))
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        owner_row.contains("0 / 5"),
        "runners in use of MAX_RUNNERS: {owner_row}"
    );
    let oldest = b
        .eval(&text("tr[data-owner='acme'] [data-field='oldest']"))
        .await
        .unwrap();
    let oldest = oldest.as_str().unwrap();
    assert!(
        oldest.contains(&format!("job {gpu_job}"))
            && oldest.contains("no agent offers the labels gpu"),
        "{oldest}"
    );

    // A new job appears without a reload: a marker set on this document survives.
    b.wait_for(
        WAIT,
        "the live stream connected",
        &format!("{} === 'live'", text("#live")),
    )
    .await
    .unwrap();
    b.eval("window.__noReload = 'still here'; true")
        .await
        .unwrap();
    let (_, second) = sim.queue_job("acme", "web", &["self-hosted", "gpu"]);
    b.wait_for(
        WAIT,
        "the second job counted live",
        &format!("{} === '2'", text("#count-queued")),
    )
    .await
    .unwrap();
    assert_eq!(
        b.eval("window.__noReload").await.unwrap(),
        "still here",
        "the page was updated in place, not reloaded"
    );
    b.screenshot(&shots.join("overview.png")).await.unwrap();
    if std::env::var_os("UPDATE_DOCS_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard-overview.png");
        b.screenshot(&docs).await.unwrap();
        println!("updated {}", docs.display());
    }

    // The queue lists both with their reason and a link to GitHub.
    b.goto(&format!("{base}/ui/queue")).await.unwrap();
    let reason = b
        .eval(&text(&format!(
            "tr[data-job='{second}'] [data-field='reason']"
        )))
        .await
        .unwrap();
    assert!(
        reason
            .as_str()
            .unwrap()
            .contains("no agent offers the labels gpu"),
        "{reason}"
    );
    b.screenshot(&shots.join("queue.png")).await.unwrap();

    // The job's timeline.
    b.goto(&format!("{base}/ui/jobs/acme/{gpu_job}"))
        .await
        .unwrap();
    b.wait_for(
        WAIT,
        "the timeline records the wait",
        &format!(
            "{}.includes('waits: no agent offers the labels gpu')",
            text("#timeline")
        ),
    )
    .await
    .unwrap();
    b.screenshot(&shots.join("job.png")).await.unwrap();

    // The drain button drains.
    b.goto(&format!("{base}/ui/agents")).await.unwrap();
    let state = b
        .eval(&text("tr[data-agent='host-1'] [data-field='state']"))
        .await
        .unwrap();
    assert_eq!(state, "healthy");
    b.eval("document.querySelector(\"[data-drain='host-1']\").click(); true")
        .await
        .unwrap();
    b.wait_for(
        WAIT,
        "the agent shown draining",
        &format!(
            "location.pathname === '/ui/agents' && {} === 'draining'",
            text("tr[data-agent='host-1'] [data-field='state']")
        ),
    )
    .await
    .unwrap();
    let (_, agent_view) = get_json(&controller, "/api/v1/agents/host-1").await;
    assert_eq!(agent_view["draining"], true, "{agent_view:#}");
    b.screenshot(&shots.join("agents.png")).await.unwrap();
    b.close().await;
}
