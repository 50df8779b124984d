//! Rebuilding read models from the whole event log without readers ever seeing a half-built
//! view (ADR 06).
//!
//! 1. Claim a new generation number (compare-on-version on [`REPLAYS_KEY`], so two replays
//!    never build the same one).
//! 2. Fold the log from its start into that generation of the chosen projections, beside the
//!    current ones, which readers and the live projector go on using: in memory, a page's
//!    changed views written in one pipelined batch ([`Projector::rebuild`]).
//! 3. Point each chosen projection's generation document at the new generation,
//!    compare-on-version from the one read in step 1 (a replay that finished meanwhile wins;
//!    this one then deletes its own). Each projection switches at once; projections not
//!    chosen are not touched.
//! 4. For a grace period longer than the processes' refresh interval, keep catching the new
//!    generation up from the log: a live projector that has not yet noticed the switch writes
//!    into the old generation, and the log still has those events, so none is lost.
//! 5. Delete the old generations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use eventlog::EventStore;

use crate::projection::{Projection, current_generation, delete_generation};
use crate::projector::{ProjectionError, Projector};
use crate::view_store::{Doc, ViewStore};

/// The document whose version is the newest generation a replay started.
pub const REPLAYS_KEY: &str = "projections:replays";

/// Longer than the refresh interval of every process that reads views (`services::system`
/// refreshes each second), so every reader follows the switch before the old views go.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The projections rebuilt, each with the generation readers used before.
    pub previous: Vec<(Projection, u64)>,
    pub generation: u64,
    /// Events folded into the new generation before the switch.
    pub events: u64,
    /// Events that arrived during the grace period, folded in after the switch (counted once
    /// per projection).
    pub caught_up: u64,
    pub built_in: Duration,
    /// Documents and indexes of the old generations deleted.
    pub deleted: u64,
}

/// Rebuilds `projections` from position 0 of the log into a fresh generation and switches
/// readers to it (none named: all of them). `progress` hears how many events each page folded.
pub async fn replay(
    store: Arc<dyn EventStore>,
    views: Arc<dyn ViewStore>,
    projections: &[Projection],
    grace: Duration,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Replayed, ProjectionError> {
    let projections = match projections {
        [] => &Projection::ALL[..],
        chosen => chosen,
    };
    let mut previous = Vec::with_capacity(projections.len());
    for &projection in projections {
        previous.push((
            projection,
            current_generation(views.as_ref(), projection).await?,
        ));
    }
    let newest = previous.iter().map(|(_, g)| *g).max().unwrap_or(0);
    let generation = claim_generation(views.as_ref(), newest).await?;
    let names: Vec<&str> = projections.iter().map(|p| p.as_str()).collect();
    tracing::info!(
        projections = %names.join(","),
        generation,
        "replay: building a new generation of the views"
    );
    let builder = Projector::pinned(store, views.clone(), generation, projections);
    let started = Instant::now();

    let events = match builder.rebuild(progress).await {
        Ok(events) => events,
        Err(error) => {
            for &projection in projections {
                let _ = delete_generation(views.as_ref(), projection, generation).await;
            }
            return Err(error);
        }
    };
    let built_in = started.elapsed();
    let mut lost = Vec::new();
    for &(projection, from) in &previous {
        let switch = Doc {
            version: generation,
            body: "{}".into(),
        };
        if !views
            .put(&projection.generation_key(), from, switch)
            .await?
        {
            delete_generation(views.as_ref(), projection, generation).await?;
            lost.push(projection.as_str());
        }
    }
    tracing::info!(generation, events, ?built_in, "replay: readers switched");

    let caught_up = follow(&builder, grace).await?;
    let mut deleted = 0;
    for &(projection, from) in &previous {
        if !lost.contains(&projection.as_str()) {
            deleted += delete_generation(views.as_ref(), projection, from).await?;
        }
    }
    if !lost.is_empty() {
        return Err(ProjectionError::Contention(format!(
            "another replay switched {} while this one was building",
            lost.join(", ")
        )));
    }
    Ok(Replayed {
        previous,
        generation,
        events,
        caught_up,
        built_in,
        deleted,
    })
}

/// A generation number no replay has used: one above both the newest current generation and
/// the newest one any replay started.
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
        folded += builder.catch_up_with(&mut |_| {}).await?;
        if Instant::now() >= deadline {
            return Ok(folded);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
