/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd cluster metadata in etcd, through etcd's v3 JSON gateway (libcurl +
 * json-c). All calls block (HTTP round trips): call them at start-up, from
 * the CLI, or from a thread that is not an event loop.
 *
 * Keys (values are JSON unless noted):
 *   /qbd/cluster                 {"id":"<hex16>"}       created once
 *   /qbd/nodes/<node hex16>      {"id","addr","zone","capacity","used","chunk_size",
 *                                 "held","slots","free_slots","seq","updated",
 *                                 "scrub":{...},"io":{...},"orphaned":{...}}
 *                                (struct qbd_node_info)
 *   /qbd/alive/<node hex16>      "1", under the node's lease (node is up)
 *   /qbd/volumes/<name>          {"name","id","size","chunk_size","replicas":n,
 *                                 "write_quorum":w,"nodes":["<hex16>",...],
 *                                 "cfg":N, "change":{...} while one stands}
 *                                (struct qbd_volume_info)
 *   /qbd/volume-ids/<id hex16>   "<name>"  (reverse index, unique ids)
 *   /qbd/epochs/<id hex16>       "<decimal epoch>"
 *   /qbd/attachments/<id hex16>  {"volume","volume_id","epoch","host","zone",
 *                                 "pid","since"}, under the writer's lease
 *   /qbd/status/<id hex16>       writer's status document (opaque), under
 *                                 the writer's lease
 *   /qbd/clean/<id hex16>        "<decimal epoch>": the last writer that
 *                                 detached cleanly
 *   /qbd/changes/<id hex16>      {"kind":"replace","from","to","reason",
 *                                 "created"}: a change asked of the volume
 *                                 (struct qbd_change_request)
 *   /qbd/node-state/<node hex16> "draining" | "removed" (absent: in service)
 * See docs/design.md, "Metadata".
 *
 * Errors: 0 or -errno. -ENOENT not found, -EEXIST already exists,
 * -ECONNREFUSED / -EHOSTUNREACH / -ETIMEDOUT etcd unreachable, -EPROTO an
 * answer etcd should not give, -EAGAIN a transaction lost a race (retry).
 */
#ifndef QBD_META_H
#define QBD_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QBD_MAX_REPLICAS 5
#define QBD_NAME_MAX 64       /* volume names: [A-Za-z0-9._-], 1..63 chars */
#define QBD_ZONE_MAX 64
#define QBD_ADDR_MAX 128

struct qbd_meta;

#define QBD_META_MAX_ENDPOINTS 16

/* url: the etcd endpoints, "http://10.0.0.1:2379[,http://10.0.1.1:2379...]"
 * (blanks around commas allowed; https:// with client TLS from
 * $QBD_ETCD_CACERT, $QBD_ETCD_CERT and $QBD_ETCD_KEY, the same for every
 * endpoint). Each call tries them in turn, starting with the one that
 * answered last, within its time budget (5 s for all attempts); a request
 * that may have reached etcd is resent to the next endpoint only where
 * that is harmless (docs/design.md, "Metadata in etcd"). *out owned by
 * caller, freed by qbd_meta_close. -EINVAL (logged) for a bad list. Does
 * not contact etcd. */
int qbd_meta_open(const char *url, struct qbd_meta **out);
/* Check an endpoint list as qbd_meta_open reads it: the number of
 * endpoints, or -EINVAL with the reason in why (for a program to name
 * where the list came from). */
int qbd_meta_endpoints_check(const char *list, char *why, size_t len);
void qbd_meta_close(struct qbd_meta *m);

/* Read the cluster id; if absent and create is true, create it (a random
 * id, created atomically: concurrent creators agree). */
int qbd_meta_cluster_id(struct qbd_meta *m, bool create, uint64_t *id);

