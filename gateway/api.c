/* api.c - OpenAI request bodies in, checked and tokenized (see api.h). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

/* ==== Errors ============================================================ */

void gw_api_error_set(gw_api_error *e, int status, const char *param, const char *fmt, ...) {
    e->status = status;
    e->type = status == 404   ? "not_found_error"
              : status == 503 ? "server_error"
              : status >= 500 ? "server_error"
                              : "invalid_request_error";
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    e->code[0] = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

void gw_api_error_json(moe_buf *b, const gw_api_error *e) {
    moe_buf_printf(b, "{\"error\":{\"message\":");
    moe_buf_json_n(b, e->message, strlen(e->message), MOE_JSON_UTF8_FIX);
    moe_buf_printf(b, ",\"type\":");
    moe_buf_json(b, e->type ? e->type : "invalid_request_error");
    moe_buf_printf(b, ",\"param\":");
    if (e->param[0])
        moe_buf_json_n(b, e->param, strlen(e->param), MOE_JSON_UTF8_FIX);
    else
        moe_buf_printf(b, "null");
    moe_buf_printf(b, ",\"code\":");
    if (e->code[0])
        moe_buf_json(b, e->code);
    else
        moe_buf_printf(b, "null");
    moe_buf_printf(b, "}}\n");
}

/* ==== Field readers ===================================================== */

/* Each returns 1 if the field is present (and not null) and valid, 0 if
 * absent or null, -1 (with *e filled) if present with a bad type or value. */

static int get_bool(const cJSON *o, const char *name, int *out, gw_api_error *e) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!f || cJSON_IsNull(f)) return 0;
    if (!cJSON_IsBool(f)) {
        gw_api_error_set(e, 400, name, "'%s' must be a boolean", name);
        return -1;
    }
    *out = cJSON_IsTrue(f);
    return 1;
}

static int get_num(const cJSON *o, const char *name, double lo, double hi, double *out,
                   gw_api_error *e) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!f || cJSON_IsNull(f)) return 0;
    if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble)) {
        gw_api_error_set(e, 400, name, "'%s' must be a number", name);
        return -1;
    }
    if (f->valuedouble < lo || f->valuedouble > hi) {
        gw_api_error_set(e, 400, name, "'%s' is %.15g; it must be between %.15g and %.15g", name,
                         f->valuedouble, lo, hi);
        return -1;
    }
    *out = f->valuedouble;
    return 1;
}

/* An integer in [lo, hi] (a number with no fraction). */
static int get_int(const cJSON *o, const char *name, double lo, double hi, long long *out,
                   gw_api_error *e) {
    double v;
    int r = get_num(o, name, lo, hi, &v, e);
    if (r <= 0) return r;
    if (v != floor(v)) {
        gw_api_error_set(e, 400, name, "'%s' must be an integer, got %g", name, v);
        return -1;
    }
    *out = (long long)v;
    return 1;
}

static int get_str(const cJSON *o, const char *name, const char **out, gw_api_error *e) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!f || cJSON_IsNull(f)) return 0;
    if (!cJSON_IsString(f)) {
        gw_api_error_set(e, 400, name, "'%s' must be a string", name);
        return -1;
    }
    *out = f->valuestring;
    return 1;
}

/* 1 if the field is present and not null, false, an empty array or object. */
static int present(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!f || cJSON_IsNull(f) || cJSON_IsFalse(f)) return 0;
    if ((cJSON_IsArray(f) || cJSON_IsObject(f)) && !f->child) return 0;
    return 1;
}

/* ==== Prompts =========================================================== */

static int tokenize_error(int rc, const moe_err *err, const char *param, gw_api_error *e) {
    if (rc == MOE_ENOMEM)
        gw_api_error_set(e, 503, param, "out of memory while tokenizing the prompt");
    else
        gw_api_error_set(e, 400, param, "%s", err->msg[0] ? err->msg : "cannot tokenize");
    return -1;
}

/* The prompt must leave room for one generated token. */
static int check_fits(const gw_api_ctx *ctx, const gw_prompt *p, const char *param,
                      gw_api_error *e) {
    if (p->n >= ctx->n_ctx) {
        gw_api_error_set(e, 413, param,
                         "the prompt has %d tokens; this server's context holds %d positions "
                         "per sequence (--ctx), so a prompt must be at most %d tokens: shorten it",
                         p->n, ctx->n_ctx, ctx->n_ctx - 1);
        snprintf(e->code, sizeof e->code, "context_length_exceeded");
        return -1;
    }
    return 0;
}

