#!/usr/bin/env bash
# `make demo`: the whole product on the embedded data, end to end, in minutes.
#   1. a quick backtest of the STMOM SLP (L1 + turnover regularisation), tested on 2021-2022
#   2. export its model to ONNX and promote it in a fresh registry
#   3. replay the last months of the embedded data through the service (ingest -> cycle -> ledger)
#   4. start `momentum-serve run` (gRPC + metrics + scheduler) in the background
#   5. fetch the positions over gRPC, print them and a few metrics, stop the service cleanly
# DEMO_QUICK=1 shortens steps 1 and 3 (what CI runs). Everything lands in $DEMO_DIR (runs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
DIR=${DEMO_DIR:-runs/demo}
if [ "${DEMO_QUICK:-0}" = "1" ]; then
    TRIALS=2 EPOCHS=5 REPLAY_FROM=2022-12-01
else
    # from September: 80 marked sessions, more than the 63 of the rolling Sharpe
    TRIALS=5 EPOCHS=20 REPLAY_FROM=2022-09-01
fi
free_port() { "$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

rm -rf "$DIR"
mkdir -p "$DIR"
export MOMENTUM_REGISTRY_DIR="$DIR/models" MOMENTUM_DATA_DIR="$DIR/var" MOMENTUM_MODEL_NAME=slp
export MOMENTUM_GRPC_PORT=${MOMENTUM_GRPC_PORT:-$(free_port)}
export MOMENTUM_METRICS_PORT=${MOMENTUM_METRICS_PORT:-$(free_port)}
SECONDS=0
step() { echo; echo "== [$1/5] $2 (${SECONDS}s so far)"; }

step 1 "backtest: slp, test years 2021-2022, $TRIALS trials x up to $EPOCHS epochs"
"$BIN/momentum-train" backtest --model slp --turnover-cost 5 --first-test-year 2021 \
    --step-years 2 --seeds 1 --trials "$TRIALS" --epochs "$EPOCHS" --out "$DIR/backtest"

step 2 "export the window's best model to ONNX and promote it"
"$BIN/momentum-train" export "$DIR/backtest" | tee "$DIR/export.log"
VERSION=$(awk '$1 == "slp" { print $2; exit }' "$DIR/export.log")
"$BIN/momentum-train" promote slp "$VERSION"

step 3 "replay the embedded closes from $REPLAY_FROM through the service"
"$BIN/momentum-serve" replay --from "$REPLAY_FROM"

step 4 "start momentum-serve run (gRPC :$MOMENTUM_GRPC_PORT, metrics :$MOMENTUM_METRICS_PORT)"
"$BIN/momentum-serve" run > "$DIR/serve.log" 2>&1 &
SERVER=$!
trap 'kill -TERM "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    if "$BIN/python" -m service.healthcheck --port "$MOMENTUM_GRPC_PORT" >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$SERVER" 2>/dev/null; then
        echo "momentum-serve run exited early:" >&2
        cat "$DIR/serve.log" >&2
        exit 1
    fi
    sleep 0.5
done
"$BIN/python" -m service.healthcheck --port "$MOMENTUM_GRPC_PORT"

step 5 "positions over gRPC"
"$BIN/momentum-serve" positions
echo
echo "metrics: http://127.0.0.1:$MOMENTUM_METRICS_PORT/metrics"
"$BIN/python" - "$MOMENTUM_METRICS_PORT" <<'PY'
import sys
import urllib.request

text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
shown = ("momentum_model_loaded ", "momentum_paper_pnl_ratio ", "momentum_paper_equity_ratio ",
         "momentum_paper_rolling_sharpe ", "momentum_newest_close_timestamp_seconds")
values = {}
for line in text.splitlines():
    if line.startswith(shown):
        print(f"  {line}")
        if line.startswith("momentum_paper_rolling_sharpe ") and line.endswith("NaN"):
            print("    (NaN: the rolling Sharpe needs 63 marked sessions; DEMO_QUICK replays")
            print("     one month. `make demo` without DEMO_QUICK replays enough.)")
    if line.startswith(("momentum_feature_psi", "momentum_signal_psi")):
        name, _, value = line.rpartition(" ")
        values[name] = float(value)

# the drift alerts' condition (deploy/prometheus/alerts.yml): PSI above 0.2 and above the
# model's baseline (what 95% of its reference period's own windows scored)
def drifting(psi, baseline):
    return psi > 0.2 and not psi <= baseline  # a NaN baseline leaves the 0.2 level alone

print("drift (PSI over the last 63 sessions / the model's baseline; alert: above 0.2 and both):")
for name, psi in sorted(values.items()):
    if "_baseline" in name:
        continue
    baseline = values.get(name.replace("_psi", "_psi_baseline", 1), float("nan"))
    label = name.split('"')[1] if '"' in name else "signal"
    flag = "ALERT" if drifting(psi, baseline) else "ok"
    print(f"  {label:<14} {psi:6.3f} / {baseline:6.3f}  {flag}")
PY

kill -TERM "$SERVER"
wait "$SERVER"
trap - EXIT
echo
echo "== demo finished in ${SECONDS}s; the service stopped cleanly (log: $DIR/serve.log)"
cat <<EOF

Next steps: the demo's settings are environment variables of this script only. To use
its registry and store from your shell:

    source .venv/bin/activate                 # momentum-train, momentum-serve on PATH
    export MOMENTUM_REGISTRY_DIR=$DIR/models MOMENTUM_DATA_DIR=$DIR/var MOMENTUM_MODEL_NAME=slp
    momentum-train models                     # the exported version, promoted
    momentum-serve check-model                # loads it as the service would
    momentum-serve run &                      # gRPC on 127.0.0.1:50051, metrics on :9108
    momentum-serve positions                  # the latest positions over gRPC
    momentum-serve settings                   # every MOMENTUM_* setting (README, Settings)
EOF
