/* test_model.c - model contexts: batched decode equals sequential decode,
 * prefill equals token-by-token, bad batches change nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/model.h"
#include "moe/ops.h"
#include "testmodel.h"
#include "test.h"

/* File layouts for tiny_model (a test sets them before writing): deepseek2's
 * legacy attn_kv_b, experts one tensor each; rows of 256 (the K types). */
static int tiny_kv_b, tiny_per_expert, tiny_256;

/* Writes a tiny model of arch to a temp file; returns its path (static buf). */
static const char *tiny_model(moe_arch arch, moe_dtype dt, char *path, size_t n) {
    moe_testmodel_params p;
    ASSERT_EQ_INT(moe_testmodel_defaults(&p, arch, "tiny"), 0);
    p.dtype = dt;
    p.seed = 11;
    p.mla_kv_b = tiny_kv_b;
    p.expert_per_tensor = tiny_per_expert;
    if (tiny_256) {
        p.n_embd = 256;
        p.n_ff = 256;
        if (p.n_ff_shexp) p.n_ff_shexp = 256;
        if (p.n_ff_dense) p.n_ff_dense = 256;
    }
    snprintf(path, n, "/tmp/moe-test-%d-%s-%d.gguf", (int)getpid(), moe_arch_name(arch), (int)dt);
    moe_err err;
    if (moe_testmodel_write(&p, path, &err) < 0) TEST_FAIL("testmodel: %s", err.msg);
    return path;
}

/* tiny_model, loaded (free it, then unlink path). */
static moe_model *load_tiny(moe_arch arch, char *path, size_t n) {
    tiny_model(arch, MOE_DTYPE_F32, path, n);
    moe_model *m;
    moe_err err;
    if (moe_model_load(&m, path, &err) < 0) TEST_FAIL("load: %s", err.msg);
    return m;
}

/* The KV cache type make_ctx gives (the default, f16, unless a test sets
 * it: the ones comparing code paths whose sums differ by float rounding run
 * both caches, since an f16 cache's rounding amplifies such differences,
 * see tests/lib/parity.sh). */
static moe_dtype test_kv = MOE_DTYPE_F16;

static moe_ctx *make_ctx(const moe_model *m, int threads, int slots, int n_batch) {
    moe_ctx_params p = moe_ctx_default_params();
    p.kv_type = test_kv;
    p.n_threads = threads;
    p.n_slots = slots;
    p.n_ctx = 64;
    p.n_batch = n_batch;
    moe_ctx *c;
    moe_err err;
    if (moe_ctx_create(&c, m, &p, &err) < 0) TEST_FAIL("ctx: %s", err.msg);
    return c;
}

static void decode(moe_ctx *c, int n, const int32_t *tok, const int32_t *pos, const int32_t *slot,
                   const int8_t *want) {
    moe_batch b = {n, tok, pos, slot, want};
    moe_err err;
    if (moe_ctx_decode(c, &b, &err) < 0) TEST_FAIL("decode: %s", err.msg);
}

static double max_diff(const float *a, const float *b, int n) {
    double d = 0;
    for (int i = 0; i < n; i++) {
        double x = fabs((double)a[i] - (double)b[i]);
        if (!(x <= d)) d = x; /* NaN propagates */
    }
    return d;
}

/* Three sequences decoded each alone vs all in one batch (prefill mixed, then
 * one decode step with all three slots): the same logits within 1e-4 with
 * an f32 cache, 1e-2 with an f16 one (a wrong slot or position moves them
 * by ~1). */
static void check_batched_kv(moe_arch arch);
static void check_batched(moe_arch arch) {
    test_kv = MOE_DTYPE_F32;
    check_batched_kv(arch);
    test_kv = MOE_DTYPE_F16;
    check_batched_kv(arch);
}
static void check_batched_kv(moe_arch arch) {
    char path[256];
    moe_model *m = load_tiny(arch, path, sizeof path);
    const int V = m->hp.n_vocab;
    const int len[3] = {5, 3, 4};
    const int32_t seq[3][6] = {{1, 50, 300, 7, 9, 11}, {400, 2, 3, 4}, {33, 34, 35, 36, 37}};
    float *alone = malloc(sizeof(float) * (size_t)V * 3);
    for (int s = 0; s < 3; s++) {
        moe_ctx *c = make_ctx(m, 1, 1, 512);
        int32_t pos[6], slot[6] = {0};
        for (int i = 0; i < 6; i++) pos[i] = i;
        decode(c, len[s] + 1, seq[s], pos, slot, NULL);
        memcpy(alone + (size_t)s * V, moe_ctx_logits(c, 0), sizeof(float) * (size_t)V);
        moe_ctx_destroy(c);
    }
    /* together: interleaved prefill of all prompts, then one step for all */
    moe_ctx *c = make_ctx(m, 2, 3, 512);
    int32_t tok[16], pos[16], slot[16];
    int n = 0, next[3] = {0};
    for (int round = 0; round < 5; round++)
        for (int s = 0; s < 3; s++)
            if (next[s] < len[s]) {
                tok[n] = seq[s][next[s]], pos[n] = next[s], slot[n] = s;
                next[s]++, n++;
            }
    decode(c, n, tok, pos, slot, NULL);
    for (int s = 0; s < 3; s++) tok[s] = seq[s][len[s]], pos[s] = len[s], slot[s] = s;
    int8_t want[3] = {1, 1, 1};
    decode(c, 3, tok, pos, slot, want);
    ASSERT_EQ_INT(moe_ctx_n_logits(c), 3);
    for (int s = 0; s < 3; s++) {
        double d = max_diff(alone + (size_t)s * V, moe_ctx_logits(c, s), V);
        if (!(d < (test_kv == MOE_DTYPE_F32 ? 1e-4 : 1e-2)))
            TEST_FAIL("%s slot %d (%s cache): batched vs alone differ by %g", moe_arch_name(arch),
                      s, moe_dtype_name(test_kv), d);
    }
    moe_ctx_destroy(c);
    moe_model_free(m);
    free(alone);
    unlink(path);
}

