/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the fuzz targets share: the libFuzzer entry point, and
 * fuzz_fail, which reports a property a target checks as broken and
 * aborts (libFuzzer then keeps the input).
 */
#ifndef QBD_FUZZ_H
#define QBD_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The sanitizers' report stream, where there is one: make fuzz sends the
 * targets' stderr to /dev/null (-close_fd_mask=2), not that. */
extern void __sanitizer_report_error_summary(const char *summary) __attribute__((weak));

static inline void fuzz_fail(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));

/* Print the message on stderr and in the sanitizers' report, then abort.
 * Not async-signal-safe: from a signal handler only to end the process. */
static inline void fuzz_fail(const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s\n", what);
	if (__sanitizer_report_error_summary)
		__sanitizer_report_error_summary(what);
	abort();
}

#endif
