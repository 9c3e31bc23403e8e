# moemesh - top-level build.
#   make            build everything (libmoe, moectl, tests, benchmarks)
#   make test       install what is missing, build, run every test
#   make test-san   the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      benchmarks against llama.cpp and memory bandwidth
#   make run        build and run the demo (a generated model)
#   make deps       install the Debian packages the build needs (idempotent)
# Quiet unless V=1; warnings are errors when CI=true.

CC      ?= cc
BUILD   ?= build
V       ?= 0
Q       := $(if $(filter 1,$(V)),,@)

CFLAGS_WARN := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wstrict-prototypes
ifeq ($(CI),true)
CFLAGS_WARN += -Werror
endif
OPT     ?= -O2
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -g -pthread -fno-strict-aliasing \
           $(CFLAGS_WARN) -MMD -MP -Ilibmoe/include $(EXTRA_CFLAGS)
LDFLAGS := -pthread $(EXTRA_LDFLAGS)
LDLIBS  := -lm

ifeq ($(SAN),1)
BUILD   := build-san
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Per-ISA kernel files are picked by name; the CPU is checked at run time.
ISA_AVX2   := -mavx2 -mfma -mf16c
ISA_AVX512 := -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq \
              -mavx512vnni -mavx512bf16

LIBMOE_SRC  := $(sort $(wildcard libmoe/src/*.c libmoe/src/cpu/*.c))
MOECTL_SRC  := $(sort $(wildcard tools/moectl/*.c))
UNIT_SRC    := $(sort $(wildcard tests/unit/*.c))
BENCH_SRC   := $(sort $(wildcard bench/*.c))

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))
LIBMOE_OBJ := $(call obj,$(LIBMOE_SRC))
MOECTL_OBJ := $(call obj,$(MOECTL_SRC))
UNIT_OBJ   := $(call obj,$(UNIT_SRC))

LIBMOE := $(BUILD)/libmoe.a
MOECTL := $(BUILD)/moectl
UNIT   := $(BUILD)/unit-tests
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench-%,$(BENCH_SRC))

.PHONY: all deps test test-san bench run clean format ref
.SECONDARY:
all: $(LIBMOE) $(MOECTL) $(UNIT) $(BENCH_BINS)

$(BUILD)/%_avx2.o: EXTRA_ISA := $(ISA_AVX2)
$(BUILD)/%_avx512.o: EXTRA_ISA := $(ISA_AVX512)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) $(EXTRA_ISA) -c $< -o $@

$(LIBMOE): $(LIBMOE_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(MOECTL): $(MOECTL_OBJ) $(LIBMOE)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(UNIT): $(UNIT_OBJ) $(LIBMOE)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench-%: $(BUILD)/bench/%.o $(LIBMOE)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

deps:
	$(Q)sh deploy/deps.sh

# The reference engine (llama.cpp via node-llama-cpp) and test tooling, pinned
# by tests/ref/package-lock.json.
ref:
	$(Q)sh tests/ref/install.sh

test: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory ref
	$(Q)BUILD=$(BUILD) sh tests/run.sh

test-san: deps
	$(Q)$(MAKE) --no-print-directory SAN=1 all
	$(Q)$(MAKE) --no-print-directory ref
	$(Q)BUILD=build-san MOE_SAN=1 sh tests/run.sh

bench: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory ref
	$(Q)BUILD=$(BUILD) sh bench/run.sh

run: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) sh deploy/demo.sh

format:
	$(Q)clang-format -i $(LIBMOE_SRC) $(MOECTL_SRC) $(UNIT_SRC) $(BENCH_SRC) libmoe/include/moe/*.h

clean:
	rm -rf build build-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
