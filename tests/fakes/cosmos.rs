//! A local Azure Cosmos DB for NoSQL account (one database, an events container partitioned by
//! `/streamId` and a leases container partitioned by `/id`) speaking the gateway REST protocol
//! the `azure_data_cosmos` 1.1.0-beta.1 crate uses, and enforcing its documented contract rather
//! than saying yes. It follows these Microsoft pages (learn.microsoft.com, `rest/api/cosmos-db/`
//! unless noted):
//!
//! - *Access control in the Azure Cosmos DB SQL API*: `authorization` is the form-url-encoded
//!   `type=master&ver=1.0&sig=…`, the signature base64 HMAC-SHA256 (key = the base64-decoded
//!   master key) over `verb\nresourceType\nresourceLink\ndate\n\n` (verb and `x-ms-date`
//!   lowercased; a feed request signs its parent's link); a wrong signature, a missing or stale
//!   (more than 15 minutes off) `x-ms-date` is `401`.
//! - *Common Azure Cosmos DB REST request headers*: `x-ms-version` is required (`400` without),
//!   `If-Match` makes a write conditional (`412` on another etag), `x-ms-documentdb-partitionkey`
//!   is a JSON array that must name the document's partition key (`400` otherwise).
//! - *Get a database account*, *Get a Collection*, *Get Partition key ranges*: the account (its
//!   only location is this loopback endpoint, and no Gateway 2.0 locations), the container with
//!   its partition key definition (v2) and `defaultTtl`, and its ranges: `200` with an `etag`,
//!   then `304` while `If-None-Match` names that etag.
//! - *Create*, *Get*, *Replace*, *Delete a Document*: `201`/`409` (id already in that logical
//!   partition), `200`/`404`, `200`/`404`/`412`, `204`/`404`/`412`; upsert by
//!   `x-ms-documentdb-is-upsert`. Stored documents carry `_rid`, `_self`, `_etag`, `_ts`, `_lsn`.
//! - *Transactional batch operations in Azure Cosmos DB* (`azure/cosmos-db/nosql/transactional-batch`):
//!   at most 100 operations on one partition key, atomic: `200` with one result per operation,
//!   or `207 Multi-Status` where the failing operation has its own status (`409` for an existing
//!   id) and every other one `424 Failed Dependency`, and nothing is written.
//!   More than 100 operations (reads count) is `400` "Batch request has more operations than
//!   what is supported."; a request over 2 MB is `413` (*Azure Cosmos DB service quotas*).
//! - *Request rate too large (429)* (`azure/cosmos-db/nosql/troubleshoot-request-rate-too-large`)
//!   and *HTTP status codes for Azure Cosmos DB*: on demand ([`CosmosFake::throttle`]) a request
//!   is answered `429` with `x-ms-substatus: 3200` (RU budget exceeded), `x-ms-retry-after-ms`
//!   and the `TooManyRequests` body; nothing is written.
//! - *Query Documents*: `x-ms-documentdb-isquery` with `Content-Type: application/query+json`,
//!   within one partition key; paged by `x-ms-max-item-count` and `x-ms-continuation`. Only the
//!   query text the event store adapter sends is understood ([`STREAM_QUERY`]); any other text is
//!   `400` rather than a guess.
//! - *List (ReadFeed) Documents* with `A-IM: Incremental Feed` and *Change feed in Azure Cosmos
//!   DB* (`azure/cosmos-db/change-feed`): the change feed of a partition key range, from the
//!   beginning (no `If-None-Match`), from now (`*`) or after an etag; `200` whose `etag` is the
//!   new continuation (the LSN of the last change returned), `304` with nothing newer. Latest
//!   version only, in LSN order; the documents of one batch share one LSN and always come on the
//!   same page. Each item is the `{"current": …, "metadata": {"lsn", "crts"}}` envelope the SDK
//!   asks for with `x-ms-cosmos-changefeed-wire-format-version` (from the SDK, no REST page
//!   describes it).
//! - *Time to Live (TTL) in Azure Cosmos DB* (`azure/cosmos-db/time-to-live`): a document's `ttl`
//!   counts only when its container has `defaultTtl` set; expired documents vanish from reads,
//!   queries and the feed at once.
//!
//! - *Partitioning and horizontal scaling* and *Get Partition key ranges*: a container's hash
//!   space is split into partition key ranges, each owning the documents whose effective
//!   partition key (EPK) falls in `[minInclusive, maxExclusive)`. The EPK of a string key on a
//!   v2 hash container is MurmurHash3 x64 128 (seed 0) of `0x08`, the key's UTF-8 and `0xFF`,
//!   its bytes reversed, the top two bits cleared, in upper-case hex (how the service hashes and
//!   the SDK routes). The events container has one range (`"0"`, the whole space) or, with
//!   [`CosmosConfig::events_ranges`] = 2, the two children of a split (`"1"` below EPK `20`,
//!   `"2"` from it, both with parent `"0"`): a change feed request names a range and gets only
//!   that range's documents; a request that names a range and a partition key outside it is
//!   `410` with sub-status 1002 (*PartitionKeyRangeGone*), as a stale routing map would get.
//!
//! Cosmos binary JSON bodies (first byte `0x80`) and requests that accept only binary answers
//! are `400`: the adapter must send JSON. Splits while running are not modelled. HTTP/1.1 only.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The one query text the fake understands (whitespace is not significant).
pub const STREAM_QUERY: &str =
    "SELECT * FROM c WHERE c.streamId = @s AND c.version >= @v ORDER BY c.version";