TEST(model_batched_equals_alone_llama) {
    check_batched(MOE_ARCH_LLAMA);
}
TEST(model_batched_equals_alone_qwen2moe) {
    check_batched(MOE_ARCH_QWEN2MOE);
}
TEST(model_batched_equals_alone_qwen3moe) {
    check_batched(MOE_ARCH_QWEN3MOE);
}
TEST(model_batched_equals_alone_olmoe) {
    check_batched(MOE_ARCH_OLMOE);
}

/* Prefill of 8 tokens (logits everywhere) equals feeding them one at a time,
 * for each dtype, and with n_batch 3 (the prompt split into ubatches). */
TEST(model_prefill_equals_incremental) {
    const moe_dtype dts[] = {MOE_DTYPE_F32, MOE_DTYPE_F16, MOE_DTYPE_BF16, MOE_DTYPE_Q8_0};
    for (size_t d = 0; d < 8; d++) {
        /* each dtype with an f32 cache, then an f16 one */
        test_kv = d < 4 ? MOE_DTYPE_F32 : MOE_DTYPE_F16;
        char path[256];
        tiny_model(MOE_ARCH_QWEN2MOE, dts[d % 4], path, sizeof path);
        moe_model *m;
        moe_err err;
        if (moe_model_load(&m, path, &err) < 0) TEST_FAIL("load: %s", err.msg);
        const int V = m->hp.n_vocab;
        int32_t tok[8] = {5, 100, 200, 300, 400, 7, 8, 9}, pos[8], slot[8] = {0};
        int8_t want[8];
        for (int i = 0; i < 8; i++) pos[i] = i, want[i] = 1;
        moe_ctx *a = make_ctx(m, 2, 1, 3), *b = make_ctx(m, 1, 1, 512);
        decode(a, 8, tok, pos, slot, want);
        ASSERT_EQ_INT(moe_ctx_n_logits(a), 8);
        for (int i = 0; i < 8; i++) {
            decode(b, 1, tok + i, pos + i, slot, NULL);
            double diff = max_diff(moe_ctx_logits(a, i), moe_ctx_logits(b, 0), V);
            /* the GEMM tile and the matrix x vector kernel sum in different
             * orders; rounding activations to f16/bf16 amplifies that (see
             * tests/lib/parity.sh), Q8_0 products are integer-exact */
            const moe_dtype dt = dts[d % 4];
            double tol = dt == MOE_DTYPE_F32    ? 1e-4
                         : dt == MOE_DTYPE_F16  ? 1e-2
                         : dt == MOE_DTYPE_BF16 ? 5e-2
                                                : 2e-2;
            if (test_kv == MOE_DTYPE_F16 && tol < 1e-2)
                tol = 1e-2; /* f16 rounding, as f16 weights */
            if (!(diff < tol))
                TEST_FAIL("%s pos %d (%s cache): prefill vs incremental differ by %g",
                          moe_dtype_name(dt), i, moe_dtype_name(test_kv), diff);
        }
        ASSERT_EQ_INT(moe_ctx_slot_len(a, 0), 8);
        moe_ctx_destroy(a);
        moe_ctx_destroy(b);
        moe_model_free(m);
        unlink(path);
    }
    test_kv = MOE_DTYPE_F16;
}

