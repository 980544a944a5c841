#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# qbd attach / detach / mapped and qbd-nbd --device on a host without the
# nbd driver (the kernel test, make check-kernel, runs them for real): each
# fails with a message that names the cause and the right exit status, and
# nothing is left running. Usage errors are exit 2.
. "$(dirname "$0")/lib.sh"
init_test "$@"
if [ -d /sys/module/nbd ] || modprobe -n nbd 2>/dev/null; then
	skip "this kernel has an nbd driver: make check-kernel tests attach"
fi
export QBD_RUN_DIR="$TMP/run"
export QBD_ETCD=http://127.0.0.1:9

expect() { # rc pattern cmd...: exit status and a line of its output
	_want=$1; _pat=$2; shift 2
	_rc=0; "$@" >"$TMP/out" 2>&1 || _rc=$?
	[ "$_rc" -eq "$_want" ] || { cat "$TMP/out" >&2; fail "'$*' exited $_rc, want $_want"; }
	grep -q -- "$_pat" "$TMP/out" || { cat "$TMP/out" >&2; fail "'$*' did not say '$_pat'"; }
}

expect 1 "nbd kernel module is not available" qbd attach vol1
expect 1 "nbd kernel module is not available" qbd-nbd --volume vol1 --device auto
expect 1 "nbd kernel module is not available" qbd-nbd --volume vol1 --device /dev/nbd3
expect 0 "no qbd device" qbd mapped
[ "$(qbd mapped --json)" = "[]" ] || fail "qbd mapped --json is not an empty list"
expect 1 "/dev/nbd9 is not attached" qbd detach /dev/nbd9
expect 1 "'vol1' is not attached on this node" qbd detach vol1
expect 2 "bad --device" qbd attach vol1 --device /dev/sda
expect 2 "usage: qbd attach" qbd attach
expect 2 "usage: qbd detach" qbd detach
expect 2 "usage: qbd mapped" qbd mapped extra
expect 0 "usage: qbd attach" qbd attach --help
expect 1 "bad --device" qbd-nbd --volume vol1 --device /dev/sdb
expect 1 "connections must be" qbd-nbd --volume vol1 --device auto --connections 0
expect 1 "bad --timeout" qbd-nbd --volume vol1 --device auto --timeout x
expect 1 "or --device" qbd-nbd --volume vol1
# No daemon was left behind by any of the failures.
if pgrep -x qbd-nbd >/dev/null 2>&1; then
	for p in $(pgrep -x qbd-nbd); do
		[ "$(cat /proc/$p/environ 2>/dev/null | tr '\0' '\n' | grep -c "^QBD_RUN_DIR=$QBD_RUN_DIR\$")" -eq 0 ] ||
			fail "a qbd-nbd (pid $p) was left running"
	done
fi
log "PASS"
