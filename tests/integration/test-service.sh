#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# qbd as a service: the systemd units install and pass systemd-analyze
# verify; the daemons speak sd_notify (READY, watchdog pings from the
# loop, STOPPING) and exit 0 on SIGTERM; qbd.conf is read and checked
# with precise messages; a secret file others can read stops a daemon;
# processes without the cluster secret, or with another, are refused;
# /metrics counters move under load; qbd status and node list exit with
# the cluster's health.
. "$(dirname "$0")/lib.sh"
init_test "$@"
top=$(cd "$(dirname "$0")/../.." && pwd)

# ---- units ----
# Installed under a prefix that exists, so that systemd-analyze verify
# finds the programs the units run.
prefix="$TMP/prefix"
make -s -C "$top" BUILD="$BUILD" PREFIX="$prefix" SYSCONFDIR="$prefix/etc" install \
	>"$TMP/install.log" 2>&1 || { cat "$TMP/install.log" >&2; fail "make install failed"; }
for u in qbd-chunkd@.service qbd-nbd@.service qbd-managerd.service; do
	f="$prefix/lib/systemd/system/$u"
	[ -f "$f" ] || fail "make install did not install $u"
	grep -q "^ExecStart=$prefix/bin/qbd-" "$f" || fail "$u: ExecStart not pointing at $prefix/bin"
	grep -q '@BINDIR@\|@DOCDIR@' "$f" && fail "$u: placeholders left"
	# verify wants an instance of a template
	cp "$f" "$TMP/$(echo "$u" | sed 's/@/@x/')"
done
[ -f "$prefix/etc/qbd/qbd.conf.example" ] || fail "qbd.conf.example not installed"
systemd-analyze verify "$TMP/qbd-chunkd@x.service" "$TMP/qbd-nbd@x.service" \
	"$TMP/qbd-managerd.service" \
	>"$TMP/verify.log" 2>&1 || { cat "$TMP/verify.log" >&2; fail "systemd-analyze verify"; }
[ -s "$TMP/verify.log" ] && { cat "$TMP/verify.log" >&2; fail "systemd-analyze verify warned"; }
log "units: installed, systemd-analyze verify clean"

# ---- configuration ----
start_etcd
port=$(free_port); mport=$(free_port)
cat >"$TMP/qbd.conf" <<CONF
[cluster]
etcd = $QBD_ETCD
secret-file = $TMP/secret

[chunkd]
zone = a
scrub-rate = 0
size = 1G

[chunkd.one]
data = $TMP/chunk-one.img
listen = 127.0.0.1:$port
metrics = 127.0.0.1:$mport
CONF
env -u QBD_ETCD -u QBD_SECRET_FILE qbd-chunkd --instance one --check-config \
	>"$TMP/check.out" 2>&1 || { cat "$TMP/check.out" >&2; fail "valid settings refused"; }
cp "$TMP/qbd.conf" "$TMP/bad.conf"
printf 'lisen = 1.2.3.4:5\nbuffers = many\n' >>"$TMP/bad.conf"
rc=0; QBD_CONFIG="$TMP/bad.conf" qbd-chunkd --instance one --check-config >"$TMP/bad.out" 2>&1 || rc=$?
[ $rc -eq 1 ] || fail "bad settings: --check-config exited $rc"
grep -q "bad.conf:14: unknown key 'lisen' in \[chunkd.one\]" "$TMP/bad.out" ||
	{ cat "$TMP/bad.out" >&2; fail "no precise message for an unknown key"; }
grep -q "bad.conf:15 (buffers in \[chunkd.one\]): 'many'" "$TMP/bad.out" ||
	{ cat "$TMP/bad.out" >&2; fail "no precise message for a bad value"; }
printf '[chunkd\n' >"$TMP/syntax.conf"
rc=0; qbd-chunkd --config "$TMP/syntax.conf" --check-config >"$TMP/syn.out" 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "syntax.conf:1: syntax error" "$TMP/syn.out" ||
	{ cat "$TMP/syn.out" >&2; fail "syntax error not reported with its line"; }
# A secret others may read: refused, by --check-config and at start.
cp "$TMP/secret" "$TMP/open-secret"; chmod 0644 "$TMP/open-secret"
rc=0; QBD_SECRET_FILE="$TMP/open-secret" qbd-chunkd --instance one >"$TMP/open.out" 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "mode 0644: it must be 0600" "$TMP/open.out" ||
	{ cat "$TMP/open.out" >&2; fail "a 0644 secret file did not stop the daemon (rc $rc)"; }
log "config: checked with file:line messages; a readable secret refused"

