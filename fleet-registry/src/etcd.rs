//! A small client of etcd's v3 JSON gateway (etcd 3.4 serves it on its
//! client URLs): leases, puts under a lease, and reads by prefix. That is
//! all the fleet asks of etcd, and it keeps the gRPC stack out of a
//! codebase of synchronous threads.
//!
//! Keys and values travel base64-encoded, 64-bit numbers as JSON strings.
//! The client knows several members: a request goes to the member that
//! answered last and moves on to the next when one cannot be reached or
//! answers 5xx (a member without quorum, a leader election), so a cluster
//! that has lost a member keeps serving. A 4xx answer is the request's
//! fault and is not retried.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{EndpointFailure, EtcdError};
use crate::http;

/// A lease's id, as etcd numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A client of an etcd cluster's members.
#[derive(Debug)]
pub struct EtcdClient {
    endpoints: Vec<SocketAddr>,
    timeout: Duration,
    /// The member that answered last.
    current: AtomicUsize,
}

/// One key and its value, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// Its value.
    pub value: Vec<u8>,
}

/// Parses an endpoint as `[fleet] etcd` lists it: `host:port` or
/// `http://host:port` with a numeric host (no name lookup: a stalled DNS
/// would stall the daemon's loop).
///
/// # Errors
/// What is wrong with it and what to write instead.
fn parse_endpoint(text: &str) -> Result<SocketAddr, String> {
    if text.starts_with("https://") {
        return Err(format!("etcd endpoint {text:?}: only plain http is supported; use http://ADDRESS:PORT"));
    }
    let bare = text.strip_prefix("http://").unwrap_or(text).trim_end_matches('/');
    bare.parse().map_err(|_| format!("etcd endpoint {text:?}: expected http://IP:PORT or IP:PORT, e.g. 10.0.0.5:2379"))
}

/// The client URLs of an etcd cluster's members, as a `[fleet]` section
/// lists them (`etcd = ["http://10.0.0.5:2379", ...]`), checked at load.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct EtcdEndpoints(Vec<SocketAddr>);

impl TryFrom<Vec<String>> for EtcdEndpoints {
    type Error = String;

    fn try_from(texts: Vec<String>) -> Result<Self, String> {
        if texts.is_empty() {
            return Err("etcd lists no endpoint; list the client URLs of the etcd cluster's members".to_owned());
        }
        texts.iter().map(|t| parse_endpoint(t)).collect::<Result<_, _>>().map(EtcdEndpoints)
    }
}

impl EtcdEndpoints {
    /// The members' addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0
    }

    /// A client of these members (see [`EtcdClient::new`]).
    pub fn client(&self, timeout: Duration) -> EtcdClient {
        EtcdClient::new(self.0.clone(), timeout)
    }
}

impl EtcdClient {
    /// A client of the members at `endpoints` (at least one); every socket
    /// operation of a request to one member may take `timeout`.
    ///
    /// # Panics
    /// On an empty `endpoints`, a bug: the configuration requires one.
    pub fn new(endpoints: Vec<SocketAddr>, timeout: Duration) -> EtcdClient {
        assert!(!endpoints.is_empty(), "an etcd client needs at least one endpoint");
        EtcdClient { endpoints, timeout, current: AtomicUsize::new(0) }
    }

    /// Posts `body` to `path`, trying each member once from the current one.
    fn call(&self, path: &'static str, body: &Value) -> Result<Value, EtcdError> {
        let body = body.to_string();
        let first = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in 0..self.endpoints.len() {
            let at = (first + i) % self.endpoints.len();
            let endpoint = self.endpoints[at];
            let failure = match http::post(endpoint, path, body.as_bytes(), self.timeout) {
                Ok(answer) if answer.status == 200 => {
                    self.current.store(at, Ordering::Relaxed);
                    return serde_json::from_slice(&answer.body).map_err(|e| EtcdError::Malformed {
                        endpoint,
                        path,
                        reason: format!("not JSON: {e}"),
                    });
                }
                Ok(answer) => {
                    let message = gateway_message(&answer.body);
                    if (400..500).contains(&answer.status) {
                        return Err(EtcdError::Refused { endpoint, path, status: answer.status, message });
                    }
                    EndpointFailure::Status { endpoint, status: answer.status, message }
                }
                Err(cause) => EndpointFailure::Transport { endpoint, cause },
            };
            tracing::debug!("etcd {path}: {}", failure);
            failures.push(failure);
        }
        Err(EtcdError::NoEndpoint { path, failures })
    }

    /// Grants a lease of `ttl` seconds.
    ///
    /// # Errors
    /// [`EtcdError`] naming the members and what failed.
    pub fn grant(&self, ttl: Duration) -> Result<LeaseId, EtcdError> {
        const PATH: &str = "/v3/lease/grant";
        let answer = self.call(PATH, &json!({ "TTL": ttl.as_secs() }))?;
        let id = int_field(&answer, "ID").ok_or_else(|| self.malformed(PATH, "no lease ID"))?;
        Ok(LeaseId(id))
    }

