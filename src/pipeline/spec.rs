//! The pipeline file format as written by users: plain serde types, one per YAML block.
//!
//! Nothing here is trusted yet. `validate.rs` turns a [`PipelineSpec`] into a
//! [`crate::pipeline::Pipeline`] whose invariants (known inputs, no cycles, parsable SQL, valid
//! grains and timezones) hold by construction. Every struct rejects unknown keys so a typo
//! (`filtre:`) is an error with a line and column instead of a silently ignored setting.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountDistinctSpec {
    pub column: String,
    /// SQL boolean expression over the input's columns.
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopSpec {
    pub key: String,
    /// SQL aggregate expression ranking the keys, e.g. `sum(amount)`.
    pub metric: String,
    pub n: u32,
    /// Name of the metric column in the result (default `value`).
    #[serde(default)]
    pub metric_name: Option<String>,
    #[serde(default)]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupBySpec {
    pub keys: Vec<String>,
    /// Output column → SQL aggregate expression, e.g. `sales: sum(amount)`.
    pub aggregations: UniqueMap<String>,
    #[serde(default)]
    pub filter: Option<String>,
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

/// Stages a window of a source: keeps some columns and rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectSpec {
    /// Columns to keep (all when absent).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    #[serde(default)]
    pub filter: Option<String>,
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

/// A YAML mapping that keeps declaration order and rejects duplicate keys.
///
/// serde's own map impls keep the last duplicate silently; a pipeline with two jobs of the same
/// name is a mistake the user must hear about, with the line it happened on.
#[derive(Debug, Clone, Serialize)]
pub struct UniqueMap<V>(pub Vec<(String, V)>);

impl<V> Default for UniqueMap<V> {
    fn default() -> Self {
        UniqueMap(Vec::new())
    }
}

impl<V> UniqueMap<V> {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(key, value)| (key, value))
    }
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueMapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueMapVisitor<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to definitions")
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(UniqueMap(Vec::new()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut seen = HashSet::new();
                let mut entries = Vec::new();
                while let Some(key) = access.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("duplicate name `{key}`")));
                    }
                    let value = access.next_value::<V>()?;
                    entries.push((key, value));
                }
                Ok(UniqueMap(entries))
            }
        }

        deserializer.deserialize_map(UniqueMapVisitor(PhantomData))
    }
}
