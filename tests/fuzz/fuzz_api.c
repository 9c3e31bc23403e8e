/* fuzz_api.c - libFuzzer target: the gateway's request body parser
 * (gateway/api.c). The first byte picks the endpoint (chat completions,
 * completions, /tokenize, /detokenize), the rest is the body. A parsed
 * request must hold what the scheduler relies on (prompt ids in range and
 * shorter than the context, n x prompts within max_seqs, sampling and stop
 * parameters that moe_gen_seq_create accepts); a refused one a 400, 404 or
 * 413 with a message, rendered as valid JSON in UTF-8. Nothing runs out of
 * memory here, so a 503 is a misreport. Never a crash or a leak.
 *
 * The context's n_vocab is the vocabulary's size plus a few rows, as for a
 * model whose embedding is padded: ids past the vocabulary are valid
 * prompt tokens without text. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api.h"
#include "moe/chat.h"
#include "moe/generate.h"
#include "moe/gguf.h"
#include "moe/sampler.h"
#include "moe/vocab.h"
#include "testmodel.h"
#include "text/unicode.h"

#include "fuzz.h"

#define PADDED_ROWS 4

static moe_gguf *gguf;
static moe_vocab *vocab;
static int32_t end_ids[8];
static gw_api_ctx ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    moe_testmodel_params p;
    moe_testmodel_defaults(&p, MOE_ARCH_LLAMA, "tiny");
    char path[64];
    snprintf(path, sizeof path, "/tmp/moe-fuzz-api-%d.gguf", (int)getpid());
    moe_err err;
    if (moe_testmodel_write(&p, path, &err) < 0 || moe_gguf_open(&gguf, path, &err) < 0 ||
        moe_vocab_load(&vocab, gguf, &err) < 0) {
        fprintf(stderr, "fuzz_api: %s\n", err.msg);
        abort();
    }
    unlink(path); /* the mapping stays valid */
    int n_end = 0;
    for (const char *const *t = moe_chat_end_texts(MOE_CHAT_CHATML); *t && n_end < 7; t++) {
        const int32_t id = moe_vocab_find(vocab, *t, strlen(*t));
        if (id >= 0) end_ids[n_end++] = id;
    }
    end_ids[n_end++] = moe_vocab_eos(vocab) >= 0 ? moe_vocab_eos(vocab) : 1;
    ctx = (gw_api_ctx){.vocab = vocab,
                       .n_vocab = moe_vocab_n_tokens(vocab) + PADDED_ROWS,
                       .n_ctx = 64,
                       .chat_kind = MOE_CHAT_CHATML,
                       .model = "m",
                       .end_ids = end_ids,
                       .n_end = n_end,
                       .max_seqs = 8};
    return 0;
}

/* The whole buffer is one JSON value (trailing whitespace allowed) in
 * well-formed UTF-8; returns it parsed (caller frees). */
static cJSON *valid_json(const moe_buf *b) {
    CHECK(b->s && !b->oom && b->s[b->n] == 0);
    for (size_t i = 0; i < b->n;) {
        uint32_t cp;
        const int l = moe__utf8_decode(b->s + i, b->n - i, &cp);
        CHECK(l > 0);
        i += (size_t)l;
    }
    CHECK(strlen(b->s) == b->n); /* NULs escaped */
    cJSON *j = cJSON_ParseWithOpts(b->s, NULL, 1);
    CHECK(j != NULL);
    return j;
}

static void check_error(const gw_api_error *e) {
    CHECK(e->status == 400 || e->status == 404 || e->status == 413 || e->status == 503);
    CHECK(e->status != 503); /* out of memory: not under the fuzzer */
    CHECK(e->type != NULL);
    CHECK(memchr(e->message, 0, sizeof e->message) && e->message[0]);
    CHECK(memchr(e->param, 0, sizeof e->param));
    CHECK(memchr(e->code, 0, sizeof e->code));
    if (e->status == 404) CHECK(!strcmp(e->param, "model") && !strcmp(e->code, "model_not_found"));
    moe_buf b = {0};
    gw_api_error_json(&b, e);
    cJSON *j = valid_json(&b);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "error");
    CHECK(cJSON_IsObject(o));
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "message")));
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "type")));
    cJSON_Delete(j);
    free(b.s);
}