/* Background scrub of a chunk server (its counters since it started). */
struct qbd_node_scrub {
	uint64_t rate;             /* bytes/s; 0 = scrub off */
	uint64_t bytes;            /* bytes of written blocks verified */
	uint64_t chunks;           /* chunks scrubbed */
	uint64_t passes;           /* full passes over the store completed */
	uint64_t bad_blocks;       /* blocks found failing their checksum */
	uint64_t errors;           /* scrub reads that failed (I/O errors) */
};

/* I/O the chunk server's engine issued since it started
 * (struct qbd_engine_stats). */
struct qbd_node_io {
	uint64_t data_reads, data_read_bytes, data_writes, data_write_bytes;
	uint64_t meta_writes, zeroings, syncs;
};

/* Space the chunk server holds for volumes that no longer exist in etcd,
 * as its last reclaim scan found it, and what it reclaimed since it
 * started (docs/design.md, "Reclaim"). */
struct qbd_node_orphaned {
	uint64_t volumes;          /* volumes found deleted, or whose
				    * configuration no longer lists this node,
				    * not yet reclaimed */
	uint64_t chunks, held;     /* their chunks, and bytes of data */
	uint64_t moved, moved_held;/* of those, the volumes that exist but no
				    * longer list this node (a replica moved
				    * away), and their bytes of data */
	uint64_t found;            /* such volumes found since start-up */
	uint64_t reclaimed;        /* volumes reclaimed since start-up */
	uint64_t reclaimed_bytes;  /* bytes of data they held */
};

/* A node's service state, as an operator set it (/qbd/node-state/<id>;
 * the node record itself is the chunk server's). Placement never picks
 * a node that is not QBD_NODE_IN. */
enum qbd_node_state {
	QBD_NODE_IN = 0,           /* in service (no key) */
	QBD_NODE_DRAINING,         /* its replicas move away; it stays a source */
	QBD_NODE_REMOVED,          /* gone for good: never a member again */
};

struct qbd_node_info {
	uint64_t id;
	char addr[QBD_ADDR_MAX];   /* "HOST:PORT" clients connect to */
	char zone[QBD_ZONE_MAX];
	uint64_t capacity;         /* bytes of chunk data the store can hold */
	uint64_t used;             /* bytes in allocated chunk slots */
	uint32_t chunk_size;
	bool alive;                /* filled by list/get: /qbd/alive/<id> exists */
	enum qbd_node_state state; /* filled by list/get: /qbd/node-state/<id> */
	/* Republished by the chunk server while it runs (0 in records of
	 * older chunk servers): */
	uint64_t held;             /* bytes of data held (written 4 KiB blocks) */
	uint64_t slots, free_slots;/* chunk slots in all, and free */
	uint64_t seq;              /* publications of the record since start-up */
	uint64_t updated;          /* unix seconds of the last publication */
	struct qbd_node_scrub scrub;
	struct qbd_node_io io;
	struct qbd_node_orphaned orphaned;
};

/* Grant a lease of ttl seconds. */
int qbd_meta_lease_grant(struct qbd_meta *m, int ttl, int64_t *lease);
/* Refresh a lease; -ENOENT if it has expired. */
int qbd_meta_lease_keepalive(struct qbd_meta *m, int64_t lease);
int qbd_meta_lease_revoke(struct qbd_meta *m, int64_t lease);

/* Write the node record, and the alive key under lease. */
int qbd_meta_node_register(struct qbd_meta *m, const struct qbd_node_info *n,
			   int64_t lease);
/* Write the node record only (a chunk server republishing its numbers). */
int qbd_meta_node_put(struct qbd_meta *m, const struct qbd_node_info *n);
int qbd_meta_node_get(struct qbd_meta *m, uint64_t id, struct qbd_node_info *out);
/* *out is malloc'd (caller frees), sorted by zone then id. Each node's
 * alive and state are read too (three ranges, not one revision). */
int qbd_meta_node_list(struct qbd_meta *m, struct qbd_node_info **out, size_t *n);

