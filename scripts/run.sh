#!/usr/bin/env bash
# The main job: install (if needed), start a Prefect server on 127.0.0.1 with its state under
# .prefect/, a process work pool and worker, deploy prefect.yaml, start a run of
# reproduce/<profile> and follow it to the end (`python -m flows.follow`: every log line of the
# flow, its subflows and tasks as it arrives - cache chunks, fit iterations and losses, each
# analysis), print Table 1 and where the files are, then stop the worker and the server (by PID).
# The server's port: LINEARGAN_PREFECT_PORT, or a free one (picked again if another process
# takes it before the server binds it).
#
#   bash scripts/run.sh            # quick profile (minutes on 2 CPU cores)
#   bash scripts/run.sh smoke      # seconds; paper = the paper's sizes (hours)
#   bash scripts/run.sh quick '{"analyses": ["fewshot"]}'   # this run's changes to the config
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-quick}
OVERRIDES=${2:-}
case "$PROFILE" in smoke|quick|paper) ;; *)
  echo "error: unknown profile '$PROFILE'. Fix: use smoke, quick or paper" >&2; exit 2;;
esac
export LINEARGAN_PROJECT_DIR=$PWD
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect}
export PREFECT_SERVER_ANALYTICS_ENABLED=false
mkdir -p "$PREFECT_HOME"
bash scripts/setup.sh
BIN=$PWD/.venv/bin
# a bad config change is one line before any server starts
[ -z "$OVERRIDES" ] || "$BIN/python" -m flows.follow --deployment "reproduce/$PROFILE" --config "$OVERRIDES" --check || exit 2
LOGS=$PREFECT_HOME/logs
mkdir -p "$LOGS"

SERVER_PID=""
WORKER_PID=""
stop() {
  # a Ctrl-C while stopping: no more waiting
  trap 'kill -9 $WORKER_PID $SERVER_PID 2>/dev/null; exit 130' INT
  # worker first (it was started with job control, so SIGTERM ends it promptly), then server
  for pid in $WORKER_PID $SERVER_PID; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true  # reap it here: no "Killed" line from bash at exit
    fi
  done
}
trap stop EXIT

free_port() {
  "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# 0 when the server on $1 answers /health and the listening socket belongs to process $2 (or a
# child): another process that took the port must not pass for our server
SERVING='import sys, urllib.request, psutil
url, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    urllib.request.urlopen(url + "/health", timeout=2)
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    ours = any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
               for p in procs for c in p.net_connections("tcp"))
except Exception:
    ours = False
sys.exit(0 if ours else 1)'

# Start the server on $PORT and wait until it serves. Returns 0 when it does, 2 when the port
# was taken before the server could bind it; exits with an error on any other failure.
start_server() {
  export PREFECT_API_URL=http://127.0.0.1:$PORT/api
  echo "run: starting Prefect server on 127.0.0.1:$PORT (state in $PREFECT_HOME, log $LOGS/server.log)"
  set -m
  "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" >"$LOGS/server.log" 2>&1 &
  SERVER_PID=$!
  set +m
  for _ in $(seq 1 120); do
    "$BIN/python" -c "$SERVING" "$PREFECT_API_URL" "$PORT" "$SERVER_PID" && return 0
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      grep -qi "already in use" "$LOGS/server.log" && return 2
      tail -n 20 "$LOGS/server.log" >&2 || true
      echo "error: Prefect server exited; see $LOGS/server.log" >&2
      exit 1
    fi
    sleep 1
  done
  echo "error: Prefect server not healthy after 120 s; see $LOGS/server.log" >&2
  exit 1
}

ATTEMPTS=5
for attempt in $(seq 1 "$ATTEMPTS"); do
  PORT=${LINEARGAN_PREFECT_PORT:-$(free_port)}
  started=0
  start_server || started=$?
  [ "$started" -eq 0 ] && break
  if [ -n "${LINEARGAN_PREFECT_PORT:-}" ]; then
    echo "error: port $PORT (LINEARGAN_PREFECT_PORT) is already in use. Fix: choose another port, or unset LINEARGAN_PREFECT_PORT to use a free one" >&2
    exit 1
  fi
  if [ "$attempt" -eq "$ATTEMPTS" ]; then
    echo "error: could not start the Prefect server: $ATTEMPTS free ports in a row were taken before it could bind them (last $PORT); see $LOGS/server.log. Fix: set LINEARGAN_PREFECT_PORT to a port you reserve" >&2
    exit 1
  fi
  echo "run: port $PORT was taken before the server could bind it; retrying on another port"
done

"$BIN/prefect" --no-prompt work-pool create lineargan-process --type process --overwrite >/dev/null
"$BIN/prefect" --no-prompt deploy --all >"$LOGS/deploy.log" 2>&1 \
  || { cat "$LOGS/deploy.log" >&2; echo "error: prefect deploy failed" >&2; exit 1; }
echo "run: deployed $(grep -c 'entrypoint:' prefect.yaml) deployments from prefect.yaml"

set -m
"$BIN/prefect" worker start --pool lineargan-process --type process >"$LOGS/worker.log" 2>&1 &
WORKER_PID=$!
set +m

echo "run: starting reproduce/$PROFILE and following its progress (worker log $LOGS/worker.log)"
set +e
"$BIN/python" -m flows.follow --deployment "reproduce/$PROFILE" ${OVERRIDES:+--config "$OVERRIDES"}
rc=$?
set -e
if [ "$rc" -eq 130 ]; then
  exit 130  # Ctrl-C: follow cancelled the flow run and said so; stop() ends worker and server
fi
if [ "$rc" -ne 0 ]; then
  echo "error: flow run did not complete (exit $rc); see $LOGS/worker.log" >&2
  tail -n 30 "$LOGS/worker.log" >&2 || true
  exit "$rc"
fi
# the results root the run wrote to: the config change's, else the default
RESULTS=$("$BIN/python" -c 'import json, sys; print(json.loads(sys.argv[1] or "{}").get("results_root") or "")' "$OVERRIDES")
"$BIN/python" -m flows.cli render all --profile "$PROFILE" ${RESULTS:+--results-root "$RESULTS"}
