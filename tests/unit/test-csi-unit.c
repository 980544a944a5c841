/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for csi/endpoint.c and csi/inflight.c, without gRPC: the
 * call handlers see is this file's, with its own csi_fail. (Named apart
 * from the integration test test-csi.sh.) */
#include <check.h>
#include <errno.h>
#include <grpc/status.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "csi/internal.h"

struct csi_call {
	grpc_status_code code;
	char msg[512];
};

grpc_status_code csi_fail(struct csi_call *c, grpc_status_code code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->msg, sizeof c->msg, fmt, ap);
	va_end(ap);
	c->code = code;
	return code;
}

static int path_of(const char *ep, char *path)
{
	char why[160];

	return csi_endpoint_path(ep, path, 256, why, sizeof why);
}

START_TEST(endpoint_forms)
{
	char p[256], long_ep[300];

	ck_assert_int_eq(path_of("unix:///var/lib/kubelet/plugins/qbd.csi.io/csi.sock", p), 0);
	ck_assert_str_eq(p, "/var/lib/kubelet/plugins/qbd.csi.io/csi.sock");
	ck_assert_int_eq(path_of("unix:/run/csi.sock", p), 0);
	ck_assert_str_eq(p, "/run/csi.sock");
	ck_assert_int_eq(path_of("unix:csi.sock", p), 0);
	ck_assert_str_eq(p, "csi.sock");
	ck_assert_int_eq(path_of("/csi/csi.sock", p), 0);
	ck_assert_str_eq(p, "/csi/csi.sock");
	ck_assert_int_eq(path_of("csi.sock", p), 0);
	ck_assert_str_eq(p, "csi.sock");
	ck_assert_int_eq(path_of("unix://host/csi.sock", p), -EINVAL);
	ck_assert_int_eq(path_of("tcp://127.0.0.1:10000", p), -EINVAL);
	ck_assert_int_eq(path_of("dns:localhost:10000", p), -EINVAL);
	ck_assert_int_eq(path_of("", p), -EINVAL);
	ck_assert_int_eq(path_of("unix:", p), -EINVAL);
	ck_assert_int_eq(path_of("unix://", p), -EINVAL);
	memset(long_ep, 'a', sizeof long_ep - 1);
	long_ep[sizeof long_ep - 1] = 0;
	long_ep[0] = '/';
	ck_assert_int_eq(path_of(long_ep, p), -EINVAL);
}
END_TEST

static int bound_socket(const char *path, int listening)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	if (listening)
		ck_assert_int_eq(listen(fd, 1), 0);
	return fd;
}

START_TEST(socket_clear)
{
	char dir[] = "/tmp/qbd-test-csi.XXXXXX", path[64];
	struct stat st;
	FILE *f;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/csi.sock", dir);
	ck_assert_int_eq(csi_socket_clear("/nonexistent-qbd-dir/csi.sock"), -ENOENT);
	ck_assert_int_eq(csi_socket_clear(path), 0);              /* absent */
	f = fopen(path, "w");                                     /* not a socket */
	ck_assert_ptr_nonnull(f);
	fclose(f);
	ck_assert_int_eq(csi_socket_clear(path), -EEXIST);
	ck_assert_int_eq(stat(path, &st), 0);
	unlink(path);
	fd = bound_socket(path, 0);                               /* nobody accepts */
	close(fd);
	ck_assert_int_eq(csi_socket_clear(path), 0);
	ck_assert_int_ne(stat(path, &st), 0);
	fd = bound_socket(path, 1);                               /* a live server */
	ck_assert_int_eq(csi_socket_clear(path), -EADDRINUSE);
	ck_assert_int_eq(stat(path, &st), 0);
	close(fd);
	unlink(path);
	rmdir(dir);
}
END_TEST

START_TEST(inflight_one_per_volume)
{
	struct csi_call c = { 0 };

	ck_assert_int_eq(csi_volume_begin(&c, "v1"), GRPC_STATUS_OK);
	ck_assert_int_eq(csi_volume_begin(&c, "v2"), GRPC_STATUS_OK);
	ck_assert_int_eq(csi_volume_begin(&c, "v1"), GRPC_STATUS_ABORTED);
	ck_assert_int_eq(c.code, GRPC_STATUS_ABORTED);
	ck_assert_str_eq(c.msg, "an operation on volume v1 is in progress");
	csi_volume_end("v1");
	ck_assert_int_eq(csi_volume_begin(&c, "v1"), GRPC_STATUS_OK);
	ck_assert_int_eq(csi_volume_begin(&c, "v2"), GRPC_STATUS_ABORTED);
	csi_volume_end("v2");
	csi_volume_end("v1");
	csi_volume_end("v3");         /* not held: nothing happens */
	ck_assert_int_eq(csi_volume_begin(&c, "v2"), GRPC_STATUS_OK);
	csi_volume_end("v2");
}
END_TEST

#define RACERS 8
static pthread_barrier_t bar;

static void *racer(void *arg)
{
	struct csi_call c = { 0 };
	grpc_status_code *got = arg;

	pthread_barrier_wait(&bar);
	*got = csi_volume_begin(&c, "pv-1");
	pthread_barrier_wait(&bar);   /* every begin done before the end */
	if (*got == GRPC_STATUS_OK)
		csi_volume_end("pv-1");
	return NULL;
}

START_TEST(inflight_race)
{
	pthread_t t[RACERS];
	grpc_status_code got[RACERS];
	int ok = 0, aborted = 0;

	for (int round = 0; round < 50; round++) {
		pthread_barrier_init(&bar, NULL, RACERS);
		for (int i = 0; i < RACERS; i++)
			ck_assert_int_eq(pthread_create(&t[i], NULL, racer, &got[i]), 0);
		ok = aborted = 0;
		for (int i = 0; i < RACERS; i++) {
			pthread_join(t[i], NULL);
			ok += got[i] == GRPC_STATUS_OK;
			aborted += got[i] == GRPC_STATUS_ABORTED;
		}
		pthread_barrier_destroy(&bar);
		ck_assert_int_eq(ok, 1);
		ck_assert_int_eq(aborted, RACERS - 1);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("csi");
	TCase *tc = tcase_create("endpoint");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, endpoint_forms);
	tcase_add_test(tc, socket_clear);
	suite_add_tcase(s, tc);
	tc = tcase_create("inflight");
	tcase_add_test(tc, inflight_one_per_volume);
	tcase_add_test(tc, inflight_race);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
