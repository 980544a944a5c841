#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The kernel test, run inside the qemu guest by tests/kernel/init (busybox
# sh, everything on the guest's loopback). Prints "qbd-kernel: [uptime]
# step" lines; on failure writes the reason to /tmp/fail-reason, dumps the
# logs and exits 1.
#
# Phases ($PHASES from /etc/qbd-kernel.conf):
#   attach    a three-zone cluster; qbd attach --zone a, mkfs.ext4, mount,
#             write files and record their checksums, sync, kill -9 the
#             chunk server of zone a, write more, umount, qbd detach; qbd
#             attach --zone b (as a node in another zone would), mount,
#             verify every checksum, umount, e2fsck clean.
#   reattach  (after attach) mount again, kill -9 the qbd-nbd daemon while
#             a write is running, restart it with qbd attach (which
#             reconfigures the same device), and check that the write
#             completes without an I/O error and its data reads back.
#   resync    (after attach) restart the chunk server of zone a on its
#             store while the volume is attached and mounted; the writer
#             resyncs it (qbd volume status healthy), then, detached, qbd
#             volume verify finds the three replicas identical.
#   resize    (after attach) attach, mount, qbd volume resize to 768M while
#             mounted: the device shows the new size without a detach,
#             the new region reads as zeros, resize2fs grows ext4
#             online, the files stay intact and more can be written; a
#             shrink is refused while attached; umount, e2fsck clean.
#   cli       two connections, the backend id, idempotent attach, a busy
#             device, qbd mapped, locked memory and the I/O flusher flag,
#             a daemon stalled past the request timeout (new sockets),
#             detach refused while mounted, detach by name and device.
#   csi       qbd-csi's Node service moves a pod's filesystem from node a
#             (zone a) to node b (zone b), both in this kernel in
#             namespaces of their own (tests/kernel/csi_phase.py, driven
#             with python3-grpcio): stage + publish on a (mkfs), files
#             written, node a's writer stopped (SIGSTOP) with the
#             filesystem mounted; stage + publish on b (takeover with
#             --force): every file intact, e2fsck clean; the old writer,
#             resumed, cannot write; qbd volume resize + NodeExpandVolume
#             while published; zone c's chunk server killed: the volume
#             condition turns abnormal. Prints the zone move's time and parts.
#
# $ATTACH: qbd (the test), or nbd-client (qbd-nbd on a unix socket,
# connected to the kernel by Debian's nbd-client: checks the harness, the
# kernel driver and qbd-nbd without qbd attach; the reattach and resize
# phases are skipped).

PHASES="attach reattach resync resize cli csi"
ATTACH=qbd
GUEST_LIMIT=840
[ -f /etc/qbd-kernel.conf ] && . /etc/qbd-kernel.conf

STATE=/tmp/qbd-dev
VOL=vol1
VOL_SIZE=512M
export QBD_RUN_DIR=/run/qbd
mkdir -p "$QBD_RUN_DIR"

uptime_s() { cut -d' ' -f1 /proc/uptime; }
step() {
	echo "$*" >/tmp/step
	echo "qbd-kernel: [$(uptime_s)] $*"
}
note() { echo "qbd-kernel: [$(uptime_s)]   $*"; }