TEST(model_bad_batch_changes_nothing) {
    char path[256];
    tiny_model(MOE_ARCH_LLAMA, MOE_DTYPE_F32, path, sizeof path);
    moe_model *m;
    moe_err err;
    if (moe_model_load(&m, path, &err) < 0) TEST_FAIL("load: %s", err.msg);
    moe_ctx *c = make_ctx(m, 1, 2, 512);
    int32_t tok[2] = {1, 2}, pos[2] = {0, 1}, slot[2] = {0, 0};
    decode(c, 2, tok, pos, slot, NULL);
    ASSERT_EQ_INT(moe_ctx_slot_len(c, 0), 2);

    int32_t bt[2] = {3, 512}, bp[2] = {2, 3}, bs[2] = {0, 0};
    moe_batch b = {2, bt, bp, bs, NULL};
    ASSERT_EQ_INT(moe_ctx_decode(c, &b, &err), MOE_ERANGE); /* token 512 >= n_vocab */
    ASSERT_STR_CONTAINS(err.msg, "token id 512");
    bt[1] = 4, bp[1] = 5; /* gap in positions */
    ASSERT_EQ_INT(moe_ctx_decode(c, &b, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "expects position 3");
    bp[1] = 3, bs[1] = 7; /* no such slot */
    ASSERT_EQ_INT(moe_ctx_decode(c, &b, &err), MOE_ERANGE);
    bs[1] = 1, bp[1] = 1; /* slot 1 is empty: must start at 0 */
    ASSERT_EQ_INT(moe_ctx_decode(c, &b, &err), MOE_EINVAL);
    moe_batch nul = {1, NULL, bp, bs, NULL};
    ASSERT_EQ_INT(moe_ctx_decode(c, &nul, &err), MOE_EINVAL);
    ASSERT_EQ_INT(moe_ctx_slot_len(c, 0), 2);
    ASSERT_EQ_INT(moe_ctx_slot_len(c, 1), 0);

    /* the context is still usable and gives the same logits as before */
    moe_ctx *ref = make_ctx(m, 1, 1, 512);
    int32_t t3[3] = {1, 2, 3}, p3[3] = {0, 1, 2}, s3[3] = {0, 0, 0};
    decode(ref, 3, t3, p3, s3, NULL);
    decode(c, 1, t3 + 2, p3 + 2, s3, NULL);
    ASSERT(max_diff(moe_ctx_logits(ref, 0), moe_ctx_logits(c, 0), m->hp.n_vocab) < 1e-5);

    /* context full */
    moe_ctx_slot_clear(c, 0);
    int32_t big[65], bigp[65], bigs[65];
    for (int i = 0; i < 65; i++) big[i] = 1, bigp[i] = i, bigs[i] = 0;
    moe_batch full = {65, big, bigp, bigs, NULL};
    ASSERT_EQ_INT(moe_ctx_decode(c, &full, &err), MOE_ENOSPC);
    moe_ctx_destroy(ref);
    moe_ctx_destroy(c);
    moe_model_free(m);
    unlink(path);
}

TEST(model_load_errors) {
    moe_model *m;
    moe_err err;
    ASSERT(moe_model_load(&m, "/nonexistent/model.gguf", &err) < 0);
    ASSERT_STR_CONTAINS(err.msg, "/nonexistent/model.gguf");

    /* an unsupported architecture is named */
    char path[256];
    snprintf(path, sizeof path, "/tmp/moe-test-%d-arch.gguf", (int)getpid());
    moe_gguf_writer *w = moe_gguf_writer_create();
    moe_gguf_writer_set_str(w, "general.architecture", "gpt9");
    ASSERT_EQ_INT(moe_gguf_writer_write(w, path, &err), 0);
    moe_gguf_writer_destroy(w);
    ASSERT_EQ_INT(moe_model_load(&m, path, &err), MOE_ENOTSUP);
    ASSERT_STR_CONTAINS(err.msg, "gpt9");

    /* a known architecture with a missing key is named */
    w = moe_gguf_writer_create();
    moe_gguf_writer_set_str(w, "general.architecture", "olmoe");
    moe_gguf_writer_set_u32(w, "olmoe.context_length", 128);
    ASSERT_EQ_INT(moe_gguf_writer_write(w, path, &err), 0);
    moe_gguf_writer_destroy(w);
    ASSERT_EQ_INT(moe_model_load(&m, path, &err), MOE_EFORMAT);
    ASSERT_STR_CONTAINS(err.msg, "olmoe.embedding_length");
    unlink(path);
}

/* Logits of tokens 1..n at the last position with the given options. */
static void run_opts(const char *path, int dense, float cf, int n, float *out, moe_ctx_stats *st) {
    moe_model *m;
    moe_err err;
    if (moe_model_load(&m, path, &err) < 0) TEST_FAIL("load: %s", err.msg);
    moe_ctx_params p = moe_ctx_default_params();
    p.n_ctx = 64;
    p.dense_moe = dense;
    p.capacity_factor = cf;
    moe_ctx *c;
    if (moe_ctx_create(&c, m, &p, &err) < 0) TEST_FAIL("ctx: %s", err.msg);
    int32_t tok[32], pos[32], slot[32] = {0};
    for (int i = 0; i < n; i++) tok[i] = 1 + 37 * i % 500, pos[i] = i;
    decode(c, n, tok, pos, slot, NULL);
    memcpy(out, moe_ctx_logits(c, 0), sizeof(float) * (size_t)m->hp.n_vocab);
    moe_ctx_get_stats(c, st);
    moe_ctx_destroy(c);
    moe_model_free(m);
}

/* Dense MoE equals top-k when k is every expert (softmax, renormalised: the
 * same weights, summed in another order); otherwise it differs. */
TEST(model_dense_moe) {
    moe_testmodel_params p;
    moe_testmodel_defaults(&p, MOE_ARCH_LLAMA, "tiny");
    p.n_expert = 4;
    p.n_expert_used = 4;
    char path[256];
    snprintf(path, sizeof path, "/tmp/moe-test-%d-dense.gguf", (int)getpid());
    moe_err err;
    if (moe_testmodel_write(&p, path, &err) < 0) TEST_FAIL("%s", err.msg);
    float a[512], b[512];
    moe_ctx_stats st;
    run_opts(path, 0, 0, 6, a, &st);
    ASSERT_EQ_INT(st.n_expert_rows, 6 * 2 * 4);
    run_opts(path, 1, 0, 6, b, &st);
    ASSERT(max_diff(a, b, 512) < 1e-5);
    p.n_expert_used = 1;
    if (moe_testmodel_write(&p, path, &err) < 0) TEST_FAIL("%s", err.msg);
    run_opts(path, 0, 0, 6, a, &st);
    ASSERT_EQ_INT(st.n_expert_rows, 6 * 2 * 1);
    run_opts(path, 1, 0, 6, b, &st);
    ASSERT_EQ_INT(st.n_expert_rows, 6 * 2 * 4);
    ASSERT(max_diff(a, b, 512) > 1e-3);
    unlink(path);
}

/* A capacity factor large enough drops nothing and changes nothing; a small
 * one drops choices, counts them, and changes the output. */
TEST(model_capacity_factor) {
    char path[256];
    tiny_model(MOE_ARCH_QWEN3MOE, MOE_DTYPE_F32, path, sizeof path);
    float a[512], b[512];
    moe_ctx_stats st;
    run_opts(path, 0, 0, 16, a, &st);
    ASSERT_EQ_INT(st.n_dropped, 0);
    run_opts(path, 0, 100.0f, 16, b, &st);
    ASSERT_EQ_INT(st.n_dropped, 0);
    ASSERT(max_diff(a, b, 512) == 0.0);
    run_opts(path, 0, 0.25f, 16, b, &st);
    /* capacity ceil(0.25 * 16 * 2 / 8) = 1 row per expert per layer: at most
     * 8 of the 32 choices of each of the 2 layers survive */
    ASSERT(st.n_dropped >= 2 * (32 - 8));
    ASSERT_EQ_INT(st.n_expert_rows + st.n_dropped, 2 * 32);
    ASSERT(max_diff(a, b, 512) > 1e-3);
    unlink(path);
}

/* A batch that fails part-way (a non-finite router input in its second
 * ubatch) changes nothing: slot lengths are restored and the same slot can
 * go on with good tokens. The embedding row of token 5 is set to +inf in the
 * file, found through the GGUF reader. */
TEST(model_failed_batch_changes_nothing) {
    char path[256];
    tiny_model(MOE_ARCH_LLAMA, MOE_DTYPE_F32, path, sizeof path);
    FILE *f = fopen(path, "r+b");
    ASSERT(f != NULL);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    char *buf = malloc((size_t)size);
    fseek(f, 0, SEEK_SET);
    ASSERT_EQ_INT(fread(buf, 1, (size_t)size, f), size);
    moe_gguf *g;
    moe_err err;
    if (moe_gguf_open_buffer(&g, buf, (size_t)size, path, &err) < 0) TEST_FAIL("%s", err.msg);
    const moe_gguf_tensor *te = moe_gguf_find_tensor(g, "token_embd.weight");
    ASSERT(te != NULL && te->type == MOE_DTYPE_F32);
    const long off = (long)((const char *)te->data - buf) + 5L * te->ne[0] * 4;
    float inf[128];
    for (int i = 0; i < 128; i++) inf[i] = INFINITY;
    fseek(f, off, SEEK_SET);
    ASSERT_EQ_INT(fwrite(inf, 4, (size_t)te->ne[0], f), te->ne[0]);
    fclose(f);
    moe_gguf_close(g);
    free(buf);

    moe_model *m;
    if (moe_model_load(&m, path, &err) < 0) TEST_FAIL("load: %s", err.msg);
    moe_ctx_params p = moe_ctx_default_params();
    p.n_threads = 1;
    p.n_slots = 1;
    p.n_ctx = 64;
    p.n_batch = 2; /* ubatches of 2: the bad token is in the second */
    p.gate_margins = 1;
    moe_ctx *c;
    if (moe_ctx_create(&c, m, &p, &err) < 0) TEST_FAIL("ctx: %s", err.msg);
    int32_t tok[3] = {1, 2, 5}, pos[3] = {0, 1, 2}, slot[3] = {0, 0, 0};
    moe_batch b = {3, tok, pos, slot, NULL};
    ASSERT_EQ_INT(moe_ctx_decode(c, &b, &err), MOE_ENUMERIC);
    ASSERT_STR_CONTAINS(err.msg, "batch row 2");
    ASSERT_EQ_INT(moe_ctx_slot_len(c, 0), 0);
    ASSERT_EQ_INT(moe_ctx_n_logits(c), 0);
    for (int i = 0; i < 3; i++) /* no margins: the first ubatch's were partial */
        if (!isnan(moe_ctx_gate_margin(c, i)))
            TEST_FAIL("row %d: margin %g after a failed decode", i, moe_ctx_gate_margin(c, i));
    tok[2] = 3;
    decode(c, 3, tok, pos, slot, NULL); /* the same positions again, now fine */
    ASSERT_EQ_INT(moe_ctx_slot_len(c, 0), 3);
    for (int i = 0; i < 3; i++) ASSERT(!isnan(moe_ctx_gate_margin(c, i)));
    moe_ctx_destroy(c);
    moe_model_free(m);
    unlink(path);
}

#include "gguf_patch.h"

/* Metadata that would break routing or overflow sizes is refused at load
 * with the key named, never used. */
TEST(model_bad_metadata_refused) {
    char path[256], bad[300];
    tiny_model(MOE_ARCH_DEEPSEEK2, MOE_DTYPE_F32, path, sizeof path);
    snprintf(bad, sizeof bad, "%s.bad.gguf", path);
    static const struct {
        const char *key;
        uint32_t v;
        const char *msg;
    } cases[] = {
        {"deepseek2.expert_group_count", 32, "expert_group_count 32"},
        {"deepseek2.expert_group_count", 3, "groups must divide"},
        {"deepseek2.expert_group_used_count", 0, "expert_group_used_count 0"},
        {"deepseek2.expert_group_used_count", 4, "need 0 < used < groups"},
        {"deepseek2.expert_used_count", 17, "expert_used_count 17"},
        {"deepseek2.block_count", 1u << 30, "out of range"},
        {"deepseek2.attention.kv_lora_rank", 1u << 30, "out of range"},
        {"deepseek2.attention.head_count", 0, "must be > 0"},
        {"deepseek2.expert_gating_func", 7, "expert_gating_func = 7"},
        {"deepseek2.attention.key_length_mla", 0, "key_length_mla"},
        {"deepseek2.embedding_length", 96, "shape"},
    };
    moe_model *m;
    moe_err err;
    ASSERT_EQ_INT(moe_model_load(&m, path, &err), 0); /* the original is fine */
    moe_model_free(m);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gguf_patch_u32(path, bad, cases[i].key, cases[i].v);
        int rc = moe_model_load(&m, bad, &err);
        if (rc == 0) TEST_FAIL("%s = %u was accepted", cases[i].key, cases[i].v);
        if (!strstr(err.msg, cases[i].msg))
            TEST_FAIL("%s = %u: message '%s' lacks '%s'", cases[i].key, cases[i].v, err.msg,
                      cases[i].msg);
    }
    unlink(bad);
    unlink(path);
}

