//! The dashboard's event log: the recent decisions, state changes and errors, newest last, in a
//! ring buffer of fixed size, plus the jobs served recently (for "served in the last hour" and
//! queue-time percentiles).
//!
//! One owner writes it: the [`super::observer`] task. Pages and the live stream read it through
//! cloneable [`EventLog`] handles. Memory is bounded by [`EventLog::new`]'s capacities whatever
//! the traffic: the oldest entries are dropped first. Entries about a job carry its owner *and*
//! id; the observer also stores them in the job's durable timeline ([`crate::store::timeline`]),
//! which the job pages read, keyed by both, so one owner's job never shows another's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::store::Owner;

/// What an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A job was heard of or changed state (from webhooks or the reconciler).
    Job,
    /// The scheduler's explanation of a waiting job changed.
    Decision,
    /// A runner was planned, started, took a job or ended.
    Runner,
    /// An agent connected, went away, changed health or was drained.
    Agent,
    /// Something failed: a back-off, an open circuit, the scheduler's last error.
    Error,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Job => "job",
            EventKind::Decision => "decision",
            EventKind::Runner => "runner",
            EventKind::Agent => "agent",
            EventKind::Error => "error",
        }
    }
}

/// An entry to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewEvent {
    pub at_ms: i64,
    pub kind: EventKind,
    pub owner: Option<Owner>,
    pub job: Option<u64>,
    pub runner: Option<String>,
    pub agent: Option<String>,
    pub message: String,
}

impl NewEvent {
    pub fn new(at_ms: i64, kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            at_ms,
            kind,
            owner: None,
            job: None,
            runner: None,
            agent: None,
            message: message.into(),
        }
    }

    pub fn job(mut self, owner: &Owner, id: u64) -> Self {
        self.owner = Some(owner.clone());
        self.job = Some(id);
        self
    }

    pub fn owner(mut self, owner: &Owner) -> Self {
        self.owner = Some(owner.clone());
        self
    }

    pub fn runner(mut self, name: &str) -> Self {
        self.runner = Some(name.to_owned());
        self
    }

    pub fn agent(mut self, name: &str) -> Self {
        self.agent = Some(name.to_owned());
        self
    }
}

/// A recorded entry: a [`NewEvent`] with its sequence number (1, 2, … in recording order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub seq: u64,
    #[serde(flatten)]
    pub event: NewEvent,
}

/// A job that started running: when, and how long it had waited since it was queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub owner: Owner,
    pub at_ms: i64,
    pub queue_ms: i64,
}

struct Ring {
    events: VecDeque<Event>,
    served: VecDeque<Served>,
    next_seq: u64,
    capacity: usize,
    served_capacity: usize,
}

/// A handle on the log. Clones share it.
#[derive(Clone)]
pub struct EventLog {
    /// Written by the observer task, read by pages; held for a push or a copy, never across
    /// an `.await`.
    ring: Arc<Mutex<Ring>>,
    /// The last sequence number recorded; the live stream's subscribers hold the receivers.
    changed: Arc<watch::Sender<u64>>,
}

impl EventLog {
    /// A log keeping the last `capacity` events and `served_capacity` served jobs.
    pub fn new(capacity: usize, served_capacity: usize) -> Self {
        Self {
            ring: Arc::new(Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.min(4096)),
                served: VecDeque::new(),
                next_seq: 1,
                capacity: capacity.max(1),
                served_capacity: served_capacity.max(1),
            })),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records entries (in order) and wakes the live stream once.
    pub fn record(&self, events: impl IntoIterator<Item = NewEvent>) {
        let last = {
            let mut ring = self.ring();
            let before = ring.next_seq;
            for event in events {
                if ring.events.len() == ring.capacity {
                    ring.events.pop_front();
                }
                let seq = ring.next_seq;
                ring.next_seq += 1;
                ring.events.push_back(Event { seq, event });
            }
            (ring.next_seq != before).then_some(ring.next_seq - 1)
        };
        if let Some(seq) = last {
            self.changed.send_replace(seq);
        }
    }

    /// Records a job that started running.
    pub fn served(&self, served: Served) {
        let mut ring = self.ring();
        if ring.served.len() == ring.served_capacity {
            ring.served.pop_front();
        }
        ring.served.push_back(served);
    }

    /// Up to `limit` entries, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Event> {
        self.ring()
            .events
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    /// The jobs that started running at or after `since_ms`.
    pub fn served_since(&self, since_ms: i64) -> Vec<Served> {
        self.ring()
            .served
            .iter()
            .filter(|s| s.at_ms >= since_ms)
            .cloned()
            .collect()
    }

    /// A receiver that sees the last sequence number change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: i64) -> NewEvent {
        NewEvent::new(n, EventKind::Job, format!("e{n}"))
    }

    #[test]
    fn the_oldest_entries_go_first_when_full() {
        let log = EventLog::new(3, 2);
        log.record((1..=5).map(ev));
        let recent: Vec<_> = log.recent(10).iter().map(|e| e.seq).collect();
        assert_eq!(recent, vec![5, 4, 3]);
        assert_eq!(log.recent(1)[0].event.message, "e5");
        for at_ms in 1..=3 {
            log.served(Served {
                owner: Owner::new("acme"),
                at_ms,
                queue_ms: 1,
            });
        }
        let served: Vec<_> = log.served_since(0).iter().map(|s| s.at_ms).collect();
        assert_eq!(served, vec![2, 3]);
        assert_eq!(log.served_since(3).len(), 1);
    }

    #[test]
    fn subscribers_see_the_last_sequence_number() {
        let log = EventLog::new(10, 1);
        let mut rx = log.subscribe();
        log.record([ev(1), ev(2)]);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 2);
        log.record([]);
        assert!(!rx.has_changed().unwrap());
    }
}
