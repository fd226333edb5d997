"""DuckDB and Apache Spark side of Floe's cross-engine benchmark.

This script owns the non-Rust engines of the comparison: it answers the benchmark's
queries over the generated e-commerce events with DuckDB and with PySpark, times them,
and prints one JSON report on stdout for the Rust bench to parse (and to compare with
polars' answers). Human-readable progress and all engine logging go to stderr.

Run it with the venv that benches/compare/setup.sh prints:

    PY=$(bash benches/compare/setup.sh | tail -n1)
    $PY benches/compare/engines.py --data data --repeats 5 --check > report.json

Data: hive-style Parquet, <data>/events/date=YYYY-MM-DD/hour=HH/*.parquet, with ts a UTC
timestamp, user_id, event, city, category, product_id, amount. The hour folders are UTC.

Queries (every engine runs the same SQL text, bar the timestamp literal):
    Q1  count(DISTINCT user_id) AS users   where event = 'register', in the --hour window
    Q2  city, sum(amount) AS sales         where event = 'purchase', in the weekend window,
        top 10 by sales DESC, city ASC
    Q3  category, sum(amount) AS sales     where event = 'purchase', in the --day window,
        ordered by category
    Q1w, Q2w, Q3w  the same over the whole table, without the time filter.
A window is [from, to): ts >= from AND ts < to. NULLs sort last everywhere (as Floe does).

Engines / modes:
    duckdb_files       DuckDB reading the Parquet files for every query: windowed queries get
                       the explicit list of files in the hour folders covering the window (as
                       Floe's pipeline does) and still apply the ts filter; whole-table queries
                       read the events/**/*.parquet glob.
    duckdb_memory      the whole table loaded once into a DuckDB in-memory table (the analogue
                       of Floe's warm context), queries over that table.
    spark_warm_files   one SparkSession (local[2]), each query reads the files as duckdb_files
                       does (whole-table queries read the events/ directory).
    spark_warm_cached  the same session; the whole table read once, .cache()d and counted,
                       queries over the cached DataFrame.
    spark_cold         what a new job pays: the wall time, measured by this process, from
                       spawning a fresh python (this script, --cold-child) that imports
                       pyspark, builds a SparkSession and answers Q1 (files mode) until that
                       answer arrives. The child also measures builder.getOrCreate() alone.
Every engine/query gets one untimed warm-up run, then --repeats timed runs (spark_cold:
--cold-repeats, default --repeats). Times are wall-clock milliseconds around execute+fetch
(for Spark, around reading the files, planning and collect()).

Output (stdout, one JSON object):
    {
      "versions": {"python": str, "duckdb": str, "pyspark": str, "spark": str|null,
                   "java": str|null, "platform": str, "cpus": int},
      "load": {"start": [1m, 5m, 15m], "end": [1m, 5m, 15m]},      # os.getloadavg()
      "config": {"data": str, "repeats": int, "cold_repeats": int, "float_decimals": int,
                 "windows": {"hour": [from, to], "weekend": [...], "day": [...]},
                 "files": {"hour": n, "weekend": n, "day": n, "all": n}},
      "setup_ms": {"duckdb_memory_load": x, "spark_warm_session_start": x,
                   "spark_cache_load": x},                          # only those that ran
      "results": [
        {"engine": "duckdb_files", "query": "Q1", "times_ms": [..], "median_ms": x,
         "columns": ["users"], "rows": [[n]]},
        ...,
        {"engine": "spark_cold", "query": "Q1", ..., "session_start_ms": [..]}  # per run
      ],
      "spark_session_start_ms": x | null,   # median over the cold children's getOrCreate()
      "spark_cold_q1_ms": x | null,         # median of spark_cold's times_ms
      "check": {"ok": bool, "mismatches": [..]} | null              # with --check
    }
Answers: "rows" is a list of rows, each a list of values in "columns" order. Integers stay
integers; floats are rounded to --float-decimals decimal places (default 2: the amounts are
whole cents), i.e. Python's round(x, 2), the double nearest the 2-decimal value; the Rust side
should round polars' floats the same way ((x * 100.0).round() / 100.0, or compare
format!("{:.2}", x)). Rounding to significant digits instead is not robust here: a sum of
cents such as 19009.05 sits exactly on a 6-significant-digit tie, so summation-order noise
(19009.049999999996 vs 19009.05) flips it, even between two runs of one engine.

--check makes the script exit 1 (after printing the report) unless every engine that ran a
query gave the same rows and columns for it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable, Optional

ENGINES = [
    "duckdb_files",
    "duckdb_memory",
    "spark_cold",
    "spark_warm_files",
    "spark_warm_cached",
]
QUERIES = ["Q1", "Q2", "Q3", "Q1w", "Q2w", "Q3w"]
COLUMNS = ["ts", "user_id", "event", "city", "category", "product_id", "amount"]
REPO_ROOT = Path(__file__).resolve().parents[2]
HOUR = dt.timedelta(hours=1)


def log(message: str) -> None:
    print(f"[engines] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Windows, files and queries


def parse_instant(text: str) -> dt.datetime:
    """An RFC 3339 instant (e.g. 2024-01-01T10:00:00Z) as an aware UTC datetime."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (RFC 3339 needs one)")
    return value.astimezone(dt.timezone.utc)