/*
 * Node states. set: QBD_NODE_IN deletes the key, the others put
 * "draining" / "removed" (a plain put: the CLI checks the transition it
 * makes; 0 or -errno). get: the state, QBD_NODE_IN when there is no key
 * (-EPROTO, logged, for a value that is neither word). list: every key
 * of /qbd/node-state/ into *out, malloc'd (caller frees; NULL when *n is
 * 0), sorted by id; a node need not have a record (a removed node whose
 * record was deleted keeps its state). name/parse: the words above, and
 * "in" for QBD_NODE_IN; parse is -EINVAL for anything else.
 */
struct qbd_node_state_entry {
	uint64_t id;
	enum qbd_node_state state;
};
int qbd_meta_node_state_set(struct qbd_meta *m, uint64_t id, enum qbd_node_state state);
int qbd_meta_node_state_get(struct qbd_meta *m, uint64_t id, enum qbd_node_state *state);
int qbd_meta_node_state_list(struct qbd_meta *m, struct qbd_node_state_entry **out,
			     size_t *n);
const char *qbd_meta_node_state_name(enum qbd_node_state state);
int qbd_meta_node_state_parse(const char *text, enum qbd_node_state *state);

/*
 * Membership (docs/protocol.md section 11). A volume's configuration is
 * its record: cfg, the voter set S (nodes[], slot i -> node) and, while a
 * change stands, `change`: slot `slot` (node X = nodes[slot]) is being
 * replaced by node Y = `node`.
 *   QBD_CHANGE_LEARNER  Y receives every write and counts toward nothing
 *   QBD_CHANGE_JOINT    every quorum must hold in S and in S' = S - X + Y
 * When the change completes the record is CASed to nodes[slot] = Y,
 * cfg + 1, phase QBD_CHANGE_NONE. In JSON: "change":{"phase":"learner"|
 * "joint","slot":i,"node":"<Y hex16>","reason":"remove"|"drain"|"move"|
 * "down-out","started":<unix s>}, absent when phase is NONE.
 */
enum qbd_change_phase {
	QBD_CHANGE_NONE = 0,
	QBD_CHANGE_LEARNER,
	QBD_CHANGE_JOINT,
};

/* Why a replica is replaced (who asked). */
enum qbd_change_reason {
	QBD_REASON_NONE = 0,    /* no change (phase NONE) */
	QBD_REASON_REMOVE,      /* qbd node remove: X is gone for good */
	QBD_REASON_DRAIN,       /* qbd node drain: X is being emptied */
	QBD_REASON_MOVE,        /* qbd volume move: this one replica */
	QBD_REASON_DOWN_OUT,    /* the manager: X was down longer than down-out */
};

struct qbd_volume_change {
	enum qbd_change_phase phase;
	unsigned slot;          /* the slot being replaced, < replicas */
	uint64_t node;          /* Y, the new node; never one of nodes[] */
	enum qbd_change_reason reason;
	uint64_t started;       /* unix seconds the change began */
};

struct qbd_volume_info {
	char name[QBD_NAME_MAX];
	uint64_t id;
	uint64_t size;
	uint32_t chunk_size;
	unsigned replicas;      /* R */
	unsigned write_quorum;  /* W */
	uint64_t nodes[QBD_MAX_REPLICAS]; /* replica i lives on nodes[i] */
	uint64_t cfg;           /* configuration number: 1 at creation (and in
				 * records written before it existed), +1 at
				 * each completed change; 0 is written as 1 */
	struct qbd_volume_change change;  /* phase NONE: no change stands */
	uint64_t mod_revision;  /* filled by get/list: the record's etcd
				 * mod_revision (what qbd_meta_volume_cas and
				 * qbd_meta_attach compare); not in the JSON */
};

/* The words of the JSON ("none", "learner", "joint"; "", "remove",
 * "drain", "move", "down-out"); parse: 0, or -EINVAL for another word
 * (parse of "none" / "" is not accepted: absent means none). */
