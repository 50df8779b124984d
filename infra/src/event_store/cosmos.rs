//! Azure Cosmos DB for NoSQL as the event store, through `azure_data_cosmos` (feature `azure`).
//!
//! Layout (ADR 05):
//! - **events container**, partitioned by `/streamId`: one document per event, `id` = the stream
//!   version zero-padded to 20 digits, so that a second writer at the same version collides on
//!   the id. An append of N events is one transactional batch of N creates: atomic within the
//!   stream's logical partition. A refused batch comes back as `207 Multi-Status` (not an
//!   error!) whose failing operation says `409`.
//! - **lease container**, partitioned by `/id`: checkpoints (`checkpoint:{reader}`) and leases
//!   (`lease:{name}`), so that they never show in the events' change feed.
//! - **the global log** is the events container's change feed over the whole container; its
//!   cursor is the SDK's continuation token (per partition key range, opaque). Cosmos DB has no
//!   order across streams, so events carry no global position; each stream's events come in
//!   version order, because a stream lives in one range and a range's feed is in commit order.
//!
//! Every vendor error becomes a [`StoreError`] in [`store_error`]; the status codes that mean
//! something to the port (409, 404, 412) are looked at where they do.

use std::fmt;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::models::ChangeFeedItem;
use azure_data_cosmos::options::{
    BinaryEncodingOptions, ChangeFeedOptions, ChangeFeedStartFrom, ConnectionPoolOptions,
    ItemWriteOptions, MaxItemCountHint, Precondition, QueryOptions,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosError, CosmosRuntime, FeedScope, Query,
    RoutingStrategy, TransactionalBatch,
};
use chrono::{DateTime, SecondsFormat, Utc};
use domain::{EventMetadata, NewEvent, RecordedEvent};
use eventlog::{Appended, EventStore, Lease, LogCursor, LogPage, StoreError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

/// The one query this adapter sends (the local fake understands exactly this text).
const STREAM_QUERY: &str =
    "SELECT * FROM c WHERE c.streamId = @s AND c.version >= @v ORDER BY c.version";

/// A transactional batch holds at most 100 operations, reads included (*Transactional batch
/// operations in Azure Cosmos DB*; the service answers a bigger one `400` "Batch request has
/// more operations than what is supported"). An append to an existing stream spends one on
/// reading the expected version, so it takes at most 99 events; a bigger append cannot be
/// atomic, so it is refused, not split.
const MAX_BATCH_OPERATIONS: usize = 100;

/// A batch's request may be at most 2 MB (the same page: "the payload can't exceed 2 MB"; the
/// service answers `413`). Checked here against the documents as JSON, with room for the
/// batch's own framing, so that an append too big is refused before it is sent, saying why.
const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024;
/// What each operation adds around its document (`operationType`, `id`, the array's commas).
const BATCH_OPERATION_OVERHEAD: usize = 64;

/// The Cosmos DB account's primary (or secondary) key: a secret that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct CosmosKey(String);

impl CosmosKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
}

impl fmt::Debug for CosmosKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CosmosKey(***)")
    }
}

/// Where the store lives and how it behaves.
#[derive(Debug, Clone)]
pub struct CosmosSettings {
    /// `https://{account}.documents.azure.com:443/`; plain `http://` only for loopback (the
    /// local fake, the emulator).
    pub endpoint: String,
    pub key: CosmosKey,
    pub database: String,
    /// Partitioned by `/streamId`.
    pub events_container: String,
    /// Partitioned by `/id`, TTL on (`defaultTtl: -1`).
    pub lease_container: String,
    /// How long a lease lasts without renewal.
    pub lease_duration: Duration,
    /// Page size of the stream query (`None`: the service decides).
    pub stream_page_size: Option<NonZeroU32>,
}

impl CosmosSettings {
    pub fn new(endpoint: impl Into<String>, key: CosmosKey, database: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            key,
            database: database.into(),
            events_container: "events".into(),
            lease_container: "leases".into(),
            lease_duration: Duration::from_secs(15),
            stream_page_size: None,
        }
    }
}

