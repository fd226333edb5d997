//! What the commands share: the pipelines folder loaded and confined to the data roots,
//! the store opened, and the partition range a selection denotes.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::job::JobRegistry;
use crate::materialize::Materializer;
use crate::partition::{Window, parse_instant, window_containing};
use crate::pipeline::data_roots::DataRoots;
use crate::pipeline::{self, Pipeline};
use crate::results::ResultCache;
use crate::store::Store;

use super::{CliError, Paths, Selection, failed, failed_with_causes};

/// Default budget of the in-memory result cache.
const DEFAULT_CACHE_BYTES: usize = 512 * 1024 * 1024;

/// Checks that every source of `pipelines` reads inside `roots`, and confines them there.
pub(super) fn confine(
    pipelines: Vec<Pipeline>,
    roots: &Arc<DataRoots>,
) -> Result<Vec<Pipeline>, CliError> {
    let mut confined = Vec::with_capacity(pipelines.len());
    let mut problems = Vec::new();
    for pipeline in pipelines {
        let text = std::fs::read_to_string(&pipeline.file).unwrap_or_default();
        match pipeline.confine(roots.clone(), &text) {
            Ok(pipeline) => confined.push(pipeline),
            Err(pipeline::PipelineErrors(found)) => problems.extend(found),
        }
    }
    if problems.is_empty() {
        Ok(confined)
    } else {
        Err(CliError::Invalid(pipeline::PipelineErrors(problems)))
    }
}

pub(super) fn load_pipeline(
    paths: &Paths,
    name: &str,
    registry: &JobRegistry,
) -> Result<Pipeline, CliError> {
    let pipelines = confine(
        pipeline::load_dir(&paths.pipelines, registry)?,
        &paths.roots(),
    )?;
    let known: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
    pipelines
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| {
            failed(format!(
                "no pipeline `{name}` in {} (found: {})",
                paths.pipelines.display(),
                known.join(", ")
            ))
        })
}

pub(super) fn open_materializer(
    paths: &Paths,
    clock: Arc<dyn Clock>,
) -> Result<Materializer, CliError> {
    let store = Store::open(&paths.store).map_err(failed_with_causes)?;
    Ok(Materializer::new(
        store,
        Arc::new(ResultCache::new(DEFAULT_CACHE_BYTES)),
        paths.data_dir.clone(),
        clock,
    )
    .with_data_roots(paths.roots()))
}

/// The [from, to) range a selection denotes for `pipeline`. One `--partition` instant selects,
/// for every job, the partition containing it: the range is the coarsest grain's window.
pub(super) fn selection_range(
    pipeline: &Pipeline,
    jobs: &[String],
    selection: &Selection,
) -> Result<(DateTime<Utc>, DateTime<Utc>), CliError> {
    let tz = pipeline.timezone;
    let parse = |text: &str| parse_instant(text, tz).map_err(failed);
    match (&selection.partition, &selection.from, &selection.to) {
        (Some(instant), _, _) => {
            let instant = parse(instant)?;
            let grains = pipeline
                .jobs
                .values()
                .filter(|job| jobs.is_empty() || jobs.contains(&job.name))
                .map(|job| job.grain);
            let coarsest = grains.max().ok_or_else(|| failed("no job selected"))?;
            let window: Window = window_containing(coarsest, tz, instant);
            Ok((window.start, window.end))
        }
        (None, Some(from), Some(to)) => Ok((parse(from)?, parse(to)?)),
        _ => Err(failed(
            "give --partition <instant> or --from <instant> --to <instant>",
        )),
    }
}

/// Runs computing at once when the command line does not say: one per core.
pub(super) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}
