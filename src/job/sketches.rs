//! The sketch job kinds: `approx_count_distinct` (HyperLogLog), `approx_top` (frequent items)
//! and `quantiles` (KLL), on Apache DataSketches' Rust library.
//!
//! A sketch is a small summary that answers with a stated error and, unlike the answer itself,
//! merges: the sketch of a day is the union of its 24 hourly sketches. So each job keeps its
//! serialised sketch as the partition's mergeable state ([`JobOutput::state`]), and a job of
//! the same kind reading it (a daily job over an hourly one) merges the upstream partitions'
//! sketches instead of reading rows, with no key kept anywhere. Results show the estimate and
//! the bounds the sketch gives (`estimate`, `lower_bound`, `upper_bound`).
//!
//! A state is a one-row frame: the settings that decide what the sketch summarises (the
//! column; for `approx_top` the key, its item type and the weight expression), checked
//! against the merging job's own before any merge, and the sketch in `sketch`, in the
//! standard DataSketches serialisation.
//!
//! Compatibility with DataSketches in other languages (Java, C++, Python; Spark's
//! `hll_sketch_agg` is DataSketches HLL): values are hashed as those libraries hash them —
//! strings as their UTF-8 bytes (empty strings skipped, as they skip them), binary values as
//! their bytes, integers as the 8-byte little-endian long of their value (Python's
//! `update(int)`, Java's `update(long)`), floats as the canonical double (`-0.0` as `0.0`, one
//! NaN) — with the same seed (9001), so a sketch Floe made and one made elsewhere from the
//! same values agree, and either reads and merges the other's bytes. KLL sketches hold
//! doubles (Python's `kll_doubles_sketch`); frequent items sketches hold strings
//! (`frequent_strings_sketch`) or longs.
//!
//! Owns: the three kinds, their states, how values are hashed. Does not own: where states are
//! stored or how upstream states reach a job (the materialiser and `inputs`).

use std::collections::BTreeMap;

use datasketches::common::{NumStdDev, SearchCriteria};
use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use datasketches::hash::value::{canonical_float, raw_bytes};
use datasketches::hll::{HllSketch, HllType, HllUnion};
use datasketches::kll::{KllFloat, KllSketch};
use polars::prelude::*;

use super::builtin::{
    collect_errors, parse_expression, parse_optional_filter, require_single_input,
};
use super::spec::{ApproxCountDistinctSpec, ApproxTopSpec, HllTypeSpec, QuantilesSpec};
use super::{Job, JobContext, JobError, JobInput, JobOutput};
use crate::frames::cancel::collect;

/// The state column holding the serialised sketch.
pub const SKETCH_COLUMN: &str = "sketch";
/// The result column of a sketch's estimate.
pub const ESTIMATE_COLUMN: &str = "estimate";
/// The result column of the lower end of the estimate's interval.
pub const LOWER_BOUND_COLUMN: &str = "lower_bound";
/// The result column of the upper end of the estimate's interval.
pub const UPPER_BOUND_COLUMN: &str = "upper_bound";

/// `approx_count_distinct`'s default `lg_k`: 4096 registers, about 1.6% relative standard
/// error.
pub const DEFAULT_LG_K: u8 = 12;
/// `approx_top`'s default `max_map_size`.
pub const DEFAULT_MAX_MAP_SIZE: u32 = 256;
/// The largest `max_map_size` a job may ask for: a sketch of that size takes tens of MiB.
pub const MAX_MAX_MAP_SIZE: u32 = 1 << 20;
/// `quantiles`' default `k`: about 1.3% normalised rank error (99% confidence).
pub const DEFAULT_KLL_K: u16 = 200;
/// `quantiles`' default ranks: p50, p90, p99.
pub const DEFAULT_RANKS: [f64; 3] = [0.5, 0.9, 0.99];
/// Most ranks a `quantiles` job may list.
pub const MAX_RANKS: usize = 100;

/// The state column naming the column a sketch summarises.
const COLUMN_SETTING: &str = "column";
/// `approx_top`'s state columns: the key, the type of its items, the weight expression.
const KEY_SETTING: &str = "key";
const ITEMS_SETTING: &str = "items";
const WEIGHT_SETTING: &str = "weight";
/// The alias the weight expression is evaluated under.
const WEIGHT_ALIAS: &str = "__floe_weight";