/// The Cosmos DB event store.
pub struct CosmosEventStore {
    events: ContainerClient,
    leases: ContainerClient,
    lease_duration: Duration,
    stream_page_size: Option<NonZeroU32>,
    /// The doorbell: bumped after each append of this process. Other processes' appends are
    /// found by the relay's polling.
    head: watch::Sender<u64>,
}

/// One event as a document of the events container.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventDocument {
    id: String,
    stream_id: String,
    stream_type: String,
    version: u64,
    event_id: Uuid,
    event_type: String,
    schema_version: u32,
    /// RFC 3339 with microseconds, like the SQL stores.
    occurred_at: String,
    payload: Value,
    metadata: EventMetadata,
}

fn document_id(version: u64) -> String {
    format!("{version:020}")
}

impl EventDocument {
    fn new(stream_id: &str, stream_type: &str, version: u64, event: NewEvent) -> Self {
        Self {
            id: document_id(version),
            stream_id: stream_id.to_owned(),
            stream_type: stream_type.to_owned(),
            version,
            event_id: event.event_id,
            event_type: event.event_type,
            schema_version: event.schema_version,
            occurred_at: event
                .occurred_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            payload: event.payload,
            metadata: event.metadata,
        }
    }

    /// Reads a stored document (its system properties are ignored).
    fn decode(document: Value) -> Result<Self, StoreError> {
        serde_json::from_value(document)
            .map_err(|e| StoreError::Corrupt(format!("event document: {e}")))
    }

    fn into_recorded(self) -> Result<RecordedEvent, StoreError> {
        let occurred_at = DateTime::parse_from_rfc3339(&self.occurred_at)
            .map_err(|e| StoreError::Corrupt(format!("occurredAt {:?}: {e}", self.occurred_at)))?
            .with_timezone(&Utc);
        Ok(RecordedEvent {
            event_id: self.event_id,
            stream_id: self.stream_id,
            stream_type: self.stream_type,
            version: self.version,
            // Cosmos DB has no global order (ADR 05).
            global_position: None,
            event_type: self.event_type,
            schema_version: self.schema_version,
            occurred_at,
            payload: self.payload.into(),
            metadata: self.metadata,
        })
    }
}

/// A checkpoint document in the lease container.
#[derive(Debug, Serialize, Deserialize)]
struct CheckpointDocument {
    id: String,
    cursor: String,
}

/// A lease document in the lease container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseDocument {
    id: String,
    owner: Uuid,
    /// Milliseconds since the Unix epoch, on the holder's clock.
    expires_at: i64,
    /// Garbage collection only (the container has `defaultTtl: -1`); `expiresAt` decides.
    ttl: i64,
}

