/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for the service pieces of common/: the settings file
 * (conf.c), the cluster secret and its challenge-response (auth.c), and
 * the metrics text (metrics.c). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/conf.h"
#include "common/metrics.h"

static char dir[64];

static void setup(void)
{
	/* mkdtemp's template: six X at the end */
	int n = snprintf(dir, sizeof dir, "/tmp/qbd-unit-svc.");
	memset(dir + n, 'X', 6);
	dir[n + 6] = 0;
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static const char *write_file(const char *name, const char *text, mode_t mode)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	ck_assert_int_eq(chmod(path, mode), 0);
	return path;
}

START_TEST(conf_lookup_order_and_lines)
{
	const char *p = write_file("a.conf",
		"; comment\n"
		"[cluster]\n"
		"etcd = http://e:2379\n"
		"\n"
		"[chunkd]\n"
		"zone = a\n"
		"scrub-rate = 4M\n"
		"[chunkd.one]\n"
		"scrub-rate = 0 ; off here\n", 0644);
	struct qbd_conf *c;
	struct qbd_conf_val v;
	struct qbd_setting s;
	char err[256];

	ck_assert_int_eq(qbd_conf_load(p, 1, &c, err, sizeof err), 0);
	/* instance first, then program, then cluster */
	ck_assert_int_eq(qbd_conf_get(c, "chunkd", "one", "scrub-rate", 0, &v), 1);
	ck_assert_str_eq(v.value, "0");
	ck_assert_int_eq(v.line, 9);
	ck_assert_int_eq(qbd_conf_get(c, "chunkd", "two", "scrub-rate", 0, &v), 1);
	ck_assert_str_eq(v.value, "4M");
	ck_assert_int_eq(v.line, 7);
	ck_assert_int_eq(qbd_conf_get(c, "chunkd", "one", "etcd", 0, &v), 0);
	ck_assert_int_eq(qbd_conf_get(c, "chunkd", "one", "etcd", 1, &v), 1);
	ck_assert_str_eq(v.value, "http://e:2379");
	/* a flag beats the environment, which beats the file */
	setenv("QBD_TEST_ZONE", "env-zone", 1);
	ck_assert_int_eq(qbd_conf_resolve(c, "chunkd", NULL, "zone", "flag-zone", "QBD_TEST_ZONE",
					  0, &s), 1);
	ck_assert_str_eq(s.value, "flag-zone");
	ck_assert_str_eq(s.where, "--zone");
	ck_assert_int_eq(qbd_conf_resolve(c, "chunkd", NULL, "zone", NULL, "QBD_TEST_ZONE", 0, &s), 1);
	ck_assert_str_eq(s.value, "env-zone");
	unsetenv("QBD_TEST_ZONE");
	ck_assert_int_eq(qbd_conf_resolve(c, "chunkd", NULL, "zone", NULL, "QBD_TEST_ZONE", 0, &s), 1);
	ck_assert_str_eq(s.value, "a");
	ck_assert_ptr_nonnull(strstr(s.where, "a.conf:6 (zone in [chunkd])"));
	ck_assert_int_eq(qbd_conf_resolve(c, "chunkd", NULL, "nope", NULL, NULL, 1, &s), 0);
	qbd_conf_free(c);
}
END_TEST

START_TEST(conf_errors)
{
	static const char *const keys[] = { "zone", NULL };
	struct qbd_conf *c;
	char err[256];

	/* syntax error: named with its line */
	const char *p = write_file("b.conf", "[chunkd]\nzone = a\n[broken\n", 0644);
	ck_assert_int_eq(qbd_conf_load(p, 1, &c, err, sizeof err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "b.conf:3: syntax error"));
	/* absent: an error only when asked for by name */
	char path[128];
	snprintf(path, sizeof path, "%s/absent.conf", dir);
	ck_assert_int_eq(qbd_conf_load(path, 1, &c, err, sizeof err), -ENOENT);
	ck_assert_int_eq(qbd_conf_load(path, 0, &c, err, sizeof err), 0);
	qbd_conf_free(c);
	/* unknown keys and sections are counted; other programs' keys not */
	p = write_file("c.conf", "[chunkd]\nzone = a\nlisen = x\n[nbd]\nwhatever = 1\n"
			 "[cluster]\nbogus = 1\n[chunkdx]\nzone = b\n", 0644);
	ck_assert_int_eq(qbd_conf_load(p, 1, &c, err, sizeof err), 0);
	ck_assert_int_eq(qbd_conf_check_keys(c, "chunkd", keys), 3);
	qbd_conf_free(c);
}
END_TEST

