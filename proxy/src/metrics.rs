//! Process-wide counters and their Prometheus text rendering for
//! `/metrics`. Everything is a relaxed atomic: the hot path pays one
//! `fetch_add` per counter and never takes a lock. This module knows metric
//! names and label sets; it does not decide when something happened.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::limits::Category;

/// Upper bounds (seconds) of the request duration histogram.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Upper bounds (seconds) of the slot start histogram: a cold start takes
/// tens of milliseconds, `start_timeout` is at most a minute.
const START_BUCKETS: [f64; 10] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// A Prometheus histogram over the upper bounds its owner passes in.
struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, bounds: &[f64; N], took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(took.as_micros() as u64, Relaxed);
    }

    fn render(&self, w: &mut String, bounds: &[f64; N], name: &str, help: &str) {
        header(w, name, "histogram", help);
        let mut cumulative = 0;
        for (i, b) in bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(w, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(w, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(w, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(w, "{name}_count {count}");
    }
}

/// The access log's `error` codes that are an upstream's failure (the
/// slot's or slotctl's), counted in `slotgate_upstream_errors_total`.
pub const UPSTREAM_ERRORS: [&str; 6] = [
    "supervisor_unavailable",
    "start_failed",
    "start_timeout",
    "slot_unreachable",
    "slot_refused",
    "proxy_error",
];

/// Labels for requests by route.
pub const ROUTES: [&str; 7] = [
    "health",
    "metrics",
    "landing",
    "slot_redirect",
    "slot_status",
    "slot",
    "rejected",
];

#[derive(Default)]
pub struct Metrics {
    /// [route][status class 1..=5]
    requests: [[AtomicU64; 5]; ROUTES.len()],
    durations: Histogram<{ BUCKETS.len() }>,
    /// Successful on-demand slot starts, by how long they took.
    start_durations: Histogram<{ START_BUCKETS.len() }>,
    pub ws_open: AtomicI64,
    pub ws_sessions: AtomicU64,
    ws_bytes_in: AtomicU64,
    ws_bytes_out: AtomicU64,
    rate_limited: [[AtomicU64; 3]; Category::ALL.len()],
    slot_starts_ok: AtomicU64,
    slot_starts_failed: AtomicU64,
    pub upstream_connect_failures: AtomicU64,
    /// By [`UPSTREAM_ERRORS`].
    upstream_errors: [AtomicU64; UPSTREAM_ERRORS.len()],
    pub access_log_lines: AtomicU64,
    pub access_log_dropped: AtomicU64,
    pub access_log_write_errors: AtomicU64,
    pub access_log_rotations: AtomicU64,
    pub activity_reports_failed: AtomicU64,
    pub recordings_started: AtomicU64,
    pub recording_events_dropped: AtomicU64,
    pub recording_write_errors: AtomicU64,
    pub recordings_truncated: AtomicU64,
    pub recordings_deleted: AtomicU64,
    pub recording_redactions: AtomicU64,
    pub tls_reloads_ok: AtomicU64,
    pub tls_reloads_failed: AtomicU64,
    pub connections_open: AtomicI64,
    /// By [`Refusal`].
    connections_refused: [AtomicU64; 2],
    pub header_timeouts: AtomicU64,
    pub headers_too_large: AtomicU64,
}

/// Why a connection was closed before its first request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many new connections from one address in the window.
    PerIpRate,
    /// Too many connections open at once from one address.
    PerIpOpen,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerIpRate => "per_ip_rate",
            Refusal::PerIpOpen => "per_ip_open",
        }
    }
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16, took: Duration, websocket: bool) {
        let r = ROUTES
            .iter()
            .position(|x| *x == route)
            .unwrap_or(ROUTES.len() - 1);
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests[r][class].fetch_add(1, Relaxed);
        // A WebSocket's duration is its session length, not a latency.
        if websocket {
            return;
        }
        self.durations.observe(&BUCKETS, took);
    }

    /// A request ended with `error`: counted if it is an upstream's.
    pub fn request_error(&self, error: &str) {
        if let Some(i) = UPSTREAM_ERRORS.iter().position(|e| *e == error) {
            self.upstream_errors[i].fetch_add(1, Relaxed);
        }
    }

    /// An on-demand slot start finished.
    pub fn slot_started(&self, ok: bool, took: Duration) {
        if ok {
            self.slot_starts_ok.fetch_add(1, Relaxed);
            self.start_durations.observe(&START_BUCKETS, took);
        } else {
            self.slot_starts_failed.fetch_add(1, Relaxed);
        }
    }

    pub fn ws_closed(&self, bytes_in: u64, bytes_out: u64) {
        self.ws_bytes_in.fetch_add(bytes_in, Relaxed);
        self.ws_bytes_out.fetch_add(bytes_out, Relaxed);
    }

    pub fn connection_refused(&self, why: Refusal) {
        self.connections_refused[why as usize].fetch_add(1, Relaxed);
    }

    pub fn rate_limited(&self, category: &str, scope: &str) {
        let c = Category::ALL
            .iter()
            .position(|c| c.as_str() == category)
            .unwrap_or(0);
        let s = match scope {
            "ip" => 0,
            "user" => 1,
            _ => 2,
        };
        self.rate_limited[c][s].fetch_add(1, Relaxed);
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let w = &mut out;
        header(
            w,
            "slotgate_requests_total",
            "counter",
            "HTTP requests by route and status class.",
        );
        for (r, route) in ROUTES.iter().enumerate() {
            for class in 0..5 {
                let n = self.requests[r][class].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        w,
                        "slotgate_requests_total{{route=\"{route}\",class=\"{}xx\"}} {n}",
                        class + 1
                    );
                }
            }
        }
        self.durations.render(
            w,
            &BUCKETS,
            "slotgate_request_duration_seconds",
            "Time from request start to the end of the response (WebSocket sessions excluded).",
        );
        self.start_durations.render(
            w,
            &START_BUCKETS,
            "slotgate_slot_start_duration_seconds",
            "Time an on-demand slot start took, from asking slotctl until the slot was online (successful starts).",
        );

        gauge(
            w,
            "slotgate_websockets_open",
            "Open WebSocket sessions.",
            self.ws_open.load(Relaxed),
        );
        counter(
            w,
            "slotgate_websocket_sessions_total",
            "WebSocket sessions closed.",
            self.ws_sessions.load(Relaxed),
        );
        header(
            w,
            "slotgate_websocket_bytes_total",
            "counter",
            "Bytes relayed by closed WebSocket sessions.",
        );
        let _ = writeln!(
            w,
            "slotgate_websocket_bytes_total{{direction=\"in\"}} {}",
            self.ws_bytes_in.load(Relaxed)
        );
        let _ = writeln!(
            w,
            "slotgate_websocket_bytes_total{{direction=\"out\"}} {}",
            self.ws_bytes_out.load(Relaxed)
        );

        header(
            w,
            "slotgate_rate_limited_total",
            "counter",
            "Requests refused with 429, by limit.",
        );
        for (c, cat) in Category::ALL.iter().enumerate() {
            for (s, scope) in ["ip", "user", "concurrent"].iter().enumerate() {
                let n = self.rate_limited[c][s].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        w,
                        "slotgate_rate_limited_total{{category=\"{}\",scope=\"{scope}\"}} {n}",
                        cat.as_str()
                    );
                }
            }
        }
        header(
            w,
            "slotgate_slot_starts_total",
            "counter",
            "On-demand slot starts, by result.",
        );
        let _ = writeln!(
            w,
            "slotgate_slot_starts_total{{result=\"ok\"}} {}",
            self.slot_starts_ok.load(Relaxed)
        );
        let _ = writeln!(
            w,
            "slotgate_slot_starts_total{{result=\"failed\"}} {}",
            self.slot_starts_failed.load(Relaxed)
        );
        counter(
            w,
            "slotgate_upstream_connect_failures_total",
            "Failed connections to a slot socket.",
            self.upstream_connect_failures.load(Relaxed),
        );
        header(
            w,
            "slotgate_upstream_errors_total",
            "counter",
            "Requests that failed on the slot's or slotctl's side, by the access log's error code.",
        );
        for (i, e) in UPSTREAM_ERRORS.iter().enumerate() {
            let _ = writeln!(
                w,
                "slotgate_upstream_errors_total{{error=\"{e}\"}} {}",
                self.upstream_errors[i].load(Relaxed)
            );
        }
        counter(
            w,
            "slotgate_access_log_lines_total",
            "Access log lines written.",
            self.access_log_lines.load(Relaxed),
        );
        counter(
            w,
            "slotgate_access_log_dropped_total",
            "Access log lines dropped because the writer's queue was full.",
            self.access_log_dropped.load(Relaxed),
        );
        counter(
            w,
            "slotgate_access_log_write_errors_total",
            "Access log lines lost to write errors.",
            self.access_log_write_errors.load(Relaxed),
        );
        counter(
            w,
            "slotgate_access_log_rotations_total",
            "Size-based access log rotations.",
            self.access_log_rotations.load(Relaxed),
        );
        counter(
            w,
            "slotgate_recordings_total",
            "Session recordings started.",
            self.recordings_started.load(Relaxed),
        );
        counter(
            w,
            "slotgate_recording_events_dropped_total",
            "Recording events dropped because the writer's queue was full.",
            self.recording_events_dropped.load(Relaxed),
        );
        counter(
            w,
            "slotgate_recording_write_errors_total",
            "Recording files that could not be created or written.",
            self.recording_write_errors.load(Relaxed),
        );
        counter(
            w,
            "slotgate_recordings_truncated_total",
            "Recordings stopped at max_size.",
            self.recordings_truncated.load(Relaxed),
        );
        counter(
            w,
            "slotgate_recordings_deleted_total",
            "Recordings deleted by retention or the max_total cap.",
            self.recordings_deleted.load(Relaxed),
        );
        counter(
            w,
            "slotgate_recording_redactions_total",
            "Secrets replaced in recordings.",
            self.recording_redactions.load(Relaxed),
        );
        counter(
            w,
            "slotgate_activity_reports_failed_total",
            "Activity reports slotctl did not accept.",
            self.activity_reports_failed.load(Relaxed),
        );
        header(
            w,
            "slotgate_tls_reloads_total",
            "counter",
            "Certificate reloads, by result.",
        );
        let _ = writeln!(
            w,
            "slotgate_tls_reloads_total{{result=\"ok\"}} {}",
            self.tls_reloads_ok.load(Relaxed)
        );
        let _ = writeln!(
            w,
            "slotgate_tls_reloads_total{{result=\"failed\"}} {}",
            self.tls_reloads_failed.load(Relaxed)
        );
        gauge(
            w,
            "slotgate_connections_open",
            "Client connections open (after the TLS handshake).",
            self.connections_open.load(Relaxed),
        );
        header(
            w,
            "slotgate_connections_refused_total",
            "counter",
            "Client connections closed before any request, by per-address limit.",
        );
        for why in [Refusal::PerIpRate, Refusal::PerIpOpen] {
            let _ = writeln!(
                w,
                "slotgate_connections_refused_total{{reason=\"{}\"}} {}",
                why.as_str(),
                self.connections_refused[why as usize].load(Relaxed)
            );
        }
        counter(
            w,
            "slotgate_header_timeouts_total",
            "Connections closed because a request's headers did not arrive within header_timeout.",
            self.header_timeouts.load(Relaxed),
        );
        counter(
            w,
            "slotgate_headers_too_large_total",
            "Connections closed because a request's headers passed max_header_size.",
            self.headers_too_large.load(Relaxed),
        );
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(w: &mut String, name: &str, help: &str, v: u64) {
    header(w, name, "counter", help);
    let _ = writeln!(w, "{name} {v}");
}

