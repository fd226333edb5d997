# python-sjsclient 0.10.0 predates Python 3.10: its base.py subclasses
# `collections.MutableMapping`. Restore the removed aliases before importing it.
import collections
import collections.abc

for _alias in ("MutableMapping", "Mapping", "MutableSequence", "Sequence",
               "MutableSet", "Set", "Callable", "Iterable", "Iterator",
               "Hashable", "Sized", "Container"):
    if not hasattr(collections, _alias):
        setattr(collections, _alias, getattr(collections.abc, _alias))

# The spark-jobserver flow of `floe serve`, driven by the stock PyPI client.
#
#   python3 tests/python/sjs_flow.py http://127.0.0.1:PORT
#
# Needs `pip install python-sjsclient==0.10.0` and a running `floe serve` with the example app
# `shop` (pipelines/shop.yaml, sample data from 2024-01-01) registered. Only sjsclient's public
# API is used. Prints one line per step; exits 0 on success, 1 on the first failed check, 2 on
# an unexpected error (traceback printed), 3 on a usage error. With SJS_FLOW_TOKEN set (an admin
# token of a server with authentication on), every call sends it as HTTP Basic, the way
# sjsclient's `auth=(user, password)` does: the user name is ignored, the token is the password.
#
# sjsclient facts this script relies on (see the sjsclient source):
# - Every call opens a fresh requests.Session with no timeout; a SIGALRM bounds the whole run.
# - Any 4xx/5xx raises HttpException (NotFoundException for 404) whose `details` is the
#   `status` field of the JSON error body and whose `status_code` is the HTTP code.
# - `conf` goes to requests as `data=`: a dict would be form-encoded, so configs are passed as
#   UTF-8 bytes of HOCON text (sent raw, without a Content-Type header).
# - Job objects carry exactly the JSON fields of the answer as attributes (jobId, status,
#   result, ...); there is no refresh/poll helper, so polling is jobs.get() in a loop.

import os
import signal
import sys
import time
import traceback
from pathlib import Path

try:
    import requests
    from sjsclient import app as sjs_app
    from sjsclient import client as sjs_client
    from sjsclient import exceptions as sjs_exceptions
except ImportError as e:
    print("FAIL %s: run `pip install python-sjsclient==0.10.0` first" % e, file=sys.stderr)
    sys.exit(3)

APP = "shop"
APP_COPY = "shop-copy"
CONTEXT = "sjs-ctx"
DOTTED_CONTEXT = "sjs.ctx-1.0"
SHOP_YAML = Path(__file__).resolve().parents[2] / "pipelines" / "shop.yaml"
FINAL = ("FINISHED", "ERROR", "KILLED")
SERVER_WAIT = float(os.environ.get("SJS_FLOW_SERVER_WAIT", "30"))
TOTAL_TIMEOUT = int(os.environ.get("SJS_FLOW_TIMEOUT", "300"))
JOB_TIMEOUT = float(os.environ.get("SJS_FLOW_JOB_TIMEOUT", "120"))
TOKEN = os.environ.get("SJS_FLOW_TOKEN")


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def ok(step, detail=""):
    print("ok   %-28s %s" % (step, detail), flush=True)


def context_names(client):
    return [ctx.name for ctx in client.contexts.list()]


def wait_context_gone(client, name, timeout=30.0):
    # DELETE /contexts may answer 202 while the stop is in progress.
    deadline = time.monotonic() + timeout
    while name in context_names(client):
        check(time.monotonic() < deadline,
              "context %s still listed %.0fs after DELETE" % (name, timeout))
        time.sleep(0.2)


