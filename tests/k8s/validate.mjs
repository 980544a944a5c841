// SPDX-License-Identifier: Apache-2.0
// Offline validation of Kubernetes manifests (deploy/kubernetes/).
//
//   node tests/k8s/validate.mjs --modules DIR [--crd FILE]... [--expect-fail] PATH...
//
// Every .yaml/.yml file under each PATH is parsed (all its documents), and
// each object is validated:
//  - built-in kinds against the Kubernetes API schemas that the npm package
//    kubernetes-models carries (its classes' validate()), plus a check for
//    fields the schema does not know (the API server rejects those under
//    kubectl's strict field validation; the schemas alone let them pass);
//  - kinds of a CustomResourceDefinition found among the files (or given
//    with --crd) against that CRD's openAPIV3Schema, with ajv, unknown
//    fields refused as the API server's pruning would drop them.
// DIR is the directory holding node_modules (tests/k8s/package.json's).
// A failure names the file, the document index (0-based) and the error.
// With --expect-fail every file must fail, and with the text of its
// "# expect: TEXT" line in the message: the negative examples.
// Exit 0 all as expected, 1 otherwise, 2 usage.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const args = process.argv.slice(2);
let modules = null;
let expectFail = false;
const crdFiles = [];
const roots = [];
for (let i = 0; i < args.length; i++) {
	if (args[i] === "--modules") modules = args[++i];
	else if (args[i] === "--crd") crdFiles.push(args[++i]);
	else if (args[i] === "--expect-fail") expectFail = true;
	else roots.push(args[i]);
}
if (!modules || roots.length === 0) {
	console.error("usage: validate.mjs --modules DIR [--crd FILE]... [--expect-fail] PATH...");
	process.exit(2);
}
const require = createRequire(path.join(path.resolve(modules), "package.json"));
const YAML = require("yaml");
const Ajv = require("ajv");

function yamlFiles(p) {
	const st = fs.statSync(p);
	if (st.isFile()) return [p];
	return fs.readdirSync(p).sort().flatMap((n) => {
		const q = path.join(p, n);
		if (fs.statSync(q).isDirectory()) return yamlFiles(q);
		return /\.ya?ml$/.test(n) ? [q] : [];
	});
}

// The documents of one file: [{index, obj}] or a thrown parse error.
function documents(file) {
	const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
	const out = [];
	docs.forEach((d, index) => {
		if (d.errors.length) throw new Error(`document ${index}: YAML: ${d.errors[0].message.split("\n")[0]}`);
		const obj = d.toJS();
		if (obj !== null && obj !== undefined) out.push({ index, obj });
	});
	return out;
}

// ---- built-in kinds: kubernetes-models ----

// "apps/v1" -> kubernetes-models/apps/v1, "v1" -> kubernetes-models/v1
function modelClass(apiVersion, kind) {
	let mod;
	try {
		mod = require(`kubernetes-models/${apiVersion}`);
	} catch {
		return null;
	}
	return typeof mod[kind] === "function" ? mod[kind] : null;
}

function modelErrors(Cls, obj) {
	try {
		new Cls(obj).validate();
		return [];
	} catch (e) {
		if (!e.errors) throw e;
		return e.errors;
	}
}

function fmt(errs) {
	return errs.map((e) => `${e.instancePath || "/"} ${e.message}${e.params && e.params.additionalProperty ? ` "${e.params.additionalProperty}"` : ""}`).join("; ");
}

const PROBE = Symbol("probe"); // a value no schema accepts
// Fields the compiled schemas lost: every field named "description" (a
// string wherever the API has one) is missing from them.
const LOST = new Set(["description"]);
// A CRD's openAPIV3Schema is a JSON schema, which the API's own schema
// leaves largely open; it is checked by compiling it (crdSchema below).
const skipPath = (ptr) => /^\/spec\/versions\/\d+\/schema$/.test(ptr);

// The schemas carry no field lists at run time (they are compiled to
// code), so a field is known when a value no schema accepts, put in its
// place, makes the validator complain at its path. An object is a map
// (labels, parameters) when a made-up key with such a value is complained
// about too: its keys are then data, not fields.
function unknownFields(Cls, root) {
	const found = [];
	const complainsAt = (ptr) => modelErrors(Cls, root).some((e) => e.instancePath === ptr || e.instancePath.startsWith(ptr + "/"));
	const walk = (node, ptr) => {
		if (Array.isArray(node)) {
			node.forEach((v, i) => walk(v, `${ptr}/${i}`));
			return;
		}
		if (node === null || typeof node !== "object" || skipPath(ptr)) return;
		const probeKey = "qbdProbeNoSuchField";
		node[probeKey] = PROBE;
		const isMap = complainsAt(`${ptr}/${probeKey}`);
		delete node[probeKey];
		for (const k of Object.keys(node)) {
			if (LOST.has(k) || (ptr === "" && (k === "apiVersion" || k === "kind"))) continue;
			const p = `${ptr}/${k}`;
			if (!isMap) {
				const v = node[k];
				node[k] = PROBE;
				const known = complainsAt(p);
				node[k] = v;
				if (!known) {
					found.push({ instancePath: ptr || "/", message: `unknown field "${k}"` });
					continue;
				}
			}
			walk(node[k], p);
		}
	};
	walk(root, "");
	return found;
}

