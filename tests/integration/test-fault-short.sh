#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The fault suite's short version (tests/fault/fault.py --short): zones as
# network namespaces, each scenario of the fault issue once with a short
# load: a zone lost for good, a zone cut off and back, the writer's zone
# cut off and a takeover, the writer paused and a takeover, a rolling
# restart, a flapping zone, a failing disk. No acknowledged write may be
# lost. make check-fault runs every scenario with three seeds.
. "$(dirname "$0")/lib.sh"
init_test "$@"
top=$(cd "$(dirname "$0")/../.." && pwd)
# In the background and tracked: stopped by PID (SIGTERM: the suite then
# removes its namespaces) if this test is stopped.
/usr/bin/python3 "$top/tests/fault/fault.py" --short --results "$TMP/results" "$BUILD" &
pid=$!
track_pid $pid "fault suite"
reap_pid $pid
rc=$REAP_STATUS
[ $rc -eq 77 ] && skip "the fault suite cannot run here (see above)"
if [ $rc -ne 0 ]; then
	for f in "$TMP"/results/*/*.log; do
		echo "---- tail of $f" >&2
		tail -n 15 "$f" >&2
	done
	fail "fault suite: exit $rc"
fi
