//! The Redis view store: the read-model cache shared by every process (fred, pooled).
//!
//! # URL
//!
//! `redis://[user:password@]host:port[/db][?prefix=NAME]`, or `rediss://` for TLS (Azure Cache
//! for Redis: `rediss://:ACCESS_KEY@NAME.redis.cache.windows.net:6380`, the key
//! percent-encoded), trusting the system's roots or only the CAs of `ca-file=PATH` (a PEM
//! file; see `redis_tls.rs`). The bulk writer's connections use the same TLS. `prefix` and
//! `ca-file` are ours, not Redis's: they are taken off before the URL reaches fred (given
//! twice, the last wins). It defaults to
//! `orderflow` and may hold ASCII letters, digits, `-`, `_` and `.`, so it never contains the
//! `:` separator nor a glob character: `{prefix}:*` then matches this store's keys and no
//! other prefix's.
//!
//! # Key layout
//!
//! Every key the adapter touches lives under `{prefix}:`, so tests and deployments sharing one
//! Redis stay apart:
//!
//! | what | key | Redis type |
//! |---|---|---|
//! | document `key` | `{prefix}:doc:{key}` | hash `{v: version, b: body}` |
//! | index `index` | `{prefix}:idx:{index}` | sorted set, score = the index score |
//! | claim `key` | `{prefix}:claim:{key}` | string: `lease` with the lease as its TTL, then `done` for 30 days |
//! | channel `channel` | `{prefix}:chan:{channel}` | pub/sub channel (channels ignore `/db`, the prefix does not) |
//!
//! A claim is taken by [`CLAIM_LUA`]: a leased claim expires with its lease (`PX`), so a worker
//! that dies before it completes the work leaves nothing behind once the lease ends; a done
//! claim expires after 30 days because it only has to outlive redeliveries of one event, far
//! beyond any retry schedule, and that keeps the keyspace from growing forever.
//!
//! # Compare-on-version
//!
//! `put` runs [`PUT_LUA`] (atomic, as every Lua script is): it writes `v` and `b` only if the
//! stored `v` equals the expected version, a missing hash counting as `0`. Versions travel and
//! are compared as decimal strings, so no `u64` passes through Lua's doubles. The script is
//! loaded once at [`RedisViewStore::connect`] and run by `EVALSHA`; a `NOSCRIPT` answer (Redis
//! restarted or its script cache flushed) falls back to `EVAL`, which also caches it again.
//!
//! `overwrite_many` and `index_add_many` are the replay path: plain `HSET`s, and one `ZADD` per
//! index with all of its new members, without a version check (a replay writes a generation
//! nobody else writes yet), sent in Redis's own protocol on connections of their own
//! (`redis_bulk.rs`, which says why).
//!
//! # Paging with a cursor
//!
//! `index_page` runs [`PAGE_LUA`]. Redis orders a sorted set by `(score, member)`, members
//! compared bytewise, which is exactly the port's order, so a page is a slice of ranks from the
//! top (`ZREVRANGE start stop WITHSCORES`). Without a cursor it starts at rank 0. With a cursor
//! `(s, m)` the script finds the first rank strictly after it, atomically: `ZCOUNT (s +inf`
//! members rank above every tie; `ZCOUNT s s` more are the ties at `s`, whose members descend
//! bytewise; a binary search over those tie ranks (one `ZREVRANGE r r` per probe, a bytewise
//! comparison written in Lua because Lua's `<` on strings follows the server's locale) finds the
//! first tie below `m`. Cost: `O(log n)` probes then the page, however many members share a
//! score (the catalog puts every SKU at score 0), and it works when the cursor's member is gone
//! or was re-scored. (The "inclusive max at the cursor score, then skip ties" reading of
//! `ZREVRANGEBYSCORE` needs to know how many ties to skip; the rank search answers exactly that.)
//!
//! Scores are doubles in Redis: every integer up to ±2^53 is exact (microsecond timestamps
//! reach 2^53 in the year 2255). `index_add` refuses a score beyond that rather than round it.
//!
//! # Pub/sub
//!
//! `publish` goes through the pool. Each `subscribe` opens its own connection, named
//! `{prefix}:sub` in `CLIENT LIST`, with no reconnection: when that connection is lost the
//! stream ends, and the subscriber subscribes again (the port's contract), instead of a silent
//! reconnect hiding the messages missed in between. Dropping the stream closes the connection.
//! A half-open TCP connection that never reports an error would keep the stream open; the
//! projector's pollers are the backstop for that.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{
    Builder, Client, ClientLike, Config, Error as FredError, EventInterface, Expiration, FromValue,
    HashesInterface, KeysInterface, LuaInterface, Pool, PubsubInterface, ReconnectPolicy,
    SortedSetsInterface,
};
use fred::types::config::ServerConfig;
use fred::types::{ClusterHash, ConnectHandle, CustomCommand, Message};
use futures_util::stream::BoxStream;
use projections::view_store::{Claim, Doc, ViewError, ViewStore};
use tokio::sync::broadcast;