const MAX_BATCH_OPERATIONS: usize = 100;
/// The largest batch request the service takes: "2 MB" on the page, 2,202,010 bytes in the
/// service's own check (`413` above it).
const MAX_BATCH_REQUEST_BYTES: usize = 2_202_010;
const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;
/// The one range of an unsplit container.
const RANGE_ID: &str = "0";
/// Where the two ranges of a split events container meet (an EPK, upper-case hex).
const SPLIT_AT: &str = "20";

/// What the fake account holds.
#[derive(Debug, Clone)]
pub struct CosmosConfig {
    /// The account's primary key, base64.
    pub key: String,
    pub database: String,
    /// Partitioned by `/streamId`.
    pub events_container: String,
    /// Partitioned by `/id`.
    pub leases_container: String,
    /// The containers' `defaultTtl` (`None`: TTL off, `Some(-1)`: on, no default expiry).
    pub events_default_ttl: Option<i64>,
    pub leases_default_ttl: Option<i64>,
    /// Partition key ranges of the events container: 1, or 2 (a split one).
    pub events_ranges: usize,
}

impl CosmosConfig {
    /// A database with a fresh name and key; TTL on (without a default) for leases only.
    pub fn new() -> Self {
        let mut key = Uuid::new_v4().as_bytes().to_vec();
        key.extend_from_slice(Uuid::new_v4().as_bytes());
        Self {
            key: STANDARD.encode(key),
            database: format!("orderflow-{}", &Uuid::new_v4().simple().to_string()[..8]),
            events_container: "events".into(),
            leases_container: "leases".into(),
            events_default_ttl: None,
            leases_default_ttl: Some(-1),
            events_ranges: 1,
        }
    }
}

impl Default for CosmosConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// One request as the fake saw it, and its answer.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    /// `batch`, `query`, `change-feed`, `pkranges` or `point` for requests on documents.
    pub kind: &'static str,
    pub status: u16,
    /// The partition key range the request named (`x-ms-documentdb-partitionkeyrangeid`).
    pub range: Option<String>,
}

