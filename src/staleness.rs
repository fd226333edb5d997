//! `floe plan` and `GET /pipelines/{p}/plan`: what running a range would do, and why, without
//! running anything. For each planned run: fresh (nothing to do), missing, forced, stale
//! because the job's definition changed (with a diff of its YAML block), because source files
//! changed (which), or because an upstream run changes — and so which downstream runs follow.
//!
//! It judges a run as the executor would: the fingerprint a run would have now (definition,
//! window, source files, upstream results) against the stored result's. The reasons come from
//! what the store kept with the result: the job's own definition fingerprint and block, and
//! the time the result was made.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::inputs::upstream_keys;
use crate::materialize::{
    MaterializeError, Materializer, RunRequest, SourceProblem, run_fingerprint,
};
use crate::pipeline::Pipeline;
use crate::store::RunKey;

/// Why a planned run would compute, or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Staleness {
    /// Its stored result holds: nothing to do.
    Fresh,
    /// No result yet.
    Missing,
    /// `force`: recomputed whatever it holds.
    Forced,
    /// The job's block changed since the result was made; `diff` shows how, when the store
    /// kept the old block (`-` old, `+` new).
    Definition { diff: Option<String> },
    /// Source files changed since the result was made: those modified after it (none listed:
    /// files were removed or replaced by older ones).
    Sources { files: Vec<String> },
    /// A run it reads changes, or changed after it was made.
    Upstream { run: String },
    /// Its sources cannot be listed now (missing files, a path outside the roots).
    Blocked { error: String },
}

impl Staleness {
    pub fn computes(&self) -> bool {
        !matches!(self, Staleness::Fresh | Staleness::Blocked { .. })
    }
}

/// One planned run and why it would (not) compute.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedChange {
    pub job: String,
    pub partition_start: DateTime<Utc>,
    pub partition_end: DateTime<Utc>,
    #[serde(flatten)]
    pub staleness: Staleness,
}

/// Every run `request` plans, in execution order, with why it would compute.
pub fn explain(
    materializer: &Materializer,
    pipeline: &Pipeline,
    request: &RunRequest,
) -> Result<Vec<PlannedChange>, MaterializeError> {
    let plan = materializer.plan(pipeline, request)?;
    let store = materializer.store();
    // Runs that compute, by key: what their downstream reads changes.
    let mut changing: HashMap<RunKey, ()> = HashMap::new();
    let mut changes = Vec::with_capacity(plan.runs.len());
    for run in &plan.runs {
        let Some(def) = pipeline.job(&run.job) else {
            continue;
        };
        let key = RunKey::new(&pipeline.name, &def.name, run.window.start);
        let staleness = (|| -> Result<Staleness, MaterializeError> {
            let Some(meta) = store.result_meta(&key)? else {
                return Ok(Staleness::Missing);
            };
            if request.force {
                return Ok(Staleness::Forced);
            }
            let upstream = upstream_keys(pipeline, def, &run.window);
            if let Some((up, _)) = upstream.iter().find(|(up, _)| changing.contains_key(up)) {
                return Ok(Staleness::Upstream {
                    run: up.to_string(),
                });
            }
            let source_files = match materializer.source_files(pipeline, def, &run.window) {
                Ok(files) => files,
                Err(SourceProblem::NotReady(_, detail) | SourceProblem::Failed(detail)) => {
                    return Ok(Staleness::Blocked { error: detail });
                }
            };
            let mut upstream_fingerprints = Vec::with_capacity(upstream.len());
            let mut newer_upstream = None;
            for (up, _) in &upstream {
                let Some(up_meta) = store.result_meta(up)? else {
                    return Ok(Staleness::Upstream {
                        run: format!("{up} (no result)"),
                    });
                };
                if up_meta.created_at > meta.created_at && newer_upstream.is_none() {
                    newer_upstream = Some(up.to_string());
                }
                upstream_fingerprints.push(up_meta.fingerprint);
            }
            let upstream_refs: Vec<&str> =
                upstream_fingerprints.iter().map(String::as_str).collect();
            let now = run_fingerprint(def, &run.window, &source_files, &upstream_refs);
            if now == meta.fingerprint {
                return Ok(Staleness::Fresh);
            }
            if meta.job_definition.as_deref() != Some(def.definition_fingerprint.as_str()) {
                let diff = match &meta.job_definition {
                    Some(old) => store
                        .definition_text(old)?
                        .map(|old| line_diff(&old, &def.definition_text)),
                    None => None,
                };
                return Ok(Staleness::Definition { diff });
            }
            if let Some(run) = newer_upstream {
                return Ok(Staleness::Upstream { run });
            }
            Ok(Staleness::Sources {
                files: modified_after(&source_files, meta.created_at),
            })
        })()?;
        if staleness.computes() {
            changing.insert(key, ());
        }
        changes.push(PlannedChange {
            job: run.job.clone(),
            partition_start: run.window.start,
            partition_end: run.window.end,
            staleness,
        });
    }
    Ok(changes)
}

/// The source files modified after `made`, as the sources' globs matched them.
fn modified_after(
    source_files: &BTreeMap<String, Vec<crate::engine::FileIdentity>>,
    made: DateTime<Utc>,
) -> Vec<String> {
    let made_ns = made.timestamp_nanos_opt().map_or(i128::MAX, i128::from);
    source_files
        .values()
        .flatten()
        .filter(|file| file.modified_ns > made_ns)
        .map(|file| file.path.display().to_string())
        .collect()
}

/// The most lines a definition diff compares (blocks are short; a huge one is summarised).
const MAX_DIFF_LINES: usize = 400;

/// A line diff of `old` against `new`: common lines with two spaces, removed ones with `- `,
/// added ones with `+ `, from their longest common subsequence.
pub fn line_diff(old: &str, new: &str) -> String {
    let old: Vec<&str> = old.lines().collect();
    let new: Vec<&str> = new.lines().collect();
    if old.len() > MAX_DIFF_LINES || new.len() > MAX_DIFF_LINES {
        return format!(
            "(the block has {} lines before and {} after: too long to compare line by line)",
            old.len(),
            new.len()
        );
    }
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut lcs = vec![vec![0u16; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            out.push(format!("  {}", old[i]));
            i += 1;
            j += 1;
        } else if i < old.len() && (j == new.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Removed lines before added ones, as diffs read.
            out.push(format!("- {}", old[i]));
            i += 1;
        } else {
            out.push(format!("+ {}", new[j]));
            j += 1;
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn a_diff_keeps_common_lines_and_marks_the_rest() {
        let old = "grain: daily\nfrom: events\ngroup_by:\n  keys:\n  - city\n";
        let new = "grain: daily\nfrom: events\ngroup_by:\n  keys:\n  - category\n";
        assert_eq!(
            line_diff(old, new),
            "  grain: daily\n  from: events\n  group_by:\n    keys:\n-   - city\n+   - category"
        );
        assert_eq!(line_diff("a\n", "a\n"), "  a");
        assert_eq!(line_diff("", "a\n"), "+ a");
    }
}