dump() {
	echo "---- guest diagnostics (step: $(cat /tmp/step 2>/dev/null))"
	for f in "$STATE"/*.log "$QBD_RUN_DIR"/*.log /tmp/*.log; do
		[ -f "$f" ] || continue
		echo "---- tail of $f"
		tail -n 25 "$f"
	done
	echo "---- dmesg (tail)"
	dmesg | tail -n 40
	echo "---- processes"
	ps -o pid,stat,args | grep -v ' \[.*\]$'
	echo "---- memory"
	head -n 3 /proc/meminfo
	echo "----"
}
fail() {
	echo "$*" >/tmp/fail-reason
	echo "qbd-kernel: [$(uptime_s)] FAIL: $*"
	dump
	exit 1
}
# problem MSG: a failure that does not stop the scenario (kernel errors
# logged): the later steps still run, and the result is FAIL.
problem() {
	echo "$*" >>/tmp/problems
	echo "qbd-kernel: [$(uptime_s)] PROBLEM: $*"
}
# run CMD...: run with its output in /tmp/out; fail if it exits non-zero.
run() {
	"$@" >/tmp/out 2>&1 && return 0
	_rc=$?
	cat /tmp/out
	fail "'$*' exited $_rc"
}
# wait_until DESC SECONDS CMD...: poll CMD every 0.2 s.
wait_until() {
	_desc=$1 _n=$(($2 * 5))
	shift 2
	while ! "$@" >/dev/null 2>&1; do
		_n=$((_n - 1))
		[ $_n -gt 0 ] || fail "timed out waiting for $_desc"
		sleep 0.2
	done
}
# kernel_errors: I/O or ext4 errors logged (since the last dmesg -c)
kernel_errors() { dmesg | grep -E 'I/O error|Other side returned error|EXT4-fs (error|warning)|JBD2.*error'; }

# A watchdog: if a step hangs (a process stuck in the kernel cannot be
# killed), report which one with the logs, and power off.
(
	sleep "$GUEST_LIMIT"
	echo "guest watchdog: step '$(cat /tmp/step)' still running after ${GUEST_LIMIT}s" >/tmp/fail-reason
	echo "qbd-kernel: FAIL: $(cat /tmp/fail-reason)"
	dump
	echo "qbd-kernel: RESULT FAIL $(cat /tmp/fail-reason)"
	sync
	poweroff -f
) &

# ---- attaching: qbd attach, or qbd-nbd + nbd-client
case $ATTACH in
qbd | nbd-client) ;;
*) fail "unknown ATTACH=$ATTACH" ;;
esac
if [ "$ATTACH" = nbd-client ] && ! command -v nbd-client >/dev/null 2>&1; then
	fail "ATTACH=nbd-client but no nbd-client in the initramfs (apt-get install nbd-client on the host)"
fi

# attach VOL ZONE: prints the device
attach() {
	if [ "$ATTACH" = qbd ]; then
		timeout 120 qbd attach "$1" --zone "$2" 2>>/tmp/attach.log
		return
	fi
	_sock=$QBD_RUN_DIR/$1.sock
	rm -f "$_sock"
	qbd-nbd --volume "$1" --socket "$_sock" --zone "$2" >>"$QBD_RUN_DIR/$1.log" 2>&1 &
	echo $! >"$QBD_RUN_DIR/$1.pid"
	_n=150
	while [ ! -S "$_sock" ]; do
		_n=$((_n - 1))
		[ $_n -gt 0 ] && kill -0 "$(cat "$QBD_RUN_DIR/$1.pid")" 2>/dev/null || return 1
		sleep 0.2
	done
	for _d in /sys/block/nbd*; do
		[ -s "$_d/pid" ] && continue
		_dev=/dev/${_d##*/}
		timeout 60 nbd-client -unix "$_sock" "$_dev" -N "$1" -b 4096 >>/tmp/attach.log 2>&1 || return 1
		echo "$_dev"
		return 0
	done
	return 1
}
# detach DEV VOL
detach() {
	if [ "$ATTACH" = qbd ]; then
		timeout 120 qbd detach "$1"
		return
	fi
	timeout 60 nbd-client -d "$1" || return 1
	_pid=$(cat "$QBD_RUN_DIR/$2.pid")
	kill -TERM "$_pid" 2>/dev/null
	_n=150
	while kill -0 "$_pid" 2>/dev/null; do
		_n=$((_n - 1))
		[ $_n -gt 0 ] || return 1
		sleep 0.2
	done
	rm -f "$QBD_RUN_DIR/$2.pid"
}
attach_ok() { # VOL ZONE: sets DEV
	DEV=$(attach "$1" "$2") || {
		cat /tmp/attach.log 2>/dev/null
		fail "attach $1 --zone $2 failed"
	}
	[ -b "$DEV" ] || fail "attach $1 printed '$DEV', not a block device"
	if [ "$ATTACH" = qbd ]; then
		qbd mapped >/tmp/mapped.out 2>&1 || fail "qbd mapped exited $?: $(cat /tmp/mapped.out)"
		grep -q "$DEV" /tmp/mapped.out || fail "qbd mapped does not list $DEV: $(cat /tmp/mapped.out)"
	fi
	note "$1 attached as $DEV ($(($(cat "/sys/block/${DEV#/dev/}/size") / 2048)) MiB)"
}
detach_ok() { # DEV VOL
	detach "$1" "$2" >/tmp/detach.out 2>&1 || fail "detach $1 failed: $(cat /tmp/detach.out)"
	wait_until "$1 to have size 0 after detach" 10 test "$(cat "/sys/block/${1#/dev/}/size")" = 0
}

# sums_of DIR: sha256 of every file under DIR, relative names, sorted
sums_of() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum); }