const char *qbd_meta_change_phase_name(enum qbd_change_phase phase);
int qbd_meta_change_phase_parse(const char *text, enum qbd_change_phase *phase);
const char *qbd_meta_change_reason_name(enum qbd_change_reason reason);
int qbd_meta_change_reason_parse(const char *text, enum qbd_change_reason *reason);

/* true if name is a valid volume name. */
bool qbd_meta_volume_name_ok(const char *name);

/* Create atomically; -EEXIST if the name (or, improbably, the id) exists.
 * Sets /qbd/epochs/<id> to 0. */
int qbd_meta_volume_create(struct qbd_meta *m, const struct qbd_volume_info *v);
/* The record, with its mod_revision; a record without "cfg" reads as
 * cfg 1, without "change" as no change. -ENOENT, -EPROTO (malformed). */
int qbd_meta_volume_get(struct qbd_meta *m, const char *name,
			struct qbd_volume_info *out);
/* *out malloc'd (caller frees), sorted by name, each with its
 * mod_revision. */
int qbd_meta_volume_list(struct qbd_meta *m, struct qbd_volume_info **out,
			 size_t *n);

/*
 * Change the volume record by compare-and-swap: one transaction that
 * compares the record's mod_revision with read->mod_revision (read is the
 * record as the caller got it from get/list) AND, unless epoch is 0, the
 * epoch key's value with epoch; then puts next (same name and id as read;
 * -EINVAL, nothing sent, otherwise or when next would not read back).
 *
 * epoch is the caller's own: the writer's (qbd_meta_attach gave it), so
 * that a writer fenced by a newer one cannot change the configuration.
 * Someone who is not the volume's writer (the CLI, or the manager when
 * nobody is attached) changing the members takes an epoch first with
 * qbd_meta_epoch_bump, which fences every writer before it (a writer
 * attaching after it reads the record again, since its attach compares
 * the record's revision), and passes that epoch. 0 skips the epoch
 * compare: only for a change no writer acts on (nothing a writer uses
 * from the record: not nodes[], write_quorum, cfg nor change).
 *
 * Returns 0 and sets next->mod_revision to the revision of the put (the
 * transaction's). -EAGAIN when the record changed since read (re-read,
 * decide again), -ESTALE when the epoch is no longer epoch (this caller
 * is fenced: it must not retry), -ENOENT when the record is gone, other
 * errors as the other calls. Resent to another endpoint when an answer
 * is lost: a failed compare after a resend reads the record back, and if
 * it is next, byte for byte, the lost attempt applied: 0.
 */
int qbd_meta_volume_cas(struct qbd_meta *m, const struct qbd_volume_info *read,
			struct qbd_volume_info *next, uint64_t epoch);
/* Remove the volume, its id index, epoch, attachment and status records.
 * -ENOENT if absent; -EBUSY (nothing removed) while an attachment record
 * exists. */
int qbd_meta_volume_delete(struct qbd_meta *m, const struct qbd_volume_info *v);

/*
 * Grow volume `name` (whose id must be `id`) to size bytes: the record
 * read, its size set, qbd_meta_volume_cas on the mod_revision read (no
 * epoch: growth fences no writer), read again and retried when another
 * change of the record came first; every other field as read. 0 also
 * when the size is already `size`; *old_size (may be NULL) gets the size
 * found first. -EINVAL when size is smaller than the record's or not a
 * multiple of 4096 (a volume never shrinks: docs/design.md, "Resize"),
 * -ENOENT when the volume is gone or its name now names another one,
 * -EAGAIN after ten lost races. An attached writer takes the new size
 * from the record (its keeper reads it every 2 s).
 */
int qbd_meta_volume_grow(struct qbd_meta *m, const char *name, uint64_t id,
			 uint64_t size, uint64_t *old_size);

