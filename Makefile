# moemesh - top-level build.
#   make            build everything (libmoe, moectl, tests, benchmarks)
#   make test       install what is missing, build, run every test
#   make test-san   the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-cluster  the multi-host fault tests (root; network namespaces)
#   make bench      benchmarks against llama.cpp and memory bandwidth
#   make run        build and start the cluster (Redis, router-svc, two expert-workers,
#                   the gateway; mutual TLS, API keys) serving a demo model over the
#                   OpenAI API on 127.0.0.1:8080 (deploy/cluster.sh; Ctrl-C stops it).
#                   MODE=single: the gateway alone; PORT=, MODEL=path.gguf
#   make deps       install the Debian packages the build needs (idempotent)
#   make fuzz       libFuzzer targets, FUZZ_SECONDS each (default 30)
#   make images     container images of the services (podman, a local base, nothing
#                   pulled; deploy/images.sh), their sizes and a smoke run of each
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
# cJSON: placement documents (libmesh) and Hugging Face tokenizer.json files
# (tools/testmodel); never the engine
CJSON_CFLAGS := $(shell pkg-config --cflags libcjson 2>/dev/null)
CJSON_LIBS   := $(shell pkg-config --libs libcjson 2>/dev/null)

ifeq ($(SAN),1)
BUILD   := build-san
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Per-ISA kernel files are picked by name; the CPU is checked at run time.
ISA_AVX2   := -mavx2 -mfma -mf16c
ISA_AVX512 := -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512vl -mavx512dq \
              -mavx512vnni -mavx512bf16