/* A slot copied from another continues exactly as the original would, and
 * a truncated slot re-decodes its tail to the same logits (the gateway's
 * n choices and prefix reuse); llama and deepseek2 (MLA: one latent cache). */
static void check_slot_copy(moe_arch arch) {
    char path[256];
    moe_model *m = load_tiny(arch, path, sizeof path);
    const int V = m->hp.n_vocab;
    moe_ctx *c = make_ctx(m, 1, 3, 64);
    const int32_t p[5] = {3, 99, 250, 7, 42}, pos[5] = {0, 1, 2, 3, 4}, s0[5] = {0};
    decode(c, 5, p, pos, s0, NULL);
    float *want = malloc(sizeof(float) * (size_t)V);
    /* the next token in slot 0 */
    const int32_t nt = 17, np = 5, z = 0;
    decode(c, 1, &nt, &np, &z, NULL);
    memcpy(want, moe_ctx_logits(c, 0), sizeof(float) * (size_t)V);
    ASSERT_EQ_INT(moe_ctx_slot_truncate(c, 0, 5), 0); /* drop it again */
    ASSERT_EQ_INT(moe_ctx_slot_truncate(c, 0, 6), MOE_EINVAL);
    ASSERT_EQ_INT(moe_ctx_slot_copy(c, 2, 0), 0);
    ASSERT_EQ_INT(moe_ctx_slot_len(c, 2), 5);
    ASSERT_EQ_INT(moe_ctx_slot_copy(c, 3, 0), MOE_EINVAL);
    /* slots 0 and 2 decode the same token together: identical rows, and
     * (a batch of 2, not 1) within the batched tolerance of want */
    const int32_t t2[2] = {17, 17}, p2[2] = {5, 5}, sl[2] = {0, 2};
    const int8_t w2[2] = {1, 1};
    decode(c, 2, t2, p2, sl, w2);
    ASSERT(max_diff(moe_ctx_logits(c, 0), moe_ctx_logits(c, 1), V) == 0);
    if (!(max_diff(moe_ctx_logits(c, 1), want, V) < 1e-4)) TEST_FAIL("copied slot differs");
    /* truncate slot 2 to 3 and re-decode its tail (one batch of 3 rows, so
     * within the batched-vs-incremental tolerance): the same logits */
    ASSERT_EQ_INT(moe_ctx_slot_truncate(c, 2, 3), 0);
    const int32_t t3[3] = {7, 42, 17}, p3[3] = {3, 4, 5}, s3[3] = {2, 2, 2};
    decode(c, 3, t3, p3, s3, NULL);
    const double d = max_diff(moe_ctx_logits(c, 0), want, V);
    if (!(d < 1e-4)) TEST_FAIL("re-decoded tail differs by %g", d);
    /* and a truncation that drops a token changes them (the cache is used) */
    ASSERT_EQ_INT(moe_ctx_slot_truncate(c, 2, 4), 0);
    const int32_t t4 = 18, p4 = 4, s4 = 2;
    decode(c, 1, &t4, &p4, &s4, NULL);
    ASSERT(max_diff(moe_ctx_logits(c, 0), want, V) > 1e-3);
    free(want);
    moe_ctx_destroy(c);
    moe_model_free(m);
    unlink(path);
}

