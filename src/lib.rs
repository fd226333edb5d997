//! # Floe
//!
//! Spark-as-a-Service without Spark's weight: pipelines of time-partitioned jobs declared in
//! YAML, computed on polars, with every partition's result cached in sled so downstream jobs
//! and coarser grains reuse it instead of rescanning the source.
//!
//! ## Layout
//!
//! ```text
//! pipelines/*.yaml ──► pipeline   parse (spec) → validate → Pipeline { sources, jobs, JobDag }
//!                                 errors name file:line:column, job and field
//!                         │
//!                         ▼
//!                    scheduler    the one executor of partition runs, whoever asks (triggers,
//!                         │       catch-up, backfills, floe run, pipeline jobs): queue, limits,
//!                         │       retries, source waits, upstream_failed, outcomes to waiters
//!                         ▼
//!                    materialize  (job, partition) run graph from partition math; one attempt:
//!                         │       fingerprint → skip fresh, compute and commit stale
//!                         ▼
//!                    job          Job trait: built-in kinds (count_distinct, top, group_by,
//!                         │       sql, select), mergeable sketches (approx_count_distinct,
//!                         │       approx_top, quantiles) and registered Rust classes
//!                         ▼
//!                    engine       source windows → LazyFrame (time filter pushed down),
//!                         │       Arrow IPC encoding, in-memory result cache
//!                         ▼
//!                    store        sled: runs and results, one record swap per success
//!                         │
//!                         ▼
//!                    results      read side: a job's results over a range
//!
//! sql_guard                       every SQL text: depth bound, one SELECT over bound tables
//!
//! HTTP ──► server ──► jobserver   spark-jobserver's REST API: contexts with worker
//!                 │               threads, queues and named objects, jobs that survive restarts;
//!                 │               pipeline jobs hand their runs to the scheduler
//!                 ├─► catalog     every pipeline version (apps); tells the scheduler of changes
//!                 └─► scheduler   recurring runs from triggers on the injected clock, catch-up,
//!                                 retries, source waits, backfills and restatements
//! ```
//!
//! - [`partition`]: pure time math: grains, half-open UTC windows, DST policy, cross-grain
//!   mapping.
//! - [`clock`]: time is injected; nothing reads the wall clock directly.
//! - [`sample`] and [`dataset`]: the deterministic sample dataset and its Parquet layout.
//! - [`auth`]: API tokens, roles and the audit log; [`server`] checks them per route.
//! - [`data_files`]: the files of `floe serve`'s `/data` routes, which ad-hoc jobs read.
//! - [`grid`]: the partition grid of a pipeline (every partition of a range per job, with its
//!   run's state), which the web UI draws.
//! - [`plan_check`]: validation that runs each job on empty frames of its inputs' schemas
//!   (`floe validate`, uploads).
//! - [`pipeline_tests`]: `floe test`, unit tests of pipelines run in memory on the engine.
//! - [`cli`]: the `floe` command.

pub mod auth;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod data_files;
pub mod dataset;
pub mod engine;
pub mod error;
pub mod frames;
pub mod grid;
pub mod inputs;
pub mod job;
pub mod jobserver;
pub mod materialize;
pub mod partition;
pub mod pipeline;
pub mod pipeline_tests;
pub mod plan_check;
pub mod results;
pub mod sample;
pub mod scheduler;
pub mod server;
pub mod sql_guard;
pub mod staleness;
pub mod store;
pub mod worker;

pub use error::error_chain;
pub use job::{Job, JobContext, JobError, JobInput, JobOutput, JobRegistry};
pub use materialize::{Materializer, RunReport, RunRequest};
pub use pipeline::Pipeline;
pub use store::Store;
