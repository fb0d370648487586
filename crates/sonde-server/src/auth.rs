//! API keys, their scopes, and the per-key limits checked at the edge.
//!
//! A key is a random secret shown once when it is made (`sonde keys new`); the server keeps only
//! its SHA-256, in a keys file (`--keys-file`) or in `SONDE_KEYS`, one key per line:
//!
//! ```text
//! # name        scopes         datasets       hash
//! otel-prod     ingest         prod,frontend  sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! oncall        query          *              sha256:…
//! ops           admin          *              sha256:…
//! ```
//!
//! Scopes: `ingest` writes events, `query` reads (query API, SQL, schema, traces, the UI's
//! calls), `manage` changes the objects users define (derived columns, markers, saved queries'
//! annotations), `admin` may do
//! everything, including deleting datasets. `datasets` is `*` or a comma
//! list; a key limited to some datasets neither writes nor sees the others (SQL sees only their
//! tables). Clients send the key as `X-Honeycomb-Team: KEY` (libhoney, Honeycomb's OTLP headers)
//! or `Authorization: Bearer KEY`.
//!
//! With no keys configured, auth is off — which `sonde serve` allows only on loopback addresses
//! unless told `--insecure-no-auth`.

use crate::error::ApiError;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Write events.
    Ingest,
    /// Read: queries, SQL, schema, traces.
    Query,
    /// Change the objects users define: derived columns, markers and their settings, query
    /// annotations (Honeycomb's "Manage Queries and Columns"). Saving a query needs only
    /// `Query`: saved queries are immutable and unnamed until annotated.
    Manage,
    /// Everything, including deletion.
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "ingest" => Some(Scope::Ingest),
            "query" => Some(Scope::Query),
            "manage" => Some(Scope::Manage),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Manage => "manage",
            Scope::Admin => "admin",
        }
    }
}

/// One configured key (its secret is not kept, only its hash).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The key's name, for logs and rate limits (never the secret).
    pub name: String,
    scopes: Vec<Scope>,
    /// `None`: every dataset.
    datasets: Option<Vec<String>>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("datasets", &self.datasets)
            .finish()
    }
}

impl ApiKey {
    fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&scope)
    }

    /// Whether the key reaches `dataset`.
    pub fn covers(&self, dataset: &str) -> bool {
        self.datasets.as_ref().is_none_or(|ds| ds.iter().any(|d| d == dataset))
    }

    /// Whether the key reaches every dataset.
    pub fn covers_all(&self) -> bool {
        self.datasets.is_none()
    }
}

/// The configured keys, by the SHA-256 of their secret.
#[derive(Debug, Default, Clone)]
pub struct KeyStore {
    by_hash: HashMap<[u8; 32], Arc<ApiKey>>,
}

/// The SHA-256 of a key, as stored.
pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random key (32 bytes from the OS, hex) and its keys-file line.
pub fn new_key(name: &str, scopes: &str, datasets: &str) -> Result<(String, String), String> {
    let line_check = format!("{name} {scopes} {datasets} sha256:{}", hex(&[0; 32]));
    KeyStore::parse(&line_check)?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let secret = format!("sonde_{}", hex(&raw));
    let line = format!("{name} {scopes} {datasets} sha256:{}", hex(&hash_key(&secret)));
    Ok((secret, line))
}

impl KeyStore {
    /// Parses keys-file text (lines may also be separated by `;`, for `SONDE_KEYS`). Errors name
    /// the line and what is wrong with it; they never echo a hash.
    pub fn parse(text: &str) -> Result<KeyStore, String> {
        let mut store = KeyStore::default();
        for (i, line) in text.split(['\n', ';']).enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, scopes, datasets, hash] = fields[..] else {
                return Err(format!(
                    "key line {}: expected 4 fields `name scopes datasets sha256:HEX`, found {}",
                    i + 1,
                    fields.len()
                ));
            };
            let scopes = scopes
                .split(',')
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        format!(
                            "key line {} ({name}): unknown scope {s:?} (ingest, query, admin)",
                            i + 1
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let datasets = match datasets {
                "*" => None,
                list => Some(list.split(',').map(str::to_string).collect()),
            };
            let digest = hash
                .strip_prefix("sha256:")
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| format!("key line {} ({name}): hash must be sha256: and 64 hex digits", i + 1))?;
            let mut bytes = [0u8; 32];
            for (j, b) in bytes.iter_mut().enumerate() {
                *b = u8::from_str_radix(&digest[j * 2..j * 2 + 2], 16).expect("checked hex");
            }
            let key = ApiKey {
                name: name.to_string(),
                scopes,
                datasets,
            };
            if store.by_hash.insert(bytes, Arc::new(key)).is_some() {
                return Err(format!("key line {} ({name}): the same key is listed twice", i + 1));
            }
        }
        Ok(store)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether no key is configured (auth off).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    fn lookup(&self, secret: &str) -> Option<Arc<ApiKey>> {
        self.by_hash.get(&hash_key(secret)).cloned()
    }
}