    /// Renews `lease`; returns its new time to live.
    ///
    /// # Errors
    /// [`EtcdError::LeaseGone`] when etcd no longer has it (it expired),
    /// else [`EtcdError`] naming the members and what failed.
    pub fn keep_alive(&self, lease: LeaseId) -> Result<Duration, EtcdError> {
        const PATH: &str = "/v3/lease/keepalive";
        let answer = self.call(PATH, &json!({ "ID": lease.0.to_string() }))?;
        // The gateway streams this call: its one answer is under "result".
        let result = answer.get("result").unwrap_or(&answer);
        match int_field(result, "TTL") {
            Some(ttl) if ttl > 0 => Ok(Duration::from_secs(ttl.unsigned_abs())),
            _ => Err(EtcdError::LeaseGone { lease }),
        }
    }

    /// Revokes `lease`, deleting the keys under it.
    ///
    /// # Errors
    /// [`EtcdError`] naming the members and what failed.
    pub fn revoke(&self, lease: LeaseId) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({ "ID": lease.0.to_string() })).map(drop)
    }

    /// Writes `key` = `value`, under `lease` if given.
    ///
    /// # Errors
    /// [`EtcdError`] naming the members and what failed (a lease that
    /// expired is a [`EtcdError::Refused`] with etcd's "requested lease not found").
    pub fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Result<(), EtcdError> {
        let mut body = json!({ "key": BASE64.encode(key), "value": BASE64.encode(value) });
        if let Some(lease) = lease {
            body["lease"] = Value::String(lease.0.to_string());
        }
        self.call("/v3/kv/put", &body).map(drop)
    }

    /// Every key starting with `prefix`, in key order.
    ///
    /// # Errors
    /// [`EtcdError`] naming the members and what failed.
    pub fn range_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, EtcdError> {
        const PATH: &str = "/v3/kv/range";
        let body = json!({ "key": BASE64.encode(prefix), "range_end": BASE64.encode(prefix_end(prefix.as_bytes())) });
        let answer = self.call(PATH, &body)?;
        #[derive(Deserialize)]
        struct Kv {
            key: String,
            #[serde(default)]
            value: String,
        }
        let kvs: Vec<Kv> = match answer.get("kvs") {
            None => return Ok(Vec::new()),
            Some(kvs) => serde_json::from_value(kvs.clone()).map_err(|e| self.malformed(PATH, &format!("kvs: {e}")))?,
        };
        kvs.into_iter()
            .map(|kv| {
                let decode = |field: &str, text: &str| {
                    BASE64.decode(text).map_err(|e| self.malformed(PATH, &format!("{field} is not base64: {e}")))
                };
                Ok(KeyValue { key: decode("key", &kv.key)?, value: decode("value", &kv.value)? })
            })
            .collect()
    }

    /// The value of `key`, if it exists.
    ///
    /// # Errors
    /// [`EtcdError`] naming the members and what failed.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        const PATH: &str = "/v3/kv/range";
        let answer = self.call(PATH, &json!({ "key": BASE64.encode(key) }))?;
        let Some(kv) = answer.get("kvs").and_then(|kvs| kvs.get(0)) else { return Ok(None) };
        let value = kv.get("value").and_then(Value::as_str).unwrap_or("");
        BASE64.decode(value).map(Some).map_err(|e| self.malformed(PATH, &format!("value is not base64: {e}")))
    }

    /// Deletes `key` (nothing when it does not exist).
    ///
    /// # Errors
    /// [`EtcdError`] naming the members and what failed.
    pub fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.call("/v3/kv/deleterange", &json!({ "key": BASE64.encode(key) })).map(drop)
    }

    /// Writes `key` = `value` under `lease` only if `key` does not exist;
    /// returns the write's revision, or the value the key has.
    ///
    /// # Errors
    /// [`EtcdError`] naming the members and what failed.
    pub fn put_if_absent(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<Result<i64, Vec<u8>>, EtcdError> {
        let compare =
            json!({ "key": BASE64.encode(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0" });
        self.put_if(key, compare, value, lease)
    }

    /// Writes `key` = `value` under `lease` only if `key` holds `expected`
    /// now; returns the write's revision, or the value the key has (empty
    /// when it does not exist).
    ///
    /// # Errors
    /// [`EtcdError`] naming the members and what failed.
    pub fn put_if_value(
        &self,
        key: &str,
        expected: &[u8],
        value: &[u8],
        lease: LeaseId,
    ) -> Result<Result<i64, Vec<u8>>, EtcdError> {
        let compare = json!({ "key": BASE64.encode(key), "result": "EQUAL", "target": "VALUE", "value": BASE64.encode(expected) });
        self.put_if(key, compare, value, lease)
    }

    fn put_if(
        &self,
        key: &str,
        compare: Value,
        value: &[u8],
        lease: LeaseId,
    ) -> Result<Result<i64, Vec<u8>>, EtcdError> {
        const PATH: &str = "/v3/kv/txn";
        let key64 = BASE64.encode(key);
        let body = json!({
            "compare": [compare],
            "success": [{ "request_put": { "key": key64, "value": BASE64.encode(value), "lease": lease.0.to_string() } }],
            "failure": [{ "request_range": { "key": key64 } }],
        });
        let answer = self.call(PATH, &body)?;
        if answer.get("succeeded").and_then(Value::as_bool) == Some(true) {
            let header = answer.get("header").ok_or_else(|| self.malformed(PATH, "no header"))?;
            return int_field(header, "revision").map(Ok).ok_or_else(|| self.malformed(PATH, "no revision"));
        }
        let current = answer
            .pointer("/responses/0/response_range/kvs/0/value")
            .and_then(Value::as_str)
            .map(|text| BASE64.decode(text).map_err(|e| self.malformed(PATH, &format!("value is not base64: {e}"))))
            .transpose()?;
        Ok(Err(current.unwrap_or_default()))
    }

    /// Deletes `key` only if its last write was at `revision`; returns
    /// whether it did.
    ///
    /// # Errors
    /// [`EtcdError`] naming the members and what failed.
    pub fn delete_if_revision(&self, key: &str, revision: i64) -> Result<bool, EtcdError> {
        let key64 = BASE64.encode(key);
        let body = json!({
            "compare": [{ "key": key64, "result": "EQUAL", "target": "MOD", "mod_revision": revision.to_string() }],
            "success": [{ "request_delete_range": { "key": key64 } }],
        });
        Ok(self.call("/v3/kv/txn", &body)?.get("succeeded").and_then(Value::as_bool) == Some(true))
    }

    fn malformed(&self, path: &'static str, reason: &str) -> EtcdError {
        let endpoint = self.endpoints[self.current.load(Ordering::Relaxed)];
        EtcdError::Malformed { endpoint, path, reason: reason.to_owned() }
    }
}

/// The end of the range of keys starting with `prefix`: the prefix with its
/// last byte below 0xff incremented (etcd's convention).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

/// A 64-bit number the gateway sends as a string (or a number).
fn int_field(value: &Value, field: &str) -> Option<i64> {
    match value.get(field)? {
        Value::String(text) => text.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// The message of a gateway error body (`{"error": ..., "message": ...}`),
/// or the start of the body.
fn gateway_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(|v| v.get("message").or_else(|| v.get("error"))).and_then(Value::as_str);
    match message {
        Some(text) => text.chars().take(200).collect(),
        None => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_numeric_http_addresses() {
        assert_eq!(parse_endpoint("http://10.0.0.5:2379/").unwrap(), "10.0.0.5:2379".parse().unwrap());
        assert_eq!(parse_endpoint("127.0.0.1:2379").unwrap(), "127.0.0.1:2379".parse().unwrap());
        assert!(parse_endpoint("https://10.0.0.5:2379").unwrap_err().contains("only plain http"));
        assert!(parse_endpoint("etcd.example:2379").unwrap_err().contains("IP:PORT"));
    }

    #[test]
    fn an_endpoint_list_is_checked_whole() {
        let list = |texts: &[&str]| EtcdEndpoints::try_from(texts.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        assert_eq!(list(&["http://127.0.0.1:1", "127.0.0.2:2"]).unwrap().addrs().len(), 2);
        assert!(list(&[]).unwrap_err().contains("no endpoint"));
        assert!(list(&["127.0.0.1:1", "localhost:2"]).unwrap_err().contains("\"localhost:2\""));
    }

    #[test]
    fn a_prefix_range_ends_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn numbers_come_as_strings_or_numbers() {
        let answer = json!({"ID": "7587862072163432457", "TTL": 10});
        assert_eq!(int_field(&answer, "ID"), Some(7_587_862_072_163_432_457));
        assert_eq!(int_field(&answer, "TTL"), Some(10));
        assert_eq!(int_field(&answer, "none"), None);
        assert_eq!(
            gateway_message(br#"{"error":"x","code":5,"message":"etcdserver: requested lease not found"}"#),
            "etcdserver: requested lease not found"
        );
    }

    #[test]
    fn a_dead_cluster_names_every_member_tried() {
        // Two ports nothing listens on (bound, then closed).
        let dead: Vec<SocketAddr> =
            (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()).collect();
        let client = EtcdClient::new(dead.clone(), Duration::from_millis(500));
        let err = client.range_prefix("/jettison/servers/").unwrap_err();
        let text = err.to_string();
        for endpoint in &dead {
            assert!(text.contains(&endpoint.to_string()), "{text}");
        }
        assert!(text.contains("[fleet] etcd"), "says what to check: {text}");
    }
}