setup_cluster() {
	step "cluster: etcd + qbd-chunkd in zones a, b, c, each store a loop device over tmpfs"
	mkdir -p "$STATE"
	i=0
	for z in a b c; do
		truncate -s 2G "/tmp/store-$z.img"
		run losetup "/dev/loop$i" "/tmp/store-$z.img"
		# qbd dev up serves STATE/chunk-Z.img: here a block device
		ln -s "/dev/loop$i" "$STATE/chunk-$z.img"
		i=$((i + 1))
	done
	# one etcd member: the guest runs under TCG, and etcd's failover
	# is tests/integration/test-etcd-zones.sh's business
	run timeout 120 qbd dev up --state "$STATE" --zones a,b,c --etcd-members 1
	. "$STATE/env"
	export QBD_ETCD QBD_SECRET_FILE
	run qbd node list
	sed 's/^/    /' /tmp/out
}

phase_attach() {
	step "qbd volume create $VOL --size $VOL_SIZE"
	run qbd volume create "$VOL" --size "$VOL_SIZE"

	step "attach $VOL --zone a ($ATTACH)"
	attach_ok "$VOL" a
	DEV_A=$DEV

	step "mkfs.ext4 $DEV, mount"
	run timeout 300 mkfs.ext4 -q -F "$DEV"
	mkdir -p /mnt/v
	run timeout 60 mount -t ext4 "$DEV" /mnt/v

	step "write files, record their checksums, sync"
	mkdir -p /mnt/v/d1
	for i in 1 2 3 4; do
		run dd if=/dev/urandom of="/mnt/v/d1/rand$i" bs=1M count=4
	done
	run cp -a /lib /etc /sbin /mnt/v/d1/
	sums_of /mnt/v >/root/sums-before
	run timeout 120 sync
	note "$(wc -l </root/sums-before) files, $(du -sm /mnt/v | cut -f1) MiB"

	step "kill -9 the chunk server of zone a"
	pid=$(awk '$1 == "chunkd-a" { print $2 }' "$STATE/pids")
	[ -n "$pid" ] && kill -0 "$pid" || fail "no live chunkd-a in $STATE/pids"
	kill -9 "$pid"

	step "write more with 2 of 3 replicas: new files, an overwrite, a delete, sync"
	mkdir -p /mnt/v/d2
	for i in 1 2 3; do
		run dd if=/dev/urandom of="/mnt/v/d2/rand$i" bs=1M count=4
	done
	run dd if=/dev/urandom of=/mnt/v/d1/rand1 bs=4k count=64 seek=100 conv=notrunc
	run rm /mnt/v/d1/rand4
	run cp -a /bin /mnt/v/d2/
	sums_of /mnt/v >/root/sums
	run timeout 120 sync
	note "$(wc -l </root/sums) files, $(du -sm /mnt/v | cut -f1) MiB"

	step "umount, detach $DEV"
	run timeout 120 umount /mnt/v
	detach_ok "$DEV" "$VOL"
	# nothing of the volume may be served from this kernel's caches
	echo 3 >/proc/sys/vm/drop_caches

	step "attach $VOL --zone b (as a node in another zone would), mount"
	attach_ok "$VOL" b
	run timeout 60 mount -t ext4 "$DEV" /mnt/v

	step "verify every checksum"
	(cd /mnt/v && sha256sum -c /root/sums) >/tmp/verify.out 2>&1 ||
		fail "checksums differ after reattach: $(grep -v ': OK$' /tmp/verify.out | head -n 5 | tr '\n' ' ')"
	sums_of /mnt/v >/root/sums-after
	cmp -s /root/sums /root/sums-after || fail "the file set differs after reattach"
	note "$(wc -l </root/sums) files OK"

	step "umount, e2fsck -fn"
	run timeout 120 umount /mnt/v
	run timeout 300 e2fsck -fn "$DEV"
	if kernel_errors >/tmp/kerr.log; then
		problem "kernel logged errors in the attach phase: $(head -n 3 /tmp/kerr.log | tr '\n' ' ')"
	fi
	detach_ok "$DEV" "$VOL"
}

