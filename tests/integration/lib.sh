# SPDX-License-Identifier: Apache-2.0
# Shared shell library for qbd integration tests. Source it from a test:
#
#   . "$(dirname "$0")/lib.sh"
#   init_test "$@"            # sets BUILD (binaries), TMP (scratch dir)
#   start_cluster 3           # etcd + chunk servers in zones a, b, c
#   ...
#
# Everything started here is recorded by PID and stopped on exit, also when
# the test fails. Waits poll a condition with a bound, never a bare sleep.

set -eu

TEST_NAME=$(basename "$0" .sh)
_CLEANUP_FNS=""
_PIDS=""

log() { printf '%s: %s\n' "$TEST_NAME" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

# Run cleanup functions in reverse order, then stop every recorded process.
_run_cleanup() {
	rc=$?
	set +e
	for fn in $_CLEANUP_FNS; do "$fn"; done
	# Newest first, so clients and chunk servers stop before etcd.
	_rev=""
	for pid in $_PIDS; do _rev="$pid $_rev"; done
	for pid in $_rev; do
		kill -0 "$pid" 2>/dev/null || continue
		kill -TERM "$pid" 2>/dev/null
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1; i=$((i + 1))
		done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
		if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
			for f in "$TMP"/*.log; do
				[ -f "$f" ] || continue
				echo "---- tail of $f" >&2
				tail -n 30 "$f" >&2
			done
		fi
		rm -rf "$TMP"
	fi
	exit $rc
}

# on_exit FN: run FN at exit (last registered runs first).
on_exit() { _CLEANUP_FNS="$1 $_CLEANUP_FNS"; }

# track_pid PID: stop PID at exit (TERM, then KILL after 10 s), newest
# first.
track_pid() { _PIDS="$_PIDS $1"; }
untrack_pid() {
	_new=""
	for p in $_PIDS; do [ "$p" = "$1" ] || _new="$_new $p"; done
	_PIDS=$_new
}

init_test() {
	BUILD=${1:-build}
	case "$BUILD" in /*) ;; *) BUILD="$(pwd)/$BUILD" ;; esac
	[ -x "$BUILD/qbd" ] || fail "no qbd binary in $BUILD (run make)"
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/qbd-$TEST_NAME.XXXXXX")
	trap _run_cleanup EXIT
	trap 'exit 130' INT TERM
	export PATH="$BUILD:$BUILD/tests/helpers:$PATH"
	# Settings of this test only (never the machine's /etc/qbd/qbd.conf),
	# and a cluster secret: every link authenticates, as in production.
	: >"$TMP/qbd.conf"
	export QBD_CONFIG="$TMP/qbd.conf"
	qbd secret create "$TMP/secret" >/dev/null || fail "qbd secret create"
	export QBD_SECRET_FILE="$TMP/secret"
}

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: poll COMMAND until it succeeds.
wait_for() {
	_desc=$1; _t=$2; shift 2
	_end=$(( $(date +%s) + _t ))
	while ! "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$_end" ] || fail "timed out after ${_t}s waiting for $_desc"
		sleep 0.1
	done
}

# free_port: a TCP port on 127.0.0.1 nobody listens on right now.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

etcdctl_() { ETCDCTL_API=3 etcdctl --endpoints="$QBD_ETCD" "$@"; }

# start_etcd: etcd on loopback free ports; exports QBD_ETCD and ETCD_PID.
start_etcd() {
	_cp=$(free_port); _pp=$(free_port)
	mkdir -p "$TMP/etcd"
	etcd --name qbd-test --data-dir "$TMP/etcd" \
		--listen-client-urls "http://127.0.0.1:$_cp" \
		--advertise-client-urls "http://127.0.0.1:$_cp" \
		--listen-peer-urls "http://127.0.0.1:$_pp" \
		--initial-advertise-peer-urls "http://127.0.0.1:$_pp" \
		--initial-cluster "qbd-test=http://127.0.0.1:$_pp" \
		>"$TMP/etcd.log" 2>&1 &
	ETCD_PID=$!
	track_pid $ETCD_PID
	export QBD_ETCD="http://127.0.0.1:$_cp"
	wait_for "etcd on $QBD_ETCD" 20 etcdctl_ endpoint health
}

# start_chunkd ZONE [extra args]: one chunk server; its data file is kept
# in $TMP/chunk-ZONE.img so restart_chunkd finds the same data. Options
# in CHUNKD_ARGS_<zone> go to every start of that zone's server.
# Sets CHUNKD_PID_<zone>, CHUNKD_PORT_<zone>.
start_chunkd() {
	_z=$1; shift
	eval "_port=\${CHUNKD_PORT_$_z:-} _zargs=\${CHUNKD_ARGS_$_z:-}"
	[ -n "$_port" ] || _port=$(free_port)
	# shellcheck disable=SC2086 # _zargs: options, split on purpose
	qbd-chunkd --data "$TMP/chunk-$_z.img" --size "${CHUNKD_SIZE:-2G}" \
		--listen "127.0.0.1:$_port" --zone "$_z" --etcd "$QBD_ETCD" $_zargs "$@" \
		>>"$TMP/chunkd-$_z.log" 2>&1 &
	_pid=$!
	track_pid $_pid
	eval "CHUNKD_PID_$_z=$_pid CHUNKD_PORT_$_z=$_port"
	wait_for "chunk server $_z listening on $_port" 20 port_open "$_port"
}

port_open() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',int(sys.argv[1])),1).close()" "$1"; }

# nodes_alive N: at least N chunk servers are alive in etcd.
nodes_alive() { [ "$(etcdctl_ get --prefix --keys-only /qbd/alive/ | grep -c .)" -ge "$1" ]; }

# kill_chunkd ZONE [SIGNAL]: signal (default KILL) the zone's chunk server
# and reap it.
kill_chunkd() {
	eval "_pid=\$CHUNKD_PID_$1"
	kill -"${2:-KILL}" "$_pid"
	wait "$_pid" 2>/dev/null || true
	untrack_pid "$_pid"
}

# stop_chunkd ZONE: SIGTERM, and fail unless it exits 0.
stop_chunkd() {
	eval "_pid=\$CHUNKD_PID_$1"
	kill -TERM "$_pid"
	_rc=0; wait "$_pid" || _rc=$?
	untrack_pid "$_pid"
	[ $_rc -eq 0 ] || fail "chunk server $1 exited $_rc after SIGTERM"
}

# start_cluster [ZONES...]: etcd + one chunk server per zone (default a b c).
start_cluster() {
	[ $# -gt 0 ] || set -- a b c
	start_etcd
	for z in "$@"; do start_chunkd "$z"; done
	wait_for "$# chunk servers alive in etcd" 20 nodes_alive $#
}

# start_nbd VOLUME SOCKET [extra args]: qbd-nbd serving VOLUME; sets NBD_PID.
start_nbd() {
	_v=$1; _s=$2; shift 2
	qbd-nbd --etcd "$QBD_ETCD" --volume "$_v" --socket "$_s" "$@" \
		>>"$TMP/nbd-$_v.log" 2>&1 &
	NBD_PID=$!
	track_pid $NBD_PID
	wait_for "qbd-nbd socket $_s" 20 test -S "$_s"
	wait_for "qbd-nbd answering on $_s" 20 nbdinfo --size "nbd+unix:///?socket=$_s"
}

# stop_pid PID: SIGTERM and fail unless it exits 0.
stop_pid() {
	kill -TERM "$1"
	_rc=0; wait "$1" || _rc=$?
	untrack_pid "$1"
	[ $_rc -eq 0 ] || fail "process $1 exited $_rc after SIGTERM"
}

nbd_uri() { echo "nbd+unix:///?socket=$1"; }

# CLI checks: expect_rc WANT CMD... runs CMD (stdout in $TMP/out, stderr
# in $TMP/err) and fails unless it exits WANT; json_check EXPR and
# out_has PATTERN then look at that output.
expect_rc() { # want cmd...: run, compare exit status
	_want=$1; shift
	_rc=0; "$@" >"$TMP/out" 2>"$TMP/err" || _rc=$?
	[ "$_rc" -eq "$_want" ] || { cat "$TMP/out" "$TMP/err" >&2; fail "'$*' exited $_rc, want $_want"; }
}
json_check() { # python expression over `d` (stdout of the last command)
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' \
		"$TMP/out" "$1" || fail "json check failed: $1 on $(cat "$TMP/out")"
}
out_has() { grep -q -- "$1" "$TMP/out" || fail "output lacks '$1': $(cat "$TMP/out")"; }