@dataclass(frozen=True)
class Window:
    """The half-open time range [start, end)."""

    name: str
    start: dt.datetime
    end: dt.datetime

    def to_json(self) -> list:
        return [rfc3339(self.start), rfc3339(self.end)]


def rfc3339(instant: dt.datetime) -> str:
    return instant.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


class EventsLayout:
    """The hive-style events tree: <data>/events/date=YYYY-MM-DD/hour=HH/*.parquet."""

    def __init__(self, data_dir: Path):
        self.root = data_dir / "events"
        if not self.root.is_dir():
            raise SystemExit(f"engines.py: no events folder at {self.root}")

    def files_in(self, window: Window) -> list[str]:
        """The Parquet files of every hour folder that overlaps the window, in time order."""
        files: list[str] = []
        hour = window.start.replace(minute=0, second=0, microsecond=0)
        while hour < window.end:
            folder = self.root / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"
            if folder.is_dir():
                files.extend(str(path) for path in sorted(folder.glob("*.parquet")))
            hour += HOUR
        if not files:
            raise SystemExit(
                f"engines.py: no Parquet files under {self.root} cover the {window.name} "
                f"window {rfc3339(window.start)}..{rfc3339(window.end)}"
            )
        return files

    def glob(self) -> str:
        return str(self.root / "**" / "*.parquet")

    def all_files(self) -> list[str]:
        return sorted(str(path) for path in self.root.glob("**/*.parquet"))


@dataclass(frozen=True)
class Query:
    name: str
    columns: list[str]
    window: Optional[Window]  # None: the whole table
    template: str  # SQL with {source} and {window} (the "AND ts ..." clause or "")

    def sql(self, source: str, timestamp_literal: Callable[[dt.datetime], str]) -> str:
        clause = ""
        if self.window is not None:
            clause = (
                f" AND ts >= {timestamp_literal(self.window.start)}"
                f" AND ts < {timestamp_literal(self.window.end)}"
            )
        return self.template.format(source=source, window=clause)


Q1_SQL = "SELECT count(DISTINCT user_id) AS users FROM {source} WHERE event = 'register'{window}"
Q2_SQL = (
    "SELECT city, sum(amount) AS sales FROM {source} WHERE event = 'purchase'{window}"
    " GROUP BY city ORDER BY sales DESC NULLS LAST, city ASC NULLS LAST LIMIT 10"
)
Q3_SQL = (
    "SELECT category, sum(amount) AS sales FROM {source} WHERE event = 'purchase'{window}"
    " GROUP BY category ORDER BY category ASC NULLS LAST"
)