/*
 * Which volumes exist, and which nodes each one's configuration lists,
 * for a chunk server's reclaim of the chunks of deleted volumes and of
 * replicas moved away (docs/design.md, "Reclaim"): one read-only
 * transaction reads /qbd/cluster and every key of /qbd/volumes/,
 * /qbd/volume-ids/ and /qbd/epochs/, so all of it is etcd's state at
 * one revision. A volume exists when any of its keys does (creation puts
 * the three in one transaction, deletion removes them in one). Never a
 * partial answer: -EPROTO when any part is missing, truncated ("more"),
 * or unreadable (a record or key that names no id), other errors as the
 * other calls. On success out->ids and out->members are malloc'd (NULL
 * when n is 0): free them with qbd_meta_volume_scan_free (accepts a
 * zeroed struct).
 */
struct qbd_meta_volume_members {
	uint64_t cfg;           /* the record's configuration number; 0: not
				 * known (no record read, only the volume's id
				 * or epoch key; or two records with its id):
				 * every node counts as listed */
	unsigned n;             /* nodes listed */
	uint64_t nodes[QBD_MAX_REPLICAS + 1];  /* nodes[0..replicas), then,
						* while a change stands, the
						* change's new node */
};
struct qbd_meta_volume_scan {
	uint64_t revision;      /* etcd's revision the answer is from */
	uint64_t cluster_id;    /* /qbd/cluster's id; 0 when absent */
	uint64_t *ids;          /* every volume id found, sorted, unique */
	struct qbd_meta_volume_members *members;  /* members[i]: ids[i]'s;
						   * NULL (n 0, or a caller's
						   * answer): none known */
	size_t n;
};
int qbd_meta_volume_scan(struct qbd_meta *m, struct qbd_meta_volume_scan *out);
void qbd_meta_volume_scan_free(struct qbd_meta_volume_scan *s);

/* Current epoch of a volume. */
int qbd_meta_epoch_get(struct qbd_meta *m, uint64_t volume_id, uint64_t *epoch);
/* Atomically increment (compare-and-swap in a transaction, retried on a
 * lost race) and return the new epoch. */
int qbd_meta_epoch_bump(struct qbd_meta *m, uint64_t volume_id, uint64_t *epoch);

/*
 * Attachments: the writer of a volume (one at a time) records itself under
 * /qbd/attachments/<volume id hex16> as JSON {"volume":"<name>",
 * "volume_id":"<hex16>","epoch":N,"host":"...","zone":"...","pid":N,
 * "since":<unix seconds>}, under its lease, so the record vanishes when the
 * writer dies.
 */
struct qbd_attachment {
	char volume[QBD_NAME_MAX];
	uint64_t volume_id;
	uint64_t epoch;
	char host[64];
	char zone[QBD_ZONE_MAX];
	int pid;
	uint64_t since;          /* unix seconds */
	/* Not in the record: qbd_meta_attach compares /qbd/volumes/<volume>'s
	 * mod_revision with it (the qbd_volume_info.mod_revision the writer
	 * read its configuration from); 0 = no compare (older callers). */
	uint64_t volume_revision;
};

/* Take the next epoch and the attachment in one transaction: compare the
 * epoch key's mod_revision (as qbd_meta_epoch_bump does) AND, unless force,
 * that /qbd/attachments/<id> is absent; then put epoch+1 and the record
 * (a->epoch set to the new epoch) under lease. With a->volume_revision
 * set, the same transaction compares the volume record's mod_revision
 * with it, so that no writer attaches with a configuration that has
 * changed since it read it. Retries lost races on the epoch like
 * qbd_meta_epoch_bump. -EBUSY if attached elsewhere and !force; *holder
 * (may be NULL) then gets the current record; forced, *holder gets the
 * record taken over, read just before (left alone when there was none).
 * -ESTALE (nothing taken)
 * when the volume record is no longer at a->volume_revision: read the
 * record again, set up for what it says, and attach again. On success
 * a->epoch is the new epoch. -ENOENT if the volume has no epoch key. */
