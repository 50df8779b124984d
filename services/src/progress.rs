//! Progress of long work over the event log (`export`, `replay`): a bar with events/s and ETA
//! on a terminal, a plain line every few seconds otherwise (CI logs, pipes), both on standard
//! error so standard output stays data.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    what: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// `total` when the store can count the events ahead (SQL stores), for a bar with an ETA.
    pub fn new(what: &'static str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match total {
                Some(total) => ProgressBar::with_draw_target(
                    Some(total),
                    ProgressDrawTarget::stderr_with_hz(4),
                ),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4)),
            };
            let template = match total {
                Some(_) => "{msg} [{bar:30}] {human_pos}/{human_len} events, {per_sec}, ETA {eta}",
                None => "{msg} {spinner} {human_pos} events, {per_sec}",
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        let now = Instant::now();
        Self {
            what,
            total,
            done: 0,
            started: now,
            last_line: now,
            bar,
        }
    }

    pub fn advance(&mut self, events: u64) {
        self.done += events;
        match &self.bar {
            Some(bar) => bar.inc(events),
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Clears the bar; the caller prints the summary.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn line(&self) -> String {
        let rate = self.rate();
        match self.total {
            Some(total) if total > 0 && rate > 0.0 => {
                let left = total.saturating_sub(self.done) as f64 / rate;
                format!(
                    "{}: {}/{} events ({:.0}%), {:.0} events/s, ETA {:.0} s",
                    self.what,
                    self.done,
                    total,
                    100.0 * self.done as f64 / total as f64,
                    rate,
                    left
                )
            }
            _ => format!("{}: {} events, {:.0} events/s", self.what, self.done, rate),
        }
    }
}