/// The running fake; the server stops when this is dropped.
pub struct CosmosFake {
    /// `http://127.0.0.1:PORT/`.
    pub endpoint: String,
    pub config: CosmosConfig,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for CosmosFake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl CosmosFake {
    pub async fn start(config: CosmosConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Cosmos DB fake");
        let address = listener.local_addr().expect("fake address");
        let endpoint = format!("http://{address}/");
        let db_rid: [u8; 4] = rand_bytes();
        let container = |name: &str, pk: &str, ttl: Option<i64>, n: u8, ranges| Container {
            name: name.to_owned(),
            rid: [&db_rid[..], &[0, 0, 0, n]].concat(),
            pk_field: pk.to_owned(),
            default_ttl: ttl,
            docs: BTreeMap::new(),
            lsn: 0,
            ranges,
        };
        let whole = vec![KeyRange::whole()];
        let events_ranges = match config.events_ranges {
            1 => whole.clone(),
            2 => KeyRange::split(),
            n => panic!("the fake models 1 or 2 partition key ranges, not {n}"),
        };
        let containers = vec![
            container(
                &config.events_container,
                "streamId",
                config.events_default_ttl,
                1,
                events_ranges,
            ),
            container(
                &config.leases_container,
                "id",
                config.leases_default_ttl,
                2,
                whole,
            ),
        ];
        let shared = Arc::new(Shared {
            config: config.clone(),
            endpoint: endpoint.clone(),
            db_rid: encode_rid(&db_rid),
            state: Mutex::new(Account {
                containers,
                seen: Vec::new(),
                unauthorized: 0,
            }),
            unavailable: AtomicBool::new(false),
            throttled: Mutex::new(None),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            endpoint,
            config,
            shared,
            server,
        }
    }

    /// The next `requests` requests of `kind` (or of any kind) are answered `429` with
    /// `x-ms-retry-after-ms` = `retry_after`, as a container out of request units is.
    pub fn throttle(
        &self,
        kind: Option<&'static str>,
        requests: usize,
        retry_after: std::time::Duration,
    ) {
        *self
            .shared
            .throttled
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Throttle {
            kind,
            left: requests,
            retry_after,
        });
    }

    /// From now on every request is answered `503 Service Unavailable` (or again served).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    /// How many requests of a kind were answered with `status`.
    pub fn count(&self, kind: &str, status: u16) -> usize {
        let state = self.shared.lock();
        state
            .seen
            .iter()
            .filter(|s| s.kind == kind && s.status == status)
            .count()
    }

    /// Requests refused with 401 so far.
    pub fn unauthorized(&self) -> usize {
        self.shared.lock().unauthorized
    }

    /// The live (unexpired) documents of a container's logical partition, by id.
    pub fn documents(&self, container: &str, partition_key: &str) -> Vec<Value> {
        let now = now_ms();
        let state = self.shared.lock();
        state
            .containers
            .iter()
            .find(|c| c.name == container)
            .map(|c| {
                c.docs
                    .range((partition_key.to_owned(), String::new())..)
                    .take_while(|((pk, _), _)| pk == partition_key)
                    .filter(|(_, d)| !c.expired(d, now))
                    .map(|(_, d)| d.body.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Shared {
    config: CosmosConfig,
    endpoint: String,
    db_rid: String,
    state: Mutex<Account>,
    unavailable: AtomicBool,
    throttled: Mutex<Option<Throttle>>,
}

/// Requests still to be answered `429`.
struct Throttle {
    /// Only requests of this kind (`batch`, `query`, …), or all.
    kind: Option<&'static str>,
    left: usize,
    retry_after: std::time::Duration,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Account> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Account {
    containers: Vec<Container>,
    seen: Vec<Seen>,
    unauthorized: usize,
}

struct Container {
    name: String,
    rid: Vec<u8>,
    pk_field: String,
    default_ttl: Option<i64>,
    /// (partition key, id) → document.
    docs: BTreeMap<(String, String), Doc>,
    /// The container's logical sequence number: one step per committed write (a batch is
    /// one), shared by its ranges (so each range's feed is in commit order).
    lsn: u64,
    ranges: Vec<KeyRange>,
}

/// One partition key range: the EPKs in `[min, max)` (upper-case hex; `""` is the start and
/// `"FF"` the end of the space).
#[derive(Clone)]
struct KeyRange {
    id: &'static str,
    min: &'static str,
    max: &'static str,
    parents: &'static [&'static str],
}

impl KeyRange {
    fn whole() -> Self {
        Self {
            id: RANGE_ID,
            min: "",
            max: "FF",
            parents: &[],
        }
    }

    /// The two children of range `"0"` split at [`SPLIT_AT`].
    fn split() -> Vec<Self> {
        vec![
            Self {
                id: "1",
                min: "",
                max: SPLIT_AT,
                parents: &[RANGE_ID],
            },
            Self {
                id: "2",
                min: SPLIT_AT,
                max: "FF",
                parents: &[RANGE_ID],
            },
        ]
    }

    fn holds(&self, epk: &str) -> bool {
        epk >= self.min && epk < self.max
    }
}

/// The effective partition key of a string partition key on a v2 hash container (see the
/// module docs).
pub fn effective_partition_key(partition_key: &str) -> String {
    let mut bytes = Vec::with_capacity(partition_key.len() + 2);
    bytes.push(0x08);
    bytes.extend_from_slice(partition_key.as_bytes());
    bytes.push(0xFF);
    let hash = murmur3::murmur3_x64_128(&mut std::io::Cursor::new(bytes), 0)
        .expect("hashing a byte slice cannot fail");
    let mut epk = hash.to_le_bytes();
    epk.reverse();
    epk[0] &= 0x3F;
    epk.iter().map(|b| format!("{b:02X}")).collect()
}

#[derive(Clone)]
struct Doc {
    /// With the system properties.
    body: Value,
    etag: String,
    lsn: u64,
    written_ms: i64,
}

impl Container {
    fn rid(&self) -> String {
        encode_rid(&self.rid)
    }

    fn expired(&self, doc: &Doc, now_ms: i64) -> bool {
        let Some(default_ttl) = self.default_ttl else {
            return false;
        };
        let ttl = doc
            .body
            .get("ttl")
            .and_then(Value::as_i64)
            .unwrap_or(default_ttl);
        ttl > 0 && doc.written_ms + ttl * 1000 <= now_ms
    }

    fn live(&self, pk: &str, id: &str, now_ms: i64) -> Option<&Doc> {
        self.docs
            .get(&(pk.to_owned(), id.to_owned()))
            .filter(|d| !self.expired(d, now_ms))
    }

    fn metadata(&self, db_rid: &str) -> Value {
        let mut body = json!({
            "id": self.name,
            "_rid": self.rid(),
            "_self": format!("dbs/{db_rid}/colls/{}/", self.rid()),
            "_etag": format!("\"{}\"", self.rid()),
            "_ts": 1_700_000_000,
            "partitionKey": {"paths": [format!("/{}", self.pk_field)], "kind": "Hash", "version": 2},
            "indexingPolicy": {"indexingMode": "consistent", "automatic": true},
        });
        if let Some(ttl) = self.default_ttl {
            body["defaultTtl"] = json!(ttl);
        }
        body
    }

    /// Gives `body` its system properties for a write at `lsn`.
    fn stamp(&self, mut body: Value, lsn: u64, now_ms: i64) -> Doc {
        let etag = format!("\"{}\"", Uuid::new_v4());
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        let doc_rid = encode_rid(&[&self.rid[..], &rand_bytes::<8>()[..]].concat());
        if let Value::Object(fields) = &mut body {
            fields.insert("_rid".into(), json!(doc_rid));
            fields.insert(
                "_self".into(),
                json!(format!("dbs/x/colls/{}/docs/{id}/", self.rid())),
            );
            fields.insert("_etag".into(), json!(etag));
            fields.insert("_ts".into(), json!(now_ms / 1000));
            fields.insert("_lsn".into(), json!(lsn));
        }
        Doc {
            body,
            etag,
            lsn,
            written_ms: now_ms,
        }
    }
}

/// A failed request: status, Cosmos error code name, message.
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let code = match status.as_u16() {
            400 => "BadRequest",
            401 => "Unauthorized",
            404 => "NotFound",
            409 => "Conflict",
            412 => "PreconditionFailed",
            413 => "RequestEntityTooLarge",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            _ => "Error",
        };
        Self(status, code, message.into())
    }
}

impl Refusal {
    /// `410 Gone` with sub-status 1002: the routing map the request was sent by is stale.
    fn gone(message: String) -> Self {
        Self(StatusCode::GONE, "Gone", message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"code": self.1, "message": self.2}).to_string();
        let mut response = (self.0, [("content-type", "application/json")], body).into_response();
        if self.0 == StatusCode::GONE {
            response
                .headers_mut()
                .insert("x-ms-substatus", HeaderValue::from_static("1002"));
        }
        response
    }
}

type Answer = Result<Response, Refusal>;

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let kind = kind_of(&method, &segments, &headers);
    let throttled = {
        let mut throttle = shared.throttled.lock().unwrap_or_else(|e| e.into_inner());
        match throttle.as_mut() {
            Some(t) if t.left > 0 && t.kind.is_none_or(|k| k == kind) => {
                t.left -= 1;
                Some(t.retry_after)
            }
            _ => None,
        }
    };
    let answer = if let Some(retry_after) = throttled {
        let mut response = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Message: {\"Errors\":[\"Request rate is large. More Request Units may be needed, so no changes were made. Please retry this request later.\"]}",
        )
        .into_response();
        let headers = response.headers_mut();
        headers.insert("x-ms-substatus", HeaderValue::from_static("3200"));
        if let Ok(ms) = HeaderValue::from_str(&retry_after.as_millis().to_string()) {
            headers.insert("x-ms-retry-after-ms", ms);
        }
        Ok(response)
    } else if shared.unavailable.load(Ordering::SeqCst) {
        Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the fake is switched to unavailable",
        ))
    } else if let Err(why) = authorize(&shared, &method, &segments, &headers) {
        shared.lock().unauthorized += 1;
        Err(Refusal::new(StatusCode::UNAUTHORIZED, why))
    } else {
        route(&shared, &method, &segments, &headers, &body)
    };
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    let activity = headers
        .get("x-ms-activity-id")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("00000000-0000-0000-0000-000000000000"));
    let response_headers = response.headers_mut();
    response_headers.insert("x-ms-activity-id", activity);
    response_headers.insert("x-ms-request-charge", HeaderValue::from_static("1"));
    shared.lock().seen.push(Seen {
        method,
        path,
        kind,
        status: response.status().as_u16(),
        range: header(&headers, "x-ms-documentdb-partitionkeyrangeid").map(str::to_owned),
    });
    response
}

