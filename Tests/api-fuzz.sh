#!/usr/bin/env bash
# `make api-fuzz` (part of `make test`): schemathesis against a running `estuary serve`, with the
# OpenAPI document the server itself serves at /api/v1/openapi.yaml. Fails on any 5xx, and on any
# status, content type, header or body the document does not allow.
#
# Two runs, one per database: SQLite (the default) and PostgreSQL (Debian's `postgresql` binaries,
# a throwaway cluster on a free loopback port, stopped by its PID), since each refuses different
# input. Each run starts the server on free loopback ports (0: the log says which) with a throwaway
# data directory and `--record manual`. Before schemathesis, an administrator is created on the
# command line (as the first admin is made), a streamer registers and logs in through the API,
# creates channel `fuzz-live` and a stream key, and ffmpeg publishes with that key, so it is live
# (HLS, recordings and relays have something to act on). Schemathesis then authenticates as the
# administrator: the operator's routes and every channel's routes answer that token; then, shorter,
# as the streamer, to whom they answer 403 where the channel is not theirs.
#
# Environment: ESTUARY_BIN (default .build/debug/estuary), API_FUZZ_VENV (default .build-venv),
# API_FUZZ_MAX_EXAMPLES (default 40 per operation and phase; a quarter of that as the streamer),
# API_FUZZ_DATABASES (default "sqlite postgres"), API_FUZZ_SCHEMA (a file in place of the served
# document, to try edits without a rebuild), API_FUZZ_ARGS (more schemathesis options).
# Logs and JUnit reports stay in .build-api-fuzz/ (gitignored) until the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
binary=${ESTUARY_BIN:-.build/debug/estuary}
venv=${API_FUZZ_VENV:-.build-venv}
max_examples=${API_FUZZ_MAX_EXAMPLES:-40}
databases=${API_FUZZ_DATABASES:-sqlite postgres}
root=$PWD/.build-api-fuzz

# schemathesis in a virtual environment of its own (gitignored), installed once.
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    echo "api-fuzz: installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
[ -x "$binary" ] || { echo "api-fuzz: no estuary binary at $binary (swift build first)"; exit 1; }

rm -rf "$root"
mkdir -p "$root"
# Processes this script started, stopped by PID on the way out.
pids=()
cleanup() {
    local index pid
    for ((index = ${#pids[@]} - 1; index >= 0; index--)); do
        pid=${pids[index]}
        if kill -0 "$pid" 2>/dev/null; then
            kill -INT "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    pids=()
}
trap cleanup EXIT

# A port nothing listens on now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a throwaway PostgreSQL cluster under $1; sets pg_url. As root it runs as `postgres`.
pg_url=""
start_postgres() {
    local dir=$1 bin port
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -x "$bin/postgres" ] || { echo "api-fuzz: PostgreSQL not found under /usr/lib/postgresql (make test-deps installs it)" >&2; return 1; }
    local as=()
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$dir"
        as=(setpriv --reuid=postgres --regid=postgres --init-groups)
    fi
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U estuary --auth=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; return 1; }
    port=$(free_port)
    "${as[@]}" "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 -c fsync=off \
        >"$dir/server.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 150); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -U estuary && break
        sleep 0.2
    done
    "$bin/createdb" -h 127.0.0.1 -p "$port" -U estuary estuary >&2 || { cat "$dir/server.log" >&2; return 1; }
    pg_url="postgres://estuary@127.0.0.1:$port/estuary?tlsmode=disable"
}