/* Text of len bytes cannot fit the context when even the vocabulary's longest
 * token (4x over, for normalization and a SentencePiece space) could not
 * cover it in n_ctx - 1 tokens: refused before it is tokenized, so that a
 * large body costs the HTTP thread no tokenizer time. */
static int check_text_fits(const gw_api_ctx *ctx, size_t len, const char *param, gw_api_error *e) {
    size_t per = moe_vocab_max_token_len(ctx->vocab);
    if (per < 1) per = 1;
    const size_t most = 4 * per * (size_t)(ctx->n_ctx > 1 ? ctx->n_ctx - 1 : 1);
    if (len <= most) return 0;
    gw_api_error_set(e, 413, param,
                     "the prompt is %zu bytes, more than %d tokens of this vocabulary can hold "
                     "(the context holds %d positions per sequence, --ctx): shorten it",
                     len, ctx->n_ctx - 1, ctx->n_ctx);
    snprintf(e->code, sizeof e->code, "context_length_exceeded");
    return -1;
}

/* A completions prompt item: a string, or an array of token ids. */
static int parse_prompt_item(const gw_api_ctx *ctx, const cJSON *it, int echo, gw_prompt *p,
                             gw_api_error *e) {
    moe_err err = {0};
    memset(p, 0, sizeof *p);
    if (cJSON_IsString(it)) {
        const size_t len = strlen(it->valuestring);
        if (len == 0) {
            gw_api_error_set(e, 400, "prompt", "'prompt' is empty: give some text or token ids");
            return -1;
        }
        if (check_text_fits(ctx, len, "prompt", e) < 0) return -1;
        int rc = moe_gen_tokenize_text(ctx->vocab, it->valuestring, len, 0, &p->ids, &p->n, &err);
        if (rc < 0) return tokenize_error(rc, &err, "prompt", e);
        if (echo) {
            p->text = strdup(it->valuestring);
            p->text_len = len;
            if (!p->text) {
                free(p->ids);
                p->ids = NULL;
                gw_api_error_set(e, 503, "prompt", "out of memory");
                return -1;
            }
        }
    } else if (cJSON_IsArray(it)) {
        const int n = cJSON_GetArraySize(it);
        if (n == 0) {
            gw_api_error_set(e, 400, "prompt", "'prompt' is an empty token list");
            return -1;
        }
        if (n >= ctx->n_ctx) {
            p->n = n;
            return check_fits(ctx, p, "prompt", e);
        }
        p->ids = malloc((size_t)n * sizeof *p->ids);
        if (!p->ids) {
            gw_api_error_set(e, 503, "prompt", "out of memory");
            return -1;
        }
        const cJSON *t;
        int i = 0;
        cJSON_ArrayForEach(t, it) {
            if (!cJSON_IsNumber(t) || t->valuedouble != floor(t->valuedouble) ||
                t->valuedouble < 0 || t->valuedouble >= ctx->n_vocab) {
                gw_api_error_set(e, 400, "prompt", "'prompt' token %d is not a token id in [0, %d)",
                                 i, ctx->n_vocab);
                free(p->ids);
                p->ids = NULL;
                return -1;
            }
            p->ids[i++] = (int32_t)t->valuedouble;
        }
        p->n = n;
    } else {
        gw_api_error_set(e, 400, "prompt",
                         "'prompt' must be a string, an array of token ids, or an array of "
                         "either");
        return -1;
    }
    if (check_fits(ctx, p, "prompt", e) < 0) {
        free(p->ids);
        free(p->text);
        memset(p, 0, sizeof *p);
        return -1;
    }
    if (echo && !p->text) { /* token ids: the echo is their text */
        long need = moe_detokenize(ctx->vocab, p->ids, p->n, 0, NULL, 0);
        if (need >= 0) {
            p->text = malloc((size_t)need + 1);
            if (p->text) {
                long got = moe_detokenize(ctx->vocab, p->ids, p->n, 0, p->text, (size_t)need + 1);
                p->text_len = got > 0 ? (size_t)got : 0;
            }
        }
        if (!p->text) {
            free(p->ids);
            memset(p, 0, sizeof *p);
            if (need < 0 && need != MOE_ENOMEM) /* an id past the vocabulary (padded rows) */
                gw_api_error_set(e, 400, "prompt",
                                 "'prompt' has a token id without text; 'echo' needs ids below %d",
                                 moe_vocab_n_tokens(ctx->vocab));
            else
                gw_api_error_set(e, 503, "prompt", "out of memory");
            return -1;
        }
    }
    return 0;
}

