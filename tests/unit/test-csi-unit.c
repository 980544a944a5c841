/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for csi/endpoint.c, csi/inflight.c and csi/node-fs.c, without gRPC: the
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
#include <sys/mount.h>
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

/* ---- node-fs.c: the Node service's decisions ---- */

static uint8_t probe_buf[CSI_FS_PROBE_BYTES];

static enum csi_fs_probe probe(char *type)
{
	return csi_fs_probe(probe_buf, sizeof probe_buf, type, 64);
}

START_TEST(fs_probe_mkfs_rule)
{
	char type[64];

	memset(probe_buf, 0, sizeof probe_buf);
	ck_assert_int_eq(probe(type), CSI_FS_EMPTY);
	/* ext2, ext3 (journal), ext4 (extents) */
	probe_buf[1024 + 56] = 0x53;
	probe_buf[1024 + 57] = 0xEF;
	ck_assert_int_eq(probe(type), CSI_FS_FOUND);
	ck_assert_str_eq(type, "ext2");
	probe_buf[1024 + 0x5c] = 0x4;
	ck_assert_int_eq(probe(type), CSI_FS_FOUND);
	ck_assert_str_eq(type, "ext3");
	probe_buf[1024 + 0x60] = 0x40;
	ck_assert_int_eq(probe(type), CSI_FS_FOUND);
	ck_assert_str_eq(type, "ext4");
	memset(probe_buf, 0, sizeof probe_buf);
	memcpy(probe_buf, "XFSB", 4);
	ck_assert_int_eq(probe(type), CSI_FS_FOUND);
	ck_assert_str_eq(type, "xfs");
	memset(probe_buf, 0, sizeof probe_buf);
	memcpy(probe_buf + 0x10040, "_BHRfS_M", 8);
	ck_assert_int_eq(probe(type), CSI_FS_FOUND);
	ck_assert_str_eq(type, "btrfs");
	/* a partition table, or any byte that is not zero: never formatted */
	memset(probe_buf, 0, sizeof probe_buf);
	probe_buf[510] = 0x55;
	probe_buf[511] = 0xAA;
	ck_assert_int_eq(probe(type), CSI_FS_DATA);
	memset(probe_buf, 0, sizeof probe_buf);
	probe_buf[CSI_FS_PROBE_BYTES - 1] = 1;
	ck_assert_int_eq(probe(type), CSI_FS_DATA);
	ck_assert_ptr_nonnull(strstr(type, "131071"));
	/* a short read (a tiny device) of zeros is empty, of data is data */
	memset(probe_buf, 0, sizeof probe_buf);
	ck_assert_int_eq(csi_fs_probe(probe_buf, 512, type, sizeof type), CSI_FS_EMPTY);
	probe_buf[3] = 7;
	ck_assert_int_eq(csi_fs_probe(probe_buf, 512, type, sizeof type), CSI_FS_DATA);
}
END_TEST

START_TEST(mount_flags)
{
	char *f1[] = { "noatime", "discard", "errors=remount-ro", "defaults", "nodev" };
	char *f2[] = { "ro" };
	char *f3[] = { "bind" };
	char *f4[] = { "noatime,nodev" };
	char data[256], why[256];
	unsigned long ms;

	ck_assert_int_eq(csi_mount_flags(f1, 5, false, &ms, data, sizeof data, why, sizeof why), 0);
	ck_assert_uint_eq(ms, MS_NOATIME | MS_NODEV);
	ck_assert_str_eq(data, "discard,errors=remount-ro");
	ck_assert_int_eq(csi_mount_flags(f2, 1, false, &ms, data, sizeof data, why, sizeof why), 0);
	ck_assert_uint_eq(ms, MS_RDONLY);
	ck_assert_str_eq(data, "");
	ck_assert_int_eq(csi_mount_flags(NULL, 0, true, &ms, data, sizeof data, why, sizeof why), 0);
	ck_assert_uint_eq(ms, MS_RDONLY);
	ck_assert_int_eq(csi_mount_flags(f3, 1, false, &ms, data, sizeof data, why, sizeof why),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(why, "'bind'"));
	ck_assert_int_eq(csi_mount_flags(f4, 1, false, &ms, data, sizeof data, why, sizeof why),
			 -EINVAL);
	ck_assert_int_eq(csi_mount_flags(f1, 5, false, &ms, data, 8, why, sizeof why), -E2BIG);
}
END_TEST

