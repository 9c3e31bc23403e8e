/* test_wire.c - moe.v1 ForwardRequest checks and activation packing: what a
 * worker accepts, and the clear INVALID_ARGUMENT reason for what it does not. */
#include <stdlib.h>
#include <string.h>

#include "mesh/wire.h"
#include "moe/dtype.h"
#include "test.h"

static const moe_wire_shape shape = {.n_layer = 4, .n_expert = 8, .hidden = 32, .max_rows = 64};

/* A valid request: 3 rows, experts 2 (rows 0-1) and 5 (row 2), f32. */
typedef struct req_fixture {
    Moe__V1__ForwardRequest r;
    Moe__V1__RowGroup g[2], *gp[2];
    float act[3 * 32];
} req_fixture;

static void fixture(req_fixture *f) {
    moe__v1__forward_request__init(&f->r);
    for (int i = 0; i < 2; i++) {
        moe__v1__row_group__init(&f->g[i]);
        f->gp[i] = &f->g[i];
    }
    f->g[0].expert = 2, f->g[0].first_row = 0, f->g[0].row_count = 2;
    f->g[1].expert = 5, f->g[1].first_row = 2, f->g[1].row_count = 1;
    for (int i = 0; i < 3 * 32; i++) f->act[i] = (float)i * 0.25f - 3.0f;
    f->r.id = 77, f->r.layer = 3, f->r.placement_epoch = 9, f->r.hidden = 32;
    f->r.dtype = MOE__V1__DTYPE__DTYPE_F32;
    f->r.n_groups = 2, f->r.groups = f->gp;
    f->r.activations.data = (uint8_t *)f->act, f->r.activations.len = sizeof f->act;
}

/* Packs and unpacks through protobuf-c, as on the wire. */
static Moe__V1__ForwardRequest *roundtrip(const Moe__V1__ForwardRequest *r) {
    size_t n = moe__v1__forward_request__get_packed_size(r);
    uint8_t *buf = malloc(n);
    moe__v1__forward_request__pack(r, buf);
    Moe__V1__ForwardRequest *u = moe__v1__forward_request__unpack(NULL, n, buf);
    free(buf);
    return u;
}

TEST(wire_valid_request_roundtrip) {
    req_fixture f;
    fixture(&f);
    Moe__V1__ForwardRequest *u = roundtrip(&f.r);
    ASSERT(u != NULL);
    int rows = -1;
    moe_err err;
    ASSERT_EQ_INT(moe_wire_check_request(u, &shape, &rows, &err), 0);
    ASSERT_EQ_INT(rows, 3);
    ASSERT_EQ_INT(u->id, 77);
    ASSERT_EQ_INT(u->placement_epoch, 9);
    float back[96];
    moe_wire_to_f32((int)u->dtype, u->activations.data, 96, back);
    ASSERT(memcmp(back, f.act, sizeof back) == 0); /* f32 is exact */
    moe__v1__forward_request__free_unpacked(u, NULL);
}

TEST(wire_rejects_inconsistent_requests) {
    static const struct {
        const char *what;
        const char *msg;
    } cases[] = {
        {"dtype", "dtype 7"},
        {"layer", "layer 4 out of range"},
        {"hidden", "hidden 33"},
        {"expert", "expert 8 out of range"},
        {"gap", "first_row 3, expected 2"},
        {"empty", "row_count is 0"},
        {"short", "activations are"},
        {"nogroups", "no row groups"},
        {"rows", "more than 64 rows"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        req_fixture f;
        fixture(&f);
        const char *w = cases[i].what;
        if (!strcmp(w, "dtype")) f.r.dtype = 7;
        if (!strcmp(w, "layer")) f.r.layer = 4;
        if (!strcmp(w, "hidden")) f.r.hidden = 33;
        if (!strcmp(w, "expert")) f.g[1].expert = 8;
        if (!strcmp(w, "gap")) f.g[1].first_row = 3;
        if (!strcmp(w, "empty")) f.g[1].row_count = 0;
        if (!strcmp(w, "short")) f.r.activations.len -= 4;
        if (!strcmp(w, "nogroups")) f.r.n_groups = 0;
        if (!strcmp(w, "rows")) f.g[1].row_count = 63;
        int rows = -1;
        moe_err err = {0};
        if (moe_wire_check_request(&f.r, &shape, &rows, &err) != MOE_EFORMAT)
            TEST_FAIL("case %s accepted", w);
        if (!strstr(err.msg, cases[i].msg))
            TEST_FAIL("case %s: '%s' lacks '%s'", w, err.msg, cases[i].msg);
        ASSERT_EQ_INT(rows, -1);
    }
}

/* bytes that are not a ForwardRequest: protobuf-c refuses them (the worker
 * answers INVALID_ARGUMENT), never crashes; seeded random garbage */
TEST(wire_garbage_is_refused) {
    uint64_t s = 12345;
    int refused = 0;
    for (int t = 0; t < 2000; t++) {
        size_t n = (size_t)(test_rand_u64(&s) % 200);
        uint8_t *buf = malloc(n + 1);
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)test_rand_u64(&s);
        Moe__V1__ForwardRequest *u = moe__v1__forward_request__unpack(NULL, n, buf);
        if (!u) {
            refused++;
        } else {
            int rows;
            moe_err err;
            (void)moe_wire_check_request(u, &shape, &rows, &err); /* must not crash */
            moe__v1__forward_request__free_unpacked(u, NULL);
        }
        free(buf);
    }
    ASSERT(refused > 1000);
}