static int parse_completion_prompt(const gw_api_ctx *ctx, const cJSON *root, gw_api_req *r,
                                   gw_api_error *e) {
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p || cJSON_IsNull(p)) {
        gw_api_error_set(e, 400, "prompt", "'prompt' is required");
        return -1;
    }
    /* a list of prompts: an array whose first item is a string or an array */
    int list =
        cJSON_IsArray(p) && p->child && (cJSON_IsString(p->child) || cJSON_IsArray(p->child));
    const int n = list ? cJSON_GetArraySize(p) : 1;
    if (n > GW_MAX_PROMPTS) {
        gw_api_error_set(e, 400, "prompt", "%d prompts in one request; at most %d", n,
                         GW_MAX_PROMPTS);
        return -1;
    }
    r->prompts = calloc((size_t)n, sizeof *r->prompts);
    if (!r->prompts) {
        gw_api_error_set(e, 503, "prompt", "out of memory");
        return -1;
    }
    if (!list) {
        r->n_prompts = 1;
        return parse_prompt_item(ctx, p, r->echo, &r->prompts[0], e);
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, p) {
        if (!cJSON_IsString(it) && !cJSON_IsArray(it)) {
            gw_api_error_set(e, 400, "prompt",
                             "'prompt' item %d must be a string or an array of token ids",
                             r->n_prompts);
            return -1;
        }
        if (parse_prompt_item(ctx, it, r->echo, &r->prompts[r->n_prompts], e) < 0) return -1;
        r->n_prompts++;
    }
    return 0;
}

/* A message's content: a string, or an array of {"type":"text","text":...}
 * parts (joined). *out is malloc'd. */
static int message_content(const cJSON *m, int i, char **out, gw_api_error *e) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", i);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!c || cJSON_IsNull(c)) {
        *out = strdup("");
    } else if (cJSON_IsString(c)) {
        *out = strdup(c->valuestring);
    } else if (cJSON_IsArray(c)) {
        moe_buf b = {0};
        const cJSON *part;
        int k = 0;
        cJSON_ArrayForEach(part, c) {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") ||
                !cJSON_IsString(text)) {
                snprintf(param, sizeof param, "messages[%d].content[%d]", i, k);
                gw_api_error_set(e, 400, param,
                                 "content part of type '%s' is not supported: this model takes "
                                 "text parts only ({\"type\":\"text\",\"text\":...})",
                                 cJSON_IsString(type) ? type->valuestring : "?");
                free(b.s);
                return -1;
            }
            moe_buf_append(&b, text->valuestring, strlen(text->valuestring));
            k++;
        }
        if (b.oom) {
            free(b.s);
            b.s = NULL;
        } else if (!b.s) {
            b.s = strdup(""); /* no parts */
        }
        *out = b.s;
    } else {
        gw_api_error_set(e, 400, param, "'%s' must be a string or an array of text parts", param);
        return -1;
    }
    if (!*out) {
        gw_api_error_set(e, 503, param, "out of memory");
        return -1;
    }
    return 0;
}

