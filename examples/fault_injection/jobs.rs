//! Job classes that fail on purpose, each in its own way, once they see rows (on the empty
//! frames of a plan check they answer an empty result, as a job that breaks on real data
//! would): `abort` ends its process (`std::process::abort`, as a crash in native code would),
//! `panic` panics. Registered by the `fault_injection` example binary and by the tests that
//! start it.

use floe::{Job, JobContext, JobError, JobOutput, JobRegistry};
use polars::prelude::*;

/// Whether the job's input has rows; `None`: an empty result to answer instead.
fn has_rows(ctx: &JobContext<'_>) -> Result<Option<JobOutput>, JobError> {
    let rows = ctx.single_input()?.frame.clone().collect()?.height();
    if rows > 0 {
        Ok(None)
    } else {
        let empty = df!("n" => Vec::<i64>::new())?;
        Ok(Some(JobOutput::frame(empty)))
    }
}

#[derive(Debug)]
struct Abort;

impl Job for Abort {
    fn kind(&self) -> &str {
        "abort"
    }

    fn validate(&self, _input_names: &[String]) -> Result<(), Vec<String>> {
        Ok(())
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        if let Some(empty) = has_rows(ctx)? {
            return Ok(empty);
        }
        std::process::abort()
    }
}

#[derive(Debug)]
struct Panic;

impl Job for Panic {
    fn kind(&self) -> &str {
        "panic"
    }

    fn validate(&self, _input_names: &[String]) -> Result<(), Vec<String>> {
        Ok(())
    }

    fn run(&self, ctx: &JobContext<'_>) -> Result<JobOutput, JobError> {
        if let Some(empty) = has_rows(ctx)? {
            return Ok(empty);
        }
        panic!("this job panics on purpose")
    }
}

/// The registry with both classes.
pub(crate) fn registry() -> JobRegistry {
    let mut registry = JobRegistry::new();
    registry.register("abort", |_| Ok(std::sync::Arc::new(Abort)));
    registry.register("panic", |_| Ok(std::sync::Arc::new(Panic)));
    registry
}
