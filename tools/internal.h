/* SPDX-License-Identifier: Apache-2.0 */
/* qbd CLI internals. One section per .c file. */
#ifndef QBD_TOOLS_INTERNAL_H
#define QBD_TOOLS_INTERNAL_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replicator/admin/admin.h"
#include "replicator/meta/meta.h"
#include "replicator/wire/wire.h"

/* Exit statuses of every qbd command, one meaning each: scripts and
 * drivers branch on them (qbd --help and docs/operations.md list them).
 * Health (status, node list, volume status) and volume verify use 3 and
 * 4 for "not as it should be, still usable" and "not usable". */
#define EXIT_OK 0
#define EXIT_ERR 1               /* an error; the message names it */
#define EXIT_USAGE 2             /* a bad command line */
#define EXIT_DEGRADED 3
#define EXIT_FAILED 4

/* qbd-main.c: global options, the shared option handling, etcd */
extern const char *cli_etcd;
extern int cli_json;
/* An etcd URL is set: 0, or EXIT_USAGE after saying how to set it. */
int cli_need_etcd(void);
/* Open etcd (cli_etcd). 0, or an exit status after saying why. */
int cli_meta(struct qbd_meta **m);
/* Options of a command that takes only --help and nargs positional
 * arguments: -1 to go on (argv[optind] is the first), else the exit
 * status after printing usage_text. */
int cli_simple_opts(int argc, char **argv, int nargs, const char *usage_text);
/* out: the program prog next to this qbd binary, else prog (for PATH). */
void cli_sibling_path(const char *prog, char *out, size_t len);

/* cli-json.c: the JSON the CLI prints and reads. New objects are the
 * caller's; cli_print_json prints o and drops it. Ids are hex strings. */
void cli_print_json(json_object *o);
json_object *cli_json_id(uint64_t id);
json_object *cli_json_u64(uint64_t v);
/* A writer's attachment record: host, zone, pid, epoch, since. */
json_object *cli_attachment_json(const struct qbd_attachment *a);
/* o's member key as a number (a decimal string too); 0 when absent. */
uint64_t cli_json_get_u64(json_object *o, const char *key);
json_object *cli_node_json(const struct qbd_node_info *n, bool full);
json_object *cli_volume_json(const struct qbd_volume_info *v);
/* The change that stands in v's record (NULL when none; to: Y's record,
 * NULL when unknown), and a change request, as JSON objects. */
json_object *cli_change_json(const struct qbd_volume_info *v, const struct qbd_node_info *to);
json_object *cli_change_request_json(const struct qbd_change_request *r);

/* cli-node.c: qbd node list|drain|undrain|remove, qbd volume move; a
 * node's record by id */
int cmd_node(int argc, char **argv);
int cmd_volume_move(int argc, char **argv);
int cli_node_get(struct qbd_meta *m, uint64_t id, struct qbd_node_info *node);
/* What the CLI says of a change it asked for: nobody in the CLI carries
 * it out. */
#define CLI_CHANGE_CARRIED_BY "it is carried out by the volume's writer or qbd-managerd"

/* cli-volume.c: qbd volume create|list|info|status|delete */
int cmd_volume(int argc, char **argv);

/* cli-fence.c: qbd volume fence NAME | --node NODE */
int cmd_volume_fence(int argc, char **argv);

/* cli-settings.c: qbd volume set NAME [--rebuild-rate RATE] */
int cmd_volume_set(int argc, char **argv);

/* cli-health.c: a volume's health, as etcd and its writer's status
 * document tell. */
struct replica_status {
	struct qbd_node_info node;
	bool known;             /* node record found */
	bool reported;          /* the writer's status document lists it */
	char state[16];         /* "up", "down", "resync", "silent" */
	uint64_t stale, resync_done, resync_total;
	uint64_t waiting_ms;    /* its oldest request's age, as published */
};
/* Seconds a silent replica has not answered, as of now. */
uint64_t cli_replica_silent_s(const struct replica_status *x, uint64_t st_updated);
/* Worst last: qbd status reports the worst of its volumes. */
enum cli_health {
	CLI_HEALTHY = 0,
	CLI_UNKNOWN,            /* attached, no status document from the writer yet */
	CLI_DEGRADED,           /* >= W replicas usable, not all current */
	CLI_FAILED,             /* < W usable: writes fail */
};
/* A membership change's copy, as the writer's status document says it. */
struct change_progress {
	bool have;
	char phase[16], from[17], to[17];
	uint64_t copied, total, rate;  /* bytes; rate per second */
	int64_t eta_s;                 /* -1 unknown */
};
/* One line: "learner: 12 MiB of 56 MiB copied (21%), 6 MiB/s, ETA 8 s". */
const char *cli_change_progress_str(const struct change_progress *c, char *buf, size_t len);
json_object *cli_change_progress_json(const struct change_progress *c);

struct vol_health {
	struct replica_status rs[QBD_MAX_REPLICAS];
	struct change_progress chg;    /* from the writer's status document */
	struct qbd_attachment att;
	bool attached, have_status;
	uint64_t st_updated;
	unsigned usable, current;  /* replicas that take writes; with nothing stale */
	enum cli_health health;
	int rc;                    /* its exit status: cli_health_exit(health) */
};
/* Fill h for volume v. 0, or EXIT_ERR after saying why. */
int cli_volume_health(struct qbd_meta *m, const struct qbd_volume_info *v,
		      struct vol_health *h);
/* Exit status: 0 healthy, EXIT_DEGRADED degraded or unknown, EXIT_FAILED. */
int cli_health_exit(enum cli_health health);
const char *cli_health_name(enum cli_health health);
/* A replica can take writes; its resync progress in percent. */
bool cli_replica_usable(const struct replica_status *x, bool have_status);
unsigned cli_replica_percent(const struct replica_status *x);

/* cli-status.c: qbd status */
int cmd_status(int argc, char **argv);

/* cli-verify.c: qbd volume verify NAME */
int cmd_volume_verify(int argc, char **argv);

/* cli-attach.c: attach, detach, mapped (argv[0] names which) */
int cmd_kernel(int argc, char **argv);

/* dev.c: qbd dev up|down|status */
int cmd_dev(int argc, char **argv);

#endif
