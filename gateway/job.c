/* job.c - a request's choices and the bytes that go back (see job.h):
 * server-sent-event chunks as OpenAI streams them, and the final objects. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "job.h"
#include "svc/clock.h"

#define FINGERPRINT "moemesh"

/* ==== Life ============================================================== */

int gw_job_create(gw_job **out, gw_api_req *req, uint64_t *rng, gw_api_error *e) {
    *out = NULL;
    gw_job *j = calloc(1, sizeof *j);
    const int n_ch = req->n_prompts * req->n;
    if (!j || !(j->ch = calloc((size_t)n_ch, sizeof *j->ch))) {
        free(j);
        gw_api_error_set(e, 503, "", "out of memory");
        return -1;
    }
    j->req = *req;
    memset(req, 0, sizeof *req);
    /* gen's pointers into the request itself follow it (stop strings are
     * on the heap; stop ids are an array inside the struct) */
    j->req.gen.stop_tokens = j->req.n_stop_ids ? j->req.stop_ids : NULL;
    j->req.gen.n_stop_tokens = j->req.n_stop_ids;
    j->n_ch = n_ch;
    j->fd = -1;
    atomic_init(&j->refs, 1);
    atomic_init(&j->cancelled, 0);
    atomic_init(&j->lim_tokens, 0);
    atomic_init(&j->cancel_asked, 0);
    atomic_init(&j->admit_us, 0);
    j->reg_idx = -1;
    pthread_mutex_init(&j->mu, NULL);
    j->created = (int64_t)time(NULL);
    gw_api_new_id(j->req.route, j->id, rng);
    j->weight = 1.0;
    j->usage_idx = -1;
    for (int p = 0; p < j->req.n_prompts; p++) {
        const gw_prompt *pr = &j->req.prompts[p];
        j->prompt_tokens += pr->n;
        for (int k = 0; k < j->req.n; k++) {
            gw_choice *c = &j->ch[p * j->req.n + k];
            c->index = p * j->req.n + k;
            c->prompt = p;
            c->leader = k == 0;
            c->leader_idx = p * j->req.n;
            c->slot = -1;
            if (j->req.seed_given) {
                c->seed = j->req.gen.sampling.seed + (uint64_t)c->index;
            } else {
                *rng += 0x9e3779b97f4a7c15ull;
                uint64_t z = *rng;
                z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
                c->seed = z ^ (z >> 31);
            }
            if (j->req.echo && pr->text) {
                c->text_off = (long)pr->text_len;
                if (!j->req.stream) moe_buf_append(&c->text, pr->text, pr->text_len);
            }
        }
    }
    *out = j;
    return 0;
}

int gw_job_start(gw_job *j, const moe_vocab *v, int n_vocab, gw_api_error *e) {
    if (!atomic_load(&j->admit_us)) /* requests.h: no longer queued */
        atomic_store(&j->admit_us, j->t_admit_us ? j->t_admit_us : moe_mono_us());
    for (int i = 0; i < j->n_ch; i++) {
        gw_choice *c = &j->ch[i];
        if (c->seq) continue;
        moe_gen_params gp = j->req.gen;
        gp.sampling.seed = c->seed;
        moe_err err = {0};
        const gw_prompt *pr = &j->req.prompts[c->prompt];
        int rc = moe_gen_seq_create(&c->seq, v, n_vocab, pr->ids, pr->n, &gp, &err);
        if (rc < 0) {
            if (rc == MOE_ENOMEM)
                gw_api_error_set(e, 503, "", "out of memory for a sequence; retry later");
            else
                gw_api_error_set(e, 400, "", "%s", err.msg);
            return -1;
        }
    }
    return 0;
}

void gw_job_ref(gw_job *j) {
    atomic_fetch_add(&j->refs, 1);
}

void gw_job_unref(gw_job *j) {
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1) return;
    for (int i = 0; i < j->n_ch; i++) {
        gw_choice *c = &j->ch[i];
        moe_gen_seq_destroy(c->seq);
        free(c->text.s);
        free(c->lp.s);
        free(c->lp_vals.s);
        free(c->lp_top.s);
        free(c->lp_off.s);
    }
    free(j->ch);
    free(j->out.s);
    gw_api_req_free(&j->req);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

