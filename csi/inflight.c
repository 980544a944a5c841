/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The volumes an operation is running on. The CSI spec asks a plugin to
 * answer ABORTED to a call on a volume while another call on it is in
 * progress (kubelet and the sidecars retry later); a Controller or Node
 * handler brackets its work with csi_volume_begin and csi_volume_end.
 * A short list under a lock: a driver has a few operations at a time.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct busy {
	struct busy *next;
	char id[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct busy *busy;

grpc_status_code csi_volume_begin(struct csi_call *c, const char *id)
{
	size_t n = strlen(id) + 1;
	struct busy *b;

	pthread_mutex_lock(&lock);
	for (b = busy; b; b = b->next)
		if (strcmp(b->id, id) == 0) {
			pthread_mutex_unlock(&lock);
			return csi_fail(c, GRPC_STATUS_ABORTED,
					"an operation on volume %s is in progress", id);
		}
	b = malloc(sizeof *b + n);
	if (!b) {
		pthread_mutex_unlock(&lock);
		return csi_fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
	}
	memcpy(b->id, id, n);
	b->next = busy;
	busy = b;
	pthread_mutex_unlock(&lock);
	return GRPC_STATUS_OK;
}

void csi_volume_end(const char *id)
{
	pthread_mutex_lock(&lock);
	for (struct busy **p = &busy; *p; p = &(*p)->next)
		if (strcmp((*p)->id, id) == 0) {
			struct busy *b = *p;

			*p = b->next;
			free(b);
			break;
		}
	pthread_mutex_unlock(&lock);
}
