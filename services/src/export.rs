//! `orderflow export`: the event log as JSON Lines, CSV or (in builds with the `parquet`
//! feature, `parquet_sink`) Parquet, for analysts' tools (pandas, DuckDB, a spreadsheet), streamed
//! page by page in constant memory.
//!
//! The log is read through the store port from its start, in its order: commit order on the
//! SQL stores, each stream's order on Cosmos DB. Every event is written in the current shape
//! of its type (`domain::upcast`), its `schema_version` saying so. Filters (`--since`, `--until`, `--type`) look
//! at each event's envelope. A file is written under a temporary name beside it and renamed
//! only once complete and synced, so a failed export never leaves a partial file under the
//! name asked for.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use domain::RecordedEvent;
use eventlog::{EventStore, LogCursor};

use crate::progress::Progress;

#[cfg(feature = "parquet")]
mod parquet_sink;

const PAGE: usize = 1000;

/// The CSV header, in order: the envelope, the metadata's fields, the payload as JSON. Kept
/// stable: columns are only ever added at the end.
pub const CSV_COLUMNS: [&str; 14] = [
    "global_position",
    "event_id",
    "stream_id",
    "stream_type",
    "version",
    "event_type",
    "schema_version",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "command_id",
    "actor",
    "traceparent",
    "payload",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line, the event as the API shows it.
    Jsonl,
    /// A header and one row per event (see `CSV_COLUMNS`).
    Csv,
    /// The CSV's columns, typed, for pandas and DuckDB; needs --output FILE and a build with
    /// the parquet feature.
    Parquet,
}

/// Why `--format parquet` fails in a build without it.
const NO_PARQUET: &str =
    "this build has no Parquet support; build it with `cargo build --release --features parquet`";

/// Which events, and where to.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub format: Format,
    /// Events that occurred at or after this moment.
    pub since: Option<DateTime<Utc>>,
    /// Events that occurred before this moment.
    pub until: Option<DateTime<Utc>>,
    /// Only these event types (any of them).
    pub types: Vec<String>,
    /// A file; standard output when `None`.
    pub output: Option<PathBuf>,
}

impl ExportOptions {
    /// Refuses what cannot work, before any store is opened or file created.
    pub fn check(&self) -> anyhow::Result<()> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since >= until
        {
            bail!("--since {since} is not before --until {until}: nothing could match");
        }
        if self.format == Format::Parquet {
            if !cfg!(feature = "parquet") {
                bail!(NO_PARQUET);
            }
            if self.output.is_none() {
                // Its footer, written last, says where everything is: a reader needs the file.
                bail!(
                    "Parquet cannot be streamed to standard output; name a file with --output FILE"
                );
            }
        }
        Ok(())
    }

    fn wants(&self, event: &RecordedEvent) -> bool {
        passes(event, self.since, self.until, &self.types)
    }
}

/// The filter analysts use everywhere (`export`, `GET /api/events`): occurred at or after
/// `since`, before `until`, and of one of `types` (any type when empty).
pub fn passes(
    event: &RecordedEvent,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    types: &[String],
) -> bool {
    since.is_none_or(|since| event.occurred_at >= since)
        && until.is_none_or(|until| event.occurred_at < until)
        && (types.is_empty() || types.contains(&event.event_type))
}

/// What an export did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Events read from the log.
    pub read: u64,
    /// Events written (those the filters kept).
    pub written: u64,
}

/// Streams the log into the output the options name.
pub async fn export(store: &dyn EventStore, options: &ExportOptions) -> anyhow::Result<Exported> {
    options.check()?;
    match &options.output {
        None => {
            // `Stdout` rather than its lock, which is not `Send` as the Parquet writer needs;
            // `BufWriter` takes the lock once per 8 KiB anyway.
            let stdout = std::io::stdout();
            let (exported, _) = write_log(store, options, BufWriter::new(stdout)).await?;
            Ok(exported)
        }
        Some(path) => {
            let partial = partial_name(path);
            let file = File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            let result = write_log(store, options, BufWriter::new(file))
                .await
                .and_then(|(exported, out)| {
                    let file = out.into_inner().map_err(|e| e.into_error())?;
                    file.sync_all().context("syncing the export to disk")?;
                    std::fs::rename(&partial, path).with_context(|| {
                        format!("renaming {} to {}", partial.display(), path.display())
                    })?;
                    Ok(exported)
                });
            if result.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            result
        }
    }
}

