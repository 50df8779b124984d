//! `orderflow dead-letters list|redrive|discard`: the operators' dead letters from the command
//! line, on the topic the engine settings name (the same port as `/api/dead-letters`).
//!
//! The in-process topic (`memory://`) lives inside `orderflow serve`: its dead letters are
//! listed from the data directory's kept file, and re-driven or discarded through the running
//! server's API or operator page, which own its queues.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use infra::bus::{DeadLetter, DeadLetterFilter, EventBus};
use serde_json::json;

use crate::api::dead_letters::DeadLetterView;
use crate::config::Settings;
use crate::system::{KEPT_FILE, SUBSCRIPTIONS, open_bus};

/// What to do with the dead letters a filter selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    List,
    Redrive,
    /// With the reason, which is logged.
    Discard(String),
}

/// Acts on the topic `settings` name and prints what was acted on, as a table or JSON.
pub async fn run(
    settings: &Settings,
    filter: &DeadLetterFilter,
    action: Action,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(subscription) = &filter.subscription
        && !SUBSCRIPTIONS.contains(&subscription.as_str())
    {
        bail!("no subscription named {subscription}: use order-processor, projector or notifier");
    }
    let letters = if settings.bus.starts_with("memory:") {
        embedded(settings, filter, &action)?
    } else {
        let bus = open_bus(settings).await?;
        act(bus.as_ref(), filter, &action).await?
    };
    let verb = match action {
        Action::List => "listed",
        Action::Redrive => "re-driven",
        Action::Discard(_) => "discarded",
    };
    if json {
        let count = letters.len();
        let items: Vec<DeadLetterView> = letters.into_iter().map(Into::into).collect();
        println!(
            "{:#}",
            json!({ "action": verb, "count": count, "items": items })
        );
    } else {
        print!("{}", table(&letters));
        println!(
            "{} dead letter{} {verb}",
            letters.len(),
            plural(letters.len())
        );
    }
    Ok(())
}

async fn act(
    bus: &dyn EventBus,
    filter: &DeadLetterFilter,
    action: &Action,
) -> anyhow::Result<Vec<DeadLetter>> {
    let letters = match action {
        Action::List => bus
            .dead_letters()
            .await
            .map(|all| all.into_iter().filter(|d| filter.matches(d)).collect()),
        Action::Redrive => bus.redrive(filter).await,
        Action::Discard(reason) => bus.discard(filter, &format!("{reason} (by the CLI)")).await,
    };
    letters.context("the topic")
}

/// The in-process topic's dead letters, from the kept file of `orderflow serve`.
fn embedded(
    settings: &Settings,
    filter: &DeadLetterFilter,
    action: &Action,
) -> anyhow::Result<Vec<DeadLetter>> {
    if *action != Action::List {
        bail!(
            "the in-process topic (memory://) lives inside `orderflow serve`: re-drive or discard \
             its dead letters through that server (POST /api/dead-letters/redrive or /discard, or \
             the operator page), or point --bus at the shared topic"
        );
    }
    let path = settings.data_dir.join(KEPT_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let (_, kept) = infra::kept::KeptFile::open(&path).map_err(anyhow::Error::msg)?;
    Ok(kept
        .dead_letters
        .into_iter()
        .filter(|d| filter.matches(d))
        .collect())
}

/// One line per dead letter: subscription, event, when, attempts and the reason's first line.
pub fn table(letters: &[DeadLetter]) -> String {
    let mut out = String::new();
    if letters.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<16}  {:<36}  {:<18}  {:<19}  {:>8}  reason",
        "subscription", "event id", "event", "dead at (UTC)", "attempts"
    );
    for letter in letters {
        let at = letter.dead_at.map_or("-".to_owned(), |at| {
            at.format("%Y-%m-%d %H:%M:%S").to_string()
        });
        let reason = letter.reason.lines().next().unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<16}  {:<36}  {:<18}  {:<19}  {:>8}  {}",
            letter.subscription,
            letter.event.event_id,
            letter.event.event_type,
            at,
            letter.attempts,
            clip(reason, 120),
        );
    }
    out
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut clipped: String = text.chars().take(max - 1).collect();
        clipped.push('…');
        clipped
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