START_TEST(secret_file_rules)
{
	struct qbd_secret s;
	char err[256], path[128];

	const char *p = write_file("s1", "0123456789abcdef0123\n", 0600);
	ck_assert_int_eq(qbd_secret_load(p, &s, err, sizeof err), 0);
	ck_assert_uint_eq(s.len, 20);   /* the newline is not part of it */
	p = write_file("s2", "0123456789abcdef0123\n", 0640);
	ck_assert_int_eq(qbd_secret_load(p, &s, err, sizeof err), -EPERM);
	ck_assert_ptr_nonnull(strstr(err, "mode 0640"));
	ck_assert_uint_eq(s.len, 0);
	p = write_file("s3", "short\n", 0600);
	ck_assert_int_eq(qbd_secret_load(p, &s, err, sizeof err), -EINVAL);
	snprintf(path, sizeof path, "%s/new", dir);
	ck_assert_int_eq(qbd_secret_create(path), 0);
	ck_assert_int_eq(qbd_secret_create(path), -EEXIST);
	ck_assert_int_eq(qbd_secret_load(path, &s, err, sizeof err), 0);
	ck_assert_uint_eq(s.len, 64);
	struct stat st;
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
}
END_TEST

START_TEST(challenge_response)
{
	struct qbd_secret k, other;
	uint8_t nc[QBD_AUTH_NONCE], ns[QBD_AUTH_NONCE], mac[QBD_AUTH_MAC];
	char err[256];

	ck_assert_int_eq(qbd_secret_load(write_file("k", "the cluster secret, 1\n", 0600),
					 &k, err, sizeof err), 0);
	ck_assert_int_eq(qbd_secret_load(write_file("o", "the cluster secret, 2\n", 0600),
					 &other, err, sizeof err), 0);
	qbd_auth_nonce(nc);
	qbd_auth_nonce(ns);
	ck_assert_mem_ne(nc, ns, QBD_AUTH_NONCE);
	/* the server's proof */
	qbd_auth_mac(&k, QBD_AUTH_SERVER, 42, nc, ns, mac);
	ck_assert(qbd_auth_check(&k, QBD_AUTH_SERVER, 42, nc, ns, mac, sizeof mac));
	/* another secret, another cluster, the other role, swapped or other
	 * nonces, a cut or altered proof: all refused */
	ck_assert(!qbd_auth_check(&other, QBD_AUTH_SERVER, 42, nc, ns, mac, sizeof mac));
	ck_assert(!qbd_auth_check(&k, QBD_AUTH_SERVER, 43, nc, ns, mac, sizeof mac));
	ck_assert(!qbd_auth_check(&k, QBD_AUTH_CLIENT, 42, nc, ns, mac, sizeof mac));
	ck_assert(!qbd_auth_check(&k, QBD_AUTH_SERVER, 42, ns, nc, mac, sizeof mac));
	ck_assert(!qbd_auth_check(&k, QBD_AUTH_SERVER, 42, nc, nc, mac, sizeof mac));
	ck_assert(!qbd_auth_check(&k, QBD_AUTH_SERVER, 42, nc, ns, mac, sizeof mac - 1));
	mac[5] ^= 1;
	ck_assert(!qbd_auth_check(&k, QBD_AUTH_SERVER, 42, nc, ns, mac, sizeof mac));
	/* no secret: nothing is ever proven */
	struct qbd_secret none = { 0 };
	ck_assert(!qbd_auth_check(&none, QBD_AUTH_SERVER, 42, nc, ns, mac, sizeof mac));
}
END_TEST

START_TEST(metrics_text)
{
	struct qbd_mbuf b = { 0 };
	struct qbd_hist h = { 0 };

	qbd_hist_add(&h, 40000);       /* <= 50 us */
	qbd_hist_add(&h, 3000000);     /* <= 5 ms */
	qbd_hist_add(&h, 9000000000u); /* above every bound */
	qbd_mbuf_head(&b, "x_seconds", "histogram", "test");
	qbd_hist_render(&b, "x_seconds", "op=\"w\"", &h);
	for (int i = 0; i < 2000; i++)  /* grows past its first block */
		qbd_mbuf_printf(&b, "y %d\n", i);
	ck_assert(!b.failed);
	b.p[b.len] = 0;   /* room: vsnprintf wrote a terminator */
	ck_assert_ptr_nonnull(strstr(b.p, "# TYPE x_seconds histogram\n"));
	ck_assert_ptr_nonnull(strstr(b.p, "x_seconds_bucket{op=\"w\",le=\"5e-05\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(b.p, "x_seconds_bucket{op=\"w\",le=\"0.0025\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(b.p, "x_seconds_bucket{op=\"w\",le=\"0.005\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(b.p, "x_seconds_bucket{op=\"w\",le=\"2.5\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(b.p, "x_seconds_bucket{op=\"w\",le=\"+Inf\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(b.p, "x_seconds_count{op=\"w\"} 3\n"));
	ck_assert_ptr_nonnull(strstr(b.p, "x_seconds_sum{op=\"w\"} 9.003040000\n"));
	ck_assert_ptr_nonnull(strstr(b.p, "\ny 1999\n"));
	free(b.p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("service");
	TCase *tc = tcase_create("service");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, conf_lookup_order_and_lines);
	tcase_add_test(tc, conf_errors);
	tcase_add_test(tc, secret_file_rules);
	tcase_add_test(tc, challenge_response);
	tcase_add_test(tc, metrics_text);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