fn sketch_error(err: datasketches::error::Error) -> JobError {
    JobError::Failed(format!("sketch: {err}"))
}

/// The only input of a single-input job, with its name.
fn single_named_input<'a>(ctx: &'a JobContext<'_>) -> Result<(&'a str, &'a JobInput), JobError> {
    let input = ctx.single_input()?;
    let name = ctx.inputs.keys().next().map_or("", String::as_str);
    Ok((name, input))
}

/// Where a sketch job's sketch comes from for one partition.
enum Feed<'a> {
    /// The input's rows (a source window, or an upstream job of another kind).
    Rows(Box<LazyFrame>),
    /// The sketches an upstream job of the same kind kept, one state per partition.
    States {
        upstream: &'a str,
        states: &'a [DataFrame],
    },
}

/// The feed of a job of `kind`: the upstream sketches when its input is a job of the same
/// kind, otherwise the rows matching `filter`, of which it reads `reads`.
fn feed<'a>(
    ctx: &'a JobContext<'_>,
    kind: &str,
    filter: Option<&Expr>,
    reads: Option<&[String]>,
) -> Result<Feed<'a>, JobError> {
    let (name, input) = single_named_input(ctx)?;
    match (&input.states, input.upstream_kind.as_deref()) {
        (Some(states), Some(upstream_kind)) if upstream_kind == kind => {
            if filter.is_some() {
                return Err(JobError::Invalid(format!(
                    "field `filter`: `{name}` is a `{kind}` job, whose partitions keep sketches, \
                     not rows: there is nothing to filter here; filter its rows in `{name}`"
                )));
            }
            Ok(Feed::States {
                upstream: name,
                states,
            })
        }
        _ => Ok(Feed::Rows(Box::new(input.rows_matching(
            filter,
            reads,
            &[],
        )))),
    }
}

/// One upstream partition's sketch with the settings it was made with.
struct StoredSketch {
    settings: BTreeMap<&'static str, Option<String>>,
    bytes: Vec<u8>,
}

impl StoredSketch {
    fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name).and_then(Option::as_deref)
    }

    /// Refuses a sketch made with another `setting` than `expected`: merging it would mix
    /// sketches of different things.
    fn expect(
        &self,
        upstream: &str,
        setting: &str,
        expected: Option<&str>,
        describe: impl Fn(Option<&str>) -> String,
    ) -> Result<(), JobError> {
        let found = self.setting(setting);
        if found == expected {
            Ok(())
        } else {
            Err(JobError::Invalid(format!(
                "field `{setting}`: the sketches of `{upstream}` are of {}, this job asks for {}; \
                 give both jobs the same `{setting}`",
                describe(found),
                describe(expected)
            )))
        }
    }
}

fn quoted(value: Option<&str>) -> String {
    value.map_or_else(|| "nothing".to_owned(), |value| format!("`{value}`"))
}

