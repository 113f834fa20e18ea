//! A small Kubernetes API server for tests: plain HTTP on loopback, JSON only, speaking enough of the real
//! protocol (lists, chunked watch streams with bookmarks and 410 on compacted history, create / replace /
//! patch / delete, the `/status` subresource, `Status` errors) that the real `kube` client, the
//! `kube::runtime` watcher and `kube-lease-manager` work against it.
//!
//! Objects are kept as `serde_json::Value` per resource type in a `BTreeMap` keyed by (namespace, name);
//! every write takes the next value of one global resourceVersion counter. The last `history_limit` change
//! events are kept so a watch can resume from an older resourceVersion; older ones answer `410 Expired` in
//! the stream, as the real API server does.
//!
//! Test controls on [`KubeApi`]: write or delete objects directly (emitting watch events), read the log of
//! non-GET requests, end every watch stream, forget history, and answer `503` to everything.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One resource type the server knows.
#[derive(Debug, Clone, Copy)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// Has a `/status` subresource: writes to the object keep `.status`, writes to `/status` change only it.
    pub has_status: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn rt(
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    has_status: bool,
) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        plural,
        kind,
        namespaced,
        has_status,
    }
}

/// The resource types served.
pub const RESOURCES: &[ResourceType] = &[
    rt("networking.k8s.io", "ingresses", "Ingress", true, true),
    rt(
        "networking.k8s.io",
        "ingressclasses",
        "IngressClass",
        false,
        false,
    ),
    rt("", "services", "Service", true, true),
    rt("", "secrets", "Secret", true, false),
    rt("", "configmaps", "ConfigMap", true, false),
    rt("", "nodes", "Node", false, true),
    rt("", "events", "Event", true, false),
    rt(
        "discovery.k8s.io",
        "endpointslices",
        "EndpointSlice",
        true,
        false,
    ),
    rt("coordination.k8s.io", "leases", "Lease", true, false),
    rt("events.k8s.io", "events", "Event", true, false),
];

fn resource_by_path(group: &str, version: &str, plural: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)
}

fn resource_by_kind(api_version: &str, kind: &str) -> Option<usize> {
    RESOURCES
        .iter()
        .position(|r| r.kind == kind && r.api_version() == api_version)
}

/// A non-GET request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: String,
    /// The status code answered.
    pub status: u16,
}

impl RecordedRequest {
    /// The body parsed as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

struct HistEvent {
    rv: u64,
    res: usize,
    kind: EventType,
    obj: Arc<Value>,
    prev: Option<Arc<Value>>,
}

enum WatchMsg {
    Data(Bytes),
    Abort,
}

#[derive(Debug, Clone)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone)]
enum FieldReq {
    Eq(String, String),
    Ne(String, String),
}

#[derive(Debug, Clone, Default)]
struct Filter {
    ns: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        if let Some(ns) = &self.ns {
            if meta["namespace"].as_str().unwrap_or("") != ns {
                return false;
            }
        }
        let label = |k: &str| meta["labels"].get(k).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        });
        labels_ok
            && self.fields.iter().all(|req| match req {
                FieldReq::Eq(k, v) => field_value(obj, k) == *v,
                FieldReq::Ne(k, v) => field_value(obj, k) != *v,
            })
    }
}

/// The value of a dotted field path as a string ("" when missing), as field selectors compare it.
fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
}

fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, String> {
    let mut out = Vec::new();
    for term in split_top_level(s) {
        let t = term.trim();
        if t.is_empty() {
            continue;
        }
        let bad = || format!("unable to parse requirement: {t:?}");
        let req = if let Some(k) = t.strip_prefix('!') {
            LabelReq::NotExists(k.trim().to_string())
        } else if let Some((k, v)) = t.split_once("!=") {
            LabelReq::Ne(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = t.split_once("==") {
            LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = t.split_once('=') {
            LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, set)) = t.split_once(" notin ").or_else(|| t.split_once(" in ")) {
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(bad)?;
            let values = inner.split(',').map(|v| v.trim().to_string()).collect();
            if t.contains(" notin ") {
                LabelReq::NotIn(k.trim().to_string(), values)
            } else {
                LabelReq::In(k.trim().to_string(), values)
            }
        } else {
            LabelReq::Exists(t.to_string())
        };
        let key = match &req {
            LabelReq::Eq(k, _)
            | LabelReq::Ne(k, _)
            | LabelReq::Exists(k)
            | LabelReq::NotExists(k)
            | LabelReq::In(k, _)
            | LabelReq::NotIn(k, _) => k,
        };
        if !valid_key(key) {
            return Err(bad());
        }
        out.push(req);
    }
    Ok(out)
}

fn parse_field_selector(s: &str) -> Result<Vec<FieldReq>, String> {
    let mut out = Vec::new();
    for term in s.split(',') {
        let t = term.trim();
        if t.is_empty() {
            continue;
        }
        let req = if let Some((k, v)) = t.split_once("!=") {
            FieldReq::Ne(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = t.split_once("==") {
            FieldReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = t.split_once('=') {
            FieldReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else {
            return Err(format!("invalid field selector: {t:?}"));
        };
        out.push(req);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    fn hex(b: Option<&u8>) -> Option<u8> {
        (*b? as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn is_true(q: &BTreeMap<String, String>, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("true" | "1"))
}

/// An error answered as a `Status` object.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    fn not_found(res: usize, name: &str) -> Self {
        let r = &RESOURCES[res];
        let group = if r.group.is_empty() {
            String::new()
        } else {
            format!(".{}", r.group)
        };
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{}{group} \"{name}\" not found", r.plural),
        );
        e.details = Some(json!({"name": name, "group": r.group, "kind": r.plural}));
        e
    }
    fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
    fn already_exists(res: usize, name: &str) -> Self {
        let r = &RESOURCES[res];
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", r.plural),
        );
        e.details = Some(json!({"name": name, "group": r.group, "kind": r.plural}));
        e
    }
    fn conflict(res: usize, name: &str, why: &str) -> Self {
        let r = &RESOURCES[res];
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                r.plural
            ),
        );
        e.details = Some(json!({"name": name, "group": r.group, "kind": r.plural}));
        e
    }
    fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    fn to_value(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }

    fn response(&self) -> Response<ApiBody> {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, self.to_value().to_string().into_bytes())
    }
}

/// The response body: a complete JSON document, or a watch stream fed by the store.
pub struct ApiBody(BodyInner);

enum BodyInner {
    Full(Option<Bytes>),
    Watch(mpsc::UnboundedReceiver<WatchMsg>),
}

impl http_body::Body for ApiBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match &mut self.get_mut().0 {
            BodyInner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            BodyInner::Watch(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(WatchMsg::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(WatchMsg::Abort)) => Poll::Ready(Some(Err(
                    std::io::Error::other("watch stream dropped by the test server"),
                ))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.0, BodyInner::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            BodyInner::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            BodyInner::Full(None) => http_body::SizeHint::with_exact(0),
            BodyInner::Watch(_) => http_body::SizeHint::default(),
        }
    }
}

fn json_response(code: StatusCode, body: Vec<u8>) -> Response<ApiBody> {
    let mut resp = Response::new(ApiBody(BodyInner::Full(Some(Bytes::from(body)))));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn value_response(code: StatusCode, v: &Value) -> Response<ApiBody> {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

struct Watcher {
    res: usize,
    filter: Filter,
    tx: mpsc::UnboundedSender<WatchMsg>,
    bookmarks: bool,
    deadline: Instant,
}

impl Watcher {
    fn send(&self, line: Bytes) -> bool {
        self.tx.send(WatchMsg::Data(line)).is_ok()
    }

    /// What this watcher sees of `ev`, given its selectors (an object that stops matching is DELETED).
    fn translate(&self, ev: &HistEvent) -> Option<EventType> {
        if ev.res != self.res {
            return None;
        }
        let now = self.filter.matches(&ev.obj);
        match ev.kind {
            EventType::Added | EventType::Deleted => now.then_some(ev.kind),
            EventType::Modified => {
                let before = ev.prev.as_deref().is_some_and(|p| self.filter.matches(p));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }
    }
}

fn event_line(kind: &str, obj_json: &str) -> Bytes {
    Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{obj_json}}}\n"))
}

fn bookmark_line(res: usize, rv: u64, initial_end: bool) -> Bytes {
    let r = &RESOURCES[res];
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": meta});
    event_line("BOOKMARK", &obj.to_string())
}

fn expired_line() -> Bytes {
    let status = ApiError::new(410, "Expired", "too old resource version").to_value();
    event_line("ERROR", &status.to_string())
}

type Key = (String, String);

struct State {
    rv: u64,
    /// A watch may resume from any resourceVersion >= this; older ones get 410.
    compacted: u64,
    uid_seed: u64,
    uid_counter: u64,
    objects: Vec<BTreeMap<Key, Arc<Value>>>,
    history: VecDeque<HistEvent>,
    history_limit: usize,
    watchers: Vec<Watcher>,
    requests: Vec<RecordedRequest>,
    lists: u64,
    rejected: u64,
    unavailable: bool,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// `obj` without metadata and status: what `metadata.generation` counts changes of.
fn spec_part(obj: &Value) -> Map<String, Value> {
    let mut m = obj.as_object().cloned().unwrap_or_default();
    for k in ["metadata", "status", "apiVersion", "kind"] {
        m.remove(k);
    }
    m
}

impl State {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        State {
            rv: 1,
            compacted: 1,
            uid_seed: seed & 0xffff_ffff,
            uid_counter: 0,
            objects: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
            history: VecDeque::new(),
            history_limit: 10_000,
            watchers: Vec::new(),
            requests: Vec::new(),
            lists: 0,
            rejected: 0,
            unavailable: false,
        }
    }

    fn new_uid(&mut self) -> String {
        self.uid_counter += 1;
        format!(
            "{:08x}-{:04x}-4000-8000-{:012x}",
            self.uid_seed,
            (self.uid_counter >> 48) & 0xffff,
            self.uid_counter & 0xffff_ffff_ffff
        )
    }

    fn emit(&mut self, ev: HistEvent) {
        let mut obj_json: Option<String> = None;
        let mut lines: [Option<Bytes>; 3] = [None, None, None];
        self.watchers.retain(|w| {
            let Some(kind) = w.translate(&ev) else {
                return true;
            };
            let idx = kind as usize;
            let line = lines[idx]
                .get_or_insert_with(|| {
                    let j = obj_json.get_or_insert_with(|| ev.obj.to_string());
                    event_line(kind.name(), j)
                })
                .clone();
            w.send(line)
        });
        self.history.push_back(ev);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    /// Stores `new` under `key` (filling apiVersion, kind, name, namespace, uid, creationTimestamp,
    /// generation and a new resourceVersion) and emits ADDED or MODIFIED. An update that changes nothing
    /// returns the stored object and emits nothing.
    fn store(&mut self, res: usize, key: Key, prev: Option<Arc<Value>>, new: Value) -> Arc<Value> {
        let r = &RESOURCES[res];
        let mut new = match new {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        new.insert("apiVersion".into(), Value::String(r.api_version()));
        new.insert("kind".into(), Value::String(r.kind.into()));
        if r.kind == "Secret" {
            // As the real API server does: `stringData` is write-only, merged into `data` (base64).
            if let Some(Value::Object(strings)) = new.remove("stringData") {
                let data = new
                    .entry("data")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(data) = data {
                    for (k, v) in strings {
                        let bytes = k8s_openapi::ByteString(
                            v.as_str().unwrap_or_default().as_bytes().to_vec(),
                        );
                        data.insert(k, serde_json::to_value(bytes).unwrap_or(Value::Null));
                    }
                }
            }
        }
        let meta = new
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        let Value::Object(meta) = meta else {
            unreachable!()
        };
        meta.insert("name".into(), Value::String(key.1.clone()));
        if r.namespaced {
            meta.insert("namespace".into(), Value::String(key.0.clone()));
        } else {
            meta.remove("namespace");
        }
        let prev_meta = prev.as_deref().map(|p| &p["metadata"]);
        let uid = prev_meta
            .and_then(|m| m["uid"].as_str())
            .or_else(|| meta.get("uid").and_then(Value::as_str))
            .map(str::to_string);
        let created = prev_meta
            .and_then(|m| m["creationTimestamp"].as_str())
            .or_else(|| meta.get("creationTimestamp").and_then(Value::as_str))
            .map(str::to_string);
        let uid = uid.unwrap_or_else(|| self.new_uid());
        meta.insert("uid".into(), Value::String(uid));
        meta.insert(
            "creationTimestamp".into(),
            Value::String(created.unwrap_or_else(now_rfc3339)),
        );
        let mut new = Value::Object(new);
        let generation = match prev.as_deref() {
            Some(p) => {
                let g = p["metadata"]["generation"].as_i64().unwrap_or(1);
                if spec_part(p) != spec_part(&new) {
                    g + 1
                } else {
                    g
                }
            }
            None => new["metadata"]["generation"].as_i64().unwrap_or(1),
        };
        new["metadata"]["generation"] = json!(generation);
        if let Some(p) = prev.as_deref() {
            new["metadata"]["resourceVersion"] = p["metadata"]["resourceVersion"].clone();
            if *p == new {
                return prev.unwrap_or_default();
            }
        }
        self.rv += 1;
        let rv = self.rv;
        new["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let obj = Arc::new(new);
        self.objects[res].insert(key, obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(HistEvent {
            rv,
            res,
            kind,
            obj: obj.clone(),
            prev,
        });
        obj
    }

    fn remove(&mut self, res: usize, key: &Key) -> Option<Arc<Value>> {
        let prev = self.objects[res].remove(key)?;
        self.rv += 1;
        let rv = self.rv;
        let mut gone = (*prev).clone();
        gone["metadata"]["resourceVersion"] = Value::String(rv.to_string());
        let gone = Arc::new(gone);
        self.emit(HistEvent {
            rv,
            res,
            kind: EventType::Deleted,
            obj: gone.clone(),
            prev: Some(prev),
        });
        Some(gone)
    }

    fn for_each_match(&self, res: usize, filter: &Filter, mut f: impl FnMut(&Arc<Value>)) {
        let map = &self.objects[res];
        match &filter.ns {
            Some(ns) => {
                let start = (ns.clone(), String::new());
                for ((ons, _), obj) in map.range(start..) {
                    if ons != ns {
                        break;
                    }
                    if filter.matches(obj) {
                        f(obj);
                    }
                }
            }
            None => {
                for obj in map.values() {
                    if filter.matches(obj) {
                        f(obj);
                    }
                }
            }
        }
    }

    fn list_body(&self, res: usize, filter: &Filter) -> Vec<u8> {
        let r = &RESOURCES[res];
        let mut head = String::new();
        let _ = write!(
            head,
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{{\"resourceVersion\":\"{}\"}},\"items\":[",
            r.kind,
            r.api_version(),
            self.rv
        );
        let mut buf = head.into_bytes();
        let mut first = true;
        self.for_each_match(res, filter, |obj| {
            if !first {
                buf.push(b',');
            }
            first = false;
            let _ = serde_json::to_writer(&mut buf, &**obj);
        });
        buf.extend_from_slice(b"]}");
        buf
    }

    fn drop_watches(&mut self) {
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Abort);
        }
    }

    fn compact(&mut self) {
        self.rv += 1;
        self.compacted = self.rv;
        self.history.clear();
    }
}

enum Route {
    Version,
    ApiRoot,
    ApisRoot,
    GroupVersion(String, String),
    Collection {
        res: usize,
        ns: Option<String>,
    },
    Object {
        res: usize,
        ns: Option<String>,
        name: String,
        status: bool,
    },
}

fn route(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::ApiRoot),
        ["apis"] => return Ok(Route::ApisRoot),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::path_not_found()),
    };
    let find = |plural: &str| {
        resource_by_path(group, version, plural).ok_or_else(ApiError::path_not_found)
    };
    let obj = |res: usize, ns: Option<&str>, name: &str, status: bool| {
        if name.is_empty() {
            return Err(ApiError::path_not_found());
        }
        Ok(Route::Object {
            res,
            ns: ns.map(str::to_string),
            name: name.to_string(),
            status,
        })
    };
    match rest {
        [] => {
            if RESOURCES
                .iter()
                .any(|r| r.group == group && r.version == version)
            {
                Ok(Route::GroupVersion(group.to_string(), version.to_string()))
            } else {
                Err(ApiError::path_not_found())
            }
        }
        [plural] => Ok(Route::Collection {
            res: find(plural)?,
            ns: None,
        }),
        ["namespaces", ns, plural] if !ns.is_empty() => {
            let res = find(plural)?;
            if !RESOURCES[res].namespaced {
                return Err(ApiError::path_not_found());
            }
            Ok(Route::Collection {
                res,
                ns: Some(ns.to_string()),
            })
        }
        ["namespaces", ns, plural, name, tail @ ..] if !ns.is_empty() => {
            let res = find(plural)?;
            if !RESOURCES[res].namespaced {
                return Err(ApiError::path_not_found());
            }
            match tail {
                [] => obj(res, Some(ns), name, false),
                ["status"] => obj(res, Some(ns), name, true),
                _ => Err(ApiError::path_not_found()),
            }
        }
        [plural, name, tail @ ..] => {
            let res = find(plural)?;
            if RESOURCES[res].namespaced {
                return Err(ApiError::path_not_found());
            }
            match tail {
                [] => obj(res, None, name, false),
                ["status"] => obj(res, None, name, true),
                _ => Err(ApiError::path_not_found()),
            }
        }
    }
}

struct Inner {
    state: Mutex<State>,
    cancel: CancellationToken,
    /// Cancelled (and replaced) to close every open connection.
    conns: Mutex<CancellationToken>,
    down: AtomicBool,
    addr: SocketAddr,
    bookmark_interval: Duration,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn conns_token(&self) -> CancellationToken {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn close_connections(&self) {
        let mut conns = self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        conns.cancel();
        *conns = self.cancel.child_token();
    }
}

fn discovery_resources(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        list.push(json!({
            "name": r.plural,
            "singularName": r.kind.to_lowercase(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }));
        if r.has_status {
            list.push(json!({
                "name": format!("{}/status", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

fn discovery_groups() -> Value {
    let mut groups: Vec<&str> = RESOURCES
        .iter()
        .map(|r| r.group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.dedup();
    groups.sort_unstable();
    groups.dedup();
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

/// The body of an apply patch: JSON, or YAML as the content type says.
fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if v.is_object() {
            return Ok(v);
        }
    }
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
    let v: Value = serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("invalid apply body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be an object"));
    }
    Ok(v)
}

/// Checks the body's apiVersion/kind (when given) against the resource.
fn check_type(res: usize, body: &Value) -> Result<(), ApiError> {
    let r = &RESOURCES[res];
    if let Some(k) = body.get("kind").and_then(Value::as_str) {
        if k != r.kind {
            return Err(ApiError::bad_request(format!(
                "the kind {k:?} does not match the resource {}",
                r.plural
            )));
        }
    }
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str) {
        if av != r.api_version() {
            return Err(ApiError::bad_request(format!(
                "the apiVersion {av:?} does not match {}",
                r.api_version()
            )));
        }
    }
    Ok(())
}

impl State {
    fn handle(
        &mut self,
        method: &Method,
        path: &str,
        q: &BTreeMap<String, String>,
        content_type: Option<&str>,
        body: &[u8],
        addr: SocketAddr,
    ) -> Result<Response<ApiBody>, ApiError> {
        let route = route(path)?;
        let get_only = |v: Value| {
            if method == Method::GET {
                Ok(value_response(StatusCode::OK, &v))
            } else {
                Err(ApiError::method_not_allowed())
            }
        };
        match route {
            Route::Version => get_only(json!({
                "major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitCommit": "", "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64",
            })),
            Route::ApiRoot => get_only(json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
            })),
            Route::ApisRoot => get_only(discovery_groups()),
            Route::GroupVersion(g, v) => get_only(discovery_resources(&g, &v)),
            Route::Collection { res, ns } => match *method {
                Method::GET => {
                    let filter = Filter {
                        ns,
                        labels: parse_label_selector(q.get("labelSelector").map_or("", |s| s))
                            .map_err(ApiError::bad_request)?,
                        fields: parse_field_selector(q.get("fieldSelector").map_or("", |s| s))
                            .map_err(ApiError::bad_request)?,
                    };
                    if is_true(q, "watch") {
                        self.watch(res, filter, q)
                    } else {
                        self.lists += 1;
                        Ok(json_response(StatusCode::OK, self.list_body(res, &filter)))
                    }
                }
                Method::POST => {
                    if RESOURCES[res].namespaced && ns.is_none() {
                        return Err(ApiError::method_not_allowed());
                    }
                    let obj = self.create(res, ns, parse_body(body)?)?;
                    Ok(value_response(StatusCode::CREATED, &obj))
                }
                _ => Err(ApiError::method_not_allowed()),
            },
            Route::Object {
                res,
                ns,
                name,
                status,
            } => {
                if status && !RESOURCES[res].has_status {
                    return Err(ApiError::path_not_found());
                }
                let key = (ns.unwrap_or_default(), name);
                match *method {
                    Method::GET => {
                        let obj = self.objects[res]
                            .get(&key)
                            .ok_or_else(|| ApiError::not_found(res, &key.1))?;
                        Ok(value_response(StatusCode::OK, obj))
                    }
                    Method::PUT => {
                        let obj = self.replace(res, key, status, parse_body(body)?)?;
                        Ok(value_response(StatusCode::OK, &obj))
                    }
                    Method::PATCH => {
                        let (code, obj) = self.patch(res, key, status, content_type, body, q)?;
                        Ok(value_response(code, &obj))
                    }
                    Method::DELETE if !status => {
                        let gone = self
                            .remove(res, &key)
                            .ok_or_else(|| ApiError::not_found(res, &key.1))?;
                        Ok(value_response(StatusCode::OK, &gone))
                    }
                    _ => Err(ApiError::method_not_allowed()),
                }
            }
        }
    }

    fn watch(
        &mut self,
        res: usize,
        filter: Filter,
        q: &BTreeMap<String, String>,
    ) -> Result<Response<ApiBody>, ApiError> {
        let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
        let from = match rv {
            "" | "0" => None,
            s => Some(
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
            ),
        };
        let timeout = match q.get("timeoutSeconds") {
            Some(s) => Duration::from_secs(
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request("invalid timeoutSeconds"))?,
            ),
            None => Duration::from_secs(1800),
        };
        let send_initial = is_true(q, "sendInitialEvents");
        let (tx, rx) = mpsc::unbounded_channel();
        let w = Watcher {
            res,
            filter,
            tx,
            bookmarks: is_true(q, "allowWatchBookmarks"),
            deadline: Instant::now() + timeout,
        };
        let mut register = true;
        if send_initial || from.is_none() {
            self.for_each_match(res, &w.filter, |obj| {
                w.send(event_line("ADDED", &obj.to_string()));
            });
            if send_initial {
                w.send(bookmark_line(res, self.rv, true));
            }
        } else if let Some(from) = from {
            if from < self.compacted {
                w.send(expired_line());
                register = false;
            } else {
                for ev in self.history.iter().filter(|e| e.rv > from) {
                    if let Some(kind) = w.translate(ev) {
                        w.send(event_line(kind.name(), &ev.obj.to_string()));
                    }
                }
            }
        }
        if register {
            self.watchers.push(w);
        }
        let mut resp = Response::new(ApiBody(BodyInner::Watch(rx)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }

    fn create(
        &mut self,
        res: usize,
        ns: Option<String>,
        mut body: Value,
    ) -> Result<Arc<Value>, ApiError> {
        check_type(res, &body)?;
        if !body["metadata"].is_object() {
            body["metadata"] = json!({});
        }
        let ns = ns.unwrap_or_default();
        if let Some(bns) = meta_str(&body, "namespace") {
            if RESOURCES[res].namespaced && bns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the object does not match the namespace of the request",
                ));
            }
        }
        let name = match meta_str(&body, "name") {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta_str(&body, "generateName") {
                Some(g) if !g.is_empty() => {
                    let suffix = self.new_uid();
                    format!("{g}{}", &suffix[suffix.len() - 5..])
                }
                _ => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        "metadata.name: Required value: name or generateName is required",
                    ))
                }
            },
        };
        let key = (ns, name);
        if self.objects[res].contains_key(&key) {
            return Err(ApiError::already_exists(res, &key.1));
        }
        if let Some(m) = body["metadata"].as_object_mut() {
            for k in ["resourceVersion", "uid", "generation", "creationTimestamp"] {
                m.remove(k);
            }
        }
        Ok(self.store(res, key, None, body))
    }

    /// Checks and completes an update of `prev` to `new` through the object (`status` false: keeps
    /// `.status` if the type has a status subresource) or through `/status` (changes only `.status`).
    fn update(
        &mut self,
        res: usize,
        key: Key,
        prev: Arc<Value>,
        mut new: Value,
        status: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if !new.is_object() {
            return Err(ApiError::bad_request("the result is not an object"));
        }
        if let Some(rv) = meta_str(&new, "resourceVersion") {
            if !rv.is_empty() && Some(rv) != meta_str(&prev, "resourceVersion") {
                return Err(ApiError::conflict(
                    res,
                    &key.1,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        if let Some(n) = meta_str(&new, "name") {
            if n != key.1 {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name in the URL",
                ));
            }
        }
        let r = &RESOURCES[res];
        let new = if status {
            let mut out = (*prev).clone();
            match new.get_mut("status").map(Value::take) {
                Some(s) if !s.is_null() => out["status"] = s,
                _ => {
                    if let Some(m) = out.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            out
        } else {
            if r.has_status {
                if let Some(m) = new.as_object_mut() {
                    match prev.get("status") {
                        Some(s) => {
                            m.insert("status".into(), s.clone());
                        }
                        None => {
                            m.remove("status");
                        }
                    }
                }
            }
            new
        };
        Ok(self.store(res, key, Some(prev), new))
    }

    fn replace(
        &mut self,
        res: usize,
        key: Key,
        status: bool,
        body: Value,
    ) -> Result<Arc<Value>, ApiError> {
        check_type(res, &body)?;
        let prev = self.objects[res]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, &key.1))?;
        self.update(res, key, prev, body, status)
    }

    fn patch(
        &mut self,
        res: usize,
        key: Key,
        status: bool,
        content_type: Option<&str>,
        body: &[u8],
        q: &BTreeMap<String, String>,
    ) -> Result<(StatusCode, Arc<Value>), ApiError> {
        let ct = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let prev = self.objects[res].get(&key).cloned();
        let new = match ct.as_str() {
            "application/json-patch+json" => {
                let p: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                let prev = prev.ok_or_else(|| ApiError::not_found(res, &key.1))?;
                let mut v = (*prev).clone();
                json_patch::patch(&mut v, &p).map_err(|e| {
                    ApiError::new(422, "Invalid", format!("the JSON patch failed: {e}"))
                })?;
                return Ok((StatusCode::OK, self.update(res, key, prev, v, status)?));
            }
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                parse_body(body)?
            }
            "application/apply-patch+yaml" => {
                if !q.contains_key("fieldManager") {
                    return Err(ApiError::bad_request(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    ));
                }
                let p = parse_apply_body(body)?;
                check_type(res, &p)?;
                if prev.is_none() && !status {
                    let mut p = p;
                    if let Some(n) = meta_str(&p, "name") {
                        if n != key.1 {
                            return Err(ApiError::bad_request(
                                "the name of the object does not match the name in the URL",
                            ));
                        }
                    }
                    if let Some(m) = p["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    return Ok((StatusCode::CREATED, self.store(res, key, None, p)));
                }
                p
            }
            other => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {other:?}"),
                ))
            }
        };
        let prev = prev.ok_or_else(|| ApiError::not_found(res, &key.1))?;
        let mut v = (*prev).clone();
        json_patch::merge(&mut v, &new);
        Ok((StatusCode::OK, self.update(res, key, prev, v, status)?))
    }
}