/// The one place where the SDK's errors become the port's.
fn store_error(error: CosmosError) -> StoreError {
    let status = error.status();
    let code = u16::from(status.status_code());
    let sub = status.sub_status().map(|s| format!("{s:?}"));
    // The SDK's "could not read the body" is a 500 with sub-status 20020.
    if code == 500
        && status
            .sub_status()
            .is_some_and(|s| u32::from(s.value()) == 20020)
    {
        return StoreError::Corrupt(format!("Cosmos DB answered something unreadable: {error}"));
    }
    match code {
        401 | 403 => StoreError::Unavailable(format!(
            "Cosmos DB refused the credentials ({code}): check the account key: {error}"
        )),
        // The SDK already retried it as the service asked (`x-ms-retry-after-ms`).
        429 => StoreError::Unavailable(format!(
            "Cosmos DB throttled the request (429 {sub:?}) past the SDK's retries: the \
             container is out of request units; raise its throughput (RU/s) or autoscale \
             maximum: {error}"
        )),
        _ => StoreError::Unavailable(format!("Cosmos DB {code} {sub:?}: {error}")),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// One thing wrong with a container, for `orderflow doctor`: what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerProblem {
    pub problem: String,
    pub fix: String,
}

/// What is wrong with the containers' time to live: the events must never expire, and the
/// leases container must have TTL on without a default (each lease document sets its own
/// `ttl`; checkpoints set none).
pub async fn ttl_problems(store: &CosmosEventStore) -> Result<Vec<ContainerProblem>, StoreError> {
    use azure_data_cosmos::models::TimeToLive;
    const FIX: &str = "set --ttl -1 on it (on, with no default)";
    let ttl = |container: &ContainerClient| {
        let container = container.clone();
        async move {
            container
                .read(None)
                .await
                .map_err(store_error)?
                .into_model()
                .map_err(store_error)
                .map(|p| p.default_ttl)
        }
    };
    let mut problems = Vec::new();
    let mut found = |problem: String, fix: &str| {
        problems.push(ContainerProblem {
            problem,
            fix: fix.to_owned(),
        })
    };
    if let TimeToLive::Seconds(seconds) = ttl(&store.events).await? {
        found(
            format!("the events container deletes events after {seconds} s (defaultTtl)"),
            "set --ttl -1 on it (no default: events carry no ttl, so none expires)",
        );
    }
    match ttl(&store.leases).await? {
        TimeToLive::NoDefault => {}
        TimeToLive::Forever => found(
            "the leases container has TTL off, so expired leases are never collected".into(),
            FIX,
        ),
        TimeToLive::Seconds(seconds) => found(
            format!("the leases container deletes checkpoints after {seconds} s (defaultTtl)"),
            FIX,
        ),
        _ => {}
    }
    Ok(problems)
}

/// A container partitioned otherwise would refuse every write with a 400 that names no cause;
/// say it at start instead (`orderflow migrate` runs this check too).
async fn check_partition_key(
    container: &ContainerClient,
    name: &str,
    expected: &str,
) -> Result<(), StoreError> {
    let properties = container
        .read(None)
        .await
        .map_err(store_error)?
        .into_model()
        .map_err(store_error)?;
    let paths = properties.partition_key.paths();
    if paths.len() == 1 && paths[0] == expected {
        return Ok(());
    }
    Err(StoreError::Unavailable(format!(
        "Cosmos DB container {name} is partitioned by {paths:?}, not {expected:?}: create it \
         as docs/deploy-azure.md says"
    )))
}

impl CosmosEventStore {
    /// What a refused batch means: 409 on version `expected + 1`, our own earlier attempt
    /// (a retry) or another writer's (a conflict); 404 on version `expected`, a stream behind.
    async fn refused(
        &self,
        stream_id: &str,
        expected_version: u64,
        first_id: Uuid,
        n: u64,
        refused_with: u16,
    ) -> Result<Appended, StoreError> {
        match refused_with {
            // The id of version `expected + 1` exists: our own earlier attempt, or another
            // writer's.
            409 => {
                if let Some(stored) = self.read_event(stream_id, expected_version + 1).await?
                    && stored.event_id == first_id
                {
                    return Ok(appended(expected_version + n, true));
                }
                let actual = self
                    .current_version(stream_id, expected_version + 1, None)
                    .await?;
                Err(conflict(stream_id, expected_version, actual))
            }
            // Version `expected` does not exist: the stream is behind.
            404 => {
                let actual = self
                    .current_version(stream_id, 0, Some(expected_version))
                    .await?;
                Err(conflict(stream_id, expected_version, actual))
            }
            other => Err(StoreError::Unavailable(format!(
                "Cosmos DB refused the append's batch with {other}"
            ))),
        }
    }

    /// Connects to the account and resolves both containers (the SDK reads the account, the
    /// containers and their partition key ranges here), so a wrong key or endpoint fails now.
    pub async fn connect(settings: CosmosSettings) -> Result<Self, StoreError> {
        // The SDK's reqwest is built with rustls but no crypto provider (no aws-lc-sys); ring is
        // the process default. `Err` only means some provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let endpoint: AccountEndpoint = settings
            .endpoint
            .parse()
            .map_err(|e| StoreError::Unavailable(format!("Cosmos DB endpoint: {e}")))?;
        // Plain HTTP is the local fake or the emulator: HTTP/1.1 (no h2c probe) and the
        // classic gateway protocol. Against Azure (HTTPS) the SDK's defaults stand: HTTP/2,
        // and Gateway 2.0 where the account offers it.
        let plain = settings.endpoint.starts_with("http://");
        let pool = ConnectionPoolOptions::builder()
            .with_is_http2_allowed(!plain)
            .with_gateway_v2_disabled(plain)
            .with_max_connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(store_error)?;
        let runtime = CosmosRuntime::builder()
            .with_connection_pool(pool)
            .build()
            .await
            .map_err(store_error)?;
        let account = AccountReference::with_authentication_key(endpoint, settings.key.0.clone());
        let client = CosmosClient::builder()
            .with_runtime(runtime)
            // Cosmos binary JSON is on by default for point writes; the REST contract (and the
            // fake) speak JSON.
            .with_binary_encoding_options(BinaryEncodingOptions::new().with_enabled(false))
            .build(account, RoutingStrategy::PreferredRegions(Vec::new()))
            .await
            .map_err(store_error)?;
        let database = client.database_client(settings.database.as_str());
        let events = database
            .container_client(settings.events_container.as_str(), None)
            .await
            .map_err(store_error)?;
        let leases = database
            .container_client(settings.lease_container.as_str(), None)
            .await
            .map_err(store_error)?;
        check_partition_key(&events, &settings.events_container, "/streamId").await?;
        check_partition_key(&leases, &settings.lease_container, "/id").await?;
        Ok(Self {
            events,
            leases,
            lease_duration: settings.lease_duration,
            stream_page_size: settings.stream_page_size,
            head: watch::channel(0).0,
        })
    }

    fn lease_document(&self, id: &str, owner: Uuid) -> LeaseDocument {
        lease_document(id, owner, self.lease_duration)
    }

    /// The stream's document at `version`, if any.
    async fn read_event(
        &self,
        stream_id: &str,
        version: u64,
    ) -> Result<Option<EventDocument>, StoreError> {
        match self
            .events
            .read_item(stream_id.to_owned(), &document_id(version), None)
            .await
        {
            Ok(response) => {
                let document: Value = response.into_model().map_err(store_error)?;
                EventDocument::decode(document).map(Some)
            }
            Err(error) if error.status().is_not_found() => Ok(None),
            Err(error) => Err(store_error(error)),
        }
    }

    /// The stream's version, knowing that version `present` exists (0 always does) and
    /// `absent` (if given) does not: point reads doubling the step from `present` until one is
    /// missing, then a binary search. A stream has no gaps, and after a lost race it is
    /// usually a version or two ahead, so this costs a few reads where a query of the whole
    /// stream would cost pages.
    async fn current_version(
        &self,
        stream_id: &str,
        present: u64,
        absent: Option<u64>,
    ) -> Result<u64, StoreError> {
        let (mut low, mut high) = (present, absent);
        let mut step = 1;
        while high.is_none() {
            let probe = low + step;
            if self.read_event(stream_id, probe).await?.is_some() {
                low = probe;
                step *= 2;
            } else {
                high = Some(probe);
            }
        }
        let mut high = high.unwrap_or(low + 1);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if self.read_event(stream_id, middle).await?.is_some() {
                low = middle;
            } else {
                high = middle;
            }
        }
        Ok(low)
    }
}

