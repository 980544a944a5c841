#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# bench/qbd-io (a fio-like job through libqbd) against a real cluster:
# etcd + three chunk servers, one R=3 volume. A sequential fill, then
# random writes, random reads and a random mix, all with --verify; each
# run's JSON must parse, count I/Os that agree with its runtime, and show
# that verify checked what it read. Bad options must exit 2.
# Usage: test-bench-qbd-io.sh BUILD_DIR. Exit 0 ok, 1 failure, 77 skipped.
. "$(dirname "$0")/lib.sh"

init_test "$@"
QIO=$BUILD/bench/qbd-io
[ -x "$QIO" ] || fail "no bench/qbd-io in $BUILD (make all)"
command -v etcd >/dev/null && command -v etcdctl >/dev/null || skip "etcd not installed"

VOL=bench1
REGION=8m
SEED=12345

# usage_exit ARGS...: qbd-io must refuse ARGS with exit status 2.
usage_exit() {
	_rc=0
	"$QIO" "$@" >"$TMP/usage.out" 2>"$TMP/usage.err" || _rc=$?
	[ $_rc -eq 2 ] || fail "qbd-io $* exited $_rc, want 2"
	[ -s "$TMP/usage.err" ] || fail "qbd-io $* said nothing on stderr"
	[ ! -s "$TMP/usage.out" ] || fail "qbd-io $* wrote to stdout"
}

usage_exit --volume "$VOL" --etcd http://127.0.0.1:1 --no-such-option
grep -q "unknown option '--no-such-option'" "$TMP/usage.err" ||
	fail "no clear message for an unknown option: $(cat "$TMP/usage.err")"
usage_exit --volume "$VOL" --etcd http://127.0.0.1:1 --rw=sideways
usage_exit --volume "$VOL" --etcd http://127.0.0.1:1 --bs 4q
usage_exit --volume "$VOL" --etcd http://127.0.0.1:1 --runtime 2parsecs
usage_exit --volume "$VOL" --etcd http://127.0.0.1:1 --iodepth
usage_exit --volume "$VOL" --etcd http://127.0.0.1:1 stray
"$QIO" --help >"$TMP/help.out" || fail "--help failed"
grep -q -- "--ramp_time" "$TMP/help.out" || fail "--help lists no --ramp_time"

start_cluster a b c
qbd volume create "$VOL" --size 64M --replicas 3 >"$TMP/create.log" 2>&1 ||
	fail "qbd volume create: $(cat "$TMP/create.log")"

# qio NAME ARGS...: one qbd-io run; its JSON in $TMP/NAME.json.
qio() {
	_n=$1; shift
	"$QIO" --volume "$VOL" --name "$_n" --bs 4k --iodepth 8 --size $REGION \
		--verify --verify_seed $SEED --output-format=json "$@" \
		>"$TMP/$_n.json" 2>>"$TMP/qbd-io.log" || fail "qbd-io $_n exited $?"
}

# check NAME DIRS RUNTIME_MS [exact]: the JSON of run NAME. DIRS: the
# directions that must have done I/O (read, write or both); RUNTIME_MS
# the counted window wanted (at least it, at most 40% more; 0: size-bounded,
# then every block of the region exactly once). The verify counts must show
# that reads were checked and none was left unchecked.
check() {
	python3 - "$TMP/$1.json" "$2" "$3" $((8 * 1024 * 1024)) <<'EOF' || fail "run $1: see above"
import json, sys
path, dirs, want_ms, region = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4])
d = json.load(open(path))
job = d["jobs"][0]
bad = []
def need(cond, what):
    if not cond:
        bad.append(what)
rt = job["job_runtime"]
if want_ms:
    need(want_ms <= rt <= want_ms * 1.4, "job_runtime %d ms for --runtime %d ms" % (rt, want_ms))
