//! Rebuilding the read models from the whole event log without readers ever seeing a half-built
//! view (ADR 06).
//!
//! 1. Claim a new generation number (compare-on-version on [`REPLAYS_KEY`], so two replays
//!    never build the same one).
//! 2. Fold the log from its start into that generation, beside the current one, which readers
//!    and the live projector go on using: in memory, a page's changed views written in one
//!    pipelined batch ([`Projector::rebuild`]).
//! 3. Point [`GENERATION_KEY`] at the new generation, compare-on-version from the one read in
//!    step 1 (a replay that finished meanwhile wins; this one then deletes its own).
//! 4. For a grace period longer than the processes' refresh interval, keep catching the new
//!    generation up from the log: a live projector that has not yet noticed the switch writes
//!    into the old generation, and the log still has those events, so none is lost.
//! 5. Delete the old generation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use commands::store::EventStore;

use crate::projector::{
    GENERATION_KEY, ProjectionError, Projector, current_generation, delete_generation,
};
use crate::view_store::{Doc, ViewStore};

/// The document whose version is the newest generation a replay started.
pub const REPLAYS_KEY: &str = "projections:replays";

/// Longer than the refresh interval of every process that reads views (`services::system`
/// refreshes each second), so every reader follows the switch before the old views go.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub previous: u64,
    pub generation: u64,
    /// Events folded into the new generation before the switch.
    pub events: u64,
    /// Events that arrived during the grace period, folded in after the switch.
    pub caught_up: u64,
    pub built_in: Duration,
    /// Documents and indexes of the old generation deleted.
    pub deleted: u64,
}

/// Rebuilds every projection (order views, customers' and all orders' lists, the catalog)
/// from position 0 of the log into a fresh generation and switches readers to it.
/// `progress` hears how many events each page folded.
pub async fn replay(
    store: Arc<dyn EventStore>,
    views: Arc<dyn ViewStore>,
    grace: Duration,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Replayed, ProjectionError> {
    let previous = current_generation(views.as_ref()).await?;
    let generation = claim_generation(views.as_ref(), previous).await?;
    tracing::info!(
        previous,
        generation,
        "replay: building a new generation of the views"
    );
    let builder = Projector::pinned(store, views.clone(), generation);
    let started = Instant::now();

    let built = builder.rebuild(progress).await;
    let events = match built {
        Ok(events) => events,
        Err(error) => {
            let _ = delete_generation(views.as_ref(), generation).await;
            return Err(error);
        }
    };
    let built_in = started.elapsed();
    let switch = Doc {
        version: generation,
        body: "{}".into(),
    };
    if !views.put(GENERATION_KEY, previous, switch).await? {
        delete_generation(views.as_ref(), generation).await?;
        return Err(ProjectionError::Contention(format!(
            "{GENERATION_KEY}: another replay switched the views while this one was building"
        )));
    }
    tracing::info!(generation, events, ?built_in, "replay: readers switched");

    let caught_up = follow(&builder, grace).await?;
    let deleted = delete_generation(views.as_ref(), previous).await?;
    Ok(Replayed {
        previous,
        generation,
        events,
        caught_up,
        built_in,
        deleted,
    })
}

/// A generation number no replay has used: one above both the current generation and the
/// newest one any replay started.
async fn claim_generation(views: &dyn ViewStore, current: u64) -> Result<u64, ProjectionError> {
    let started = views.get(REPLAYS_KEY).await?.map_or(0, |doc| doc.version);
    let generation = started.max(current) + 1;
    let claim = Doc {
        version: generation,
        body: "{}".into(),
    };
    if views.put(REPLAYS_KEY, started, claim).await? {
        Ok(generation)
    } else {
        Err(ProjectionError::Contention(format!(
            "{REPLAYS_KEY}: another replay started at the same moment"
        )))
    }
}

/// Catches the new generation up from the log until `grace` has passed; answers how many
/// events that folded in.
async fn follow(builder: &Projector, grace: Duration) -> Result<u64, ProjectionError> {
    let deadline = Instant::now() + grace;
    let mut folded = 0;
    loop {
        folded += builder.catch_up_with(&mut |_| {}).await?.1;
        if Instant::now() >= deadline {
            return Ok(folded);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