int qbd_meta_attach(struct qbd_meta *m, struct qbd_attachment *a, int64_t lease,
		    bool force, struct qbd_attachment *holder);
/* Re-put our attachment record under a (new) lease, only if the volume's
 * epoch in etcd is still a->epoch (value compare); -ESTALE if a newer
 * writer took over (or the volume is gone). Used after our lease expired. */
int qbd_meta_attach_renew(struct qbd_meta *m, const struct qbd_attachment *a,
			  int64_t lease);
/* Delete the attachment record (and the status document) if the record is
 * still ours (its epoch == a->epoch; the delete compares the record's
 * mod_revision). 0 also when already gone; -ESTALE if the record belongs
 * to a newer writer (left in place). */
int qbd_meta_detach(struct qbd_meta *m, const struct qbd_attachment *a);
/* Read the attachment; -ENOENT if none. */
int qbd_meta_attachment_get(struct qbd_meta *m, uint64_t volume_id,
			    struct qbd_attachment *out);

/* A writer that closed cleanly (flushed, stopped reading) records its
 * epoch; the next writer then need not wait out its read lease.
 * was_clean: 1 if `epoch` closed cleanly, 0 if not (or unknown). */
int qbd_meta_mark_clean(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch);
int qbd_meta_was_clean(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch);

/* /qbd/status/<volume id hex16>: a JSON document written by the attached
 * writer (opaque to meta), under the writer's lease. put: only while the
 * volume's epoch is still `epoch` (-ESTALE otherwise). get: *json malloc'd,
 * caller frees; -ENOENT if none. */
int qbd_meta_status_put(struct qbd_meta *m, uint64_t volume_id, uint64_t epoch,
			const char *json, int64_t lease);
int qbd_meta_status_get(struct qbd_meta *m, uint64_t volume_id, char **json);

/* /qbd/volume-settings/<volume id hex16>: settings that may change while
 * the volume is attached, apart from its record. rebuild_rate: bytes per
 * second of its background resync (0 = unlimited); without it the
 * writer's own setting (qbd.conf resync-rate) applies. get: an absent
 * key is all settings unset (0); -EPROTO for a document it cannot read.
 * put: a document with nothing set deletes the key. */
struct qbd_volume_settings {
	bool has_rebuild_rate;
	uint64_t rebuild_rate;
};
int qbd_meta_volume_settings_get(struct qbd_meta *m, uint64_t volume_id,
				 struct qbd_volume_settings *out);
int qbd_meta_volume_settings_put(struct qbd_meta *m, uint64_t volume_id,
				 const struct qbd_volume_settings *s);

/*
 * Change requests: /qbd/changes/<volume id hex16>, at most one per
 * volume, as JSON {"kind":"replace","from":"<X hex16>","to":"<Y hex16>"
 * or "" (placement picks when it is carried out),"reason":"remove"|
 * "drain"|"move"|"down-out","created":<unix s>}. Written by the CLI
 * (node remove / drain, volume move) or the manager (down-out); carried
 * out by the volume's attached writer, or by the manager when none is,
 * which deletes it when done. Nothing in meta carries one out.
 *
 * put: create only if absent (-EEXIST when the volume has one; req is not
 * changed); sets req->mod_revision. get: -ENOENT when none, -EPROTO
 * (logged) when malformed. delete: only if the request is still the one
 * read (its mod_revision): 0, -EAGAIN when it changed since, -ENOENT
 * when it is gone. list: every request, *out malloc'd (caller frees,
 * NULL when *n is 0), sorted by volume id; malformed ones are skipped
 * with a warning.
 */
