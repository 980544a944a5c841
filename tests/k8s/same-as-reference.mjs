// SPDX-License-Identifier: Apache-2.0
// qbd-operator's objects against deploy/kubernetes/reference/: every object
// of the reference must be among the rendered ones (same kind and name) and
// equal to it, once what only the operator adds is taken off (the labels
// app.kubernetes.io/managed-by, qbd.io/cluster and qbd.io/namespace, the
// owner references, the annotations qbd.io/spec-hash and, on a pod
// template, qbd.io/template-hash). Key order does not
// matter; array order does.
//
//   node tests/k8s/same-as-reference.mjs --modules DIR REFERENCE_DIR RENDERED.yaml
// Exit 0 all equal, 1 otherwise (each difference printed with its path).
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const [, , flag, modules, refDir, rendered] = process.argv;
if (flag !== "--modules" || !rendered) {
	console.error("usage: same-as-reference.mjs --modules DIR REFERENCE_DIR RENDERED.yaml");
	process.exit(2);
}
const require = createRequire(path.join(path.resolve(modules), "package.json"));
const YAML = require("yaml");

// YAML 1.1, as kubectl reads manifests (sigs.k8s.io/yaml): 0400 is octal.
const docs = (file) => YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { version: "1.1" })
	.map((d) => d.toJS()).filter((o) => o);
const key = (o) => `${o.kind} ${o.metadata.name}`;

function strip(o) {
	const m = o.metadata;
	for (const l of ["app.kubernetes.io/managed-by", "qbd.io/cluster", "qbd.io/namespace"]) delete (m.labels || {})[l];
	delete m.ownerReferences;
	const t = o.spec && o.spec.template && o.spec.template.metadata;
	if (t && t.annotations) {
		delete t.annotations["qbd.io/template-hash"];
		if (!Object.keys(t.annotations).length) delete t.annotations;
	}
	if (m.annotations) {
		delete m.annotations["qbd.io/spec-hash"];
		if (!Object.keys(m.annotations).length) delete m.annotations;
	}
	return o;
}

function diff(a, b, p, out) {
	if (Array.isArray(a) || Array.isArray(b)) {
		if (!Array.isArray(a) || !Array.isArray(b)) return out.push(`${p}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`);
		if (a.length !== b.length) out.push(`${p}: ${a.length} items != ${b.length}`);
		for (let i = 0; i < Math.min(a.length, b.length); i++) diff(a[i], b[i], `${p}/${i}`, out);
		return;
	}
	if (a && b && typeof a === "object" && typeof b === "object") {
		for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
			if (!(k in a)) out.push(`${p}/${k}: only in the rendered object`);
			else if (!(k in b)) out.push(`${p}/${k}: only in the reference`);
			else diff(a[k], b[k], `${p}/${k}`, out);
		}
		return;
	}
	if (a !== b) out.push(`${p}: reference ${JSON.stringify(a)}, rendered ${JSON.stringify(b)}`);
}

const got = new Map(docs(rendered).map((o) => [key(o), strip(o)]));
let bad = 0, n = 0;
for (const f of fs.readdirSync(refDir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
	for (const ref of docs(path.join(refDir, f))) {
		n++;
		const r = got.get(key(ref));
		if (!r) {
			console.log(`${f}: ${key(ref)}: not rendered`);
			bad++;
			continue;
		}
		const out = [];
		diff(ref, r, "", out);
		if (out.length) {
			bad++;
			for (const d of out) console.log(`${f}: ${key(ref)}: ${d}`);
		}
	}
}
console.log(`same-as-reference: ${n} reference objects, ${bad} different`);
process.exit(bad ? 1 : 0);