static int parse_chat_prompt(const gw_api_ctx *ctx, const cJSON *root, gw_api_req *r,
                             gw_api_error *e) {
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(ms)) {
        gw_api_error_set(e, 400, "messages", "'messages' is required: an array of messages");
        return -1;
    }
    const int n = cJSON_GetArraySize(ms);
    if (n == 0 || n > GW_MAX_MESSAGES) {
        gw_api_error_set(e, 400, "messages", "'messages' has %d items; give 1 to %d", n,
                         GW_MAX_MESSAGES);
        return -1;
    }
    moe_chat_msg *msgs = calloc((size_t)n, sizeof *msgs);
    char **owned = calloc((size_t)n, sizeof *owned);
    int rc = -1, i = 0;
    if (!msgs || !owned) {
        gw_api_error_set(e, 503, "messages", "out of memory");
        goto done;
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, ms) {
        char param[48];
        snprintf(param, sizeof param, "messages[%d].role", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role)) {
            gw_api_error_set(e, 400, param, "messages[%d] needs a string 'role'", i);
            goto done;
        }
        const char *rs = role->valuestring;
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant")) {
            gw_api_error_set(e, 400, param,
                             "role '%s' is not supported; use system, developer, user or "
                             "assistant (tool calls are not supported)",
                             role->valuestring);
            goto done;
        }
        if (present(m, "tool_calls") || present(m, "function_call")) {
            snprintf(param, sizeof param, "messages[%d].tool_calls", i);
            gw_api_error_set(e, 400, param, "tool calls are not supported by this server");
            goto done;
        }
        if (message_content(m, i, &owned[i], e) < 0) goto done;
        msgs[i].role = rs;
        msgs[i].content = owned[i];
        i++;
    }
    size_t bytes = 0;
    for (int k = 0; k < n; k++) bytes += strlen(owned[k]);
    if (check_text_fits(ctx, bytes, "messages", e) < 0) goto done;
    r->prompts = calloc(1, sizeof *r->prompts);
    if (!r->prompts) {
        gw_api_error_set(e, 503, "messages", "out of memory");
        goto done;
    }
    moe_err err = {0};
    int trc = moe_gen_tokenize_chat(ctx->vocab, ctx->chat_kind, msgs, n, &r->prompts[0].ids,
                                    &r->prompts[0].n, &err);
    if (trc < 0) {
        tokenize_error(trc, &err, "messages", e);
        goto done;
    }
    r->n_prompts = 1;
    rc = check_fits(ctx, &r->prompts[0], "messages", e);
done:
    if (owned)
        for (int k = 0; k < n; k++) free(owned[k]);
    free(owned);
    free(msgs);
    return rc;
}

/* ==== Parameters ======================================================== */

static int parse_stop(const cJSON *root, gw_api_req *r, gw_api_error *e) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!s || cJSON_IsNull(s)) return 0;
    const cJSON *one = NULL;
    int n;
    if (cJSON_IsString(s)) {
        n = 1;
        one = s;
    } else if (cJSON_IsArray(s)) {
        n = cJSON_GetArraySize(s);
    } else {
        gw_api_error_set(e, 400, "stop", "'stop' must be a string or an array of strings");
        return -1;
    }
    if (n > MOE_GEN_MAX_STOP) {
        gw_api_error_set(e, 400, "stop", "'stop' has %d strings; at most %d", n, MOE_GEN_MAX_STOP);
        return -1;
    }
    r->stop = calloc((size_t)(n ? n : 1), sizeof *r->stop);
    if (!r->stop) {
        gw_api_error_set(e, 503, "stop", "out of memory");
        return -1;
    }
    const cJSON *it = one ? one : s->child;
    for (int i = 0; i < n; i++, it = it->next) {
        if (!cJSON_IsString(it)) {
            gw_api_error_set(e, 400, "stop", "'stop' item %d must be a string", i);
            return -1;
        }
        const size_t len = strlen(it->valuestring);
        if (len == 0) continue; /* an empty stop string stops nothing */
        if (len > MOE_GEN_MAX_STOP_LEN) {
            gw_api_error_set(e, 400, "stop", "'stop' item %d is %zu bytes; at most %d", i, len,
                             MOE_GEN_MAX_STOP_LEN);
            return -1;
        }
        /* moe_gen_seq_create takes well-formed UTF-8 only (bad bytes grow to 3) */
        char fixed[3 * MOE_GEN_MAX_STOP_LEN + 1];
        if (moe_utf8_repair(fixed, sizeof fixed, it->valuestring) != len ||
            memcmp(fixed, it->valuestring, len)) {
            gw_api_error_set(e, 400, "stop", "'stop' item %d is not valid UTF-8", i);
            return -1;
        }
        if (!(r->stop[r->n_stop] = strdup(it->valuestring))) {
            gw_api_error_set(e, 503, "stop", "out of memory");
            return -1;
        }
        r->n_stop++;
    }
    return 0;
}