TEST(model_slot_copy_truncate_llama) {
    check_slot_copy(MOE_ARCH_LLAMA);
}
TEST(model_slot_copy_truncate_deepseek2) {
    check_slot_copy(MOE_ARCH_DEEPSEEK2);
}
/* legacy attn_kv_b: K and V per head in two caches, both copied and truncated */
TEST(model_slot_copy_truncate_deepseek2_kv_b) {
    tiny_kv_b = 1;
    check_slot_copy(MOE_ARCH_DEEPSEEK2);
}
TEST(model_batched_equals_alone_deepseek2_kv_b) {
    tiny_kv_b = 1;
    check_batched(MOE_ARCH_DEEPSEEK2);
}
/* experts one tensor each: bound in place (each expert's matrix is its
 * tensor's bytes in the mapping), the same sizes and residency as merged */
TEST(model_per_expert_layout) {
    char path[256];
    tiny_per_expert = 1;
    moe_model *m = load_tiny(MOE_ARCH_QWEN2MOE, path, sizeof path);
    ASSERT_EQ_INT(m->expert_layout, MOE_EXPERT_LAYOUT_PER_EXPERT);
    for (int il = 0; il < m->hp.n_layer; il++)
        for (int e = 0; e < m->hp.n_expert; e++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.ffn_down.%d.weight", il, e);
            const moe_gguf_tensor *t = moe_gguf_find_tensor(m->gguf, name);
            ASSERT(t && moe_tensor_expert(&m->layers[il].down_exps, e) == t->data);
            moe_expert_load_pages(m, il, e);
            moe_expert_drop_pages(m, il, e);
        }
    ASSERT_EQ_INT(m->layers[0].gate_exps.ne[2], m->hp.n_expert);
    const size_t per_expert_bytes = moe_expert_bytes(m, 1), n_bytes = m->n_bytes;
    char id[96];
    moe_model_identity(m, id, sizeof id);
    moe_model_free(m);
    unlink(path);
    tiny_per_expert = 0;
    m = load_tiny(MOE_ARCH_QWEN2MOE, path, sizeof path);
    ASSERT_EQ_INT(m->expert_layout, MOE_EXPERT_LAYOUT_MERGED);
    ASSERT(m->layers[0].gate_exps.experts == NULL);
    ASSERT_EQ_INT(moe_expert_bytes(m, 1), per_expert_bytes);
    ASSERT_EQ_INT(m->n_bytes, n_bytes);
    char id2[96];
    moe_model_identity(m, id2, sizeof id2);
    ASSERT(!strcmp(id, id2)); /* workers of either layout serve the same model */
    moe_model_free(m);
    unlink(path);
}

/* Logits of one fixed run on m: 8 prompts of 5 tokens in one batch (expert
 * groups of 3+ rows: the fast tile), then slot 0 alone for 3 steps (batch
 * 1: exact); the last row of each prompt and every step (11 x V floats). */
