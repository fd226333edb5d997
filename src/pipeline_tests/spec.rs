//! The test file format as written by users: plain serde types that reject unknown keys, as the
//! pipeline format's do. Nothing here is checked yet; [`super::load`] turns a [`TestFileSpec`]
//! into [`super::TestFile`], reporting every problem with its place.
//!
//! ```yaml
//! version: 1
//! pipeline: shop                      # a pipeline of the test file's folder, by name
//! tests:
//!   registrations_in_one_hour:        # the test's name
//!     description: optional text
//!     partition: 2024-01-03T10:00     # an instant; each expected job's window containing it
//!     tolerance: 1e-9                 # optional: relative tolerance of float comparisons
//!     given:                          # rows of sources and, optionally, of upstream jobs
//!       events:
//!         rows:
//!           - {ts: 2024-01-03T10:05:00Z, user_id: 1, event: register}
//!         # or csv: fixtures/events.csv / parquet: fixtures/events.parquet
//!         schema: {user_id: int64}    # optional column types
//!     expect:                         # expected rows of one or more jobs
//!       registered_users_hourly:
//!         rows:
//!           - {distinct_count: 1}
//!         ordered: false              # optional: compare rows in order
//!         partial: false              # optional: compare only the columns the rows name
//! ```

use serde::Deserialize;

use crate::job::spec::UniqueMap;

/// The test file format version this build reads (`version: 1`).
pub const TEST_SPEC_VERSION: u32 = 1;

/// A whole test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFileSpec {
    pub version: u32,
    /// The pipeline the tests exercise, by name, among the pipelines of the test file's folder.
    pub pipeline: String,
    /// Tests by name (unique, run in file order).
    pub tests: UniqueMap<TestSpec>,
}

/// One test: given rows, an instant, expected rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    #[serde(default)]
    pub description: Option<String>,
    /// An instant (RFC 3339, or a local date or date-time in the pipeline's timezone); each
    /// expected job is checked on its partition containing it.
    pub partition: String,
    /// Rows of sources and of upstream jobs, by name.
    #[serde(default)]
    pub given: UniqueMap<GivenSpec>,
    /// Expected rows of jobs, by name.
    pub expect: UniqueMap<ExpectSpec>,
    /// Relative tolerance of float comparisons (default [`super::compare::DEFAULT_TOLERANCE`]).
    #[serde(default)]
    pub tolerance: Option<f64>,
}

/// Rows given for a source or an upstream job.
///
/// For a source: the rows at any time (each run sees those inside its window, cut on the
/// source's `time_column` as files are). For a job: its result rows in its partition containing
/// the test's instant, or per partition under `partitions`; the partitions a run reads that are
/// not given hold no rows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenSpec {
    #[serde(default)]
    pub rows: Option<Vec<serde_yaml::Value>>,
    /// A CSV file, relative to the test file's folder and inside it.
    #[serde(default)]
    pub csv: Option<String>,
    /// A Parquet file, relative to the test file's folder and inside it.
    #[serde(default)]
    pub parquet: Option<String>,
    /// Column types, when inferring them from the values is not enough.
    #[serde(default)]
    pub schema: Option<UniqueMap<String>>,
    /// A job's mergeable state in the test's partition (a `count_distinct`'s distinct keys).
    #[serde(default)]
    pub state: Option<Vec<serde_yaml::Value>>,
    /// A job's rows per partition: instant → rows of the partition containing it.
    #[serde(default)]
    pub partitions: Option<UniqueMap<GivenPartitionSpec>>,
}

/// A given job's rows in one of its partitions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenPartitionSpec {
    #[serde(default)]
    pub rows: Option<Vec<serde_yaml::Value>>,
    #[serde(default)]
    pub csv: Option<String>,
    #[serde(default)]
    pub parquet: Option<String>,
    #[serde(default)]
    pub state: Option<Vec<serde_yaml::Value>>,
}

/// The rows a job is expected to produce in its partition containing the test's instant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// Each row a mapping of column → value; `rows: []` expects no rows.
    pub rows: Vec<serde_yaml::Value>,
    /// Compare rows in order (default: as a multiset, in any order).
    #[serde(default)]
    pub ordered: bool,
    /// Compare only the columns the rows name; other produced columns are ignored.
    #[serde(default)]
    pub partial: bool,
    /// The exact type each named column must have.
    #[serde(default)]
    pub schema: Option<UniqueMap<String>>,
}
