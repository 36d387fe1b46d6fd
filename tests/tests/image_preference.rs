//! The planner's image preference end to end (issue 16 §2): the controller asks every agent to
//! prepare its `RUNNER_IMAGE`, each agent reports the image's state (shown per agent in
//! `GET /api/v1/agents`), and new runners go to the agent that has the image, even when it is
//! the busier one, until it is full; then to an agent without it. The agents run the in-memory
//! runtime with an image store each test sets (one has the image, the other does not). An
//! agent reports its images on every new session and prepares them again only when they
//! changed or failed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shared::image::ImageState;
use tests::github_sim::GithubSim;
use tests::harness::{Secured, TestAgent, hook_to, post_json, simulated_github, wait_until};

const WAIT: Duration = Duration::from_secs(30);
const IMAGE: &str = "registry.example.com/runners/linux:2.330";

struct Setup {
    secured: Secured,
    sim: Arc<GithubSim>,
}

async fn setup() -> Setup {
    let (sim, mut env) = simulated_github().await;
    env.insert("RUNNER_IMAGE".into(), IMAGE.into());
    env.insert("MAX_RUNNERS".into(), "10".into());
    let secured = Secured::start(env).await;
    hook_to(&sim, "acme", &secured.controller);
    Setup { secured, sim }
}

impl Setup {
    /// An agent of two runners whose image store holds `images`.
    fn agent(&self, name: &str, images: &[(&str, ImageState)]) -> TestAgent {
        let agent = self.secured.agent(name, &[("MAX_RUNNERS", "2")]);
        let store: BTreeMap<String, (ImageState, String)> = images
            .iter()
            .map(|(i, s)| (i.to_string(), (*s, String::new())))
            .collect();
        agent.runtime.set_images(Some(store));
        agent
    }

    /// The agent's `images` in `GET /api/v1/agents`, once it has reported one.
    async fn images(&self, name: &str) -> serde_json::Value {
        let current = || async {
            self.secured
                .controller
                .agent(name)
                .await
                .map(|a| a["images"].clone())
                .unwrap_or_default()
        };
        wait_until(WAIT, &format!("{name} reports its images"), || async {
            current().await.as_array().is_some_and(|i| !i.is_empty())
        })
        .await;
        current().await
    }
}

#[tokio::test]
async fn runners_go_to_the_agent_with_the_image_until_it_is_full_then_elsewhere() {
    let s = setup().await;
    // "cold" sorts first and is as loaded: without the preference it would be chosen.
    let cold = s.agent("cold", &[]);
    let warm = s.agent("warm", &[(IMAGE, ImageState::Present)]);

    assert_eq!(
        s.images("warm").await,
        serde_json::json!([{"image": IMAGE, "state": "present", "detail": ""}])
    );
    let cold_images = s.images("cold").await;
    assert_eq!(cold_images[0]["image"], IMAGE, "{cold_images}");
    assert_eq!(cold_images[0]["state"], "failed", "{cold_images}");
    assert_eq!(
        cold_images[0]["detail"], "not in the memory runtime's image store",
        "{cold_images}"
    );

    let started = |a: &TestAgent| a.runtime.start_calls().len();
    s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the first runner starts", || async {
        started(&warm) + started(&cold) == 1
    })
    .await;
    assert_eq!((started(&warm), started(&cold)), (1, 0), "to the image");

    // Busier now (1 of 2), it still has the image: the second runner goes there too.
    s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the second runner starts", || async {
        started(&warm) + started(&cold) == 2
    })
    .await;
    assert_eq!(
        (started(&warm), started(&cold)),
        (2, 0),
        "preferred over load"
    );

    // Full: the third goes to the agent without the image rather than waiting.
    s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the third runner starts", || async {
        started(&warm) + started(&cold) == 3
    })
    .await;
    assert_eq!(
        (started(&warm), started(&cold)),
        (2, 1),
        "placed without it"
    );
}

#[tokio::test]
async fn a_changed_image_store_is_reported_and_then_preferred() {
    let s = setup().await;
    let first = s.agent("first", &[]);
    let second = s.agent("second", &[]);
    for name in ["first", "second"] {
        assert_eq!(s.images(name).await[0]["state"], "failed");
    }
    // The image arrives on "second" (as a finished pull would make it): reported at once.
    second.runtime.set_images(Some(
        [(IMAGE.to_owned(), (ImageState::Present, String::new()))].into(),
    ));
    wait_until(WAIT, "second reports the image present", || async {
        s.secured
            .controller
            .agent("second")
            .await
            .is_some_and(|a| a["images"][0]["state"] == "present")
    })
    .await;
    s.sim.queue_job("acme", "app", &["self-hosted"]);
    wait_until(WAIT, "the runner starts", || async {
        first.runtime.start_calls().len() + second.runtime.start_calls().len() == 1
    })
    .await;
    assert_eq!(
        second.runtime.start_calls().len(),
        1,
        "on the agent with it"
    );
}

#[tokio::test]
async fn a_new_session_gets_the_report_again_and_only_failed_images_are_prepared_again() {
    let mut s = setup().await;
    let ready = s.agent("ready", &[(IMAGE, ImageState::Present)]);
    let missing = s.agent("missing", &[]);
    assert_eq!(s.images("ready").await[0]["state"], "present");
    assert_eq!(s.images("missing").await[0]["state"], "failed");
    let asked = vec![vec![IMAGE.to_owned()]];
    assert_eq!(ready.runtime.prepare_calls(), asked);
    assert_eq!(missing.runtime.prepare_calls(), asked);

    // Drained now, undrained after the restart: the undrain reaches each agent after the new
    // session's PrepareImages, so once it is applied, so is that.
    for name in ["ready", "missing"] {
        let (code, body) = post_json(
            &s.secured.controller,
            &format!("/api/v1/agents/{name}/drain"),
        )
        .await;
        assert!((200..300).contains(&code), "{code} {body}");
    }
    for agent in [&ready, &missing] {
        agent.wait_status(WAIT, "drained", |st| st.draining).await;
    }
    s.secured.controller.restart().await;
    for agent in [&ready, &missing] {
        agent
            .wait_status(WAIT, "a second session", |st| {
                st.sessions == 2 && st.connected
            })
            .await;
    }
    // The restarted controller knows nothing of images: what it lists came with the session.
    assert_eq!(s.images("ready").await[0]["state"], "present");
    for name in ["ready", "missing"] {
        let (code, body) = post_json(
            &s.secured.controller,
            &format!("/api/v1/agents/{name}/undrain"),
        )
        .await;
        assert!((200..300).contains(&code), "{code} {body}");
    }
    for agent in [&ready, &missing] {
        agent
            .wait_status(WAIT, "undrained", |st| !st.draining)
            .await;
    }
    assert_eq!(ready.runtime.prepare_calls(), asked, "unchanged: not again");
    assert_eq!(
        missing.runtime.prepare_calls(),
        vec![vec![IMAGE.to_owned()]; 2],
        "failed: tried again on the new session"
    );
}