static float *repack_run(const moe_model *m) {
    const int V = m->hp.n_vocab;
    float *out = test_xmalloc(sizeof(float) * (size_t)V * 11);
    moe_ctx *c = make_ctx(m, 2, 8, 512);
    int32_t tok[40], pos[40], slot[40];
    int8_t want[40];
    for (int i = 0; i < 40; i++) {
        tok[i] = (int32_t)((i * 37 + 11) % V), pos[i] = i % 5, slot[i] = i / 5;
        want[i] = i % 5 == 4;
    }
    decode(c, 40, tok, pos, slot, want);
    for (int s = 0; s < 8; s++)
        memcpy(out + (size_t)s * V, moe_ctx_logits(c, s), sizeof(float) * V);
    for (int step = 0; step < 3; step++) {
        const int32_t t = (int32_t)(step * 101 + 3) % V, p = 5 + step, s0 = 0;
        decode(c, 1, &t, &p, &s0, NULL);
        memcpy(out + (size_t)(8 + step) * V, moe_ctx_logits(c, 0), sizeof(float) * V);
    }
    moe_ctx_destroy(c);
    return out;
}

/* Q8_0 weights repacked for the int8 tiles (moe/ops.h's packed layout): all
 * at load (experts and the 2-D weights), or the experts lazily as
 * moe_expert_load_pages brings each in (and moe_expert_drop_pages lets it
 * go again, back to the file's bytes), give the same logits bit for bit as
 * the weights read as stored. */
static void check_repacked(moe_arch arch, moe_dtype dt) {
    /* AMX CPUs pack no Q8_0 (their tile reads rows as stored): off here, before
     * the first detection, so the packed path runs wherever AVX-512 is */
    setenv("MOE_AMX", "0", 1);
    if (!moe_packed_usable(dt)) SKIP("no packed kernel for this type at this level (AVX-512 only)");
    char path[256];
    tiny_256 = moe_dtype_block_elems(dt) == 256; /* rows of 256: every matrix of the type */
    tiny_model(arch, dt, path, sizeof path);
    tiny_256 = 0;
    moe_model *plain, *all, *lazy;
    moe_err err;
    if (moe_model_load_ex(&plain, path, MOE_REPACK_OFF, &err) < 0 ||
        moe_model_load_ex(&all, path, MOE_REPACK_ALL, &err) < 0 ||
        moe_model_load_ex(&lazy, path, MOE_REPACK_LAZY, &err) < 0)
        TEST_FAIL("load: %s", err.msg);
    const int L = plain->hp.n_layer, X = plain->hp.n_expert;
    ASSERT(plain->layers[L - 1].gate_exps.packed == NULL);
    /* the 2-D weights: packed at load under MOE_REPACK_ALL only (those of
     * the type: a Q4_K model's rows too short for it have a fallback type) */
    const moe_tensor *ow = &all->output, *wo = &all->layers[0].wo;
    ASSERT(ow->type != dt || (ow->packed && ow->packed[0]));
    ASSERT(wo->type != dt || wo->packed);
    ASSERT(ow->type == dt || wo->type == dt);
    ASSERT(!lazy->output.packed && !lazy->layers[0].wo.packed && !plain->layers[0].wo.packed);
    for (int il = 0; il < L; il++)
        for (int e = 0; e < X && moe_model_layer_is_moe(plain, il); e++) {
            const moe_layer *la = &all->layers[il], *ll = &lazy->layers[il];
            ASSERT(la->gate_exps.packed[e] && la->up_exps.packed[e] && la->down_exps.packed[e]);
            ASSERT(!ll->gate_exps.packed[e] && !ll->up_exps.packed[e] && !ll->down_exps.packed[e]);
        }
    /* lazy: half the experts of each layer packed, expert 0 dropped again */
    for (int il = 0; il < L; il++) {
        if (!moe_model_layer_is_moe(plain, il)) continue;
        for (int e = 0; e < X / 2; e++) moe_expert_load_pages(lazy, il, e);
        moe_expert_drop_pages(lazy, il, 0);
        ASSERT(!lazy->layers[il].down_exps.packed[0] && lazy->layers[il].down_exps.packed[1] &&
               !lazy->layers[il].down_exps.packed[X - 1]);
    }
    /* at load: each expert tensor's copies in one arena, a page-rounded
     * copy apart */
    const long pg = sysconf(_SC_PAGESIZE);
    for (int il = 0; il < L; il++) {
        if (!moe_model_layer_is_moe(plain, il)) continue;
        const moe_tensor *t = &all->layers[il].down_exps;
        const size_t len = moe_dtype_row_bytes(t->type, t->ne[0]) * (size_t)t->ne[1];
        for (int e = 1; e < X; e++)
            ASSERT((size_t)((char *)t->packed[e] - (char *)t->packed[e - 1]) ==
                   (len + (size_t)pg - 1) / (size_t)pg * (size_t)pg);
    }
    float *a = repack_run(plain), *b = repack_run(all), *c = repack_run(lazy);
    const size_t n = (size_t)plain->hp.n_vocab * 11;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) || memcmp(&a[i], &c[i], 4))
            TEST_FAIL("logit %zu (row %zu): as stored %.9g, packed at load %.9g, lazily %.9g", i,
                      i / (size_t)plain->hp.n_vocab, a[i], b[i], c[i]);
    free(b), free(c);
    /* an arena's copy dropped (read as stored) and one loaded again (a copy
     * of its own): the same logits */
    for (int il = 0; il < L; il++) {
        if (!moe_model_layer_is_moe(plain, il)) continue;
        moe_expert_drop_pages(all, il, 1);
        moe_expert_drop_pages(all, il, X - 1);
        moe_expert_load_pages(all, il, X - 1);
        ASSERT(!all->layers[il].up_exps.packed[1] && all->layers[il].up_exps.packed[X - 1]);
    }
    b = repack_run(all);
    ASSERT(memcmp(a, b, n * sizeof *a) == 0);
    free(a), free(b);
    moe_model_free(plain), moe_model_free(all), moe_model_free(lazy);
    unlink(path);
}
/* A ubatch run as two overlapped halves (moe_ctx_params.split: the second
 * half's attention and routing while the first half's experts are out,
 * here on a second local backend) gives the same logits bit for bit as the
 * ubatch in one piece: slots spread over both halves, odd sizes, sizes too
 * small to split, the float types and Q8_0 (whose groups of 1-2 rows then
 * take a batch's arithmetic, moe_expert_work.batched, in both runs). */