enum qbd_change_kind {
	QBD_CHANGE_KIND_REPLACE = 1,  /* "replace": slot of `from` gets `to` */
};
struct qbd_change_request {
	uint64_t volume_id;     /* the key */
	enum qbd_change_kind kind;
	uint64_t from;          /* X: the node whose replica goes */
	uint64_t to;            /* Y; 0 = "" (placement picks) */
	enum qbd_change_reason reason;  /* never QBD_REASON_NONE */
	uint64_t created;       /* unix seconds */
	uint64_t mod_revision;  /* filled by get/list/put; not in the JSON */
};
int qbd_meta_change_put(struct qbd_meta *m, struct qbd_change_request *req);
int qbd_meta_change_get(struct qbd_meta *m, uint64_t volume_id,
			struct qbd_change_request *out);
int qbd_meta_change_delete(struct qbd_meta *m, const struct qbd_change_request *read);
int qbd_meta_change_list(struct qbd_meta *m, struct qbd_change_request **out,
			 size_t *n);

/*
 * Placement: choose `replicas` alive nodes in service (state
 * QBD_NODE_IN) in distinct zones, preferring the least used. Pure
 * function (unit-tested). Returns 0 and fills out[], or -ENOSPC when
 * fewer distinct zones (with such nodes) than replicas exist;
 * *zones_found tells how many there were.
 */
int qbd_meta_place(const struct qbd_node_info *nodes, size_t n,
		   unsigned replicas, uint64_t *out, unsigned *zones_found);

/*
 * Placement of a replacement: the node Y to take slot `slot` of volume v
 * (whose node X = v->nodes[slot] leaves). Pure function (unit-tested).
 * Y is alive, in service (QBD_NODE_IN), has room (capacity above used,
 * and a free chunk slot when it publishes its slots), is not a member
 * of v (nor the node of a change that stands), and its zone is used by
 * no other member: X's own zone first if a node there qualifies, else a
 * zone v does not use yet; among those, the least used node (then the
 * lowest id), as qbd_meta_place. X's zone is that of its record in
 * nodes[] (unknown when there is none: then any unused zone).
 *
 * 0 and *out = Y; -ENOSPC when no node qualifies, with why (always
 * NUL-terminated, truncated to len) naming each zone considered and why
 * it was refused ("zone b: used by replica 1; zone c: 0000000000000c1
 * down, 0000000000000c2 draining"); -EINVAL for a slot out of range.
 */
int qbd_meta_place_replacement(const struct qbd_node_info *nodes, size_t n,
			       const struct qbd_volume_info *v, unsigned slot,
			       uint64_t *out, char *why, size_t len);
/*
 * Whether node `to` may take slot `slot` of v, by the rules above
 * (an operator's choice: any zone the other members do not use, X's
 * included). 0, or -EINVAL with the reason in why ("not alive",
 * "draining", "already holds replica 2", "zone b holds replica 1",
 * "no such node", "no room").
 */
int qbd_meta_place_check(const struct qbd_node_info *nodes, size_t n,
			 const struct qbd_volume_info *v, unsigned slot,
			 uint64_t to, char *why, size_t len);

/*
 * The manager (qbd-managerd; replicator/meta/manager.c, docs/design.md
 * "Manager"). Its instances elect one leader through the key
 * /qbd/manager = {"host","pid","since"}, put under the candidate's lease
 * only if the key does not exist (its create_revision is 0): the key
 * goes when the leader revokes its lease or the lease expires.
 */
#define QBD_MANAGER_KEY "/qbd/manager"
struct qbd_manager_leader {
	char host[64];
	int pid;
	uint64_t since;           /* unix seconds it became the leader */
	int64_t lease;            /* the key's lease (get; campaign: the caller's) */
	uint64_t create_revision; /* the key's (get; campaign sets it) */
};
/* Become the leader: create /qbd/manager (host, pid, since of *me) under
 * me->lease only if it is absent. 0: this caller leads (me->
 * create_revision set; also when a resent attempt of ours created it);
 * -EBUSY another holds it; -EAGAIN it vanished meanwhile (try again);
 * other errors as the other calls. */
int qbd_meta_manager_campaign(struct qbd_meta *m, struct qbd_manager_leader *me);
/* The leader's key: 0 and *out, -ENOENT when nobody leads. */
int qbd_meta_manager_get(struct qbd_meta *m, struct qbd_manager_leader *out);

