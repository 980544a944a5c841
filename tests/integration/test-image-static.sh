#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# deploy/image/ cannot drift from the tree, checked without a container
# engine or network (make check-image proves the runtime list enough by
# installing it):
#   - each stage of the Dockerfile installs packages only through
#     apt-install, from its own list (build-packages.txt for the build
#     stage, runtime-packages.txt for the runtime stage);
#   - every build package is one tools/install-deps installs;
#   - the runtime stage copies, from make install's /out/usr/bin, exactly
#     the programs the Makefile installs (PROGS);
#   - every library those programs link (NEEDED, in BUILD) belongs to a
#     package of runtime-packages.txt (or to libc6/libgcc-s1, in every
#     Debian root);
#   - every source file that runs a program (exec*, csi_run, popen,
#     system) is named in runtime-tools.txt.
. "$(dirname "$0")/lib.sh"
init_test "$@"
top=$(cd "$(dirname "$0")/../.." && pwd)
img="$top/deploy/image"
df="$img/Dockerfile"
[ -f "$df" ] || fail "no deploy/image/Dockerfile"
list() { sed -e 's/#.*//' "$1" | tr -s ' \t\n' '\n' | grep . | sort; }

# The Dockerfile's instructions, continuation lines joined, each prefixed
# with its stage's number (1 = the first FROM).
awk '{ if (sub(/\\$/, "")) { buf = buf $0 " "; next } print buf $0; buf = "" }' "$df" |
	grep -v '^[[:space:]]*#' | grep . |
	awk '$1 == "FROM" { n++ } { print n, $0 }' >"$TMP/instr"
nstage=$(awk '$2 == "FROM"' "$TMP/instr" | wc -l)
[ "$nstage" -eq 2 ] || fail "Dockerfile has $nstage stages, want 2 (build, runtime)"
awk '$1 == 1 && $2 == "FROM"' "$TMP/instr" | grep -q ' AS build$' || fail "first stage is not 'AS build'"

# Packages: only through apt-install, each stage from its list.
if awk '$2 == "RUN"' "$TMP/instr" | grep -E -q '(apt-get|apt |aptitude|dpkg )'; then
	fail "a RUN installs packages other than through apt-install: $(awk '$2 == "RUN"' "$TMP/instr" | grep -E '(apt-get|apt |aptitude|dpkg )')"
fi
stage_list() { # stage file: the stage copies the list and apt-install, and runs them
	awk -v s="$1" '$1 == s && $2 == "COPY"' "$TMP/instr" | grep -q "deploy/image/apt-install .*deploy/image/$2" ||
		fail "stage $1 does not COPY deploy/image/apt-install and deploy/image/$2"
	awk -v s="$1" '$1 == s && $2 == "RUN"' "$TMP/instr" | grep -q "apt-install /tmp/image/$2" ||
		fail "stage $1 does not RUN apt-install /tmp/image/$2"
	n=$(awk -v s="$1" '$1 == s && $2 == "RUN"' "$TMP/instr" | grep -o 'apt-install [^ ]*' | wc -l)
	[ "$n" -eq 1 ] || fail "stage $1 runs apt-install $n times, want once"
}
stage_list 1 build-packages.txt
stage_list 2 runtime-packages.txt
grep -q 'apt-get install -y --no-install-recommends \$pkgs' "$img/apt-install" ||
	fail "apt-install does not install \$pkgs, the list"

# The build packages are tools/install-deps' own.
sed -n '/^pkgs="/,/"$/p' "$top/tools/install-deps" | sed -e 's/^pkgs="//' -e 's/"$//' |
	tr -s ' \t\n' '\n' | grep . | sort -u >"$TMP/deps"
[ -s "$TMP/deps" ] || fail "cannot read tools/install-deps' pkgs"
list "$img/build-packages.txt" >"$TMP/build"
extra=$(comm -23 "$TMP/build" "$TMP/deps" | tr '\n' ' ')
[ -z "$extra" ] || fail "build-packages.txt names packages tools/install-deps does not install: $extra"

# The programs: the runtime stage's COPY --from=build of /out/usr/bin
# against the Makefile's PROGS.
printf 'print-progs:\n\t@echo $(notdir $(PROGS))\n' |
	make -s --no-print-directory -C "$top" -f Makefile -f - BUILD="$TMP/none" print-progs |
	tr ' ' '\n' | grep . | sort >"$TMP/progs"
[ -s "$TMP/progs" ] || fail "cannot read the Makefile's PROGS"
grep -q 'install -m 0755 $(PROGS) $(DESTDIR)$(BINDIR)/' "$top/Makefile" ||
	fail "make install no longer installs \$(PROGS) in \$(BINDIR)"