/* Packs a request into a malloc'd buffer of n bytes, with room for extra. */
static uint8_t *pack_req(const Moe__V1__ForwardRequest *r, size_t *n, size_t extra) {
    *n = moe__v1__forward_request__get_packed_size(r);
    uint8_t *buf = malloc(*n + extra);
    moe__v1__forward_request__pack(r, buf);
    return buf;
}

/* the raw scan passes every valid request and decode gives it back checked */
TEST(wire_scan_valid_request) {
    req_fixture f;
    fixture(&f);
    size_t n;
    uint8_t *buf = pack_req(&f.r, &n, 0);
    moe_err err = {0};
    uint64_t id = 0;
    ASSERT_EQ_INT(moe_wire_scan_request(buf, n, &shape, &id, &err), 0);
    ASSERT_EQ_INT(id, 77);
    Moe__V1__ForwardRequest *u = NULL;
    int rows = -1;
    id = 0;
    ASSERT_EQ_INT(moe_wire_decode_request(buf, n, &shape, &u, &rows, &id, &err), 0);
    ASSERT(u != NULL);
    ASSERT_EQ_INT(rows, 3);
    ASSERT_EQ_INT(id, 77);
    ASSERT_EQ_INT(u->n_groups, 2);
    moe__v1__forward_request__free_unpacked(u, NULL);
    /* the empty message scans (and then fails the check) */
    ASSERT_EQ_INT(moe_wire_scan_request(buf, 0, &shape, NULL, &err), 0);
    ASSERT_EQ_INT(moe_wire_decode_request(buf, 0, &shape, &u, &rows, NULL, &err), MOE_EFORMAT);
    ASSERT(u == NULL);
    ASSERT(strstr(err.msg, "hidden 0") != NULL);
    free(buf);
}

/* What protobuf-c would allocate per occurrence is counted on the raw bytes
 * first: more groups than experts, too many other fields, a field too many
 * inside a group, activations longer than max_rows allow, malformed bytes.
 * Each refusal names the reason and still reports the id seen. */