# One run of schemathesis against a fresh server on database $1 (sqlite or postgres).
fuzz() {
    local database=$1 work=$root/$1 database_args=()
    mkdir -p "$work"
    if [ "$database" = postgres ]; then
        start_postgres "$work/pg" || return 1
        database_args=(--database-url "$pg_url")
    fi
    local admin_password="api-fuzz-admin-$RANDOM-$RANDOM" user_password="api-fuzz-user-$RANDOM-$RANDOM"
    echo "$admin_password" | "$binary" users create --admin --email admin@example.com --username fuzz-admin \
        --password-stdin --data-dir "$work/data" "${database_args[@]}" >/dev/null || return 1

    "$binary" serve --bind 127.0.0.1 --rtmp-port 0 --http-port 0 --data-dir "$work/data" "${database_args[@]}" \
        --record manual --hls-segment-duration 1 --hls-window 60 --log-level info >"$work/server.log" 2>&1 &
    local server=$!
    pids+=($server)
    local base="" rtmp=""
    for _ in $(seq 150); do
        base=$(grep 'HTTP listening' "$work/server.log" | grep -o 'http://127\.0\.0\.1:[0-9]*' | head -1 || true)
        rtmp=$(grep 'RTMP listening' "$work/server.log" | grep -o 'rtmp://127\.0\.0\.1:[0-9]*' | head -1 || true)
        [ -n "$base" ] && [ -n "$rtmp" ] && break
        kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; echo "api-fuzz: estuary exited"; return 1; }
        sleep 0.2
    done
    [ -n "$base" ] || { cat "$work/server.log"; echo "api-fuzz: estuary did not start listening"; return 1; }
    echo "api-fuzz [$database]: estuary (pid $server) at $base"

    # Calls the API; prints the response body, fails unless the status is the one expected.
    call() {
        local expected=$1 method=$2 path=$3 body=${4:-} token=${5:-} status
        local args=(-sS -o "$work/response" -w '%{http_code}' -X "$method" "$base$path")
        [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data "$body")
        [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
        status=$(curl "${args[@]}")
        if [ "$status" != "$expected" ]; then
            echo "api-fuzz: $method $path answered $status, not $expected: $(cat "$work/response")" >&2
            return 1
        fi
        cat "$work/response"
    }
    field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

    local user_token admin_token key
    call 201 POST /api/v1/auth/register \
        "{\"email\":\"streamer@example.com\",\"username\":\"streamer\",\"password\":\"$user_password\"}" >/dev/null \
        || return 1
    call 200 POST /api/v1/auth/login "{\"email\":\"streamer@example.com\",\"password\":\"$user_password\"}" \
        >"$work/user-login" || return 1
    user_token=$(field accessToken <"$work/user-login")
    call 201 POST /api/v1/channels '{"name":"fuzz-live","title":"Live during the run","tags":["music"]}' "$user_token" >/dev/null \
        || return 1
    call 201 POST /api/v1/channels/fuzz-live/keys "" "$user_token" >"$work/key" || return 1
    key=$(field key <"$work/key")
    call 200 POST /api/v1/auth/login "{\"email\":\"admin@example.com\",\"password\":\"$admin_password\"}" \
        >"$work/admin-login" || return 1
    admin_token=$(field accessToken <"$work/admin-login")
    call 200 GET /api/v1/auth/me "" "$admin_token" >/dev/null || return 1

    ffmpeg -nostdin -loglevel error -re -stream_loop -1 -i fixtures/av-long.flv -c copy -f flv "$rtmp/live/$key" \
        >"$work/ffmpeg.log" 2>&1 &
    pids+=($!)
    # Live once the playlist has a few segments: they are what the fuzzing asks for (Tests/api-fuzz.toml).
    for _ in $(seq 150); do
        [ "$(curl -sf "$base/live/fuzz-live/index.m3u8" | grep -c '\.ts$')" -ge 3 ] && break
        sleep 0.2
    done
    curl -sf "$base/live/fuzz-live/index.m3u8" | grep '\.ts$' | sed 's/.*/"&"/' >"$root/segments.dict"
    [ "$(grep -c . "$root/segments.dict")" -ge 3 ] \
        || { cat "$work/ffmpeg.log"; echo "api-fuzz: channel fuzz-live did not go live"; return 1; }
    echo "api-fuzz [$database]: streamer registered, channel fuzz-live live with its key, administrator logged in"

    # First as the administrator, who may use every route; then, shorter, as the streamer, whose
    # token gets 403 on the operator's routes and on channels that are not theirs.
    local schema=${API_FUZZ_SCHEMA:-$base/api/v1/openapi.yaml} status=0 who token examples phases
    for who in admin streamer; do
        if [ "$who" = admin ]; then
            token=$admin_token examples=$max_examples phases=examples,coverage,fuzzing,stateful
        else
            token=$user_token examples=$((max_examples / 4 + 1)) phases=examples,coverage,fuzzing
        fi
        echo "api-fuzz [$database]: schemathesis as $who"
        # One worker: with two threads, CPython 3.11's ast.parse (hypothesis describing a filter)
        # failed once with "AST constructor recursion depth mismatch"; one is as fast here, and
        # with the seed the run is the same every time.
        "$venv/bin/schemathesis" --no-color --config-file Tests/api-fuzz.toml run "$schema" --url "$base" \
            --header "Authorization: Bearer $token" \
            --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth \
            --phases "$phases" --max-examples "$examples" --seed 1 --workers 1 --request-timeout 10 \
            --suppress-health-check all --generation-database none \
            --report junit --report-junit-path "$work/junit-$who.xml" ${API_FUZZ_ARGS:-} || status=1
    done

    cleanup
    # An error the API turned into a 500 is logged; schemathesis saw the 500, this names the cause.
    if grep -E ' (error|critical) ' "$work/server.log" >"$work/errors"; then
        echo "api-fuzz [$database]: the server logged errors:"
        head -20 "$work/errors"
        status=1
    fi
    return "$status"
}

failed=""
for database in $databases; do
    fuzz "$database" || failed="$failed $database"
done
if [ -n "$failed" ]; then
    echo "api-fuzz: FAILED on:$failed (logs in $root)"
    exit 1
fi
echo "api-fuzz: passed ($databases)"
