/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Clock steps for the fault suite: an LD_PRELOAD shim that moves the
 * realtime clock of one process. clock_gettime(CLOCK_REALTIME[_COARSE]),
 * gettimeofday and time return the real time plus the seconds written in
 * the file named by $QBD_CLOCKSTEP_FILE (a decimal number, may be
 * negative; missing or empty: 0), re-read at most every 100 ms. The
 * monotonic clocks are left alone, as a step of the system clock leaves
 * them. A test helper: never installed.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static clock_gettime_fn real_clock_gettime(void)
{
	static clock_gettime_fn fn;
	clock_gettime_fn f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);

	if (!f) {
		f = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
		__atomic_store_n(&fn, f, __ATOMIC_RELEASE);
	}
	return f;
}

/* The offset in ns; the file is read again 100 ms after the last read. */
static long long step_ns(void)
{
	static long long offset, next_check;
	struct timespec now;
	long long t;
	const char *path = getenv("QBD_CLOCKSTEP_FILE");
	char buf[64];
	ssize_t n;
	int fd;

	if (!path || real_clock_gettime()(CLOCK_MONOTONIC, &now) != 0)
		return 0;
	t = now.tv_sec * 1000000000LL + now.tv_nsec;
	if (t < __atomic_load_n(&next_check, __ATOMIC_RELAXED))
		return __atomic_load_n(&offset, __ATOMIC_RELAXED);
	__atomic_store_n(&next_check, t + 100000000LL, __ATOMIC_RELAXED);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		__atomic_store_n(&offset, 0, __ATOMIC_RELAXED);
		return 0;
	}
	n = read(fd, buf, sizeof buf - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	__atomic_store_n(&offset, (long long)(strtod(buf, NULL) * 1e9), __ATOMIC_RELAXED);
	return __atomic_load_n(&offset, __ATOMIC_RELAXED);
}

static void shift(struct timespec *ts)
{
	long long t = ts->tv_sec * 1000000000LL + ts->tv_nsec + step_ns();

	ts->tv_sec = t / 1000000000LL;
	ts->tv_nsec = t % 1000000000LL;
	if (ts->tv_nsec < 0) {
		ts->tv_nsec += 1000000000LL;
		ts->tv_sec--;
	}
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
	int r = real_clock_gettime()(id, ts);

	if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
		shift(ts);
	return r;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
	struct timespec ts;

	(void)tz;
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return -1;
	/* glibc declares tv nonnull */
	tv->tv_sec = ts.tv_sec;
	tv->tv_usec = ts.tv_nsec / 1000;
	return 0;
}

time_t time(time_t *out)
{
	struct timespec ts;
	time_t t = clock_gettime(CLOCK_REALTIME, &ts) == 0 ? ts.tv_sec : (time_t)-1;

	if (out)
		*out = t;
	return t;
}
