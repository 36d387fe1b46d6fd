//! `POST /webhook` over real HTTP: every kind of bad input gets its status and a JSON reason;
//! good deliveries are recorded once, in JSON or form encoding.

use std::time::Duration;

use tests::github_sim::signature_256;
use tests::harness::{TEST_WEBHOOK_SECRET, TestController, get_json, init, vars};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/github_sim/fixtures/webhooks")
            .join(name),
    )
    .unwrap()
}

async fn controller(dir: &std::path::Path, extra: &[(&str, &str)]) -> TestController {
    init();
    let mut env = vars(&[
        ("STATE_DIR", dir.join("state").display().to_string()),
        ("OWNERS", "philips-labs,octo-org".into()),
        ("OWNER_PHILIPS_LABS_GITHUB_TOKEN", "t".into()),
        ("OWNER_PHILIPS_LABS_ALL_REPOS", "true".into()),
        (
            "OWNER_PHILIPS_LABS_WEBHOOK_SECRET",
            TEST_WEBHOOK_SECRET.into(),
        ),
        ("OWNER_OCTO_ORG_GITHUB_TOKEN", "t".into()),
        ("OWNER_OCTO_ORG_REPO_NAME", "only-this-one".into()),
        ("OWNER_OCTO_ORG_WEBHOOK_SECRET", "octo-secret".into()),
    ]);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    TestController::start(env).await
}

struct Delivery<'a> {
    event: &'a str,
    id: &'a str,
    body: Vec<u8>,
    content_type: &'a str,
    signature: Option<String>,
}

impl<'a> Delivery<'a> {
    fn signed(event: &'a str, id: &'a str, body: Vec<u8>) -> Self {
        let signature = Some(signature_256(TEST_WEBHOOK_SECRET, &body));
        Self {
            event,
            id,
            body,
            content_type: "application/json",
            signature,
        }
    }

    async fn send(self, c: &TestController) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new()
            .post(format!("http://{}/webhook", c.http_addr))
            .header("X-GitHub-Event", self.event)
            .header("X-GitHub-Delivery", self.id)
            .header("Content-Type", self.content_type)
            .body(self.body);
        if let Some(sig) = self.signature {
            req = req.header("X-Hub-Signature-256", sig);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }
}

#[tokio::test]
async fn a_signed_queued_job_is_accepted_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), &[]).await;
    let body = fixture("workflow_job.queued.self-hosted.json");
    let (code, reply) = Delivery::signed("workflow_job", "d-1", body.clone())
        .send(&c)
        .await;
    assert_eq!((code, reply["status"].as_str()), (202, Some("accepted")));
    let (code, reply) = Delivery::signed("workflow_job", "d-1", body).send(&c).await;
    assert_eq!((code, reply["status"].as_str()), (200, Some("duplicate")));
    let (code, job) = get_json(&c, "/api/v1/jobs/3169272040").await;
    assert_eq!(code, 200);
    assert_eq!(job["job"]["state"], "queued");
    assert_eq!(job["job"]["labels"], serde_json::json!(["self-hosted"]));
}

#[tokio::test]
async fn form_encoded_deliveries_are_verified_over_the_raw_body() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), &[]).await;
    let json = fixture("workflow_job.queued.self-hosted.json");
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", std::str::from_utf8(&json).unwrap())
        .finish();
    let mut d = Delivery::signed("workflow_job", "d-form", form.into_bytes());
    d.content_type = "application/x-www-form-urlencoded";
    let (code, _) = d.send(&c).await;
    assert_eq!(code, 202);
}

