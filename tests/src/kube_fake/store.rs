//! The fake API server's state: objects as JSON by (resource, namespace, name), one global
//! resourceVersion counter, and the history of changes that watches replay from a version.
//!
//! Every change goes through [`Store::commit`], which stamps the object with the next
//! resourceVersion, appends a watch event to the history and broadcasts it to open watches.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The resources the fake serves: (plural, kind, namespaced).
pub const RESOURCES: &[(&str, &str, bool)] = &[
    ("pods", "Pod", true),
    ("secrets", "Secret", true),
    ("persistentvolumeclaims", "PersistentVolumeClaim", true),
    ("nodes", "Node", false),
];

pub fn kind_of(resource: &str) -> Option<(&'static str, bool)> {
    RESOURCES
        .iter()
        .find(|(plural, _, _)| *plural == resource)
        .map(|(_, kind, namespaced)| (*kind, *namespaced))
}

/// One object's address; `namespace` is empty for cluster-scoped resources.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

/// A change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub resource: String,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
}

/// Why a request failed, as the API server would say it.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiFailure {
    pub fn not_found(key: &Key) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{}\" not found", key.resource, key.name),
        }
    }

    /// The `Status` body the API server sends with an error.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code
        })
    }
}

pub struct Store {
    rv: u64,
    next_uid: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    /// Versions at or below this were compacted away: watching from them answers 410 Gone.
    pub compacted_to: u64,
    /// Open watches listen here; a lagging one is cut and resumes from its last version.
    pub changes: broadcast::Sender<Change>,
    /// When set, deleting a pod only marks it (`deletionTimestamp`), like a kubelet honouring
    /// the grace period; [`Store::remove`] finishes it.
    pub graceful_pod_deletion: bool,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            rv: 100,
            next_uid: 1,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted_to: 0,
            changes: broadcast::channel(4096).0,
            graceful_pod_deletion: false,
        }
    }
}

impl Store {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of a resource, in a namespace (or all namespaces with `None`).
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Changes after `rv`, for a resource in a namespace.
    pub fn history_after(&self, rv: u64, resource: &str, namespace: Option<&str>) -> Vec<Change> {
        self.history
            .iter()
            .filter(|c| {
                c.rv > rv && c.resource == resource && namespace.is_none_or(|ns| c.namespace == ns)
            })
            .cloned()
            .collect()
    }

    /// Forgets the history so far: watches from an older version get 410 Gone.
    pub fn compact(&mut self) {
        self.compacted_to = self.rv;
        self.history.clear();
    }

    pub fn create(&mut self, key: Key, mut object: Value) -> Result<Value, ApiFailure> {
        if self.objects.contains_key(&key) {
            return Err(ApiFailure {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{}\" already exists", key.resource, key.name),
            });
        }
        let (kind, namespaced) = kind_of(&key.resource).unwrap_or(("Unknown", true));
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.next_uid);
        self.next_uid += 1;
        object["apiVersion"] = json!("v1");
        object["kind"] = json!(kind);
        let meta = &mut object["metadata"];
        meta["name"] = json!(key.name);
        if namespaced {
            meta["namespace"] = json!(key.namespace);
        }
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now_rfc3339());
        if key.resource == "pods" && object.get("status").is_none_or(Value::is_null) {
            object["status"] = json!({"phase": "Pending"});
        }
        if key.resource == "persistentvolumeclaims"
            && object.get("status").is_none_or(Value::is_null)
        {
            object["status"] = json!({"phase": "Pending"});
        }
        fold_string_data(&mut object);
        Ok(self.commit(key, object, "ADDED"))
    }

    /// Applies a JSON merge patch (RFC 7386) to an object.
    pub fn merge_patch(&mut self, key: &Key, patch: &Value) -> Result<Value, ApiFailure> {
        let mut object = self
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiFailure::not_found(key))?;
        merge(&mut object, patch);
        fold_string_data(&mut object);
        Ok(self.commit(key.clone(), object, "MODIFIED"))
    }

    /// Replaces an object's `status`, as the scheduler and kubelet do.
    pub fn set_status(&mut self, key: &Key, status: Value) -> Result<Value, ApiFailure> {
        let mut object = self
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ApiFailure::not_found(key))?;
        object["status"] = status;
        Ok(self.commit(key.clone(), object, "MODIFIED"))
    }

    /// Deletes an object: at once, or for a pod with [`graceful_pod_deletion`] by marking it
    /// with a `deletionTimestamp` (a repeated delete changes nothing).
    ///
    /// [`graceful_pod_deletion`]: Store::graceful_pod_deletion
    pub fn delete(&mut self, key: &Key) -> Result<Value, ApiFailure> {
        if key.resource == "pods" && self.graceful_pod_deletion {
            let mut object = self
                .objects
                .get(key)
                .cloned()
                .ok_or_else(|| ApiFailure::not_found(key))?;
            if !object["metadata"]["deletionTimestamp"].is_string() {
                object["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                object["metadata"]["deletionGracePeriodSeconds"] = json!(30);
                return Ok(self.commit(key.clone(), object, "MODIFIED"));
            }
            return Ok(object);
        }
        self.remove(key)
    }

    /// Removes an object at once, then, like the garbage collector, every object that names it
    /// in an owner reference.
    pub fn remove(&mut self, key: &Key) -> Result<Value, ApiFailure> {
        let object = self
            .objects
            .remove(key)
            .ok_or_else(|| ApiFailure::not_found(key))?;
        let deleted = self.record(key, object, "DELETED");
        if let Some(uid) = deleted["metadata"]["uid"].as_str() {
            let owned: Vec<Key> = self
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.namespace == key.namespace
                        && v["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for k in owned {
                let _ = self.remove(&k);
            }
        }
        Ok(deleted)
    }

    fn commit(&mut self, key: Key, object: Value, kind: &'static str) -> Value {
        let object = self.record(&key, object, kind);
        self.objects.insert(key, object.clone());
        object
    }

    fn record(&mut self, key: &Key, mut object: Value, kind: &'static str) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let change = Change {
            rv: self.rv,
            resource: key.resource.clone(),
            namespace: key.namespace.clone(),
            kind,
            object: object.clone(),
        };
        self.history.push(change.clone());
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(change);
        object
    }
}

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// The API server stores a Secret's `stringData` base64-encoded into `data`.
fn fold_string_data(object: &mut Value) {
    let Some(string_data) = object.as_object_mut().and_then(|o| o.remove("stringData")) else {
        return;
    };
    let Some(entries) = string_data.as_object() else {
        return;
    };
    if !object["data"].is_object() {
        object["data"] = json!({});
    }
    for (k, v) in entries {
        let encoded = base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or(""));
        object["data"][k] = json!(encoded);
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whether `labels` satisfy an equality-based selector (`a=b`, `a==b`, `a!=b`, `a`, `!a`).
pub fn selector_matches(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .all(|term| {
            let label = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
            if let Some((k, v)) = term.split_once("!=") {
                label(k) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                label(k) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                label(k).is_none()
            } else {
                label(term).is_some()
            }
        })
}
