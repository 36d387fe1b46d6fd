//! Which failed deliveries to ask GitHub to send again: a pure function of one hook's recent
//! deliveries and of what this controller already asked for.
//!
//! Rules (GitHub's "Redelivering webhooks" and the deliveries API in the REST description):
//! - A delivery *failed* unless its `status_code` is 2xx or 3xx (GitHub's own `status=success`
//!   split). A receiver that could not be reached shows `status_code` 0, which the API's
//!   `status=failure` filter (400–599) does not return: so the whole list is read, not that filter.
//! - Deliveries are grouped by GUID (`X-GitHub-Delivery`, kept by every redelivery). A GUID with
//!   any successful attempt was received. A GUID with a redelivery attempt already (by us, an
//!   earlier controller, or a person in GitHub's UI) is not asked for again: each lost delivery is
//!   redelivered once.
//! - Only the events the controller acts on (`workflow_job`, `workflow_run`).
//! - GitHub redelivers deliveries of the past 3 days only; older ones are left alone.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use shared::github::HookDelivery;

/// The events worth recovering.
pub const EVENTS: [&str; 2] = ["workflow_job", "workflow_run"];

/// GitHub keeps deliveries for redelivery this long; an hour of margin for clocks and passes.
pub const WINDOW: Duration = Duration::from_secs(71 * 3600);

/// The delivery to redeliver, per GUID that needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeliver {
    pub delivery_id: u64,
    pub guid: String,
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The deliveries of one hook to redeliver, oldest first. `asked`: GUIDs this controller has
/// already asked for (GitHub may not list the new attempt yet).
pub fn to_redeliver(
    deliveries: &[HookDelivery],
    asked: &HashSet<String>,
    now: SystemTime,
) -> Vec<Redeliver> {
    #[derive(Default)]
    struct Guid {
        received: bool,
        redelivered: bool,
        /// The newest failed attempt: (delivered_at, id).
        failed: Option<(SystemTime, u64)>,
    }
    let mut by_guid: BTreeMap<&str, Guid> = BTreeMap::new();
    for d in deliveries {
        if !EVENTS.contains(&d.event.as_str()) {
            continue;
        }
        let g = by_guid.entry(d.guid.as_str()).or_default();
        g.received |= d.succeeded();
        g.redelivered |= d.redelivery;
        if d.succeeded() {
            continue;
        }
        let Some(at) = parse_time(&d.delivered_at) else {
            continue;
        };
        if now.duration_since(at).unwrap_or_default() > WINDOW {
            continue;
        }
        if g.failed.is_none_or(|(t, _)| at > t) {
            g.failed = Some((at, d.id));
        }
    }
    let mut out: Vec<(SystemTime, Redeliver)> = by_guid
        .into_iter()
        .filter(|(guid, g)| !g.received && !g.redelivered && !asked.contains(*guid))
        .filter_map(|(guid, g)| {
            g.failed.map(|(at, id)| {
                (
                    at,
                    Redeliver {
                        delivery_id: id,
                        guid: guid.to_owned(),
                    },
                )
            })
        })
        .collect();
    out.sort_by_key(|(at, r)| (*at, r.delivery_id));
    out.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: u64, guid: &str, code: i64, redelivery: bool, event: &str, at: &str) -> HookDelivery {
        serde_json::from_value(serde_json::json!({
            "id": id, "guid": guid, "delivered_at": at, "redelivery": redelivery,
            "status": if (200..400).contains(&code) { "OK" } else { "failed" },
            "status_code": code, "event": event, "action": "queued",
        }))
        .unwrap()
    }

    fn now() -> SystemTime {
        parse_time("2026-12-02T12:00:00Z").unwrap()
    }

    const T: &str = "2026-12-02T11:00:00Z";

    #[test]
    fn each_lost_delivery_is_redelivered_once_and_received_ones_never() {
        let list = [
            d(1, "lost", 0, false, "workflow_job", T),
            d(
                2,
                "refused",
                503,
                false,
                "workflow_job",
                "2026-12-02T11:00:01Z",
            ),
            d(3, "fine", 202, false, "workflow_job", T),
            d(4, "later-ok", 500, false, "workflow_run", T),
            d(5, "later-ok", 200, true, "workflow_run", T),
            d(6, "tried", 500, false, "workflow_job", T),
            d(7, "tried", 500, true, "workflow_job", T),
            d(8, "ping", 0, false, "ping", T),
            d(9, "moved", 302, false, "workflow_job", T),
            d(10, "asked", 0, false, "workflow_job", T),
            d(11, "old", 0, false, "workflow_job", "2026-11-29T11:00:00Z"),
        ];
        let asked: HashSet<String> = ["asked".to_owned()].into();
        let plan = to_redeliver(&list, &asked, now());
        assert_eq!(
            plan,
            vec![
                Redeliver {
                    delivery_id: 1,
                    guid: "lost".into()
                },
                Redeliver {
                    delivery_id: 2,
                    guid: "refused".into()
                },
            ]
        );
    }

    #[test]
    fn the_newest_failed_attempt_is_the_one_redelivered() {
        let list = [
            d(1, "g", 500, false, "workflow_job", "2026-12-02T10:00:00Z"),
            d(2, "g", 500, false, "workflow_job", "2026-12-02T10:30:00Z"),
        ];
        let plan = to_redeliver(&list, &HashSet::new(), now());
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].delivery_id, 2);
    }
}