fn kind_of(method: &Method, segments: &[String], headers: &HeaderMap) -> &'static str {
    let has = |name: &str| headers.contains_key(name);
    match segments.last().map(String::as_str) {
        Some("pkranges") => "pkranges",
        Some("docs") if has("x-ms-cosmos-is-batch-request") => "batch",
        Some("docs") if has("x-ms-documentdb-isquery") => "query",
        Some("docs") if *method == Method::GET && has("a-im") => "change-feed",
        _ if segments.len() >= 5 => "point",
        _ => "metadata",
    }
}

/// Checks the master-key token the way *Access control in the Azure Cosmos DB SQL API* says.
fn authorize(
    shared: &Shared,
    method: &Method,
    segments: &[String],
    headers: &HeaderMap,
) -> Result<(), String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let date = header("x-ms-date").ok_or("no x-ms-date")?;
    let at = DateTime::parse_from_rfc2822(date).map_err(|_| format!("bad x-ms-date {date:?}"))?;
    if (Utc::now().timestamp() - at.timestamp()).abs() > MAX_CLOCK_SKEW_SECS {
        return Err("x-ms-date is too far from now".into());
    }
    let token = form_decode(header("authorization").ok_or("no authorization")?);
    let fields: HashMap<&str, &str> = token.split('&').filter_map(|p| p.split_once('=')).collect();
    if fields.get("type") != Some(&"master") || fields.get("ver") != Some(&"1.0") {
        return Err("only master-key tokens type=master&ver=1.0 are accepted".into());
    }
    let signature = STANDARD
        .decode(fields.get("sig").ok_or("no sig")?)
        .map_err(|_| "bad signature encoding")?;
    let key = STANDARD
        .decode(&shared.config.key)
        .map_err(|_| "bad account key")?;
    // A path of odd length ends with a resource type (a feed: sign the parent), of even length
    // with a resource id (sign the resource itself).
    let (resource_type, link) = match segments.len() {
        0 => (String::new(), String::new()),
        n if n % 2 == 1 => (segments[n - 1].clone(), segments[..n - 1].join("/")),
        n => (segments[n - 2].clone(), segments.join("/")),
    };
    let text = format!(
        "{}\n{resource_type}\n{link}\n{}\n\n",
        method.as_str().to_lowercase(),
        date.to_lowercase()
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| "bad account key")?;
    mac.update(text.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| "signature mismatch".to_owned())
}