/// Every sketch of `states` (one row each), with its `settings` columns.
fn stored_sketches(
    upstream: &str,
    states: &[DataFrame],
    settings: &[&'static str],
) -> Result<Vec<StoredSketch>, JobError> {
    let mut sketches = Vec::new();
    for state in states {
        let unreadable = |what: &str| {
            JobError::Failed(format!(
                "a state of `{upstream}` is not a sketch: {what} (recompute `{upstream}`)"
            ))
        };
        let bytes = state
            .column(SKETCH_COLUMN)
            .ok()
            .and_then(|column| column.binary().ok())
            .ok_or_else(|| unreadable("no binary `sketch` column"))?;
        let mut columns = Vec::new();
        for setting in settings {
            let column = state
                .column(setting)
                .ok()
                .and_then(|column| column.str().ok())
                .ok_or_else(|| unreadable(&format!("no string `{setting}` column")))?;
            columns.push((*setting, column));
        }
        for row in 0..state.height() {
            let Some(bytes) = bytes.get(row) else {
                return Err(unreadable("a null sketch"));
            };
            sketches.push(StoredSketch {
                settings: columns
                    .iter()
                    .map(|(name, column)| (*name, column.get(row).map(str::to_owned)))
                    .collect(),
                bytes: bytes.to_vec(),
            });
        }
    }
    Ok(sketches)
}

/// The one-row state frame of a sketch made with `settings`.
fn state_frame(settings: &[(&str, Option<&str>)], sketch: Vec<u8>) -> PolarsResult<DataFrame> {
    let mut columns: Vec<Column> = settings
        .iter()
        .map(|(name, value)| Column::new((*name).into(), [*value]))
        .collect();
    columns.push(Column::new(SKETCH_COLUMN.into(), [sketch]));
    DataFrame::new(1, columns)
}

/// The values of `column` of `frame`: one column selected and collected.
fn column_values(rows: LazyFrame, column: &str) -> Result<Series, JobError> {
    let frame = collect(rows.select([col(column)]))?;
    Ok(frame.column(column)?.as_materialized_series().clone())
}

/// Adds the non-null values of `values` to `sketch`, hashed as DataSketches hashes them in
/// every language: strings and binary values as their bytes (empty ones skipped), integers
/// as the 8-byte little-endian long of their value, floats as canonical doubles.
pub fn hll_update(sketch: &mut HllSketch, values: &Series) -> Result<(), JobError> {
    match values.dtype() {
        DataType::String => {
            for value in values.str()?.iter().flatten() {
                if !value.is_empty() {
                    sketch.update(raw_bytes::from_str(value));
                }
            }
        }
        DataType::Binary => {
            for value in values.binary()?.iter().flatten() {
                if !value.is_empty() {
                    sketch.update(raw_bytes::from_slice(value));
                }
            }
        }
        // The long with the same 64 bits: what a u64 id above i64::MAX is to Java.
        DataType::UInt64 => {
            for value in values.u64()?.iter().flatten() {
                sketch.update(value as i64);
            }
        }
        dtype if dtype.is_integer() => {
            let longs = values.strict_cast(&DataType::Int64)?;
            for value in longs.i64()?.iter().flatten() {
                sketch.update(value);
            }
        }
        dtype if dtype.is_float() => {
            let doubles = values.cast(&DataType::Float64)?;
            for value in doubles.f64()?.iter().flatten() {
                sketch.update(canonical_float::from_f64(value));
            }
        }
        other => {
            return Err(JobError::Invalid(format!(
                "field `column`: `{}` holds {other} values; approx_count_distinct counts \
                 integers, floats, strings or binary values (cast the column in an upstream \
                 `select` or `sql` job)",
                values.name()
            )));
        }
    }
    Ok(())
}

/// An estimate with the interval around it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub estimate: f64,
    pub lower_bound: f64,
    pub upper_bound: f64,
}

/// The union of serialised HLL sketches, Floe's states or any DataSketches library's
/// (`serialize_compact()` in Python, `toCompactByteArray()` in Java), kept at most at `lg_k`:
/// its estimate, bounds at 3 standard deviations.
pub fn merge_hll(sketches: &[&[u8]], lg_k: u8) -> Result<Estimate, JobError> {
    let mut union = HllUnion::new(lg_k).map_err(sketch_error)?;
    for bytes in sketches {
        union.update(&HllSketch::deserialize(bytes).map_err(sketch_error)?);
    }
    Ok(Estimate {
        estimate: union.estimate(),
        lower_bound: union.lower_bound(NumStdDev::Three),
        upper_bound: union.upper_bound(NumStdDev::Three),
    })
}

/// Approximate number of distinct non-null values of a column, from a HyperLogLog sketch
/// that a coarser job merges.
#[derive(Debug, Clone)]
pub struct ApproxCountDistinct {
    column: String,
    lg_k: u8,
    hll_type: HllType,
    std_devs: NumStdDev,
    filter: Option<Expr>,
}

