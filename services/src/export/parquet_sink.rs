//! The Parquet format of `orderflow export` (the `parquet` feature): the CSV's columns, typed,
//! so pandas and DuckDB read timestamps as timestamps and absent metadata as nulls.
//!
//! Events are gathered into Arrow column builders and handed to the Parquet writer as a record
//! batch every `BATCH` rows; the writer closes a row group when its encoded size reaches
//! `ROW_GROUP_BYTES`. Memory stays bounded by those two, whatever the size of the log. The
//! footer is written last, which is why Parquet needs a file and cannot go to a pipe.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use arrow_array::builder::{
    StringBuilder, TimestampMicrosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use domain::RecordedEvent;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::CSV_COLUMNS;

/// Rows per record batch.
pub(super) const BATCH: usize = 8192;
/// Estimated encoded bytes at which a row group is closed (the writer's own default closes one
/// only every million rows, which with JSON payloads can be hundreds of megabytes in memory).
const ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;

/// The Arrow schema: `CSV_COLUMNS`, in their order, with their types. Nullable are the columns
/// the CSV leaves empty: `global_position` on Cosmos DB, and the optional metadata.
fn schema() -> SchemaRef {
    let string = || DataType::Utf8;
    let types: [(DataType, bool); CSV_COLUMNS.len()] = [
        (DataType::UInt64, true),
        (string(), false),
        (string(), false),
        (string(), false),
        (DataType::UInt64, false),
        (string(), false),
        (DataType::UInt32, false),
        (
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        (string(), false),
        (string(), true),
        (string(), true),
        (string(), false),
        (string(), true),
        (string(), false),
    ];
    let fields: Vec<Field> = CSV_COLUMNS
        .iter()
        .zip(types)
        .map(|(name, (data_type, nullable))| Field::new(*name, data_type, nullable))
        .collect();
    Arc::new(Schema::new(fields))
}

pub struct ParquetSink<W: Write> {
    schema: SchemaRef,
    writer: ArrowWriter<W>,
    columns: Columns,
}

impl<W: Write + Send> ParquetSink<W> {
    pub fn new(out: W) -> anyhow::Result<Self> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .build();
        let schema = schema();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(properties))
            .context("starting the Parquet file")?;
        Ok(ParquetSink {
            schema,
            writer,
            columns: Columns::default(),
        })
    }

    pub fn write(&mut self, event: &RecordedEvent) -> anyhow::Result<()> {
        self.columns.push(event);
        if self.columns.rows == BATCH {
            self.write_batch()?;
        }
        Ok(())
    }

    /// Writes what is gathered, then the footer, and hands the output back.
    pub fn finish(mut self) -> anyhow::Result<W> {
        if self.columns.rows > 0 {
            self.write_batch()?;
        }
        self.writer
            .into_inner()
            .context("writing the Parquet footer")
    }

    fn write_batch(&mut self) -> anyhow::Result<()> {
        let batch = RecordBatch::try_new(self.schema.clone(), self.columns.finish())
            .context("assembling a Parquet record batch")?;
        self.writer
            .write(&batch)
            .context("writing a Parquet record batch")
    }
}

/// One builder per column, in `CSV_COLUMNS`' order.
#[derive(Default)]
struct Columns {
    rows: usize,
    global_position: UInt64Builder,
    event_id: StringBuilder,
    stream_id: StringBuilder,
    stream_type: StringBuilder,
    version: UInt64Builder,
    event_type: StringBuilder,
    schema_version: UInt32Builder,
    occurred_at: TimestampMicrosecondBuilder,
    correlation_id: StringBuilder,
    causation_id: StringBuilder,
    command_id: StringBuilder,
    actor: StringBuilder,
    traceparent: StringBuilder,
    payload: StringBuilder,
}

impl Columns {
    fn push(&mut self, event: &RecordedEvent) {
        let metadata = &event.metadata;
        self.global_position.append_option(event.global_position);
        self.event_id.append_value(event.event_id.to_string());
        self.stream_id.append_value(&event.stream_id);
        self.stream_type.append_value(&event.stream_type);
        self.version.append_value(event.version);
        self.event_type.append_value(&event.event_type);
        self.schema_version.append_value(event.schema_version);
        self.occurred_at
            .append_value(event.occurred_at.timestamp_micros());
        self.correlation_id
            .append_value(metadata.correlation_id.to_string());
        self.causation_id
            .append_option(metadata.causation_id.map(|id| id.to_string()));
        self.command_id.append_option(metadata.command_id.as_ref());
        self.actor.append_value(&metadata.actor);
        self.traceparent
            .append_option(metadata.traceparent.as_ref());
        self.payload.append_value(event.payload.get());
        self.rows += 1;
    }

    /// The columns gathered so far, in the schema's order; the builders start over empty.
    fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        vec![
            Arc::new(self.global_position.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.stream_id.finish()),
            Arc::new(self.stream_type.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.schema_version.finish()),
            // The builder's timezone is not part of its default; the schema's must match.
            Arc::new(self.occurred_at.finish().with_timezone("UTC")),
            Arc::new(self.correlation_id.finish()),
            Arc::new(self.causation_id.finish()),
            Arc::new(self.command_id.finish()),
            Arc::new(self.actor.finish()),
            Arc::new(self.traceparent.finish()),
            Arc::new(self.payload.finish()),
        ]
    }
}