/// `DIR/.NAME.partial-PID`: beside the target, so the rename stays on one file system.
fn partial_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Writes every wanted event to `out` and hands `out` back, flushed.
async fn write_log<W: Write + Send>(
    store: &dyn EventStore,
    options: &ExportOptions,
    out: W,
) -> anyhow::Result<(Exported, W)> {
    let total = store.lag(&LogCursor::start()).await.unwrap_or(None);
    let mut progress = Progress::new("export", total);
    let mut sink = Sink::new(options.format, out)?;
    let mut cursor = LogCursor::start();
    let mut exported = Exported {
        read: 0,
        written: 0,
    };
    loop {
        let page = store
            .read_all(&cursor, PAGE)
            .await
            .context("reading the event log")?;
        if page.events.is_empty() {
            break;
        }
        for event in page.events.iter().filter(|e| options.wants(e)) {
            // Analysts get one shape per event type: older schema versions are upcast.
            let event = domain::upcast::upcast(event).context("upcasting an event")?;
            sink.write(&event)?;
            exported.written += 1;
        }
        exported.read += page.events.len() as u64;
        progress.advance(page.events.len() as u64);
        cursor = page.next;
    }
    let out = sink.finish()?;
    progress.finish();
    Ok((exported, out))
}

/// One format's writer.
enum Sink<W: Write> {
    Jsonl(W),
    Csv(Box<csv::Writer<W>>),
    #[cfg(feature = "parquet")]
    Parquet(Box<parquet_sink::ParquetSink<W>>),
}

impl<W: Write + Send> Sink<W> {
    fn new(format: Format, out: W) -> anyhow::Result<Self> {
        Ok(match format {
            Format::Jsonl => Sink::Jsonl(out),
            Format::Csv => {
                let mut writer = csv::Writer::from_writer(out);
                writer
                    .write_record(CSV_COLUMNS)
                    .context("writing the CSV header")?;
                Sink::Csv(Box::new(writer))
            }
            #[cfg(feature = "parquet")]
            Format::Parquet => Sink::Parquet(Box::new(parquet_sink::ParquetSink::new(out)?)),
            #[cfg(not(feature = "parquet"))]
            Format::Parquet => bail!(NO_PARQUET),
        })
    }

    fn write(&mut self, event: &RecordedEvent) -> anyhow::Result<()> {
        match self {
            Sink::Jsonl(out) => {
                serde_json::to_writer(&mut *out, event).context("writing an event")?;
                out.write_all(b"\n").context("writing an event")?;
            }
            Sink::Csv(writer) => writer
                .write_record(csv_row(event))
                .context("writing an event")?,
            #[cfg(feature = "parquet")]
            Sink::Parquet(sink) => sink.write(event)?,
        }
        Ok(())
    }

    /// Flushes everything written and hands the output back.
    fn finish(self) -> anyhow::Result<W> {
        let mut out = match self {
            Sink::Jsonl(out) => out,
            Sink::Csv(writer) => writer
                .into_inner()
                .map_err(|e| anyhow::anyhow!("flushing the CSV: {}", e.error()))?,
            #[cfg(feature = "parquet")]
            Sink::Parquet(sink) => sink.finish()?,
        };
        out.flush().context("flushing the output")?;
        Ok(out)
    }
}