fn conflict(stream_id: &str, expected: u64, actual: u64) -> StoreError {
    StoreError::Conflict {
        stream_id: stream_id.to_owned(),
        expected,
        actual,
    }
}

/// The batch of one append: a read of version `expected` (proving the stream got that far;
/// versions have no gaps) and a create per event (proving `expected + 1..` are free), all in
/// one transaction, within Cosmos DB's limits of operations and bytes.
fn batch_for(
    stream_id: &str,
    stream_type: &str,
    expected_version: u64,
    events: Vec<NewEvent>,
) -> Result<TransactionalBatch, StoreError> {
    let n = events.len();
    let reads = usize::from(expected_version > 0);
    if n + reads > MAX_BATCH_OPERATIONS {
        let most = MAX_BATCH_OPERATIONS - reads;
        return Err(StoreError::Corrupt(format!(
            "{n} events in one append: Cosmos DB commits at most {MAX_BATCH_OPERATIONS} \
             operations atomically, so at most {most} events {}",
            if reads > 0 {
                "to an existing stream (reading its version is one of them)"
            } else {
                "to a new stream"
            }
        )));
    }
    let mut batch = TransactionalBatch::new(stream_id.to_owned());
    if expected_version > 0 {
        batch = batch.read_item(document_id(expected_version), None);
    }
    let mut bytes = reads * BATCH_OPERATION_OVERHEAD;
    for (event, version) in events.into_iter().zip(expected_version + 1..) {
        let document = EventDocument::new(stream_id, stream_type, version, event);
        bytes += serde_json::to_vec(&document)
            .map_err(|e| StoreError::Corrupt(format!("encode an event: {e}")))?
            .len()
            + BATCH_OPERATION_OVERHEAD;
        batch = batch.create_item(document).map_err(store_error)?;
    }
    if bytes > MAX_BATCH_BYTES {
        return Err(StoreError::Corrupt(format!(
            "{n} events of {bytes} bytes in one append: a Cosmos DB batch takes at most \
             {MAX_BATCH_BYTES} bytes"
        )));
    }
    Ok(batch)
}

