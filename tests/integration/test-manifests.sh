#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The Kubernetes manifests (deploy/kubernetes/) validated offline: every
# document of every file against the Kubernetes API schemas of the npm
# package kubernetes-models, unknown fields refused, and the QbdCluster
# objects against the CRD's own schema (tests/k8s/validate.mjs); the
# objects qbd-operator --render makes of the example QbdClusters too. Then the
# negative examples (tests/k8s/bad/) must each be refused, with the error
# their "# expect:" line names, so the check is seen to bite every run.
# The npm packages (tests/k8s/package-lock.json) are installed once into
# BUILD/k8s-validate; later runs are offline. Exit 0 pass, 1 fail, 77 skip
# (no node or npm, or a node older than 18).
. "$(dirname "$0")/lib.sh"
command -v node >/dev/null 2>&1 || skip "no node (tools/install-deps installs nodejs)"
command -v npm >/dev/null 2>&1 || skip "no npm (tools/install-deps installs npm)"
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] || skip "node $(node --version) is older than 18"
init_test "$@"

top=$(cd "$(dirname "$0")/../.." && pwd)
mods="$BUILD/k8s-validate"
# Install when missing or when the committed lock changed since.
if [ ! -d "$mods/node_modules" ] || ! cmp -s "$top/tests/k8s/package-lock.json" "$mods/package-lock.json"; then
	log "installing the validator's npm packages into $mods"
	rm -rf "$mods"
	mkdir -p "$mods"
	cp "$top/tests/k8s/package.json" "$top/tests/k8s/package-lock.json" "$mods/"
	(cd "$mods" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) >"$TMP/npm.log" 2>&1 ||
		{ cat "$TMP/npm.log" >&2; rm -rf "$mods"; fail "npm ci in $mods failed"; }
fi
log "kubernetes-models $(node -p "require('$mods/node_modules/kubernetes-models/package.json').version"), node $(node --version)"

node "$top/tests/k8s/validate.mjs" --modules "$mods" "$top/deploy/kubernetes" >"$TMP/good" 2>&1 ||
	{ cat "$TMP/good" >&2; fail "deploy/kubernetes/ does not validate"; }
cat "$TMP/good" >&2
# Every file was read: as many as find lists.
want=$(find "$top/deploy/kubernetes" -name '*.yaml' -o -name '*.yml' | wc -l)
grep -q "^validate: $want files, " "$TMP/good" || fail "the validator did not read all $want files: $(tail -1 "$TMP/good")"

# What qbd-operator renders: each QbdCluster of the examples, with the
# nodes of tests/k8s/nodes.json (storage nodes in three zones, one with
# stores of its own and not labelled, workers), through
# `qbd-operator --render --status`: the objects it would create, then the
# QbdCluster with the status it would write (checked against the CRD's
# status schema), validated the same way.
node -e '
const YAML = require(process.argv[1] + "/node_modules/yaml");
const fs = require("fs");
let n = 0;
for (const d of YAML.parseAllDocuments(fs.readFileSync(process.argv[2], "utf8"))) {
	const o = d.toJS();
	if (o && o.kind === "QbdCluster") fs.writeFileSync(`${process.argv[3]}/cluster-${n++}.json`, JSON.stringify(o));
}' "$mods" "$top/deploy/kubernetes/examples/qbdcluster.yaml" "$TMP" || fail "cannot read the example QbdClusters"
nrender=0
for c in "$TMP"/cluster-*.json; do
	[ -f "$c" ] || fail "no QbdCluster in examples/qbdcluster.yaml"
	nrender=$((nrender + 1))
	"$BUILD/qbd-operator" --render "$c" --nodes "$top/tests/k8s/nodes.json" --status \
		>"$TMP/rendered-$nrender.yaml" 2>"$TMP/render.err" ||
		{ cat "$TMP/render.err" >&2; fail "qbd-operator --render $(basename "$c") failed"; }
done
node "$top/tests/k8s/validate.mjs" --modules "$mods" --crd "$top/deploy/kubernetes/crd-qbdcluster.yaml" \
	"$TMP"/rendered-*.yaml >"$TMP/rendered" 2>&1 ||
	{ cat "$TMP/rendered" >&2; fail "the objects qbd-operator renders do not validate"; }
cat "$TMP/rendered" >&2
grep -q "^validate: $nrender files, " "$TMP/rendered" || fail "the validator did not read the $nrender rendered files"
# every kind of the reference is among them
for k in ConfigMap Service StatefulSet DaemonSet Deployment CSIDriver StorageClass QbdCluster; do
	grep -q "\"kind\":\"$k\"" "$TMP"/rendered-*.yaml || fail "qbd-operator rendered no $k"
done
# And the reference is what it renders: tests/k8s/reference-cluster.json
# is the QbdCluster that reference/ was written for; each reference object
# must equal the rendered one but for the operator's labels, owner
# references and hash (tests/k8s/same-as-reference.mjs).
"$BUILD/qbd-operator" --render "$top/tests/k8s/reference-cluster.json" --nodes "$top/tests/k8s/nodes.json" \
	>"$TMP/reference.yaml" 2>"$TMP/render.err" || { cat "$TMP/render.err" >&2; fail "qbd-operator --render of reference-cluster.json failed"; }
node "$top/tests/k8s/same-as-reference.mjs" --modules "$mods" "$top/deploy/kubernetes/reference" \
	"$TMP/reference.yaml" >"$TMP/same" 2>&1 || { cat "$TMP/same" >&2; fail "qbd-operator does not render what reference/ shows"; }
cat "$TMP/same" >&2

node "$top/tests/k8s/validate.mjs" --modules "$mods" --crd "$top/deploy/kubernetes/crd-qbdcluster.yaml" \
	--expect-fail "$top/tests/k8s/bad" >"$TMP/bad" 2>&1 ||
	{ cat "$TMP/bad" >&2; fail "a negative example was not refused as expected"; }
cat "$TMP/bad" >&2
nbad=$(ls "$top/tests/k8s/bad"/*.yaml | wc -l)
[ "$(grep -c ': refused as expected: ' "$TMP/bad")" -eq "$nbad" ] ||
	fail "not all $nbad negative examples were refused"
log "PASS"