impl ApproxCountDistinct {
    pub fn from_spec(spec: &ApproxCountDistinctSpec) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let lg_k = spec.lg_k.unwrap_or(DEFAULT_LG_K);
        if !(4..=21).contains(&lg_k) {
            errors.push(format!("field `lg_k`: must be from 4 to 21, found {lg_k}"));
        }
        let std_devs = match spec.std_devs.unwrap_or(2) {
            1 => NumStdDev::One,
            2 => NumStdDev::Two,
            3 => NumStdDev::Three,
            other => {
                errors.push(format!(
                    "field `std_devs`: must be 1, 2 or 3, found {other}"
                ));
                NumStdDev::Two
            }
        };
        if spec.column.trim().is_empty() {
            errors.push("field `column`: is empty".to_owned());
        }
        let filter = parse_optional_filter(spec.filter.as_deref()).unwrap_or_else(|err| {
            errors.push(err);
            None
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ApproxCountDistinct {
            column: spec.column.clone(),
            lg_k,
            hll_type: match spec.hll_type.unwrap_or(HllTypeSpec::Hll4) {
                HllTypeSpec::Hll4 => HllType::Hll4,
                HllTypeSpec::Hll6 => HllType::Hll6,
                HllTypeSpec::Hll8 => HllType::Hll8,
            },
            std_devs,
            filter,
        })
    }

    /// This job's sketch of one partition.
    fn sketch(&self, ctx: &JobContext<'_>) -> Result<HllSketch, JobError> {
        let reads = [self.column.clone()];
        match feed(ctx, self.kind(), self.filter.as_ref(), Some(&reads))? {
            Feed::Rows(rows) => {
                let mut sketch = HllSketch::new(self.lg_k, self.hll_type).map_err(sketch_error)?;
                hll_update(&mut sketch, &column_values(*rows, &self.column)?)?;
                Ok(sketch)
            }
            Feed::States { upstream, states } => {
                // The union keeps at most this job's lg_k: a finer upstream is downsampled.
                let mut union = HllUnion::new(self.lg_k).map_err(sketch_error)?;
                for stored in stored_sketches(upstream, states, &[COLUMN_SETTING])? {
                    stored.expect(upstream, COLUMN_SETTING, Some(&self.column), |found| {
                        format!("column {}", quoted(found))
                    })?;
                    union.update(&HllSketch::deserialize(&stored.bytes).map_err(sketch_error)?);
                }
                Ok(union.to_sketch(self.hll_type))
            }
        }
    }
}

impl Job for ApproxCountDistinct {
    fn kind(&self) -> &str {
        "approx_count_distinct"
    }

    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>> {
        collect_errors([require_single_input(input_names, self.kind())])
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        let sketch = self.sketch(ctx)?;
        let frame = df!(
            ESTIMATE_COLUMN => [sketch.estimate()],
            LOWER_BOUND_COLUMN => [sketch.lower_bound(self.std_devs)],
            UPPER_BOUND_COLUMN => [sketch.upper_bound(self.std_devs)],
        )?;
        let state = state_frame(&[(COLUMN_SETTING, Some(&self.column))], sketch.serialize())?;
        Ok(JobOutput {
            frame,
            state: Some(state),
        })
    }
}

/// The items of a frequent items sketch: strings, or integers as longs.
#[derive(Debug)]
enum TopSketch {
    Strings(FrequentItemsSketch<String>),
    Longs(FrequentItemsSketch<i64>),
}

impl TopSketch {
    const STRINGS: &'static str = "string";
    const LONGS: &'static str = "long";

