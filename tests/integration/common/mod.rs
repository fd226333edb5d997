//! Shared fixtures: generated sample data on disk, a temporary store, the example pipeline.

pub(crate) mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use floe::clock::{Clock, ManualClock};
use floe::dataset::write_events_parquet;
use floe::results::ResultCache;
use floe::sample::{EventColumns, SampleSpec, generate};
use floe::{JobRegistry, Materializer, Pipeline, Store};
use tempfile::TempDir;

pub(crate) fn utc(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0)
        .single()
        .expect("valid instant")
}

pub(crate) fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A week of sample events written as the example pipeline reads them.
pub(crate) struct SampleWorld {
    pub(crate) dir: TempDir,
    pub(crate) events: EventColumns,
    pub(crate) start: DateTime<Utc>,
}

impl SampleWorld {
    pub(crate) fn new(rows: usize, days: u32) -> Self {
        SampleWorld::with_users(rows, days, 3_000)
    }

    /// `rows` events over `days` from 2024-01-01, by `users` users.
    pub(crate) fn with_users(rows: usize, days: u32, users: u32) -> Self {
        let start = utc(2024, 1, 1, 0);
        let spec = SampleSpec {
            seed: 7,
            start,
            hours: days * 24,
            rows,
            users,
        };
        let events = generate(&spec);
        let dir = tempfile::tempdir().expect("tempdir");
        write_events_parquet(&events, &dir.path().join("data/events"), start, spec.hours)
            .expect("write sample data");
        SampleWorld { dir, events, start }
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub(crate) fn materializer(&self) -> Materializer {
        let store = Store::open(&self.store_dir()).expect("open store");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(utc(2024, 2, 1, 0)));
        Materializer::new(
            store,
            Arc::new(ResultCache::new(256 << 20)),
            self.data_dir(),
            clock,
        )
    }
}

pub(crate) fn shop_pipeline() -> Pipeline {
    floe::pipeline::load_file(&repo_path("pipelines/shop.yaml"), &JobRegistry::new())
        .expect("shop.yaml is valid")
}

pub(crate) fn sketches_pipeline() -> Pipeline {
    floe::pipeline::load_file(&repo_path("pipelines/sketches.yaml"), &JobRegistry::new())
        .expect("sketches.yaml is valid")
}

/// A virtualenv `target/<name>` with `requirement` installed from PyPI, created on first use;
/// its python. `Err` says why it could not be made, with pip's output.
pub(crate) fn python_venv(name: &str, requirement: &str) -> Result<PathBuf, String> {
    let venv = repo_path(&format!("target/{name}"));
    let python = venv.join("bin/python");
    let ready = venv.join(".floe-ready");
    if std::fs::read_to_string(&ready).is_ok_and(|installed| installed.trim() == requirement) {
        return Ok(python);
    }
    let run = |program: &Path, args: &[&str]| {
        let output = std::process::Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {args:?} failed:\n{}\n{}",
                program.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    };
    run(
        Path::new("python3"),
        &["-m", "venv", venv.to_str().unwrap()],
    )?;
    run(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            requirement,
        ],
    )?;
    std::fs::write(&ready, format!("{requirement}\n")).map_err(|e| e.to_string())?;
    Ok(python)
}

/// Runs a request's partitions as `floe run` does: on a scheduler of their own over the
/// materialiser's store, every outcome recorded there.
pub(crate) trait RunAlone {
    fn run(
        &self,
        pipeline: &Pipeline,
        request: &floe::materialize::RunRequest,
        on_event: impl FnMut(&floe::materialize::RunEvent),
    ) -> Result<floe::materialize::RunReport, floe::scheduler::ManualRunError>;
}

impl RunAlone for Materializer {
    fn run(
        &self,
        pipeline: &Pipeline,
        request: &floe::materialize::RunRequest,
        mut on_event: impl FnMut(&floe::materialize::RunEvent),
    ) -> Result<floe::materialize::RunReport, floe::scheduler::ManualRunError> {
        floe::scheduler::run_alone(
            self.clone(),
            Arc::new(pipeline.clone()),
            request,
            2,
            &mut on_event,
        )
    }
}