def build_queries(hour: Window, weekend: Window, day: Window) -> dict[str, Query]:
    return {
        "Q1": Query("Q1", ["users"], hour, Q1_SQL),
        "Q2": Query("Q2", ["city", "sales"], weekend, Q2_SQL),
        "Q3": Query("Q3", ["category", "sales"], day, Q3_SQL),
        "Q1w": Query("Q1w", ["users"], None, Q1_SQL),
        "Q2w": Query("Q2w", ["city", "sales"], None, Q2_SQL),
        "Q3w": Query("Q3w", ["category", "sales"], None, Q3_SQL),
    }


def normalise_value(value, float_decimals: int):
    """One answer cell in the report's comparable form (see the module docstring)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        return normalise_value(float(value), float_decimals)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite answer {value}")
        return round(value, float_decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    raise TypeError(f"unexpected answer type {type(value).__name__}: {value!r}")


def normalise_rows(rows, float_decimals: int) -> list[list]:
    return [[normalise_value(value, float_decimals) for value in row] for row in rows]


# ---------------------------------------------------------------------------------------
# Engines. Each has .name, .run(query) -> (columns, rows) and .close().


def duckdb_timestamp(instant: dt.datetime) -> str:
    return f"TIMESTAMPTZ '{instant.isoformat(sep=' ')}'"


def spark_timestamp(instant: dt.datetime) -> str:
    # TIMESTAMP is TIMESTAMP_LTZ in Spark 3.5 (spark.sql.timestampType default); the offset
    # in the literal pins the instant whatever the session time zone.
    return f"TIMESTAMP '{instant.isoformat(sep=' ')}'"


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class DuckDBFiles:
    name = "duckdb_files"

    def __init__(self, layout: EventsLayout):
        import duckdb

        self.layout = layout
        self.connection = duckdb.connect()
        self.connection.execute("SET TimeZone = 'UTC'")

    def source(self, query: Query) -> str:
        if query.window is None:
            return f"read_parquet({sql_string(self.layout.glob())}, hive_partitioning = false)"
        files = ", ".join(sql_string(path) for path in self.layout.files_in(query.window))
        return f"read_parquet([{files}], hive_partitioning = false)"

    def run(self, query: Query):
        cursor = self.connection.execute(query.sql(self.source(query), duckdb_timestamp))
        rows = cursor.fetchall()
        return [column[0] for column in cursor.description], rows

    def close(self) -> None:
        self.connection.close()


class DuckDBMemory(DuckDBFiles):
    name = "duckdb_memory"

    def __init__(self, layout: EventsLayout, setup_ms: dict):
        super().__init__(layout)
        started = time.perf_counter()
        self.connection.execute(
            f"CREATE TABLE events AS SELECT {', '.join(COLUMNS)} FROM "
            f"read_parquet({sql_string(layout.glob())}, hive_partitioning = false)"
        )
        setup_ms["duckdb_memory_load"] = round(elapsed_ms(started), 3)
        count = self.connection.execute("SELECT count(*) FROM events").fetchone()[0]
        log(f"duckdb_memory: loaded {count} rows in {setup_ms['duckdb_memory_load']:.1f} ms")

    def source(self, query: Query) -> str:
        return "events"


def start_spark():
    """A local[2] SparkSession set up for the benchmark, and getOrCreate()'s wall time in ms."""
    from pyspark.sql import SparkSession

    # Keep the driver on the loopback address (otherwise Spark binds to the first
    # non-loopback interface and warns that the hostname resolves to 127.0.0.1).
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    started = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("floe-compare")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.memory", "4g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .getOrCreate()
    )
    start_ms = round(elapsed_ms(started), 3)
    spark.sparkContext.setLogLevel("WARN")
    return spark, start_ms


class SparkFiles:
    name = "spark_warm_files"

    def __init__(self, spark, layout: EventsLayout):
        self.spark = spark
        self.layout = layout

    def frame(self, query: Query):
        if query.window is None:
            return self.spark.read.parquet(str(self.layout.root))
        return self.spark.read.parquet(*self.layout.files_in(query.window))

    def run(self, query: Query):
        self.frame(query).createOrReplaceTempView("events_files")
        result = self.spark.sql(query.sql("events_files", spark_timestamp))
        rows = result.collect()
        return list(result.columns), [tuple(row) for row in rows]

    def close(self) -> None:
        pass  # the session is shared; main() stops it


