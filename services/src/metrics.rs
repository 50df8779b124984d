//! Counters the process keeps for `/metrics` (Prometheus text format). Gauges that can be read
//! from the engines (log head, relay checkpoint) are read at scrape time instead.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    /// `(name, labels)` → value.
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Metrics {
    pub fn incr(&self, name: &'static str, labels: String) {
        if let Ok(mut counters) = self.counters.lock() {
            *counters.entry((name, labels)).or_default() += 1;
        }
    }

    /// Appends every counter, with its HELP and TYPE lines, to `out`.
    pub fn render(&self, out: &mut String) {
        let Ok(counters) = self.counters.lock() else {
            return;
        };
        let mut last = "";
        for ((name, labels), value) in counters.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
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
