//! Counters and latency histograms the process keeps for `/metrics` (Prometheus text format).
//! Gauges that the engines can answer (log head, relay checkpoint) are read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    /// `(name, labels)` → value.
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    histograms: Mutex<BTreeMap<(&'static str, String), Histogram>>,
}

impl Metrics {
    pub fn incr(&self, name: &'static str, labels: String) {
        if let Ok(mut counters) = self.counters.lock() {
            *counters.entry((name, labels)).or_default() += 1;
        }
    }

    pub fn observe(&self, name: &'static str, labels: String, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Ok(mut histograms) = self.histograms.lock() {
            let histogram = histograms.entry((name, labels)).or_default();
            for (count, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
                if seconds <= bound {
                    *count += 1;
                }
            }
            histogram.sum += seconds;
            histogram.count += 1;
        }
    }

    /// Appends every counter and histogram, with TYPE lines, to `out`.
    pub fn render(&self, out: &mut String) {
        if let Ok(counters) = self.counters.lock() {
            let mut last = "";
            for ((name, labels), value) in counters.iter() {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
        if let Ok(histograms) = self.histograms.lock() {
            let mut last = "";
            for ((name, labels), h) in histograms.iter() {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    last = name;
                }
                for (count, bound) in h.counts.iter().zip(BUCKETS) {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
                }
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
            }
        }
    }
}

/// Appends one gauge with its HELP and TYPE lines.
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}
