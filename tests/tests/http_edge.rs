//! The HTTP edge on real sockets on loopback: a client that never finishes its headers is
//! disconnected, a slow body is answered 408, and `/webhook` sheds load with 503 and a JSON
//! reason once `WEBHOOK_CONCURRENCY` deliveries are in flight. Counts and times are bounded.

use std::time::Duration;

use tests::harness::{TEST_WEBHOOK_SECRET, TestController, init, vars};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn controller(dir: &std::path::Path, extra: &[(&str, &str)]) -> TestController {
    init();
    let mut env = vars(&[
        ("STATE_DIR", dir.join("state").display().to_string()),
        ("REPO_OWNER", "acme".into()),
        ("GITHUB_TOKEN", "t".into()),
        ("ALL_REPOS", "true".into()),
        ("WEBHOOK_SECRET", TEST_WEBHOOK_SECRET.into()),
        // Nothing listens there: these tests never reach GitHub.
        ("GITHUB_API_URL", "http://127.0.0.1:9".into()),
        ("RECONCILE_INTERVAL", "0".into()),
    ]);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    TestController::start(env).await
}

/// Reads until the server closes the connection (or resets it); what it sent, if anything.
async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> Option<String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(deadline, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), &[("HTTP_HEADER_TIMEOUT", "500ms")]).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(c.http_addr).await.unwrap();
        s.write_all(b"POST /webhook HTTP/1.1\r\nHost: localhost\r\nX-GitHub-")
            .await
            .unwrap();
        slow.push(s);
    }
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(
            read_until_closed(s, Duration::from_secs(10))
                .await
                .is_some(),
            "slow connection {i} still open after 10 s"
        );
    }
    // The server itself is unharmed.
    let health = reqwest::get(format!("http://{}/health", c.http_addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// A delivery whose headers are complete but whose body trickles: it holds a permit.
async fn half_sent_delivery(c: &TestController, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(c.http_addr).await.unwrap();
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: localhost\r\nX-GitHub-Event: workflow_job\r\n\
         X-GitHub-Delivery: {id}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"act"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn webhook_sheds_load_past_its_concurrency_and_slow_bodies_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(
        dir.path(),
        &[("WEBHOOK_CONCURRENCY", "2"), ("HTTP_BODY_TIMEOUT", "3s")],
    )
    .await;
    let mut held = vec![
        half_sent_delivery(&c, "slow-1").await,
        half_sent_delivery(&c, "slow-2").await,
    ];
    let client = reqwest::Client::new();
    let url = format!("http://{}/webhook", c.http_addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let shed = loop {
        let resp = client
            .post(&url)
            .header("X-GitHub-Event", "workflow_job")
            .header("X-GitHub-Delivery", "probe")
            .body("{}")
            .send()
            .await
            .unwrap();
        if resp.status() == 503 {
            break resp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 503 while two slow deliveries hold WEBHOOK_CONCURRENCY=2 (last: {})",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(body["error"], "overloaded", "{body}");
    assert!(body["message"].as_str().unwrap().contains("redeliver"));

    // The slow bodies are answered 408 within the body timeout, and free their permits.
    for s in &mut held {
        let answer = read_until_closed(s, Duration::from_secs(10))
            .await
            .expect("answered within 10 s");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("body_timeout"), "{answer}");
    }
    let resp = client
        .post(&url)
        .header("X-GitHub-Event", "workflow_job")
        .header("X-GitHub-Delivery", "after")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "served again (and refused as unsigned)");
}

/// The dashboard's login limit counts per client address as the edge sees it: past the burst
/// from this (loopback) address, even the right token is answered 429 with `Retry-After`.
#[tokio::test]
async fn the_login_form_is_rate_limited_per_client_address() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller(dir.path(), &[]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |token: &'static str| {
        client
            .post(format!("http://{}/ui/login", c.http_addr))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    let mut refused_at = None;
    for attempt in 1..=20 {
        let resp = login("wrong-token").await.unwrap();
        if resp.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            refused_at = Some(attempt);
            break;
        }
        assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        refused_at,
        Some(11),
        "the 11th attempt from one address is refused"
    );
    let resp = login(tests::harness::TEST_API_TOKEN).await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let page = resp.text().await.unwrap();
    assert!(page.contains("from your address"), "{page}");
}
