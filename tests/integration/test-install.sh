#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# make install into a DESTDIR puts the programs, libqbd and its header in
# place, the installed programs run, and a program using only the public
# header links against the installed libqbd.so and exports nothing else.
. "$(dirname "$0")/lib.sh"
init_test "$@"
top=$(cd "$(dirname "$0")/../.." && pwd)
stage="$TMP/stage"

make -s -C "$top" BUILD="$BUILD" PREFIX=/usr DESTDIR="$stage" install >"$TMP/install.log" 2>&1 ||
	{ cat "$TMP/install.log" >&2; fail "make install failed"; }
for f in usr/bin/qbd usr/bin/qbd-chunkd usr/bin/qbd-nbd usr/bin/qbd-managerd usr/bin/qbd-csi \
	usr/bin/qbd-operator usr/lib/libqbd.a \
	usr/lib/libqbd.so.0 usr/lib/libqbd.so usr/include/qbd.h; do
	[ -e "$stage/$f" ] || fail "make install did not install $f"
done
# The units, with the staged programs' final paths (test-service.sh runs
# systemd-analyze verify on them).
for u in qbd-chunkd@.service qbd-nbd@.service qbd-managerd.service; do
	grep -q '^ExecStart=/usr/bin/qbd-' "$stage/usr/lib/systemd/system/$u" ||
		fail "make install did not install $u for /usr/bin"
done
[ -f "$stage/etc/qbd/qbd.conf.example" ] || fail "make install did not install qbd.conf.example"
for p in qbd qbd-chunkd qbd-nbd qbd-managerd qbd-csi qbd-operator; do
	"$stage/usr/bin/$p" --help >/dev/null 2>&1 || fail "installed $p --help failed"
done

# Only the public API is exported.
extra=$(nm -D --defined-only "$stage/usr/lib/libqbd.so.0" | awk '$2 ~ /[TDB]/ {print $3}' | sed 's/@.*//' |
	grep -v '^qbd_\(open\|close\|size\|chunk_size\|volume_id\|epoch\|replica_count\|write_quorum\|replica_status\|replica_counters\|change_progress\|resync_rate\|get_fd\|process\|plug\|unplug\|in_flight\|submit\|pread\|pwrite\|flush\|trim\|write_zeroes\|block_status\)$' || true)
[ -z "$extra" ] || fail "libqbd.so exports more than its API: $extra"

cat >"$TMP/use.c" <<'C'
#include <qbd.h>
#include <stdio.h>
int main(void)
{
	struct qbd_open_opts o = { .etcd = "http://127.0.0.1:1", .volume = "none", .timeout_ms = 500 };
	struct qbd_volume *v = NULL;
	int r = qbd_open(&o, &v);
	printf("%d\n", r);
	return r < 0 ? 0 : 1;
}
C
cc -I"$stage/usr/include" -o "$TMP/use" "$TMP/use.c" -L"$stage/usr/lib" -lqbd ||
	fail "cannot build against the installed libqbd"
out=$(LD_LIBRARY_PATH="$stage/usr/lib" ASAN_OPTIONS=verify_asan_link_order=0 "$TMP/use" 2>/dev/null) ||
	fail "program linked with libqbd: qbd_open against no etcd did not fail cleanly"
[ "$out" -lt 0 ] || fail "qbd_open returned $out without etcd"
log "PASS"