int gw_job_client_gone(gw_job *j) {
    int gone = 0;
    pthread_mutex_lock(&j->mu);
    /* only while suspended: the HTTP library cannot close (and reuse) the
     * socket of a suspended connection */
    if (j->conn && j->suspended && j->fd >= 0) {
        char c;
        const ssize_t n = recv(j->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
        gone = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    pthread_mutex_unlock(&j->mu);
    return gone;
}

int gw_job_completion_tokens(const gw_job *j) {
    int n = 0;
    for (int i = 0; i < j->n_ch; i++)
        if (j->ch[i].seq) n += moe_gen_seq_n_generated(j->ch[i].seq);
    return n;
}

/* ==== Pieces ============================================================ */

static void usage_json(moe_buf *b, const gw_job *j) {
    const int c = gw_job_completion_tokens(j);
    moe_buf_printf(b,
                   "{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":%d}}",
                   j->prompt_tokens, c, j->prompt_tokens + c, j->cached_tokens);
}

static void head_json(moe_buf *b, const gw_job *j, const char *object) {
    moe_buf_printf(b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", j->id, object,
                   (long long)j->created);
    moe_buf_json(b, j->req.model);
    moe_buf_printf(b, ",\"system_fingerprint\":\"" FINGERPRINT "\"");
}

/* Opens an SSE chunk: "data: {head,"choices":[" */
static void chunk_open(gw_job *j) {
    moe_buf_append(&j->out, "data: ", 6);
    head_json(&j->out, j,
              j->req.route == GW_ROUTE_CHAT ? "chat.completion.chunk" : "text_completion");
    moe_buf_printf(&j->out, ",\"choices\":[");
}

static void chunk_close(gw_job *j) {
    moe_buf_printf(&j->out, "]%s}\n\n", j->req.include_usage ? ",\"usage\":null" : "");
}

/* 1 if a step's token gets a logprobs entry: a sampled token that is not the
 * end-of-sequence or a stop token. */
static int has_logprob(const gw_job *j, const moe_gen_step *st) {
    return j->req.logprobs && st->token >= 0 && st->finish != MOE_GEN_FINISH_EOS &&
           st->finish != MOE_GEN_FINISH_STOP_TOKEN;
}

/* The completions logprobs of one token, as the four array items. */
static void completion_lp_items(const moe_gen_step *st, int n_top, long offset, moe_buf *tok,
                                moe_buf *val, moe_buf *top, moe_buf *off, int first) {
    if (!first) {
        moe_buf_append(tok, ",", 1);
        moe_buf_append(val, ",", 1);
        moe_buf_append(top, ",", 1);
        moe_buf_append(off, ",", 1);
    }
    gw_api_token_json(tok, st->bytes, st->n_bytes);
    moe_buf_printf(val, "%.9g", (double)st->logprob);
    moe_buf_append(top, "{", 1);
    for (int i = 0; i < n_top && i < st->n_top; i++) {
        if (i) moe_buf_append(top, ",", 1);
        gw_api_token_json(top, st->top[i].bytes, st->top[i].n_bytes);
        moe_buf_printf(top, ":%.9g", (double)st->top[i].logprob);
    }
    moe_buf_append(top, "}", 1);
    moe_buf_printf(off, "%ld", offset);
}

static void wake(gw_job *j) {
    if (j->suspended && j->wake && j->conn) {
        j->suspended = 0;
        j->wake(j);
    }
}

/* ==== Streaming ========================================================= */

