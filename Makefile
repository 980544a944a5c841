# SPDX-License-Identifier: Apache-2.0
# qbd build: one non-recursive Makefile.
#
#   make                 build qbd, qbd-chunkd, qbd-nbd, qbd-managerd, qbd-csi,
#                        qbd-operator, libqbd.{a,so}
#   make check           install missing packages, build with ASan/UBSan
#                        into build-check/, run unit and integration tests
#   make demo            install missing packages, build, run the demo
#   make check-kernel    the kernel test: qbd attach in a qemu guest
#   make check-image     the runtime image's packages (deploy/image/)
#   make install         PREFIX=/usr/local DESTDIR=
#   make clean
#   make SANITIZE=address,undefined BUILD=build-asan   sanitizer build

.DEFAULT_GOAL := all

PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
LIBDIR   ?= $(PREFIX)/lib
INCDIR   ?= $(PREFIX)/include
UNITDIR  ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
DOCDIR   ?= $(PREFIX)/share/doc/qbd
DESTDIR  ?=
BUILD    ?= build
# build-check is always the sanitizer build, however make is invoked (a
# later `make install BUILD=build-check` must not relink it without).
ifeq ($(notdir $(abspath $(BUILD))),build-check)
SANITIZE ?= address,undefined
CFLAGS   ?= -O1 -g
endif
SANITIZE ?=

CC       ?= cc
CFLAGS   ?= -O2 -g
WARN      = -Wall -Wextra -Werror -Wshadow -Wvla -Wno-missing-field-initializers
PKGS      = liburing libuv libprotobuf-c libxxhash libcurl json-c libsodium inih \
            libsystemd libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) libnl-genl-3.0 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null)
# Generic netlink (kernel attach): only qbd-nbd and the CLI need it.
NL_LIBS    := $(shell pkg-config --libs libnl-genl-3.0 2>/dev/null)
# gRPC's core library: only qbd-csi (csi/) needs it.
GRPC_CFLAGS := $(shell pkg-config --cflags grpc 2>/dev/null)
GRPC_LIBS   := $(shell pkg-config --libs grpc 2>/dev/null)
# The version qbd-csi reports (--version, GetPluginInfo's vendor_version).
VERSION  = 0.1.0

ALL_CFLAGS = -std=gnu11 -fPIC -D_GNU_SOURCE $(WARN) $(CFLAGS) \
	-I. -Icommon -I$(BUILD)/gen $(PKG_CFLAGS)
ifneq ($(SANITIZE),)
ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
SAN_LDFLAGS = -fsanitize=$(SANITIZE)
endif
ALL_LDFLAGS = $(LDFLAGS) $(SAN_LDFLAGS) -pthread
LIBS = $(PKG_LIBS) -lm

PROTO      = replicator/wire/proto/qbd.proto
PROTO_C    = $(BUILD)/gen/replicator/wire/proto/qbd.pb-c.c
PROTO_H    = $(BUILD)/gen/replicator/wire/proto/qbd.pb-c.h
# The CSI messages (csi/proto/csi.proto), for qbd-csi only.
CSI_PROTO   = csi/proto/csi.proto
CSI_PROTO_C = $(BUILD)/gen/csi/proto/csi.pb-c.c
CSI_PROTO_H = $(BUILD)/gen/csi/proto/csi.pb-c.h

# Programs have one *-main.c each; everything else goes into libraries.
MAINS      = replicator/chunkd/chunkd-main.c nbd-frontend/nbd-main.c tools/qbd-main.c \
             replicator/manager/managerd.c csi/csi-main.c operator/operator-main.c