    fn items(&self) -> &'static str {
        match self {
            TopSketch::Strings(_) => Self::STRINGS,
            TopSketch::Longs(_) => Self::LONGS,
        }
    }

    fn total_weight(&self) -> u64 {
        match self {
            TopSketch::Strings(sketch) => sketch.total_weight(),
            TopSketch::Longs(sketch) => sketch.total_weight(),
        }
    }

    fn deserialize(items: &str, bytes: &[u8]) -> Result<TopSketch, JobError> {
        Ok(match items {
            Self::STRINGS => {
                TopSketch::Strings(FrequentItemsSketch::deserialize(bytes).map_err(sketch_error)?)
            }
            Self::LONGS => {
                TopSketch::Longs(FrequentItemsSketch::deserialize(bytes).map_err(sketch_error)?)
            }
            other => {
                return Err(JobError::Failed(format!(
                    "sketch: unknown item type `{other}`"
                )));
            }
        })
    }

    /// Merges `other` (of the same item type) into this sketch.
    fn merge(&mut self, other: &TopSketch, upstream: &str) -> Result<(), JobError> {
        if self
            .total_weight()
            .checked_add(other.total_weight())
            .is_none()
        {
            return Err(JobError::Failed(format!(
                "the total weight of `{upstream}`'s sketches exceeds 2^64"
            )));
        }
        match (self, other) {
            (TopSketch::Strings(sketch), TopSketch::Strings(other)) => sketch.merge(other),
            (TopSketch::Longs(sketch), TopSketch::Longs(other)) => sketch.merge(other),
            (this, other) => {
                return Err(JobError::Invalid(format!(
                    "field `key`: the sketches of `{upstream}` hold both {} and {} keys",
                    this.items(),
                    other.items()
                )));
            }
        }
        Ok(())
    }

    fn serialize(&self) -> Vec<u8> {
        match self {
            TopSketch::Strings(sketch) => sketch.serialize(),
            TopSketch::Longs(sketch) => sketch.serialize(),
        }
    }
}

/// The `n` most frequent values of a key (by rows, or by the sum of a weight), from a
/// frequent items sketch that a coarser job merges.
#[derive(Debug, Clone)]
pub struct ApproxTop {
    key: String,
    n: u32,
    /// The weight's SQL text (kept in the state) and its parsed expression.
    weight: Option<(String, Expr)>,
    max_map_size: usize,
    filter: Option<Expr>,
}

impl ApproxTop {
    pub fn from_spec(spec: &ApproxTopSpec) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        if spec.key.trim().is_empty() {
            errors.push("field `key`: is empty".to_owned());
        }
        if spec.n == 0 {
            errors.push("field `n`: must be at least 1".to_owned());
        }
        let max_map_size = spec.max_map_size.unwrap_or(DEFAULT_MAX_MAP_SIZE);
        if !max_map_size.is_power_of_two() || !(8..=MAX_MAX_MAP_SIZE).contains(&max_map_size) {
            errors.push(format!(
                "field `max_map_size`: must be a power of two from 8 to {MAX_MAX_MAP_SIZE}, \
                 found {max_map_size}"
            ));
        }
        let weight = match spec.weight.as_deref() {
            // Aggregates would be broadcast to every row: each row would weigh the total.
            Some(sql) => match parse_expression("weight", sql) {
                Ok(expr)
                    if (&expr)
                        .into_iter()
                        .any(|node| matches!(node, Expr::Agg(_) | Expr::Len)) =>
                {
                    errors.push(format!(
                        "field `weight`: `{sql}` aggregates; the weight is of each row (write \
                         `amount`, not `sum(amount)`: the sketch sums per key)"
                    ));
                    None
                }
                Ok(expr) => Some((sql.to_owned(), expr)),
                Err(err) => {
                    errors.push(err);
                    None
                }
            },
            None => None,
        };
        let filter = parse_optional_filter(spec.filter.as_deref()).unwrap_or_else(|err| {
            errors.push(err);
            None
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ApproxTop {
            key: spec.key.clone(),
            n: spec.n,
            weight,
            max_map_size: max_map_size as usize,
            filter,
        })
    }

    fn weight_text(&self) -> Option<&str> {
        self.weight.as_ref().map(|(text, _)| text.as_str())
    }

