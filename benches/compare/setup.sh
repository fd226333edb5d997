#!/usr/bin/env bash
# Creates (or reuses) the Python venv that runs benches/compare/engines.py, the DuckDB and
# Apache Spark side of Floe's cross-engine benchmark.
#
#   bash benches/compare/setup.sh        # from any directory
#
# The venv lives at <repo>/target/compare-venv. requirements.txt is installed only when the
# stamp file inside the venv does not hold the current requirements hash, so a second call
# costs well under a second. Progress goes to stderr; the last stdout line is the venv's
# python, for callers to capture:  PY=$(bash benches/compare/setup.sh | tail -n1)
#
# Environment: PYTHON picks the interpreter that builds the venv (default python3, >= 3.8).
# Spark needs a Java runtime (17 works with pyspark 3.5); this script checks for it but
# installs nothing outside the venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/target/compare-venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

log() { echo "compare/setup: $*" >&2; }

want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/python" ]]; then
    log "creating venv at $venv with $("$python" --version 2>&1)"
    mkdir -p "$repo/target"
    "$python" -m venv "$venv"
fi

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "requirements already installed (stamp matches)"
else
    log "installing $requirements"
    started=$SECONDS
    # pip's own messages go to stderr so stdout stays one line: the python path.
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet \
        -r "$requirements" 1>&2
    echo "$want" > "$stamp"
    log "installed in $((SECONDS - started)) s"
fi

if ! command -v java > /dev/null 2>&1 && [[ -z "${JAVA_HOME:-}" ]]; then
    log "warning: no java on PATH and JAVA_HOME unset; the spark_* engines will fail"
fi

echo "$venv/bin/python"
