# SPDX-License-Identifier: Apache-2.0
# Shared shell library for qbd integration tests. Source it from a test:
#
#   . "$(dirname "$0")/lib.sh"
#   init_test "$@"            # sets BUILD (binaries), TMP (scratch dir)
#   start_cluster 3           # etcd + chunk servers in zones a, b, c
#   ...
#
# Everything started here is recorded by PID and name, and stopped on
# exit, also when the test fails. Every stop reaps the process and judges
# its exit status: a process that exits other than cleanly (0 after
# SIGTERM, or death by the signal the test itself sent) fails the test,
# named with its status, so an AddressSanitizer report at a daemon's
# shutdown (exit 66 under tests/run-tests) fails the test that caused it.
# Waits poll a condition with a bound, never a bare sleep.

set -eu

TEST_NAME=$(basename "$0" .sh)
_CLEANUP_FNS=""
_PIDS=""
_UNCLEAN=""     # set once a stopped process exited uncleanly
_IN_CLEANUP=""  # set while the exit trap runs

# Death by SIGTERM: the clean status after SIGTERM of programs without a
# handler for it (etcdctl, a Python script). etcd stops cleanly on
# SIGTERM, then re-raises the signal to itself: the same status, not 0.
TERM_DEATH=143
ETCD_TERM_STATUS=$TERM_DEATH
# How long a stopped process may take to exit before it is killed (and
# the test fails): a writer's last flush under the sanitizers, on a
# shared machine, takes a few seconds at most.
STOP_TIMEOUT=${STOP_TIMEOUT:-30}

log() { printf '%s: %s\n' "$TEST_NAME" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; exit 77; }

