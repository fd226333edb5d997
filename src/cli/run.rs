//! The commands that materialise partitions on a scheduler of their own: `floe run`,
//! `floe backfill` and the `floe demo` tour.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeDelta;
use indicatif::{ProgressBar, ProgressStyle};

use crate::clock::Clock;
use crate::job::JobRegistry;
use crate::materialize::{Materializer, RunOutcome, RunReport, RunRequest};
use crate::partition::{parse_instant, windows_within};
use crate::pipeline::{self, Pipeline};
use crate::results::read_job_results;
use crate::scheduler::{BackfillRequest, BackfillStatus, Scheduler, SchedulerConfig, run_alone};
use crate::store::{RunKey, RunRecord, RunState};

use super::files::generate_data;
use super::setup::{confine, default_workers, load_pipeline, open_materializer, selection_range};
use super::{
    BackfillArgs, CliError, DemoArgs, GenerateArgs, Paths, RunArgs, failed, failed_with_causes,
};

pub(super) fn run_pipeline(
    paths: &Paths,
    args: RunArgs,
    registry: &JobRegistry,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    let pipeline = Arc::new(load_pipeline(paths, &args.pipeline, registry)?);
    let (from, to) = selection_range(&pipeline, &args.jobs, &args.selection)?;
    // As `POST /pipelines/{p}/runs`: a partition runs once its window has ended. One still
    // open would wait for files until its window's end plus the source's `wait`.
    let now = clock.now();
    if from < to && from >= now {
        return Err(failed(format!(
            "the range starts at {}, after now ({}): a partition runs once it has ended",
            from.to_rfc3339(),
            now.to_rfc3339()
        )));
    }
    let materializer = open_materializer(paths, clock)?;
    let request = RunRequest {
        jobs: (!args.jobs.is_empty()).then_some(args.jobs),
        from,
        to: if from < to { to.min(now) } else { to },
        force: args.force,
    };
    let report = materialize_with_progress(&materializer, &pipeline, &request)?;
    if report.is_success() {
        Ok(())
    } else {
        Err(failed(format!(
            "{} runs failed",
            report.failed.len() + report.upstream_failed
        )))
    }
}