static void check_req(const gw_api_req *r, gw_route route) {
    CHECK(r->route == route);
    CHECK(r->model && !strcmp(r->model, ctx.model));
    CHECK(r->n >= 1 && r->n <= GW_MAX_N);
    CHECK(r->n_prompts >= 1 && r->n_prompts <= GW_MAX_PROMPTS && r->prompts);
    CHECK((long)r->n * r->n_prompts <= ctx.max_seqs);
    CHECK(route == GW_ROUTE_COMPLETIONS || r->n_prompts == 1);
    CHECK(r->stream == 0 || r->stream == 1);
    CHECK(r->include_usage == 0 || r->include_usage == 1);
    CHECK(r->logprobs == 0 || r->logprobs == 1);
    CHECK(r->top_logprobs >= 0 &&
          r->top_logprobs <=
              (route == GW_ROUTE_CHAT ? MOE_SAMPLER_MAX_LOGPROBS : GW_MAX_LOGPROBS_COMPLETIONS));
    CHECK(!r->top_logprobs || r->logprobs);
    CHECK(!r->echo || (route == GW_ROUTE_COMPLETIONS && !r->logprobs));
    for (int i = 0; i < r->n_prompts; i++) {
        const gw_prompt *p = &r->prompts[i];
        CHECK(p->ids && p->n >= 1 && p->n < ctx.n_ctx);
        for (int k = 0; k < p->n; k++) CHECK(p->ids[k] >= 0 && p->ids[k] < ctx.n_vocab);
        CHECK(r->echo ? p->text != NULL : p->text == NULL);
    }
    const moe_gen_params *g = &r->gen;
    CHECK(r->n_stop >= 0 && r->n_stop <= MOE_GEN_MAX_STOP);
    CHECK(g->n_stop == r->n_stop && (!r->n_stop || g->stop == (const char *const *)r->stop));
    for (int i = 0; i < r->n_stop; i++)
        CHECK(r->stop[i] && r->stop[i][0] && strlen(r->stop[i]) <= MOE_GEN_MAX_STOP_LEN);
    CHECK(g->n_stop_tokens >= 0 && g->n_stop_tokens <= MOE_GEN_MAX_STOP_TOKENS);
    CHECK(route == GW_ROUTE_CHAT ? g->n_stop_tokens == ctx.n_end : g->n_stop_tokens == 0);
    CHECK(g->n_ctx == ctx.n_ctx);
    CHECK(g->max_tokens <= MOE_GEN_MAX_TOKENS && (g->max_tokens >= 0 || route == GW_ROUTE_CHAT));
    CHECK(g->sampling.n_logprobs == r->top_logprobs);
    moe_err err = {0};
    if (moe_sampler_params_check(ctx.n_vocab, &g->sampling, &err) < 0) {
        fprintf(stderr, "fuzz_api: %s\n", err.msg);
        CHECK(!"sampling parameters pass moe_sampler_params_check");
    }
    /* what the scheduler does with it (gateway/job.c): a sequence per prompt */
    for (int i = 0; i < r->n_prompts; i++) {
        moe_gen_seq *s = NULL;
        const int rc =
            moe_gen_seq_create(&s, vocab, ctx.n_vocab, r->prompts[i].ids, r->prompts[i].n, g, &err);
        if (rc < 0) {
            fprintf(stderr, "fuzz_api: moe_gen_seq_create: %s\n", err.msg);
            CHECK(!"a parsed request makes a sequence");
        }
        moe_gen_seq_destroy(s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    if (n < 1 || n > 4096) return 0;
    const int target = data[0] % 4;
    const char *body = (const char *)data + 1;
    const size_t len = n - 1;
    gw_api_error e;
    memset(&e, 0, sizeof e);
    if (target <= 1) {
        const gw_route route = target == 0 ? GW_ROUTE_CHAT : GW_ROUTE_COMPLETIONS;
        gw_api_req r;
        if (gw_api_parse(&ctx, route, body, len, &r, &e) == 0) {
            check_req(&r, route);
            gw_api_req_free(&r);
        } else {
            CHECK(!r.prompts && !r.n_prompts && !r.stop && !r.n_stop && !r.model && !r.user);
            check_error(&e);
        }
        return 0;
    }
    moe_buf out = {0};
    const int rc = target == 2 ? gw_api_tokenize(&ctx, body, len, &out, &e)
                               : gw_api_detokenize(&ctx, body, len, &out, &e);
    if (rc == 0) {
        cJSON *j = valid_json(&out);
        CHECK(cJSON_IsObject(j));
        if (target == 2) {
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "count");
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "tokens");
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "max_model_len");
            CHECK(cJSON_IsNumber(c) && cJSON_IsArray(t) && cJSON_IsNumber(m));
            CHECK(c->valueint == cJSON_GetArraySize(t) && m->valueint == ctx.n_ctx);
            const cJSON *it;
            cJSON_ArrayForEach(it, t) CHECK(cJSON_IsNumber(it) && it->valueint >= 0 &&
                                            it->valueint < moe_vocab_n_tokens(vocab));
        } else {
            CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "prompt")));
        }
        cJSON_Delete(j);
    } else {
        check_error(&e);
    }
    free(out.s);
    return 0;
}
