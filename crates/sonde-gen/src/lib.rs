//! A deterministic generator of realistic wide events from a small service mesh, with an
//! incident scenario. Tests, benchmarks and the demo all use it, so that every figure and every
//! expected answer can be reproduced from a seed.
//!
//! Each event is one request handled by one service: ~25 fields including nested objects
//! (`http.*`, `trace.*`), high-cardinality ids (`user.id`, `request.id`, `trace.trace_id`),
//! sparse fields only some services send (`db.*`, `cache.hit`, `payment.*`), an array
//! (`tags`, kept as JSON text), and a sample rate (health checks are sampled 1 in 10).
//!
//! **The incident.** Between 60% and 75% of the generated time span, the `dyn` DNS provider
//! fails slowly: 90% of the requests that resolve through it take 2–6 s more; a third of those
//! give up with a 503, `error = true` and `error.message = "dns lookup timeout"`, the rest
//! succeed after retrying. Work after the lookup (`db.duration_ms`) is not slowed. BubbleUp over
//! the slow band should therefore single out `dns.provider = dyn`, ahead of the symptoms.

use serde_json::{Map, Value, json};

/// One generated event: its envelope (time, sample rate) and its data object.
#[derive(Debug, Clone, PartialEq)]
pub struct GenEvent {
    /// Event time, µs since the epoch.
    pub time_us: i64,
    /// Sample rate (1 = unsampled).
    pub sample_rate: i64,
    /// The event's fields, possibly nested.
    pub data: Value,
}

impl GenEvent {
    /// The event as one NDJSON line for `POST /api/ingest` (time in `timestamp`, sample rate in
    /// `samplerate`, beside the data fields).
    pub fn to_ndjson(&self) -> String {
        let mut m = Map::new();
        m.insert("timestamp".into(), json!(format_time(self.time_us)));
        if self.sample_rate != 1 {
            m.insert("samplerate".into(), json!(self.sample_rate));
        }
        if let Value::Object(d) = &self.data {
            for (k, v) in d {
                m.insert(k.clone(), v.clone());
            }
        }
        Value::Object(m).to_string()
    }

    /// The event as an item of a Honeycomb batch (`{"data":…,"time":…,"samplerate":…}`).
    pub fn to_batch_item(&self) -> Value {
        json!({"data": self.data, "time": format_time(self.time_us), "samplerate": self.sample_rate})
    }
}

/// RFC3339 with microseconds, UTC.
pub fn format_time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .expect("time in range")
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Seed: the same seed and config give the same events.
    pub seed: u64,
    /// Time of the first event (µs since the epoch).
    pub start_us: i64,
    /// The span of time the events cover (µs).
    pub span_us: i64,
    /// Whether the incident happens.
    pub incident: bool,
}

impl GenConfig {
    /// One hour of events ending now, with the incident.
    pub fn recent(seed: u64) -> GenConfig {
        let now = chrono::Utc::now().timestamp_micros();
        let hour = 3_600_000_000;
        GenConfig {
            seed,
            start_us: now - hour,
            span_us: hour,
            incident: true,
        }
    }
}

/// A small, fast, deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// One element of a slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
    /// Log-normal-ish latency around `median` ms.
    pub fn latency(&mut self, median: f64) -> f64 {
        let u = self.f64().max(1e-9);
        let v = self.f64();
        let normal = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
        median * (0.6 * normal).exp()
    }
}

struct Service {
    name: &'static str,
    routes: &'static [&'static str],
    median_ms: f64,
    /// Sends `db.*` fields.
    db: bool,
    /// Sends `cache.hit`.
    cache: bool,
}

