# SPDX-License-Identifier: Apache-2.0
# Fuzzing (tests/fuzz/README.md), included by the top Makefile.
#
#   make fuzz [FUZZ_TIME=60]   install clang's libFuzzer, build each target
#                              into build-fuzz/ and run it FUZZ_TIME seconds
#                              on a copy of its corpus; a crash fails, its
#                              input left in build-fuzz/crashes/TARGET/
#   make unit-bins             (part of make check) also builds
#                              $(BUILD)/tests/fuzz/replay-TARGET with the
#                              normal compiler; tests/run-tests runs them
#                              over tests/fuzz/corpus/ and tests/fuzz/regress/

FUZZ_TARGETS = wire nbd
FUZZ_TIME   ?= 60
FUZZ_BUILD  ?= build-fuzz
FUZZ_CC     ?= clang
# The project's sources are compiled again here, by clang with the
# fuzzer's coverage instrumentation (the gcc objects of $(BUILD) have none).
FUZZ_SAN     = address,undefined
FUZZ_CFLAGS  = -std=gnu11 -D_GNU_SOURCE $(WARN) -O1 -g -fno-omit-frame-pointer \
	-fsanitize=fuzzer-no-link,$(FUZZ_SAN) -fno-sanitize-recover=all \
	-I. -Icommon -I$(FUZZ_BUILD)/gen $(PKG_CFLAGS)
FUZZ_LDFLAGS = -fsanitize=fuzzer,$(FUZZ_SAN) -pthread
# libFuzzer options of make fuzz: an input running over 10 s is a hang,
# inputs up to 20000 bytes (64 NBD requests, a few WRITEs of data);
# the targets' log lines go to /dev/null (the fuzzer's and the sanitizers'
# reports do not).
FUZZ_OPTS   ?= -timeout=10 -max_len=20000 -close_fd_mask=2 -print_final_stats=1

FUZZ_PROTO_C = $(FUZZ_BUILD)/gen/replicator/wire/proto/qbd.pb-c.c
FUZZ_PROTO_H = $(FUZZ_BUILD)/gen/replicator/wire/proto/qbd.pb-c.h
fuzz_obj = $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(1))

# What each target links besides its own file.
FUZZ_SRC_wire = replicator/wire/wire.c $(wildcard replicator/core/*.c) \
	replicator/chunkd/validate.c common/log.c common/sparse.c common/util.c
FUZZ_OBJ_wire = $(call fuzz_obj,tests/fuzz/fuzz-wire.c $(FUZZ_SRC_wire)) \
	$(FUZZ_BUILD)/gen/replicator/wire/proto/qbd.pb-c.o
FUZZ_SRC_nbd  = nbd-frontend/server.c nbd-frontend/conn.c nbd-frontend/handshake.c \
	nbd-frontend/transmission.c nbd-frontend/proto.c nbd-frontend/nbd-metrics.c \
	common/log.c common/metrics.c common/svc.c common/util.c
FUZZ_OBJ_nbd  = $(call fuzz_obj,tests/fuzz/fuzz-nbd.c $(FUZZ_SRC_nbd))

FUZZ_BINS = $(patsubst %,$(FUZZ_BUILD)/fuzz-%,$(FUZZ_TARGETS))

.PHONY: fuzz fuzz-bins fuzz-clean
fuzz-bins: $(FUZZ_BINS)

$(FUZZ_PROTO_C) $(FUZZ_PROTO_H) &: $(PROTO)
	@mkdir -p $(dir $(FUZZ_PROTO_C))
	protoc-c --c_out=$(FUZZ_BUILD)/gen $(PROTO)

$(FUZZ_BUILD)/gen/replicator/wire/proto/qbd.pb-c.o: $(FUZZ_PROTO_C)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Wno-unused-parameter -c -o $@ $<

$(FUZZ_BUILD)/%.o: %.c | $(FUZZ_PROTO_H)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -MMD -MP -c -o $@ $<

$(FUZZ_BUILD)/fuzz-wire: $(FUZZ_OBJ_wire)
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ $(LIBS)
$(FUZZ_BUILD)/fuzz-nbd: $(FUZZ_OBJ_nbd)
	$(FUZZ_CC) $(FUZZ_LDFLAGS) -o $@ $^ $(LIBS)

# Each target runs on build-fuzz/corpus/TARGET, which keeps what earlier
# runs found and gets the seeds and regression inputs copied in.
fuzz:
	tools/install-deps --fuzz
	$(MAKE) fuzz-bins
	@fail=""; \
	for t in $(FUZZ_TARGETS); do \
		work=$(FUZZ_BUILD)/corpus/$$t; crashes=$(FUZZ_BUILD)/crashes/$$t; \
		mkdir -p $$work $$crashes || exit 1; \
		find tests/fuzz/corpus/$$t tests/fuzz/regress/$$t -type f ! -name '.*' \
			-exec cp {} $$work/ \; || exit 1; \
		echo "fuzz: $$t, $(FUZZ_TIME) s on $$work"; \
		if ! $(FUZZ_BUILD)/fuzz-$$t $(FUZZ_OPTS) -max_total_time=$(FUZZ_TIME) \
			-artifact_prefix=$$crashes/ $$work; then \
			echo "fuzz: $$t FAILED; its input:" $$(ls -t $$crashes | head -1); \
			fail="$$fail $$t"; \
		fi; \
	done; \
	if [ -n "$$fail" ]; then \
		echo "fuzz: FAILED:$$fail (inputs in $(FUZZ_BUILD)/crashes/; replay one with" \
			"$(FUZZ_BUILD)/fuzz-TARGET FILE, then keep it in tests/fuzz/regress/TARGET/)"; \
		exit 1; \
	fi

fuzz-clean:
	rm -rf $(FUZZ_BUILD)
clean: fuzz-clean

# The replay binaries: the same targets with tests/fuzz/replay.c for a
# main, built like the unit tests (make check: ASan and UBSan).
FUZZ_REPLAY = $(patsubst %,$(BUILD)/tests/fuzz/replay-%,$(FUZZ_TARGETS))
unit-bins: $(FUZZ_REPLAY)

$(BUILD)/tests/fuzz/replay-wire: tests/fuzz/fuzz-wire.c tests/fuzz/replay.c tests/fuzz/fuzz.h \
		$(A_CHUNKD) $(A_CORE) $(A_WIRE) $(A_COMMON) $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ tests/fuzz/fuzz-wire.c tests/fuzz/replay.c \
		$(A_CHUNKD) $(A_CORE) $(A_WIRE) $(A_COMMON) $(LIBS)
$(BUILD)/tests/fuzz/replay-nbd: tests/fuzz/fuzz-nbd.c tests/fuzz/replay.c tests/fuzz/fuzz.h \
		$(A_NBD) $(A_COMMON) $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ tests/fuzz/fuzz-nbd.c tests/fuzz/replay.c \
		$(A_NBD) $(A_COMMON) $(LIBS)

-include $(shell find $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
