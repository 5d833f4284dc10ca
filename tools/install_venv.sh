#!/usr/bin/env bash
# Install the locked dependencies into .venv quietly: one progress line on the terminal, the installers'
# whole output in var/install.log, and that log's tail and path when something fails.
#
#   tools/install_venv.sh WHAT PACKAGE...       e.g.  tools/install_venv.sh "the stack" -e .
#
# The packages are installed with requirements.lock as constraints: each one at exactly the version the
# lock pins, and only what PACKAGE... needs (so `make up` never installs the test tools the lock also pins).
# Environment: VENV (.venv), PYTHON (interpreter for a new venv without uv), UV (uv binary, empty: use pip),
# INSTALL_LOG (var/install.log).
#
# Bytecode is compiled at install (pip does by default; uv only with --compile-bytecode): otherwise every
# process compiles what it imports at each start whenever it cannot write __pycache__ (PYTHONDONTWRITEBYTECODE,
# a read-only tree) — ~0.9 s of CPU for celery beat, and as much for every restart of every service after a
# crash (docs/reliability.md, "beat").
set -uo pipefail
cd "$(dirname "$0")/.."

what=$1
shift
venv=${VENV:-.venv}
log=${INSTALL_LOG:-var/install.log}
mkdir -p "$(dirname "$log")"

printf 'Installing %s into %s (log: %s) ... ' "$what" "$venv" "$log"
started=$SECONDS
{
    echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) installing $what: $*"
    if [ -n "${UV:-}" ]; then
        { [ -x "$venv/bin/python" ] || "$UV" venv --python 3.11 "$venv"; } &&
            "$UV" pip install --python "$venv/bin/python" --compile-bytecode --constraint requirements.lock "$@"
    else
        { [ -x "$venv/bin/python" ] || { "${PYTHON:-python3}" -m venv "$venv" &&
            "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip; }; } &&
            "$venv/bin/python" -m pip install --disable-pip-version-check --constraint requirements.lock "$@"
    fi
} >"$log" 2>&1
status=$?
if [ "$status" -eq 0 ]; then
    echo "done in $((SECONDS - started)) s"
else
    echo "FAILED"
    echo "--- the last lines of $log:"
    tail -n 25 "$log" | sed 's/^/    /'
    echo "--- the whole output of the installer is in $log"
fi
exit "$status"