/* Fields this server knows and cannot honour: a 400 naming them. */
static int refuse_unsupported(const cJSON *root, gw_route route, gw_api_error *e) {
    static const char *const never[] = {"tools",      "functions",          "logit_bias", "audio",
                                        "prediction", "web_search_options", NULL};
    for (int i = 0; never[i]; i++)
        if (present(root, never[i])) {
            gw_api_error_set(e, 400, never[i], "'%s' is not supported by this server", never[i]);
            return -1;
        }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    if (tc && !cJSON_IsNull(tc) && !(cJSON_IsString(tc) && !strcmp(tc->valuestring, "none"))) {
        gw_api_error_set(e, 400, "tool_choice", "'tool_choice' is not supported (tools are not)");
        return -1;
    }
    const cJSON *fc = cJSON_GetObjectItemCaseSensitive(root, "function_call");
    if (fc && !cJSON_IsNull(fc) && !(cJSON_IsString(fc) && !strcmp(fc->valuestring, "none"))) {
        gw_api_error_set(e, 400, "function_call", "'function_call' is not supported");
        return -1;
    }
    const cJSON *rf = cJSON_GetObjectItemCaseSensitive(root, "response_format");
    if (rf && !cJSON_IsNull(rf)) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(rf, "type");
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text")) {
            gw_api_error_set(e, 400, "response_format",
                             "'response_format' of type '%s' is not supported; only "
                             "{\"type\":\"text\"}",
                             cJSON_IsString(t) ? t->valuestring : "?");
            return -1;
        }
    }
    const cJSON *mod = cJSON_GetObjectItemCaseSensitive(root, "modalities");
    if (cJSON_IsArray(mod)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, mod) if (!cJSON_IsString(it) || strcmp(it->valuestring, "text")) {
            gw_api_error_set(e, 400, "modalities", "only the 'text' modality is supported");
            return -1;
        }
    }
    if (route == GW_ROUTE_COMPLETIONS) {
        const char *suffix = NULL;
        if (get_str(root, "suffix", &suffix, e) < 0) return -1;
        if (suffix && suffix[0]) {
            gw_api_error_set(e, 400, "suffix",
                             "'suffix' (fill-in-the-middle) is not supported by this server; "
                             "send the text before the gap as the prompt");
            return -1;
        }
    }
    return 0;
}