for k in ("read", "write"):
    s = job[k]
    n = s["total_ios"]
    if k not in dirs:
        need(n == 0 and s["iops"] == 0, "%s: %d I/Os in a job without them" % (k, n))
        continue
    need(n > 0 and s["iops"] > 0, "%s: no I/O (total_ios %d, iops %s)" % (k, n, s["iops"]))
    need(s["io_bytes"] == n * 4096 and s["io_kbytes"] == n * 4, "%s: io_bytes %d for %d I/Os" % (k, s["io_bytes"], n))
    need(s["runtime"] == rt, "%s: runtime %d, job_runtime %d" % (k, s["runtime"], rt))
    if n and rt:
        need(abs(s["iops"] * rt / 1000 - n) <= 0.02 * n + 2,
             "%s: iops %.1f over %d ms is not %d I/Os" % (k, s["iops"], rt, n))
        need(abs(s["bw_bytes"] * rt / 1000 - s["io_bytes"]) <= 0.02 * s["io_bytes"] + 8192,
             "%s: bw_bytes %d over %d ms is not %d bytes" % (k, s["bw_bytes"], rt, s["io_bytes"]))
    if not want_ms:
        need(s["io_bytes"] == region, "%s: %d bytes in a size-bounded job of %d" % (k, s["io_bytes"], region))
    for l in ("lat_ns", "clat_ns"):
        L = s[l]
        need(L["N"] == n and 0 < L["min"] <= L["mean"] <= L["max"], "%s %s: %s" % (k, l, L))
    p = s["clat_ns"]["percentile"]
    ps = [p[x] for x in ("1.000000", "50.000000", "99.000000", "99.900000")]
    need(ps == sorted(ps) and s["clat_ns"]["min"] * 0.99 <= ps[0] and ps[-1] <= s["clat_ns"]["max"] * 1.01,
         "%s: percentiles %s outside [min, max]" % (k, ps))
need(0 <= job["usr_cpu"] <= 200 and 0 <= job["sys_cpu"] <= 200 and job["usr_cpu"] + job["sys_cpu"] > 0,
     "cpu %s/%s" % (job["usr_cpu"], job["sys_cpu"]))
v = job.get("qbd_verify")
need(v is not None, "no qbd_verify: verify did not run")
if v is not None:
    need(v["seed"] == 12345, "verify seed %s" % v["seed"])
    if "write" in dirs:
        need(v["writes"] >= job["write"]["total_ios"], "verify: %d pattern writes for %d writes" % (v["writes"], job["write"]["total_ios"]))
    if "read" in dirs:
        checked = v["reads_checked"] + v["reads_checked_earlier"]
        need(checked >= job["read"]["total_ios"] > 0, "verify: %d reads checked of %d" % (checked, job["read"]["total_ios"]))
        need(v["reads_unchecked"] == 0, "verify: %d reads not checked" % v["reads_unchecked"])
for b in bad:
    print("%s: %s" % (path, b), file=sys.stderr)
print("%s: read %d I/Os, write %d I/Os in %d ms; verify %s" % (job["jobname"],
      job["read"]["total_ios"], job["write"]["total_ios"], rt, v), file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
}

# Every block of the region once, in order: later reads find a pattern
# everywhere, so none may go unchecked.
qio fill --rw write --ramp_time 0
check fill write 0
qio randwrite --rw randwrite --runtime 1500ms --ramp_time 250ms --time_based \
	--norandommap --randrepeat=0
check randwrite write 1500
qio randread --rw randread --runtime 1500ms --ramp_time 250ms --time_based \
	--norandommap --randrepeat=0
check randread read 1500
# Reads of blocks this run wrote are checked against its last write.
qio randrw --rw randrw --rwmixread 50 --runtime 1s --ramp_time 0 --time_based
check randrw read,write 1000
python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))["jobs"][0]["qbd_verify"]; sys.exit(v["reads_checked"] == 0)' \
	"$TMP/randrw.json" || fail "randrw: no read was checked against this run's writes"

# A reader that expects another seed must find every block wrong.
rc=0
"$QIO" --volume "$VOL" --rw randread --bs 4k --iodepth 8 --size $REGION --runtime 500ms \
	--time_based --verify --verify_seed $((SEED + 1)) >"$TMP/wrong.json" 2>"$TMP/wrong.err" || rc=$?
[ $rc -eq 1 ] || fail "a verify run with the wrong seed exited $rc, want 1"
grep -q "qbd-io: verify: read at offset .*expected an earlier write with seed $((SEED + 1))" \
	"$TMP/wrong.err" || fail "no verify message for the wrong seed: $(tail -n 3 "$TMP/wrong.err")"
[ ! -s "$TMP/wrong.json" ] || fail "a failed verify run printed JSON"

log "PASS"
