//! Prometheus metrics (`GET /metrics`), all prefixed `gha_scaler_`.
//!
//! Counters are labelled by outcome; gauges are set by the scheduler at each activation from
//! the state it just read, so they never drift. Label values never come from a request
//! unchecked: the webhook event is mapped to a fixed set ([`event_label`]), a job's label set
//! to a capped set ([`queue_time::LabelSets`]). Counters and gauges with a fixed set of label
//! values start at 0 ([`counters_at_zero`], [`gauges_at_zero`]), so dashboards and alerts find
//! them before the first event. [`queue_time`]: queue times; [`fleet`]: the reconciler and the
//! agents' sessions.

pub mod fleet;
pub mod queue_time;

use std::hash::Hash;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub event: String,
    pub outcome: String,
}

/// A scheduling pass's step ([`crate::scheduler::steps::Step`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OwnerLabels {
    pub owner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerLabels {
    pub state: String,
    pub owner: String,
    pub arch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub owner: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub owner: String,
    /// `registration`, `job_serving` or `background`.
    pub kind: String,
    /// `sent` (counted by GitHub), `not_modified` (a free 304) or `deferred` (not sent).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StartLabels {
    /// `sent` or `failed`.
    pub outcome: String,
    /// With `sent`: `started`. With `failed`: `github` (the registration failed at GitHub),
    /// `agent` (the agent could not take the runner) or `refused` (refused before asking
    /// GitHub: a JIT limit, an unknown runner group).
    pub reason: String,
}

/// The (outcome, reason) pairs of [`StartLabels`].
pub const START_OUTCOMES: &[(&str, &str)] = &[
    ("sent", "started"),
    ("failed", "github"),
    ("failed", "agent"),
    ("failed", "refused"),
];

/// Creates the counter of each of `labels` at 0.
pub fn counters_at_zero<L, C>(family: &Family<L, Counter, C>, labels: impl IntoIterator<Item = L>)
where
    L: Clone + Hash + Eq,
    C: MetricConstructor<Counter>,
{
    for l in labels {
        family.get_or_create(&l).inc_by(0);
    }
}

/// Creates the gauge of each of `labels` at 0.
pub fn gauges_at_zero<L, C>(family: &Family<L, Gauge, C>, labels: impl IntoIterator<Item = L>)
where
    L: Clone + Hash + Eq,
    C: MetricConstructor<Gauge>,
{
    for l in labels {
        family.get_or_create(&l).set(0);
    }
}

fn outcomes(values: &[&str]) -> Vec<OutcomeLabels> {
    values
        .iter()
        .map(|v| OutcomeLabels {
            outcome: (*v).into(),
        })
        .collect()
}

/// The events that get their own label value; everything else is `other` (and a missing
/// header `none`). GitHub's webhook event names, of the kinds a runner hook or App receives.
const KNOWN_EVENTS: &[&str] = &[
    "ping",
    "workflow_job",
    "workflow_run",
    "installation",
    "installation_repositories",
    "installation_target",
    "github_app_authorization",
    "meta",
    "push",
];

/// The metrics label for an `X-GitHub-Event` header value: one of a fixed set.
pub fn event_label(event: &str) -> &'static str {
    if event.is_empty() {
        return "none";
    }
    KNOWN_EVENTS
        .iter()
        .find(|known| **known == event)
        .copied()
        .unwrap_or("other")
}