fn route(
    shared: &Shared,
    method: &Method,
    segments: &[String],
    headers: &HeaderMap,
    body: &Bytes,
) -> Answer {
    if !headers.contains_key("x-ms-version") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "x-ms-version is required",
        ));
    }
    if body.first() == Some(&0x80) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "binary-encoded bodies are not accepted: send JSON",
        ));
    }
    if let Some(formats) = headers
        .get("x-ms-cosmos-supported-serialization-formats")
        .and_then(|v| v.to_str().ok())
        && !formats.contains("JsonText")
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "only JsonText responses are served",
        ));
    }
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let database = shared.config.database.as_str();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, []) => Ok(account(shared)),
        (Method::GET, ["dbs", db]) if *db == database => Ok(ok(json!({
            "id": database, "_rid": shared.db_rid, "_self": format!("dbs/{}/", shared.db_rid),
            "_etag": "\"db\"", "_ts": 1_700_000_000,
        }))),
        (method, ["dbs", db, "colls", coll, rest @ ..]) if *db == database => {
            let mut state = shared.lock();
            let Some(container) = state.containers.iter_mut().find(|c| c.name == *coll) else {
                return Err(Refusal::new(StatusCode::NOT_FOUND, "no such container"));
            };
            // A keyed request sent to a range must be sent to that key's range.
            if let (Some(_), Some(pk)) = (
                header(headers, "x-ms-documentdb-partitionkeyrangeid"),
                header(headers, "x-ms-documentdb-partitionkey"),
            ) && header(headers, "a-im").is_none()
            {
                let pk: Vec<String> = serde_json::from_str(pk).map_err(|_| {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "the partition key is not a JSON array",
                    )
                })?;
                if let [pk] = pk.as_slice() {
                    named_range(container, headers, Some(pk))?;
                }
            }
            match (method, rest) {
                (Method::GET, []) => Ok(ok(container.metadata(&shared.db_rid))),
                (Method::GET, ["pkranges"]) => Ok(partition_key_ranges(container, headers)),
                (Method::POST, ["docs"]) => {
                    let flag = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
                    };
                    if flag("x-ms-cosmos-is-query-plan-request") {
                        // Only single-partition queries are served; they need no plan.
                        Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "query plans are not modelled: query one partition",
                        ))
                    } else if flag("x-ms-cosmos-is-batch-request") {
                        batch(container, headers, body)
                    } else if flag("x-ms-documentdb-isquery") {
                        query(container, headers, body)
                    } else {
                        let upsert = flag("x-ms-documentdb-is-upsert");
                        write(container, headers, body, None, upsert)
                    }
                }
                (Method::GET, ["docs"]) if headers.contains_key("a-im") => {
                    change_feed(container, headers)
                }
                (Method::GET, ["docs", id]) => read(container, headers, id),
                (Method::PUT, ["docs", id]) => write(container, headers, body, Some(id), false),
                (Method::DELETE, ["docs", id]) => delete(container, headers, id),
                _ => Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "not part of the fake",
                )),
            }
        }
        _ => Err(Refusal::new(StatusCode::NOT_FOUND, "no such resource")),
    }
}

fn ok(body: Value) -> Response {
    with_status(StatusCode::OK, body)
}

fn with_status(status: StatusCode, body: Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn account(shared: &Shared) -> Response {
    let location = json!([{"name": "Local", "databaseAccountEndpoint": shared.endpoint}]);
    ok(json!({
        "id": "orderflow-fake",
        "_rid": "orderflow-fake.sql.cosmos.azure.com",
        "_self": "",
        "media": "//media/",
        "addresses": "//addresses/",
        "_dbs": "//dbs/",
        "writableLocations": location,
        "readableLocations": location,
        "enableMultipleWriteLocations": false,
        "userConsistencyPolicy": {"defaultConsistencyLevel": "Session"},
        "userReplicationPolicy": {"minReplicaSetSize": 1, "maxReplicasetSize": 4},
    }))
}

fn partition_key_ranges(container: &Container, headers: &HeaderMap) -> Response {
    // The ranges never change, so their etag does not either.
    let etag = format!("\"{}-ranges\"", container.rid());
    let mut response = if header(headers, "if-none-match") == Some(etag.as_str()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let ranges: Vec<Value> = container
            .ranges
            .iter()
            .map(|range| {
                json!({
                    "id": range.id, "minInclusive": range.min, "maxExclusive": range.max,
                    "status": "online", "parents": range.parents,
                    "throughputFraction": 1.0 / container.ranges.len() as f64,
                    "_rid": container.rid(), "_etag": etag,
                })
            })
            .collect();
        ok(json!({
            "_rid": container.rid(),
            "PartitionKeyRanges": ranges,
            "_count": container.ranges.len(),
        }))
    };
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert("etag", value);
    }
    response
}

