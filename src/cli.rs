//! The `floe` command line: argument parsing (clap) and the commands that glue the library
//! together. Commands print results to stdout and progress to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::*;

use crate::clock::{Clock, SystemClock};
use crate::dataset::write_events_parquet;
use crate::job::JobRegistry;
use crate::materialize::{Materializer, RunOutcome, RunReport, RunRequest};
use crate::partition::{Window, parse_instant, window_containing, windows_within};
use crate::pipeline::data_roots::DataRoots;
use crate::pipeline::{self, Pipeline};
use crate::results::ResultCache;
use crate::results::read_job_results;
use crate::sample::{SampleSpec, generate};
use crate::scheduler::{BackfillRequest, BackfillStatus, Scheduler, SchedulerConfig, run_alone};
use crate::store::{RunKey, RunRecord, RunState, Store};

/// Default budget of the in-memory result cache.
const DEFAULT_CACHE_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "floe",
    version,
    about = "Spark-as-a-Service without Spark's weight: time-partitioned pipelines on polars"
)]
pub struct Cli {
    #[command(flatten)]
    pub paths: PathArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The folders every command uses, as given on the command line or in the environment.
/// Unset ones fall back to `floe serve`'s config file, then to the defaults.
#[derive(Debug, Clone, Args)]
pub struct PathArgs {
    /// Folder of pipeline YAML files [default: pipelines].
    #[arg(long, global = true, env = "FLOE_PIPELINES")]
    pub pipelines: Option<PathBuf>,
    /// Folder that relative source paths resolve against [default: data].
    #[arg(long, global = true, env = "FLOE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The sled store holding runs and results [default: .floe/store].
    #[arg(long, global = true, env = "FLOE_STORE")]
    pub store: Option<PathBuf>,
    /// A folder outside the data dir that pipelines may also read sources in (repeatable;
    /// `floe serve` gives it to the pipelines of its folder, not to uploads).
    #[arg(
        long = "data-root",
        global = true,
        env = "FLOE_DATA_ROOTS",
        value_delimiter = ':'
    )]
    pub data_roots: Vec<PathBuf>,
}

impl PathArgs {
    fn or_defaults(&self) -> Paths {
        Paths {
            pipelines: self.pipelines.clone().unwrap_or_else(|| "pipelines".into()),
            data_dir: self.data_dir.clone().unwrap_or_else(|| "data".into()),
            store: self.store.clone().unwrap_or_else(|| ".floe/store".into()),
            data_roots: self.data_roots.clone(),
        }
    }
}

/// The folders, resolved.
#[derive(Debug, Clone)]
pub struct Paths {
    pub pipelines: PathBuf,
    pub data_dir: PathBuf,
    pub store: PathBuf,
    /// Folders besides the data dir that the operator's pipelines may read.
    pub data_roots: Vec<PathBuf>,
}

impl Paths {
    fn roots(&self) -> Arc<DataRoots> {
        Arc::new(DataRoots::new(&self.data_dir, &self.data_roots))
    }
}

