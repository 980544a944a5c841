/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Membership changes in etcd: the words of a volume record's "change"
 * (phase, reason) (meta.h; docs/protocol.md section 11).
 */
#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "internal.h"

/* ---- words ---- */

static const char *const phase_names[] = {
	[QBD_CHANGE_NONE] = "none",
	[QBD_CHANGE_LEARNER] = "learner",
	[QBD_CHANGE_JOINT] = "joint",
};

static const char *const reason_names[] = {
	[QBD_REASON_NONE] = "",
	[QBD_REASON_REMOVE] = "remove",
	[QBD_REASON_DRAIN] = "drain",
	[QBD_REASON_MOVE] = "move",
	[QBD_REASON_DOWN_OUT] = "down-out",
};

const char *qbd_meta_change_phase_name(enum qbd_change_phase phase)
{
	return (unsigned)phase < QBD_ARRAY_SIZE(phase_names) ? phase_names[phase] : "?";
}

int qbd_meta_change_phase_parse(const char *text, enum qbd_change_phase *phase)
{
	for (unsigned i = QBD_CHANGE_LEARNER; i < QBD_ARRAY_SIZE(phase_names); i++)
		if (strcmp(text, phase_names[i]) == 0) {
			*phase = (enum qbd_change_phase)i;
			return 0;
		}
	return -EINVAL;
}

const char *qbd_meta_change_reason_name(enum qbd_change_reason reason)
{
	return (unsigned)reason < QBD_ARRAY_SIZE(reason_names) ? reason_names[reason] : "?";
}

int qbd_meta_change_reason_parse(const char *text, enum qbd_change_reason *reason)
{
	for (unsigned i = QBD_REASON_REMOVE; i < QBD_ARRAY_SIZE(reason_names); i++)
		if (strcmp(text, reason_names[i]) == 0) {
			*reason = (enum qbd_change_reason)i;
			return 0;
		}
	return -EINVAL;
}