static void split_run(const moe_model *m, int split, float *out, uint64_t *n_split) {
    const int V = m->hp.n_vocab, S = 4;
    moe_pool *pool;
    ASSERT_EQ_INT(moe_pool_create(&pool, 2), 0);
    moe_ctx_params p = moe_ctx_default_params();
    p.kv_type = test_kv;
    p.n_threads = 2;
    p.n_slots = S;
    p.n_ctx = 64;
    p.n_batch = 64;
    p.split = split ? MOE_SPLIT_ON : MOE_SPLIT_OFF;
    moe_expert_backend *be = NULL, *be2 = NULL;
    moe_err err;
    const int rows = 64 * m->hp.n_expert; /* room for a dense MoE too */
    if (moe_expert_backend_local_create(&be, m, pool, rows, &err) < 0 ||
        moe_expert_backend_local_create(&be2, m, pool, rows, &err) < 0)
        TEST_FAIL("backend: %s", err.msg);
    be->second = be2; /* owned by be */
    p.experts = be;
    moe_ctx *c;
    if (moe_ctx_create(&c, m, &p, &err) < 0) TEST_FAIL("ctx: %s", err.msg);
    /* a prefill of 13 rows, slots interleaved (each slot in both halves),
     * then steps of S, 3 (too few to split) and 7 rows */
    int32_t tok[16], pos[16], slot[16];
    int len[4] = {0};
    const int sizes[] = {13, S, 3, 7, S};
    int k = 0;
    for (size_t st = 0; st < sizeof sizes / sizeof *sizes; st++) {
        const int n = sizes[st];
        int8_t want[16];
        for (int i = 0; i < n; i++) {
            slot[i] = (i + (int)st) % S;
            pos[i] = len[slot[i]]++;
            tok[i] = (int32_t)((i * 37 + (int)st * 101 + 11) % V);
            want[i] = 1;
        }
        decode(c, n, tok, pos, slot, want);
        for (int i = 0; i < n; i++)
            memcpy(out + (size_t)(k++) * V, moe_ctx_logits(c, i), sizeof(float) * V);
    }
    moe_ctx_stats s;
    moe_ctx_get_stats(c, &s);
    *n_split = s.n_split;
    moe_ctx_destroy(c);
    moe_expert_backend_destroy(be);
    moe_pool_destroy(pool);
}

static void check_split(moe_arch arch, moe_dtype dt) {
    char path[256];
    tiny_256 = moe_dtype_block_elems(dt) == 256;
    tiny_model(arch, dt, path, sizeof path);
    tiny_256 = 0;
    moe_model *m;
    moe_err err;
    if (moe_model_load(&m, path, &err) < 0) TEST_FAIL("load: %s", err.msg);
    const size_t n = (size_t)m->hp.n_vocab * (13 + 4 + 3 + 7 + 4);
    float *a = test_xmalloc(n * sizeof *a), *b = test_xmalloc(n * sizeof *b);
    uint64_t sa, sb;
    for (int kv = 0; kv < 2; kv++) {
        test_kv = kv ? MOE_DTYPE_F32 : MOE_DTYPE_F16;
        split_run(m, 0, a, &sa);
        split_run(m, 1, b, &sb);
        ASSERT_EQ_INT(sa, 0);
        ASSERT_EQ_INT(sb, 2); /* the 13- and 7-row ubatches */
        for (size_t i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], 4))
                TEST_FAIL("%s %s, %s KV: logit %zu (row %zu): whole %.9g, two halves %.9g",
                          moe_arch_name(arch), moe_dtype_name(dt), kv ? "f32" : "f16", i,
                          i / (size_t)m->hp.n_vocab, a[i], b[i]);
    }
    test_kv = MOE_DTYPE_F16;
    free(a), free(b);
    moe_model_free(m);
    unlink(path);
}
TEST(model_split_halves_same_logits) {
    check_split(MOE_ARCH_LLAMA, MOE_DTYPE_F32);
    check_split(MOE_ARCH_LLAMA, MOE_DTYPE_Q8_0);
    check_split(MOE_ARCH_QWEN2MOE, MOE_DTYPE_F16); /* shared experts */
    check_split(MOE_ARCH_QWEN2MOE, MOE_DTYPE_Q8_0);
    check_split(MOE_ARCH_LLAMA, MOE_DTYPE_IQ4_XS); /* their fast numerics too */
    check_split(MOE_ARCH_LLAMA, MOE_DTYPE_Q6_K);
    check_split(MOE_ARCH_LLAMA, MOE_DTYPE_Q5_K);
}
TEST(model_split_halves_same_logits_deepseek2) { /* MLA, a leading dense layer */
    check_split(MOE_ARCH_DEEPSEEK2, MOE_DTYPE_F32);
    check_split(MOE_ARCH_DEEPSEEK2, MOE_DTYPE_Q8_0);
    check_split(MOE_ARCH_OLMOE, MOE_DTYPE_BF16);
}