const SERVICES: &[Service] = &[
    Service {
        name: "frontend",
        routes: &["/", "/product/:id", "/cart", "/search"],
        median_ms: 35.0,
        db: false,
        cache: true,
    },
    Service {
        name: "api-gateway",
        routes: &[
            "/api/v1/products",
            "/api/v1/cart",
            "/api/v1/checkout",
            "/api/v1/users/:id",
        ],
        median_ms: 20.0,
        db: false,
        cache: false,
    },
    Service {
        name: "checkout",
        routes: &["/checkout", "/checkout/confirm"],
        median_ms: 80.0,
        db: true,
        cache: false,
    },
    Service {
        name: "payments",
        routes: &["/charge", "/refund"],
        median_ms: 120.0,
        db: true,
        cache: false,
    },
    Service {
        name: "inventory",
        routes: &["/stock/:sku", "/reserve"],
        median_ms: 15.0,
        db: true,
        cache: true,
    },
    Service {
        name: "search",
        routes: &["/query", "/suggest"],
        median_ms: 50.0,
        db: false,
        cache: true,
    },
    Service {
        name: "auth",
        routes: &["/login", "/token/refresh", "/healthz"],
        median_ms: 10.0,
        db: true,
        cache: true,
    },
];
const REGIONS: &[&str] = &["us-east-1", "us-west-2", "eu-west-1"];
const DNS: &[&str] = &["route53", "route53", "dyn", "cloudflare", "dyn"];
const PLANS: &[&str] = &["free", "free", "free", "pro", "pro", "enterprise"];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const VERSIONS: &[&str] = &["1.14.2", "1.14.3", "1.15.0"];
const TAGS: &[&str] = &["canary", "beta", "internal", "mobile", "web"];

/// The deterministic event stream: an iterator of [`GenEvent`].
#[derive(Debug, Clone)]
pub struct Generator {
    cfg: GenConfig,
    rng: Rng,
    count: u64,
    index: u64,
}

impl Generator {
    /// `count` events spread evenly over the configured span.
    pub fn new(cfg: GenConfig, count: u64) -> Generator {
        Generator {
            rng: Rng::new(cfg.seed),
            cfg,
            count,
            index: 0,
        }
    }

    /// Whether an event time falls in the incident window.
    pub fn in_incident(&self, time_us: i64) -> bool {
        let rel = (time_us - self.cfg.start_us) as f64 / self.cfg.span_us.max(1) as f64;
        self.cfg.incident && (0.60..0.75).contains(&rel)
    }