/// The key a request presents: `X-Honeycomb-Team`, or `Authorization: Bearer`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-honeycomb-team").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who is calling: a key, or anyone when auth is off.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off: everything is allowed (loopback only, or `--insecure-no-auth`).
    Anyone,
    /// A configured key.
    Key(Arc<ApiKey>),
}

impl Caller {
    /// Whether the caller may read or write `dataset`.
    pub fn covers(&self, dataset: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Key(k) => k.covers(dataset),
        }
    }

    /// Whether the caller reaches every dataset.
    pub fn covers_all(&self) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Key(k) => k.covers_all(),
        }
    }

    fn name(&self) -> &str {
        match self {
            Caller::Anyone => "",
            Caller::Key(k) => &k.name,
        }
    }
}

/// Requests per second allowed per key, by kind of work (0: unlimited).
#[derive(Debug, Clone, Copy, Default)]
pub struct RateLimits {
    /// Ingest requests per second per key.
    pub ingest_per_s: f64,
    /// Query requests per second per key.
    pub query_per_s: f64,
}

/// A token bucket: `rate` tokens a second, holding at most one second's worth (at least 1).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Keys, limits, and the buckets that enforce them.
#[derive(Debug, Default)]
pub struct Access {
    keys: KeyStore,
    limits: RateLimits,
    buckets: Mutex<HashMap<(String, Scope), Bucket>>,
}