# Run cleanup functions in reverse order, then stop every recorded process
# (newest first, so clients and chunk servers stop before etcd), judging
# each exit status; then look for sanitizer reports in the test's logs.
# A test that passed (or skipped) fails if any of this found something.
_run_cleanup() {
	rc=$?
	set +e
	_IN_CLEANUP=1
	for fn in $_CLEANUP_FNS; do "$fn"; done
	_rev=""
	for pid in $_PIDS; do _rev="$pid $_rev"; done
	for pid in $_rev; do _stop_judged "$pid" TERM; done
	if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
		_sanitizer_reports || _UNCLEAN=1
		if [ -n "$_UNCLEAN" ] && { [ $rc -eq 0 ] || [ $rc -eq 77 ]; }; then
			log "FAIL: unclean exit of a process (see above)"
			rc=1
		fi
		if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
			for f in "$TMP"/*.log; do
				[ -f "$f" ] || continue
				echo "---- tail of $f" >&2
				tail -n 30 "$f" >&2
			done
		fi
		rm -rf "$TMP"
	elif [ -n "$_UNCLEAN" ] && { [ $rc -eq 0 ] || [ $rc -eq 77 ]; }; then
		rc=1
	fi
	exit $rc
}

# _sanitizer_reports: fail (status 1, each named) if a log under $TMP
# holds a sanitizer report: it catches programs whose exit status this
# shell cannot see (the daemons of `qbd dev up`, say).
_sanitizer_reports() {
	_sr=$(find "$TMP" -type f \( -name '*.log' -o -name '*.out' -o -name '*.err' \) \
		-size -64M -exec grep -lE \
		'^(==[0-9]+==ERROR: (AddressSanitizer|LeakSanitizer)|.*: runtime error: )' {} + 2>/dev/null)
	[ -z "$_sr" ] && return 0
	for f in $_sr; do
		log "FAIL: sanitizer report in ${f#"$TMP"/}:"
		grep -m 3 -E 'ERROR: (Address|Leak)Sanitizer|runtime error:|^SUMMARY:' "$f" >&2
	done
	return 1
}

# on_exit FN: run FN at exit (last registered runs first).
on_exit() { _CLEANUP_FNS="$1 $_CLEANUP_FNS"; }

# track_pid PID [NAME [TERM_STATUS]]: stop PID at exit (SIGTERM, then
# SIGKILL after STOP_TIMEOUT), newest first. NAME ("chunkd-a", "qbd-nbd
# vol1") names it in failures; TERM_STATUS is its clean exit status after
# SIGTERM (default 0; ETCD_TERM_STATUS for etcd).
track_pid() {
	_PIDS="$_PIDS $1"
	eval "_PNAME_$1=\${2:-process} _PTERM_$1=\${3:-0}"
}
untrack_pid() {
	_new=""
	for p in $_PIDS; do [ "$p" = "$1" ] || _new="$_new $p"; done
	_PIDS=$_new
}
# tracked PID: PID is recorded (started and not stopped yet).
tracked() {
	for p in $_PIDS; do [ "$p" = "$1" ] && return 0; done
	return 1
}
# pid_name PID: the name track_pid recorded, with the PID.
pid_name() { eval "echo \"\${_PNAME_$1:-process} (pid $1)\""; }

# _signum SIG: the number of signal SIG.
_signum() {
	case $1 in
	HUP) echo 1 ;; INT) echo 2 ;; QUIT) echo 3 ;; ABRT) echo 6 ;; KILL) echo 9 ;;
	USR1) echo 10 ;; SEGV) echo 11 ;; USR2) echo 12 ;; TERM) echo 15 ;;
	*) echo "lib.sh: unknown signal $1" >&2; echo 0 ;;
	esac
}

# pid_gone PID: PID has exited (reaped, or a zombie). (The shell may
# reap it while ps runs: then ps finds nothing, and it is gone too.)
pid_gone() {
	kill -0 "$1" 2>/dev/null || return 0
	case $(ps -o stat= -p "$1" 2>/dev/null) in
	"" | *Z*) return 0 ;;
	esac
	return 1
}

# _stop_judged PID SIG [STATUS]: send SIG to PID (unless it has exited
# already), wait up to STOP_TIMEOUT s for it to exit (then SIGKILL), reap
# it and forget it. Clean: STATUS if given; else after SIGTERM the
# process's TERM_STATUS, after any other signal death by it (128 + its
# number); and 0 if it had exited on its own before. Anything else is
# logged as a failure, naming the process and its status, and sets
# _UNCLEAN; returns 1 then. STOP_STATUS is its status. Never exits.
_stop_judged() {
	_sp=$1; _ss=$2
	_sn=$(pid_name "$_sp")
	if pid_gone "$_sp"; then
		_sw=0; _how="on its own, before SIG$_ss"
	else
		if [ -n "${3:-}" ]; then
			_sw=$3
		elif [ "$_ss" = TERM ]; then
			eval "_sw=\${_PTERM_$_sp:-0}"
		else
			_sw=$((128 + $(_signum "$_ss")))
		fi
		_how="after SIG$_ss"
		kill -"$_ss" "$_sp" 2>/dev/null
		# a stopped (SIGSTOP) process must run to act on it
		[ "$_ss" = KILL ] || kill -CONT "$_sp" 2>/dev/null
	fi
	_si=0
	while ! pid_gone "$_sp" && [ $_si -lt $((STOP_TIMEOUT * 10)) ]; do
		sleep 0.1; _si=$((_si + 1))
	done
	_skilled=""
	if ! pid_gone "$_sp"; then
		kill -KILL "$_sp" 2>/dev/null; _skilled=1
	fi
	_st=0; wait "$_sp" 2>/dev/null || _st=$?
	untrack_pid "$_sp"
	STOP_STATUS=$_st
	if [ -n "$_skilled" ]; then
		log "FAIL: $_sn did not exit within ${STOP_TIMEOUT}s $_how (killed)"
	elif [ "$_st" -eq "$_sw" ]; then
		return 0
	else
		_hint=""
		[ "$_st" -eq 66 ] && _hint=" (66: a sanitizer report, see its log)"
		[ "$_st" -eq 127 ] && _hint=" (127: not a child of the test's shell?)"
		log "FAIL: $_sn exited $_st $_how, clean is $_sw$_hint"
	fi
	_UNCLEAN=1
	return 1
}

# stop_pid PID [SIGNAL [STATUS]]: send SIGNAL (default TERM) and reap
# PID; fail the test unless it exited cleanly (see _stop_judged), or
# with STATUS when the test expects that one (a qbd-nbd whose final
# flush failed exits 3). In an on_exit function it does not exit: the
# failure is counted at the end.
stop_pid() {
	_stop_judged "$1" "${2:-TERM}" "${3:-}" && return 0
	[ -n "$_IN_CLEANUP" ] && return 1
	exit 1
}

# reap_pid PID: wait for PID (tracked) to exit on its own, forget it and
# set REAP_STATUS to its exit status, for the test to judge.
reap_pid() {
	REAP_STATUS=0; wait "$1" || REAP_STATUS=$?
	untrack_pid "$1"
}

# wait_pid PID [STATUS [TIMEOUT_S]]: wait up to TIMEOUT_S (default 60)
# for PID to exit on its own; fail unless its status is STATUS (default 0).
wait_pid() {
	poll_until "${3:-60}" pid_gone "$1" ||
		fail "$(pid_name "$1") did not exit within ${3:-60}s"
	reap_pid "$1"
	[ "$REAP_STATUS" -eq "${2:-0}" ] ||
		fail "$(pid_name "$1") exited $REAP_STATUS, want ${2:-0}"
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

# poll_until TIMEOUT_S COMMAND...: poll COMMAND (in this shell: it may
# set variables) until it succeeds; status 1 if it did not within
# TIMEOUT_S seconds, for the test to say what was missing.
poll_until() {
	_pend=$(( $(date +%s) + $1 )); shift
	while ! "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$_pend" ] || return 1
		sleep 0.1
	done
}

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: poll COMMAND until it
# succeeds; fail the test if it did not within TIMEOUT_S seconds.
wait_for() {
	_desc=$1; _t=$2; shift 2
	poll_until "$_t" "$@" || fail "timed out after ${_t}s waiting for $_desc"
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
	track_pid $ETCD_PID etcd $ETCD_TERM_STATUS
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
	track_pid $_pid "chunkd-$_z"
	eval "CHUNKD_PID_$_z=$_pid CHUNKD_PORT_$_z=$_port"
	wait_for "chunk server $_z listening on $_port" 20 port_open "$_port"
}

port_open() { python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',int(sys.argv[1])),1).close()" "$1"; }

# nodes_alive N: at least N chunk servers are alive in etcd.
nodes_alive() { [ "$(etcdctl_ get --prefix --keys-only /qbd/alive/ | grep -c .)" -ge "$1" ]; }

# kill_chunkd ZONE [SIGNAL]: signal (default KILL) the zone's chunk server
# and reap it; fail unless it died of that signal (exit 0 for SIGTERM).
kill_chunkd() {
	eval "_pid=\$CHUNKD_PID_$1"
	stop_pid "$_pid" "${2:-KILL}"
}

# stop_chunkd ZONE: SIGTERM, and fail unless it exits 0.
stop_chunkd() { kill_chunkd "$1" TERM; }

# start_cluster [ZONES...]: etcd + one chunk server per zone (default a b c).
start_cluster() {
	[ $# -gt 0 ] || set -- a b c
	start_etcd
	for z in "$@"; do start_chunkd "$z"; done
	wait_for "$# chunk servers alive in etcd" 20 nodes_alive $#
}

# start_nbd VOLUME SOCKET [extra args]: qbd-nbd (or the program in
# NBD_PROG) serving VOLUME; sets NBD_PID.
start_nbd() {
	_v=$1; _s=$2; shift 2
	"${NBD_PROG:-qbd-nbd}" --etcd "$QBD_ETCD" --volume "$_v" --socket "$_s" "$@" \
		>>"$TMP/nbd-$_v.log" 2>&1 &
	NBD_PID=$!
	track_pid $NBD_PID "qbd-nbd $_v"
	wait_for "qbd-nbd socket $_s" 20 test -S "$_s"
	wait_for "qbd-nbd answering on $_s" 20 nbdinfo --size "nbd+unix:///?socket=$_s"
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

# scrape PORT: the Prometheus metrics a daemon serves on 127.0.0.1:PORT.
scrape() {
	python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
		"http://127.0.0.1:$1/metrics"
}
# metric PORT NAME: the value of metric NAME (with its labels) on PORT.
metric() { scrape "$1" | awk -v m="$2" '$1 == m {print $2}'; }

# start_etcd_cluster [ZONES...]: an etcd cluster of one member per zone
# (default a b c) on loopback free ports, each member's data in
# $TMP/etcd-ZONE, tracked as etcd-ZONE; exports QBD_ETCD (every member's
# client URL, comma-separated, in zone order) and sets ETCD_PID_<zone>
# and ETCD_URL_<zone>. Stop a member with stop_pid "$ETCD_PID_<zone>";
# start_etcd_member ZONE starts it again.
start_etcd_cluster() {
	[ $# -gt 0 ] || set -- a b c
	ETCD_CLUSTER=""; QBD_ETCD=""
	for _ez in "$@"; do
		_cp=$(free_port); _pp=$(free_port)
		eval "ETCD_CPORT_$_ez=$_cp ETCD_PPORT_$_ez=$_pp ETCD_URL_$_ez=http://127.0.0.1:$_cp"
		ETCD_CLUSTER="${ETCD_CLUSTER:+$ETCD_CLUSTER,}etcd-$_ez=http://127.0.0.1:$_pp"
		QBD_ETCD="${QBD_ETCD:+$QBD_ETCD,}http://127.0.0.1:$_cp"
	done
	export QBD_ETCD
	for _ez in "$@"; do start_etcd_member "$_ez"; done
	wait_for "etcd cluster on $QBD_ETCD" 30 etcdctl_ endpoint health
}

# start_etcd_member ZONE: (re)start the member of start_etcd_cluster in
# ZONE, on its ports and data directory; sets ETCD_PID_<zone>.
start_etcd_member() {
	eval "_cp=\$ETCD_CPORT_$1 _pp=\$ETCD_PPORT_$1"
	mkdir -p "$TMP/etcd-$1"
	etcd --name "etcd-$1" --data-dir "$TMP/etcd-$1" \
		--listen-client-urls "http://127.0.0.1:$_cp" \
		--advertise-client-urls "http://127.0.0.1:$_cp" \
		--listen-peer-urls "http://127.0.0.1:$_pp" \
		--initial-advertise-peer-urls "http://127.0.0.1:$_pp" \
		--initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new \
		--initial-cluster-token "qbd-$TEST_NAME" \
		>>"$TMP/etcd-$1.log" 2>&1 &
	_epid=$!
	track_pid $_epid "etcd-$1" $ETCD_TERM_STATUS
	eval "ETCD_PID_$1=$_epid"
}

# Volume records and nodes, as the CLI shows them (the volume: v unless
# named).
# info_says EXPR [VOLUME]: `qbd --json volume info` satisfies EXPR
# (Python, over d); the output stays in $TMP/poll.json.
info_says() {
	qbd --json volume info "${2:-v}" >"$TMP/poll.json" 2>/dev/null && python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$TMP/poll.json" "$1"
}
# health_is RC WORD [VOLUME]: `qbd --json volume status` exits RC and
# says health WORD; the output stays in $TMP/st.json.
health_is() {
	_rc=0; qbd --json volume status "${3:-v}" >"$TMP/st.json" 2>/dev/null || _rc=$?
	[ "$_rc" -eq "$1" ] && grep -q "\"health\":\"$2\"" "$TMP/st.json"
}
# node_in ZONE: the id of the (first listed) node registered in ZONE.
# `qbd node list` exits non-zero while a node is down; its list counts.
node_in() {
	qbd --json node list >"$TMP/nodes.json" || :
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); d = d["nodes"] if isinstance(d, dict) else d
print([n["id"] for n in d if n["zone"] == sys.argv[2]][0])' \
		"$TMP/nodes.json" "$1"
}

# need_pynbd: PYNBD, a python3 that imports nbd (python3-libnbd), or
# skip the test.
need_pynbd() {
	PYNBD=""
	for _p in python3 /usr/bin/python3; do
		if "$_p" -c 'import nbd' 2>/dev/null; then PYNBD=$_p; break; fi
	done
	[ -n "$PYNBD" ] || skip "python3-libnbd not installed"
}

# start_nbd_writes URI BLOCK BASE COUNT: a client (PYNBD) writing BLOCK
# bytes at a time, at queue depth 1 and without a pause, at BASE + (n %
# COUNT) * BLOCK, until $TMP/client.stop exists; it prints how many it
# wrote into $TMP/client.out. CLIENT_PID is its pid.
start_nbd_writes() {
	rm -f "$TMP/client.stop"
	"$PYNBD" - "$1" "$TMP/client.stop" "$2" "$3" "$4" <<'PY' >"$TMP/client.out" 2>&1 &
import os
import sys
import nbd
uri, stop = sys.argv[1], sys.argv[2]
block, base, count = map(int, sys.argv[3:6])
h = nbd.NBD()
h.connect_uri(uri)
n = 0
while not os.path.exists(stop):
    h.pwrite(b"%08d" % n * (block // 8), base + (n % count) * block)
    n += 1
h.flush()
h.shutdown()
print(n)
PY
	CLIENT_PID=$!
	track_pid $CLIENT_PID client
}

# The attached writer's status document (/qbd/status/$vid): status_says
# EXPR is true when the Python expression EXPR over it (d) and its
# replicas by zone (z) is; status_value EXPR prints EXPR's value. The
# document stays in $TMP/status.json.
_status_eval() { # MODE EXPR
	python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
z = {r["zone"]: r for r in d["replicas"]}
v = eval(sys.argv[3])
if sys.argv[2] == "print":
    print(v)
else:
    sys.exit(0 if v else 1)' "$TMP/status.json" "$1" "$2"
}
# shellcheck disable=SC2154 # vid: the test's volume id
status_says() {
	etcdctl_ get --print-value-only "/qbd/status/$vid" >"$TMP/status.json" 2>/dev/null &&
		_status_eval test "$1"
}
# shellcheck disable=SC2154 # vid: the test's volume id
status_value() {
	etcdctl_ get --print-value-only "/qbd/status/$vid" >"$TMP/status.json"
	_status_eval print "$1"
}