int gw_api_parse(const gw_api_ctx *ctx, gw_route route, const char *body, size_t len, gw_api_req *r,
                 gw_api_error *e) {
    memset(r, 0, sizeof *r);
    r->route = route;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && at >= body && at <= body + len ? (long)(at - body) : -1;
        gw_api_error_set(e, 400, "", "the body is not valid JSON (error near byte %ld)", off);
        return -1;
    }
    if (!cJSON_IsObject(root)) {
        gw_api_error_set(e, 400, "", "the body must be a JSON object");
        goto fail;
    }
    const char *model = NULL;
    if (get_str(root, "model", &model, e) < 0) goto fail;
    if (!model) {
        gw_api_error_set(e, 400, "model", "'model' is required (this server serves '%s')",
                         ctx->model);
        goto fail;
    }
    if (strcmp(model, ctx->model)) {
        gw_api_error_set(e, 404, "model",
                         "the model '%.200s' does not exist; this server serves '%s'", model,
                         ctx->model);
        snprintf(e->code, sizeof e->code, "model_not_found");
        goto fail;
    }
    if (!(r->model = strdup(model))) {
        gw_api_error_set(e, 503, "model", "out of memory");
        goto fail;
    }
    if (refuse_unsupported(root, route, e) < 0) goto fail;

    moe_gen_params *g = &r->gen;
    *g = moe_gen_default_params();
    g->sampling.temperature = 1.0f; /* OpenAI's defaults: temperature 1, top_p 1 */
    g->penalize_prompt = 0;         /* penalties count generated tokens only */
    g->sampling.penalty_last_n = MOE_SAMPLER_MAX_PENALTY_LAST_N;
    g->max_tokens = route == GW_ROUTE_CHAT ? -1 : 16;
    g->n_ctx = ctx->n_ctx;
    long long iv;
    double dv;
    int rc;
    if (get_bool(root, "stream", &r->stream, e) < 0) goto fail;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!cJSON_IsObject(so)) {
            gw_api_error_set(e, 400, "stream_options", "'stream_options' must be an object");
            goto fail;
        }
        if (get_bool(so, "include_usage", &r->include_usage, e) < 0) goto fail;
    }
    if ((rc = get_int(root, "max_tokens", 0, MOE_GEN_MAX_TOKENS, &iv, e)) < 0) goto fail;
    if (rc) g->max_tokens = (int)iv;
    if (route == GW_ROUTE_CHAT) {
        if ((rc = get_int(root, "max_completion_tokens", 0, MOE_GEN_MAX_TOKENS, &iv, e)) < 0)
            goto fail;
        if (rc) g->max_tokens = (int)iv;
    }
    if ((rc = get_num(root, "temperature", 0, 2, &dv, e)) < 0) goto fail;
    if (rc) g->sampling.temperature = (float)dv;
    if ((rc = get_num(root, "top_p", 0, 1, &dv, e)) < 0) goto fail;
    if (rc) {
        if ((float)dv <= 0) { /* as a float: 1e-60 is 0 */
            gw_api_error_set(e, 400, "top_p", "'top_p' must be greater than 0 (and at most 1)");
            goto fail;
        }
        g->sampling.top_p = (float)dv;
    }
    if ((rc = get_int(root, "top_k", -1, 1 << 30, &iv, e)) < 0) goto fail;
    if (rc) g->sampling.top_k = iv < 0 ? 0 : (int)iv;
    if ((rc = get_num(root, "min_p", 0, 1, &dv, e)) < 0) goto fail;
    if (rc) {
        if ((float)dv >= 1) { /* as a float: 0.99999999 is 1 */
            gw_api_error_set(e, 400, "min_p", "'min_p' must be below 1");
            goto fail;
        }
        g->sampling.min_p = (float)dv;
    }
    if ((rc = get_num(root, "presence_penalty", -2, 2, &dv, e)) < 0) goto fail;
    if (rc) g->sampling.presence_penalty = (float)dv;
    if ((rc = get_num(root, "frequency_penalty", -2, 2, &dv, e)) < 0) goto fail;
    if (rc) g->sampling.frequency_penalty = (float)dv;
    if ((rc = get_num(root, "repetition_penalty", 0.01, 100, &dv, e)) < 0) goto fail;
    if (rc) g->sampling.repeat_penalty = (float)dv;
    if ((rc = get_int(root, "seed", -9.2e18, 9.2e18, &iv, e)) < 0) goto fail;
    if (rc) {
        g->sampling.seed = (uint64_t)iv;
        r->seed_given = 1;
    }
    if (get_bool(root, "ignore_eos", &g->ignore_eos, e) < 0) goto fail;
    if (get_bool(root, "return_token_ids", &r->return_token_ids, e) < 0) goto fail;
    r->n = 1;
    if ((rc = get_int(root, "n", 1, GW_MAX_N, &iv, e)) < 0) goto fail;
    if (rc) r->n = (int)iv;
    if ((rc = get_int(root, "best_of", 1, GW_MAX_N, &iv, e)) < 0) goto fail;
    if (rc && iv != r->n) {
        gw_api_error_set(e, 400, "best_of", "'best_of' other than n is not supported");
        goto fail;
    }
    const char *user = NULL;
    if (get_str(root, "user", &user, e) < 0) goto fail;
    if (user && !(r->user = strdup(user))) {
        gw_api_error_set(e, 503, "user", "out of memory");
        goto fail;
    }
    if (route == GW_ROUTE_CHAT) {
        if (get_bool(root, "logprobs", &r->logprobs, e) < 0) goto fail;
        if ((rc = get_int(root, "top_logprobs", 0, MOE_SAMPLER_MAX_LOGPROBS, &iv, e)) < 0)
            goto fail;
        if (rc) {
            if (!r->logprobs) {
                gw_api_error_set(e, 400, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
                goto fail;
            }
            r->top_logprobs = (int)iv;
        }
    } else {
        if ((rc = get_int(root, "logprobs", 0, GW_MAX_LOGPROBS_COMPLETIONS, &iv, e)) < 0) goto fail;
        if (rc) {
            r->logprobs = 1;
            r->top_logprobs = (int)iv;
        }
        if (get_bool(root, "echo", &r->echo, e) < 0) goto fail;
        if (r->echo && r->logprobs) {
            gw_api_error_set(e, 400, "echo",
                             "'echo' with 'logprobs' (prompt logprobs) is not supported");
            goto fail;
        }
    }
    g->sampling.n_logprobs = r->top_logprobs;
    if (parse_stop(root, r, e) < 0) goto fail;
    g->stop = (const char *const *)r->stop;
    g->n_stop = r->n_stop;

    if (route == GW_ROUTE_CHAT) {
        if (parse_chat_prompt(ctx, root, r, e) < 0) goto fail;
        int k = 0;
        for (int i = 0; i < ctx->n_end && k < MOE_GEN_MAX_STOP_TOKENS; i++)
            r->stop_ids[k++] = ctx->end_ids[i];
        r->n_stop_ids = k;
        g->stop_tokens = k ? r->stop_ids : NULL;
        g->n_stop_tokens = k;
    } else {
        if (parse_completion_prompt(ctx, root, r, e) < 0) goto fail;
    }
    if ((long)r->n * r->n_prompts > ctx->max_seqs) {
        gw_api_error_set(e, 400, r->n > 1 ? "n" : "prompt",
                         "%d prompts x n=%d need %d sequences at once; this server runs at most "
                         "%d (--max-seqs)",
                         r->n_prompts, r->n, r->n * r->n_prompts, ctx->max_seqs);
        goto fail;
    }
    cJSON_Delete(root);
    return 0;
fail:
    cJSON_Delete(root);
    gw_api_req_free(r);
    return -1;
}

