/* SPDX-License-Identifier: Apache-2.0 */
/*
 * qbd volume set NAME --rebuild-rate RATE: a volume's settings that may
 * change while it is attached (/qbd/volume-settings/<id>, kept out of
 * its record). The attached writer's keeper reads them every few
 * seconds; nothing else is contacted. Without --rebuild-rate, or with
 * "default", the writer's own setting applies (resync-rate in qbd.conf
 * or qbd-nbd's --resync-rate: the cluster's default).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "internal.h"

static const char set_usage[] =
	"usage: qbd volume set NAME --rebuild-rate RATE|default [--json]\n"
	"RATE: bytes per second of the attached writer's background resync\n"
	"(rebuild), e.g. 64M; 0 = unlimited; default = the writer's own\n"
	"resync-rate (qbd.conf). The writer picks it up within a few seconds.\n";

/* The settings as they stand (also `qbd volume set NAME` alone). */
static void settings_print(const char *name, const struct qbd_volume_settings *s)
{
	char sz[32];

	if (cli_json) {
		json_object *o = json_object_new_object();

		json_object_object_add(o, "volume", json_object_new_string(name));
		json_object_object_add(o, "rebuild_rate", s->has_rebuild_rate ?
				       cli_json_u64(s->rebuild_rate) : NULL);
		cli_print_json(o);
		return;
	}
	if (!s->has_rebuild_rate)
		printf("volume %s: rebuild rate: default (the writer's resync-rate)\n", name);
	else if (!s->rebuild_rate)
		printf("volume %s: rebuild rate: unlimited\n", name);
	else
		printf("volume %s: rebuild rate: %s/s (%" PRIu64 " bytes/s)\n", name,
		       qbd_format_size(s->rebuild_rate, sz, sizeof sz), s->rebuild_rate);
}

int cmd_volume_set(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "rebuild-rate", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct qbd_volume_settings s;
	struct qbd_volume_info v;
	struct qbd_meta *m;
	const char *rate = NULL;
	uint64_t bytes = 0;
	int c, r;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			rate = optarg;
			break;
		case 'h':
			fputs(set_usage, stdout);
			return EXIT_OK;
		default:
			fputs(set_usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		fputs(set_usage, stderr);
		return EXIT_USAGE;
	}
	if (rate && strcmp(rate, "default") && qbd_parse_size(rate, &bytes) < 0) {
		fprintf(stderr, "qbd: --rebuild-rate '%s': want bytes per second, e.g. 64M "
			"(0 = unlimited), or default\n", rate);
		return EXIT_USAGE;
	}
	if ((r = cli_meta(&m)))
		return r;
	r = qbd_meta_volume_get(m, argv[optind], &v);
	if (r == 0)
		r = qbd_meta_volume_settings_get(m, v.id, &s);
	if (r == 0 && rate) {
		s.has_rebuild_rate = strcmp(rate, "default") != 0;
		s.rebuild_rate = bytes;
		r = qbd_meta_volume_settings_put(m, v.id, &s);
	}
	qbd_meta_close(m);
	if (r < 0) {
		fprintf(stderr, "qbd: volume '%s': %s\n", argv[optind],
			r == -ENOENT ? "no such volume" : r == -EPROTO ?
			"its settings in etcd cannot be read" : strerror(-r));
		return EXIT_ERR;
	}
	settings_print(argv[optind], &s);
	return EXIT_OK;
}
