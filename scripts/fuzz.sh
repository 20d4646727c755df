#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser with atheris (libFuzzer), one target after the other.
#
#   scripts/fuzz.sh [RUNS] [TARGET...]
#
# RUNS: inputs per target (default 1000000). TARGET: names from tests/fuzz/fuzz_NAME.py
# (default: all, cheapest first). Each target runs with a memory limit (-rss_limit_mb,
# FUZZ_RSS_MB, default 2048), a per-input timeout (-timeout, FUZZ_TIMEOUT_S, default 10 s: a
# slower input is reported as a hang) and a time bound per target (-max_total_time,
# FUZZ_MAX_TIME_S, default 3600 s) and inputs of at most FUZZ_MAX_LEN bytes (default 1024;
# 4096 for fec, whose auto-tuning needs a few hundred packets in one input). Corpora persist in FUZZ_DIR (default .fuzz/), so a
# second run starts where the first stopped; crash/timeout/oom inputs are written to
# FUZZ_DIR/artifacts/NAME/. One summary line per target:
#   fuzz NAME: inputs=N exec/s=N peak_rss_mb=N crashes=N status=ok|FAIL|SHORT time_s=N
# (SHORT: the time bound came before RUNS inputs). Exit status 1 unless every target is ok. Needs atheris: pip install -e '.[fuzz]'.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
RUNS=${1:-1000000}
shift || true
ALL="frame socks5 appmsg gob smux fec kcp datagram config"
TARGETS=${*:-$ALL}
RSS=${FUZZ_RSS_MB:-2048}
TIMEOUT=${FUZZ_TIMEOUT_S:-10}
MAXT=${FUZZ_MAX_TIME_S:-3600}
DIR=${FUZZ_DIR:-$ROOT/.fuzz}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import atheris" 2>/dev/null; then
    echo "fuzz: atheris is not installed for $PY (pip install -e '.[fuzz]')" >&2
    exit 2
fi
fail=0
summary=()
for t in $TARGETS; do
    script="$ROOT/tests/fuzz/fuzz_$t.py"
    if [ ! -f "$script" ]; then
        echo "fuzz: no target $t ($script)" >&2
        exit 2
    fi
    corpus="$DIR/corpus/$t"
    art="$DIR/artifacts/$t"
    log="$DIR/logs/$t.log"
    mkdir -p "$corpus" "$art" "$DIR/logs"
    "$PY" "$script" --write-seeds "$corpus" || { echo "fuzz: $t: seeds failed" >&2; exit 2; }
    echo "fuzz $t: $RUNS inputs of at most ${FUZZ_MAX_LEN:-$( [ "$t" = fec ] && echo 4096 || echo 1024)} bytes, rss limit ${RSS} MB, per-input timeout ${TIMEOUT} s, at most ${MAXT} s (log $log)"
    start=$(date +%s)
    touch "$DIR/logs/$t.start"
    # progress: libFuzzer's pulse/NEW lines thinned to one every ~30 s
    maxlen=${FUZZ_MAX_LEN:-1024}
    [ "$t" = fec ] && maxlen=${FUZZ_MAX_LEN:-4096}
    "$PY" "$script" -runs="$RUNS" -max_len="$maxlen" -rss_limit_mb="$RSS" \
        -timeout="$TIMEOUT" -max_total_time="$MAXT" -print_final_stats=1 -reload=0 \
        -artifact_prefix="$art/" "$corpus" >"$log" 2>&1 &
    pid=$!
    last=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 2
        now=$(date +%s)
        if [ $((now - last)) -ge 30 ]; then
            last=$now
            line=$(grep -a -E '^#[0-9]+' "$log" | tail -n 1)
            [ -n "$line" ] && echo "  $t: $line"
        fi
    done
    wait "$pid"
    rc=$?
    secs=$(( $(date +%s) - start ))
    runs=$(grep -a 'stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -n 1)
    eps=$(grep -a 'stat::average_exec_per_sec' "$log" | awk '{print $2}' | tail -n 1)
    rss=$(grep -a 'stat::peak_rss_mb' "$log" | awk '{print $2}' | tail -n 1)
    crashes=$(find "$art" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'slow-unit-*' \) -newer "$DIR/logs/$t.start" 2>/dev/null | wc -l)
    status=ok
    if [ "$rc" -ne 0 ]; then
        status=FAIL
        fail=1
        grep -a -E 'ERROR|Error|Traceback|==[0-9]+==' "$log" | head -n 5 | sed "s/^/  $t: /"
    elif [ "${runs:-0}" -lt "$RUNS" ]; then
        status=SHORT  # the time bound ended it before RUNS inputs
        fail=1
    fi
    line="fuzz $t: inputs=${runs:-0} exec/s=${eps:-0} peak_rss_mb=${rss:-?} crashes=$crashes status=$status time_s=$secs"
    echo "$line"
    summary+=("$line")
done
echo "---- summary"
printf '%s\n' "${summary[@]}"
exit $fail