async fn serve_request(
    inner: Arc<Inner>,
    req: Request<Incoming>,
) -> Result<Response<ApiBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => return Ok(ApiError::bad_request(format!("reading the body: {e}")).response()),
    };
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let q = parse_query(&query);
    let mut st = inner.lock();
    let resp = if st.unavailable {
        st.rejected += 1;
        ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
        .response()
    } else {
        st.handle(
            &parts.method,
            &path,
            &q,
            content_type.as_deref(),
            &body,
            inner.addr,
        )
        .unwrap_or_else(|e| e.response())
    };
    if parts.method != Method::GET {
        st.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path,
            query,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
            status: resp.status().as_u16(),
        });
    }
    Ok(resp)
}

/// Sends bookmarks to the watches that asked for them and ends the ones past their timeout.
async fn bookmark_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.bookmark_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut st = inner.lock();
        let rv = st.rv;
        let now = Instant::now();
        st.watchers.retain(|w| {
            if w.deadline <= now {
                return false;
            }
            if w.bookmarks {
                w.send(bookmark_line(w.res, rv, false))
            } else {
                !w.tx.is_closed()
            }
        });
    }
}

/// The running server. Dropping it stops the server and ends its connections.
pub struct KubeApi {
    inner: Arc<Inner>,
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
        self.inner.lock().drop_watches();
    }
}