# ---- sd_notify: READY, WATCHDOG pings, STOPPING, exit 0 ----
cat >"$TMP/notify.py" <<'PY'
import socket, sys, os
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        out.write(s.recv(4096).decode().replace("\n", " ") + "\n")
PY
python3 "$TMP/notify.py" "$TMP/notify.sock" "$TMP/notify.log" &
track_pid $! "notify listener" $TERM_DEATH
wait_for "notify socket" 10 test -S "$TMP/notify.sock"
NOTIFY_SOCKET="$TMP/notify.sock" WATCHDOG_USEC=400000 qbd-chunkd --instance one \
	>>"$TMP/chunkd-one.log" 2>&1 &
cpid=$!
track_pid $cpid chunkd-one
wait_for "READY=1 from qbd-chunkd" 20 grep -q "READY=1" "$TMP/notify.log"
wait_for "watchdog pings" 10 sh -c "[ \$(grep -c WATCHDOG=1 '$TMP/notify.log') -ge 3 ]"
log "sd_notify: READY and watchdog pings seen"

# ---- metrics and authentication ----
start_chunkd b --scrub-rate 0
start_chunkd c --scrub-rate 0
wait_for "3 chunk servers alive" 20 nodes_alive 3
qbd volume create v --size 256M --replicas 3 --write-quorum 2 >/dev/null
nport=$(free_port)
start_nbd v "$TMP/v.sock" --zone a --metrics "127.0.0.1:$nport"
vpid=$NBD_PID
c0=$(metric $mport 'qbd_chunkd_requests_total{op="write"}')
n0=$(metric $nport 'qbd_nbd_bytes_total{op="write"}')
x0=$(metric $nport 'qbd_cross_zone_sent_bytes_total')
[ -n "$c0" ] && [ -n "$n0" ] && [ -n "$x0" ] || fail "metrics missing (chunkd '$c0', nbd '$n0', cross-zone '$x0')"
fio --name=m --ioengine=nbd --uri="$(nbd_uri "$TMP/v.sock")" --rw=randwrite --bs=64k \
	--size=32M --iodepth=8 >"$TMP/fio.log" 2>&1 || { cat "$TMP/fio.log" >&2; fail "fio"; }
# Metrics are published once a second: poll until every counter has
# taken the load in (at most 20 s), then check by how much each moved.
load_counted() {
	c1=$(metric $mport 'qbd_chunkd_requests_total{op="write"}')
	n1=$(metric $nport 'qbd_nbd_bytes_total{op="write"}')
	x1=$(metric $nport 'qbd_cross_zone_sent_bytes_total')
	[ "$c1" -gt "$c0" ] && [ $((n1 - n0)) -ge $((32 << 20)) ] && [ $((x1 - x0)) -ge $((64 << 20)) ]
}
poll_until 20 load_counted || true
[ "$c1" -gt "$c0" ] || fail "chunkd write requests did not move ($c0 -> $c1)"
[ $((n1 - n0)) -eq $((32 << 20)) ] || fail "nbd write bytes moved by $((n1 - n0)), want 32 MiB"
# Zones b and c get a copy each: at least 2 x 32 MiB left zone a.
[ $((x1 - x0)) -ge $((64 << 20)) ] || fail "cross-zone bytes moved by $((x1 - x0)) only"
scrape $nport | grep -q '^qbd_nbd_request_seconds_count{op="write"} [1-9]' ||
	fail "no write latency histogram"
scrape $nport | grep -q '^qbd_replica_up{replica="[0-9]",node="[0-9a-f]*",zone="a"} 1$' ||
	fail "replica states missing"
log "metrics: counters moved by the write load (chunkd writes $c0 -> $c1, cross-zone +$((x1 - x0)) bytes)"

# Without the secret, or with another: refused, and the chunk server says
# so. (A volume of its own: an open checks the secret only once it has
# taken an epoch in etcd.)
qbd volume create w --size 64M --replicas 3 --write-quorum 2 >/dev/null
f0=$(metric $mport qbd_chunkd_auth_failures_total)
qbd secret create "$TMP/other-secret" >/dev/null
# (timeout: a writer let in would serve until stopped)
rc=0; QBD_SECRET_FILE="$TMP/other-secret" timeout 30 qbd-nbd --volume w --socket "$TMP/w.sock" \
	>"$TMP/wrong.log" 2>&1 || rc=$?
[ $rc -eq 1 ] || fail "a writer with another secret was not refused (exit $rc)"
grep -q "did not prove the cluster secret\|refused our authentication" "$TMP/wrong.log" ||
	{ cat "$TMP/wrong.log" >&2; fail "wrong secret: no clear message"; }
