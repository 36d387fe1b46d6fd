//! `/api/v1` authentication on a real controller: no `API_TOKEN` configured → 403 saying how to
//! turn it on; missing or wrong bearer → 401; the open endpoints stay open; an owner that is not
//! configured → 404.

mod management_support;

use management_support::{Api, controller, sim_and_receiver};
use reqwest::StatusCode;
use tests::harness::TEST_API_TOKEN;

const PROTECTED: [&str; 4] = [
    "/api/v1/agents",
    "/api/v1/owners/acme/token/validate",
    "/api/v1/repos/acme/app/hooks",
    "/api/v1/owners/acme/repositories",
];

#[tokio::test]
async fn without_api_token_configured_the_api_answers_403_with_how_to_enable_it() {
    let (sim, _rx) = sim_and_receiver().await;
    let (c, _dir) = controller(&sim, &[("API_TOKEN", String::new())]).await;
    assert!(c.config.api_token.is_none());
    let api = Api::of(&c);
    for path in PROTECTED {
        let (s, body) = api.get(path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body["error"], "api_disabled");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("set API_TOKEN"), "{message}");
        // Even a caller who guesses a token gets the same answer.
        let (s, _) = api.with_token(Some("anything-at-all-123")).get(path).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    for open in ["/health", "/version"] {
        assert_eq!(api.get(open).await.0, StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_bearer_token_is_401_and_the_right_one_passes() {
    let (sim, _rx) = sim_and_receiver().await;
    let (c, _dir) = controller(&sim, &[]).await;
    let api = Api::of(&c);
    let near_miss = format!("{TEST_API_TOKEN}x");
    for path in PROTECTED {
        for token in [None, Some("wrong"), Some(near_miss.as_str()), Some("")] {
            let (s, body) = api.with_token(token).get(path).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} with {token:?}");
            assert_eq!(body["error"], "unauthorized");
        }
    }
    let (s, body) = api.get("/api/v1/agents").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(api.with_token(None).get("/health").await.0, StatusCode::OK);

    // A configured owner is required, compared case-insensitively.
    let (s, body) = api.get("/api/v1/owners/someone-else/token/scopes").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "unknown_owner");
    assert!(body["message"].as_str().unwrap().contains("acme"));
    let (s, body) = api.get("/api/v1/repos/Someone/app/hooks").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_owner"))
    );
}