pub struct Metrics {
    registry: Registry,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub webhook_seconds: Histogram,
    /// One scheduler activation (a scheduling pass), from reading the state to the last start
    /// sent; fine buckets (×1.5 from 0.5 ms) so a p99 in tens of ms can be read off them.
    pub scheduler_activation_seconds: Histogram,
    /// Each step of a pass ([`crate::scheduler::steps`]), same buckets.
    pub scheduler_step_seconds: crate::scheduler::steps::StepHistograms,
    pub jobs: Family<StateLabels, Gauge>,
    pub queue_depth: Family<OwnerLabels, Gauge>,
    pub runners: Family<RunnerLabels, Gauge>,
    pub runner_starts: Family<StartLabels, Counter>,
    pub redeliveries: Family<OutcomeLabels, Counter>,
    pub queue: queue_time::QueueTimes,
    pub fleet: fleet::FleetMetrics,
    pub github_remaining: Family<QuotaLabels, Gauge>,
    pub github_limit: Family<QuotaLabels, Gauge>,
    pub github_requests: Family<CallLabels, Counter>,
    pub github_background_used: Family<QuotaLabels, Gauge>,
    pub run_fetches: Family<OutcomeLabels, Counter>,
    pub containment: ContainmentMetrics,
    pub operator: OperatorMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gha_scaler");
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhooks",
            "Webhook deliveries by event and outcome",
            webhooks.clone(),
        );
        let webhook_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "webhook_handling_seconds",
            "Time to verify, persist and answer a webhook delivery",
            webhook_seconds.clone(),
        );
        let scheduler_activation_seconds = Histogram::new(exponential_buckets(0.0005, 1.5, 24));
        registry.register(
            "scheduler_activation_seconds",
            "Time of one scheduler activation (a scheduling pass: plan and act)",
            scheduler_activation_seconds.clone(),
        );
        let scheduler_step_seconds: crate::scheduler::steps::StepHistograms =
            Family::new_with_constructor(crate::scheduler::steps::step_histogram);
        registry.register(
            "scheduler_step_seconds",
            "Time of each step of a scheduler activation, by step",
            scheduler_step_seconds.clone(),
        );
        let jobs = Family::<StateLabels, Gauge>::default();
        registry.register("jobs", "Jobs known, by state", jobs.clone());
        let queue_depth = Family::<OwnerLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Queued jobs waiting for a runner, by owner",
            queue_depth.clone(),
        );
        let runners = Family::<RunnerLabels, Gauge>::default();
        registry.register(
            "runners",
            "Runners by lifecycle state, owner and architecture",
            runners.clone(),
        );
        let runner_starts = Family::<StartLabels, Counter>::default();
        registry.register(
            "runner_starts",
            "Runner start attempts by outcome and reason",
            runner_starts.clone(),
        );
        let redeliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_redeliveries",
            "Failed webhook deliveries GitHub was asked to redeliver, by outcome",
            redeliveries.clone(),
        );
        let queue = queue_time::QueueTimes::register(&mut registry);
        let fleet = fleet::FleetMetrics::register(&mut registry);
        let github_remaining = Family::<QuotaLabels, Gauge>::default();
        registry.register(
            "github_rate_limit_remaining",
            "GitHub REST quota left, by owner and resource, as of the last response",
            github_remaining.clone(),
        );
        let github_limit = Family::<QuotaLabels, Gauge>::default();
        registry.register(
            "github_rate_limit_limit",
            "GitHub REST quota, by owner and resource",
            github_limit.clone(),
        );
        let github_requests = Family::<CallLabels, Counter>::default();
        registry.register(
            "github_requests",
            "GitHub REST requests by owner, kind (registration, job_serving, background) and outcome (sent, not_modified, deferred)",
            github_requests.clone(),
        );
        let github_background_used = Family::<QuotaLabels, Gauge>::default();
        registry.register(
            "github_background_used",
            "Background calls counted against the current GitHub quota window, by owner and resource",
            github_background_used.clone(),
        );
        let run_fetches = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "run_fetches",
            "Fetches of a workflow run's jobs by outcome (fetched, failed, given_up)",
            run_fetches.clone(),
        );
        let containment = ContainmentMetrics::register(&mut registry);
        let operator = OperatorMetrics::register(&mut registry);
        counters_at_zero(&redeliveries, outcomes(&["requested", "failed"]));
        counters_at_zero(&run_fetches, outcomes(&["fetched", "failed", "given_up"]));
        counters_at_zero(
            &runner_starts,
            START_OUTCOMES.iter().map(|(outcome, reason)| StartLabels {
                outcome: (*outcome).into(),
                reason: (*reason).into(),
            }),
        );
        counters_at_zero(
            &containment.start_failures,
            ["github", "agent", "crash"].iter().flat_map(|cause| {
                ["backoff", "circuit"].iter().map(|kind| CauseLabels {
                    cause: (*cause).into(),
                    kind: (*kind).into(),
                })
            }),
        );
        Self {
            operator,
            run_fetches,
            registry,
            containment,
            github_remaining,
            github_limit,
            github_requests,
            github_background_used,
            webhooks,
            webhook_seconds,
            scheduler_activation_seconds,
            scheduler_step_seconds,
            jobs,
            queue_depth,
            runners,
            runner_starts,
            redeliveries,
            queue,
            fleet,
        }
    }

    /// Counts a delivery. `event` is the raw `X-GitHub-Event` header, untrusted: it is mapped
    /// to [`event_label`]'s fixed set, so no request can add a label value. `outcome` is one of
    /// the handler's own codes.
    pub fn webhook(&self, event: &str, outcome: &'static str) {
        self.webhooks
            .get_or_create(&WebhookLabels {
                event: event_label(event).to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A runner start attempt: `outcome` and `reason` as in [`StartLabels`].
    pub fn runner_start(&self, outcome: &'static str, reason: &'static str) {
        self.runner_starts
            .get_or_create(&StartLabels {
                outcome: outcome.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A redelivery of a failed webhook delivery: `requested` or `failed`.
    pub fn redelivery(&self, outcome: &'static str) {
        self.redeliveries
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records the GitHub quotas the client last saw.
    pub fn github_quotas(&self, quotas: Vec<(String, shared::github::Quota)>) {
        for (owner, q) in quotas {
            let labels = QuotaLabels {
                owner,
                resource: q.resource.clone(),
            };
            self.github_remaining
                .get_or_create(&labels)
                .set(q.remaining as i64);
            self.github_limit.get_or_create(&labels).set(q.limit as i64);
        }
    }

    /// Brings the request counters and background spending in line with the API budget.
    pub fn github_budget(&self, budget: &shared::github::Budget, now_epoch: u64) {
        for (owner, kind, outcome, n) in budget.counts() {
            let counter = self.github_requests.get_or_create(&CallLabels {
                owner,
                kind: kind.as_str().to_owned(),
                outcome: outcome.as_str().to_owned(),
            });
            let seen = counter.get();
            if n > seen {
                counter.inc_by(n - seen);
            }
        }
        for b in budget.buckets(now_epoch) {
            self.github_background_used
                .get_or_create(&QuotaLabels {
                    owner: b.owner,
                    resource: b.resource,
                })
                .set(b.background_used as i64);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// `github` (per owner), `agent` (per agent), `crash` (per owner and image).
    pub cause: String,
    /// `backoff` or `circuit`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Failure containment and cleanup (issue 11): failed starts, jobs held by a back-off, stale-job
/// checks and deleted registrations.
#[derive(Debug, Default)]
pub struct ContainmentMetrics {
    pub start_failures: Family<CauseLabels, Counter>,
    pub jobs_held: Family<CauseLabels, Gauge>,
    pub stale_checks: Family<OutcomeLabels, Counter>,
    pub registrations_deleted: Family<ReasonLabels, Counter>,
    pub idle_stops_vetoed: Counter,
}

impl ContainmentMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "start_failures",
            "Failed runner starts, by cause and whether they opened a circuit",
            m.start_failures.clone(),
        );
        registry.register(
            "jobs_held_by_backoff",
            "Queued jobs waiting on a back-off or an open circuit, by cause",
            m.jobs_held.clone(),
        );
        registry.register(
            "stale_job_checks",
            "Jobs queued too long re-checked at GitHub, by what GitHub said",
            m.stale_checks.clone(),
        );
        registry.register(
            "registrations_deleted",
            "GitHub runner registrations of ours deleted, by why",
            m.registrations_deleted.clone(),
        );
        registry.register(
            "idle_stops_vetoed",
            "Idle stops not sent because GitHub said the runner is busy",
            m.idle_stops_vetoed.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_labels_are_a_fixed_set_whatever_the_header_says() {
        let m = Metrics::new();
        for i in 0..500 {
            m.webhook(&format!("made-up-{i}"), "invalid_signature");
        }
        m.webhook("workflow_job", "accepted");
        m.webhook("", "missing_header");
        let text = m.encode();
        assert!(!text.contains("made-up"), "{text}");
        assert!(
            text.contains("event=\"other\",outcome=\"invalid_signature\"} 500"),
            "{text}"
        );
        assert!(text.contains("event=\"workflow_job\""));
        assert!(text.contains("event=\"none\""));
        assert_eq!(
            event_label("installation_repositories"),
            "installation_repositories"
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentStateLabels {
    /// `connected`, `healthy`, `draining` or `disconnected`.
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseOnlyLabels {
    /// `github`, `agent` or `crash`.
    pub cause: String,
}

/// What the dashboard's overview shows, for alerts (issue 14): agents by state, open circuits
/// and back-offs by cause, and each owner's oldest waiting job. Set at each scrape.
#[derive(Debug, Default)]
pub struct OperatorMetrics {
    pub agents: Family<AgentStateLabels, Gauge>,
    pub circuits_open: Family<CauseOnlyLabels, Gauge>,
    pub backoffs: Family<CauseOnlyLabels, Gauge>,
    pub oldest_queued_seconds: Family<OwnerLabels, Gauge>,
}

impl OperatorMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "agents",
            "Agents known, by state (connected, healthy, draining, disconnected)",
            m.agents.clone(),
        );
        registry.register(
            "circuits_open",
            "Causes whose circuit is open (starts stopped until a probe succeeds), by cause",
            m.circuits_open.clone(),
        );
        registry.register(
            "backoffs",
            "Causes backing off after failed starts, by cause",
            m.backoffs.clone(),
        );
        registry.register(
            "oldest_queued_job_seconds",
            "Age of each owner's oldest waiting job (0: none waiting)",
            m.oldest_queued_seconds.clone(),
        );
        gauges_at_zero(
            &m.agents,
            ["connected", "healthy", "draining", "disconnected"].map(|state| AgentStateLabels {
                state: state.into(),
            }),
        );
        let causes = ["github", "agent", "crash"].map(|cause| CauseOnlyLabels {
            cause: cause.into(),
        });
        gauges_at_zero(&m.circuits_open, causes.clone());
        gauges_at_zero(&m.backoffs, causes);
        m
    }

    /// Sets the gauges from the registry's agents, the failing causes (cause, circuit open)
    /// and each configured owner's oldest waiting job age.
    pub fn observe(
        &self,
        agents: &[crate::registry::AgentView],
        failing: &[(&'static str, bool)],
        oldest: &[(String, i64)],
    ) {
        let count = |f: &dyn Fn(&crate::registry::AgentView) -> bool| {
            agents.iter().filter(|a| f(a)).count() as i64
        };
        for (state, n) in [
            ("connected", count(&|a| a.connected)),
            (
                "healthy",
                count(&|a| a.connected && a.healthy && !a.draining),
            ),
            ("draining", count(&|a| a.connected && a.draining)),
            ("disconnected", count(&|a| !a.connected)),
        ] {
            self.agents
                .get_or_create(&AgentStateLabels {
                    state: state.into(),
                })
                .set(n);
        }
        for cause in ["github", "agent", "crash"] {
            let labels = CauseOnlyLabels {
                cause: cause.into(),
            };
            let of = |open: bool| {
                failing
                    .iter()
                    .filter(|(c, o)| *c == cause && *o == open)
                    .count() as i64
            };
            self.circuits_open.get_or_create(&labels).set(of(true));
            self.backoffs.get_or_create(&labels).set(of(false));
        }
        for (owner, secs) in oldest {
            self.oldest_queued_seconds
                .get_or_create(&OwnerLabels {
                    owner: owner.clone(),
                })
                .set(*secs);
        }
    }
}