// ---- custom resources: the CRD's own schema ----

// The API server drops fields a structural schema does not name (unless
// x-kubernetes-preserve-unknown-fields); here they are errors.
function closeSchema(s) {
	if (Array.isArray(s)) return s.map(closeSchema);
	if (s === null || typeof s !== "object") return s;
	const out = {};
	for (const [k, v] of Object.entries(s)) {
		out[k] = k === "default" || k === "example" || k === "enum" ? v : closeSchema(v);
	}
	if (s.properties && s.additionalProperties === undefined && !s["x-kubernetes-preserve-unknown-fields"]) {
		out.additionalProperties = false;
	}
	return out;
}

// Strict: a keyword ajv does not know (a typo in the CRD's schema) is an
// error; the Kubernetes extensions are known and mean nothing here.
const ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false, strictRequired: false, strictTuples: false });
for (const k of ["x-kubernetes-validations", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type",
	"x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-embedded-resource"]) ajv.addKeyword(k);
ajv.addFormat("int32", { type: "number", validate: (n) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
ajv.addFormat("int64", { type: "number", validate: Number.isInteger });
ajv.addFormat("date-time", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
const crds = new Map(); // "group/version Kind" -> compiled validator
const crdErrors = [];

function addCrd(obj) {
	const { group, names, versions } = obj.spec || {};
	for (const v of versions || []) {
		const schema = v.schema && v.schema.openAPIV3Schema;
		if (!schema) continue;
		const closed = closeSchema(schema);
		// apiVersion, kind and metadata are the API server's
		closed.properties = { ...closed.properties, apiVersion: { type: "string" }, kind: { type: "string" }, metadata: { type: "object" } };
		try {
			crds.set(`${group}/${v.name} ${names.kind}`, ajv.compile(closed));
		} catch (e) {
			crdErrors.push(`${names.kind} ${v.name}: its openAPIV3Schema: ${e.message}`);
		}
	}
}

// ---- one object ----

function check(obj) {
	if (typeof obj !== "object" || Array.isArray(obj)) return "not an object";
	const { apiVersion, kind } = obj;
	if (typeof apiVersion !== "string" || typeof kind !== "string") return "no apiVersion or kind";
	if (!obj.metadata || typeof obj.metadata.name !== "string" || obj.metadata.name === "") return `${kind}: no metadata.name`;
	const crd = crds.get(`${apiVersion} ${kind}`);
	if (crd) {
		if (!crd(obj)) return `${apiVersion} ${kind} (schema of its CRD): ${fmt(crd.errors)}`;
		return null;
	}
	const Cls = modelClass(apiVersion, kind);
	if (!Cls) return `${apiVersion} ${kind}: no such kind in the API schemas nor among the CRDs`;
	let errs = modelErrors(Cls, obj);
	if (errs.length) return `${apiVersion} ${kind}: ${fmt(errs)}`;
	errs = unknownFields(Cls, structuredClone(obj));
	if (errs.length) return `${apiVersion} ${kind}: ${fmt(errs)}`;
	return null;
}

// ---- main ----

const files = roots.flatMap(yamlFiles);
const parsed = new Map();
let bad = 0;
const schemaFailures = []; // [file, message]: CRDs whose schema does not compile
for (const f of [...crdFiles, ...files]) {
	try {
		parsed.set(f, documents(f));
	} catch (e) {
		parsed.set(f, e);
	}
}
for (const f of [...crdFiles, ...files]) {
	const docs = parsed.get(f);
	if (docs instanceof Error) continue;
	for (const { index, obj } of docs) {
		if (!obj || obj.kind !== "CustomResourceDefinition" || obj.apiVersion !== "apiextensions.k8s.io/v1") continue;
		crdErrors.length = 0;
		addCrd(obj);
		for (const m of crdErrors) schemaFailures.push([f, `document ${index}: ${m}`]);
	}
}

let objects = 0;
for (const f of files) {
	const docs = parsed.get(f);
	const failures = [];
	if (docs instanceof Error) failures.push(docs.message);
	else {
		for (const { index, obj } of docs) {
			objects++;
			const err = check(obj);
			if (err) failures.push(`document ${index}: ${err}`);
		}
	}
	for (const [g, m] of schemaFailures) if (g === f) failures.push(m);
	if (!expectFail) {
		for (const m of failures) console.log(`${f}: ${m}`);
		if (failures.length) bad++;
		continue;
	}
	const want = (fs.readFileSync(f, "utf8").match(/^# expect: (.*)$/m) || [])[1];
	if (!want) {
		console.log(`${f}: no "# expect: TEXT" line`);
		bad++;
	} else if (!failures.length) {
		console.log(`${f}: validated, but was expected to fail with "${want}"`);
		bad++;
	} else if (!failures.some((m) => m.includes(want))) {
		console.log(`${f}: failed, but without "${want}": ${failures.join(" | ")}`);
		bad++;
	} else {
		console.log(`${f}: refused as expected: ${failures.join(" | ")}`);
	}
}
console.log(`validate: ${files.length} files, ${objects} objects, ${bad} ${expectFail ? "not refused as expected" : "with errors"}`);
process.exit(bad ? 1 : 0);