phase_reattach() {
	if [ "$ATTACH" != qbd ]; then
		step "reattach phase skipped: it needs qbd attach (ATTACH=$ATTACH)"
		return 0
	fi
	step "phase 2: attach $VOL --zone b, mount, a 32 MiB O_DIRECT write"
	attach_ok "$VOL" b
	DEV2=$DEV
	run timeout 60 mount -t ext4 "$DEV" /mnt/v
	run dd if=/dev/urandom of=/tmp/src bs=1M count=32
	want=$(sha256sum </tmp/src | cut -d' ' -f1)
	dmesg -c >/dev/null
	rm -f /tmp/dd.rc
	(
		dd if=/tmp/src of=/mnt/v/big bs=1M oflag=direct conv=fsync >/tmp/dd.log 2>&1
		echo $? >/tmp/dd.rc
	) &
	big_grew() { [ "$(stat -c %s /mnt/v/big 2>/dev/null || echo 0)" -ge 8388608 ]; }
	wait_until "the write to reach 8 MiB" 120 big_grew

	pids=$(pidof qbd-nbd)
	[ -n "$pids" ] && [ "$pids" = "${pids% *}" ] || fail "want one qbd-nbd, found '$pids'"
	step "kill -9 qbd-nbd (pid $pids) while the write runs ($(($(stat -c %s /mnt/v/big) / 1048576)) MiB written)"
	kill -9 "$pids"
	[ -f /tmp/dd.rc ] && fail "the write ended before the kill; nothing was tested"

	step "qbd attach $VOL again: reconfigure $DEV2"
	attach_ok "$VOL" b
	[ "$DEV" = "$DEV2" ] || fail "reattach gave $DEV, want $DEV2 (the device still mounted)"
	[ "$(pidof qbd-nbd)" != "$pids" ] || fail "no new qbd-nbd"

	step "wait for the write to complete"
	wait_until "the write to finish" 300 test -f /tmp/dd.rc
	[ "$(cat /tmp/dd.rc)" = 0 ] || fail "the write failed across the restart: $(cat /tmp/dd.log)"
	if kernel_errors >/tmp/kerr.log; then
		problem "kernel logged errors across the restart: $(head -n 3 /tmp/kerr.log | tr '\n' ' ')"
	fi
	# Again, restarted the way qbd-nbd@.service does (systemd's
	# Restart=on-failure runs the same command): --device auto finds
	# the device bound to this volume by its backend identifier.
	pids=$(pidof qbd-nbd)
	step "kill -9 qbd-nbd (pid $pids) again; restart it as its unit does: --device auto"
	kill -9 "$pids"
	qbd-nbd --volume "$VOL" --device auto --zone b >>"$QBD_RUN_DIR/$VOL-unit.log" 2>&1 &
	run timeout 120 dd if=/dev/urandom of=/mnt/v/after-auto bs=1M count=4 oflag=direct conv=fsync
	grep -q "reattached to $DEV2" "$QBD_RUN_DIR/$VOL-unit.log" ||
		fail "qbd-nbd --device auto did not reattach to $DEV2: $(tail -n 3 "$QBD_RUN_DIR/$VOL-unit.log")"
	[ "$(pidof qbd-nbd)" != "$pids" ] || fail "no new qbd-nbd"

	step "read it back (caches dropped), umount, e2fsck -fn, detach"
	echo 3 >/proc/sys/vm/drop_caches
	got=$(sha256sum </mnt/v/big | cut -d' ' -f1)
	[ "$got" = "$want" ] || fail "data written across the restart reads back wrong"
	run timeout 120 umount /mnt/v
	run timeout 300 e2fsck -fn "$DEV"
	detach_ok "$DEV" "$VOL"
}

