#!/usr/bin/env bash
# A throwaway redis-server for the `redis`-marked tests.
#
#   scripts/redis-test-server.sh start        start one on 127.0.0.1:$PORT (installs redis-server if missing)
#   scripts/redis-test-server.sh stop         shut it down (no-op when none runs)
#   scripts/redis-test-server.sh url          print TEST_REDIS_URL for it
#   scripts/redis-test-server.sh run CMD...   start, run CMD with TEST_REDIS_URL set, stop
#                                             (even when CMD fails); exits with CMD's status
#
# PORT is $TEST_REDIS_PORT (default 6390). No persistence (--save '' --appendonly no);
# pidfile, log and working dir live in $TMPDIR/flexcache-redis-test-$PORT.
# `run` with TEST_REDIS_URL already set uses that server and starts none.
# (Not FLEXCACHE_*: every FLEXCACHE_<FIELD> variable is read as a config override, and an
# unknown field is an error, so such a name would break the CLI in the tested process.)
set -euo pipefail

PORT=${TEST_REDIS_PORT:-6390}
DIR=${TMPDIR:-/tmp}/flexcache-redis-test-$PORT
PIDFILE=$DIR/redis.pid
URL=redis://127.0.0.1:$PORT/0

say() { echo "redis-test-server: $*" >&2; }

ping() { [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = "PONG" ]; }

ours_running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

install_redis() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
    if ! command -v apt-get >/dev/null; then
        say "redis-server is not installed and there is no apt-get; install Redis >= 6 yourself"
        return 1
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null && sudo="sudo -n" || {
            say "redis-server is not installed; run: sudo apt-get install redis-server"; return 1; }
    fi
    say "installing redis-server with apt-get"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server; } \
        >"${TMPDIR:-/tmp}/flexcache-redis-apt.log" 2>&1; then
        say "apt-get install redis-server failed (log: ${TMPDIR:-/tmp}/flexcache-redis-apt.log)"
        return 1
    fi
}

start() {
    install_redis
    if ours_running && ping; then
        say "already running on port $PORT (pid $(cat "$PIDFILE"))"
        return 0
    fi
    if ping; then
        say "port $PORT is served by a Redis this script did not start; set TEST_REDIS_PORT"
        return 1
    fi
    mkdir -p "$DIR"
    rm -f "$PIDFILE"
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$PIDFILE" --logfile "$DIR/redis.log" --dir "$DIR"
    for _ in $(seq 100); do
        if ping; then
            say "started on port $PORT"
            return 0
        fi
        sleep 0.1
    done
    say "redis-server did not answer on port $PORT within 10 s; its log:"
    tail -n 20 "$DIR/redis.log" >&2 || true
    stop
    return 1
}

stop() {
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid=$(cat "$PIDFILE")
    redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
    fi
    rm -rf "$DIR"
    say "stopped"
}

run() {
    if [ -n "${TEST_REDIS_URL:-}" ]; then
        say "using TEST_REDIS_URL=$TEST_REDIS_URL"
        exec "$@"
    fi
    start
    trap stop EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    local rc=0
    TEST_REDIS_URL=$URL "$@" || rc=$?
    exit "$rc"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    url) echo "$URL" ;;
    run) shift; [ $# -gt 0 ] || { say "usage: $0 run COMMAND..."; exit 2; }; run "$@" ;;
    *) echo "usage: $0 start|stop|url|run COMMAND..." >&2; exit 2 ;;
esac