class SparkCached(SparkFiles):
    name = "spark_warm_cached"

    def __init__(self, spark, layout: EventsLayout, setup_ms: dict):
        super().__init__(spark, layout)
        started = time.perf_counter()
        self.cached = spark.read.parquet(str(layout.root)).select(*COLUMNS).cache()
        count = self.cached.count()
        setup_ms["spark_cache_load"] = round(elapsed_ms(started), 3)
        self.cached.createOrReplaceTempView("events_cached")
        log(f"spark_warm_cached: cached {count} rows in {setup_ms['spark_cache_load']:.1f} ms")

    def run(self, query: Query):
        result = self.spark.sql(query.sql("events_cached", spark_timestamp))
        rows = result.collect()
        return list(result.columns), [tuple(row) for row in rows]

    def close(self) -> None:
        self.cached.unpersist()


# ---------------------------------------------------------------------------------------
# Timing


def elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def time_query(engine, query: Query, repeats: int, float_decimals: int) -> dict:
    """One warm-up, then `repeats` timed runs, each of which must give the warm-up's answer."""
    columns, rows = engine.run(query)
    warm_answer = (list(columns), normalise_rows(rows, float_decimals))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        columns, rows = engine.run(query)
        times.append(round(elapsed_ms(started), 3))
        answer = (list(columns), normalise_rows(rows, float_decimals))
        if answer != warm_answer:
            raise RuntimeError(f"{engine.name} {query.name}: answer changed between runs")
    median = statistics.median(times)  # parse_args makes repeats >= 1
    log(
        f"{engine.name:18} {query.name:4} median {round(median, 1)} ms"
        f"  runs {times}  rows {len(warm_answer[1])}"
    )
    return {
        "engine": engine.name,
        "query": query.name,
        "times_ms": times,
        "median_ms": median,
        "columns": warm_answer[0],
        "rows": warm_answer[1],
    }


def run_cold(args, query: Query, repeats: int) -> tuple[dict, float]:
    """spark_cold: fresh processes answering Q1; returns its result and the median start."""
    command = [sys.executable, str(Path(__file__).resolve()), "--cold-child"]
    command += ["--data", str(args.data), "--hour", rfc3339(args.hour)]
    command += ["--float-decimals", str(args.float_decimals)]
    times, session_starts, answer = [], [], None
    for run in range(repeats + 1):  # run 0 is the warm-up (OS page cache, JIT'd jars on disk)
        with tempfile.TemporaryFile() as child_stderr:
            started = time.perf_counter()
            child = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=child_stderr, text=True
            )
            line = child.stdout.readline()
            wall_ms = elapsed_ms(started)
            child.stdout.read()
            code = child.wait()
            if code != 0 or not line:
                child_stderr.seek(0)
                sys.stderr.write(child_stderr.read().decode(errors="replace"))
                raise RuntimeError(f"spark_cold child exited with {code}")
        report = json.loads(line)
        this_answer = (report["columns"], report["rows"])
        if answer is not None and this_answer != answer:
            raise RuntimeError("spark_cold: answer changed between runs")
        answer = this_answer
        if run == 0:
            start_ms = report["session_start_ms"]
            log(f"spark_cold         warm-up {wall_ms:.0f} ms (session start {start_ms:.0f} ms)")
            continue
        times.append(round(wall_ms, 3))
        session_starts.append(round(report["session_start_ms"], 3))
    median = statistics.median(times)
    log(f"spark_cold         Q1   median {median} ms  runs {times}")
    log(f"spark_cold         session starts (getOrCreate) {session_starts} ms")
    result = {
        "engine": "spark_cold",
        "query": query.name,
        "times_ms": times,
        "median_ms": median,
        "session_start_ms": session_starts,
        "columns": answer[0],
        "rows": answer[1],
    }
    return result, statistics.median(session_starts)