phase_resync() {
	step "resync: attach $VOL --zone b, mount, restart the chunk server of zone a"
	attach_ok "$VOL" b
	run timeout 60 mount -t ext4 "$DEV" /mnt/v
	# the same store and address (its node id is on the store)
	addr=$(sed -n 's/.*listening on \([^ ]*\) zone a .*/\1/p' "$STATE/chunkd-a.log" | tail -n 1)
	[ -n "$addr" ] || fail "no address of chunkd-a in its log"
	qbd-chunkd --data "$STATE/chunk-a.img" --listen "$addr" --zone a --etcd "$QBD_ETCD" \
		>>"$STATE/chunkd-a.log" 2>&1 &
	echo "chunkd-a $!" >>"$STATE/pids"
	run dd if=/dev/urandom of=/mnt/v/d2/after-restart bs=1M count=2 conv=fsync
	step "wait for qbd volume status $VOL to be healthy (resync done)"
	# exit 0 with the writer's own status document: every replica up,
	# nothing stale, resync done (without one, status says unknown and
	# exits 3; the grep is a second guard)
	healthy() {
		qbd volume status "$VOL" >/tmp/status.out 2>&1 &&
			grep -q '^Status: *updated' /tmp/status.out
	}
	wait_until "$VOL healthy after the restart of zone a (last status: see /tmp/status.out)" 300 healthy
	sed 's/^/    /' /tmp/status.out
	sums_of /mnt/v >/root/sums-resync
	run timeout 120 umount /mnt/v
	detach_ok "$DEV" "$VOL"
	step "qbd volume verify $VOL: replicas identical"
	run timeout 300 qbd volume verify "$VOL"
	sed 's/^/    /' /tmp/out | tail -n 5
	if kernel_errors >/tmp/kerr.log; then
		problem "kernel logged errors in the resync phase: $(head -n 3 /tmp/kerr.log | tr '\n' ' ')"
	fi
}