def wait_final(client, job):
    """Polls GET /jobs/{id} until the job is FINISHED, ERROR or KILLED."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while job.status not in FINAL:
        check(job.status in ("STARTED", "RUNNING"),
              "job %s has unexpected status %r" % (job.jobId, job.status))
        check(time.monotonic() < deadline,
              "job %s not final after %.0fs (status %s)"
              % (job.jobId, JOB_TIMEOUT, job.status))
        time.sleep(0.2)
        job = client.jobs.get(job.jobId)
    return job


def http_error(e):
    # Not str(e): HttpException.__str__ raises TypeError when `details` is not a string.
    return "%s (status field %r)" % (e.message, e.details)


def describe_error(job):
    result = getattr(job, "result", None)
    if isinstance(result, dict):
        return "%s: %s" % (result.get("errorClass"), result.get("message"))
    return repr(result)


def flow(url):
    # Construction sends nothing.
    client = sjs_client.Client(url, auth=("floe", TOKEN) if TOKEN else None)
    ok("client", url)

    # GET /binaries: sjsclient looks the name up in the JSON object keyed by app name. The
    # first call is retried while the server is still starting.
    deadline = time.monotonic() + SERVER_WAIT
    while True:
        try:
            shop = client.apps.get(APP)
            break
        except requests.ConnectionError as e:
            check(time.monotonic() < deadline,
                  "no server at %s after %.0fs: %s" % (url, SERVER_WAIT, e))
            time.sleep(0.5)
    check(shop.name == APP, "apps.get(%r) returned %r" % (APP, shop.name))
    ok("app registered", "%s (%r)" % (shop.name, shop.time))

    # A context left over by an interrupted run would make the create fail.
    if CONTEXT in context_names(client):
        client.contexts.delete(CONTEXT)
        wait_context_gone(client, CONTEXT)
        ok("stale context deleted", CONTEXT)

    ctx = client.contexts.create(CONTEXT, {"worker-threads": 2})
    check(ctx.name == CONTEXT, "contexts.create returned %r" % ctx.name)
    ok("context created", "POST /contexts/%s?worker-threads=2" % CONTEXT)

    names = context_names(client)
    check(CONTEXT in names, "context %s not in GET /contexts %r" % (CONTEXT, names))
    ok("contexts listed", ", ".join(names))

    # contexts.get() is GET /contexts and a membership test (not GET /contexts/{name}).
    got = client.contexts.get(CONTEXT)
    check(got.name == CONTEXT, "contexts.get returned %r" % got.name)
    ok("context get", got.name)

    # apps.create() can send any bytes, but only as application/java-archive (AppType.JAVA,
    # the default) or application/python-archive (AppType.PYTHON): it has no other type, so
    # the server must accept the YAML under the java-archive content type.
    copy = client.apps.create(APP_COPY, SHOP_YAML.read_bytes(), app_type=sjs_app.AppType.JAVA)
    check(copy.name == APP_COPY, "apps.create returned %r" % copy.name)
    listed = [a.name for a in client.apps.list()]
    check(APP_COPY in listed and APP in listed,
          "GET /binaries lacks %s or %s: %r" % (APP, APP_COPY, listed))
    ok("app uploaded", "%s (%d bytes of YAML as application/java-archive)"
       % (APP_COPY, SHOP_YAML.stat().st_size))

    # Async job of the app's pipeline: 202 with status STARTED, then poll GET /jobs/{id}.
    started = client.jobs.create(shop, "sales_per_category_daily",
                                 conf=b'partition = "2024-01-02"', ctx=ctx)
    check(bool(started.jobId), "async POST /jobs answered no jobId")
    check(started.status == "STARTED",
          "async POST /jobs status %r, want STARTED" % started.status)
    ok("async job started", started.jobId)

    done = wait_final(client, started)
    check(done.status == "FINISHED",
          "job %s ended %s: %s" % (done.jobId, done.status, describe_error(done)))
    check(done.jobId == started.jobId,
          "GET /jobs/%s answered jobId %r" % (started.jobId, done.jobId))
    check(done.context == CONTEXT, "job context %r, want %s" % (done.context, CONTEXT))
    rows = done.result
    check(isinstance(rows, list) and rows, "result is not a non-empty list of rows: %r" % (rows,))
    for row in rows:
        check(isinstance(row, dict) and "category" in row and "sales" in row,
              "result row lacks category/sales: %r" % (row,))
    ok("async job finished",
       "%d categories, duration %s" % (len(rows), getattr(done, "duration", "?")))

    # Sync built-in job: 200 {"jobId", "status": "FINISHED", "result": [rows]}. A sync job that
    # outlives the server's default timeout answers 202 instead (sjsclient cannot pass timeout=).
    sql = client.jobs.create(shop, "sql", conf=b'query = "SELECT 1 AS one"', ctx=ctx, sync=True)
    check(bool(sql.jobId), "sync POST /jobs answered no jobId")
    if sql.status in ("STARTED", "RUNNING"):
        sql = wait_final(client, sql)
    check(sql.status in (None, "FINISHED"),
          "sql job ended %s: %s" % (sql.status, describe_error(sql)))
    check(sql.result == [{"one": 1}], "sql result %r, want [{'one': 1}]" % (sql.result,))
    ok("sync sql job", "%s -> %r" % (sql.jobId, sql.result))

    # A sync result of more than 100,000 rows comes whole: sjsclient shows `result` only.
    week = b'input { source = events, app = shop, from = "2024-01-01", to = "2024-01-08" }\n'
    counted = client.jobs.create(shop, "sql", ctx=ctx, sync=True,
                                 conf=week + b'query = "SELECT count(*) AS n FROM events"')
    check(counted.status in (None, "FINISHED"),
          "count job ended %s: %s" % (counted.status, describe_error(counted)))
    copies = 6
    expected = copies * counted.result[0]["n"]
    check(expected > 100000, "%d copies of the week are only %d rows" % (copies, expected))
    union = b" UNION ALL ".join([b"SELECT user_id FROM events"] * copies)
    big = client.jobs.create(shop, "sql", ctx=ctx, sync=True,
                             conf=week + b'query = "' + union + b'"')
    if big.status in ("STARTED", "RUNNING"):
        big = wait_final(client, big)
    check(big.status in (None, "FINISHED"), "big sync job ended %s" % big.status)
    check(isinstance(big.result, list) and len(big.result) == expected,
          "sync result has %s rows, want all %d" % (len(getattr(big, "result", []) or []), expected))
    ok("whole sync result", "%d rows" % expected)

    # Dotted context names, as spark-jobserver accepts them.
    dotted = client.contexts.create(DOTTED_CONTEXT, {"worker-threads": 1})
    check(dotted.name == DOTTED_CONTEXT, "contexts.create returned %r" % dotted.name)
    one = client.jobs.create(shop, "sql", conf=b'query = "SELECT 1 AS one"', ctx=dotted, sync=True)
    check(one.result == [{"one": 1}], "job in %s answered %r" % (DOTTED_CONTEXT, one.result))
    dotted.delete()
    wait_context_gone(client, DOTTED_CONTEXT)
    ok("dotted context", DOTTED_CONTEXT)

    # An ad-hoc job's spark.context-settings: unknown keys are refused, as POST /contexts does.
    try:
        client.jobs.create(shop, "sql", sync=True,
                           conf=b'query = "SELECT 1"\nspark.context-settings { nonsense = 1 }')
    except sjs_exceptions.HttpException as e:
        check(e.status_code == 400, "unknown context setting answered %s" % http_error(e))
        ok("context settings checked", "HttpException %s %s" % (e.status_code, e.details))
    else:
        raise Failure("an unknown setting in spark.context-settings was accepted")

    # A config that fails validation: 400 {"status": "VALIDATION FAILED", "result": {...}}.
    # sjsclient raises HttpException with details = the body's `status`.
    try:
        bad = client.jobs.create(shop, "sales_per_category_daily",
                                 conf=b'partition = "not-a-date"', ctx=ctx, sync=True)
    except sjs_exceptions.NotFoundException as e:
        raise Failure("invalid config raised NotFoundException (404), want 400: %s" % http_error(e))
    except sjs_exceptions.HttpException as e:
        check(e.status_code == 400, "invalid config answered %s" % http_error(e))
        check(e.details == "VALIDATION FAILED",
              "invalid config error status %r, want 'VALIDATION FAILED'" % (e.details,))
        ok("validation failure", "HttpException %s %s" % (e.status_code, e.details))
    else:
        raise Failure("invalid config did not raise; answer status %r" % (bad.status,))

    # GET /jobs/{id}/config: the posted config as a JSON object.
    config = done.get_config()
    check(config.get("partition") == "2024-01-02",
          "GET /jobs/%s/config = %r, want partition 2024-01-02" % (done.jobId, dict(config)))
    ok("job config", dict(config))

    # GET /jobs?limit=50 lists job reports, newest first.
    jobs = list(client.jobs.list(limit=50))
    ids = [j.jobId for j in jobs]
    check(done.jobId in ids and sql.jobId in ids,
          "GET /jobs lacks %s or %s: %r" % (done.jobId, sql.jobId, ids))
    for j in jobs:
        check(j.status in FINAL + ("RUNNING",), "listed job %s has status %r" % (j.jobId, j.status))
    finished = [j.jobId for j in client.jobs.list(limit=50, status="finished")]
    check(done.jobId in finished, "GET /jobs?status=finished lacks %s" % done.jobId)
    check(all(j.status == "FINISHED" for j in client.jobs.list(limit=50, status="finished")),
          "GET /jobs?status=finished lists a job that is not FINISHED")
    ok("jobs listed", "%d jobs, %d finished" % (len(jobs), len(finished)))

    client.apps.delete(APP_COPY)
    try:
        client.apps.get(APP_COPY)
    except sjs_exceptions.NotFoundException:
        pass
    else:
        raise Failure("app %s still listed after DELETE /binaries/%s" % (APP_COPY, APP_COPY))
    ok("app deleted", APP_COPY)

    answer = ctx.delete()
    check(answer.status_code in (200, 202),
          "DELETE /contexts/%s answered %s" % (CONTEXT, answer.status_code))
    wait_context_gone(client, CONTEXT)
    try:
        client.contexts.get(CONTEXT)
    except sjs_exceptions.NotFoundException:
        pass
    else:
        raise Failure("contexts.get(%s) succeeded after the delete" % CONTEXT)
    ok("context deleted", "%s (HTTP %s)" % (CONTEXT, answer.status_code))


def on_alarm(signum, frame):
    raise Failure("the flow did not finish within %ss (SJS_FLOW_TIMEOUT)" % TOTAL_TIMEOUT)


def main(argv):
    if len(argv) != 2 or not argv[1].startswith(("http://", "https://")):
        print("usage: %s http://HOST:PORT" % argv[0], file=sys.stderr)
        return 3
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TOTAL_TIMEOUT)
    try:
        flow(argv[1].rstrip("/"))
    except Failure as e:
        print("FAIL %s" % e, file=sys.stderr)
        return 1
    except requests.ConnectionError as e:
        print("FAIL lost the server: %s" % e, file=sys.stderr)
        return 1
    except sjs_exceptions.HttpException as e:
        print("FAIL unexpected HTTP error: %s" % http_error(e), file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        print("FAIL unexpected error (traceback above)", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)
    print("PASS spark-jobserver flow with python-sjsclient", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