#[async_trait]
impl EventStore for CosmosEventStore {
    #[tracing::instrument(skip(self, events), fields(n = events.len()))]
    async fn append(
        &self,
        stream_id: &str,
        stream_type: &str,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let Some(first_id) = events.first().map(|e| e.event_id) else {
            return Ok(appended(
                self.current_version(stream_id, 0, None).await?,
                false,
            ));
        };
        let n = events.len() as u64;
        let batch = batch_for(stream_id, stream_type, expected_version, events)?;
        let refused_with = match self.events.execute_transactional_batch(batch, None).await {
            // 207 counts as a success to HTTP (and to `is_success`): look for it explicitly.
            Ok(response) if u16::from(response.status().status_code()) != 207 => {
                self.head.send_modify(|count| *count += 1);
                return Ok(appended(expected_version + n, false));
            }
            // 207: nothing was written; the failing operation has its own status, the others 424.
            Ok(response) => {
                let outcome = response.into_model().map_err(store_error)?;
                outcome
                    .results()
                    .iter()
                    .map(|r| r.status_code())
                    .find(|code| *code != 424 && !(200..300).contains(code))
                    .unwrap_or(424)
            }
            // Defensive: a gateway that answers the failing status for the whole batch.
            Err(error) if error.status().is_conflict() => 409,
            Err(error) => return Err(store_error(error)),
        };
        self.refused(stream_id, expected_version, first_id, n, refused_with)
            .await
    }

    #[tracing::instrument(skip(self))]
    async fn read_stream(
        &self,
        stream_id: &str,
        from_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let query = Query::from(STREAM_QUERY)
            .with_parameter("@s", stream_id)
            .and_then(|q| q.with_parameter("@v", from_version))
            .map_err(store_error)?;
        let page_size = self
            .stream_page_size
            .map_or(MaxItemCountHint::ServerDecides, MaxItemCountHint::Limit);
        let options = QueryOptions::default().with_max_item_count(page_size);
        let mut items = self
            .events
            .query_items::<Value>(
                query,
                FeedScope::partition(stream_id.to_owned()),
                Some(options),
            )
            .await
            .map_err(store_error)?;
        let mut events = Vec::new();
        while let Some(item) = items.next().await {
            events.push(EventDocument::decode(item.map_err(store_error)?)?.into_recorded()?);
        }
        Ok(events)
    }