/// The range a request names, checked against the container's ranges and, when the request
/// also names a partition key, against that key's EPK (`410`/1002 when it lies elsewhere).
fn named_range<'c>(
    container: &'c Container,
    headers: &HeaderMap,
    partition: Option<&str>,
) -> Result<Option<&'c KeyRange>, Refusal> {
    let Some(id) = header(headers, "x-ms-documentdb-partitionkeyrangeid") else {
        return Ok(None);
    };
    let Some(range) = container.ranges.iter().find(|r| r.id == id) else {
        return Err(Refusal::gone(format!(
            "partition key range {id:?} is not one of this container's"
        )));
    };
    if let Some(pk) = partition
        && !range.holds(&effective_partition_key(pk))
    {
        return Err(Refusal::gone(format!(
            "partition key {pk:?} is not in partition key range {id:?}"
        )));
    }
    Ok(Some(range))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The logical partition a request names: `x-ms-documentdb-partitionkey: ["value"]`.
fn partition_key(headers: &HeaderMap) -> Result<String, Refusal> {
    let raw = header(headers, "x-ms-documentdb-partitionkey").ok_or_else(|| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "x-ms-documentdb-partitionkey is required",
        )
    })?;
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(values)) if values.len() == 1 => match &values[0] {
            Value::String(key) => Ok(key.clone()),
            _ => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "only string partition keys are modelled",
            )),
        },
        _ => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("malformed partition key header {raw:?}"),
        )),
    }
}

/// The document's own partition key must be the one the request names.
fn check_body(container: &Container, pk: &str, body: &Value) -> Result<String, Refusal> {
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "a document needs a string id"))?;
    if body.get(&container.pk_field).and_then(Value::as_str) != Some(pk) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "PartitionKey extracted from document doesn't match the one specified in the header ({pk:?})"
            ),
        ));
    }
    if let Some(ttl) = body.get("ttl")
        && !ttl.as_i64().is_some_and(|t| t == -1 || t > 0)
    {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "ttl must be -1 or positive",
        ));
    }
    Ok(id.to_owned())
}

fn document_response(status: StatusCode, doc: &Doc) -> Response {
    let mut response = with_status(status, doc.body.clone());
    if let Ok(etag) = HeaderValue::from_str(&doc.etag) {
        response.headers_mut().insert("etag", etag);
    }
    if let Ok(lsn) = HeaderValue::from_str(&doc.lsn.to_string()) {
        response.headers_mut().insert("lsn", lsn);
    }
    response
}

fn parse_json(body: &Bytes) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
    })
}

/// Create, upsert (`POST …/docs`) or replace (`PUT …/docs/{id}`), honouring `If-Match`.
fn write(
    container: &mut Container,
    headers: &HeaderMap,
    body: &Bytes,
    replace_id: Option<&str>,
    upsert: bool,
) -> Answer {
    let pk = partition_key(headers)?;
    let body = parse_json(body)?;
    let if_match = header(headers, "if-match");
    let op = match (replace_id, upsert) {
        (Some(_), _) => Op::Replace,
        (None, true) => Op::Upsert,
        (None, false) => Op::Create,
    };
    let id = check_body(container, &pk, &body)?;
    if replace_id.is_some_and(|path_id| path_id != id) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the body's id is not the one in the path",
        ));
    }
    let now = now_ms();
    let lsn = container.lsn + 1;
    let (status, doc) = apply(container, &pk, op, &id, Some(body), if_match, lsn, now)?;
    container.lsn = lsn;
    Ok(document_response(status, &doc))
}

fn read(container: &Container, headers: &HeaderMap, id: &str) -> Answer {
    let pk = partition_key(headers)?;
    match container.live(&pk, id, now_ms()) {
        Some(doc) if header(headers, "if-none-match") == Some(doc.etag.as_str()) => {
            Ok(StatusCode::NOT_MODIFIED.into_response())
        }
        Some(doc) => Ok(document_response(StatusCode::OK, doc)),
        None => Err(Refusal::new(StatusCode::NOT_FOUND, "no such document")),
    }
}

fn delete(container: &mut Container, headers: &HeaderMap, id: &str) -> Answer {
    let pk = partition_key(headers)?;
    let now = now_ms();
    let lsn = container.lsn + 1;
    apply(
        container,
        &pk,
        Op::Delete,
        id,
        None,
        header(headers, "if-match"),
        lsn,
        now,
    )?;
    container.lsn = lsn;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Clone, Copy)]
enum Op {
    Create,
    Upsert,
    Replace,
    Read,
    Delete,
}