use super::redis_bulk::{Bulk, Commands};

/// The prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "orderflow";

/// How long a completed claim is kept (`EX`): 30 days.
const CLAIM_SECONDS: i64 = 30 * 24 * 60 * 60;

/// Connections in the pool; commands go round-robin.
const POOL_SIZE: usize = 4;

/// A command that has no answer by then fails (instead of waiting out a reconnection forever),
/// so `/ready` and callers see an unavailable cache.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);

/// Scores Redis keeps exactly (integers in a double).
const MAX_EXACT_SCORE: i64 = 1 << 53;

/// A page never asks for more than this, so rank arithmetic stays exact in Lua.
const MAX_PAGE: usize = 1 << 30;

/// Compare-on-version write. `KEYS[1]`: the doc hash. `ARGV`: expected version, new version,
/// body.
pub const PUT_LUA: &str = r"
local current = redis.call('HGET', KEYS[1], 'v')
if (current or '0') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'b', ARGV[3])
return 1
";

/// A page of an index, newest first. `KEYS[1]`: the sorted set. `ARGV`: limit, then optionally the
/// cursor's score and member. Answers `[member, score, member, score, ...]`.
pub const PAGE_LUA: &str = r"
local function below(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end
local key, limit = KEYS[1], tonumber(ARGV[1])
local start = 0
if ARGV[2] then
  local score, member = ARGV[2], ARGV[3]
  start = redis.call('ZCOUNT', key, '(' .. score, '+inf')
  local stop = start + redis.call('ZCOUNT', key, score, score)
  while start < stop do
    local mid = math.floor((start + stop) / 2)
    if below(redis.call('ZREVRANGE', key, mid, mid)[1], member) then
      stop = mid
    else
      start = mid + 1
    end
  end
end
return redis.call('ZREVRANGE', key, start, start + limit - 1, 'WITHSCORES')
";

/// Takes a claim. `KEYS[1]`: the claim. `ARGV[1]`: the lease in milliseconds. Answers -2 when
/// this call took it, -1 when its work is done, or the milliseconds left on another's lease.
/// A claim's value is `lease` while leased and anything else once done (claims written before
/// leases existed hold `1`: done).
pub const CLAIM_LUA: &str = r"
local held = redis.call('GET', KEYS[1])
if held == 'lease' then
  return math.max(redis.call('PTTL', KEYS[1]), 0)
end
if held then
  return -1
end
redis.call('SET', KEYS[1], 'lease', 'PX', ARGV[1])
return -2
";

/// Gives a lease back. `KEYS[1]`: the claim. A done claim stays.
pub const UNCLAIM_LUA: &str = r"
if redis.call('GET', KEYS[1]) == 'lease' then
  redis.call('DEL', KEYS[1])
end
return 0
";

/// A Lua script and the SHA1 Redis knows it by.
struct Script {
    lua: &'static str,
    sha: String,
}

impl Script {
    async fn load(pool: &Pool, lua: &'static str) -> Result<Self, ViewError> {
        let sha: String = pool.script_load(lua).await.map_err(view_error)?;
        Ok(Self { lua, sha })
    }
}

/// The `ViewStore` on Redis. See the [module docs](self) for the key layout and the scripts.
pub struct RedisViewStore {
    pool: Pool,
    prefix: String,
    put_script: Script,
    page_script: Script,
    claim_script: Script,
    unclaim_script: Script,
    /// Makes the connection of each subscription: the pool's configuration, no reconnection.
    subscriber: Builder,
    /// `overwrite_many` and `index_add_many`, in Redis's protocol on connections of their own.
    bulk: Bulk,
}

impl RedisViewStore {
    /// Connects a pool to the Redis at `url` (see the [module docs](self)) and loads the
    /// scripts. Fails if Redis does not answer now; later outages are retried in the
    /// background, and commands fail after a timeout meanwhile.
    pub async fn connect(url: &str) -> Result<Self, ViewError> {
        Self::connect_with_password(url, None).await
    }

    /// [`Self::connect`], with `password` (an access key) when the URL names none, so that a
    /// key can come from the environment instead of the URL.
    #[tracing::instrument(skip_all)]
    pub async fn connect_with_password(
        url: &str,
        password: Option<&str>,
    ) -> Result<Self, ViewError> {
        let target = parse_target(url)?;
        let prefix = target.prefix.clone();
        let mut config = Config::from_url(&target.url).map_err(view_error)?;
        if config.password.is_none() {
            config.password = password.map(str::to_owned);
        }
        let tls = if target.tls() {
            let client = super::redis_tls::client_config(target.ca_file.as_deref())?;
            config.tls = Some(fred::types::config::TlsConnector::from((*client).clone()).into());
            Some(client)
        } else {
            None
        };
        let ServerConfig::Centralized { server } = &config.server else {
            return Err(ViewError::Unavailable(
                "the Redis view store takes redis://host:port URLs (no cluster, no sentinel)"
                    .into(),
            ));
        };
        let bulk = Bulk::new(
            &format!("{prefix}:bulk"),
            (server.host.to_string(), server.port),
            &config,
            tls,
            COMMAND_TIMEOUT,
        )?;
        let mut builder = Builder::from_config(config);
        builder.with_performance_config(|perf| perf.default_command_timeout = COMMAND_TIMEOUT);
        let mut subscriber = builder.clone();
        subscriber.with_performance_config(|perf| perf.broadcast_channel_capacity = 1024);
        builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));

        let pool = builder.build_pool(POOL_SIZE).map_err(view_error)?;
        pool.init().await.map_err(view_error)?;
        let put_script = Script::load(&pool, PUT_LUA).await?;
        let page_script = Script::load(&pool, PAGE_LUA).await?;
        let claim_script = Script::load(&pool, CLAIM_LUA).await?;
        let unclaim_script = Script::load(&pool, UNCLAIM_LUA).await?;
        tracing::info!(%prefix, "connected to the Redis view store");
        Ok(Self {
            pool,
            prefix,
            put_script,
            page_script,
            claim_script,
            unclaim_script,
            subscriber,
            bulk,
        })
    }

    /// The prefix every key of this store starts with (followed by `:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes every key under this store's prefix (`SCAN MATCH {prefix}:*`, then `UNLINK`) and
    /// answers how many. Never `FLUSHDB`: other prefixes on the same Redis stay.
    #[tracing::instrument(skip(self), fields(prefix = %self.prefix))]
    pub async fn clear(&self) -> Result<u64, ViewError> {
        self.unlink_matching(format!("{}:*", self.prefix)).await
    }

    /// `SCAN MATCH pattern` and `UNLINK` what it finds, a page at a time.
    async fn unlink_matching(&self, pattern: String) -> Result<u64, ViewError> {
        let client = self.pool.next();
        let mut cursor = "0".to_owned();
        let mut deleted = 0;
        loop {
            let (next, keys): (String, Vec<String>) = client
                .scan_page(cursor, pattern.clone(), Some(1000), None)
                .await
                .map_err(view_error)?;
            if !keys.is_empty() {
                let n: u64 = client.unlink(keys).await.map_err(view_error)?;
                deleted += n;
            }
            if next == "0" {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    /// Runs `script` by `EVALSHA`, or by `EVAL` if Redis lost it.
    async fn eval<R: FromValue>(
        &self,
        script: &Script,
        key: String,
        args: Vec<String>,
    ) -> Result<R, ViewError> {
        let client = self.pool.next();
        match client
            .evalsha(script.sha.as_str(), key.clone(), args.clone())
            .await
        {
            Err(error) if is_noscript(&error) => {
                client.eval(script.lua, key, args).await.map_err(view_error)
            }
            answer => answer.map_err(view_error),
        }
    }
}

impl Drop for RedisViewStore {
    /// Closes the pool's connections (and stops its reconnection loop) when the store goes.
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = self.pool.clone();
            runtime.spawn(async move {
                let _ = pool.quit().await;
            });
        }
    }
}