# Grow the volume under a mounted ext4: qbd volume resize returns once
# the writer serves the new size, which the daemon has already handed to
# the kernel (NBD_CMD_RECONFIGURE with NBD_ATTR_SIZE_BYTES); resize2fs
# then grows the filesystem online.
phase_resize() {
	if [ "$ATTACH" != qbd ]; then
		step "resize phase skipped: nbd-client's device does not follow a resize (ATTACH=$ATTACH)"
		return 0
	fi
	step "resize: attach $VOL --zone a, mount, grow the volume to 768M while mounted"
	attach_ok "$VOL" a
	sysfs=/sys/block/${DEV#/dev/}/size
	before=$(($(cat "$sysfs") * 512))
	run timeout 60 mount -t ext4 "$DEV" /mnt/v
	sums_of /mnt/v >/root/sums-resize
	fs_kb() { df -k /mnt/v | awk 'NR == 2 { print $2 }'; }
	fs_before=$(fs_kb)
	dmesg -c >/dev/null
	run timeout 120 qbd volume resize "$VOL" --size 768M
	sed 's/^/    /' /tmp/out
	wait_until "$DEV to show 768 MiB" 10 test "$(cat "$sysfs")" = $((768 * 2048))
	grep -q "now 805306368 bytes" "$QBD_RUN_DIR/$VOL.log" ||
		fail "the daemon did not say it resized $DEV: $(tail -n 3 "$QBD_RUN_DIR/$VOL.log")"
	note "$DEV: $((before / 1048576)) MiB -> $(($(cat "$sysfs") / 2048)) MiB, still mounted"
	if timeout 60 qbd volume resize "$VOL" --size 256M >/tmp/out 2>&1; then
		fail "a shrink of the attached $VOL succeeded"
	fi
	grep -q "cannot shrink while attached" /tmp/out || fail "shrink refusal said: $(cat /tmp/out)"
	# The kernel serves the new region (never written: zeros).
	nz=$(dd if="$DEV" bs=1M skip=700 count=8 iflag=direct 2>/dev/null | tr -d '\000' | wc -c)
	[ "$nz" = 0 ] || fail "the new region of $DEV does not read as zeros ($nz bytes not zero)"

	step "resize2fs $DEV while mounted"
	run timeout 300 resize2fs "$DEV"
	fs_after=$(fs_kb)
	[ "$fs_after" -gt $((fs_before + 200 * 1024)) ] ||
		fail "ext4 did not grow: $fs_before kB before, $fs_after kB after"
	note "ext4: $((fs_before / 1024)) MiB -> $((fs_after / 1024)) MiB ($(dmesg | grep -o 'resiz[a-z]* filesystem to [0-9]*' | tail -n 1))"
	(cd /mnt/v && sha256sum -c /root/sums-resize) >/tmp/verify.out 2>&1 ||
		fail "checksums differ after the resize: $(grep -v ': OK$' /tmp/verify.out | head -n 3 | tr '\n' ' ')"
	run dd if=/dev/urandom of=/mnt/v/after-resize bs=1M count=8 conv=fsync
	step "resize: umount, e2fsck -fn, detach"
	run timeout 120 umount /mnt/v
	run timeout 300 e2fsck -fn "$DEV"
	if kernel_errors >/tmp/kerr.log; then
		problem "kernel logged errors in the resize phase: $(head -n 3 /tmp/kerr.log | tr '\n' ' ')"
	fi
	detach_ok "$DEV" "$VOL"
}

# The CLI and the daemon's kernel side: two connections, the backend id,
# idempotent attach, a busy device, qbd mapped, locked memory and the I/O
# flusher flag, a daemon stalled past the kernel's request timeout (the
# kernel drops its sockets, the daemon hands it new ones and the write goes
# on), detach refused while mounted, detach by name.
phase_cli() {
	if [ "$ATTACH" != qbd ]; then
		step "cli phase skipped: it needs qbd attach (ATTACH=$ATTACH)"
		return 0
	fi
	step "cli: qbd attach $VOL --connections 2 --timeout 3; qbd attach again; a busy device"
	qbd volume info "$VOL" >/dev/null 2>&1 || run qbd volume create "$VOL" --size "$VOL_SIZE"
	run qbd volume create vol2 --size 64M
	D1=$(timeout 120 qbd attach "$VOL" --zone a --connections 2 --timeout 3 2>>/tmp/attach.log) ||
		fail "qbd attach $VOL --connections 2 failed: $(tail -n 5 /tmp/attach.log)"
	run qbd volume info "$VOL" --json
	id=$(grep -o '"id": *"[0-9a-f]*"' /tmp/out | head -n 1 | sed 's/.*"\([0-9a-f]*\)"$/\1/')
	backend=$(cat "/sys/block/${D1#/dev/}/backend")
	[ "$backend" = "qbd:$id:$VOL" ] || fail "$D1 has backend '$backend', want qbd:$id:$VOL"
	again=$(timeout 60 qbd attach "$VOL" 2>/dev/null) || fail "a second qbd attach $VOL failed"
	[ "$again" = "$D1" ] || fail "a second qbd attach $VOL printed '$again', want $D1"
	[ "$(pidof qbd-nbd | wc -w)" = 1 ] || fail "a second qbd attach started another daemon"
	if timeout 60 qbd attach vol2 --device "$D1" >/tmp/out 2>&1; then
		fail "qbd attach vol2 --device $D1 succeeded on a busy device"
	fi
	grep -q "busy" /tmp/out || fail "attach to a busy device did not say so: $(cat /tmp/out)"
	D2=$(timeout 120 qbd attach vol2 --zone b 2>>/tmp/attach.log) || fail "qbd attach vol2 failed"
	[ "$D2" != "$D1" ] || fail "vol2 got $D1 too"
	run qbd mapped --json
	grep -q "\"device\":\"$D1\",\"volume\":\"$VOL\"" /tmp/out &&
		grep -q "\"device\":\"$D2\",\"volume\":\"vol2\"" /tmp/out &&
		[ "$(grep -o '"state":"served"' /tmp/out | wc -l)" = 2 ] ||
		fail "qbd mapped --json: $(cat /tmp/out)"
	note "$VOL on $D1 (2 connections), vol2 on $D2, backend $backend"

	step "cli: the daemon's memory is locked and it is an I/O flusher"
	pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$QBD_RUN_DIR/${D1#/dev/}.json")
	[ -n "$pid" ] && kill -0 "$pid" || fail "no daemon pid in $QBD_RUN_DIR/${D1#/dev/}.json"
	lck=$(awk '/^VmLck:/ { print $2 }' "/proc/$pid/status")
	[ "${lck:-0}" -gt 0 ] || fail "qbd-nbd (pid $pid) has no locked memory (VmLck ${lck:-?} kB)"
	flags=$(awk '{ print $9 }' "/proc/$pid/stat")
	# PF_MEMALLOC_NOIO (0x80000), set by PR_SET_IO_FLUSHER
	[ $((flags & 0x80000)) -ne 0 ] || fail "qbd-nbd (pid $pid) is not an I/O flusher (flags $flags)"
	note "VmLck $lck kB, task flags $flags"

	step "cli: SIGSTOP the daemon past the 3 s request timeout during a write, SIGCONT"
	run dd if=/dev/urandom of=/tmp/c1 bs=1M count=8
	run dd if=/tmp/c1 of="$D1" bs=1M oflag=direct conv=fsync
	dmesg -c >/dev/null
	rm -f /tmp/stall.rc
	kill -STOP "$pid"
	(
		dd if=/tmp/c1 of="$D1" bs=1M seek=8 oflag=direct conv=fsync >/tmp/stall.log 2>&1
		echo $? >/tmp/stall.rc
	) &
	sleep 8
	[ -f /tmp/stall.rc ] && fail "the write finished while the daemon was stopped"
	kill -CONT "$pid"
	wait_until "the stalled write to finish" 180 test -f /tmp/stall.rc
	[ "$(cat /tmp/stall.rc)" = 0 ] || fail "the stalled write failed: $(cat /tmp/stall.log)"
	grep -q "replaced it" "$QBD_RUN_DIR/$VOL.log" ||
		fail "the daemon did not replace a socket the kernel dropped"
	note "$(grep -c 'replaced it' "$QBD_RUN_DIR/$VOL.log") socket(s) replaced; kernel: $(dmesg | grep -c 'timed out') timeout line(s)"
	echo 3 >/proc/sys/vm/drop_caches
	got=$(dd if="$D1" bs=1M count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
	want=$(cat /tmp/c1 /tmp/c1 | sha256sum | cut -d' ' -f1)
	[ "$got" = "$want" ] || fail "data written across the stall reads back wrong"
	if kernel_errors >/tmp/kerr.log; then
		problem "kernel logged errors across the stall: $(head -n 3 /tmp/kerr.log | tr '\n' ' ')"
	fi

	step "cli: detach refused while mounted; detach by name and by device"
	run timeout 120 mkfs.ext4 -q -F "$D2"
	mkdir -p /mnt/v
	run timeout 60 mount -t ext4 "$D2" /mnt/v
	if timeout 60 qbd detach vol2 >/tmp/out 2>&1; then
		fail "qbd detach vol2 succeeded while mounted"
	fi
	grep -q "mounted on /mnt/v" /tmp/out || fail "detach of a mounted device said: $(cat /tmp/out)"
	run timeout 60 umount /mnt/v
	timeout 120 qbd detach vol2 >/tmp/detach.out 2>&1 || fail "qbd detach vol2 failed: $(cat /tmp/detach.out)"
	wait_until "$D2 to have size 0 after detach" 10 test "$(cat "/sys/block/${D2#/dev/}/size")" = 0
	detach_ok "$D1" "$VOL"
	run qbd mapped --json
	[ "$(cat /tmp/out)" = "[]" ] || fail "qbd mapped after detach: $(cat /tmp/out)"
	[ -z "$(pidof qbd-nbd)" ] || fail "a qbd-nbd is left after detach: $(pidof qbd-nbd)"
}

phase_csi() {
	if [ "$ATTACH" != qbd ]; then
		step "csi phase skipped: it needs qbd attach (ATTACH=$ATTACH)"
		return 0
	fi
	command -v qbd-csi >/dev/null 2>&1 && [ -x /usr/bin/python3 ] ||
		fail "the csi phase needs qbd-csi and python3 in the initramfs (tests/kernel/run)"
	mkdir -p /var/lib
	/usr/bin/python3 /qbd/tests/kernel/csi_phase.py csivol || {
		for f in /tmp/csi-a.log /tmp/csi-b.log /run/qbd-a/csivol.log /run/qbd-b/csivol.log; do
			[ -f "$f" ] && { echo "---- tail of $f"; tail -n 30 "$f"; }
		done
		fail "$(cat /tmp/fail-reason 2>/dev/null || echo "csi_phase.py failed")"
	}
}

T_START=$(uptime_s)
setup_cluster
for p in $PHASES; do
	case $p in
	attach) phase_attach ;;
	reattach) phase_reattach ;;
	resync) phase_resync ;;
	resize) phase_resize ;;
	cli) phase_cli ;;
	csi) phase_csi ;;
	*) fail "unknown phase '$p'" ;;
	esac
done
step "qbd dev down"
run timeout 60 qbd dev down --state "$STATE"
if [ -s /tmp/problems ]; then
	echo "$(wc -l </tmp/problems) problem(s): $(head -n 1 /tmp/problems)" >/tmp/fail-reason
	dump
	exit 1
fi
step "scenario done in $(awk -v a="$T_START" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }') s (attach mode: $ATTACH)"
exit 0
