//! `orderflow replay`: rebuilds the read models in the configured cache from the whole log
//! (`projections::replay`), with progress, while the system keeps running.

use anyhow::{Context, bail};
use eventlog::LogCursor;
use projections::Projection;
use projections::replay::{DEFAULT_GRACE, replay};

use crate::config::{Settings, redact};
use crate::progress::Progress;
use crate::system::{open_cache, open_store};

/// Runs a replay of `projections` on the engines the settings name and prints what it did.
pub async fn run(settings: &Settings, projections: &[Projection]) -> anyhow::Result<()> {
    if settings.cache.starts_with("memory:") {
        bail!(
            "replay rebuilds a shared cache: give --cache redis://... (an embedded server keeps \
             its views in its own memory and rebuilds them from the log at every start)"
        );
    }
    let store = open_store(settings).await?;
    let views = open_cache(settings).await?;
    let total = store.lag(&LogCursor::start()).await.unwrap_or(None);
    let mut progress = Progress::new("replay", total);
    let replayed = replay(store, views, projections, DEFAULT_GRACE, &mut |n| {
        progress.advance(n)
    })
    .await
    .with_context(|| format!("replaying into {}", redact(&settings.cache)))?;
    progress.finish();
    let seconds = replayed.built_in.as_secs_f64();
    let switched: Vec<String> = replayed
        .previous
        .iter()
        .map(|(projection, from)| format!("{projection} from generation {from}"))
        .collect();
    eprintln!(
        "replayed {} events into generation {} in {seconds:.1} s ({:.0} events/s); readers \
         switched ({}), {} events folded in during the switch, {} old documents and indexes \
         deleted",
        replayed.events,
        replayed.generation,
        replayed.events as f64 / seconds.max(1e-9),
        switched.join(", "),
        replayed.caught_up,
        replayed.deleted,
    );
    Ok(())
}