impl Access {
    /// Access checks over `keys` (empty: auth off) with per-key `limits`.
    pub fn new(keys: KeyStore, limits: RateLimits) -> Access {
        Access {
            keys,
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether requests must carry a key.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Who presents these headers: 401 without a key or with an unknown one.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if !self.enabled() {
            return Ok(Caller::Anyone);
        }
        let Some(secret) = presented_key(headers).filter(|s| !s.is_empty()) else {
            return Err(ApiError::unauthorized(
                "an API key is required: send it as `X-Honeycomb-Team: KEY` or `Authorization: Bearer KEY`",
            ));
        };
        match self.keys.lookup(secret) {
            Some(k) => Ok(Caller::Key(k)),
            None => Err(ApiError::unauthorized("unknown API key")),
        }
    }

    /// Checks that the caller may do `scope` work on `dataset` (or on any dataset when `None`),
    /// and takes one token from its rate limit for that work.
    pub fn require(&self, caller: &Caller, scope: Scope, dataset: Option<&str>) -> Result<(), ApiError> {
        if let Caller::Key(k) = caller
            && !k.has(scope)
        {
            return Err(ApiError::forbidden(format!(
                "API key {:?} lacks the {} scope",
                k.name,
                scope.name()
            )));
        }
        if let Some(ds) = dataset {
            Self::require_dataset(caller, ds)?;
        }
        self.take(caller, scope)
    }

    /// Checks that the caller reaches `dataset` (403 otherwise), for work already admitted by
    /// [`Access::require`] whose datasets are known only later (OTLP maps spans to datasets).
    pub fn require_dataset(caller: &Caller, dataset: &str) -> Result<(), ApiError> {
        match caller {
            Caller::Key(k) if !k.covers(dataset) => Err(ApiError::forbidden(format!(
                "API key {:?} does not cover dataset {dataset:?}",
                k.name
            ))),
            _ => Ok(()),
        }
    }

    /// Rate limits apply per key; with auth off there are no keys to limit.
    fn take(&self, caller: &Caller, scope: Scope) -> Result<(), ApiError> {
        // Two buckets per key: ingest, and everything else (reads and admin work).
        let (class, rate) = match scope {
            Scope::Ingest => (Scope::Ingest, self.limits.ingest_per_s),
            Scope::Query | Scope::Manage | Scope::Admin => (Scope::Query, self.limits.query_per_s),
        };
        if rate <= 0.0 || matches!(caller, Caller::Anyone) {
            return Ok(());
        }
        let burst = rate.max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap();
        let b = buckets
            .entry((caller.name().to_string(), class))
            .or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - b.tokens) / rate);
        Err(ApiError::too_many(
            format!(
                "rate limit of {rate} {} requests/s for API key {:?} exceeded (set with {})",
                class.name(),
                caller.name(),
                match class {
                    Scope::Ingest => "--ingest-rate-limit / SONDE_INGEST_RATE_LIMIT",
                    _ => "--query-rate-limit / SONDE_QUERY_RATE_LIMIT",
                }
            ),
            wait.as_secs().max(1),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn keys_are_checked_by_hash_scope_and_dataset() {
        let (ingest, l1) = new_key("shipper", "ingest", "prod").unwrap();
        let (query, l2) = new_key("oncall", "query", "*").unwrap();
        assert!(!l1.contains(&ingest), "the file holds the hash, not the key");
        let access = Access::new(
            KeyStore::parse(&format!("{l1}\n# comment\n{l2}")).unwrap(),
            RateLimits::default(),
        );
        assert!(access.enabled());

        let err = access.caller(&HeaderMap::new()).unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);
        let err = access.caller(&headers("x-honeycomb-team", "nope")).unwrap_err();
        assert_eq!(err.status, StatusCode::UNAUTHORIZED);

        let c = access.caller(&headers("x-honeycomb-team", &ingest)).unwrap();
        access.require(&c, Scope::Ingest, Some("prod")).unwrap();
        let e = access.require(&c, Scope::Ingest, Some("other")).unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(e.message.contains("does not cover dataset \"other\""), "{}", e.message);
        assert_eq!(
            access.require(&c, Scope::Query, Some("prod")).unwrap_err().status,
            StatusCode::FORBIDDEN
        );

        let c = access
            .caller(&headers("authorization", &format!("Bearer {query}")))
            .unwrap();
        access.require(&c, Scope::Query, Some("anything")).unwrap();
        assert_eq!(
            access.require(&c, Scope::Admin, None).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn bad_key_lines_are_named() {
        let e = KeyStore::parse("a ingest *").unwrap_err();
        assert!(e.contains("line 1") && e.contains("4 fields"), "{e}");
        let e = KeyStore::parse(&format!("\na write * sha256:{}", "0".repeat(64))).unwrap_err();
        assert!(e.contains("line 2") && e.contains("unknown scope \"write\""), "{e}");
        let e = KeyStore::parse("a ingest * md5:00").unwrap_err();
        assert!(e.contains("sha256"), "{e}");
        assert!(KeyStore::parse("").unwrap().is_empty());
    }

    #[test]
    fn rate_limits_are_per_key_and_say_when_to_retry() {
        let (a, la) = new_key("a", "ingest,query", "*").unwrap();
        let (b, lb) = new_key("b", "ingest", "*").unwrap();
        let access = Access::new(
            KeyStore::parse(&format!("{la};{lb}")).unwrap(),
            RateLimits {
                ingest_per_s: 3.0,
                query_per_s: 0.0,
            },
        );
        let ca = access.caller(&headers("x-honeycomb-team", &a)).unwrap();
        let cb = access.caller(&headers("x-honeycomb-team", &b)).unwrap();
        for _ in 0..3 {
            access.require(&ca, Scope::Ingest, Some("d")).unwrap();
        }
        let e = access.require(&ca, Scope::Ingest, Some("d")).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(1));
        // Another key has its own bucket; queries are unlimited here.
        access.require(&cb, Scope::Ingest, Some("d")).unwrap();
        for _ in 0..10 {
            access.require(&ca, Scope::Query, Some("d")).unwrap();
        }
    }
}