    /// The weight of each row: 1, or the weight expression's non-negative integers (a null
    /// weight leaves its row out).
    fn weights(&self, frame: &DataFrame) -> Result<Option<Vec<Option<u64>>>, JobError> {
        let Some((text, _)) = &self.weight else {
            return Ok(None);
        };
        let weights = frame.column(WEIGHT_ALIAS)?.as_materialized_series();
        if !weights.dtype().is_integer() {
            return Err(JobError::Invalid(format!(
                "field `weight`: `{text}` gives {} values; weights are non-negative integers \
                 (e.g. `CAST(round(amount * 100) AS BIGINT)` for cents)",
                weights.dtype()
            )));
        }
        let weights = weights.strict_cast(&DataType::Int64).map_err(|_| {
            JobError::Invalid(format!(
                "field `weight`: `{text}` gives weights beyond 2^63"
            ))
        })?;
        weights
            .i64()?
            .iter()
            .map(|weight| match weight {
                Some(weight) if weight < 0 => Err(JobError::Invalid(format!(
                    "field `weight`: `{text}` gives a negative weight ({weight}); weights are \
                     non-negative integers"
                ))),
                weight => Ok(weight.map(|weight| weight as u64)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// The sketch of the key's values in `rows`.
    fn sketch_rows(&self, rows: LazyFrame) -> Result<TopSketch, JobError> {
        let mut select = vec![col(self.key.as_str())];
        if let Some((_, weight)) = &self.weight {
            select.push(weight.clone().alias(WEIGHT_ALIAS));
        }
        let frame = collect(rows.select(select))?;
        let keys = frame.column(&self.key)?.as_materialized_series();
        let weights = self.weights(&frame)?;
        let weight_of = |row: usize| match &weights {
            None => Some(1),
            Some(weights) => weights[row],
        };
        let mut total = 0u64;
        let mut add = |weight: u64| {
            total = total.checked_add(weight).ok_or_else(|| {
                JobError::Failed("the total weight of the partition exceeds 2^64".to_owned())
            })?;
            Ok::<_, JobError>(())
        };
        match keys.dtype() {
            DataType::String => {
                let mut sketch =
                    FrequentItemsSketch::new(self.max_map_size).map_err(sketch_error)?;
                for (row, key) in keys.str()?.iter().enumerate() {
                    if let (Some(key), Some(weight)) = (key, weight_of(row)) {
                        add(weight)?;
                        sketch.update_with_count_ref(key, weight);
                    }
                }
                Ok(TopSketch::Strings(sketch))
            }
            dtype if dtype.is_integer() => {
                let longs = keys.strict_cast(&DataType::Int64).map_err(|_| {
                    JobError::Invalid(format!(
                        "field `key`: `{}` holds integers beyond 2^63",
                        self.key
                    ))
                })?;
                let mut sketch =
                    FrequentItemsSketch::new(self.max_map_size).map_err(sketch_error)?;
                for (row, key) in longs.i64()?.iter().enumerate() {
                    if let (Some(key), Some(weight)) = (key, weight_of(row)) {
                        add(weight)?;
                        sketch.update_with_count(key, weight);
                    }
                }
                Ok(TopSketch::Longs(sketch))
            }
            other => Err(JobError::Invalid(format!(
                "field `key`: `{}` holds {other} values; approx_top counts strings or integers",
                self.key
            ))),
        }
    }

    /// This job's sketch of one partition; `None` when it merges no upstream sketch.
    fn sketch(&self, ctx: &JobContext<'_>) -> Result<Option<TopSketch>, JobError> {
        let reads = self
            .weight
            .as_ref()
            .map_or(Some(vec![self.key.clone()]), |(_, weight)| {
                super::builtin::columns_read_by([self.key.as_str()], [weight])
            });
        match feed(ctx, self.kind(), self.filter.as_ref(), reads.as_deref())? {
            Feed::Rows(rows) => self.sketch_rows(*rows).map(Some),
            Feed::States { upstream, states } => {
                let settings = [KEY_SETTING, ITEMS_SETTING, WEIGHT_SETTING];
                let mut merged: Option<TopSketch> = None;
                for stored in stored_sketches(upstream, states, &settings)? {
                    stored.expect(upstream, KEY_SETTING, Some(&self.key), |found| {
                        format!("key {}", quoted(found))
                    })?;
                    stored.expect(upstream, WEIGHT_SETTING, self.weight_text(), |found| {
                        found.map_or_else(|| "row counts".to_owned(), |w| format!("sums of `{w}`"))
                    })?;
                    let items = stored.setting(ITEMS_SETTING).unwrap_or_default();
                    let sketch = TopSketch::deserialize(items, &stored.bytes)?;
                    match &mut merged {
                        None => {
                            // Into a sketch of this job's size: a larger upstream map is
                            // purged down to it.
                            let mut empty = match sketch {
                                TopSketch::Strings(_) => TopSketch::Strings(
                                    FrequentItemsSketch::new(self.max_map_size)
                                        .map_err(sketch_error)?,
                                ),
                                TopSketch::Longs(_) => TopSketch::Longs(
                                    FrequentItemsSketch::new(self.max_map_size)
                                        .map_err(sketch_error)?,
                                ),
                            };
                            empty.merge(&sketch, upstream)?;
                            merged = Some(empty);
                        }
                        Some(merged) => merged.merge(&sketch, upstream)?,
                    }
                }
                Ok(merged)
            }
        }
    }

    /// The result: the `n` keys with the largest estimates (ties by key), with their bounds.
    fn top_frame(&self, sketch: &TopSketch) -> PolarsResult<DataFrame> {
        fn top<T: Clone + Ord + std::hash::Hash>(
            sketch: &FrequentItemsSketch<T>,
            n: u32,
        ) -> (Vec<T>, Vec<u64>, Vec<u64>, Vec<u64>) {
            let mut rows = sketch.frequent_items(ErrorType::NoFalseNegatives);
            rows.sort_by(|a, b| {
                b.estimate()
                    .cmp(&a.estimate())
                    .then_with(|| a.item().cmp(b.item()))
            });
            rows.truncate(n as usize);
            let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for row in rows {
                columns.0.push(row.item().clone());
                columns.1.push(row.estimate());
                columns.2.push(row.lower_bound());
                columns.3.push(row.upper_bound());
            }
            columns
        }
        let (keys, estimates, lower, upper) = match sketch {
            TopSketch::Strings(sketch) => {
                let (keys, estimates, lower, upper) = top(sketch, self.n);
                (
                    Column::new(self.key.as_str().into(), keys),
                    estimates,
                    lower,
                    upper,
                )
            }
            TopSketch::Longs(sketch) => {
                let (keys, estimates, lower, upper) = top(sketch, self.n);
                (
                    Column::new(self.key.as_str().into(), keys),
                    estimates,
                    lower,
                    upper,
                )
            }
        };
        let height = estimates.len();
        DataFrame::new(
            height,
            vec![
                keys,
                Column::new(ESTIMATE_COLUMN.into(), estimates),
                Column::new(LOWER_BOUND_COLUMN.into(), lower),
                Column::new(UPPER_BOUND_COLUMN.into(), upper),
            ],
        )
    }
}

impl Job for ApproxTop {
    fn kind(&self) -> &str {
        "approx_top"
    }

    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>> {
        collect_errors([require_single_input(input_names, self.kind())])
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        // A merge of no sketch (no upstream state) counts nothing: strings by default.
        let sketch = match self.sketch(ctx)? {
            Some(sketch) => sketch,
            None => TopSketch::Strings(
                FrequentItemsSketch::new(self.max_map_size).map_err(sketch_error)?,
            ),
        };
        let frame = self.top_frame(&sketch)?;
        let state = state_frame(
            &[
                (KEY_SETTING, Some(&self.key)),
                (ITEMS_SETTING, Some(sketch.items())),
                (WEIGHT_SETTING, self.weight_text()),
            ],
            sketch.serialize(),
        )?;
        Ok(JobOutput {
            frame,
            state: Some(state),
        })
    }
}

/// Quantiles of a numeric column at given ranks, from a KLL sketch that a coarser job merges.
#[derive(Debug, Clone)]
pub struct Quantiles {
    column: String,
    ranks: Vec<f64>,
    k: u16,
    filter: Option<Expr>,
}

impl Quantiles {
    pub fn from_spec(spec: &QuantilesSpec) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        if spec.column.trim().is_empty() {
            errors.push("field `column`: is empty".to_owned());
        }
        let ranks = spec.ranks.clone().unwrap_or_else(|| DEFAULT_RANKS.to_vec());
        if ranks.is_empty() {
            errors.push("field `ranks`: list at least one rank".to_owned());
        }
        if ranks.len() > MAX_RANKS {
            errors.push(format!(
                "field `ranks`: {} ranks, at most {MAX_RANKS}",
                ranks.len()
            ));
        }
        for (index, rank) in ranks.iter().enumerate() {
            if !(0.0..=1.0).contains(rank) {
                errors.push(format!(
                    "field `ranks`: {rank} is not a rank from 0 to 1 (p99 is 0.99)"
                ));
            } else if ranks[..index].contains(rank) {
                errors.push(format!("field `ranks`: {rank} is listed twice"));
            }
        }
        let k = spec.k.unwrap_or(DEFAULT_KLL_K);
        if k < 8 {
            errors.push(format!("field `k`: must be from 8 to 65535, found {k}"));
        }
        let filter = parse_optional_filter(spec.filter.as_deref()).unwrap_or_else(|err| {
            errors.push(err);
            None
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Quantiles {
            column: spec.column.clone(),
            ranks,
            k,
            filter,
        })
    }

    /// This job's sketch of one partition.
    fn sketch(&self, ctx: &JobContext<'_>) -> Result<KllSketch<KllFloat<f64>>, JobError> {
        let mut sketch = KllSketch::new(self.k).map_err(sketch_error)?;
        let reads = [self.column.clone()];
        match feed(ctx, self.kind(), self.filter.as_ref(), Some(&reads))? {
            Feed::Rows(rows) => {
                let values = column_values(*rows, &self.column)?;
                if !values.dtype().is_primitive_numeric() {
                    return Err(JobError::Invalid(format!(
                        "field `column`: `{}` holds {} values; quantiles are of numbers",
                        self.column,
                        values.dtype()
                    )));
                }
                let doubles = values.cast(&DataType::Float64)?;
                // Nulls and NaN are left out, as DataSketches leaves NaN out.
                for value in doubles.f64()?.iter().flatten() {
                    if let Ok(value) = KllFloat::<f64>::new(value) {
                        sketch.update(value);
                    }
                }
            }
            Feed::States { upstream, states } => {
                for stored in stored_sketches(upstream, states, &[COLUMN_SETTING])? {
                    stored.expect(upstream, COLUMN_SETTING, Some(&self.column), |found| {
                        format!("column {}", quoted(found))
                    })?;
                    let other = KllSketch::deserialize(&stored.bytes).map_err(sketch_error)?;
                    sketch.merge(&other).map_err(sketch_error)?;
                }
            }
        }
        Ok(sketch)
    }
}

impl Job for Quantiles {
    fn kind(&self) -> &str {
        "quantiles"
    }

    fn validate(&self, input_names: &[String]) -> Result<(), Vec<String>> {
        collect_errors([require_single_input(input_names, self.kind())])
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        let sketch = self.sketch(ctx)?;
        let view = sketch.sorted_view();
        // The true quantile lies between the items at rank ± the sketch's rank error (99%
        // confidence); an exact sketch (nothing compacted yet) has none.
        let error = if sketch.is_estimation_mode() {
            sketch.normalized_rank_error()
        } else {
            0.0
        };
        let at = |rank: f64| -> Result<Option<f64>, JobError> {
            let item = view
                .quantile(rank.clamp(0.0, 1.0), SearchCriteria::Inclusive)
                .map_err(sketch_error)?;
            Ok(item.map(|item| *item))
        };
        let mut estimates = Vec::with_capacity(self.ranks.len());
        let mut lower = Vec::with_capacity(self.ranks.len());
        let mut upper = Vec::with_capacity(self.ranks.len());
        for &rank in &self.ranks {
            estimates.push(at(rank)?);
            lower.push(at(rank - error)?);
            upper.push(at(rank + error)?);
        }
        let frame = df!(
            "rank" => &self.ranks,
            ESTIMATE_COLUMN => estimates,
            LOWER_BOUND_COLUMN => lower,
            UPPER_BOUND_COLUMN => upper,
            "n" => vec![sketch.n(); self.ranks.len()],
        )?;
        let state = state_frame(&[(COLUMN_SETTING, Some(&self.column))], sketch.serialize())?;
        Ok(JobOutput {
            frame,
            state: Some(state),
        })
    }
}

#[cfg(test)]
mod tests;