void gw_api_req_free(gw_api_req *r) {
    if (!r) return;
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].ids);
        free(r->prompts[i].text);
    }
    free(r->prompts);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    free(r->model);
    free(r->user);
    memset(r, 0, sizeof *r);
}

/* ==== Tokenizer endpoints =============================================== */

/* The body as an object with an optional "model" that must be the served
 * one; NULL (with *e) otherwise. */
static cJSON *parse_object(const gw_api_ctx *ctx, const char *body, size_t len, gw_api_error *e) {
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root || !cJSON_IsObject(root)) {
        gw_api_error_set(e, 400, "", "the body must be a JSON object");
        cJSON_Delete(root);
        return NULL;
    }
    const char *model = NULL;
    if (get_str(root, "model", &model, e) < 0) {
        cJSON_Delete(root);
        return NULL;
    }
    if (model && strcmp(model, ctx->model)) {
        gw_api_error_set(e, 404, "model",
                         "the model '%.200s' does not exist; this server serves '%s'", model,
                         ctx->model);
        snprintf(e->code, sizeof e->code, "model_not_found");
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int gw_api_tokenize(const gw_api_ctx *ctx, const char *body, size_t len, moe_buf *out,
                    gw_api_error *e) {
    cJSON *root = parse_object(ctx, body, len, e);
    if (!root) return -1;
    gw_api_req r = {0};
    int rc = -1, special = 1;
    if (cJSON_GetObjectItemCaseSensitive(root, "messages")) {
        if (parse_chat_prompt(ctx, root, &r, e) < 0 && !(r.n_prompts == 1 && e->status == 413))
            goto done;
    } else {
        const char *text = NULL;
        if (get_bool(root, "add_special_tokens", &special, e) < 0) goto done;
        if (get_str(root, "prompt", &text, e) < 0) goto done;
        if (!text) {
            gw_api_error_set(e, 400, "prompt", "give 'prompt' (text) or 'messages'");
            goto done;
        }
        if (!(r.prompts = calloc(1, sizeof *r.prompts))) {
            gw_api_error_set(e, 503, "", "out of memory");
            goto done;
        }
        r.n_prompts = 1;
        moe_err err = {0};
        if (text[0]) {
            if (check_text_fits(ctx, strlen(text), "prompt", e) < 0) goto done;
            int trc = moe_gen_tokenize_text(ctx->vocab, text, strlen(text),
                                            special ? 0 : MOE_GEN_TEXT_NO_BOS, &r.prompts[0].ids,
                                            &r.prompts[0].n, &err);
            if (trc < 0) {
                tokenize_error(trc, &err, "prompt", e);
                goto done;
            }
        }
    }
    moe_buf_printf(out, "{\"count\":%d,\"max_model_len\":%d,\"tokens\":[", r.prompts[0].n,
                   ctx->n_ctx);
    for (int i = 0; i < r.prompts[0].n; i++)
        moe_buf_printf(out, i ? ",%d" : "%d", (int)r.prompts[0].ids[i]);
    moe_buf_printf(out, "]}\n");
    rc = 0;
done:
    gw_api_req_free(&r);
    cJSON_Delete(root);
    return rc;
}

int gw_api_detokenize(const gw_api_ctx *ctx, const char *body, size_t len, moe_buf *out,
                      gw_api_error *e) {
    cJSON *root = parse_object(ctx, body, len, e);
    if (!root) return -1;
    int rc = -1;
    int32_t *ids = NULL;
    char *text = NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "tokens");
    if (!cJSON_IsArray(t)) {
        gw_api_error_set(e, 400, "tokens", "'tokens' is required: an array of token ids");
        goto done;
    }
    const int n = cJSON_GetArraySize(t);
    if (n > 1 << 20) {
        gw_api_error_set(e, 413, "tokens", "%d tokens; at most %d", n, 1 << 20);
        goto done;
    }
    if (!(ids = malloc((size_t)(n ? n : 1) * sizeof *ids))) {
        gw_api_error_set(e, 503, "", "out of memory");
        goto done;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, t) {
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
            it->valuedouble < 0 || it->valuedouble >= ctx->n_vocab) {
            gw_api_error_set(e, 400, "tokens", "'tokens' item %d is not a token id in [0, %d)", i,
                             ctx->n_vocab);
            goto done;
        }
        ids[i++] = (int32_t)it->valuedouble;
    }
    long need = moe_detokenize(ctx->vocab, ids, n, MOE_DETOK_STRIP_SPACE, NULL, 0);
    if (need < 0 && need != MOE_ENOMEM) { /* an id past the vocabulary (padded rows) */
        gw_api_error_set(e, 400, "tokens", "'tokens' has an id without text; give ids below %d",
                         moe_vocab_n_tokens(ctx->vocab));
        goto done;
    }
    if (need < 0 || !(text = malloc((size_t)need + 1))) {
        gw_api_error_set(e, 503, "", "out of memory");
        goto done;
    }
    long got = moe_detokenize(ctx->vocab, ids, n, MOE_DETOK_STRIP_SPACE, text, (size_t)need + 1);
    moe_buf_printf(out, "{\"prompt\":");
    moe_buf_json_n(out, text, got > 0 ? (size_t)got : 0, MOE_JSON_UTF8_FIX);
    moe_buf_printf(out, "}\n");
    rc = 0;