#[tokio::test]
async fn bad_input_gets_a_status_and_a_json_reason() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), &[]).await;
    let body = fixture("workflow_job.queued.self-hosted.json");

    let mut unsigned = Delivery::signed("workflow_job", "x1", body.clone());
    unsigned.signature = None;
    let (code, reply) = unsigned.send(&c).await;
    assert_eq!(
        (code, reply["error"].as_str()),
        (401, Some("invalid_signature"))
    );

    let mut forged = Delivery::signed("workflow_job", "x2", body.clone());
    forged.signature = Some(signature_256("not-the-secret", &body));
    let (code, _) = forged.send(&c).await;
    assert_eq!(code, 401);

    let (code, reply) = Delivery::signed("workflow_job", "x3", b"{not json".to_vec())
        .send(&c)
        .await;
    assert_eq!(
        (code, reply["error"].as_str()),
        (400, Some("malformed_payload"))
    );

    let stranger =
        br#"{"action":"queued","repository":{"name":"r","owner":{"login":"stranger"}}}"#.to_vec();
    let (code, reply) = Delivery::signed("workflow_job", "x4", stranger)
        .send(&c)
        .await;
    // GitHub shows any 4xx as a failed delivery: an owner we do not serve is 2xx and ignored.
    assert_eq!(
        (code, reply["status"].as_str()),
        (202, Some("ignored_unknown_owner"))
    );

    let mut xml = Delivery::signed("workflow_job", "x5", body.clone());
    xml.content_type = "application/xml";
    let (code, _) = xml.send(&c).await;
    assert_eq!(code, 415);

    let (code, reply) = reqwest::Client::new()
        .post(format!("http://{}/webhook", c.http_addr))
        .header("X-GitHub-Event", "workflow_job")
        .body(body.clone())
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(code, 400);
    assert_eq!(
        reply.json::<serde_json::Value>().await.unwrap()["error"],
        "missing_header"
    );

    // Far below GitHub's 25 MB cap, far above any workflow payload (WEBHOOK_MAX_BODY, 1 MiB).
    for size in [26 * 1024 * 1024, 2 * 1024 * 1024] {
        let huge = vec![b' '; size];
        let (code, reply) = Delivery::signed("workflow_job", "x6", huge).send(&c).await;
        assert_eq!(
            (code, reply["error"].as_str()),
            (413, Some("payload_too_large")),
            "{size} bytes"
        );
    }

    // Nothing refused was recorded.
    assert_eq!(get_json(&c, "/api/v1/jobs/3169272040").await.0, 404);
}

#[tokio::test]
async fn pings_other_events_and_unserved_repositories_are_answered_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), &[]).await;
    // GitHub's org ping fixture, re-addressed to a configured organisation.
    let ping = String::from_utf8(fixture("ping.org.json"))
        .unwrap()
        .replace("\"Octocoders\"", "\"philips-labs\"");
    let (code, reply) = Delivery::signed("ping", "p1", ping.into_bytes())
        .send(&c)
        .await;
    assert_eq!(
        (code, reply["status"].as_str()),
        (200, Some("pong")),
        "{reply}"
    );
    let push = br#"{"repository":{"name":"terraform-aws-github-runner","owner":{"login":"philips-labs"}}}"#.to_vec();
    let (code, reply) = Delivery::signed("push", "p2", push).send(&c).await;
    assert_eq!(
        (code, reply["status"].as_str()),
        (202, Some("ignored_event"))
    );
    // octo-org serves only one repository.
    let body = br#"{"action":"queued","workflow_job":{"id":5,"run_id":6,"labels":["self-hosted"]},
        "repository":{"name":"another","owner":{"login":"Octo-Org"}}}"#
        .to_vec();
    let d = Delivery {
        signature: Some(signature_256("octo-secret", &body)),
        ..Delivery::signed("workflow_job", "p3", body)
    };
    let (code, reply) = d.send(&c).await;
    assert_eq!(
        (code, reply["status"].as_str()),
        (202, Some("repository_not_served"))
    );
    assert_eq!(get_json(&c, "/api/v1/jobs/5").await.0, 404);
    let metrics = reqwest::get(format!("http://{}/metrics", c.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("outcome=\"repository_not_served\"} 1"),
        "{metrics}"
    );
}