/// One write (or read) on a logical partition; the caller commits `lsn`.
#[allow(clippy::too_many_arguments)]
fn apply(
    container: &mut Container,
    pk: &str,
    op: Op,
    id: &str,
    body: Option<Value>,
    if_match: Option<&str>,
    lsn: u64,
    now: i64,
) -> Result<(StatusCode, Doc), Refusal> {
    let existing = container.live(pk, id, now).cloned();
    if let (Some(etag), Some(doc)) = (if_match, &existing)
        && etag != doc.etag
    {
        return Err(Refusal::new(
            StatusCode::PRECONDITION_FAILED,
            "the document's etag is not the If-Match one",
        ));
    }
    let key = (pk.to_owned(), id.to_owned());
    match (op, existing) {
        (Op::Create, Some(_)) => Err(Refusal::new(
            StatusCode::CONFLICT,
            "Entity with the specified id already exists in the system.",
        )),
        (Op::Replace | Op::Read | Op::Delete, None) => {
            Err(Refusal::new(StatusCode::NOT_FOUND, "no such document"))
        }
        (Op::Upsert, None) if if_match.is_some() => Err(Refusal::new(
            StatusCode::PRECONDITION_FAILED,
            "If-Match on a document that does not exist",
        )),
        (Op::Read, Some(doc)) => Ok((StatusCode::OK, doc)),
        (Op::Delete, Some(doc)) => {
            container.docs.remove(&key);
            Ok((StatusCode::NO_CONTENT, doc))
        }
        (op, existing) => {
            let doc = container.stamp(body.unwrap_or_default(), lsn, now);
            container.docs.insert(key, doc.clone());
            let status = match (op, existing) {
                (Op::Create, _) | (Op::Upsert, None) => StatusCode::CREATED,
                _ => StatusCode::OK,
            };
            Ok((status, doc))
        }
    }
}

/// A transactional batch: every operation or none, all at one LSN.
fn batch(container: &mut Container, headers: &HeaderMap, body: &Bytes) -> Answer {
    if body.len() > MAX_BATCH_REQUEST_BYTES {
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request size is too large",
        ));
    }
    let pk = partition_key(headers)?;
    let atomic =
        header(headers, "x-ms-cosmos-batch-atomic").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !atomic {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "only atomic batches are modelled",
        ));
    }
    let Value::Array(operations) = parse_json(body)? else {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "a batch is a JSON array",
        ));
    };
    if operations.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Batch request has no operations.",
        ));
    }
    if operations.len() > MAX_BATCH_OPERATIONS {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Batch request has more operations than what is supported.",
        ));
    }
    let mut parsed = Vec::with_capacity(operations.len());
    for operation in operations {
        let kind = match operation["operationType"].as_str() {
            Some("Create") => Op::Create,
            Some("Upsert") => Op::Upsert,
            Some("Replace") => Op::Replace,
            Some("Read") => Op::Read,
            Some("Delete") => Op::Delete,
            other => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("unknown batch operation {other:?}"),
                ));
            }
        };
        let resource = operation.get("resourceBody").cloned();
        let id = match &resource {
            Some(resource) => check_body(container, &pk, resource)?,
            None => operation["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "an operation needs an id"))?,
        };
        let if_match = operation["ifMatch"].as_str().map(str::to_owned);
        parsed.push((kind, id, resource, if_match));
    }

    // Each operation's previous document is kept, so that a failure puts everything back.
    let now = now_ms();
    let lsn = container.lsn + 1;
    let mut undo = Vec::new();
    let total = parsed.len();
    let mut results = Vec::with_capacity(parsed.len());
    let mut failed = None;
    for (index, (kind, id, resource, if_match)) in parsed.into_iter().enumerate() {
        let key = (pk.clone(), id.clone());
        let previous = container.docs.get(&key).cloned();
        undo.push((key, previous));
        match apply(
            container,
            &pk,
            kind,
            &id,
            resource,
            if_match.as_deref(),
            lsn,
            now,
        ) {
            Ok((status, doc)) => {
                let mut result = json!({
                    "statusCode": status.as_u16(), "requestCharge": 1.0, "eTag": doc.etag,
                });
                if !matches!(kind, Op::Delete) {
                    result["resourceBody"] = doc.body;
                }
                results.push(result);
            }
            Err(Refusal(status, _, message)) => {
                failed = Some((index, status, message));
                break;
            }
        }
    }
    if let Some((index, status, message)) = failed {
        for (key, previous) in undo.into_iter().rev() {
            match previous {
                Some(doc) => container.docs.insert(key, doc),
                None => container.docs.remove(&key),
            };
        }
        let results: Vec<Value> = (0..total)
            .map(|i| {
                if i == index {
                    json!({"statusCode": status.as_u16(), "requestCharge": 1.0, "message": message})
                } else {
                    json!({"statusCode": 424, "requestCharge": 0.0})
                }
            })
            .collect();
        return Ok(with_status(StatusCode::MULTI_STATUS, Value::Array(results)));
    }
    container.lsn = lsn;
    Ok(ok(Value::Array(results)))
}