/// Checks that every source of `pipelines` reads inside `roots`, and confines them there.
fn confine(pipelines: Vec<Pipeline>, roots: &Arc<DataRoots>) -> Result<Vec<Pipeline>, CliError> {
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate sample data, materialise the example pipeline and print Q1–Q3.
    Demo(DemoArgs),
    /// Check pipeline files and report every problem with its file, line and column.
    Validate(ValidateArgs),
    /// Materialise partitions of a pipeline (skips partitions that are already fresh).
    Run(RunArgs),
    /// Print materialised results of a job.
    Results(ResultsArgs),
    /// Write the deterministic sample e-commerce dataset as hourly Parquet files.
    Generate(GenerateArgs),
    /// Run the job server (spark-jobserver's REST API) until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Backfill or restate a range of partitions through the scheduler, with progress and ETA.
    Backfill(BackfillArgs),
    /// Create, list and revoke the API tokens `floe serve` accepts.
    Token(TokenArgs),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The tokens file [default: `auth.tokens_file` of --config, else tokens.json beside the
    /// store, i.e. .floe/tokens.json].
    #[arg(long, env = "FLOE_TOKENS_FILE", global = true)]
    pub tokens_file: Option<PathBuf>,
    /// `floe serve`'s YAML config file, to find its tokens file.
    #[arg(long, env = "FLOE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token and print it (the only time it is shown) on stdout.
    Create {
        /// What the token may do; each role includes the ones before it.
        #[arg(long, value_enum)]
        role: crate::auth::Role,
        /// A name to recognise it by (who or what uses it).
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, e.g. 30d, 12h or 1w [default: never expires].
        #[arg(long)]
        expires: Option<String>,
    },
    /// List the tokens: id, name, role, created, expires, revoked (never secrets or hashes).
    List,
    /// Revoke a token by id; a running server refuses it within a second.
    Revoke {
        /// The token's id (`floe token list`), the part after `floe_`.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Pipeline to backfill; with `--resume` and no pipeline, every unfinished backfill.
    #[arg(long, short, required_unless_present = "resume")]
    pub pipeline: Option<String>,
    /// Only these jobs, plus the upstream jobs they read (repeatable) [default: every job].
    #[arg(long = "job", short)]
    pub jobs: Vec<String>,
    /// Start of the range (inclusive), RFC 3339 or a local date/time.
    #[arg(long, required_unless_present = "resume")]
    pub from: Option<String>,
    /// End of the range (exclusive).
    #[arg(long, required_unless_present = "resume")]
    pub to: Option<String>,
    /// Recompute partitions whose stored result is fresh.
    #[arg(long)]
    pub force: bool,
    /// Restate: recompute the chosen jobs' partitions and, by cascade, every stored
    /// downstream partition that read them.
    #[arg(long, conflicts_with = "force")]
    pub restate: bool,
    /// Start nothing new: follow the backfills a previous run left unfinished (they resume
    /// on their own when the scheduler starts) until they end.
    #[arg(long, conflicts_with_all = ["jobs", "from", "to", "force", "restate"])]
    pub resume: bool,
    /// Runs computing at once [default: the number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// YAML config file; flags and environment variables override its values.
    #[arg(long, env = "FLOE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8090].
    #[arg(long, env = "FLOE_BIND")]
    pub bind: Option<String>,
    /// How long a sync job request waits before answering 202 (e.g. 10s).
    #[arg(long, env = "FLOE_SYNC_TIMEOUT")]
    pub sync_timeout: Option<String>,
    /// Tokio worker threads for HTTP [default: the number of cores].
    #[arg(long, env = "FLOE_HTTP_THREADS")]
    pub http_threads: Option<usize>,
    /// The tokens file [default: `auth.tokens_file`, else tokens.json beside the store].
    #[arg(long, env = "FLOE_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Listen beyond loopback even without authentication (no token exists). Anyone who
    /// reaches the port can then upload, run and delete pipelines.
    #[arg(long, env = "FLOE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Rows of sample data to generate (when the data folder holds none yet).
    #[arg(long, default_value_t = 300_000)]
    pub rows: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline files or folders (default: the pipelines folder).
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct Selection {
    /// One partition: the partitions containing this instant (RFC 3339 or a local date/time).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub partition: Option<String>,
    /// Start of the range (inclusive).
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// End of the range (exclusive).
    #[arg(long, requires = "from")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(long, short)]
    pub pipeline: String,
    /// Only these jobs, plus what they depend on (repeatable).
    #[arg(long = "job", short)]
    pub jobs: Vec<String>,
    #[command(flatten)]
    pub selection: Selection,
    /// Recompute partitions even when their stored result is fresh.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    #[arg(long, short)]
    pub pipeline: String,
    #[arg(long, short)]
    pub job: String,
    #[command(flatten)]
    pub selection: Selection,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output folder (default: the data folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 300_000)]
    pub rows: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// First hour of data (UTC).
    #[arg(long, default_value = "2024-01-01T00:00:00Z")]
    pub start: String,
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Distinct users to draw from.
    #[arg(long, default_value_t = 20_000)]
    pub users: u32,
}

/// A command failure: the message is printed as is and the process exits with 1 (2 for
/// pipelines that do not validate).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Invalid(#[from] pipeline::PipelineErrors),
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Invalid(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

fn failed(message: impl std::fmt::Display) -> CliError {
    CliError::Failed(message.to_string())
}

/// A library error with its causes, for errors that keep them in `source()`.
fn failed_with_causes(err: impl std::error::Error + 'static) -> CliError {
    CliError::Failed(crate::error::error_chain(&err))
}

/// Runs a parsed command line with the built-in job kinds plus `registry`'s classes.
pub fn run(cli: Cli, registry: &JobRegistry) -> Result<(), CliError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let paths = cli.paths.or_defaults();
    match cli.command {
        Command::Serve(args) => serve(&cli.paths, &args, registry),
        Command::Token(args) => token(&cli.paths, args),
        Command::Demo(args) => demo(&paths, args, registry, clock),
        Command::Validate(args) => validate(&paths, args, registry),
        Command::Run(args) => run_pipeline(&paths, args, registry, clock),
        Command::Backfill(args) => backfill(&paths, args, registry, clock),
        Command::Results(args) => results(&paths, args, registry, clock),
        Command::Generate(args) => {
            let out = args.out.clone().unwrap_or_else(|| paths.data_dir.clone());
            generate_data(&out, &args)
        }
    }
}

/// `floe serve`: defaults, then the config file, then environment and flags.
fn serve(paths: &PathArgs, args: &ServeArgs, registry: &JobRegistry) -> Result<(), CliError> {
    use crate::server::{ServerConfig, config::parse_bind};
    let mut config = match &args.config {
        Some(file) => ServerConfig::from_file(file).map_err(failed)?,
        None => ServerConfig::default(),
    };
    if let Some(bind) = &args.bind {
        config.bind = parse_bind(bind, "--bind / FLOE_BIND").map_err(failed)?;
    }
    if let Some(timeout) = &args.sync_timeout {
        config.sync_timeout = crate::jobserver::context::parse_duration(timeout)
            .map_err(|e| failed(format!("--sync-timeout / FLOE_SYNC_TIMEOUT: {e}")))?;
    }
    if let Some(p) = &paths.pipelines {
        config.pipelines = p.clone();
    }
    if let Some(p) = &paths.data_dir {
        config.data_dir = p.clone();
    }
    if let Some(p) = &paths.store {
        config.store = p.clone();
    }
    config
        .core
        .operator_data_roots
        .extend(paths.data_roots.iter().cloned());
    if let Some(file) = &args.tokens_file {
        config.auth.tokens_file = Some(file.clone());
    }
    config.auth.insecure_no_auth = args.insecure_no_auth;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("floe-http");
    if let Some(threads) = args.http_threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime
        .build()
        .map_err(|e| failed(format!("cannot start the async runtime: {e}")))?;
    runtime
        .block_on(crate::server::serve(config, registry.clone()))
        .map_err(failed)
}

/// `floe token …`: the tokens file `floe serve` would use, changed under its writers' lock.
fn token(paths: &PathArgs, args: TokenArgs) -> Result<(), CliError> {
    use crate::auth::TokenStore;
    use crate::auth::tokens::expiry_after;
    use crate::server::ServerConfig;
    let file = match &args.tokens_file {
        Some(file) => file.clone(),
        None => {
            let mut config = match &args.config {
                Some(file) => ServerConfig::from_file(file).map_err(failed)?,
                None => ServerConfig::default(),
            };
            if let Some(store) = &paths.store {
                config.store = store.clone();
            }
            config.auth.tokens_file_for(&config.store)
        }
    };
    let store = TokenStore::new(&file);
    let now = SystemClock.now();
    let time = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    match args.action {
        TokenAction::Create {
            role,
            name,
            expires,
        } => {
            let expires_at = expires
                .map(|text| expiry_after(&text, now).map_err(|e| failed(format!("--expires: {e}"))))
                .transpose()?;
            let issued = store
                .create(role, &name, expires_at, now)
                .map_err(failed_with_causes)?;
            println!("{}", issued.token);
            eprintln!(
                "created token {} (role {role}{}{}) in {}; it is shown only this once",
                issued.record.id,
                if name.is_empty() {
                    String::new()
                } else {
                    format!(", name {name}")
                },
                expires_at.map_or_else(String::new, |at| format!(", expires {}", time(at))),
                file.display()
            );
        }
        TokenAction::List => {
            let tokens = store.load().map_err(failed_with_causes)?.tokens;
            let rows: Vec<[String; 6]> = tokens
                .iter()
                .map(|t| {
                    [
                        t.id.clone(),
                        if t.name.is_empty() {
                            "-".to_owned()
                        } else {
                            t.name.clone()
                        },
                        t.role.to_string(),
                        time(t.created_at),
                        t.expires_at.map_or_else(|| "never".to_owned(), time),
                        match (t.revoked, t.expires_at) {
                            (true, _) => t.revoked_at.map_or_else(|| "yes".to_owned(), time),
                            (false, Some(at)) if at <= now => "no (expired)".to_owned(),
                            _ => "no".to_owned(),
                        },
                    ]
                })
                .collect();
            let header = ["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED"].map(str::to_owned);
            let mut widths = header.clone().map(|h| h.chars().count());
            for row in &rows {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let line: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(cell, width)| format!("{cell:<width$}"))
                    .collect();
                println!("{}", line.join("  ").trim_end());
            }
            if rows.is_empty() {
                eprintln!("no tokens in {}", file.display());
            }
        }
        TokenAction::Revoke { id } => {
            let record = store.revoke(&id, now).map_err(failed_with_causes)?;
            eprintln!(
                "revoked token {} ({}); a running server refuses it within a second",
                record.id, record.role
            );
        }
    }
    Ok(())
}

fn validate(paths: &Paths, args: ValidateArgs, registry: &JobRegistry) -> Result<(), CliError> {
    let targets = if args.paths.is_empty() {
        vec![paths.pipelines.clone()]
    } else {
        args.paths
    };
    let mut files = Vec::new();
    // A folder without pipeline files validates nothing: a problem, not a silent success.
    let mut empty_folders = Vec::new();
    for target in &targets {
        if target.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(target)
                .map_err(|e| failed(format!("{}: {e}", target.display())))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|ext| ext == "yaml" || ext == "yml")
                })
                .collect();
            if found.is_empty() {
                empty_folders.push(pipeline::Diagnostic::new(
                    target,
                    "the folder holds no pipeline files (*.yaml, *.yml)",
                ));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(target.clone());
        }
    }
    let loaded = pipeline::load_files(&files, registry);
    if !empty_folders.is_empty() {
        let mut problems = empty_folders;
        if let Err(errors) = loaded {
            problems.extend(errors.0);
        }
        return Err(CliError::Invalid(pipeline::PipelineErrors(problems)));
    }
    let pipelines = confine(loaded?, &paths.roots())?;
    for pipeline in &pipelines {
        println!(
            "{}: pipeline `{}` is valid ({} sources, {} jobs)",
            pipeline.file.display(),
            pipeline.name,
            pipeline.sources.len(),
            pipeline.jobs.len()
        );
    }
    Ok(())
}