    fn event(&mut self, i: u64) -> GenEvent {
        let r = &mut self.rng;
        let step = self.cfg.span_us as f64 / self.count.max(1) as f64;
        let jitter = (r.f64() * step) as i64;
        let time_us = self.cfg.start_us + (i as f64 * step) as i64 + jitter;
        let svc = r.pick(SERVICES);
        let route = *r.pick(svc.routes);
        let health = route == "/healthz";
        let region = *r.pick(REGIONS);
        let dns = *r.pick(DNS);
        let base_duration = r.latency(svc.median_ms);
        let mut duration = base_duration;
        let mut status = if r.chance(0.015) {
            500
        } else if r.chance(0.03) {
            404
        } else {
            200
        };
        let mut error_message: Option<&str> = (status == 500).then_some("internal error");
        let slow_dns = self.cfg.incident
            && dns == "dyn"
            && {
                let rel = (time_us - self.cfg.start_us) as f64 / self.cfg.span_us.max(1) as f64;
                (0.60..0.75).contains(&rel)
            }
            && r.chance(0.9);
        if slow_dns {
            duration += 2000.0 + r.f64() * 4000.0;
            if r.chance(0.35) {
                status = 503;
                error_message = Some("dns lookup timeout");
            }
        }
        // Keep durations non-integral so they stay floats in every encoding.
        let duration_ms = (duration * 1000.0).round() / 1000.0 + 0.0005;
        let trace_id = format!("{:016x}{:016x}", r.next_u64(), r.next_u64());
        let span_id = format!("{:016x}", r.next_u64());
        let user = r.below(50_000);
        let mut data = json!({
            "service.name": svc.name,
            "name": format!("{} {}", r.pick(METHODS), route),
            "duration_ms": duration_ms,
            "http": {
                "method": *r.pick(METHODS),
                "route": route,
                "status_code": status,
                "request": { "bytes": r.below(20_000) as i64, "content_type": "application/json" },
                "response": { "bytes": r.below(200_000) as i64 },
            },
            "trace": { "trace_id": trace_id, "span_id": span_id },
            "user.id": format!("u{user:05}"),
            "user.plan": *r.pick(PLANS),
            "request.id": format!("{:016x}", r.next_u64()),
            "host.name": format!("{}-{}", svc.name, r.below(12)),
            "cloud.region": region,
            "cloud.availability_zone": format!("{region}{}", ["a", "b", "c"][r.below(3) as usize]),
            "dns.provider": dns,
            "service.version": *r.pick(VERSIONS),
            "build_id": 4200 + r.below(5) as i64,
            "error": status >= 500,
            "client.ip": format!("10.{}.{}.{}", r.below(256), r.below(256), r.below(256)),
            "k8s": { "pod": { "name": format!("{}-{:05x}", svc.name, r.below(1 << 20)) }, "namespace": "prod" },
        });
        let obj = data.as_object_mut().expect("object");
        if let Some(m) = error_message {
            obj.insert("error.message".into(), json!(m));
        }
        if r.chance(0.3) {
            obj.insert("trace.parent_id".into(), json!(format!("{:016x}", r.next_u64())));
        }
        if svc.db {
            obj.insert("db.system".into(), json!("postgresql"));
            obj.insert("db.rows".into(), json!(r.below(500) as i64));
            obj.insert(
                "db.duration_ms".into(),
                json!((base_duration * 0.4 * 1000.0).round() / 1000.0 + 0.0005),
            );
        }
        if svc.cache {
            obj.insert("cache.hit".into(), json!(r.chance(0.8)));
        }
        if svc.name == "payments" {
            obj.insert("payment.amount_cents".into(), json!(100 + r.below(100_000) as i64));
            obj.insert("payment.currency".into(), json!(*r.pick(&["USD", "EUR", "GBP"])));
        }
        if r.chance(0.2) {
            let n = 1 + r.below(3) as usize;
            let tags: Vec<&str> = (0..n).map(|_| *r.pick(TAGS)).collect();
            obj.insert("tags".into(), json!(tags));
        }
        GenEvent {
            time_us,
            sample_rate: if health { 10 } else { 1 },
            data,
        }
    }
}

impl Iterator for Generator {
    type Item = GenEvent;
    fn next(&mut self) -> Option<GenEvent> {
        if self.index >= self.count {
            return None;
        }
        let e = self.event(self.index);
        self.index += 1;
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GenConfig {
        GenConfig {
            seed: 7,
            start_us: 1_700_000_000_000_000,
            span_us: 3_600_000_000,
            incident: true,
        }
    }

    #[test]
    fn deterministic_and_wide() {
        let a: Vec<_> = Generator::new(cfg(), 500).collect();
        let b: Vec<_> = Generator::new(cfg(), 500).collect();
        assert_eq!(a, b);
        let max_fields = a.iter().map(|e| e.data.as_object().unwrap().len()).max().unwrap();
        assert!(max_fields >= 20, "{max_fields}");
        assert!(a.windows(2).all(|w| w[0].time_us <= w[1].time_us + 3_600_000_000 / 500));
    }

    #[test]
    fn incident_is_dominated_by_dyn() {
        let g = Generator::new(cfg(), 20_000);
        let probe = g.clone();
        let slow: Vec<_> = g.filter(|e| e.data["duration_ms"].as_f64().unwrap() > 2000.0).collect();
        assert!(slow.len() > 500, "{}", slow.len());
        let dyn_share = slow.iter().filter(|e| e.data["dns.provider"] == "dyn").count() as f64 / slow.len() as f64;
        assert!(dyn_share > 0.9, "{dyn_share}");
        assert!(
            slow.iter()
                .all(|e| probe.in_incident(e.time_us) || e.data["dns.provider"] != "dyn")
        );
    }
}