done:
    free(text);
    free(ids);
    cJSON_Delete(root);
    return rc;
}

/* ==== Rendering helpers ================================================= */

void gw_api_token_json(moe_buf *b, const char *bytes, int n) {
    moe_buf_json_n(b, bytes ? bytes : "", bytes ? (size_t)n : 0, MOE_JSON_UTF8_FIX);
}

static void bytes_array(moe_buf *b, const char *bytes, int n) {
    moe_buf_append(b, "[", 1);
    for (int i = 0; i < n; i++) moe_buf_printf(b, i ? ",%u" : "%u", (unsigned char)bytes[i]);
    moe_buf_append(b, "]", 1);
}

/* A logprob as JSON: -9999.0 stands for -inf (OpenAI's convention). */
static void logprob_num(moe_buf *b, float lp) {
    if (!isfinite(lp))
        moe_buf_printf(b, "-9999.0");
    else
        moe_buf_printf(b, "%.9g", (double)lp);
}

void gw_api_chat_logprob(moe_buf *b, const moe_gen_step *st, int n_top) {
    moe_buf_printf(b, "{\"token\":");
    gw_api_token_json(b, st->bytes, st->n_bytes);
    moe_buf_printf(b, ",\"logprob\":");
    logprob_num(b, st->logprob);
    moe_buf_printf(b, ",\"bytes\":");
    bytes_array(b, st->bytes, st->n_bytes);
    moe_buf_printf(b, ",\"top_logprobs\":[");
    for (int i = 0; i < n_top && i < st->n_top; i++) {
        const moe_gen_top *t = &st->top[i];
        moe_buf_printf(b, "%s{\"token\":", i ? "," : "");
        gw_api_token_json(b, t->bytes, t->n_bytes);
        moe_buf_printf(b, ",\"logprob\":");
        logprob_num(b, t->logprob);
        moe_buf_printf(b, ",\"bytes\":");
        bytes_array(b, t->bytes, t->n_bytes);
        moe_buf_append(b, "}", 1);
    }
    moe_buf_printf(b, "]}");
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void gw_api_new_id(gw_route route, char *id, uint64_t *rng) {
    const uint64_t a = splitmix(rng), b = splitmix(rng);
    snprintf(id, 48, "%s%016llx%08llx", route == GW_ROUTE_CHAT ? "chatcmpl-" : "cmpl-",
             (unsigned long long)a, (unsigned long long)(b >> 32));
}