/// `fixture` with every `from` replaced by `to` (re-addressing GitHub's payloads).
fn readdressed(name: &str, replacements: &[(&str, &str)]) -> Vec<u8> {
    let mut text = String::from_utf8(fixture(name)).unwrap();
    for (from, to) in replacements {
        text = text.replace(from, to);
    }
    text.into_bytes()
}

#[tokio::test]
async fn a_delivery_signed_by_another_owner_cannot_touch_an_owners_job() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), &[]).await;
    let queued = fixture("workflow_job.queued.self-hosted.json");
    let (code, _) = Delivery::signed("workflow_job", "a-1", queued)
        .send(&c)
        .await;
    assert_eq!(code, 202);

    // Completion of philips-labs' job 3169272040, naming philips-labs, signed with octo-org's
    // secret: refused, the owner's hooks must use the owner's secret.
    let completed = readdressed(
        "workflow_job.completed.success.json",
        &[
            ("289782451", "3169272040"),
            ("\"Octocoders\"", "\"philips-labs\""),
            ("\"Hello-World\"", "\"terraform-aws-github-runner\""),
        ],
    );
    let forged = Delivery {
        signature: Some(signature_256("octo-secret", &completed)),
        ..Delivery::signed("workflow_job", "b-1", completed)
    };
    let (code, reply) = forged.send(&c).await;
    assert_eq!(
        (code, reply["error"].as_str()),
        (403, Some("owner_mismatch")),
        "{reply}"
    );

    // octo-org completing "its own" job of the same id, in its own repository: recorded for
    // octo-org, never for philips-labs.
    let own = readdressed(
        "workflow_job.completed.success.json",
        &[
            ("289782451", "3169272040"),
            ("\"Octocoders\"", "\"octo-org\""),
            ("\"Hello-World\"", "\"only-this-one\""),
        ],
    );
    let d = Delivery {
        signature: Some(signature_256("octo-secret", &own)),
        ..Delivery::signed("workflow_job", "b-2", own)
    };
    let (code, reply) = d.send(&c).await;
    assert_eq!((code, reply["status"].as_str()), (202, Some("accepted")));

    let (code, job) = get_json(&c, "/api/v1/jobs/3169272040?owner=philips-labs").await;
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["job"]["state"], "queued", "{job}");
    assert_eq!(job["job"]["owner"], "philips-labs");
    let (code, job) = get_json(&c, "/api/v1/jobs/3169272040?owner=Octo-Org").await;
    assert_eq!(
        (code, job["job"]["state"].as_str()),
        (200, Some("completed"))
    );
    let (code, both) = get_json(&c, "/api/v1/jobs/3169272040").await;
    assert_eq!(
        (code, both["error"].as_str()),
        (409, Some("ambiguous")),
        "{both}"
    );
}