# One folder per archive; each library's public headers are in its include/:
#   libmoe/   the engine (libmoe.a): GGUF, kernels, models, routing, text,
#             generation. No gRPC, protobuf-c, hiredis or cJSON.
#   libsvc/   the service kit (libsvc.a): flags, logs, clocks, metrics, the
#             admin HTTP server. Depends on libmoe's error codes only.
#   libmesh/  the network (libmesh.a): wire format, remote expert backend
#             (gRPC core + protobuf-c, C generated from proto/ into
#             $(BUILD)/gen at build time), Redis links and schema (hiredis).
#   tools/testmodel/  random-weight GGUF models for tests (libtestmodel.a).
LIBMOE_SRC  := $(sort $(wildcard libmoe/src/*.c libmoe/src/cpu/*.c libmoe/src/text/*.c))
SVC_SRC     := $(sort $(wildcard libsvc/src/*.c))
MESH_SRC    := $(sort $(wildcard libmesh/src/*.c))
TESTMODEL_SRC := $(sort $(wildcard tools/testmodel/*.c))
PROTO_SRC   := proto/moe/v1/expert.proto proto/grpc/health/v1/health.proto
MOECTL_SRC  := $(sort $(wildcard tools/moectl/*.c))
WORKER_SRC  := $(sort $(wildcard expert-worker/*.c))
GATEWAY_SRC := $(sort $(wildcard gateway/*.c))
# router-svc's modules (placement, the control loop, ...) as librouter.a;
# its main.c links against it
ROUTER_SRC  := $(sort $(filter-out router-svc/main.c,$(wildcard router-svc/*.c)))
UNIT_SRC    := $(sort $(wildcard tests/unit/*.c))
BENCH_SRC   := $(sort $(wildcard bench/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
LIBMOE_OBJ := $(call obj,$(LIBMOE_SRC))
SVC_OBJ    := $(call obj,$(SVC_SRC))
TESTMODEL_OBJ := $(call obj,$(TESTMODEL_SRC))
MOECTL_OBJ := $(call obj,$(MOECTL_SRC))
WORKER_OBJ := $(call obj,$(WORKER_SRC))
GATEWAY_OBJ := $(call obj,$(GATEWAY_SRC))
ROUTER_OBJ := $(call obj,$(ROUTER_SRC))
UNIT_OBJ   := $(call obj,$(UNIT_SRC))
BENCH_OBJ  := $(call obj,$(BENCH_SRC))

GEN      := $(BUILD)/gen
PROTO_C  := $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTO_SRC))
PROTO_H  := $(PROTO_C:.c=.h)
MESH_OBJ := $(call obj,$(MESH_SRC)) $(PROTO_C:.c=.o)
# what code above the engine compiles with: the kit's and the network's
# headers, gRPC/protobuf-c/hiredis, and cJSON (placement documents)
SVC_INC    := -Ilibsvc/include
MESH_INC   := -Ilibmesh/include -Ilibsvc/include
MESH_CFLAGS := $(MESH_INC) $(shell pkg-config --cflags grpc libprotobuf-c hiredis libcrypto 2>/dev/null) -I$(GEN) $(CJSON_CFLAGS)
MESH_LIBS  := $(shell pkg-config --libs grpc libprotobuf-c hiredis libcrypto 2>/dev/null) $(CJSON_LIBS)

LIBMOE := $(BUILD)/libmoe.a
LIBSVC := $(BUILD)/libsvc.a
LIBMESH := $(BUILD)/libmesh.a
LIBTESTMODEL := $(BUILD)/libtestmodel.a
LIBROUTER := $(BUILD)/librouter.a
MOECTL := $(BUILD)/moectl
WORKER := $(BUILD)/expert-worker
GATEWAY := $(BUILD)/gateway
# the gateway's HTTP: libmicrohttpd (maintained in Debian; see docs/ARCHITECTURE.md)
MHD_CFLAGS := $(shell pkg-config --cflags libmicrohttpd 2>/dev/null)
MHD_LIBS   := $(shell pkg-config --libs libmicrohttpd 2>/dev/null)
ROUTER := $(BUILD)/router-svc
UNIT   := $(BUILD)/unit-tests
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench-%,$(BENCH_SRC))

.PHONY: all deps test test-san test-cluster bench run clean format format-check ref fuzz images
.SECONDARY:
all: $(LIBMOE) $(LIBSVC) $(LIBMESH) $(LIBROUTER) $(MOECTL) $(WORKER) $(ROUTER) $(GATEWAY) $(UNIT) $(BENCH_BINS)

$(BUILD)/obj/%_avx2.o: FILE_CFLAGS := $(ISA_AVX2)
$(BUILD)/obj/%_avx512.o: FILE_CFLAGS := $(ISA_AVX512)
$(BUILD)/obj/%_amx.o: FILE_CFLAGS := $(ISA_AVX512) -mamx-tile -mamx-int8
# The one-tile Q8_0 kernel's loops on 64-byte boundaries: where they fell
# decided 0.9x or 1.4x of the old tile's cycles a row at some column counts
# (decode at 32 sequences, Zen 5)
$(BUILD)/obj/libmoe/src/cpu/q8p_fast_avx512.o: FILE_CFLAGS := $(ISA_AVX512) -falign-loops=64

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) $(FILE_CFLAGS) -c $< -o $@

# protoc-c output, and the objects that include it
$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	@$(if $(Q),echo "  PROTOC  $<")
	$(Q)protoc-c --c_out=$(GEN) -Iproto $<
$(GEN)/%.pb-c.o: $(GEN)/%.pb-c.c
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(filter-out -Wshadow -Wstrict-prototypes,$(CFLAGS)) $(MESH_CFLAGS) -c $< -o $@

# the recipes every archive and every binary share
define archive
@$(if $(Q),echo "  AR      $@")
$(Q)rm -f $@ && ar rcs $@ $^
endef
define link
@$(if $(Q),echo "  LD      $@")
$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(MESH_LIBS) $(LDLIBS)
endef
$(LIBMOE): $(LIBMOE_OBJ)
	$(archive)

$(SVC_OBJ): FILE_CFLAGS := $(SVC_INC)
$(LIBSVC): $(SVC_OBJ)
	$(archive)

$(call obj,$(MESH_SRC)): FILE_CFLAGS := $(MESH_CFLAGS) -Ilibmesh/src
$(call obj,$(MESH_SRC)): | $(PROTO_H)
$(LIBMESH): $(MESH_OBJ)
	$(archive)

$(TESTMODEL_OBJ): FILE_CFLAGS := $(CJSON_CFLAGS)
$(LIBTESTMODEL): $(TESTMODEL_OBJ)
	$(archive)

$(ROUTER_OBJ) $(BUILD)/obj/router-svc/main.o: FILE_CFLAGS := $(MESH_CFLAGS)
$(ROUTER_OBJ) $(BUILD)/obj/router-svc/main.o: | $(PROTO_H)
$(LIBROUTER): $(ROUTER_OBJ)
	$(archive)

# services and tools: their own objects, then the libraries, top down
SVC_LINK := $(LIBMESH) $(LIBSVC) $(LIBMOE)

$(MOECTL_OBJ): FILE_CFLAGS := $(MESH_CFLAGS) -Itools/testmodel
$(MOECTL_OBJ): | $(PROTO_H)
$(MOECTL): $(MOECTL_OBJ) $(LIBTESTMODEL) $(SVC_LINK)
	$(link)

$(WORKER_OBJ): FILE_CFLAGS := $(MESH_CFLAGS)
$(WORKER_OBJ): | $(PROTO_H)
$(WORKER): $(WORKER_OBJ) $(SVC_LINK)
	$(link)

$(ROUTER): $(BUILD)/obj/router-svc/main.o $(LIBROUTER) $(SVC_LINK)
	$(link)

$(GATEWAY_OBJ): FILE_CFLAGS := $(MESH_CFLAGS) $(MHD_CFLAGS)
$(GATEWAY_OBJ): | $(PROTO_H)
$(GATEWAY): $(GATEWAY_OBJ) $(SVC_LINK)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(MHD_LIBS) $(MESH_LIBS) $(LDLIBS)

# unit tests may reach a library's private headers (libmoe/src, libmesh/src)
# and the gateway's request, job, API-key, fair-share, usage, limiter and request-registry modules (no
# HTTP library in them)
GATEWAY_CORE_OBJ := $(call obj,gateway/api.c gateway/job.c gateway/auth.c gateway/fair.c gateway/usage.c \
	gateway/limiter.c gateway/requests.c)
$(UNIT_OBJ): FILE_CFLAGS := $(MESH_CFLAGS) -Ilibmoe/src -Ilibmesh/src -Irouter-svc -Itools/testmodel -Igateway
$(UNIT_OBJ): | $(PROTO_H)
$(UNIT): $(UNIT_OBJ) $(GATEWAY_CORE_OBJ) $(LIBROUTER) $(LIBTESTMODEL) $(SVC_LINK)
	$(link)

$(BENCH_OBJ): FILE_CFLAGS := $(MESH_CFLAGS)
$(BENCH_OBJ): | $(PROTO_H)
$(BUILD)/bench-%: $(BUILD)/obj/bench/%.o $(SVC_LINK)
	$(link)

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

# The multi-host fault tests (tests/cluster/faults.sh; root: network
# namespaces): every service on its own host; a link cut, a bandwidth
# throttle, a Redis partition and a leader kill while streams run; prints the
# fault table. `make test` runs a short version (integration/cluster_netns).
test-cluster: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)BUILD=$(BUILD) sh tests/cluster/faults.sh

test-san: deps
	$(Q)$(MAKE) --no-print-directory SAN=1 all
	$(Q)$(MAKE) --no-print-directory ref
	$(Q)BUILD=build-san MOE_SAN=1 sh tests/run.sh

# Fuzz targets (tests/fuzz/fuzz_*.c: tokenizer, GGUF reader, wire decoder,
# placement documents and Redis URLs, the gateway's OpenAI API request
# parser, the admin HTTP server's request-head parser, tenants files) with libFuzzer + ASan/UBSan, FUZZ_SECONDS each (default 30;
# FUZZ_TARGETS="fuzz_api ..." runs only those).
fuzz:
	$(Q)sh deploy/deps.sh fuzz
	$(Q)$(MAKE) --no-print-directory all
	$(Q)sh tests/fuzz/run.sh

# Images moemesh/{gateway,expert-worker,router-svc,moectl}:TAG (default dev)
# from deploy/images/*.Dockerfile with podman (root); SMOKE=0 builds only.
TAG ?= dev
images:
	$(Q)sh deploy/deps.sh images
	$(Q)$(MAKE) --no-print-directory $(MOECTL)
	$(Q)BUILD=$(BUILD) TAG=$(TAG) sh deploy/images.sh

bench: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory ref
	$(Q)BUILD=$(BUILD) sh bench/run.sh

# make run [MODE=cluster|single] [PORT=8080] [MODEL=path.gguf] [INSECURE=1]
MODE     ?= cluster
PORT     ?= 8080
MODEL    ?=
INSECURE ?= 0
run: deps
	$(Q)$(MAKE) --no-print-directory $(MOECTL) $(WORKER) $(ROUTER) $(GATEWAY)
	$(Q)exec env BUILD=$(BUILD) MODE=$(MODE) PORT=$(PORT) MODEL=$(MODEL) INSECURE=$(INSECURE) sh deploy/cluster.sh

# every tracked C file but generated tables (tools/format-files.sh);
# tests/integration/format.sh fails on a drift
format:
	$(Q)clang-format -i $$(sh tools/format-files.sh)
format-check:
	$(Q)sh tests/integration/format.sh

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
