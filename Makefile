# egmla - build, test, sanitize.
#
#   make                 bin/egmla for any x86-64-v2 CPU (the hot kernels pick
#                        AVX2 / AVX-512 at run time; `egmla --version` names them)
#   make ARCH=native     everything else tuned for this CPU too (not portable)
#   make test            every test (unit, golden, end-to-end)
#   make SAN=1 test      the same under ASan + UBSan, in build-san/
#
# Sources are found by folder: every .c under base/ kernels/ model/ worker/
# coordinator/ deploy/ goes into build/libegmla.a; coordinator/main.c is the
# binary's entry; tests/test_*.c are one cmocka binary each.

ARCH  ?= x86-64-v2
SAN   ?= 0
PKGS  := openblas jansson libpcre2-8 yaml-0.1 libprotobuf-c ompi libmicrohttpd

ifeq ($(SAN),1)
BUILD := build-san
OPT   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
BUILD := build
OPT   := -O2 -g -march=$(ARCH)
endif

CC      ?= cc
CFLAGS  := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wpointer-arith -Werror -fopenmp $(OPT) \
           -I. -I$(BUILD)/proto $(shell pkg-config --cflags $(PKGS))
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lm -lpthread
LDFLAGS := -fopenmp $(filter -fsanitize=%,$(OPT))

BIN      := $(if $(filter 1,$(SAN)),$(BUILD)/egmla,bin/egmla)
PROTO    := $(wildcard proto/*.proto)
PROTO_C  := $(patsubst proto/%.proto,$(BUILD)/proto/%.pb-c.c,$(PROTO))
PROTO_H  := $(PROTO_C:.c=.h)
LIB_SRC  := $(filter-out coordinator/main.c,$(wildcard base/*.c kernels/*.c model/*.c worker/*.c coordinator/*.c deploy/*.c))
LIB_OBJ  := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC)) $(PROTO_C:.c=.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GITREV   := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

.PHONY: all test unit clean
# generated protobuf sources are build products, not intermediates to delete
.SECONDARY: $(PROTO_C) $(PROTO_H)
all: $(BIN)

$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: proto/%.proto
	@mkdir -p $(dir $@)
	protoc-c --c_out=$(BUILD)/proto --proto_path=proto $<

# kernels/ is the hot math: -O3 lets GCC vectorise its loops (it keeps IEEE
# semantics without -ffast-math: no reassociation, no contraction under
# -std=c11, so results are the same bits as at -O2)
ifneq ($(SAN),1)
$(BUILD)/kernels/%.o: CFLAGS += -O3
endif
# fused multiply-adds in the few-rows GEMM, as OpenBLAS has in its own
$(BUILD)/kernels/gemm_small.o: CFLAGS += -ffp-contract=fast

$(BUILD)/%.o: %.c $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DEGM_VERSION='"$(VERSION)"' -DEGM_GITREV='"$(GITREV)"' -MMD -MP -c $< -o $@

# `egmla --version` names the commit: main.o is rebuilt when HEAD moves
# (the stamp is rewritten only when the commit differs)
.PHONY: FORCE
$(BUILD)/gitrev: FORCE
	@mkdir -p $(BUILD)
	@echo '$(GITREV)' | cmp -s - $@ || echo '$(GITREV)' > $@
$(BUILD)/coordinator/main.o: $(BUILD)/gitrev

$(BUILD)/proto/%.pb-c.o: $(BUILD)/proto/%.pb-c.c
	$(CC) $(filter-out -Werror,$(CFLAGS)) -c $< -o $@

$(BUILD)/libegmla.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/coordinator/main.o $(BUILD)/libegmla.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libegmla.a $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libegmla.a $(LDLIBS) -lcmocka

# Unit tests: each cmocka binary runs from the repo root (fixtures are
# tests/fixtures/...). End-to-end tests are tests/e2e_*.sh, given the binary.
test: $(TEST_BIN) $(BIN)
	@BUILD=$(BUILD) BIN=$(BIN) bash tests/run.sh $(TEST_BIN)

clean:
	rm -rf build build-san bin

# make install PREFIX=DIR: the binary, its default model (found from
# PREFIX/bin through ../share/egmla/models) and the docs. INSTALL_FROM
# installs another build of the binary (tests use it for build-san/egmla).
PREFIX  ?= /usr/local
DESTDIR ?=
.PHONY: install
install: $(if $(INSTALL_FROM),,$(BIN))
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/egmla/models/egmla-tiny \
	  $(DESTDIR)$(PREFIX)/share/doc/egmla
	install -m 755 $(or $(INSTALL_FROM),$(BIN)) $(DESTDIR)$(PREFIX)/bin/egmla
	install -m 644 models/egmla-tiny/config.json models/egmla-tiny/model.safetensors \
	  models/egmla-tiny/tokenizer.json $(DESTDIR)$(PREFIX)/share/egmla/models/egmla-tiny
	install -m 644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/egmla

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# Fuzzing (clang libFuzzer + ASan + UBSan, into build-fuzz/): each harness
# in tests/fuzz/ for FUZZ_SECONDS. Valgrind memcheck of the single-rank path
# (its own AVX2 build in build-vg/: valgrind does not know AVX-512).
FUZZ_SECONDS ?= 30
.PHONY: fuzz valgrind check-transformers
# checkpoints saved by transformers' save_pretrained, against its forward
# pass (installs torch + transformers into build/venv-tf once: ~4 GB)
check-transformers: $(BIN)
	BIN=$(BIN) bash tests/check_transformers.sh
fuzz:
	bash tests/fuzz/run.sh $(FUZZ_SECONDS)
valgrind:
	bash tests/valgrind.sh
# The tiny twins: train all four (reference/train.py: about 100 minutes of
# 2 cores for 6M tokens each; `twins-seed2` adds the second seeds of the two
# small-cache twins, about 50 minutes more), then evaluate, plot and
# check them against the reference (reference/twins_report.py) and refresh
# the Q8_0 copy of the default model. torch 2 comes from PyPI into
# build/venv-train once (~5.5 GB: PyPI's Linux wheel bundles CUDA; it runs on
# the CPU); the corpus is Debian's bible-kjv.
VENV_TRAIN = build/venv-train
TRAIN_PKGS = torch==2.15.0 tokenizers==0.23.3 safetensors==0.8.0 matplotlib==3.11.2
TWINS_SEEDS =
.PHONY: twins twins-seed2
twins-seed2: TWINS_SEEDS = --extra-seeds 2
twins-seed2: twins
twins: $(BIN)
	@command -v bible >/dev/null || { echo "twins: the corpus reader is missing: apt-get install bible-kjv"; exit 1; }
	test -x $(VENV_TRAIN)/bin/python || /usr/bin/python3 -m venv $(VENV_TRAIN)
	$(VENV_TRAIN)/bin/python -m pip install -q $(TRAIN_PKGS)
	$(VENV_TRAIN)/bin/python reference/train.py --all $(TWINS_SEEDS)
	$(VENV_TRAIN)/bin/python reference/twins_report.py --check --bin $(BIN)
	$(BIN) quantize --model models/egmla-tiny --out models/egmla-tiny/model-q8_0.gguf --type q8_0
.PHONY: clean-checks
clean-checks:
	rm -rf build-fuzz build-vg
clean: clean-checks