TEST(wire_scan_refuses_before_unpacking) {
    req_fixture f;
    fixture(&f);
    size_t n;
    moe_err err = {0};
    uint64_t id;
    /* 9 empty groups appended (field 6, length 0), for 8 experts */
    uint8_t *buf = pack_req(&f.r, &n, 64);
    for (int i = 0; i < 6; i++) buf[n++] = 0x32, buf[n++] = 0x00;
    ASSERT_EQ_INT(moe_wire_scan_request(buf, n, &shape, NULL, &err), 0); /* 2 + 6 = 8 */
    buf[n++] = 0x32, buf[n++] = 0x00;
    id = 0;
    ASSERT_EQ_INT(moe_wire_scan_request(buf, n, &shape, &id, &err), MOE_EFORMAT);
    ASSERT(strstr(err.msg, "more than 8 row groups") != NULL);
    ASSERT_EQ_INT(id, 77);
    Moe__V1__ForwardRequest *u = (Moe__V1__ForwardRequest *)buf;
    int rows = -1;
    ASSERT_EQ_INT(moe_wire_decode_request(buf, n, &shape, &u, &rows, NULL, &err), MOE_EFORMAT);
    ASSERT(u == NULL);
    ASSERT_EQ_INT(rows, -1);
    free(buf);
    /* unknown fields (number 100, varint): up to the budget, then refused */
    buf = pack_req(&f.r, &n, 3 * (MOE_WIRE_MAX_FIELDS + 1));
    const size_t base = n;
    for (int i = 0; i < MOE_WIRE_MAX_FIELDS - 5; i++) /* id, layer, epoch, hidden, activations */
        buf[n++] = 0xa0, buf[n++] = 0x06, buf[n++] = 0x01;
    ASSERT_EQ_INT(moe_wire_scan_request(buf, n, &shape, NULL, &err), 0);
    buf[n++] = 0xa0, buf[n++] = 0x06, buf[n++] = 0x01;
    ASSERT_EQ_INT(moe_wire_scan_request(buf, n, &shape, NULL, &err), MOE_EFORMAT);
    ASSERT(strstr(err.msg, "more than 32 fields") != NULL);
    /* a group of many fields */
    n = base;
    buf[n++] = 0x32, buf[n++] = 2 * (MOE_WIRE_MAX_FIELDS + 1);
    for (int i = 0; i <= MOE_WIRE_MAX_FIELDS; i++) buf[n++] = 0x08, buf[n++] = 0x01;
    ASSERT_EQ_INT(moe_wire_scan_request(buf, n, &shape, NULL, &err), MOE_EFORMAT);
    ASSERT(strstr(err.msg, "has more than 32 fields") != NULL);
    /* a group cut short inside */
    n = base;
    buf[n++] = 0x32, buf[n++] = 0x02, buf[n++] = 0x08, buf[n++] = 0x80;
    ASSERT_EQ_INT(moe_wire_scan_request(buf, n, &shape, NULL, &err), MOE_EFORMAT);
    ASSERT(strstr(err.msg, "malformed") != NULL);
    free(buf);
    /* activations longer than max_rows x hidden x 4 (64 x 32 x 4 = 8192) */
    static uint8_t big[8200];
    f.r.activations.data = big, f.r.activations.len = sizeof big;
    buf = pack_req(&f.r, &n, 0);
    ASSERT_EQ_INT(moe_wire_scan_request(buf, n, &shape, NULL, &err), MOE_EFORMAT);
    ASSERT(strstr(err.msg, "activations are 8200 bytes") != NULL);
    free(buf);
    /* malformed: a length past the end, a varint of 11 bytes, field 0, group wire types */
    static const uint8_t bad[][12] = {
        {0x3a, 0x10, 0x00},
        {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
        {0x00, 0x01},
        {0x33, 0x34},
    };
    static const size_t bad_n[] = {3, 12, 2, 2};
    for (size_t i = 0; i < sizeof bad_n / sizeof bad_n[0]; i++) {
        if (moe_wire_scan_request(bad[i], bad_n[i], &shape, NULL, &err) != MOE_EFORMAT)
            TEST_FAIL("malformed case %zu accepted", i);
        if (!strstr(err.msg, "not a moe.v1.ForwardRequest"))
            TEST_FAIL("malformed case %zu: '%s'", i, err.msg);
    }
}

/* whatever the scan passes, protobuf-c's unpack stays within the budget:
 * seeded random requests built from valid and hostile pieces */
TEST(wire_scan_bounds_unpack) {
    uint64_t s = 987;
    static const uint8_t pieces[][4] = {{0x32, 0x00},       {0x32, 0x02, 0x08, 0x03},
                                        {0xa0, 0x06, 0x01}, {0x08, 0x05},
                                        {0x10, 0x01},       {0x28, 0x20},
                                        {0x3a, 0x00},       {0x40, 0x01}};
    static const size_t piece_n[] = {2, 4, 3, 2, 2, 2, 2, 2};
    int passed = 0;
    for (int t = 0; t < 2000; t++) {
        uint8_t buf[400];
        size_t n = 0;
        const int k = (int)(test_rand_u64(&s) % 60);
        for (int i = 0; i < k; i++) {
            const size_t p = (size_t)(test_rand_u64(&s) % 8);
            memcpy(buf + n, pieces[p], piece_n[p]);
            n += piece_n[p];
        }
        moe_err err;
        if (moe_wire_scan_request(buf, n, &shape, NULL, &err) < 0) continue;
        passed++;
        Moe__V1__ForwardRequest *u = moe__v1__forward_request__unpack(NULL, n, buf);
        ASSERT(u != NULL);
        ASSERT(u->n_groups <= (size_t)shape.n_expert);
        ASSERT(u->base.n_unknown_fields <= MOE_WIRE_MAX_FIELDS);
        moe__v1__forward_request__free_unpacked(u, NULL);
    }
    ASSERT(passed > 100);
}

TEST(wire_bf16_packing) {
    const float x[6] = {1.0f, -2.5f, 3.14159265f, 1e-20f, 65504.0f, -0.0f};
    uint8_t b[12];
    float y[6];
    moe_wire_from_f32(MOE__V1__DTYPE__DTYPE_BF16, x, 6, b);
    moe_wire_to_f32(MOE__V1__DTYPE__DTYPE_BF16, b, 6, y);
    for (int i = 0; i < 6; i++) ASSERT_NEAR(y[i], moe_bf16_to_f32(moe_f32_to_bf16(x[i])), 0);
    ASSERT_NEAR(y[2], 3.140625, 0); /* 8 significant bits, nearest even */
    ASSERT_EQ_INT(moe_wire_elt_bytes(MOE__V1__DTYPE__DTYPE_BF16), 2);
    ASSERT_EQ_INT(moe_wire_elt_bytes(MOE__V1__DTYPE__DTYPE_F32), 4);
    ASSERT_EQ_INT(moe_wire_elt_bytes(9), 0);
}
