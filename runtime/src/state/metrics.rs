//! The master's metrics, served by `GET /metrics` in the Prometheus text
//! format (`docs/operations.md` lists them): the families the services
//! record into, owned by [`Shared`] so that every service records without
//! importing another, and the gauges read from the running master at each
//! scrape (the queue, workers, the store).
//!
//! Cardinality stays bounded: labels are names from the config (builders,
//! workers, reporters, change sources) and fixed words (results); never a
//! build number, a branch or anything a client sends.
//!
//! Recording is cheap: a counter is an atomic; a build looks its counters
//! up once (a hash lookup under a read lock) and a log batch is one atomic
//! addition.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bbc_graph::BuildResult;
use prometheus_client::encoding::{
    prometheus_text, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// A counter handle: cloning it shares the count.
pub use prometheus_client::metrics::counter::Counter;

use super::queue::Queue;
use super::{now_ms, Shared};
use crate::store::{CommitTimesSnapshot, Millis};

/// Every metric's name starts with `bbc_`.
const PREFIX: &str = "bbc";

/// Request → start: from a fraction of a second (an idle master) to hours
/// (a queue waiting for a worker).
const LATENCY_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    1800.0, 3600.0, 14400.0,
];

/// Build durations: from a trivial step to a long nightly build.
const DURATION_BUCKETS: [f64; 14] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuilderLabels {
    builder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    builder: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    reporter: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    source: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

/// How a webhook delivery to a configured change source was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    /// Changes stored (201).
    Accepted,
    /// Authentic and well-formed, but nothing to store: an event the
    /// source does not turn into changes (200, 202).
    Ignored,
    /// The signature or token is missing (401) or wrong (403).
    Unauthorized,
    /// Unreadable: bad JSON, a missing header or field, too large (4xx).
    BadRequest,
    /// The master could not take it: the store failed, the source's secret
    /// is not available (5xx).
    Error,
}

impl WebhookResult {
    /// The result of an answer with this HTTP status.
    pub fn of_status(status: u16) -> WebhookResult {
        match status {
            201 => WebhookResult::Accepted,
            200..=299 => WebhookResult::Ignored,
            401 | 403 => WebhookResult::Unauthorized,
            400..=499 => WebhookResult::BadRequest,
            _ => WebhookResult::Error,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Ignored => "ignored",
            WebhookResult::Unauthorized => "unauthorized",
            WebhookResult::BadRequest => "bad_request",
            WebhookResult::Error => "error",
        }
    }
}

