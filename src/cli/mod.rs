//! The `floe` command line: argument parsing (clap) and the commands that glue the library
//! together. Commands print results to stdout and progress to stderr.
//!
//! This file holds the clap types and the dispatch; the commands live by group in `run`
//! (run, backfill, demo), `results`, `serve` (serve, token), `files` (validate, generate) and
//! `test` (the pipelines' unit tests), and what they share in `setup`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clock::{Clock, SystemClock};
use crate::job::JobRegistry;
use crate::pipeline;
use crate::pipeline::data_roots::DataRoots;

mod files;
mod plan;
mod results;
mod run;
mod runs;
mod serve;
mod setup;
mod test;

use self::files::{generate_data, validate};
use self::plan::plan;
use self::results::results;
use self::run::{backfill, demo, run_pipeline};
use self::runs::runs;
use self::serve::{serve, token};
pub use self::test::TestArgs;
use self::test::run_tests;

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate sample data, materialise the example pipeline and print Q1–Q3.
    Demo(DemoArgs),
    /// Check pipeline files and report every problem with its file, line and column.
    Validate(ValidateArgs),
    /// Materialise partitions of a pipeline (skips partitions that are already fresh).
    Run(RunArgs),
    /// Show what `run` over the same range would compute and why (missing, definition changed
    /// with its diff, source files changed, upstream changed); `--yes` then runs it.
    Plan(PlanArgs),
    /// Print materialised results of a job.
    Results(ResultsArgs),
    /// List the recorded runs of a pipeline's jobs: state, attempts, error, data checks.
    Runs(RunsArgs),
    /// Write the deterministic sample e-commerce dataset as hourly Parquet files.
    Generate(GenerateArgs),
    /// Run the job server (spark-jobserver's REST API) until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Backfill or restate a range of partitions through the scheduler, with progress and ETA.
    Backfill(BackfillArgs),
    /// Create, list and revoke the API tokens `floe serve` accepts.
    Token(TokenArgs),
    /// Run the pipelines' unit tests (*.test.yaml) in memory and show how results differ.
    Test(TestArgs),
    /// A context's worker process, started by `floe serve` (not by hand): serves its calls on
    /// stdin and stdout.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// `floe worker`'s arguments, as `floe serve` passes them.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
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
pub struct PlanArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Run the plan after showing it.
    #[arg(long)]
    pub yes: bool,
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

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[arg(long, short)]
    pub pipeline: String,
    /// Only these jobs (repeatable) [default: every job].
    #[arg(long = "job", short)]
    pub jobs: Vec<String>,
    #[command(flatten)]
    pub selection: Selection,
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

/// For a binary that embeds Floe's server with worker processes (`workers.executable` unset:
/// workers are started from the binary itself): serves as a worker and answers its exit code
/// when this process was started as one (`<binary> worker --protocol=…`), else `None`. Call it
/// first thing in `main`. The `floe` binary does this through [`run`].
pub fn run_as_worker_if_asked(registry: &JobRegistry) -> Option<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("worker")
        || args.get(1).map(String::as_str) != Some(crate::jobserver::workers::WORKER_PROTOCOL)
    {
        return None;
    }
    Some(
        match crate::jobserver::workers::run_worker(&args[1..], registry) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                std::process::ExitCode::FAILURE
            }
        },
    )
}

/// Runs a parsed command line with the built-in job kinds plus `registry`'s classes.
pub fn run(cli: Cli, registry: &JobRegistry) -> Result<(), CliError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let paths = cli.paths.or_defaults();
    match cli.command {
        Command::Serve(args) => serve(&cli.paths, &args, registry),
        Command::Worker(args) => {
            crate::jobserver::workers::run_worker(&args.args, registry).map_err(failed)
        }
        Command::Token(args) => token(&cli.paths, args),
        Command::Demo(args) => demo(&paths, args, registry, clock),
        Command::Validate(args) => validate(&paths, args, registry),
        Command::Test(args) => run_tests(&paths, args, registry),
        Command::Run(args) => run_pipeline(&paths, args, registry, clock),
        Command::Plan(args) => plan(&paths, args, registry, clock),
        Command::Backfill(args) => backfill(&paths, args, registry, clock),
        Command::Results(args) => results(&paths, args, registry, clock),
        Command::Runs(args) => runs(&paths, args, registry),
        Command::Generate(args) => {
            let out = args.out.clone().unwrap_or_else(|| paths.data_dir.clone());
            generate_data(&out, &args)
        }
    }
}
