#!/usr/bin/env bash
# The main job: install (if needed), start a Prefect server on 127.0.0.1 with its state under
# .prefect/, a process work pool and worker, deploy prefect.yaml, trigger
# `prefect deployment run reproduce/<profile>` and follow it to the end, print Table 1 and
# where the files are, then stop the worker and the server (by PID).
#
#   bash scripts/run.sh            # quick profile (minutes on 2 CPU cores)
#   bash scripts/run.sh smoke      # seconds; paper = the paper's sizes (hours)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-quick}
case "$PROFILE" in smoke|quick|paper) ;; *)
  echo "error: unknown profile '$PROFILE'. Fix: use smoke, quick or paper" >&2; exit 2;;
esac
export LINEARGAN_PROJECT_DIR=$PWD
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$PREFECT_HOME"
bash scripts/setup.sh
BIN=$PWD/.venv/bin
PORT=${LINEARGAN_PREFECT_PORT:-$("$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export PREFECT_API_URL=http://127.0.0.1:$PORT/api
LOGS=$PREFECT_HOME/logs
mkdir -p "$LOGS"

SERVER_PID=""
WORKER_PID=""
stop() {
  # worker first (it was started with job control, so SIGTERM ends it promptly), then server
  for pid in $WORKER_PID $SERVER_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
}
trap stop EXIT

echo "run: starting Prefect server on 127.0.0.1:$PORT (state in $PREFECT_HOME, log $LOGS/server.log)"
set -m
"$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$LOGS/server.log" 2>&1 &
SERVER_PID=$!
set +m
for i in $(seq 1 120); do
  if "$BIN/python" -c "import urllib.request,sys; urllib.request.urlopen('$PREFECT_API_URL/health', timeout=2)" 2>/dev/null; then
    break
  fi
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "error: Prefect server exited; see $LOGS/server.log" >&2; exit 1; }
  [ "$i" -eq 120 ] && { echo "error: Prefect server not healthy after 120 s; see $LOGS/server.log" >&2; exit 1; }
  sleep 1
done

"$BIN/prefect" --no-prompt work-pool create lineargan-process --type process --overwrite >/dev/null
"$BIN/prefect" --no-prompt deploy --all >"$LOGS/deploy.log" 2>&1 \
  || { cat "$LOGS/deploy.log" >&2; echo "error: prefect deploy failed" >&2; exit 1; }
echo "run: deployed $(grep -c 'entrypoint:' prefect.yaml) deployments from prefect.yaml"

set -m
"$BIN/prefect" worker start --pool lineargan-process --type process >"$LOGS/worker.log" 2>&1 &
WORKER_PID=$!
set +m

echo "run: prefect deployment run reproduce/$PROFILE --watch (worker log $LOGS/worker.log)"
set +e
"$BIN/prefect" deployment run "reproduce/$PROFILE" --watch --watch-interval 5
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "error: flow run did not complete (exit $rc); see $LOGS/worker.log" >&2
  tail -n 30 "$LOGS/worker.log" >&2 || true
  exit "$rc"
fi
"$BIN/python" -m lineargan.cli render all --profile "$PROFILE"