/// The metrics recorded as things happen. The registry holds clones of
/// the families (each is an `Arc` inside), so recording never touches it.
pub struct Metrics {
    registry: Registry,
    builds_started: Family<BuilderLabels, Counter>,
    builds_finished: Family<FinishedLabels, Counter>,
    build_duration: Histogram,
    request_start_latency: Histogram,
    log_bytes: Family<BuilderLabels, Counter>,
    reporter_deliveries: Family<DeliveryLabels, Counter>,
    webhook_deliveries: Family<WebhookLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix(PREFIX),
            builds_started: Family::default(),
            builds_finished: Family::default(),
            // Histograms are not labelled by builder: a thousand builders
            // would make tens of thousands of series.
            build_duration: Histogram::new(DURATION_BUCKETS),
            request_start_latency: Histogram::new(LATENCY_BUCKETS),
            log_bytes: Family::default(),
            reporter_deliveries: Family::default(),
            webhook_deliveries: Family::default(),
        };
        let mut r = Registry::with_prefix(PREFIX);
        r.register(
            "builds_started",
            "Builds started, by builder",
            m.builds_started.clone(),
        );
        r.register(
            "builds_finished",
            "Builds finished (their end recorded), by builder and result",
            m.builds_finished.clone(),
        );
        r.register_with_unit(
            "build_duration",
            "Duration of finished builds, start to end",
            Unit::Seconds,
            m.build_duration.clone(),
        );
        r.register_with_unit(
            "request_start_latency",
            "Time from a build request's submission to the start of the build that runs it",
            Unit::Seconds,
            m.request_start_latency.clone(),
        );
        r.register_with_unit(
            "log",
            "Step output written to the store, by builder",
            Unit::Bytes,
            m.log_bytes.clone(),
        );
        r.register(
            "reporter_deliveries",
            "Reports delivered (ok) or given up (failed), by reporter",
            m.reporter_deliveries.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook deliveries to configured change sources, by source and result",
            m.webhook_deliveries.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// A build started, running these requests, submitted at these times.
    pub fn build_started(
        &self,
        builder: &str,
        started_at: Millis,
        submitted: impl IntoIterator<Item = Millis>,
    ) {
        self.builds_started
            .get_or_create(&BuilderLabels {
                builder: builder.to_string(),
            })
            .inc();
        for at in submitted {
            self.request_start_latency
                .observe(seconds(started_at.saturating_sub(at)));
        }
    }

    /// A build's end was recorded.
    pub fn build_finished(&self, builder: &str, result: BuildResult, duration_ms: Millis) {
        self.builds_finished
            .get_or_create(&FinishedLabels {
                builder: builder.to_string(),
                result: result.name(),
            })
            .inc();
        self.build_duration.observe(seconds(duration_ms));
    }

    /// The counter of a builder's stored log bytes, looked up once by a
    /// build and added to at each batch.
    pub fn log_bytes(&self, builder: &str) -> Counter {
        self.log_bytes.get_or_create_owned(&BuilderLabels {
            builder: builder.to_string(),
        })
    }

    /// A reporter's counters of deliveries `(ok, failed)`, for a reporter
    /// that delivers from a task of its own (IRC).
    pub fn deliveries(&self, reporter: &str) -> (Counter, Counter) {
        let get = |result| {
            self.reporter_deliveries
                .get_or_create_owned(&DeliveryLabels {
                    reporter: reporter.to_string(),
                    result,
                })
        };
        (get("ok"), get("failed"))
    }

    /// One report delivered (`ok`) or given up.
    pub fn delivery(&self, reporter: &str, ok: bool) {
        self.reporter_deliveries
            .get_or_create(&DeliveryLabels {
                reporter: reporter.to_string(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    /// A webhook delivery to the configured change source `source`.
    pub fn webhook(&self, source: &str, result: WebhookResult) {
        self.webhook_deliveries
            .get_or_create(&WebhookLabels {
                source: source.to_string(),
                result: result.name(),
            })
            .inc();
    }

    /// Everything in the Prometheus text format: the recorded metrics, then
    /// the gauges of `live`.
    pub fn encode(&self, live: &Live) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_text::encode(&mut out, &self.registry)?;
        // The gauges are made for this scrape only: what they show is read
        // now, and a builder or worker gone from the config goes with it.
        let mut r = Registry::with_prefix(PREFIX);
        let requests = Family::<BuilderLabels, Gauge>::default();
        let age = Family::<BuilderLabels, Gauge<f64, AtomicU64>>::default();
        for (builder, q) in &live.queue {
            let l = BuilderLabels {
                builder: builder.clone(),
            };
            requests.get_or_create(&l).set(q.requests as i64);
            age.get_or_create(&l).set(q.oldest_age_seconds);
        }
        r.register(
            "queue_requests",
            "Pending build requests, by builder",
            requests,
        );
        r.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest pending request, by builder (0 when none is pending)",
            Unit::Seconds,
            age,
        );
        r.register(
            "builds_running",
            "Builds running or starting",
            gauge(live.running as i64),
        );
        let connected = live.workers.values().filter(|c| **c).count();
        r.register(
            "workers_connected",
            "Workers connected",
            gauge(connected as i64),
        );
        let up = Family::<WorkerLabels, Gauge>::default();
        for (worker, c) in &live.workers {
            up.get_or_create(&WorkerLabels {
                worker: worker.clone(),
            })
            .set(i64::from(*c));
        }
        r.register(
            "worker_up",
            "Whether each configured worker is connected (1) or not (0)",
            up,
        );
        r.register(
            "store_healthy",
            "Whether the store can write (1) or its last write failed (0)",
            gauge(i64::from(live.store_healthy)),
        );
        if let Some(c) = &live.commits {
            r.register_with_unit(
                "store_commit",
                "Time of the store's write transactions, from the call to the commit being durable",
                Unit::Seconds,
                CommitHistogram(c.clone()),
            );
        }
        prometheus_text::encode(&mut out, &r)?;
        Ok(out)
    }
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

fn seconds(ms: Millis) -> f64 {
    ms.max(0) as f64 / 1000.0
}

/// A builder's line in the queue gauges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueGauge {
    pub requests: u64,
    pub oldest_age_seconds: f64,
}

/// What a scrape reads from the running master besides the counters.
#[derive(Debug, Default)]
pub struct Live {
    /// Every builder of the config, and any other that still has pending
    /// requests (a removed builder's stay pending).
    pub queue: BTreeMap<String, QueueGauge>,
    pub running: u64,
    /// Every configured worker, and whether it is connected.
    pub workers: BTreeMap<String, bool>,
    pub store_healthy: bool,
    pub commits: Option<CommitTimesSnapshot>,
}

/// The queue gauges at `now`: for each of `builders` (0 and 0 when it has
/// nothing pending) and each builder with pending requests, how many are
/// pending and how long the oldest has waited.
pub fn queue_gauges<'a>(
    q: &Queue,
    builders: impl IntoIterator<Item = &'a str>,
    now: Millis,
) -> BTreeMap<String, QueueGauge> {
    let mut oldest: BTreeMap<String, (u64, Millis)> = builders
        .into_iter()
        .map(|b| (b.to_string(), (0, now)))
        .collect();
    for e in q.pending() {
        match oldest.get_mut(&e.req.builder) {
            Some((n, at)) => {
                *n += 1;
                *at = (*at).min(e.req.submitted_at);
            }
            None => {
                oldest.insert(e.req.builder.clone(), (1, e.req.submitted_at.min(now)));
            }
        }
    }
    oldest
        .into_iter()
        .map(|(b, (n, at))| {
            (
                b,
                QueueGauge {
                    requests: n,
                    oldest_age_seconds: seconds(now.saturating_sub(at)),
                },
            )
        })
        .collect()
}

/// The store's commit times, as a histogram.
#[derive(Debug)]
struct CommitHistogram(CommitTimesSnapshot);

impl EncodeMetric for CommitHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(
            self.0.sum_seconds,
            self.0.count,
            &self.0.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Shared {
    /// The metrics in the Prometheus text format, the gauges read now.
    pub async fn metrics_text(self: &Arc<Self>) -> Result<String, fmt::Error> {
        // Cheap while the store can write; a probe write while it cannot.
        let store_healthy = self.db(|s| s.health()).await.is_ok();
        let g = self.graph();
        let now = now_ms();
        let (queue, running) = match self.queue.lock() {
            Ok(q) => (
                queue_gauges(&q, g.builders.iter().map(|b| b.name.as_str()), now),
                q.running().count() as u64,
            ),
            Err(_) => (BTreeMap::new(), 0),
        };
        let mut workers: BTreeMap<String, bool> =
            g.workers.iter().map(|w| (w.name.clone(), false)).collect();
        if let Ok(conns) = self.workers.lock() {
            for (name, c) in conns.iter() {
                if !c.is_closed() {
                    // A worker removed from the config but still running a
                    // build stays connected until it ends: shown too.
                    workers.insert(name.clone(), true);
                }
            }
        }
        let live = Live {
            queue,
            running,
            workers,
            store_healthy,
            commits: self.store.commit_times().map(|c| c.snapshot()),
        };
        self.metrics.encode(&live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BuildRequest, BuildSet, CommitTimes, NewBuildSet, RequestState};

    fn request(id: u64, builder: &str, submitted_at: Millis) -> (BuildRequest, Arc<BuildSet>) {
        let set = BuildSet {
            id,
            set: NewBuildSet {
                priority: 0,
                scheduler: "s".into(),
                reason: "test".into(),
                source: Default::default(),
                sources: Vec::new(),
                changes: vec![],
                properties: Default::default(),
                parent_build: None,
                submitted_at,
            },
            result: None,
            completed_at: None,
        };
        let req = BuildRequest {
            id,
            buildset: id,
            builder: builder.into(),
            priority: 0,
            request_priority: 0,
            submitted_at,
            state: RequestState::Pending,
            build: None,
            result: None,
            completed_at: None,
            collapsed_into: None,
        };
        (req, Arc::new(set))
    }

    #[test]
    fn queue_gauges_count_and_age_the_oldest_per_builder() {
        let mut q = Queue::default();
        for (id, b, at) in [
            (1, "a", 10_000),
            (2, "a", 4_000),
            (3, "b", 9_500),
            // A builder the config no longer has: its requests still wait.
            (4, "gone", 1_000),
            // Submitted "after now" (clocks disagree): age 0, not negative.
            (5, "c", 12_000),
        ] {
            let (r, s) = request(id, b, at);
            q.add(r, s);
        }
        let g = queue_gauges(&q, ["a", "b", "c", "idle"], 11_000);
        let line = |b: &str| g.get(b).copied();
        let q = |requests, oldest_age_seconds| {
            Some(QueueGauge {
                requests,
                oldest_age_seconds,
            })
        };
        assert_eq!(line("a"), q(2, 7.0));
        assert_eq!(line("b"), q(1, 1.5));
        assert_eq!(line("c"), q(1, 0.0));
        assert_eq!(line("idle"), q(0, 0.0));
        assert_eq!(line("gone"), q(1, 10.0));
        assert_eq!(g.len(), 5);
    }

    /// The value of the sample `name` (with its labels as written).
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_text_has_every_family_with_its_unit_and_labels() {
        let m = Metrics::new();
        m.build_started("b1", 5_000, [4_000, 4_900]);
        m.build_finished("b1", BuildResult::Failure, 2_500);
        m.log_bytes("b1").inc_by(123);
        m.delivery("mail", true);
        m.delivery("mail", false);
        m.delivery("mail", false);
        m.webhook("gh", WebhookResult::of_status(403));
        let commits = CommitTimes::default();
        commits.observe(std::time::Duration::from_millis(3));
        let mut queue = BTreeMap::new();
        queue.insert(
            "b\"1".to_string(),
            QueueGauge {
                requests: 3,
                oldest_age_seconds: 1.5,
            },
        );
        let live = Live {
            queue,
            running: 2,
            workers: [("w1".to_string(), true), ("w2".to_string(), false)].into(),
            store_healthy: true,
            commits: Some(commits.snapshot()),
        };
        let t = m.encode(&live).unwrap_or_else(|e| panic!("{e}"));
        let has = |name: &str, v: f64| {
            assert_eq!(sample(&t, name), Some(v), "{name} in:\n{t}");
        };
        has(r#"bbc_builds_started_total{builder="b1"}"#, 1.0);
        has(
            r#"bbc_builds_finished_total{builder="b1",result="failure"}"#,
            1.0,
        );
        has("bbc_build_duration_seconds_count", 1.0);
        has("bbc_build_duration_seconds_sum", 2.5);
        has("bbc_request_start_latency_seconds_count", 2.0);
        has("bbc_request_start_latency_seconds_sum", 1.1);
        has(r#"bbc_request_start_latency_seconds_bucket{le="0.1"}"#, 1.0);
        has(r#"bbc_request_start_latency_seconds_bucket{le="1"}"#, 2.0);
        has(r#"bbc_log_bytes_total{builder="b1"}"#, 123.0);
        has(
            r#"bbc_reporter_deliveries_total{reporter="mail",result="ok"}"#,
            1.0,
        );
        has(
            r#"bbc_reporter_deliveries_total{reporter="mail",result="failed"}"#,
            2.0,
        );
        has(
            r#"bbc_webhook_deliveries_total{source="gh",result="unauthorized"}"#,
            1.0,
        );
        // Label values are escaped.
        has(r#"bbc_queue_requests{builder="b\"1"}"#, 3.0);
        has(r#"bbc_queue_oldest_age_seconds{builder="b\"1"}"#, 1.5);
        has("bbc_builds_running", 2.0);
        has("bbc_workers_connected", 1.0);
        has(r#"bbc_worker_up{worker="w1"}"#, 1.0);
        has(r#"bbc_worker_up{worker="w2"}"#, 0.0);
        has("bbc_store_healthy", 1.0);
        has(r#"bbc_store_commit_seconds_bucket{le="0.0025"}"#, 0.0);
        has(r#"bbc_store_commit_seconds_bucket{le="0.005"}"#, 1.0);
        has(r#"bbc_store_commit_seconds_bucket{le="+Inf"}"#, 1.0);
        has("bbc_store_commit_seconds_count", 1.0);
        assert!(
            t.contains("# TYPE bbc_store_commit_seconds histogram\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE bbc_builds_started_total counter\n"),
            "{t}"
        );
        assert!(t.contains("# TYPE bbc_queue_requests gauge\n"), "{t}");
    }

    #[test]
    fn webhook_results_by_status() {
        let r = |s| WebhookResult::of_status(s).name();
        assert_eq!(
            [201, 200, 202, 401, 403, 400, 404, 413, 500, 503].map(r),
            [
                "accepted",
                "ignored",
                "ignored",
                "unauthorized",
                "unauthorized",
                "bad_request",
                "bad_request",
                "bad_request",
                "error",
                "error"
            ]
        );
    }
}
