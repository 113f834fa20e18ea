//! Problems found while translating posted as Kubernetes Events (`events.k8s.io/v1`) on the Ingress they
//! affect, so `kubectl describe ingress` shows them.
//!
//! RBAC: `events` in `events.k8s.io`: `create`, `patch`.

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Resource;

use super::{IngressKey, Problem};

/// `reportingController` of the Events.
pub const REPORTER: &str = "dualstack-ingress";

/// The `action` of the Events.
const ACTION: &str = "Translate";

/// The API limit on an Event's note.
const MAX_NOTE_BYTES: usize = 1024;

/// Events posted at once.
const POST_CONCURRENCY: usize = 4;

/// Posts one Warning Event per new problem; remembers which problems are posted.
pub struct ProblemEvents {
    client: kube::Client,
    reporter: Reporter,
    /// Problems posted and still present: (Ingress, reason, message).
    posted: HashSet<(IngressKey, &'static str, String)>,
}

impl ProblemEvents {
    /// Events will name `identity` (the pod name, say) as the reporting instance.
    pub fn new(client: kube::Client, identity: String) -> Self {
        ProblemEvents {
            client,
            reporter: Reporter {
                controller: REPORTER.to_string(),
                instance: Some(identity),
            },
            posted: HashSet::new(),
        }
    }

    /// Posts a Warning Event on the Ingress each problem names, for every problem in `problems` that was
    /// not posted before: reason is the problem's reason in CamelCase (`service-not-found` →
    /// `ServiceNotFound`), note its message (cut to 1 kB). `problems` is the complete current list: a
    /// problem missing from it is forgotten, so if it comes back it is posted again. The Ingress is
    /// looked up in `ingresses` for its uid; one that is not there is named by namespace and name only.
    /// A post that fails is logged and tried again on the next call.
    pub async fn post(&mut self, problems: &[Problem], ingresses: &[Arc<Ingress>]) {
        let current: HashSet<(IngressKey, &'static str, String)> = problems
            .iter()
            .map(|p| (p.ingress.clone(), p.reason, p.message.clone()))
            .collect();
        self.posted.retain(|k| current.contains(k));
        // Owned copies: the posting futures must not borrow from the caller (they run on spawned tasks).
        let mut new: Vec<Problem> = Vec::new();
        let mut seen = HashSet::new();
        for p in problems {
            let key = (p.ingress.clone(), p.reason, p.message.clone());
            if !self.posted.contains(&key) && seen.insert(key) {
                new.push(p.clone());
            }
        }
        if new.is_empty() {
            return;
        }
        let recorder_parts = (self.client.clone(), self.reporter.clone());
        let results: Vec<(IngressKey, &'static str, String, bool)> = stream::iter(new)
            .map(|p| {
                let reference = reference(&p.ingress, ingresses);
                // A recorder per Event: one recorder would fold Events with the same reason but
                // different messages into one series that keeps the first message.
                let recorder = Recorder::new(recorder_parts.0.clone(), recorder_parts.1.clone());
                async move {
                    let event = Event {
                        type_: EventType::Warning,
                        reason: camel_case(p.reason),
                        note: Some(truncate(&p.message, MAX_NOTE_BYTES).to_string()),
                        action: ACTION.to_string(),
                        secondary: None,
                    };
                    let ok = match recorder.publish(&event, &reference).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::warn!(ingress = %p.ingress, reason = p.reason, error = %e,
                                "posting an Event failed");
                            false
                        }
                    };
                    (p.ingress.clone(), p.reason, p.message.clone(), ok)
                }
            })
            .buffer_unordered(POST_CONCURRENCY)
            .collect()
            .await;
        for (ingress, reason, message, ok) in results {
            if ok {
                self.posted.insert((ingress, reason, message));
            }
        }
    }
}

/// The Ingress as an Event's `regarding`.
fn reference(key: &IngressKey, ingresses: &[Arc<Ingress>]) -> ObjectReference {
    let found = ingresses.iter().find(|i| {
        i.metadata.name.as_deref() == Some(key.name.as_str())
            && i.metadata.namespace.as_deref().unwrap_or("default") == key.namespace
    });
    let mut reference = match found {
        Some(i) => i.object_ref(&()),
        None => ObjectReference {
            api_version: Some(<Ingress as k8s_openapi::Resource>::API_VERSION.to_string()),
            kind: Some(<Ingress as k8s_openapi::Resource>::KIND.to_string()),
            name: Some(key.name.clone()),
            ..Default::default()
        },
    };
    reference.namespace = Some(key.namespace.clone());
    reference
}

/// `service-not-found` → `ServiceNotFound`.
fn camel_case(reason: &str) -> String {
    reason
        .split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_become_camel_case() {
        assert_eq!(camel_case("service-not-found"), "ServiceNotFound");
        assert_eq!(camel_case("fqdn-slice"), "FqdnSlice");
        assert_eq!(camel_case("conflict"), "Conflict");
    }

    #[test]
    fn notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