def cold_child(args, stdout) -> None:
    """The process spark_cold spawns: start Spark, answer Q1, print one JSON line."""
    layout = EventsLayout(args.data)
    query = build_queries(args.hour_window, args.weekend_window, args.day_window)["Q1"]
    spark, start_ms = start_spark()
    columns, rows = SparkFiles(spark, layout).run(query)
    stdout.write(
        json.dumps(
            {
                "session_start_ms": start_ms,
                "columns": columns,
                "rows": normalise_rows(rows, args.float_decimals),
            }
        )
        + "\n"
    )
    stdout.flush()
    spark.stop()


# ---------------------------------------------------------------------------------------
# Report


def java_version(spark) -> Optional[str]:
    if spark is not None:
        return spark.sparkContext._jvm.java.lang.System.getProperty("java.version")
    java = Path(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"
    try:
        out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # e.g. 'openjdk version "17.0.15" 2025-04-15': report "17.0.15", as the JVM's property.
    first = ((out.stderr or out.stdout).splitlines() or [""])[0]
    quoted = first.split('"')
    return quoted[1] if len(quoted) >= 3 else (first.strip() or None)


def versions(spark) -> dict:
    import duckdb

    try:
        import pyspark

        pyspark_version = pyspark.__version__
    except ImportError:
        pyspark_version = None
    return {
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pyspark": pyspark_version,
        "spark": spark.version if spark is not None else None,
        "java": java_version(spark),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def check_answers(results: list[dict]) -> dict:
    """Every engine's answer to a query must equal the first engine's."""
    reference: dict[str, dict] = {}
    mismatches = []
    for result in results:
        first = reference.setdefault(result["query"], result)
        if (first["columns"], first["rows"]) != (result["columns"], result["rows"]):
            mismatches.append(
                {
                    "query": result["query"],
                    "engines": [first["engine"], result["engine"]],
                    "expected": {"columns": first["columns"], "rows": first["rows"]},
                    "got": {"columns": result["columns"], "rows": result["rows"]},
                }
            )
    return {"ok": not mismatches, "mismatches": mismatches}


def parse_list(allowed: list[str], what: str):
    def parse(text: str) -> list[str]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(unknown) or '(none)'}; choose from {', '.join(allowed)}"
            )
        return names

    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Time Floe's benchmark queries on DuckDB and Apache Spark; "
        "JSON report on stdout, progress on stderr.",
        epilog="See the module docstring for the queries, the modes and the report's shape.",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO_ROOT / "data",
        help="folder holding events/date=YYYY-MM-DD/hour=HH/*.parquet (default: <repo>/data)",
    )
    parser.add_argument(
        "--engines",
        type=parse_list(ENGINES, "engine"),
        default=list(ENGINES),
        help=f"comma-separated engines/modes to run (default: all: {','.join(ENGINES)})",
    )
    parser.add_argument(
        "--queries",
        type=parse_list(QUERIES, "query"),
        default=list(QUERIES),
        help=f"comma-separated queries (default: all: {','.join(QUERIES)}); "
        "spark_cold always runs Q1",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed runs per engine and query, after one warm-up (default 5)",
    )
    parser.add_argument(
        "--cold-repeats",
        type=int,
        default=None,
        help="timed fresh processes for spark_cold, after one warm-up (default: --repeats)",
    )
    parser.add_argument(
        "--hour",
        type=parse_instant,
        default=parse_instant("2024-01-01T10:00:00Z"),
        help="RFC 3339 start of Q1's one-hour window (default 2024-01-01T10:00:00Z)",
    )
    parser.add_argument(
        "--weekend-from",
        type=parse_instant,
        default=parse_instant("2024-01-06T00:00:00Z"),
        help="RFC 3339 start of Q2's window (default 2024-01-06T00:00:00Z)",
    )
    parser.add_argument(
        "--weekend-to",
        type=parse_instant,
        default=parse_instant("2024-01-08T00:00:00Z"),
        help="RFC 3339 end (exclusive) of Q2's window (default 2024-01-08T00:00:00Z)",
    )
    parser.add_argument(
        "--day",
        type=parse_instant,
        default=parse_instant("2024-01-02T00:00:00Z"),
        help="RFC 3339 start of Q3's 24-hour window (default 2024-01-02T00:00:00Z)",
    )
    parser.add_argument(
        "--float-decimals",
        type=int,
        default=2,
        help="decimal places floats in answers are rounded to, so that engines compare "
        "exactly (default 2: the amounts are cents)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 (after the report) unless all engines gave identical answers to each query",
    )
    parser.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or (args.cold_repeats is not None and args.cold_repeats < 1):
        parser.error("--repeats and --cold-repeats must be at least 1")
    if args.weekend_to <= args.weekend_from:
        parser.error("--weekend-to must be after --weekend-from")
    args.data = args.data.resolve()
    args.hour_window = Window("hour", args.hour, args.hour + HOUR)
    args.weekend_window = Window("weekend", args.weekend_from, args.weekend_to)
    args.day_window = Window("day", args.day, args.day + dt.timedelta(days=1))
    return args