/// The one single-partition query of [`STREAM_QUERY`], paged.
fn query(container: &Container, headers: &HeaderMap, body: &Bytes) -> Answer {
    if header(headers, "content-type") != Some("application/query+json") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "a query's Content-Type must be application/query+json",
        ));
    }
    let pk = partition_key(headers)?;
    let spec = parse_json(body)?;
    let text = spec["query"].as_str().unwrap_or_default();
    if normalize(text) != normalize(STREAM_QUERY) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the fake understands only {STREAM_QUERY:?}, not {text:?}"),
        ));
    }
    let parameter = |name: &str| {
        spec["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .map(|p| p["value"].clone())
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, format!("no parameter {name}")))
    };
    let stream = parameter("@s")?;
    let from = parameter("@v")?
        .as_u64()
        .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "@v must be a number"))?;
    // The continuation is the last version served.
    let after = match header(headers, "x-ms-continuation") {
        Some(token) => Some(token.parse::<u64>().map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "not a continuation this fake issued",
            )
        })?),
        None => None,
    };
    let page_size = max_item_count(headers)?;
    let now = now_ms();
    let mut matching: Vec<&Doc> = container
        .docs
        .range((pk.clone(), String::new())..)
        .take_while(|((key, _), _)| *key == pk)
        .map(|(_, doc)| doc)
        .filter(|doc| !container.expired(doc, now))
        .filter(|doc| doc.body["streamId"] == stream)
        .filter(|doc| {
            doc.body["version"]
                .as_u64()
                .is_some_and(|v| v >= from && after.is_none_or(|a| v > a))
        })
        .collect();
    matching.sort_by_key(|doc| doc.body["version"].as_u64());
    let more = matching.len() > page_size;
    matching.truncate(page_size);
    let documents: Vec<Value> = matching.iter().map(|d| d.body.clone()).collect();
    let last = matching.last().and_then(|d| d.body["version"].as_u64());
    let mut response = ok(json!({
        "_rid": container.rid(), "Documents": documents, "_count": documents.len(),
    }));
    if let (true, Some(last)) = (more, last)
        && let Ok(value) = HeaderValue::from_str(&last.to_string())
    {
        response.headers_mut().insert("x-ms-continuation", value);
    }
    Ok(response)
}

fn max_item_count(headers: &HeaderMap) -> Result<usize, Refusal> {
    match header(headers, "x-ms-max-item-count") {
        None | Some("-1") => Ok(100),
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "bad x-ms-max-item-count")),
    }
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The change feed of the one partition key range (or of one logical partition).
fn change_feed(container: &Container, headers: &HeaderMap) -> Answer {
    if header(headers, "a-im") != Some("Incremental Feed") {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "only A-IM: Incremental Feed (latest version) is modelled",
        ));
    }
    let partition = match header(headers, "x-ms-documentdb-partitionkey") {
        Some(_) => Some(partition_key(headers)?),
        None => None,
    };
    let range = named_range(container, headers, partition.as_deref())?;
    if range.is_none() && partition.is_none() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "a change feed names a partition key range or a partition key",
        ));
    }
    // An EPK sub-range of the range, where the SDK reads a feed range narrower than a range.
    let (start_epk, end_epk) = (
        header(headers, "x-ms-start-epk").map(str::to_owned),
        header(headers, "x-ms-end-epk").map(str::to_owned),
    );
    let since = match header(headers, "if-none-match") {
        None => 0,
        Some("*") => container.lsn,
        Some(etag) => etag.trim_matches('"').parse::<u64>().map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("not a feed etag: {etag:?}"),
            )
        })?,
    };
    let page_size = max_item_count(headers)?;
    let now = now_ms();
    let mut changes: Vec<&Doc> = container
        .docs
        .iter()
        .filter(|((pk, _), _)| partition.as_ref().is_none_or(|p| p == pk))
        .filter(|((pk, _), _)| {
            let epk = || effective_partition_key(pk);
            range.is_none_or(|r| r.holds(&epk()))
                && start_epk.as_ref().is_none_or(|s| epk() >= *s)
                && end_epk.as_ref().is_none_or(|e| epk() < *e)
        })
        .map(|(_, doc)| doc)
        .filter(|doc| doc.lsn > since && !container.expired(doc, now))
        .collect();
    changes.sort_by_key(|doc| doc.lsn);
    // Whole LSNs only: a batch's documents never straddle two pages.
    let mut page = Vec::new();
    for doc in changes {
        if page.len() >= page_size && page.last().is_some_and(|d: &&Doc| d.lsn != doc.lsn) {
            break;
        }
        page.push(doc);
    }
    let range_id = range.map_or(RANGE_ID, |r| r.id);
    let Some(last) = page.last() else {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        set_etag(&mut response, since.max(container.lsn), range_id);
        return Ok(response);
    };
    let last_lsn = last.lsn;
    let documents: Vec<Value> = page
        .iter()
        .map(|doc| {
            json!({
                "current": doc.body,
                "metadata": {"lsn": doc.lsn, "crts": doc.written_ms / 1000, "operationType": "create"},
            })
        })
        .collect();
    let mut response = ok(json!({
        "_rid": container.rid(), "Documents": documents, "_count": documents.len(),
    }));
    set_etag(&mut response, last_lsn, range_id);
    Ok(response)
}

fn set_etag(response: &mut Response, lsn: u64, range_id: &'static str) {
    if let Ok(value) = HeaderValue::from_str(&format!("\"{lsn}\"")) {
        response.headers_mut().insert("etag", value);
    }
    if let Ok(value) = HeaderValue::from_str(&lsn.to_string()) {
        response.headers_mut().insert("lsn", value);
    }
    response.headers_mut().insert(
        "x-ms-documentdb-partitionkeyrangeid",
        HeaderValue::from_static(range_id),
    );
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        let random = Uuid::new_v4();
        chunk.copy_from_slice(&random.as_bytes()[..chunk.len()]);
    }
    out
}

fn encode_rid(bytes: &[u8]) -> String {
    STANDARD.encode(bytes).replace('/', "-")
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
fn form_decode(text: &str) -> String {
    percent_decode(&text.replace('+', " "))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