    /// Reads the global log after `after` (the start when empty).
    ///
    /// The SDK's change-feed iterator polls the container's partition key ranges round-robin,
    /// one range per page, and answers an empty page for a range with nothing new (a 304):
    /// one empty page is not the end of the feed, only of that range for now. So this stops
    /// when `limit` events are in hand, or when as many consecutive pages as there are ranges
    /// came back empty: every range was visited and had nothing. (A split during the call adds
    /// ranges; then it may stop early, which returns fewer events but loses none.) A page is
    /// never cut, since the cursor can only be taken between pages: a page may carry more
    /// than `limit` events (the service keeps a batch's documents together).
    #[tracing::instrument(skip(self))]
    async fn read_all(&self, after: &LogCursor, limit: usize) -> Result<LogPage, StoreError> {
        let ranges = self
            .events
            .read_feed_ranges(None)
            .await
            .map_err(store_error)?
            .len()
            .max(1);
        let page_size = u32::try_from(limit.max(1)).unwrap_or(u32::MAX);
        let mut options = ChangeFeedOptions::default().with_max_item_count(
            MaxItemCountHint::Limit(NonZeroU32::MIN.saturating_add(page_size - 1)),
        );
        if !after.is_start() {
            options = options.with_continuation_token(
                azure_data_cosmos::feed::ContinuationToken::from_string(after.as_str().to_owned()),
            );
        }
        let mut pages = self
            .events
            .query_change_feed::<Value>(
                FeedScope::full_container(),
                ChangeFeedStartFrom::Beginning,
                Some(options),
            )
            .await
            .map_err(store_error)?;
        let mut events = Vec::new();
        let mut empty_in_a_row = 0;
        while events.len() < limit && empty_in_a_row < ranges {
            let Some(page) = pages.next().await else {
                break;
            };
            let items: Vec<ChangeFeedItem<Value>> = page.map_err(store_error)?.into_items();
            if items.is_empty() {
                empty_in_a_row += 1;
                continue;
            }
            empty_in_a_row = 0;
            for item in items {
                let document = item.current().cloned().ok_or_else(|| {
                    StoreError::Corrupt("a change feed item without its document".into())
                })?;
                events.push(EventDocument::decode(document)?.into_recorded()?);
            }
        }
        // Nothing new: stay where the reader was (the port's promise), rather than hand out a
        // token that differs only by the ranges' refreshed etags.
        if events.is_empty() {
            return Ok(LogPage {
                events,
                next: after.clone(),
            });
        }
        let next = pages.to_continuation_token().map_err(store_error)?;
        Ok(LogPage {
            events,
            next: LogCursor::new(next.as_str().to_owned()),
        })
    }

    /// The change feed keeps order within a stream only (ADR 05).
    fn ordered_log(&self) -> bool {
        false
    }

    /// Cosmos DB cannot count the changes after a continuation cheaply.
    async fn lag(&self, _after: &LogCursor) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    #[tracing::instrument(skip(self))]
    async fn checkpoint(&self, reader: &str) -> Result<LogCursor, StoreError> {
        let id = format!("checkpoint:{reader}");
        match self.leases.read_item(id.clone(), &id, None).await {
            Ok(response) => {
                let document: Value = response.into_model().map_err(store_error)?;
                let checkpoint: CheckpointDocument = serde_json::from_value(document)
                    .map_err(|e| StoreError::Corrupt(format!("checkpoint {reader}: {e}")))?;
                Ok(LogCursor::new(checkpoint.cursor))
            }
            Err(error) if error.status().is_not_found() => Ok(LogCursor::start()),
            Err(error) => Err(store_error(error)),
        }
    }

    #[tracing::instrument(skip(self, cursor))]
    async fn save_checkpoint(&self, reader: &str, cursor: &LogCursor) -> Result<(), StoreError> {
        let id = format!("checkpoint:{reader}");
        let document = CheckpointDocument {
            id: id.clone(),
            cursor: cursor.as_str().to_owned(),
        };
        self.leases
            .upsert_item(id.clone(), &id, document, None)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// Reads the events container's metadata: cheap, and needs the key to be right.
    async fn ping(&self) -> Result<(), StoreError> {
        self.events.read(None).await.map_err(store_error)?;
        Ok(())
    }

    /// Takes the named lease: creates its document, or takes over one whose holder let it
    /// expire (replace with `If-Match` on the etag read: `412` means another process won).
    #[tracing::instrument(skip(self))]
    async fn lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let id = format!("lease:{name}");
        let owner = Uuid::new_v4();
        let document = self.lease_document(&id, owner);
        let written = match self
            .leases
            .create_item(id.clone(), &id, document.clone(), None)
            .await
        {
            Ok(response) => response,
            Err(error) if error.status().is_conflict() => {
                let current = match self.leases.read_item(id.clone(), &id, None).await {
                    Ok(response) => response,
                    // Released meanwhile: the next attempt creates it.
                    Err(error) if error.status().is_not_found() => return Ok(None),
                    Err(error) => return Err(store_error(error)),
                };
                let etag = current.headers().etag().map(|e| e.to_string());
                let held: LeaseDocument = current.into_model().map_err(store_error)?;
                if held.expires_at > now_ms() {
                    return Ok(None);
                }
                let Some(etag) = etag else {
                    return Err(StoreError::Corrupt(format!("lease {name} has no etag")));
                };
                let options =
                    ItemWriteOptions::default().with_precondition(Precondition::if_match(etag));
                match self
                    .leases
                    .replace_item(id.clone(), &id, document.clone(), Some(options))
                    .await
                {
                    Ok(response) => response,
                    Err(error)
                        if error.status().is_precondition_failed()
                            || error.status().is_not_found() =>
                    {
                        return Ok(None);
                    }
                    Err(error) => return Err(store_error(error)),
                }
            }
            Err(error) => return Err(store_error(error)),
        };
        let etag = written
            .headers()
            .etag()
            .map(|e| e.to_string())
            .ok_or_else(|| StoreError::Corrupt(format!("lease {name} has no etag")))?;
        Ok(Some(Box::new(CosmosLease {
            leases: self.leases.clone(),
            id,
            owner,
            duration: self.lease_duration,
            etag: Some(etag),
            expires_at: document.expires_at,
            renewed_at: now_ms(),
        })))
    }
}