awk '$1 == 2 && $2 == "COPY" && $3 == "--from=build"' "$TMP/instr" |
	awk '{ for (i = 4; i < NF; i++) print $i; print "DST", $NF }' >"$TMP/copies"
grep '^/out/usr/bin/' "$TMP/copies" | sed 's|^/out/usr/bin/||' | sort >"$TMP/copied"
[ "$(grep -c '^/out/usr/bin/' "$TMP/copies")" -eq 0 ] ||
	awk '$1 == 2 && $2 == "COPY" && $3 == "--from=build"' "$TMP/instr" | grep '/out/usr/bin/' |
	awk '$NF != "/usr/bin/" { exit 1 }' || fail "the runtime stage copies programs elsewhere than /usr/bin/"
missing=$(comm -23 "$TMP/progs" "$TMP/copied" | tr '\n' ' ')
[ -z "$missing" ] || fail "the Dockerfile does not copy programs make install installs: $missing"
extra=$(comm -13 "$TMP/progs" "$TMP/copied" | tr '\n' ' ')
[ -z "$extra" ] || fail "the Dockerfile copies programs the Makefile does not install: $extra"

# Their libraries: each soname's package, as dpkg knows it on this machine.
if command -v dpkg >/dev/null && command -v readelf >/dev/null; then
	list "$img/runtime-packages.txt" >"$TMP/runtime"
	printf 'libc6\nlibgcc-s1\n' >>"$TMP/runtime"
	# and what apt installs with them: a library the linker named
	# directly (a build without --as-needed, e.g. the sanitizer one,
	# names libgrpc's own libre2) is in the image if a listed package
	# depends on its package
	if command -v apt-cache >/dev/null; then
		# shellcheck disable=SC2046
		apt-cache depends --recurse --installed --no-recommends --no-suggests \
			--no-conflicts --no-breaks --no-replaces --no-enhances \
			$(list "$img/runtime-packages.txt") 2>/dev/null |
			grep -v -e '^ ' -e '^<' | sed 's/:.*//' >>"$TMP/runtime"
		sort -u -o "$TMP/runtime" "$TMP/runtime"
	fi
	ma=$(cc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
	for p in $(cat "$TMP/progs"); do
		readelf -d "$BUILD/$p" | sed -n "s/.*(NEEDED).*\[\(.*\)\]/$p \1/p"
	done | grep -v -E ' lib(a|ub|l|t)san\.' >"$TMP/needed"
	# One dpkg -S for every soname (each call reads every file list);
	# the patterns are dpkg's, not the shell's (set -f).
	set -f
	# shellcheck disable=SC2046
	dpkg -S $(awk -v ma="$ma" '{ print "*/" ma "/" $2 }' "$TMP/needed" | sort -u) 2>/dev/null |
		sed -n 's|^\([^:]*\):[^ ]* .*/\([^/]*\)$|\2 \1|p' >"$TMP/owners" || true
	set +f
	nlib=0
	while read -r p so; do
		nlib=$((nlib + 1))
		pkg=$(awk -v so="$so" '$1 == so { print $2; exit }' "$TMP/owners")
		[ -n "$pkg" ] || fail "$p links $so, which no installed package holds"
		grep -qx "$pkg" "$TMP/runtime" ||
			fail "$p links $so of package $pkg, neither in deploy/image/runtime-packages.txt nor a dependency of a package there"
	done <"$TMP/needed"
	log "$nlib libraries of $(wc -l <"$TMP/progs") programs in runtime-packages.txt"
else
	log "no dpkg or readelf: libraries not checked"
fi

# The programs qbd runs: every source file that runs one is in runtime-tools.txt.
(cd "$top" && find common engine replicator nbd-frontend tools csi operator -name '*.c' -exec \
	grep -l -E '(\<exec(l|lp|le|v|vp|vpe|ve)|\<csi_run|\<posix_spawnp?|\<popen|\<system)[[:space:]]*\(' {} +) |
	sort >"$TMP/runners"
[ -s "$TMP/runners" ] || fail "found no source file that runs a program (the search is broken)"
sed -e 's/#.*//' "$img/runtime-tools.txt" | awk 'NF > 1 { for (i = 2; i <= NF; i++) print $i }' |
	sort -u >"$TMP/named"
for f in $(cat "$TMP/named"); do
	[ -f "$top/$f" ] || fail "runtime-tools.txt names $f, which does not exist"
done
unnamed=$(sort "$TMP/runners" | comm -23 - "$TMP/named" | tr '\n' ' ')
[ -z "$unnamed" ] || fail "these run programs, and runtime-tools.txt does not say which: $unnamed"
log "PASS"