/*
 * Everything the manager decides from, read by one read-only transaction
 * (so at one etcd revision): node records with their alive key and
 * state, volume records, change requests, and which volumes have an
 * attachment record. Never partial: -EPROTO (logged) when any range is
 * missing, truncated, or holds an entry that cannot be read; other
 * errors as the other calls. On success the arrays are malloc'd (free
 * with qbd_meta_cluster_view_free, which accepts a zeroed struct); nodes
 * are in etcd's key order, not sorted.
 */
struct qbd_meta_cluster_view {
	uint64_t revision;
	struct qbd_node_info *nodes;        /* alive and state filled */
	size_t nn;
	struct qbd_volume_info *vols;       /* with their mod_revision */
	size_t nv;
	struct qbd_change_request *changes; /* with their mod_revision */
	size_t nc;
	uint64_t *attached;                 /* volume ids with an attachment */
	size_t na;
};
int qbd_meta_cluster_view(struct qbd_meta *m, struct qbd_meta_cluster_view *out);
void qbd_meta_cluster_view_free(struct qbd_meta_cluster_view *v);

/* Write a change request (req, as qbd_meta_change_put) for node
 * req->from that the manager decided is out, in one transaction that
 * also compares that /qbd/alive/<from> is absent and that /qbd/manager is
 * under `lease` (the caller still leads). 0 (req->mod_revision set);
 * -EEXIST the volume has a request; -EAGAIN the node is alive again or
 * the caller no longer leads (read again, decide again); -EINVAL a
 * malformed req; other errors as the other calls. */
int qbd_meta_manager_request(struct qbd_meta *m, struct qbd_change_request *req,
			     int64_t lease);

/*
 * The CSI driver's records (csi/, docs/design.md "The CSI driver"):
 *   /qbd/csi/publish/<volume name>  {"node","readonly","since"}: the node
 *                                   ControllerPublishVolume let attach it
 *   /qbd/csi/nodes/<node id>        {"zone","since"}: a node plugin, as
 *                                   it registers itself at start
 * A node id is the container orchestrator's name of the node (1..253
 * characters, no '/', no control characters): qbd_meta_csi_node_id_ok.
 *
 * publish get: -ENOENT when the volume is published nowhere. put: the
 * record, replacing any. delete: only if the record still names node
 * (NULL: whichever): 0 also when there is none, -EAGAIN when it names
 * another node (left in place), -EBUSY when it changed under ten
 * attempts in a row. list: every record, *out malloc'd
 * (caller frees; NULL when *n is 0), sorted by volume name; an
 * unreadable record is skipped with a warning.
 * node get: -ENOENT when that node never registered. put: the record.
 */
#define QBD_CSI_NODE_MAX 254
struct qbd_csi_publish {
	char volume[QBD_NAME_MAX];
	char node[QBD_CSI_NODE_MAX];
	bool readonly;
	uint64_t since;         /* unix seconds */
};
struct qbd_csi_node {
	char node[QBD_CSI_NODE_MAX];
	char zone[QBD_ZONE_MAX];
	uint64_t since;         /* unix seconds */
};
bool qbd_meta_csi_node_id_ok(const char *node);
int qbd_meta_csi_publish_get(struct qbd_meta *m, const char *volume,
			     struct qbd_csi_publish *out);
int qbd_meta_csi_publish_put(struct qbd_meta *m, const struct qbd_csi_publish *p);
int qbd_meta_csi_publish_delete(struct qbd_meta *m, const char *volume, const char *node);
int qbd_meta_csi_publish_list(struct qbd_meta *m, struct qbd_csi_publish **out, size_t *n);
int qbd_meta_csi_node_get(struct qbd_meta *m, const char *node, struct qbd_csi_node *out);
int qbd_meta_csi_node_put(struct qbd_meta *m, const struct qbd_csi_node *n);

#endif