static void stream_step(gw_job *j, gw_choice *c, const moe_gen_step *st) {
    const int chat = j->req.route == GW_ROUTE_CHAT;
    const int lp = has_logprob(j, st);
    if (!c->started) {
        c->started = 1;
        if (chat) {
            chunk_open(j);
            moe_buf_printf(&j->out,
                           "{\"index\":%d,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                           "\"logprobs\":null,\"finish_reason\":null}",
                           c->index);
            chunk_close(j);
        } else if (j->req.echo && j->req.prompts[c->prompt].text) {
            const gw_prompt *p = &j->req.prompts[c->prompt];
            chunk_open(j);
            moe_buf_printf(&j->out, "{\"text\":");
            moe_buf_json_n(&j->out, p->text, p->text_len, MOE_JSON_UTF8_FIX);
            moe_buf_printf(&j->out, ",\"index\":%d,\"logprobs\":null,\"finish_reason\":null}",
                           c->index);
            chunk_close(j);
        }
    }
    const int ids = j->req.return_token_ids && st->token >= 0;
    if (st->text_len > 0 || lp || ids) {
        chunk_open(j);
        if (chat) {
            moe_buf_printf(&j->out, "{\"index\":%d,\"delta\":{\"content\":", c->index);
            moe_buf_json_n(&j->out, st->text, st->text_len, MOE_JSON_UTF8_FIX);
            moe_buf_printf(&j->out, "},\"logprobs\":");
            if (lp) {
                moe_buf_printf(&j->out, "{\"content\":[");
                gw_api_chat_logprob(&j->out, st, j->req.top_logprobs);
                moe_buf_printf(&j->out, "]}");
            } else {
                moe_buf_printf(&j->out, "null");
            }
        } else {
            moe_buf_printf(&j->out, "{\"text\":");
            moe_buf_json_n(&j->out, st->text, st->text_len, MOE_JSON_UTF8_FIX);
            moe_buf_printf(&j->out, ",\"index\":%d,\"logprobs\":", c->index);
            if (lp) {
                moe_buf t = {0}, v = {0}, tp = {0}, o = {0};
                completion_lp_items(st, j->req.top_logprobs, c->text_off, &t, &v, &tp, &o, 1);
                moe_buf_printf(&j->out,
                               "{\"tokens\":[%s],\"token_logprobs\":[%s],\"top_logprobs\":[%s],"
                               "\"text_offset\":[%s]}",
                               t.s ? t.s : "", v.s ? v.s : "", tp.s ? tp.s : "", o.s ? o.s : "");
                if (t.oom || v.oom || tp.oom || o.oom) j->out.oom = 1;
                free(t.s), free(v.s), free(tp.s), free(o.s);
            } else {
                moe_buf_printf(&j->out, "null");
            }
        }
        if (ids) moe_buf_printf(&j->out, ",\"token_ids\":[%d]", (int)st->token);
        moe_buf_printf(&j->out, ",\"finish_reason\":null}");
        chunk_close(j);
    }
    const char *why = moe_gen_finish_reason(st->finish);
    if (st->finish != MOE_GEN_FINISH_NONE && st->finish != MOE_GEN_FINISH_ABORT &&
        st->finish != MOE_GEN_FINISH_ERROR) {
        chunk_open(j);
        if (chat)
            moe_buf_printf(&j->out,
                           "{\"index\":%d,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"%s\"}",
                           c->index, why);
        else
            moe_buf_printf(
                &j->out, "{\"text\":\"\",\"index\":%d,\"logprobs\":null,\"finish_reason\":\"%s\"}",
                c->index, why);
        chunk_close(j);
    }
}

/* ==== Emitters ========================================================== */

void gw_job_emit_step(gw_job *j, gw_choice *c, const moe_gen_step *st) {
    const int lp = has_logprob(j, st);
    pthread_mutex_lock(&j->mu);
    if (j->req.stream) {
        stream_step(j, c, st);
        wake(j);
    } else {
        moe_buf_append(&c->text, st->text, st->text_len);
        if (lp) {
            if (j->req.route == GW_ROUTE_CHAT) {
                if (c->n_lp) moe_buf_append(&c->lp, ",", 1);
                gw_api_chat_logprob(&c->lp, st, j->req.top_logprobs);
            } else {
                completion_lp_items(st, j->req.top_logprobs, c->text_off, &c->lp, &c->lp_vals,
                                    &c->lp_top, &c->lp_off, c->n_lp == 0);
            }
            c->n_lp++;
        }
    }
    if (lp) c->text_off += st->n_bytes;
    if (st->finish != MOE_GEN_FINISH_NONE) c->finish = st->finish;
    pthread_mutex_unlock(&j->mu);
}

/* The stream's end: the usage chunk (include_usage) and [DONE]. Under mu. */
static void stream_tail(gw_job *j) {
    if (j->req.include_usage) {
        moe_buf_append(&j->out, "data: ", 6);
        head_json(&j->out, j,
                  j->req.route == GW_ROUTE_CHAT ? "chat.completion.chunk" : "text_completion");
        moe_buf_printf(&j->out, ",\"choices\":[],\"usage\":");
        usage_json(&j->out, j);
        moe_buf_printf(&j->out, "}\n\n");
    }
    moe_buf_printf(&j->out, "data: [DONE]\n\n");
}

/* A cancelled stream's clean end (cancel_asked): each unfinished choice's
 * last chunk says finish_reason "cancelled". Under mu. */
static void stream_cancelled(gw_job *j) {
    const int chat = j->req.route == GW_ROUTE_CHAT;
    for (int i = 0; i < j->n_ch; i++) {
        gw_choice *c = &j->ch[i];
        if (c->finish != MOE_GEN_FINISH_NONE) continue;
        if (chat && !c->started) { /* the role chunk every chat choice opens with */
            chunk_open(j);
            moe_buf_printf(&j->out,
                           "{\"index\":%d,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                           "\"logprobs\":null,\"finish_reason\":null}",
                           c->index);
            chunk_close(j);
        }
        c->started = 1;
        chunk_open(j);
        if (chat)
            moe_buf_printf(&j->out,
                           "{\"index\":%d,\"delta\":{},\"logprobs\":null,"
                           "\"finish_reason\":\"cancelled\"}",
                           c->index);
        else
            moe_buf_printf(&j->out,
                           "{\"text\":\"\",\"index\":%d,\"logprobs\":null,"
                           "\"finish_reason\":\"cancelled\"}",
                           c->index);
        chunk_close(j);
    }
    stream_tail(j);
}