#[async_trait]
impl ViewStore for RedisViewStore {
    #[tracing::instrument(skip(self))]
    async fn get(&self, key: &str) -> Result<Option<Doc>, ViewError> {
        let fields: Vec<Option<String>> = self
            .pool
            .hmget(self.key("doc", key), vec!["v", "b"])
            .await
            .map_err(view_error)?;
        let (Some(Some(version)), Some(body)) = (fields.first(), fields.get(1)) else {
            return Ok(None);
        };
        let version = version.parse().map_err(|_| {
            ViewError::Unavailable(format!("document {key} has a version that is not a number"))
        })?;
        Ok(Some(Doc {
            version,
            body: body.clone().unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip(self, doc), fields(version = doc.version))]
    async fn put(&self, key: &str, expected: u64, doc: Doc) -> Result<bool, ViewError> {
        let args = vec![expected.to_string(), doc.version.to_string(), doc.body];
        let written: i64 = self
            .eval(&self.put_script, self.key("doc", key), args)
            .await?;
        Ok(written == 1)
    }

    #[tracing::instrument(skip(self))]
    async fn index_add(&self, index: &str, score: i64, member: &str) -> Result<(), ViewError> {
        let score = exact_score(index, score)?;
        let () = self
            .pool
            .zadd(
                self.key("idx", index),
                None,
                None,
                false,
                false,
                (score, member),
            )
            .await
            .map_err(view_error)?;
        Ok(())
    }

    /// One bulk batch (`Bulk`) with one `ZADD` per index holding all of its members in the
    /// order given (a replay adds a thousand to the all-orders index per page).
    #[tracing::instrument(skip(self, entries), fields(entries = entries.len()))]
    async fn index_add_many(&self, entries: Vec<(String, i64, String)>) -> Result<(), ViewError> {
        // Members of different indexes do not interact: grouping them keeps the outcome of
        // applying every entry in order.
        let mut groups: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let mut slot: HashMap<String, usize> = HashMap::new();
        let mut bytes = 0;
        for (index, score, member) in entries {
            exact_score(&index, score)?;
            bytes += index.len() + member.len() + 64;
            let at = *slot.entry(index).or_insert_with_key(|index| {
                groups.push((index.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[at].1.push((score.to_string(), member));
        }
        let mut commands = Commands::with_capacity(bytes);
        for (index, members) in groups {
            let key = self.key("idx", &index);
            let mut args: Vec<&[u8]> = Vec::with_capacity(2 + 2 * members.len());
            args.push(b"ZADD");
            args.push(key.as_bytes());
            for (score, member) in &members {
                args.push(score.as_bytes());
                args.push(member.as_bytes());
            }
            commands.push(&args);
        }
        self.bulk.run(commands).await
    }

    #[tracing::instrument(skip(self))]
    async fn index_page(
        &self,
        index: &str,
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, ViewError> {
        if limit == 0 {
            // ZREVRANGE start start-1 would mean "to the end".
            return Ok(Vec::new());
        }
        let mut args = vec![limit.min(MAX_PAGE).to_string()];
        if let Some((score, member)) = before {
            args.push(score.to_string());
            args.push(member);
        }
        let flat: Vec<String> = self
            .eval(&self.page_script, self.key("idx", index), args)
            .await?;
        flat.chunks_exact(2)
            .map(|pair| Ok((parse_score(index, &pair[1])?, pair[0].clone())))
            .collect()
    }

    #[tracing::instrument(skip(self))]
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, ViewError> {
        let millis = lease.as_millis().clamp(1, i64::MAX as u128).to_string();
        let answer: i64 = self
            .eval(&self.claim_script, self.key("claim", key), vec![millis])
            .await?;
        Ok(match answer {
            -2 => Claim::Taken,
            -1 => Claim::Done,
            left => Claim::Held(Duration::from_millis(left.max(0) as u64)),
        })
    }

    #[tracing::instrument(skip(self))]
    async fn complete(&self, key: &str) -> Result<(), ViewError> {
        let _: Option<String> = self
            .pool
            .set(
                self.key("claim", key),
                "done",
                Some(Expiration::EX(CLAIM_SECONDS)),
                None,
                false,
            )
            .await
            .map_err(view_error)?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn unclaim(&self, key: &str) -> Result<(), ViewError> {
        let _: i64 = self
            .eval(&self.unclaim_script, self.key("claim", key), Vec::new())
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    /// Documents and indexes whose names start with `prefix`: glob characters in it are
    /// escaped, so a name is only ever a literal prefix.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, ViewError> {
        let literal = glob_escape(prefix);
        let docs = self
            .unlink_matching(format!("{}*", self.key("doc", &literal)))
            .await?;
        let indexes = self
            .unlink_matching(format!("{}*", self.key("idx", &literal)))
            .await?;
        Ok(docs + indexes)
    }

    async fn ping(&self) -> Result<(), ViewError> {
        let _: String = self.pool.ping(None).await.map_err(view_error)?;
        Ok(())
    }

    /// One bulk batch (`Bulk`) of `HSET`s, without a version check.
    #[tracing::instrument(skip(self, docs), fields(docs = docs.len()))]
    async fn overwrite_many(&self, docs: Vec<(String, Doc)>) -> Result<(), ViewError> {
        let bytes = docs.iter().map(|(k, d)| k.len() + d.body.len() + 96).sum();
        let mut commands = Commands::with_capacity(bytes);
        for (key, doc) in &docs {
            let key = self.key("doc", key);
            let version = doc.version.to_string();
            commands.push(&[
                b"HSET",
                key.as_bytes(),
                b"v",
                version.as_bytes(),
                b"b",
                doc.body.as_bytes(),
            ]);
        }
        self.bulk.run(commands).await
    }

    #[tracing::instrument(skip(self, message))]
    async fn publish(&self, channel: &str, message: &str) -> Result<(), ViewError> {
        let _: i64 = self
            .pool
            .next()
            .publish(self.key("chan", channel), message)
            .await
            .map_err(view_error)?;
        Ok(())
    }

    #[tracing::instrument(skip(self))]
    async fn subscribe(&self, channel: &str) -> Result<BoxStream<'static, String>, ViewError> {
        let client = self.subscriber.build().map_err(view_error)?;
        let connection = client.init().await.map_err(view_error)?;
        let mut listener = Listener {
            messages: client.message_rx(),
            channel: self.key("chan", channel),
            connection,
            client,
        };
        listener.start(&format!("{}:sub", self.prefix)).await?;
        let messages = futures_util::stream::unfold(listener, |mut listener| async move {
            let message = listener.next().await?;
            Some((message, listener))
        });
        Ok(Box::pin(messages))
    }
}

/// One subscription's own connection. Dropping it closes the connection.
struct Listener {
    client: Client,
    messages: broadcast::Receiver<Message>,
    connection: ConnectHandle,
    channel: String,
}

impl Listener {
    async fn start(&mut self, name: &str) -> Result<(), ViewError> {
        // The name only helps an operator (and a test) find the connection: best effort, since
        // an ACL may forbid CLIENT.
        let client_command = CustomCommand::new_static("CLIENT", ClusterHash::Random, false);
        let named: Result<(), FredError> = self
            .client
            .custom(client_command, vec!["SETNAME", name])
            .await;
        if let Err(error) = named {
            tracing::debug!(%error, "subscriber connection left unnamed");
        }
        self.client
            .subscribe(self.channel.as_str())
            .await
            .map_err(view_error)?;
        // fred answers SUBSCRIBE as soon as it is queued, before Redis has seen it. A
        // connection's commands run in order, so the answer to this PING proves the
        // subscription is in place: whatever is published after `subscribe` returns arrives.
        let () = self.client.ping(None).await.map_err(view_error)?;
        Ok(())
    }

    /// The next message on the channel; `None` once the connection is gone.
    async fn next(&mut self) -> Option<String> {
        loop {
            tokio::select! {
                // What already arrived is delivered before the end is reported.
                biased;
                received = self.messages.recv() => match received {
                    Ok(message) if *message.channel == *self.channel => {
                        if let Some(text) = message.value.as_string() {
                            return Some(text);
                        }
                    }
                    Ok(_) => {}
                    // A slow subscriber misses messages: pub/sub promises no more.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, channel = %self.channel, "subscriber lagged");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                ended = &mut self.connection => {
                    tracing::info!(channel = %self.channel, ?ended, "subscription connection lost");
                    return None;
                }
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // The connection task owns the socket: ending it closes the connection at once.
        self.connection.abort();
    }
}

/// Maps every fred error into the port's error: to the projector, the notifier and `/ready`,
/// any failure of the cache means "unavailable, try again".
fn view_error(error: FredError) -> ViewError {
    ViewError::Unavailable(format!("redis: {:?}: {}", error.kind(), error.details()))
}

fn is_noscript(error: &FredError) -> bool {
    error.details().starts_with("NOSCRIPT")
}

/// A score as Redis prints it (`1750000000000000`, or `1.75e+15` from newer servers).
fn parse_score(index: &str, text: &str) -> Result<i64, ViewError> {
    let corrupt = || ViewError::Unavailable(format!("index {index} has a score {text:?}"));
    let score: f64 = text.parse().map_err(|_| corrupt())?;
    let limit = MAX_EXACT_SCORE as f64;
    if score.fract() != 0.0 || !(-limit..=limit).contains(&score) {
        return Err(corrupt());
    }
    // Integral and within ±2^53, checked above: the cast is exact.
    Ok(score as i64)
}

/// What a store URL says, once our own parameters are taken off.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// The URL for fred.
    url: String,
    prefix: String,
    /// `ca-file=PATH`: the CAs to trust for `rediss://` instead of the system's.
    ca_file: Option<std::path::PathBuf>,
}

impl Target {
    fn tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }
}

/// Takes our `prefix=NAME` and `ca-file=PATH` query parameters off `url` (given twice, the
/// last wins), leaving the rest for fred.
fn parse_target(url: &str) -> Result<Target, ViewError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut prefix = DEFAULT_PREFIX;
    let mut ca_file = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        if let Some(name) = pair.strip_prefix("prefix=") {
            prefix = name;
        } else if let Some(path) = pair.strip_prefix("ca-file=") {
            let path = urlencoding::decode(path)
                .map_err(|_| ViewError::Unavailable("ca-file is not valid UTF-8".into()))?;
            ca_file = Some(std::path::PathBuf::from(path.into_owned()));
        } else {
            rest.push(pair);
        }
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if prefix.is_empty() || !prefix.chars().all(allowed) {
        return Err(ViewError::Unavailable(format!(
            "Redis key prefix {prefix:?}: use ASCII letters, digits, '-', '_' or '.'"
        )));
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let target = Target {
        url,
        prefix: prefix.to_owned(),
        ca_file,
    };
    if target.ca_file.is_some() && !target.tls() {
        return Err(ViewError::Unavailable(
            "ca-file is for TLS: use rediss://HOST:PORT (Azure Cache for Redis: port 6380)".into(),
        ));
    }
    Ok(target)
}

/// A score Redis keeps exactly (its scores are doubles: within ±2^53).
fn exact_score(index: &str, score: i64) -> Result<f64, ViewError> {
    if !(-MAX_EXACT_SCORE..=MAX_EXACT_SCORE).contains(&score) {
        return Err(ViewError::Unavailable(format!(
            "score {score} in index {index} is beyond ±2^53, which Redis cannot keep exactly"
        )));
    }
    // Exact: within ±2^53, checked above.
    Ok(score as f64)
}

/// `text` with Redis glob's special characters escaped, for `SCAN MATCH`.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Against a real Redis, so only with the `servers` feature (`cargo test --workspace`).
#[cfg(all(test, feature = "servers"))]
mod server_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_and_ca_file_parameters_are_taken_off_the_url() {
        let split = |url: &str| {
            let target = parse_target(url).expect("valid URL");
            (target.url, target.prefix)
        };
        assert_eq!(
            split("redis://127.0.0.1:6379"),
            ("redis://127.0.0.1:6379".into(), "orderflow".into())
        );
        assert_eq!(
            split("redis://h:1/2?prefix=t-1.a_b"),
            ("redis://h:1/2".into(), "t-1.a_b".into())
        );
        assert_eq!(
            split("redis://h:1?x=1&prefix=p&y=2"),
            ("redis://h:1?x=1&y=2".into(), "p".into())
        );
        assert_eq!(
            split("redis://h?prefix=a&prefix=b"),
            ("redis://h".into(), "b".into())
        );
        let tls = parse_target("rediss://:k%2Fy@h:6380?ca-file=%2Fetc%2Fca%20s.pem&prefix=p")
            .expect("valid URL");
        assert_eq!(tls.url, "rediss://:k%2Fy@h:6380");
        assert_eq!(tls.ca_file, Some("/etc/ca s.pem".into()));
        assert!(tls.tls());
    }

    #[test]
    fn a_ca_file_without_tls_is_refused() {
        let refused = parse_target("redis://h:6379?ca-file=/ca.pem").unwrap_err();
        assert!(refused.to_string().contains("rediss://"), "{refused}");
    }

    #[test]
    fn a_prefix_that_could_overlap_another_is_refused() {
        for bad in ["", "a:b", "a*", "a?b", "a b", "[x]", "é"] {
            let url = format!("redis://h?prefix={bad}");
            assert!(parse_target(&url).is_err(), "prefix {bad:?} was accepted");
        }
    }

    #[test]
    fn scores_read_back_exactly() {
        assert_eq!(
            parse_score("i", "1750000000000000"),
            Ok(1_750_000_000_000_000)
        );
        assert_eq!(parse_score("i", "1.75e+15"), Ok(1_750_000_000_000_000));
        assert_eq!(parse_score("i", "-5"), Ok(-5));
        assert!(parse_score("i", "1.5").is_err());
        assert!(parse_score("i", "inf").is_err());
        assert!(parse_score("i", "x").is_err());
    }
}
