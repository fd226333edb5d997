//! The input resolver and the engine boundary: what a job reads is resolved in one place, and
//! every run is computed by the materialiser's [`Engine`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use floe::engine::{Engine, EngineError, PolarsEngine, ResolvedInput, ResolvedPlan};
use floe::inputs::{Gaps, InputError};
use floe::job::JobOutput;
use floe::materialize::{RunOutcome, RunRequest};
use floe::partition::Window;

use crate::common::{RunAlone, SampleWorld, shop_pipeline, utc};

/// Computes with polars, writing down each job it was given and the kinds of its inputs.
#[derive(Debug, Default)]
struct Recording {
    seen: Mutex<Vec<(String, BTreeMap<String, &'static str>)>>,
}

impl Engine for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn execute(&self, plan: ResolvedPlan<'_>) -> Result<JobOutput, EngineError> {
        let kinds = plan
            .inputs
            .iter()
            .map(|(name, input)| {
                let kind = match input {
                    ResolvedInput::Files { files, .. } => {
                        assert!(!files.is_empty(), "{name}: files listed for the window");
                        "files"
                    }
                    ResolvedInput::Rows(_) => "rows",
                    ResolvedInput::File { .. } => "file",
                };
                (name.clone(), kind)
            })
            .collect();
        self.seen.lock().unwrap().push((plan.job.to_owned(), kinds));
        PolarsEngine.execute(plan)
    }
}

#[test]
fn every_run_is_computed_by_the_materialisers_engine_on_resolved_inputs() {
    let world = SampleWorld::new(2_000, 1);
    let pipeline = shop_pipeline();
    let recording = Arc::new(Recording::default());
    let materializer = world.materializer().with_engine(recording.clone());
    let request = RunRequest {
        jobs: Some(vec!["registered_users_daily".to_owned()]),
        from: utc(2024, 1, 1, 0),
        to: utc(2024, 1, 2, 0),
        force: false,
    };
    let mut computed = 0;
    let report = materializer
        .run(&pipeline, &request, |event| {
            if matches!(event.outcome, RunOutcome::Computed { .. }) {
                computed += 1;
            }
        })
        .expect("run");
    assert!(report.is_success(), "{report:?}");
    let seen = recording.seen.lock().unwrap();
    assert_eq!(
        seen.len(),
        computed,
        "every computed run went through the engine"
    );
    assert_eq!(computed, 25, "24 hourly runs and their daily");
    let hourly = seen
        .iter()
        .find(|(job, _)| job == "registered_users_hourly")
        .expect("an hourly run");
    assert_eq!(hourly.1, BTreeMap::from([("events".to_owned(), "files")]));
    let daily = seen
        .iter()
        .find(|(job, _)| job == "registered_users_daily")
        .expect("the daily run");
    assert_eq!(
        daily.1,
        BTreeMap::from([("registered_users_hourly".to_owned(), "rows")])
    );
}

#[test]
fn sources_and_results_resolve_the_same_for_every_caller() {
    let world = SampleWorld::new(2_000, 1);
    let pipeline = shop_pipeline();
    let materializer = world.materializer();
    let inputs = materializer.inputs();
    let hour = Window {
        start: utc(2024, 1, 1, 5),
        end: utc(2024, 1, 1, 6),
    };

    // A source over a window: its files, and rows of that window only.
    let resolved = inputs.source(&pipeline, "events", &hour).expect("events");
    let frame = PolarsEngine::frame(resolved)
        .expect("scan")
        .collect()
        .expect("rows");
    let expected = world
        .events
        .ts_ms
        .iter()
        .filter(|&&ts| ts >= hour.start.timestamp_millis() && ts < hour.end.timestamp_millis())
        .count();
    assert!(expected > 0);
    assert_eq!(frame.height(), expected);
    assert!(matches!(
        inputs.source(&pipeline, "clicks", &hour),
        Err(InputError::UnknownSource { ref source_name, .. }) if source_name == "clicks"
    ));

    // Results before any run: a job input refuses the gap, a query reads what is there.
    let day = Window {
        start: utc(2024, 1, 1, 0),
        end: utc(2024, 1, 2, 0),
    };
    match inputs.results(&pipeline, "registered_users_hourly", &day, Gaps::Refuse) {
        Err(InputError::Missing { count, first, .. }) => {
            assert_eq!((count, first), (24, day.start));
        }
        other => panic!("expected the missing partitions to be named: {other:?}"),
    }
    let skipped = inputs
        .results(&pipeline, "registered_users_hourly", &day, Gaps::Skip)
        .expect("a read of what is there");
    let rows = PolarsEngine::frame(skipped).unwrap().collect().unwrap();
    assert_eq!(rows.height(), 0);
}
