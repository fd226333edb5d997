"""DuckDB's side of the bigger-than-memory benchmark (benches/streaming.rs).

Runs one of the bench's two daily queries over the hourly Parquet files of one day, in a fresh
process (so its peak memory is its own), with DuckDB's memory limit and thread count set as
the bench asks, spilling to a temporary folder if it must. Prints one JSON line:

    {"query": ..., "wall_ms": x, "peak_rss_kib": n, "rows": [[...], ...], "duckdb": "1.5.6"}

`wall_ms` covers connecting, the settings and the query (the files are read by the query);
`peak_rss_kib` is the process's high-water mark (Python and DuckDB together), as the bench
reads a Floe worker's.

    python duckdb_run.py --data DIR --day 2024-01-01 --query distinct_users \
        --memory-limit-mib 1024 --threads 2 --temp DIR
"""

import argparse
import datetime as dt
import json
import resource
import time

QUERIES = {
    # The Floe job `users_daily`: count_distinct of user_id (nulls not counted).
    "distinct_users": (
        "SELECT count(DISTINCT user_id) AS distinct_count FROM {source} "
        "WHERE ts >= {start} AND ts < {end} AND user_id IS NOT NULL"
    ),
    # The Floe job `events_per_category_daily`: a group_by with a count and a sum.
    "events_per_category": (
        "SELECT category, count(*) AS events, sum(amount) AS sales FROM {source} "
        "WHERE ts >= {start} AND ts < {end} GROUP BY category ORDER BY category"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="the folder holding events/")
    parser.add_argument("--day", required=True, help="the day, YYYY-MM-DD (UTC)")
    parser.add_argument("--query", required=True, choices=sorted(QUERIES))
    parser.add_argument("--memory-limit-mib", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--temp", required=True, help="DuckDB's spill folder")
    args = parser.parse_args()

    started = time.perf_counter()
    import duckdb

    connection = duckdb.connect()
    connection.execute(f"SET memory_limit = '{args.memory_limit_mib}MiB'")
    connection.execute(f"SET threads = {args.threads}")
    connection.execute(f"SET temp_directory = '{args.temp}'")
    day = dt.datetime.fromisoformat(args.day).replace(tzinfo=dt.timezone.utc)
    source = (
        f"read_parquet('{args.data}/events/date={args.day}/hour=*/*.parquet', "
        "hive_partitioning = false)"
    )
    sql = QUERIES[args.query].format(
        source=source,
        start=f"TIMESTAMPTZ '{day.isoformat(sep=' ')}'",
        end=f"TIMESTAMPTZ '{(day + dt.timedelta(days=1)).isoformat(sep=' ')}'",
    )
    rows = connection.execute(sql).fetchall()
    wall_ms = (time.perf_counter() - started) * 1000.0
    print(
        json.dumps(
            {
                "query": args.query,
                "wall_ms": round(wall_ms, 3),
                # Linux reports ru_maxrss in KiB.
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "rows": [[value if not isinstance(value, float) else round(value, 2) for value in row] for row in rows],
                "duckdb": duckdb.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