def claim_stdout():
    """Keep the real stdout for the JSON report; send everything else (py4j, the JVM) to stderr."""
    sys.stdout.flush()
    report_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(report_fd, "w")


def main(argv=None) -> int:
    args = parse_args(argv)
    report_out = claim_stdout()
    if args.cold_child:
        cold_child(args, report_out)
        return 0

    load_start = list(os.getloadavg())
    layout = EventsLayout(args.data)
    queries = build_queries(args.hour_window, args.weekend_window, args.day_window)
    selected = [queries[name] for name in args.queries]
    engines = [name for name in ENGINES if name in args.engines]  # canonical order
    setup_ms: dict = {}
    results: list[dict] = []
    session_start_ms = cold_q1_ms = None
    spark = None
    log(f"data {layout.root}, engines {','.join(engines)}, queries {','.join(args.queries)}")
    log(f"repeats {args.repeats}, load average {load_start}")

    for name in engines:
        if name == "spark_cold":
            cold_repeats = args.cold_repeats or args.repeats
            cold, session_start_ms = run_cold(args, queries["Q1"], cold_repeats)
            cold_q1_ms = cold["median_ms"]
            results.append(cold)
            continue
        if name.startswith("spark_") and spark is None:
            spark, setup_ms["spark_warm_session_start"] = start_spark()
            log(f"spark: session started in {setup_ms['spark_warm_session_start']:.0f} ms")
        engine = {
            "duckdb_files": lambda: DuckDBFiles(layout),
            "duckdb_memory": lambda: DuckDBMemory(layout, setup_ms),
            "spark_warm_files": lambda: SparkFiles(spark, layout),
            "spark_warm_cached": lambda: SparkCached(spark, layout, setup_ms),
        }[name]()
        try:
            for query in selected:
                results.append(time_query(engine, query, args.repeats, args.float_decimals))
        finally:
            engine.close()

    report = {
        "versions": versions(spark),
        "load": {"start": load_start, "end": list(os.getloadavg())},
        "config": {
            "data": str(args.data),
            "repeats": args.repeats,
            "cold_repeats": args.cold_repeats or args.repeats,
            "float_decimals": args.float_decimals,
            "windows": {
                window.name: window.to_json()
                for window in (args.hour_window, args.weekend_window, args.day_window)
            },
            "files": {
                "hour": len(layout.files_in(args.hour_window)),
                "weekend": len(layout.files_in(args.weekend_window)),
                "day": len(layout.files_in(args.day_window)),
                "all": len(layout.all_files()),
            },
        },
        "setup_ms": setup_ms,
        "results": results,
        "spark_session_start_ms": session_start_ms,
        "spark_cold_q1_ms": cold_q1_ms,
        "check": check_answers(results) if args.check else None,
    }
    if spark is not None:
        spark.stop()
    report_out.write(json.dumps(report, allow_nan=False) + "\n")
    report_out.flush()

    if args.check:
        check = report["check"]
        for mismatch in check["mismatches"]:
            first, other = mismatch["engines"]
            log(f"check: {mismatch['query']}: {other} disagrees with {first}")
        verdict = "all engines agree" if check["ok"] else "MISMATCH"
        log(f"check: {verdict} on the {len(selected)} queries asked for")
        return 0 if check["ok"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