fn gauge(w: &mut String, name: &str, help: &str, v: i64) {
    header(w, name, "gauge", help);
    let _ = writeln!(w, "{name} {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histogram() {
        let m = Metrics::default();
        m.request("slot", 200, Duration::from_micros(700), false);
        m.request("slot", 101, Duration::from_secs(30), true);
        m.request("rejected", 400, Duration::from_micros(100), false);
        m.rate_limited("ws_connect", "ip");
        m.access_log_dropped.fetch_add(3, Relaxed);
        m.slot_started(true, Duration::from_millis(40));
        m.slot_started(true, Duration::from_secs(3));
        m.slot_started(false, Duration::from_secs(60));
        m.request_error("proxy_error");
        m.request_error("bad_path");
        let text = m.render();
        for want in [
            "slotgate_requests_total{route=\"slot\",class=\"2xx\"} 1",
            "slotgate_requests_total{route=\"slot\",class=\"1xx\"} 1",
            "slotgate_requests_total{route=\"rejected\",class=\"4xx\"} 1",
            "slotgate_request_duration_seconds_bucket{le=\"0.0005\"} 1",
            "slotgate_request_duration_seconds_bucket{le=\"0.001\"} 2",
            "slotgate_request_duration_seconds_count 2",
            "slotgate_rate_limited_total{category=\"ws_connect\",scope=\"ip\"} 1",
            "slotgate_access_log_dropped_total 3",
            "slotgate_slot_start_duration_seconds_bucket{le=\"0.025\"} 0",
            "slotgate_slot_start_duration_seconds_bucket{le=\"0.05\"} 1",
            "slotgate_slot_start_duration_seconds_bucket{le=\"5\"} 2",
            "slotgate_slot_start_duration_seconds_count 2",
            "slotgate_slot_start_duration_seconds_sum 3.04",
            "slotgate_slot_starts_total{result=\"failed\"} 1",
            "slotgate_upstream_errors_total{error=\"proxy_error\"} 1",
            "slotgate_upstream_errors_total{error=\"start_failed\"} 0",
            "# TYPE slotgate_websockets_open gauge",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
