//! The pipeline file format as written by users: plain serde types, one per YAML block.
//!
//! Nothing here is trusted yet. `validate.rs` turns a [`PipelineSpec`] into a
//! [`crate::pipeline::Pipeline`] whose invariants (known inputs, no cycles, parsable SQL, valid
//! grains and timezones) hold by construction. Every struct rejects unknown keys so a typo
//! (`filtre:`) is an error with a line and column instead of a silently ignored setting.

use serde::{Deserialize, Serialize};

// The blocks of the built-in job kinds belong to the kinds; a pipeline file embeds them.
pub use crate::job::spec::{
    ApproxCountDistinctSpec, ApproxTopSpec, CountDistinctSpec, GroupBySpec, QuantilesSpec,
    SelectSpec, TopSpec, UniqueMap,
};

/// The file format version this build reads. A pipeline declares it as `version: 1`.
pub const SPEC_VERSION: u32 = 1;

/// A whole pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Format version; lets a later Floe read old files and refuse files from the future.
    pub version: u32,
    /// Pipeline name, unique among the loaded pipelines; used in store keys and URLs.
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// IANA timezone that defines local days, weeks and months (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// First instant partitions exist for (RFC 3339, or a local date/time in `timezone`).
    pub start: String,
    /// Optional instant after which no partition exists.
    #[serde(default)]
    pub end: Option<String>,
    #[serde(default)]
    pub sources: UniqueMap<SourceSpec>,
    pub jobs: UniqueMap<JobSpec>,
    /// How the scheduler runs this pipeline by itself.
    #[serde(default)]
    pub schedule: Option<PipelineScheduleSpec>,
}

/// `schedule:` of a pipeline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineScheduleSpec {
    /// `false`: no recurring runs; backfills and manual runs only (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// After downtime: `all` missed partitions, `latest`, or the latest N (default all).
    /// Kept as a plain value so a wrong one is reported by the validator, in words.
    #[serde(default)]
    pub catchup: Option<serde_yaml::Value>,
    /// Hard cap on the partitions one catch-up plans per job (default 1000).
    #[serde(default)]
    pub max_catchup: Option<u32>,
    /// Most runs of this pipeline at once.
    #[serde(default)]
    pub concurrency: Option<u32>,
}

/// `schedule:` of a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobScheduleSpec {
    /// When due partitions are launched (5 or 6 cron fields, in the pipeline's timezone);
    /// default: as soon as each window closes.
    #[serde(default)]
    pub cron: Option<String>,
    /// Grace for late data after a window closes, e.g. `10m`.
    #[serde(default)]
    pub delay: Option<String>,
}

/// A file-backed input: a path (or glob) optionally templated by the partition time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub format: SourceFormat,
    /// Relative paths resolve against the data directory Floe is started with.
    pub path: String,
    /// The event-time column windows are filtered on.
    pub time_column: String,
    /// Timezone of naive timestamps and of the `{date}`/`{hour}` path template (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// How long a scheduled partition waits for its files to appear before failing, e.g.
    /// `2h` (default 1h); `0s` fails at once when they are missing.
    #[serde(default)]
    pub wait: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Parquet,
    Csv,
    Ndjson,
}

impl SourceFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Parquet => "parquet",
            SourceFormat::Csv => "csv",
            SourceFormat::Ndjson => "ndjson",
        }
    }
}

