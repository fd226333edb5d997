//! The YAML blocks of the built-in job kinds (`count_distinct:`, `top:`, `group_by:`,
//! `select:`, and the sketches `approx_count_distinct:`, `approx_top:`, `quantiles:`), as users
//! write them: plain serde types that reject unknown keys. The kinds in
//! [`super::builtin`] are built from them; a pipeline file embeds them
//! ([`crate::pipeline::spec`]).

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

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

/// `approx_count_distinct:`: a HyperLogLog sketch of a column's distinct values
/// ([`super::sketches::ApproxCountDistinct`]).
///
/// Optional settings are left out of the serialised form when absent, so adding one later
/// keeps the fingerprints (and so the stored results) of the jobs that do not set it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproxCountDistinctSpec {
    pub column: String,
    /// log2 of the sketch's registers, 4–21 (default 12: about 1.6% relative error at one
    /// standard deviation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lg_k: Option<u8>,
    /// How the registers are stored: `hll_4` (default, the smallest), `hll_6` or `hll_8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hll_type: Option<HllTypeSpec>,
    /// Standard deviations of the `lower_bound`/`upper_bound` interval: 1, 2 (default) or 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std_devs: Option<u8>,
    /// SQL boolean expression over the input's rows (not allowed when merging sketches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// The register width of an HLL sketch, as DataSketches names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HllTypeSpec {
    #[serde(rename = "hll_4")]
    Hll4,
    #[serde(rename = "hll_6")]
    Hll6,
    #[serde(rename = "hll_8")]
    Hll8,
}

/// `approx_top:`: the most frequent values of a key, counted or weighted, from a frequent
/// items sketch ([`super::sketches::ApproxTop`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproxTopSpec {
    /// The column whose values are counted (strings or integers).
    pub key: String,
    /// How many of the most frequent keys the result lists.
    pub n: u32,
    /// SQL expression of non-negative integers summed per key instead of counting rows, e.g.
    /// `CAST(round(amount * 100) AS BIGINT)` (cents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
    /// The sketch's largest hash map, a power of two from 8 (default 256): error bounds are
    /// within `3.5 / max_map_size` of the total weight; fewer distinct keys than
    /// `0.75 * max_map_size` are counted exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_map_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// `quantiles:`: quantiles of a numeric column from a KLL sketch
/// ([`super::sketches::Quantiles`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantilesSpec {
    pub column: String,
    /// Normalised ranks in [0, 1] (default `[0.5, 0.9, 0.99]`: p50, p90, p99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<Vec<f64>>,
    /// The sketch's accuracy parameter, 8–65535 (default 200: about 1.65% rank error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
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