TEST(model_repacked_experts_same_logits) {
    check_repacked(MOE_ARCH_LLAMA, MOE_DTYPE_Q8_0);
}
TEST(model_repacked_same_logits_qwen2moe) { /* shared experts */
    check_repacked(MOE_ARCH_QWEN2MOE, MOE_DTYPE_Q8_0);
}
TEST(model_repacked_same_logits_deepseek2) { /* MLA, a leading dense layer */
    check_repacked(MOE_ARCH_DEEPSEEK2, MOE_DTYPE_Q8_0);
}
TEST(model_repacked_q4_K_same_logits) { /* the Q4_K tiles */
    check_repacked(MOE_ARCH_LLAMA, MOE_DTYPE_Q4_K);
    check_repacked(MOE_ARCH_QWEN2MOE, MOE_DTYPE_Q4_K);
}
TEST(model_repacked_q4_K_same_logits_deepseek2) {
    check_repacked(MOE_ARCH_DEEPSEEK2, MOE_DTYPE_Q4_K);
}
TEST(model_repacked_k_types_same_logits) { /* exact (decode) and fast (batches) */
    check_repacked(MOE_ARCH_LLAMA, MOE_DTYPE_IQ4_XS);
    check_repacked(MOE_ARCH_DEEPSEEK2, MOE_DTYPE_IQ4_XS);
    check_repacked(MOE_ARCH_QWEN2MOE, MOE_DTYPE_Q6_K);
    check_repacked(MOE_ARCH_LLAMA, MOE_DTYPE_Q5_K);
}
TEST(model_repacked_q4_0_iq4_nl_same_logits) { /* the 32-element 4-bit tiles */
    check_repacked(MOE_ARCH_LLAMA, MOE_DTYPE_Q4_0);
    check_repacked(MOE_ARCH_QWEN2MOE, MOE_DTYPE_IQ4_NL);
    check_repacked(MOE_ARCH_DEEPSEEK2, MOE_DTYPE_Q4_0);
}

/* One layer's expert work on the local backend of m: groups of 1, 2 and 5
 * rows (experts 2, 1 and 2 again; the 5-row group's first row is the 1-row
 * group's input again), with exact and batched as given; y gets the 8
 * output rows. */
static void groups_run(const moe_model *m, int exact, int batched, float *y) {
    const int E = m->hp.n_embd;
    int il = 0;
    while (!moe_model_layer_is_moe(m, il)) il++;
    moe_pool *pool;
    ASSERT_EQ_INT(moe_pool_create(&pool, 2), 0);
    moe_expert_backend *be;
    moe_err err;
    if (moe_expert_backend_local_create(&be, m, pool, 8, &err) < 0)
        TEST_FAIL("backend: %s", err.msg);
    float *x = test_xmalloc(sizeof(float) * 8 * (size_t)E);
    uint64_t seed = 99;
    for (int i = 0; i < 8 * E; i++) x[i] = test_rand_f32(&seed);
    memcpy(x + 3 * E, x, sizeof(float) * (size_t)E);
    const int32_t expert[3] = {2, 1, 2}, row_start[4] = {0, 1, 3, 8};
    const moe_expert_work w = {il, 3, expert, row_start, E, x, y, NULL, exact, batched};
    if (be->submit(be->ctx, &w, &err) < 0 || be->wait(be->ctx, &err) < 0)
        TEST_FAIL("work: %s", err.msg);
    free(x);
    moe_expert_backend_destroy(be);
    moe_pool_destroy(pool);
}

/* Expert groups give the same bits with the weights packed or as stored,
 * for every numerics (exact; fast from MOE_FAST_MIN_ROWS rows; batched:
 * the batch's numerics for every group, so a row's output does not depend
 * on its group's size), for the types with a fast numerics. */
static void check_groups_packed(moe_dtype dt) {
    setenv("MOE_AMX", "0", 1);
    if (!moe_packed_usable(dt)) SKIP("no packed kernel for this type at this level (AVX-512 only)");
    char path[256];
    tiny_256 = moe_dtype_block_elems(dt) == 256;
    tiny_model(MOE_ARCH_LLAMA, dt, path, sizeof path);
    tiny_256 = 0;
    moe_model *plain, *all;
    moe_err err;
    if (moe_model_load_ex(&plain, path, MOE_REPACK_OFF, &err) < 0 ||
        moe_model_load_ex(&all, path, MOE_REPACK_ALL, &err) < 0)
        TEST_FAIL("load: %s", err.msg);
    const size_t E = (size_t)plain->hp.n_embd, n = 8 * E;
    float *a = test_xmalloc(n * sizeof *a), *b = test_xmalloc(n * sizeof *b);
    for (int mode = 0; mode < 3; mode++) { /* exact, fast, fast + batched */
        groups_run(plain, mode == 0, mode == 2, a);
        groups_run(all, mode == 0, mode == 2, b);
        for (size_t i = 0; i < n; i++)
            if (memcmp(&a[i], &b[i], 4))
                TEST_FAIL("%s mode %d: y[%zu][%zu] as stored %.9g, packed %.9g", moe_dtype_name(dt),
                          mode, i / E, i % E, a[i], b[i]);
        /* batched: row 0 (a group of 1) as row 3 (the same input in a group of 5) */
        if (mode == 2 && memcmp(a, a + 3 * E, E * sizeof *a))
            TEST_FAIL("%s batched: a row alone differs from itself in a group of 5",
                      moe_dtype_name(dt));
    }
    free(a), free(b);
    moe_model_free(plain), moe_model_free(all);
    unlink(path);
}
TEST(model_expert_groups_packed_same_bits) {
    check_groups_packed(MOE_DTYPE_Q8_0);
    check_groups_packed(MOE_DTYPE_IQ4_XS);
    check_groups_packed(MOE_DTYPE_Q6_K);
    check_groups_packed(MOE_DTYPE_Q5_K);
}