/// One job: a grain, its inputs and exactly one kind block.
///
/// The kind is one optional field per kind rather than a tagged enum because serde cannot
/// combine `flatten` with `deny_unknown_fields`; validation checks that exactly one is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    #[serde(default)]
    pub description: Option<String>,
    pub grain: String,
    /// Sources or upstream jobs this job reads, by name.
    pub from: OneOrMany,
    #[serde(default)]
    pub count_distinct: Option<CountDistinctSpec>,
    #[serde(default)]
    pub top: Option<TopSpec>,
    #[serde(default)]
    pub group_by: Option<GroupBySpec>,
    #[serde(default)]
    pub sql: Option<SqlSpec>,
    #[serde(default)]
    pub select: Option<SelectSpec>,
    #[serde(default)]
    pub rust: Option<RustSpec>,
    // The sketch kinds are left out of the serialised form when absent, so the definition
    // fingerprints of jobs of the other kinds (and their stored results) stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approx_count_distinct: Option<ApproxCountDistinctSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approx_top: Option<ApproxTopSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<QuantilesSpec>,
    /// Extra attempts after a failure (the scheduler applies them).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Longest a single attempt may run, e.g. `90s`, `5m`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Wait before the first retry, doubled for each further one (with jitter), e.g. `30s`.
    #[serde(default)]
    pub retry_backoff: Option<String>,
    /// Most runs of this job at once.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// When the scheduler runs this job's partitions.
    #[serde(default)]
    pub schedule: Option<JobScheduleSpec>,
    /// Data checks evaluated on every partition's result before it is committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckSpec>>,
}

/// One entry of a job's `checks:`: exactly one kind, and how a failure counts.
///
/// One optional field per kind, as [`JobSpec`]'s kinds, so an unknown key is an error with a
/// line and column; validation checks that exactly one is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// A name for the outcome (default: the kind, with its columns).
    #[serde(default)]
    pub name: Option<String>,
    /// `error` (default): a failure fails the run; `warn`: it is recorded and the run succeeds.
    #[serde(default)]
    pub severity: Option<String>,
    /// `{min, max}` rows of the result (either may be left out).
    #[serde(default)]
    pub row_count: Option<RowCountSpec>,
    /// Columns that must hold no null.
    #[serde(default)]
    pub not_null: Option<OneOrMany>,
    /// Columns whose values (together) must not repeat.
    #[serde(default)]
    pub unique: Option<OneOrMany>,
    /// A column whose values must all be among `values` (nulls are `not_null`'s concern).
    #[serde(default)]
    pub accepted_values: Option<AcceptedValuesSpec>,
    /// A SQL boolean over the result's columns that every row must satisfy.
    #[serde(default)]
    pub expression: Option<String>,
    /// The newest event of a source in the partition is at most `max_lag` before its end.
    #[serde(default)]
    pub freshness: Option<FreshnessSpec>,
    /// A metric of the result within `within` of the median of the last partitions'.
    #[serde(default)]
    pub anomaly: Option<AnomalySpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowCountSpec {
    #[serde(default)]
    pub min: Option<u64>,
    #[serde(default)]
    pub max: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValuesSpec {
    pub column: String,
    pub values: Vec<serde_yaml::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessSpec {
    /// A source the job reads.
    pub source: String,
    /// e.g. `15m`: the partition's newest event may be at most this much before its end.
    pub max_lag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnomalySpec {
    /// `row_count` (default) or a SQL aggregate over the result (`sum(sales)`).
    #[serde(default)]
    pub metric: Option<String>,
    /// How far from the median the metric may be: `30%` (of the median) or a number.
    pub within: serde_yaml::Value,
    /// How many of the job's preceding partitions make the median (default 7).
    #[serde(default)]
    pub last: Option<u32>,
    /// Fewer preceding partitions with a result than this: the check passes, saying so
    /// (default 3).
    #[serde(default)]
    pub min_history: Option<u32>,
}

/// `from: events` or `from: [a, b]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn names(&self) -> Vec<String> {
        match self {
            OneOrMany::One(name) => vec![name.clone()],
            OneOrMany::Many(names) => names.clone(),
        }
    }
}

/// `sql: "SELECT …"` or `sql: { query: "SELECT …" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SqlSpec {
    Query(String),
    Block(SqlBlock),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlBlock {
    pub query: String,
}

impl SqlSpec {
    pub fn query(&self) -> &str {
        match self {
            SqlSpec::Query(query) => query,
            SqlSpec::Block(block) => &block.query,
        }
    }
}

/// A job implemented in Rust and registered with the [`crate::job::JobRegistry`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RustSpec {
    /// Registered name of the job implementation.
    pub class: String,
    /// Free-form settings handed to the job's factory.
    #[serde(default)]
    pub config: serde_yaml::Value,
}
