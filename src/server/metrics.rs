//! Request metrics and the Prometheus text exposition of `/metrics`.
//!
//! Per-route counters and latency histograms are atomics behind a read-mostly map: recording
//! a request takes a read lock and a few relaxed atomic adds, so metrics cost nothing that
//! shows up next to a sub-millisecond job. Job, queue and cache figures are read from their
//! owners when `/metrics` is scraped instead of being copied here.
//!
//! Every label is bounded, since anyone (without a token) can send requests: the method is one
//! of [`METHODS`] or `other`, the route a template of the route table or `unmatched`, the
//! status a class (`1xx`…`5xx`). So the series are at most methods × routes × classes, however
//! many distinct methods, paths or statuses requests carry.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Debug, Default)]
struct RouteStats {
    /// Requests by status class index: 1xx..5xx → 0..4.
    by_class: [AtomicU64; 5],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// The methods counted under their own name; any other is `other`.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The label of `method`: itself when it is one of [`METHODS`], else `other` (HTTP lets a
/// client invent any method token, of any length).
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("other")
}

/// HTTP metrics by (method label, route template).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    routes: RwLock<BTreeMap<(&'static str, String), Arc<RouteStats>>>,
    /// Audit log lines dropped (full queue or failed writes); the audit writer counts them.
    pub audit_dropped: Arc<AtomicU64>,
}

impl HttpMetrics {
    /// Counts one request. `method` is labelled by [`method_label`]; `route` must be a route
    /// template or `unmatched`, never a path a client chose; `status` counts by class.
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let key = (method_label(method), route.to_owned());
        let stats = {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            routes.get(&key).cloned()
        };
        let stats = match stats {
            Some(stats) => stats,
            None => self
                .routes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key)
                .or_default()
                .clone(),
        };
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        stats.by_class[class].fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&stats.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        stats.count.fetch_add(1, Ordering::Relaxed);
        stats
            .sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Appends the HTTP families to `out`.
    pub fn render(&self, out: &mut String) {
        family(
            out,
            "floe_audit_dropped_total",
            "counter",
            "Audit log lines dropped because the writer fell behind or the file refused them.",
            &[(
                String::new(),
                self.audit_dropped.load(Ordering::Relaxed) as f64,
            )],
        );
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP floe_http_requests_total HTTP requests by route and status class.\n");
        out.push_str("# TYPE floe_http_requests_total counter\n");
        for ((method, route), stats) in routes.iter() {
            for (index, count) in stats.by_class.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "floe_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{}xx\"}} {count}",
                        escape(route),
                        index + 1
                    );
                }
            }
        }
        out.push_str(
            "# HELP floe_http_request_duration_seconds Time from request to response head.\n",
        );
        out.push_str("# TYPE floe_http_request_duration_seconds histogram\n");
        for ((method, route), stats) in routes.iter() {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            for (bound, bucket) in BUCKETS.iter().zip(&stats.buckets) {
                let _ = writeln!(
                    out,
                    "floe_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    bucket.load(Ordering::Relaxed)
                );
            }
            let count = stats.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "floe_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "floe_http_request_duration_seconds_sum{{{labels}}} {}",
                stats.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "floe_http_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends one metric family with a single sample or labelled samples.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counts_by_class() {
        let metrics = HttpMetrics::default();
        metrics.record("GET", "/jobs/{id}", 200, Duration::from_micros(300));
        metrics.record("GET", "/jobs/{id}", 404, Duration::from_millis(3));
        // Invented methods share one label; statuses out of range count as their class's edge.
        metrics.record("BREW", "unmatched", 999, Duration::from_millis(1));
        metrics.record("PROPFIND", "unmatched", 42, Duration::from_millis(1));
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains(
            "floe_http_requests_total{method=\"other\",route=\"unmatched\",status=\"5xx\"} 1"
        ));
        assert!(out.contains(
            "floe_http_requests_total{method=\"other\",route=\"unmatched\",status=\"1xx\"} 1"
        ));
        assert!(!out.contains("BREW") && !out.contains("PROPFIND"), "{out}");
        assert_eq!(method_label("DELETE"), "DELETE");
        assert_eq!(method_label("get"), "other");
        assert!(out.contains(
            "floe_http_requests_total{method=\"GET\",route=\"/jobs/{id}\",status=\"2xx\"} 1"
        ));
        assert!(out.contains(
            "floe_http_requests_total{method=\"GET\",route=\"/jobs/{id}\",status=\"4xx\"} 1"
        ));
        assert!(out.contains("route=\"/jobs/{id}\",le=\"0.0005\"} 1\n"));
        assert!(out.contains("route=\"/jobs/{id}\",le=\"0.005\"} 2\n"));
        assert!(out.contains("route=\"/jobs/{id}\",le=\"+Inf\"} 2\n"));
        assert!(out.contains(
            "floe_http_request_duration_seconds_count{method=\"GET\",route=\"/jobs/{id}\"} 2\n"
        ));
        assert!(out.contains("floe_audit_dropped_total 0\n"));
    }
}