rc=0; env -u QBD_SECRET_FILE QBD_CONFIG=/dev/null timeout 30 qbd-nbd --volume w --socket "$TMP/w.sock" \
	>"$TMP/none.log" 2>&1 || rc=$?
[ $rc -eq 1 ] || fail "a writer without the secret was not refused (exit $rc)"
grep -q "requires authentication" "$TMP/none.log" ||
	{ cat "$TMP/none.log" >&2; fail "no secret: no clear message"; }
grep -q "left before authenticating: it did not accept our proof" "$TMP/chunkd-one.log" ||
	fail "the chunk server did not log the peer with another secret"
grep -q "HELLO without a challenge: the peer has no cluster secret" "$TMP/chunkd-one.log" ||
	fail "the chunk server did not log the peer without a secret"
auth_failures_counted() { [ "$(metric $mport qbd_chunkd_auth_failures_total)" -gt "$f0" ]; }
wait_for "auth failures counted ($f0 before)" 20 auth_failures_counted
fio --name=after --ioengine=nbd --uri="$(nbd_uri "$TMP/v.sock")" --rw=write --bs=64k \
	--size=4M >"$TMP/fio2.log" 2>&1 || { cat "$TMP/fio2.log" >&2; fail "writer of v failed"; }
# The CLI without the secret cannot ask a chunk server for usage.
env -u QBD_SECRET_FILE QBD_CONFIG=/dev/null qbd volume status v >"$TMP/cli-none.out" 2>&1 || true
grep -q "requires authentication" "$TMP/cli-none.out" ||
	{ cat "$TMP/cli-none.out" >&2; fail "CLI without the secret: no clear message"; }
log "auth: wrong and missing secrets refused and logged; the writer kept serving"

# ---- status exit codes ----
rc=0; qbd status >"$TMP/status.out" 2>&1 || rc=$?
[ $rc -eq 0 ] || { cat "$TMP/status.out" >&2; fail "qbd status exited $rc on a healthy cluster"; }
grep -q "HEALTH_OK" "$TMP/status.out" || fail "qbd status: no HEALTH_OK"
stop_chunkd c
wait_for "zone c seen down" 30 sh -c 'qbd node list >/dev/null 2>&1; [ $? -eq 3 ]'
rc=0; qbd --json status >"$TMP/status.json" 2>&1 || rc=$?
[ $rc -eq 3 ] || { cat "$TMP/status.json" >&2; fail "qbd status exited $rc with a node down, want 3"; }
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); assert j["health"]=="HEALTH_WARN" and j["nodes"]["down"]==1, j' \
	"$TMP/status.json" || fail "qbd status --json"
log "status: 0 healthy, 3 with a node down"

# ---- a chunk server without the secret is not trusted ----
# Zone c is down: a new volume's third replica goes to zone d, whose chunk
# server has no secret. The writer refuses it and works on the other two.
_sf=$QBD_SECRET_FILE _cf=$QBD_CONFIG
unset QBD_SECRET_FILE
export QBD_CONFIG=/dev/null
start_chunkd d --scrub-rate 0
export QBD_SECRET_FILE="$_sf" QBD_CONFIG="$_cf"
grep -q "no cluster secret (secret-file): links to this chunk server are not authenticated" \
	"$TMP/chunkd-d.log" || fail "a chunk server without a secret did not warn at start"
wait_for "zone d alive" 20 nodes_alive 3
qbd volume create x --size 64M --replicas 3 --write-quorum 2 >/dev/null
start_nbd x "$TMP/x.sock" --zone a
xpid=$NBD_PID
grep -q "does not authenticate (it has no cluster secret): not trusted" "$TMP/nbd-x.log" ||
	{ cat "$TMP/nbd-x.log" >&2; fail "the writer did not refuse a chunk server without the secret"; }
# degraded (3), not unknown: wait for the writer's status document
x_degraded() {
	rc=0; qbd --json volume status x >"$TMP/x.json" 2>/dev/null || rc=$?
	[ $rc -eq 3 ] && grep -q '"health":"degraded"' "$TMP/x.json"
}
wait_for "volume x with an untrusted replica degraded (exit 3)" 20 x_degraded
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); r=[x for x in j["replica_status"] if x["zone"]=="d"]; assert r and not r[0]["usable"], r' \
	"$TMP/x.json" || fail "zone d's replica shown usable"
stop_pid $xpid
log "a chunk server without the secret: refused by the writer, the volume degraded"

# ---- SIGTERM: STOPPING=1, exit 0 ----
stop_pid $vpid
stop_pid $cpid
grep -q "STOPPING=1" "$TMP/notify.log" || fail "no STOPPING=1"
log "PASS"