COMMON_SRC = $(wildcard common/*.c)
ENGINE_SRC = $(wildcard engine/*.c)
WIRE_SRC   = $(wildcard replicator/wire/*.c)
CORE_SRC   = $(wildcard replicator/core/*.c)
META_SRC   = $(wildcard replicator/meta/*.c)
CLIENT_SRC = $(wildcard replicator/client/*.c)
ADMIN_SRC  = $(wildcard replicator/admin/*.c)
CHUNKD_SRC = $(filter-out $(MAINS),$(wildcard replicator/chunkd/*.c))
MANAGER_SRC = $(filter-out $(MAINS),$(wildcard replicator/manager/*.c))
NBD_SRC    = $(filter-out $(MAINS),$(wildcard nbd-frontend/*.c))
TOOLS_SRC  = $(filter-out $(MAINS),$(wildcard tools/*.c))
# csi/: controller*.c, node*.c and the rest, every file but csi-main.c.
CSI_SRC    = $(filter-out $(MAINS),$(wildcard csi/*.c))
OPERATOR_SRC = $(filter-out $(MAINS),$(wildcard operator/*.c))

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))
PB_OBJ     = $(BUILD)/gen/replicator/wire/proto/qbd.pb-c.o
CSI_PB_OBJ = $(BUILD)/gen/csi/proto/csi.pb-c.o

# One archive per module; programs and tests link the ones they need, in
# dependency order (a module only uses modules to its right).
A_COMMON = $(BUILD)/lib/libcommon.a
A_WIRE   = $(BUILD)/lib/libwire.a
A_ENGINE = $(BUILD)/lib/libengine.a
A_CORE   = $(BUILD)/lib/libcore.a
A_META   = $(BUILD)/lib/libmeta.a
A_CLIENT = $(BUILD)/lib/libclient.a
A_ADMIN  = $(BUILD)/lib/libadmin.a
A_CHUNKD = $(BUILD)/lib/libchunkd.a
A_MANAGER = $(BUILD)/lib/libmanager.a
A_NBD    = $(BUILD)/lib/libnbdfe.a
A_TOOLS  = $(BUILD)/lib/libtools.a
A_CSI    = $(BUILD)/lib/libcsi.a
A_OPERATOR = $(BUILD)/lib/liboperator.a

$(A_COMMON): $(call obj,$(COMMON_SRC))
$(A_WIRE):   $(call obj,$(WIRE_SRC)) $(PB_OBJ)
$(A_ENGINE): $(call obj,$(ENGINE_SRC))
$(A_CORE):   $(call obj,$(CORE_SRC))
$(A_META):   $(call obj,$(META_SRC))
$(A_CLIENT): $(call obj,$(CLIENT_SRC))
$(A_ADMIN):  $(call obj,$(ADMIN_SRC))
$(A_CHUNKD): $(call obj,$(CHUNKD_SRC))
$(A_MANAGER): $(call obj,$(MANAGER_SRC))
$(A_NBD):    $(call obj,$(NBD_SRC))
$(A_TOOLS):  $(call obj,$(TOOLS_SRC))
$(A_CSI):    $(call obj,$(CSI_SRC)) $(CSI_PB_OBJ)
$(A_OPERATOR): $(call obj,$(OPERATOR_SRC))
$(BUILD)/lib/%.a:
	@mkdir -p $(dir $@)
	@rm -f $@
	ar rcs $@ $^

# libqbd: the client side only. It must never reach engine/ (DESIGN.md);
# linking the shared library with --no-undefined proves it.
LIBQBD_A   = $(A_CLIENT) $(A_CORE) $(A_META) $(A_WIRE) $(A_COMMON)
LIBQBD_OBJ = $(call obj,$(CLIENT_SRC) $(CORE_SRC) $(META_SRC) $(WIRE_SRC) $(COMMON_SRC)) $(PB_OBJ)
CHUNKD_A   = $(A_CHUNKD) $(A_ENGINE) $(A_META) $(A_WIRE) $(A_COMMON)
NBD_A      = $(A_NBD) $(LIBQBD_A)
# qbd-managerd: a writer like any other (libqbd), and meta for the rest.
MANAGER_A  = $(A_MANAGER) $(LIBQBD_A)
TOOLS_A    = $(A_TOOLS) $(A_ADMIN) $(A_NBD) $(LIBQBD_A)
# qbd-csi: gRPC and the CSI messages, meta for etcd, admin for volumes.
CSI_A      = $(A_CSI) $(A_ADMIN) $(A_META) $(A_WIRE) $(A_COMMON)
# qbd-operator: the API server over libcurl and json-c; qbd through its CLI.
OPERATOR_A = $(A_OPERATOR) $(A_COMMON)
ALL_A      = $(A_TOOLS) $(A_ADMIN) $(A_NBD) $(A_CHUNKD) $(A_MANAGER) $(A_ENGINE) $(LIBQBD_A)

UNIT_SRC   = $(wildcard tests/unit/test-*.c)
UNIT_BIN   = $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRC))
# Test helper programs (tests/helpers/NAME.c) link every module.
HELPER_SRC = $(wildcard tests/helpers/*.c)
HELPER_BIN = $(patsubst tests/helpers/%.c,$(BUILD)/tests/helpers/%,$(HELPER_SRC))

# What each unit test links (default: everything).
TEST_A_test-engine = $(A_ENGINE) $(A_COMMON)
TEST_A_test-wire   = $(A_WIRE) $(A_COMMON)
TEST_A_test-chunkd = $(A_CHUNKD) $(A_ENGINE) $(A_META) $(A_WIRE) $(A_COMMON)
TEST_A_test-core   = $(A_CORE) $(A_COMMON)
TEST_A_test-meta   = $(A_META) $(A_WIRE) $(A_COMMON)
TEST_A_test-admin  = $(A_ADMIN) $(A_META) $(A_WIRE) $(A_COMMON)
TEST_A_test-manager = $(MANAGER_A)
TEST_A_test-nbd    = $(A_NBD) $(A_COMMON)
TEST_A_test-util   = $(A_COMMON)
TEST_A_test-kernel = $(A_NBD) $(A_COMMON)
# csi/endpoint.c, inflight.c and node-fs.c only (no handler file: the
# handlers need gRPC); the test has its own csi_fail, so nothing of gRPC
# is linked.
TEST_A_test-csi-unit = $(A_CSI) $(A_COMMON)
TEST_A_test-operator-unit = $(OPERATOR_A)
test_a = $(or $(TEST_A_$(1)),$(ALL_A))

# Deterministic simulation of the quorum core, and builds of it with one
# mechanism disabled on purpose (tests/run-tests expects each to fail).
# NO_JOINT and EARLY_PROMOTION are the core's membership rules
# (replicator/core); NO_CFG_CAS and NO_TOMBSTONE break the simulated etcd
# and chunk servers (QBD_SIM_MUTANT_* in tests/sim/sim.c).
SIM_MUTANTS = NO_FENCE NO_RECOVERY NO_RECOVERY_MAX NO_STALE NO_RESYNC NO_REPAIR NO_EPOCH_VERSION NO_LEASE NO_SUSPECT \
	NO_JOINT EARLY_PROMOTION NO_CFG_CAS NO_TOMBSTONE
SIM_BIN = $(BUILD)/tests/sim/qbd-sim \
	$(patsubst %,$(BUILD)/tests/sim/qbd-sim-mutant-%,$(SIM_MUTANTS))

# Crash-state harness of the engine, and builds of the engine with one
# crash-consistency mechanism disabled (tests/run-tests expects each to fail).
# Each mutant's #ifdef is in one file of engine/: NO_AL and NO_CLEAN_TRIM
# in al.c, NO_RECOVERY and NO_SUSPECT in recover.c, NO_HOLE_ZERO in
# write.c, NO_META_FLUSH in commit.c, NO_TOMBSTONE_SYNC in promise.c.
CRASH_MUTANTS = NO_AL NO_RECOVERY NO_HOLE_ZERO NO_SUSPECT NO_META_FLUSH NO_CLEAN_TRIM \
	NO_TOMBSTONE_SYNC
CRASH_BIN = $(BUILD)/tests/crash/qbd-crash \
	$(patsubst %,$(BUILD)/tests/crash/qbd-crash-mutant-%,$(CRASH_MUTANTS))

PROGS = $(BUILD)/qbd $(BUILD)/qbd-chunkd $(BUILD)/qbd-nbd $(BUILD)/qbd-managerd $(BUILD)/qbd-csi \
        $(BUILD)/qbd-operator
LIBS_OUT = $(BUILD)/libqbd.a $(BUILD)/libqbd.so

.PHONY: all check check-unit check-integration check-model soak demo install clean deps unit-bins
all: $(PROGS) $(LIBS_OUT) $(HELPER_BIN) $(SIM_BIN) $(CRASH_BIN)

$(PROTO_C) $(PROTO_H): $(PROTO)
	@mkdir -p $(dir $(PROTO_C))
	protoc-c --c_out=$(BUILD)/gen $(PROTO)

$(CSI_PROTO_C) $(CSI_PROTO_H): $(CSI_PROTO)
	@mkdir -p $(dir $(CSI_PROTO_C))
	protoc-c --c_out=$(BUILD)/gen $(CSI_PROTO)

$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	$(CC) $(ALL_CFLAGS) -Wno-unused-parameter -c -o $@ $<

$(BUILD)/%.o: %.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

# csi/ includes the generated CSI header and gRPC's.
$(call obj,$(CSI_SRC) csi/csi-main.c): $(CSI_PROTO_H)
$(call obj,$(CSI_SRC) csi/csi-main.c): ALL_CFLAGS += $(GRPC_CFLAGS) -DQBD_VERSION='"$(VERSION)"'

$(BUILD)/libqbd.a: $(LIBQBD_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libqbd.so: $(LIBQBD_OBJ) replicator/libqbd.map
	$(CC) -shared -Wl,--no-undefined -Wl,--version-script=replicator/libqbd.map \
		-Wl,-soname,libqbd.so.0 $(ALL_LDFLAGS) -o $@ $(LIBQBD_OBJ) $(LIBS)

$(BUILD)/qbd-chunkd: $(BUILD)/replicator/chunkd/chunkd-main.o $(CHUNKD_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)
$(BUILD)/qbd-nbd: $(BUILD)/nbd-frontend/nbd-main.o $(NBD_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) $(NL_LIBS)
$(BUILD)/qbd-managerd: $(BUILD)/replicator/manager/managerd.o $(MANAGER_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)
$(BUILD)/qbd-csi: $(BUILD)/csi/csi-main.o $(CSI_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) $(GRPC_LIBS)
$(BUILD)/qbd-operator: $(BUILD)/operator/operator-main.o $(OPERATOR_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)
$(BUILD)/qbd: $(BUILD)/tools/qbd-main.o $(TOOLS_A)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS) $(NL_LIBS)

.SECONDEXPANSION:
$(BUILD)/tests/unit/test-csi-unit: $(CSI_PROTO_H)
$(BUILD)/tests/unit/%: tests/unit/%.c $$(call test_a,$$*) $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP $(ALL_LDFLAGS) -o $@ $< $(call test_a,$*) $(LIBS) $(NL_LIBS) $(CHECK_LIBS)

# Extra libraries of a helper.
HELPER_LIBS_nbd-stream := $(shell pkg-config --libs libnbd 2>/dev/null)

$(BUILD)/tests/helpers/%: tests/helpers/%.c $(ALL_A) $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< -Wl,--start-group $(ALL_A) -Wl,--end-group $(LIBS) $(NL_LIBS) $(HELPER_LIBS_$*)

$(BUILD)/tests/sim/qbd-sim: tests/sim/sim.c $(A_CORE)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(A_CORE) $(LIBS)

$(BUILD)/tests/sim/qbd-sim-mutant-%: tests/sim/sim.c $(CORE_SRC) replicator/core/core.h \
		replicator/core/internal.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DQBD_CORE_MUTANT_$* -DQBD_SIM_MUTANT_$* $(ALL_LDFLAGS) -o $@ tests/sim/sim.c $(CORE_SRC) $(LIBS)

$(BUILD)/tests/crash/qbd-crash: tests/crash/crash.c $(A_ENGINE) $(A_COMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(A_ENGINE) $(A_COMMON) $(LIBS)

$(BUILD)/tests/crash/qbd-crash-mutant-%: tests/crash/crash.c $(ENGINE_SRC) $(COMMON_SRC) engine/engine.h engine/internal.h common/queue.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DQBD_ENGINE_MUTANT_$* $(ALL_LDFLAGS) -o $@ tests/crash/crash.c $(ENGINE_SRC) $(COMMON_SRC) $(LIBS)

# The engine against fio on the same filesystem (bench/engine.c):
# make bench-engine [BENCH_ENGINE_ARGS=--quick]. Not part of make check.
.PHONY: bench-bins bench-engine
bench-bins: $(BUILD)/bench/engine
$(BUILD)/bench/engine: bench/engine.c $(A_ENGINE) $(A_COMMON)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(A_ENGINE) $(A_COMMON) $(LIBS)
bench-engine: $(BUILD)/bench/engine
	$(BUILD)/bench/engine $(BENCH_ENGINE_ARGS)

# bench/qbd-io: one fio-like job on a volume through libqbd (no NBD hop),
# fio's JSON on stdout; built by make all.
all: $(BUILD)/bench/qbd-io
$(BUILD)/bench/qbd-io: bench/qbd-io.c $(LIBQBD_A)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(LIBQBD_A) $(LIBS)

# make bench [BENCH_ARGS=--quick]: qbd against the raw disk, qemu-nbd and
# nbdkit with fio (bench/run, bench/README.md). Not part of make check.
.PHONY: bench
bench:
	tools/install-deps --bench
	$(MAKE) all
	bench/run --build $(BUILD) $(BENCH_ARGS)

# make bench-rebuild [BENCH_REBUILD_ARGS=--quick]: a node removed under
# an attached volume with 4 GiB written, the rebuild against cp on the
# same disk, and QD1 write latency during it (bench/rebuild). Not part of
# make check.
.PHONY: bench-rebuild
bench-rebuild:
	tools/install-deps --bench
	$(MAKE) all
	bench/rebuild --build $(BUILD) $(BENCH_REBUILD_ARGS)

# make bench-scale [BENCH_SCALE_ARGS=--quick]: issue 20's costs at scale:
# the chunk server's memory per TiB stored and open time, qbd-nbd on a
# 64 TiB volume against a 64 GiB one, random reads, 1,000 volumes in etcd
# (bench/scale). Not part of make check.
.PHONY: bench-scale
bench-scale:
	tools/install-deps --bench
	$(MAKE) all
	bench/scale --build $(BUILD) $(BENCH_SCALE_ARGS)

deps:
	tools/install-deps

# make check: everything under AddressSanitizer and UBSan, in its own tree.
CHECK_BUILD = build-check
check: deps
	$(MAKE) BUILD=$(CHECK_BUILD) SANITIZE=address,undefined CFLAGS="-O1 -g" all unit-bins
	tests/run-tests $(CHECK_BUILD)

unit-bins: $(UNIT_BIN)

check-unit: all unit-bins
	tests/run-tests --unit-only $(BUILD)

check-integration: all
	tests/run-tests --integration-only $(BUILD)

# Long run of the deterministic simulation (make check runs 10,000 seeds).
SOAK_SEEDS ?= 1000000
soak: $(BUILD)/tests/sim/qbd-sim
	$(BUILD)/tests/sim/qbd-sim --seeds $(SOAK_SEEDS) --first 10001

# The Promela model of the protocol (spin), also part of make check.
check-model:
	tests/model/run

# The kernel test (tests/kernel/): Debian's kernel under qemu TCG, qbd
# attach with ext4 and failures inside the guest. Not part of make check.
.PHONY: check-kernel
check-kernel:
	tools/install-deps --kernel
	$(MAKE) all
	tests/kernel/run $(BUILD)

# The systemd units under a real systemd (tests/systemd/run): the host's
# systemd booted in a container by systemd-nspawn. Not part of make check.
.PHONY: check-systemd
check-systemd:
	tools/install-deps --systemd
	$(MAKE) all
	tests/systemd/run $(BUILD)

# The runtime image's package list (deploy/image/): the Dockerfile's
# runtime stage run in a chroot of a debootstrap root, with make install's
# programs, then ldd, --help and the programs they run checked in it
# (tests/image/run). CHECK_IMAGE_ARGS=--build-stage runs the build stage
# the same way and takes its programs instead. Downloads packages; not
# part of make check.
.PHONY: check-image
check-image:
	tools/install-deps --image
	$(MAKE) all
	tests/image/run $(CHECK_IMAGE_ARGS) $(BUILD)

# The fault suite (tests/fault/): zones as network namespaces, faults on
# real processes. make check runs its short version
# (tests/integration/test-fault-short.sh); make check-fault runs every
# scenario with three seeds, then the writer-pause scenario with a qbd-nbd
# whose quorum core ignores fencing, which must lose writes.
FAULT_MUTANT = $(BUILD)/tests/fault/qbd-nbd-mutant-NO_FENCE
$(BUILD)/tests/fault/qbd-nbd-mutant-%: nbd-frontend/nbd-main.c $(CORE_SRC) replicator/core/core.h \
		replicator/core/internal.h \
		$(A_NBD) $(A_CLIENT) $(A_META) $(A_WIRE) $(A_COMMON) $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DQBD_CORE_MUTANT_$* $(ALL_LDFLAGS) -o $@ nbd-frontend/nbd-main.c \
		$(CORE_SRC) $(A_NBD) $(A_CLIENT) $(A_META) $(A_WIRE) $(A_COMMON) $(LIBS) $(NL_LIBS)

# An LD_PRELOAD shim that steps the realtime clock of a process (the
# clock-step scenario); no sanitizer: it is preloaded into other programs.
FAULT_SHIM = $(BUILD)/tests/fault/libclockstep.so
all: $(FAULT_SHIM)
$(FAULT_SHIM): tests/fault/clockstep.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -D_GNU_SOURCE $(WARN) -O2 -fPIC -shared -o $@ $< -ldl

.PHONY: check-fault
check-fault: deps all $(FAULT_MUTANT)
	tests/fault/fault.py $(FAULT_ARGS) $(BUILD)
	tests/fault/fault.py --scenarios writer-pause --seeds 3 --nbd $(FAULT_MUTANT) \
		--expect-loss $(BUILD)

# Fuzzing (tests/fuzz/, its README): make fuzz runs each libFuzzer target
# for a while; make check replays the kept inputs.
-include tests/fuzz/fuzz.mk

demo: deps
	$(MAKE) all
	tools/demo $(BUILD)

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR)
	install -m 0755 $(PROGS) $(DESTDIR)$(BINDIR)/
	install -m 0644 $(BUILD)/libqbd.a $(DESTDIR)$(LIBDIR)/
	install -m 0755 $(BUILD)/libqbd.so $(DESTDIR)$(LIBDIR)/libqbd.so.0
	ln -sf libqbd.so.0 $(DESTDIR)$(LIBDIR)/libqbd.so
	install -m 0644 replicator/qbd.h $(DESTDIR)$(INCDIR)/qbd.h
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/qbd $(DESTDIR)$(DOCDIR)
	for u in deploy/systemd/*.service; do \
		sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
		    -e 's|/etc/qbd/|$(SYSCONFDIR)/qbd/|g' "$$u" \
		    >$(DESTDIR)$(UNITDIR)/$$(basename "$$u") || exit 1; \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$(basename "$$u"); \
	done
	install -m 0644 deploy/qbd.conf.example $(DESTDIR)$(SYSCONFDIR)/qbd/qbd.conf.example
	install -m 0644 README.md docs/operations.md $(DESTDIR)$(DOCDIR)/

clean:
	rm -rf build build-check build-asan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