#[tokio::test]
async fn app_events_without_an_owner_and_unknown_owners_are_2xx_ignored_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), &[]).await;
    for (event, id) in [
        ("installation", "n-1"),
        ("installation_repositories", "n-2"),
    ] {
        let (code, reply) = Delivery::signed(event, id, fixture("installation.created.json"))
            .send(&c)
            .await;
        assert_eq!(
            (code, reply["status"].as_str()),
            (202, Some("ignored_no_owner")),
            "{event}: {reply}"
        );
    }
    // The ping GitHub sends when an App is registered names no repository or organization.
    let app_ping = br#"{"zen":"Keep it logically awesome.","hook_id":1,"hook":{"type":"App","id":1,"app_id":7,"events":["workflow_job"]}}"#;
    let (code, reply) = Delivery::signed("ping", "n-3", app_ping.to_vec())
        .send(&c)
        .await;
    assert_eq!((code, reply["status"].as_str()), (200, Some("pong")));
    let stranger = readdressed(
        "workflow_job.queued.json",
        &[("\"Octocoders\"", "\"stranger\"")],
    );
    let (code, reply) = Delivery::signed("workflow_job", "n-4", stranger)
        .send(&c)
        .await;
    assert_eq!(
        (code, reply["status"].as_str()),
        (202, Some("ignored_unknown_owner"))
    );
    // Still verified first: an unsigned App event is refused.
    let mut unsigned =
        Delivery::signed("installation", "n-5", fixture("installation.created.json"));
    unsigned.signature = None;
    assert_eq!(unsigned.send(&c).await.0, 401);
    let metrics = reqwest::get(format!("http://{}/metrics", c.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"event="workflow_job",outcome="ignored_unknown_owner"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"event="installation",outcome="ignored_no_owner"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn untrusted_event_names_do_not_become_metric_labels() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), &[]).await;
    let client = reqwest::Client::new();
    for i in 0..50 {
        // Unsigned, so refused: the event name still must not reach /metrics.
        let code = client
            .post(format!("http://{}/webhook", c.http_addr))
            .header("X-GitHub-Event", format!("evil-{i}-{}", "x".repeat(200)))
            .header("X-GitHub-Delivery", format!("e-{i}"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(code, 401);
    }
    let metrics = reqwest::get(format!("http://{}/metrics", c.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("evil-"), "{metrics}");
    assert!(
        metrics.contains(r#"event="other",outcome="invalid_signature"} 50"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_job_waiting_for_approval_is_demand_only_after_its_second_queued() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), &[]).await;
    let to_philips = [("\"lineville\"", "\"philips-labs\"")];
    let queued_waiting = readdressed("workflow_job.queued.with-deployment.json", &to_philips);
    let (code, reply) = Delivery::signed("workflow_job", "w-1", queued_waiting.clone())
        .send(&c)
        .await;
    assert_eq!(code, 202, "{reply}");
    let (_, job) = get_json(&c, "/api/v1/jobs/12877621891").await;
    assert_eq!(job["job"]["state"], "waiting", "{job}");
    assert!(job["explanation"].as_str().unwrap().contains("approval"));
    let (_, status) = get_json(&c, "/status").await;
    assert_eq!(status["queue"]["depth"], 0, "not demand: {status}");

    let waiting = readdressed("workflow_job.waiting.json", &to_philips);
    Delivery::signed("workflow_job", "w-2", waiting)
        .send(&c)
        .await;
    let approved = String::from_utf8(queued_waiting)
        .unwrap()
        .replace("\"status\": \"waiting\"", "\"status\": \"queued\"");
    let (code, _) = Delivery::signed("workflow_job", "w-3", approved.into_bytes())
        .send(&c)
        .await;
    assert_eq!(code, 202);
    let (_, job) = get_json(&c, "/api/v1/jobs/12877621891").await;
    assert_eq!(job["job"]["state"], "queued", "{job}");
    // And only forward from there: a late `waiting` does not take it back.
    let waiting = readdressed("workflow_job.waiting.json", &to_philips);
    Delivery::signed("workflow_job", "w-4", waiting)
        .send(&c)
        .await;
    let (_, job) = get_json(&c, "/api/v1/jobs/12877621891").await;
    assert_eq!(job["job"]["state"], "queued", "{job}");
}

#[tokio::test]
async fn unsigned_webhooks_need_an_explicit_opt_in() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(
        dir.path(),
        &[
            ("OWNER_PHILIPS_LABS_WEBHOOK_SECRET", ""),
            ("ALLOW_UNSIGNED_WEBHOOKS", "true"),
        ],
    )
    .await;
    let mut d = Delivery::signed(
        "workflow_job",
        "u1",
        fixture("workflow_job.queued.self-hosted.json"),
    );
    d.signature = None;
    let (code, _) = d.send(&c).await;
    assert_eq!(code, 202);
    tokio::time::sleep(Duration::from_millis(1)).await;
}