fn load_pipeline(paths: &Paths, name: &str, registry: &JobRegistry) -> Result<Pipeline, CliError> {
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

fn open_materializer(paths: &Paths, clock: Arc<dyn Clock>) -> Result<Materializer, CliError> {
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
fn selection_range(
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

fn run_pipeline(
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

/// Runs computing at once when the command line does not say: one per core.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// `floe backfill`: starts a backfill (or restatement) on a scheduler of its own and follows
/// it to the end with a progress bar. The backfill is durable from the moment it starts: if
/// this process is stopped, the next `floe backfill --resume` or `floe serve` on the same store
/// resumes it, and partitions already materialised are not computed again.
fn backfill(
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

fn results(
    paths: &Paths,
    args: ResultsArgs,
    registry: &JobRegistry,
    clock: Arc<dyn Clock>,
) -> Result<(), CliError> {
    let pipeline = load_pipeline(paths, &args.pipeline, registry)?;
    let (from, to) = selection_range(&pipeline, std::slice::from_ref(&args.job), &args.selection)?;
    let materializer = open_materializer(paths, clock)?;
    let results =
        read_job_results(&materializer, &pipeline, &args.job, from, to).map_err(failed)?;
    if !results.missing.is_empty() {
        eprintln!(
            "note: {} partitions of `{}` in the range are not materialised (first: {})",
            results.missing.len(),
            args.job,
            results.missing[0]
        );
        note_unsuccessful_runs(
            materializer.store(),
            &pipeline.name,
            &args.job,
            &results.missing,
        );
    }
    if let Some(first) = results.stale.first() {
        eprintln!(
            "note: {} partitions of `{}` in the range hold results of another definition and \
             are left out until run again (first: {first})",
            results.stale.len(),
            args.job,
        );
    }
    let mut frame = results.frame;
    print_frame(&mut frame, args.format)
}

/// Says what the runs of partitions without a result came to (failed, upstream_failed,
/// cancelled, still queued), as recorded by whichever process ran them.
fn note_unsuccessful_runs(store: &Store, pipeline: &str, job: &str, missing: &[DateTime<Utc>]) {
    let mut states: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let mut first_error: Option<(RunKey, String)> = None;
    for start in missing {
        let key = RunKey::new(pipeline, job, *start);
        let Ok(Some(record)) = store.run(&key) else {
            continue;
        };
        *states.entry(record.state.as_str()).or_default() += 1;
        if first_error.is_none()
            && let Some(error) = record.error
        {
            first_error = Some((key, error));
        }
    }
    if states.is_empty() {
        return;
    }
    let counts: Vec<String> = states
        .iter()
        .map(|(state, count)| format!("{count} {state}"))
        .collect();
    let first = first_error
        .map(|(key, error)| format!(" (first: {key}: {error})"))
        .unwrap_or_default();
    eprintln!("note: their runs: {}{first}", counts.join(", "));
}

fn print_frame(frame: &mut DataFrame, format: OutputFormat) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        OutputFormat::Table => writeln!(out, "{frame}").map_err(failed),
        OutputFormat::Csv => CsvWriter::new(&mut out).finish(frame).map_err(failed),
        OutputFormat::Json => {
            JsonWriter::new(&mut out)
                .with_json_format(JsonFormat::Json)
                .finish(frame)
                .map_err(failed)?;
            writeln!(out).map_err(failed)
        }
    }
}

fn generate_data(out: &Path, args: &GenerateArgs) -> Result<(), CliError> {
    let start = parse_instant(&args.start, chrono_tz::UTC).map_err(failed)?;
    let spec = SampleSpec {
        seed: args.seed,
        start,
        hours: args.days * 24,
        rows: args.rows,
        users: args.users,
    };
    let started = Instant::now();
    let events = generate(&spec);
    let summary =
        write_events_parquet(&events, &out.join("events"), start, spec.hours).map_err(failed)?;
    eprintln!(
        "wrote {} events in {} hourly Parquet files under {} in {:.2}s",
        summary.rows,
        summary.files,
        out.join("events").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The one-command tour: sample data → validate → materialise a week → print Q1–Q3.
fn demo(
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