fn appended(version: u64, duplicate: bool) -> Appended {
    Appended {
        version,
        // No global position on Cosmos DB (ADR 05).
        position: None,
        duplicate,
    }
}

fn lease_document(id: &str, owner: Uuid, duration: Duration) -> LeaseDocument {
    let duration_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    LeaseDocument {
        id: id.to_owned(),
        owner,
        expires_at: now_ms().saturating_add(duration_ms),
        ttl: i64::try_from(duration.as_secs())
            .unwrap_or(i64::MAX / 10)
            .saturating_mul(10)
            .max(60),
    }
}

/// A held lease: renewed with `If-Match` once a third of its duration has passed, deleted
/// (best effort) when dropped.
pub struct CosmosLease {
    leases: ContainerClient,
    id: String,
    owner: Uuid,
    duration: Duration,
    /// `None` once lost.
    etag: Option<String>,
    expires_at: i64,
    renewed_at: i64,
}

#[async_trait]
impl Lease for CosmosLease {
    async fn held(&mut self) -> bool {
        let Some(etag) = self.etag.clone() else {
            return false;
        };
        let now = now_ms();
        if now >= self.expires_at {
            self.etag = None;
            return false;
        }
        let third = i64::try_from(self.duration.as_millis() / 3).unwrap_or(i64::MAX);
        if now - self.renewed_at < third {
            return true;
        }
        let document = lease_document(&self.id, self.owner, self.duration);
        let options = ItemWriteOptions::default().with_precondition(Precondition::if_match(etag));
        match self
            .leases
            .replace_item(self.id.clone(), &self.id, document.clone(), Some(options))
            .await
        {
            Ok(response) => {
                self.etag = response.headers().etag().map(|e| e.to_string());
                self.expires_at = document.expires_at;
                self.renewed_at = now;
                self.etag.is_some()
            }
            Err(error)
                if error.status().is_precondition_failed() || error.status().is_not_found() =>
            {
                self.etag = None;
                false
            }
            // Cannot renew now: still ours until it expires.
            Err(error) => {
                tracing::warn!(%error, lease = %self.id, "cannot renew the lease");
                now_ms() < self.expires_at
            }
        }
    }
}

impl Drop for CosmosLease {
    fn drop(&mut self) {
        let (Some(etag), Ok(runtime)) = (self.etag.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let leases = self.leases.clone();
        let id = std::mem::take(&mut self.id);
        runtime.spawn(async move {
            let options =
                ItemWriteOptions::default().with_precondition(Precondition::if_match(etag));
            if let Err(error) = leases.delete_item(id.clone(), &id, Some(options)).await {
                tracing::debug!(%error, lease = %id, "could not release the lease");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_never_print_the_key() {
        let settings = CosmosSettings::new(
            "https://account.documents.azure.com:443/",
            CosmosKey::new("c2VjcmV0LWtleQ=="),
            "orderflow",
        );

        let printed = format!("{settings:?}");

        assert!(!printed.contains("c2VjcmV0LWtleQ=="), "{printed}");
        assert!(printed.contains("CosmosKey(***)"), "{printed}");
    }

    #[test]
    fn document_ids_sort_as_versions() {
        assert_eq!(document_id(7), "00000000000000000007");
        assert!(document_id(10) > document_id(9));
    }
}