/// Runs `request` on a scheduler of this process's own (see [`run_alone`]), which records
/// every outcome in the store as `floe serve` does, with a progress bar, then a summary.
fn materialize_with_progress(
    materializer: &Materializer,
    pipeline: &Arc<Pipeline>,
    request: &RunRequest,
) -> Result<RunReport, CliError> {
    let planned = materializer
        .plan(pipeline, request)
        .map_err(failed)?
        .runs
        .len();
    let bar = ProgressBar::new(planned as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let report = run_alone(
        materializer.clone(),
        pipeline.clone(),
        request,
        default_workers(),
        &mut |event| {
            bar.inc(1);
            bar.set_message(format!(
                "{} {}",
                event.key.job,
                event.key.partition_start.format("%Y-%m-%d %H:%M")
            ));
            if let RunOutcome::Failed { error } = &event.outcome {
                bar.println(format!("failed: {}: {error}", event.key));
            }
        },
    )
    .map_err(failed_with_causes)?;
    bar.finish_and_clear();
    eprintln!(
        "pipeline `{}`: {} runs planned, {} computed, {} fresh (skipped), {} failed, {} waiting on failed upstream runs, in {:.2}s",
        pipeline.name,
        report.planned,
        report.computed,
        report.fresh,
        report.failed.len(),
        report.upstream_failed,
        started.elapsed().as_secs_f64()
    );
    for (key, error) in report.failed.iter().take(10) {
        eprintln!("  failed: {key}: {error}");
    }
    Ok(report)
}

/// `floe backfill`: starts a backfill (or restatement) on a scheduler of its own and follows
/// it to the end with a progress bar. The backfill is durable from the moment it starts: if
/// this process is stopped, the next `floe backfill --resume` or `floe serve` on the same store
/// resumes it, and partitions already materialised are not computed again.
pub(super) fn backfill(
    paths: &Paths,
    args: BackfillArgs,
    registry: &JobRegistry,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    let pipelines: Vec<Arc<Pipeline>> = confine(
        pipeline::load_dir(&paths.pipelines, registry)?,
        &paths.roots(),
    )?
    .into_iter()
    .map(Arc::new)
    .collect();
    let materializer = open_materializer(paths, clock.clone())?;
    let store = materializer.store().clone();
    let config = SchedulerConfig {
        recurring: false,
        workers: args.workers.unwrap_or_else(default_workers).max(1),
        resume: true,
    };
    // Starting the scheduler resumes whatever backfills a previous process left unfinished.
    let scheduler = Scheduler::start(store, materializer, clock, config, pipelines.clone())
        .map_err(failed_with_causes)?;
    let driver = scheduler.spawn_driver().map_err(failed)?;
    let followed: Vec<String> = if args.resume {
        let live: Vec<String> = scheduler
            .backfills(args.pipeline.as_deref())
            .map_err(failed_with_causes)?
            .into_iter()
            .filter(|status| matches!(status.state, "running" | "paused"))
            .map(|status| status.id)
            .collect();
        if live.is_empty() {
            eprintln!("no unfinished backfill to resume");
        }
        live
    } else {
        let name = args.pipeline.as_deref().unwrap_or_default();
        let pipeline = pipelines.iter().find(|p| p.name == name).ok_or_else(|| {
            failed(format!(
                "no pipeline `{name}` in {}",
                paths.pipelines.display()
            ))
        })?;
        let parse = |flag: &str, text: &Option<String>| {
            parse_instant(text.as_deref().unwrap_or_default(), pipeline.timezone)
                .map_err(|e| failed(format!("--{flag}: {e}")))
        };
        let request = BackfillRequest {
            pipeline: name.to_owned(),
            jobs: (!args.jobs.is_empty()).then(|| args.jobs.clone()),
            from: parse("from", &args.from)?,
            to: parse("to", &args.to)?,
            force: args.force,
        };
        let started = if args.restate {
            scheduler.restate(&request)
        } else {
            scheduler.backfill(&request)
        }
        .map_err(failed_with_causes)?;
        eprintln!(
            "{} {} of `{}` from {} to {}: {} runs",
            if args.restate {
                "restatement"
            } else {
                "backfill"
            },
            started.id,
            started.pipeline,
            started.from,
            started.to,
            started.total
        );
        vec![started.id]
    };
    let outcome = follow_backfills(&scheduler, &followed);
    scheduler.shutdown(Duration::from_secs(30));
    drop(driver); // the driver thread ends on its own once the scheduler stops
    let statuses = outcome?;
    let failed_runs: usize = statuses.iter().map(|s| s.failed).sum();
    for status in &statuses {
        eprintln!(
            "backfill {} {}: {} runs, {} succeeded, {} failed, {} cancelled",
            status.id,
            status.state,
            status.total,
            status.succeeded,
            status.failed,
            status.cancelled
        );
    }
    if failed_runs > 0 {
        for (key, record) in failed_runs_of(&scheduler, &statuses).iter().take(10) {
            let error = record.error.as_deref().unwrap_or_default();
            eprintln!("  {}: {key}: {error}", record.state);
        }
        return Err(failed(format!("{failed_runs} runs failed")));
    }
    Ok(())
}

/// The failed runs in the backfills' ranges, for the closing report.
fn failed_runs_of(scheduler: &Scheduler, statuses: &[BackfillStatus]) -> Vec<(RunKey, RunRecord)> {
    let mut out = Vec::new();
    for status in statuses {
        if let Ok(runs) = scheduler.store().runs_of_pipeline(&status.pipeline) {
            out.extend(runs.into_iter().filter(|(key, record)| {
                matches!(record.state, RunState::Failed | RunState::UpstreamFailed)
                    && key.partition_start >= status.from
                    && key.partition_start < status.to
            }));
        }
    }
    out
}

/// Polls the backfills until none is running or paused, drawing one progress bar over all.
fn follow_backfills(
    scheduler: &Scheduler,
    ids: &[String],
) -> Result<Vec<BackfillStatus>, CliError> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    loop {
        let statuses: Vec<BackfillStatus> = ids
            .iter()
            .map(|id| scheduler.backfill_status(id))
            .collect::<Result<_, _>>()
            .map_err(failed_with_causes)?;
        let total: usize = statuses.iter().map(|s| s.total).sum();
        let remaining: usize = statuses.iter().map(|s| s.remaining).sum();
        let failed_runs: usize = statuses.iter().map(|s| s.failed).sum();
        bar.set_length(total as u64);
        bar.set_position(total.saturating_sub(remaining) as u64);
        bar.set_message(if failed_runs > 0 {
            format!("{failed_runs} failed")
        } else {
            String::new()
        });
        let live = statuses
            .iter()
            .any(|s| matches!(s.state, "running" | "paused"));
        if !live {
            bar.finish_and_clear();
            return Ok(statuses);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one-command tour: sample data → validate → materialise a week → print Q1–Q3.
pub(super) fn demo(
    paths: &Paths,
    args: DemoArgs,
    registry: &JobRegistry,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    const DAYS: u32 = 7;
    let start = parse_instant("2024-01-01T00:00:00Z", chrono_tz::UTC).map_err(failed)?;
    let end = start + TimeDelta::days(i64::from(DAYS));
    if !paths.data_dir.join("events").exists() {
        let generate_args = GenerateArgs {
            out: None,
            rows: args.rows,
            seed: args.seed,
            start: start.to_rfc3339(),
            days: DAYS,
            users: 20_000,
        };
        generate_data(&paths.data_dir, &generate_args)?;
    } else {
        eprintln!(
            "using the sample data already in {}",
            paths.data_dir.join("events").display()
        );
    }
    let pipeline = Arc::new(load_pipeline(paths, "shop", registry)?);
    eprintln!(
        "pipeline `shop` is valid: {} jobs in order {}",
        pipeline.jobs.len(),
        pipeline.dag.topological_order().join(" → ")
    );
    let materializer = open_materializer(paths, clock)?;
    let request = RunRequest {
        jobs: None,
        from: start,
        to: end,
        force: false,
    };
    let report = materialize_with_progress(&materializer, &pipeline, &request)?;
    if !report.is_success() {
        return Err(failed("the demo run had failures (see above)"));
    }
    let last_day = windows_within(
        crate::partition::Grain::Daily,
        pipeline.timezone,
        start,
        end,
    )
    .last()
    .copied()
    .ok_or_else(|| failed("no daily partition in the demo range"))?;
    let sections = [
        (
            "Q1: distinct users who registered, per hour (last day, first 6 hours)",
            "registered_users_hourly",
            last_day.start,
            last_day.start + TimeDelta::hours(6),
        ),
        (
            "Q1 rolled up: distinct registering users per day (merged from the hourly key sets)",
            "registered_users_daily",
            start,
            end,
        ),
        (
            "Q2: top 10 cities by sales, per week (from cached daily city sales)",
            "top_cities_weekly",
            start,
            end,
        ),
        (
            "Q3: sales per category, per day (last day, from cached hourly purchases)",
            "sales_per_category_daily",
            last_day.start,
            last_day.end,
        ),
    ];
    for (title, job, from, to) in sections {
        let results = read_job_results(&materializer, &pipeline, job, from, to).map_err(failed)?;
        println!("\n{title}\n{}", results.frame);
    }
    println!(
        "\nrun it again: nothing is recomputed. Try: cargo run -- results --pipeline shop --job top_cities_weekly --from 2024-01-01 --to 2024-01-08 --format csv"
    );
    Ok(())
}