START_TEST(mountinfo_line)
{
	struct csi_mountinfo mi;

	ck_assert_int_eq(csi_mountinfo_parse("36 35 43:1 / /var/lib/kubelet/a\\040b rw,noatime "
					     "shared:1 - ext4 /dev/nbd1 rw,errors=continue\n", &mi), 0);
	ck_assert_uint_eq(mi.major, 43);
	ck_assert_uint_eq(mi.minor, 1);
	ck_assert_str_eq(mi.mountpoint, "/var/lib/kubelet/a b");
	ck_assert_str_eq(mi.fstype, "ext4");
	ck_assert_str_eq(mi.source, "/dev/nbd1");
	ck_assert(!mi.readonly);
	ck_assert_int_eq(csi_mountinfo_parse("40 36 43:1 /d /t ro,relatime - ext4 /dev/nbd1 ro\n",
					     &mi), 0);
	ck_assert(mi.readonly);
	ck_assert_str_eq(mi.root, "/d");
	ck_assert_int_eq(csi_mountinfo_parse("garbage\n", &mi), -EINVAL);
	ck_assert_int_eq(csi_mountinfo_parse("1 2 3:4 / /x rw shared:1\n", &mi), -EINVAL);
}
END_TEST

START_TEST(stage_record)
{
	struct csi_stage s = { 0 }, t;
	char path[512];
	char *j;

	csi_state_file(path, sizeof path, "/var/lib/qbd-csi", "pvc-1a.b_c");
	ck_assert_str_eq(path, "/var/lib/qbd-csi/pvc-1a.b_c.json");
	csi_state_file(path, sizeof path, "/s", "../a/b c");
	ck_assert_str_eq(path, "/s/%2e.%2fa%2fb%20c.json");
	snprintf(s.volume_id, sizeof s.volume_id, "pvc-1");
	snprintf(s.volume, sizeof s.volume, "vol1");
	snprintf(s.device, sizeof s.device, "/dev/nbd3");
	snprintf(s.staging, sizeof s.staging, "/var/lib/kubelet/x \"y\"");
	snprintf(s.fs_type, sizeof s.fs_type, "ext4");
	j = csi_stage_to_json(&s);
	ck_assert_ptr_nonnull(j);
	ck_assert_int_eq(csi_stage_from_json(j, &t), 0);
	free(j);
	ck_assert_str_eq(t.volume_id, "pvc-1");
	ck_assert_str_eq(t.volume, "vol1");
	ck_assert_str_eq(t.device, "/dev/nbd3");
	ck_assert_str_eq(t.staging, s.staging);
	ck_assert_str_eq(t.fs_type, "ext4");
	ck_assert(!t.block);
	s.block = true;
	s.fs_type[0] = 0;
	j = csi_stage_to_json(&s);
	ck_assert_int_eq(csi_stage_from_json(j, &t), 0);
	free(j);
	ck_assert(t.block);
	/* what a restart must not trust */
	ck_assert_int_eq(csi_stage_from_json("", &t), -EINVAL);
	ck_assert_int_eq(csi_stage_from_json("[]", &t), -EINVAL);
	ck_assert_int_eq(csi_stage_from_json("{\"volume_id\":\"v\",\"volume\":\"v\","
					     "\"device\":\"/etc/passwd\",\"staging_target_path\":"
					     "\"/s\",\"access\":\"mount\"}", &t), -EINVAL);
	ck_assert_int_eq(csi_stage_from_json("{\"volume_id\":\"v\",\"volume\":\"v\","
					     "\"device\":\"/dev/nbd0\",\"staging_target_path\":"
					     "\"/s\",\"access\":\"file\"}", &t), -EINVAL);
	ck_assert_int_eq(csi_stage_from_json("{\"volume_id\":\"v\",\"volume\":\"v\","
					     "\"device\":\"/dev/nbd0\",\"access\":\"block\"}", &t),
			 -EINVAL);
	ck_assert_int_eq(csi_stage_from_json("{\"volume_id\":\"v\",\"volume\":\"v\","
					     "\"device\":\"/dev/nbd0\",\"staging_target_path\":"
					     "\"/s\",\"access\":\"block\"}", &t), 0);
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
	tc = tcase_create("node");
	tcase_add_test(tc, fs_probe_mkfs_rule);
	tcase_add_test(tc, mount_flags);
	tcase_add_test(tc, mountinfo_line);
	tcase_add_test(tc, stage_record);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
