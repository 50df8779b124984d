//! Replays started over HTTP (`POST /api/replays`, the analyst page): one at a time per
//! process, run in the background, with their progress in the view store (`replays:{id}`) so
//! that any web process can answer `GET /api/replays/{id}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use eventlog::{EventStore, LogCursor};
use projections::replay::{DEFAULT_GRACE, replay};
use projections::{Doc, Projection, ViewError, ViewStore};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// How often a running replay's progress is written for readers.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// A replay's progress, as `GET /api/replays/{id}` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplayStatus {
    pub replay_id: Uuid,
    /// The projections rebuilt.
    #[schema(example = json!(["analytics"]))]
    pub projections: Vec<String>,
    pub state: ReplayState,
    /// Events folded into the new generation so far.
    pub folded: u64,
    /// Events in the log when the replay started, when the store can count them.
    pub total: Option<u64>,
    pub events_per_second: f64,
    /// The generation built; set once the replay has finished.
    pub generation: Option<u64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    /// Building, switching readers, then following the log for the grace period.
    Running,
    Succeeded,
    Failed,
}

/// A replay is running in this process already.
#[derive(Debug, thiserror::Error)]
#[error("replay {0} is still running")]
pub struct AlreadyRunning(pub Uuid);

pub struct Replays {
    store: Arc<dyn EventStore>,
    views: Arc<dyn ViewStore>,
    running: Mutex<Option<Uuid>>,
    grace: Duration,
}

impl Replays {
    pub fn new(store: Arc<dyn EventStore>, views: Arc<dyn ViewStore>) -> Self {
        Self {
            store,
            views,
            running: Mutex::new(None),
            grace: DEFAULT_GRACE,
        }
    }

    /// Starts a replay of `projections` in the background; answers its first status.
    pub async fn start(
        self: &Arc<Self>,
        projections: Vec<Projection>,
    ) -> Result<Result<ReplayStatus, AlreadyRunning>, ViewError> {
        let replay_id = Uuid::now_v7();
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = *running {
                return Ok(Err(AlreadyRunning(other)));
            }
            *running = Some(replay_id);
        }
        let total = self.store.lag(&LogCursor::start()).await.unwrap_or(None);
        let status = ReplayStatus {
            replay_id,
            projections: projections.iter().map(|p| p.as_str().to_owned()).collect(),
            state: ReplayState::Running,
            folded: 0,
            total,
            events_per_second: 0.0,
            generation: None,
            started_at: Utc::now(),
            finished_at: None,
            error: None,
        };
        let report = Arc::new(Report {
            views: self.views.clone(),
            saved: Mutex::new((0, status.clone())),
        });
        if let Err(error) = report.save(|_| {}).await {
            *self.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return Err(error);
        }
        tokio::spawn(self.clone().run(projections, report));
        Ok(Ok(status))
    }

    async fn run(self: Arc<Self>, projections: Vec<Projection>, report: Arc<Report>) {
        let folded = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let ticker = tokio::spawn({
            let (report, folded) = (report.clone(), folded.clone());
            async move {
                loop {
                    tokio::time::sleep(REPORT_EVERY).await;
                    let n = folded.load(Ordering::Relaxed);
                    let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    let _ = report
                        .save(|s| {
                            s.folded = n;
                            s.events_per_second = rate;
                        })
                        .await;
                }
            }
        });
        let counter = folded.clone();
        let result = replay(
            self.store.clone(),
            self.views.clone(),
            &projections,
            self.grace,
            &mut |n| {
                counter.fetch_add(n, Ordering::Relaxed);
            },
        )
        .await;
        // Stopped, not just told to stop: no save of the ticker may land after the last one.
        ticker.abort();
        let _ = ticker.await;
        let n = folded.load(Ordering::Relaxed);
        let saved = report
            .save(|s| {
                s.folded = n;
                s.finished_at = Some(Utc::now());
                match &result {
                    Ok(replayed) => {
                        s.state = ReplayState::Succeeded;
                        s.generation = Some(replayed.generation);
                        s.events_per_second =
                            replayed.events as f64 / replayed.built_in.as_secs_f64().max(1e-3);
                    }
                    Err(error) => {
                        s.state = ReplayState::Failed;
                        s.error = Some(error.to_string());
                    }
                }
            })
            .await;
        match &result {
            Ok(replayed) => tracing::info!(?replayed, "replay finished"),
            Err(error) => tracing::warn!(%error, "replay failed"),
        }
        if let Err(error) = saved {
            tracing::warn!(%error, "the replay's last status could not be saved");
        }
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A replay's status, from any process's replays.
    pub async fn status(&self, replay_id: Uuid) -> Result<Option<ReplayStatus>, ViewError> {
        let Some(doc) = self.views.get(&key(replay_id)).await? else {
            return Ok(None);
        };
        serde_json::from_str(&doc.body).map(Some).map_err(|e| {
            ViewError::Unavailable(format!("replay status {replay_id} is unreadable: {e}"))
        })
    }
}

fn key(replay_id: Uuid) -> String {
    format!("replays:{replay_id}")
}

/// A replay's status document: its version counts saves, and only its replay writes it.
struct Report {
    views: Arc<dyn ViewStore>,
    saved: Mutex<(u64, ReplayStatus)>,
}

impl Report {
    async fn save(&self, change: impl FnOnce(&mut ReplayStatus)) -> Result<(), ViewError> {
        let (version, status) = {
            let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
            change(&mut saved.1);
            saved.0 += 1;
            (saved.0, saved.1.clone())
        };
        let doc = Doc {
            version,
            body: serde_json::to_string(&status).unwrap_or_default(),
        };
        // Saves come one at a time, but a cancelled one may have taken a version number.
        let key = key(status.replay_id);
        let current = self.views.get(&key).await?.map_or(0, |d| d.version);
        if current < version {
            self.views.put(&key, current, doc).await?;
        }
        Ok(())
    }
}