void gw_job_emit_end(gw_job *j) {
    if (j->on_end) j->on_end(j, GW_JOB_END_COMPLETED);
    pthread_mutex_lock(&j->mu);
    if (j->req.stream) stream_tail(j);
    j->done = 1;
    wake(j);
    pthread_mutex_unlock(&j->mu);
}

void gw_job_emit_error(gw_job *j, const gw_api_error *e) {
    if (j->on_end)
        j->on_end(j, atomic_load(&j->cancelled) ? GW_JOB_END_CANCELLED : GW_JOB_END_FAILED);
    const int asked = atomic_load(&j->cancel_asked);
    pthread_mutex_lock(&j->mu);
    if (asked) { /* DELETE /v1/requests/{id}: a clean end */
        if (j->req.stream) stream_cancelled(j);
    } else {
        j->err = *e;
        j->failed = 1;
        if (j->req.stream) {
            moe_buf_append(&j->out, "data: ", 6);
            gw_api_error_json(&j->out, e); /* ends with "\n" */
            moe_buf_printf(&j->out, "\ndata: [DONE]\n\n");
        }
    }
    j->done = 1;
    wake(j);
    pthread_mutex_unlock(&j->mu);
}

/* ==== The final object ================================================== */

void gw_job_render_final(gw_job *j, moe_buf *b) {
    const int chat = j->req.route == GW_ROUTE_CHAT;
    head_json(b, j, chat ? "chat.completion" : "text_completion");
    moe_buf_printf(b, ",\"choices\":[");
    for (int i = 0; i < j->n_ch; i++) {
        const gw_choice *c = &j->ch[i];
        const char *why = moe_gen_finish_reason(c->finish);
        if (c->finish == MOE_GEN_FINISH_NONE && atomic_load(&j->cancel_asked))
            why = "cancelled"; /* DELETE /v1/requests/{id} */
        else if (!why || c->finish == MOE_GEN_FINISH_ABORT || c->finish == MOE_GEN_FINISH_ERROR)
            why = "stop";
        if (i) moe_buf_append(b, ",", 1);
        if (chat) {
            moe_buf_printf(
                b, "{\"index\":%d,\"message\":{\"role\":\"assistant\",\"content\":", c->index);
            moe_buf_json_n(b, c->text.s ? c->text.s : "", c->text.n, MOE_JSON_UTF8_FIX);
            moe_buf_printf(b, ",\"refusal\":null},\"logprobs\":");
            if (j->req.logprobs)
                moe_buf_printf(b, "{\"content\":[%s]}", c->lp.s ? c->lp.s : "");
            else
                moe_buf_printf(b, "null");
        } else {
            moe_buf_printf(b, "{\"text\":");
            moe_buf_json_n(b, c->text.s ? c->text.s : "", c->text.n, MOE_JSON_UTF8_FIX);
            moe_buf_printf(b, ",\"index\":%d,\"logprobs\":", c->index);
            if (j->req.logprobs)
                moe_buf_printf(b,
                               "{\"tokens\":[%s],\"token_logprobs\":[%s],\"top_logprobs\":[%s],"
                               "\"text_offset\":[%s]}",
                               c->lp.s ? c->lp.s : "", c->lp_vals.s ? c->lp_vals.s : "",
                               c->lp_top.s ? c->lp_top.s : "", c->lp_off.s ? c->lp_off.s : "");
            else
                moe_buf_printf(b, "null");
        }
        if (j->req.return_token_ids && c->seq) {
            int n = 0;
            const int32_t *t = moe_gen_seq_tokens(c->seq, &n);
            const int np = moe_gen_seq_n_prompt(c->seq);
            moe_buf_printf(b, ",\"token_ids\":[");
            for (int k = np; k < n; k++) moe_buf_printf(b, k > np ? ",%d" : "%d", (int)t[k]);
            moe_buf_append(b, "]", 1);
        }
        moe_buf_printf(b, ",\"finish_reason\":\"%s\"}", why);
        if (c->text.oom || c->lp.oom || c->lp_vals.oom || c->lp_top.oom || c->lp_off.oom)
            b->oom = 1;
    }
    moe_buf_printf(b, "],\"usage\":");
    usage_json(b, j);
    moe_buf_printf(b, "}\n");
}