impl KubeApi {
    /// Binds 127.0.0.1 on an ephemeral port and serves.
    pub async fn start() -> KubeApi {
        Self::start_on("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("binding the test API server")
    }

    /// Binds `addr` and serves.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<KubeApi> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new()),
            conns: Mutex::new(cancel.child_token()),
            cancel,
            down: AtomicBool::new(false),
            addr,
            bookmark_interval: Duration::from_secs(1),
        });
        tokio::spawn(bookmark_loop(inner.clone()));
        let acceptor = inner.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = acceptor.cancel.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                if acceptor.down.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let inner = acceptor.clone();
                tokio::spawn(async move {
                    let cancel = inner.conns_token();
                    let service = service_fn(move |req| serve_request(inner.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = cancel.cancelled() => {}
                    }
                });
            }
        });
        Ok(KubeApi { inner })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The kubeconfig text pointing at this server (context `kube-api-test`, namespace `default`, a user
    /// without credentials).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-api-test\n  cluster:\n    server: {}\n\
             contexts:\n- name: kube-api-test\n  context:\n    cluster: kube-api-test\n    user: kube-api-test\n    namespace: default\n\
             current-context: kube-api-test\nusers:\n- name: kube-api-test\n  user: {{}}\npreferences: {{}}\n",
            self.url()
        )
    }

    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// A `kube::Config` for this server (default namespace `default`, kube's default retry of 429/503/504
    /// on: set `default_retry = false` to see a 503 at once).
    pub fn config(&self) -> kube::Config {
        kube::Config::new(self.url().parse().expect("server URL"))
    }

    /// A `kube::Client` for this server from [`KubeApi::config`].
    pub fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config()).expect("kube client")
    }

    /// Creates or replaces the object by apiVersion/kind/namespace/name, emitting ADDED or MODIFIED
    /// (nothing if it is unchanged). Keeps uid and creationTimestamp of an existing object; `.status` is
    /// taken from `obj` as given. Returns the stored object. Panics on an unknown apiVersion/kind or a
    /// missing name.
    pub fn apply(&self, obj: impl Serialize) -> Value {
        self.try_apply(obj).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`KubeApi::apply`] that reports an unknown kind or a missing name as an error.
    pub fn try_apply(&self, obj: impl Serialize) -> Result<Value, String> {
        let obj =
            serde_json::to_value(obj).map_err(|e| format!("not serialisable to JSON: {e}"))?;
        let av = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let res = resource_by_kind(av, kind)
            .ok_or_else(|| format!("the test API server does not serve {av:?} {kind:?}"))?;
        let name = match meta_str(&obj, "name") {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => return Err(format!("{kind} without metadata.name")),
        };
        let ns = if RESOURCES[res].namespaced {
            meta_str(&obj, "namespace").unwrap_or("default").to_string()
        } else {
            String::new()
        };
        let key = (ns, name);
        let mut st = self.inner.lock();
        let prev = st.objects[res].get(&key).cloned();
        Ok((*st.store(res, key, prev, obj)).clone())
    }

    fn res(api_version: &str, kind: &str) -> usize {
        resource_by_kind(api_version, kind)
            .unwrap_or_else(|| panic!("the test API server does not serve {api_version} {kind}"))
    }

    fn key(res: usize, ns: &str, name: &str) -> Key {
        let ns = if RESOURCES[res].namespaced { ns } else { "" };
        (ns.to_string(), name.to_string())
    }

    /// Deletes the object (`ns` is ignored for cluster-scoped kinds), emitting DELETED. Returns whether
    /// it existed.
    pub fn delete(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> bool {
        let res = Self::res(api_version, kind);
        self.inner
            .lock()
            .remove(res, &Self::key(res, ns, name))
            .is_some()
    }

    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let res = Self::res(api_version, kind);
        let st = self.inner.lock();
        st.objects[res]
            .get(&Self::key(res, ns, name))
            .map(|o| (**o).clone())
    }

    /// Every stored object of the kind, ordered by (namespace, name).
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let res = Self::res(api_version, kind);
        let st = self.inner.lock();
        st.objects[res].values().map(|o| (**o).clone()).collect()
    }

    /// How many objects of the kind are stored.
    pub fn count(&self, api_version: &str, kind: &str) -> usize {
        let res = Self::res(api_version, kind);
        self.inner.lock().objects[res].len()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().rv
    }

    /// The non-GET requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.lock().requests.clone()
    }

    /// How many list requests (collection GETs that are not watches) were answered.
    pub fn list_requests(&self) -> u64 {
        self.inner.lock().lists
    }

    pub fn clear_requests(&self) {
        self.inner.lock().requests.clear();
    }

    /// How many watch streams are open.
    pub fn watch_count(&self) -> usize {
        self.inner.lock().watchers.len()
    }

    /// Ends every open watch stream abruptly (the chunked body is cut off with an error).
    pub fn drop_watches(&self) {
        self.inner.lock().drop_watches();
    }

    /// Forgets the event history: a watch resuming from any resourceVersion before now gets `410 Expired`.
    pub fn compact(&self) {
        self.inner.lock().compact();
    }

    /// How many change events are kept for resuming watches (default 10,000).
    pub fn set_history_limit(&self, limit: usize) {
        let mut st = self.inner.lock();
        st.history_limit = limit.max(1);
        while st.history.len() > st.history_limit {
            if let Some(old) = st.history.pop_front() {
                st.compacted = old.rv;
            }
        }
    }

    /// `true`: every request is answered `503` and open watches are cut off; `false`: back to normal.
    ///
    /// kube's client retries 503 by default (up to 15 times, backoff from 5 ms doubling), so with a default
    /// client a request made while unavailable succeeds if the server comes back in time.
    pub fn set_unavailable(&self, unavailable: bool) {
        let mut st = self.inner.lock();
        st.unavailable = unavailable;
        if unavailable {
            st.drop_watches();
        }
    }

    /// How many requests were answered `503` because of [`KubeApi::set_unavailable`].
    pub fn rejected_requests(&self) -> u64 {
        self.inner.lock().rejected
    }

    /// `true`: the server is unreachable: every open connection (watches included) is closed and new
    /// connections are closed as soon as they are accepted, so requests fail with a transport error (which
    /// kube does not retry); `false`: back to normal.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
        if down {
            self.inner.lock().drop_watches();
            self.inner.close_connections();
        }
    }

    /// An API server restart: open watches are cut off and the history is forgotten.
    pub fn restart(&self) {
        let mut st = self.inner.lock();
        st.drop_watches();
        st.compact();
    }
}