fn csv_row(event: &RecordedEvent) -> [String; CSV_COLUMNS.len()] {
    let metadata = &event.metadata;
    let optional = |value: &Option<String>| value.clone().unwrap_or_default();
    [
        event
            .global_position
            .map(|p| p.to_string())
            .unwrap_or_default(),
        event.event_id.to_string(),
        event.stream_id.clone(),
        event.stream_type.clone(),
        event.version.to_string(),
        event.event_type.clone(),
        event.schema_version.to_string(),
        event
            .occurred_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        metadata.correlation_id.to_string(),
        metadata
            .causation_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        optional(&metadata.command_id),
        metadata.actor.clone(),
        optional(&metadata.traceparent),
        event.payload.get().to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use clap::ValueEnum;
    use domain::{EventMetadata, NewEvent};
    use eventlog::testing::Op;
    use eventlog::{Scripted, StoreError};
    use infra::event_store::SqliteEventStore;
    use uuid::Uuid;

    use super::*;

    fn noted(n: usize) -> Vec<NewEvent> {
        (0..n)
            .map(|i| NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "OrderNoted".into(),
                schema_version: 1,
                occurred_at: Utc::now(),
                payload: serde_json::json!({ "n": i }),
                metadata: EventMetadata::default(),
            })
            .collect()
    }

    fn to_file(format: Format, output: PathBuf) -> ExportOptions {
        ExportOptions {
            format,
            since: None,
            until: None,
            types: Vec::new(),
            output: Some(output),
        }
    }

    /// The store fails after two events were written: in every format, the export fails, and
    /// neither the file nor its temporary sibling is left behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_export_leaves_no_file() {
        for &format in Format::value_variants() {
            let dir = tempfile::tempdir().unwrap();
            let inner = SqliteEventStore::open(&dir.path().join("s.db"))
                .await
                .unwrap();
            inner.append("order-1", "order", 0, noted(5)).await.unwrap();
            // Pages of one event, the log going away after the second.
            let store = Scripted::new(Arc::new(inner));
            store.cap_pages(1);
            let gone = StoreError::Unavailable("the store went away".into());
            store.fail_after(Op::ReadAll, 2, usize::MAX, gone);
            let output = dir.path().join("out").join("events");
            std::fs::create_dir(output.parent().unwrap()).unwrap();

            let result = export(&store, &to_file(format, output.clone())).await;

            // The outage, or (Parquet in a build without it) the refusal before any file.
            let error = format!("{:#}", result.unwrap_err());
            assert!(
                error.contains("the store went away") || error == NO_PARQUET,
                "{format:?}: {error}"
            );
            let left: Vec<_> = std::fs::read_dir(output.parent().unwrap())
                .unwrap()
                .collect();
            assert!(left.is_empty(), "{format:?}: nothing left: {left:?}");
        }
    }

    /// More events than one record batch holds, one of them an `OrderShipped` at version 1: the
    /// file has every row, and the old event in the current shape.
    #[cfg(feature = "parquet")]
    #[tokio::test]
    async fn parquet_holds_every_event_in_its_current_shape() {
        use arrow_array::RecordBatch;
        use arrow_array::cast::AsArray;
        use arrow_array::types::UInt32Type;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let dir = tempfile::tempdir().unwrap();
        let store = SqliteEventStore::open(&dir.path().join("s.db"))
            .await
            .unwrap();
        let mut shipped = noted(1);
        shipped[0].event_type = "OrderShipped".into();
        shipped[0].payload = serde_json::json!({ "carrier": "DHL", "tracking": "JD0001" });
        store.append("order-1", "order", 0, shipped).await.unwrap();
        let many = parquet_sink::BATCH + 5;
        store
            .append("order-2", "order", 0, noted(many))
            .await
            .unwrap();
        let output = dir.path().join("events.parquet");

        let exported = export(&store, &to_file(Format::Parquet, output.clone()))
            .await
            .unwrap();

        let expected = 1 + many as u64;
        assert_eq!(
            exported,
            Exported {
                read: expected,
                written: expected
            }
        );
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&output).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows as u64, expected);
        let first = &batches[0];
        let column = |name: &str| first.column_by_name(name).unwrap();
        assert_eq!(
            column("event_type").as_string::<i32>().value(0),
            "OrderShipped"
        );
        assert_eq!(
            column("schema_version")
                .as_primitive::<UInt32Type>()
                .value(0),
            2
        );
        let payload: serde_json::Value =
            serde_json::from_str(column("payload").as_string::<i32>().value(0)).unwrap();
        assert_eq!(payload["tracking_number"], "JD0001");
    }

    /// Parquet's footer comes last, so it needs a file: standard output is refused up front.
    #[tokio::test]
    async fn parquet_to_standard_output_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteEventStore::open(&dir.path().join("s.db"))
            .await
            .unwrap();
        let options = ExportOptions {
            output: None,
            ..to_file(Format::Parquet, PathBuf::new())
        };

        let error = export(&store, &options).await.unwrap_err().to_string();

        let expected = if cfg!(feature = "parquet") {
            "--output FILE"
        } else {
            "--features parquet"
        };
        assert!(error.contains(expected), "{error}");
    }
}
