/* run.c - moectl logits, generate and bench: running a model. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "moe/generate.h"
#include "mesh/schema.h"
#include "moe/model.h"
#include "moe/ops.h"
#include "mesh/remote.h"
#include "moe/sampler.h"
#include "moe/vocab.h"
#include "moectl.h"

/* Options shared by the commands that run a model. */
typedef struct run_opts {
    const char *path;
    int n_threads;
    int dense_moe;
    float capacity_factor;
    moe_remote_opts ro;                        /* where the experts run (mesh/remote.h) */
    moe_flag ro_flags[MOE_REMOTE_N_FLAGS + 1]; /* ro's flag rows, included by run_flags */
    moe_expert_backend *remote;                /* created by open_model, freed by close_model */
    int gate_margins;                          /* logits --gate-margins */
    int exact;                                 /* --exact */
    const char *cache_type;                    /* --cache-type */
    int routes;                                /* logits --routes */
    uint64_t *route_rows;                      /* (n_layer x n_expert) rows per expert */
    int n_expert;
} run_opts;

/* moe_ctx_params.on_route for logits --routes: rows per (layer, expert). */
static void count_routes(void *ud, int layer, int row0, int n, int k, const int32_t *sel,
                         double us) {
    (void)row0, (void)us;
    run_opts *o = ud;
    for (int i = 0; i < n * k; i++)
        if (sel[i] >= 0) o->route_rows[(size_t)layer * o->n_expert + sel[i]]++;
}

static run_opts run_opts_default(void) {
    return (run_opts){.n_threads = 1, .ro = moe_remote_opts_default()};
}

static int check_cache_type(const void *dst, char *why, size_t cap) {
    moe_dtype t;
    if (moe_kv_type_parse(*(const char *const *)dst, &t) == 0) return 0;
    snprintf(why, cap, "must be f16 or f32");
    return -1;
}

static int check_capacity_factor(const void *dst, char *why, size_t cap) {
    const float f = *(const float *)dst;
    if (f > 0.0f && f < 1e6f) return 0;
    snprintf(why, cap, "must be > 0 (and < 1e6)");
    return -1;
}

/* The flags of run_opts, writing into o: the table fragment logits, generate
 * and bench include ({.include = t}). t has RUN_N_FLAGS rows and the end. */
enum { RUN_N_FLAGS = 6 };
static void run_flags(run_opts *o, moe_flag t[RUN_N_FLAGS + 1]) {
    moe_remote_opts_flags(&o->ro, o->ro_flags);
    const moe_flag rows[RUN_N_FLAGS + 1] = {
        {"--threads", "MOE_THREADS", MOE_FLAG_INT, &o->n_threads, "N", .alias = "-t",
         .help = "threads", .min = 1, .max = INT32_MAX},
        {"--dense-moe", NULL, MOE_FLAG_BOOL, &o->dense_moe, NULL,
         .help = "every expert for every token, weighted by the gate"},
        {"--capacity-factor", NULL, MOE_FLAG_FLOAT, &o->capacity_factor, "F",
         .help = "bound each expert's rows per batch to\n"
                 "ceil(F * tokens * k / experts); overflow is dropped (the\n"
                 "token keeps its residual) at an accuracy cost; the drop\n"
                 "count is reported as \"dropped\"",
         .def = "off", .check = check_capacity_factor},
        {"--exact", "MOE_EXACT", MOE_FLAG_BOOL, &o->exact, NULL,
         .help = "llama.cpp's exact Q8_0, Q5_K, Q6_K and IQ4_XS arithmetic\n"
                 "for batches too (the default computes 3+ rows per matrix\n"
                 "with the fast int8 tiles: AMX or VNNI; logits within float\n"
                 "rounding)"},
        {"--cache-type", "MOE_CACHE_TYPE", MOE_FLAG_STRING, &o->cache_type, "f16|f32",
         .help = "the KV cache's type, as llama.cpp's --cache-type-k/-v\n"
                 "(f16 holds half the bytes; attention reads it directly)",
         .def = "f16", .check = check_cache_type},
        {.include = o->ro_flags},
        {0}};
    memcpy(t, rows, sizeof rows);
}

static int open_model(run_opts *o, int n_ctx, int n_slots, int n_batch, moe_model **m,
                      moe_ctx **c) {
    /* experts on workers: this process never reads them */
    const int remote = (o->ro.workers && *o->ro.workers) || (o->ro.redis && *o->ro.redis);
    if (load_model(m, o->path, remote ? MOE_REPACK_DENSE : MOE_REPACK_ALL)) return 1;
    moe_err err;
    moe_remote_params rp = moe_remote_default_params();
    rp.max_rows = n_batch * (o->dense_moe ? (*m)->hp.n_expert : (*m)->hp.n_expert_used);
    rp.second = 1; /* two halves of a batch out at once (unless --overlap off) */
    if (moe_remote_opts_open(&o->remote, *m, &o->ro, &rp, &err) < 0) {
        moe_model_free(*m);
        return die("%s", err.msg);
    }
    moe_ctx_params p = moe_ctx_default_params();
    p.n_threads = o->n_threads;
    p.n_ctx = n_ctx;
    p.n_slots = n_slots;
    p.n_batch = n_batch;
    p.dense_moe = o->dense_moe;
    p.capacity_factor = o->capacity_factor;
    p.experts = o->remote;
    p.gate_margins = o->gate_margins;
    p.exact = o->exact;
    p.split = moe_remote_opts_split(&o->ro);
    if (o->cache_type) moe_kv_type_parse(o->cache_type, &p.kv_type); /* checked by the flag */
    if (o->routes) {
        o->n_expert = (*m)->hp.n_expert;
        o->route_rows = calloc((size_t)(*m)->hp.n_layer * (size_t)o->n_expert, sizeof(uint64_t));
        if (!o->route_rows) {
            moe_expert_backend_destroy(o->remote);
            moe_model_free(*m);
            return die("out of memory");
        }
        p.on_route = count_routes;
        p.on_route_ud = o;
    }
    if (moe_ctx_create(c, *m, &p, &err) < 0) {
        free(o->route_rows);
        moe_expert_backend_destroy(o->remote);
        moe_model_free(*m);
        return die("%s", err.msg);
    }
    return 0;
}

/* Appends the remote backend's counters when experts ran on workers: its
 * totals, coverage (pairs without a live worker) and, for up to 64 workers,
 * per-worker messages, failures and round trips (rtt_le[i]: results within
 * rtt_le_ms[i] ms), and how many ubatches went as two overlapped halves. */
static void print_remote_to(FILE *f, const run_opts *o, const moe_ctx *c) {
    if (!o->remote) return;
    moe_remote_stats rs = moe_remote_get_stats(o->remote);
    moe_ctx_stats st;
    moe_ctx_get_stats(c, &st);
    fprintf(
        f,
        ", \"remote\": {\"workers\": %d, \"epoch\": %llu, \"messages\": %llu, "
        "\"worker_failures\": %llu, \"suspects\": %llu, \"retries\": %llu, \"placements\": %llu, "
        "\"rows_reported\": %llu, \"redis_failures\": %llu, \"failover_stall_ms_max\": %.3f, "
        "\"split_ubatches\": %llu",
        rs.workers, (unsigned long long)rs.epoch, (unsigned long long)rs.messages,
        (unsigned long long)rs.worker_failures, (unsigned long long)rs.suspects,
        (unsigned long long)rs.retries, (unsigned long long)rs.placements,
        (unsigned long long)rs.rows_reported, (unsigned long long)rs.redis_failures,
        rs.stall_ms_max, (unsigned long long)st.n_split);
    moe_remote_coverage cv;
    if (moe_remote_get_coverage(o->remote, &cv) == 0)
        fprintf(f,
                ", \"coverage\": {\"pairs\": %d, \"uncovered\": %d, \"unplaced\": %d, "
                "\"workers\": %d, \"workers_live\": %d}",
                cv.pairs, cv.uncovered, cv.unplaced, cv.workers, cv.workers_live);
    enum { MAX_SHOWN = 64 };
    moe_remote_worker_stats *ws = malloc(MAX_SHOWN * sizeof *ws);
    const int n = ws ? moe_remote_get_worker_stats(o->remote, ws, MAX_SHOWN) : 0;
    fprintf(f, ", \"rtt_le_ms\": [");
    for (int i = 0; i < MOE_REMOTE_RTT_BUCKETS; i++)
        fprintf(f, "%s%g", i ? ", " : "", moe_remote_rtt_le_ms[i]);
    fprintf(f, "], \"by_worker\": [");
    for (int i = 0; i < n && i < MAX_SHOWN; i++) {
        const moe_remote_worker_stats *w = &ws[i];
        fprintf(f, "%s{\"addr\": ", i ? ", " : "");
        json_utf8(f, w->addr, strlen(w->addr));
        fprintf(f,
                ", \"live\": %s, \"in_placement\": %s, \"messages\": %llu, \"rows\": %llu, "
                "\"failures\": %llu, \"rtt_count\": %llu, \"rtt_ms_sum\": %.3f, \"rtt_le\": [",
                w->live ? "true" : "false", w->in_placement ? "true" : "false",
                (unsigned long long)w->messages, (unsigned long long)w->rows,
                (unsigned long long)w->failures, (unsigned long long)w->rtt_count, w->rtt_ms_sum);
        for (int k = 0; k < MOE_REMOTE_RTT_BUCKETS; k++)
            fprintf(f, "%s%llu", k ? ", " : "", (unsigned long long)w->rtt_le[k]);
        fprintf(f, "]}");
    }
    fprintf(f, "]}");
    free(ws);
}

/* Appends , "dropped": N when a capacity factor is set. */
static void print_dropped_to(FILE *f, const run_opts *o, const moe_ctx *c) {
    if (!(o->capacity_factor > 0.0f)) return;
    moe_ctx_stats st;
    moe_ctx_get_stats(c, &st);
    fprintf(f, ", \"capacity_factor\": %g, \"dropped\": %llu, \"expert_rows\": %llu",
            (double)o->capacity_factor, (unsigned long long)st.n_dropped,
            (unsigned long long)st.n_expert_rows);
}

static void print_dropped(const run_opts *o, const moe_ctx *c) {
    print_dropped_to(stdout, o, c);
}

/* ---- logits ------------------------------------------------------------------ */

static const char logits_about[] =
    "Runs the prompt as one batch and prints the logits after every position:\n"
    "  {\"n_vocab\": V, \"positions\": [{\"pos\": 0, \"token\": 1, \"logits\": [V numbers]}, "
    "...]}\n";

int cmd_logits(const moectl_cmd *cmd, int argc, char **argv) {
    run_opts o = run_opts_default();
    const char *toks = NULL;
    moe_flag run[RUN_N_FLAGS + 1];
    run_flags(&o, run);
    const moe_flag flags[] = {
        {"--tokens", NULL, MOE_FLAG_STRING, &toks, "1,2,3", .help = "the prompt's token ids"},
        {"--routes", NULL, MOE_FLAG_BOOL, &o.routes, NULL,
         .help = "add \"routes\": [[layer, expert, rows], ...]: the rows each routed\n"
                 "expert got over the whole prompt (what the gateway counts per tenant)"},
        {"--gate-margins", NULL, MOE_FLAG_BOOL, &o.gate_margins, NULL,
         .help = "add \"gate_margin\" to each position: the smallest gap, over\n"
                 "the MoE layers, between the last chosen expert's selection\n"
                 "score and the best unchosen one's (and between the last\n"
                 "allowed and the best excluded expert group's score), or\n"
                 "null if nothing competed; a tiny gap is a near tie that\n"
                 "another engine's rounding may break the other way"},
        {.include = run},
        {0}};
    const moe_flagset fs = cmd_flagset(cmd, logits_about, flags);
    const int status = parse_args(&fs, &o.path, argc, argv);
    if (status >= 0) return status;
    if (!toks) return usage_error(&fs);
    int32_t *tok;
    int n = parse_tokens(toks, &tok);
    if (n < 0) return 1;
    moe_model *m;
    moe_ctx *c;
    if (open_model(&o, n, 1, 512, &m, &c)) return free(tok), 1;
    int32_t *pos = malloc((size_t)n * 4), *slot = calloc((size_t)n, 4);
    int8_t *want = malloc((size_t)n);
    moe_err err;
    int rc = 0;
    if (!pos || !slot || !want) {
        rc = die("out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) pos[i] = i, want[i] = 1;
    moe_batch b = {n, tok, pos, slot, want};
    if (moe_ctx_decode(c, &b, &err) < 0) {
        rc = die("%s", err.msg);
    } else {
        const int V = m->hp.n_vocab;
        printf("{\"n_vocab\": %d, \"positions\": [", V);
        for (int i = 0; i < n; i++) {
            const float *l = moe_ctx_logits(c, i);
            printf("%s{\"pos\": %d, \"token\": %d, ", i ? ", " : "", i, tok[i]);
            if (o.gate_margins) {
                const float gm = moe_ctx_gate_margin(c, i);
                fputs("\"gate_margin\": ", stdout);
                if (isfinite(gm))
                    json_float(stdout, gm);
                else
                    fputs("null", stdout);
                fputs(", ", stdout);
            }
            fputs("\"logits\": [", stdout);
            for (int v = 0; v < V; v++) {
                if (v) fputs(", ", stdout);
                json_float(stdout, l[v]);
            }
            printf("]}");
        }
        printf("]");
        if (o.routes) {
            fputs(", \"routes\": [", stdout);
            int first = 1;
            for (int l = 0; l < m->hp.n_layer; l++)
                for (int e = 0; e < o.n_expert; e++) {
                    const uint64_t r = o.route_rows[(size_t)l * o.n_expert + e];
                    if (!r) continue;
                    printf("%s[%d, %d, %llu]", first ? "" : ", ", l, e, (unsigned long long)r);
                    first = 0;
                }
            fputs("]", stdout);
        }
        print_dropped(&o, c);
        printf("}\n");
    }
done:
    free(o.route_rows);
    free(tok);
    free(pos);
    free(slot);
    free(want);
    moe_ctx_destroy(c);
    moe_expert_backend_destroy(o.remote);
    moe_model_free(m);
    return rc;
}

/* ---- generate ------------------------------------------------------------------ */

static const char generate_about[] =
    "Continues the prompt by up to n tokens, stopping at end-of-sequence unless\n"
    "--ignore-eos. Prints {\"tokens\": [...]} (generated ids only), plus \"text\" (the\n"
    "decoded continuation) with --prompt and \"logprobs\" with --logprobs N.\n"
    "Sampling is greedy by default (ties go to the lowest id); --temp T samples.\n";

static int check_stop(const void *dst, char *why, size_t cap) {
    const moe_flag_strs *l = dst;
    if (*l->v[l->n - 1]) return 0;
    snprintf(why, cap, "needs a non-empty string");
    return -1;
}

/* Appends n bytes to a growing buffer; -1 if out of memory. */
static int buf_add(char **buf, size_t *len, size_t *cap, const char *p, size_t n) {
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n) nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return -1;
        *buf = nb, *cap = nc;
    }
    memcpy(*buf + *len, p, n);
    *len += n;
    return 0;
}

int cmd_generate(const moectl_cmd *cmd, int argc, char **argv) {
    run_opts o = run_opts_default();
    const char *toks = NULL, *prompt = NULL, *stops[8], *chat = NULL, *chat_name = NULL;
    int n_gen = 16, ignore_eos = 0, special = 0, stream = 0;
    moe_flag_strs stop = {.v = stops, .max = 8};
    moe_sampler_params sp = moe_sampler_default_params();
    moe_flag run[RUN_N_FLAGS + 1];
    run_flags(&o, run);
    const moe_flag flags[] = {
        {"--tokens", NULL, MOE_FLAG_STRING, &toks, "1,2,3", .help = "the prompt's token ids"},
        {"--prompt", NULL, MOE_FLAG_STRING, &prompt, "TEXT",
         .help = "tokenized with the model's vocabulary (BOS as the file says)"},
        {"--special", NULL, MOE_FLAG_BOOL, &special, NULL,
         .help = "special-token text in --prompt becomes those tokens"},
        {"--chat", NULL, MOE_FLAG_STRING, &chat, "FILE.json",
         .help = "[{\"role\": \"user\", \"content\": \"...\"}, ...] rendered with the\n"
                 "model's tokenizer.chat_template (or --chat-template) + the reply prompt"},
        {"--chat-template", NULL, MOE_FLAG_STRING, &chat_name, "NAME",
         .help = "chatml, mistral, llama3, deepseek3 or olmoe", .def = "the model's"},
        {"-n", NULL, MOE_FLAG_INT, &n_gen, "N", .help = "tokens to generate at most", .min = 0,
         .max = 1000000},
        {"--ignore-eos", NULL, MOE_FLAG_BOOL, &ignore_eos, NULL,
         .help = "go on after end-of-sequence"},
        {"--temp", NULL, MOE_FLAG_FLOAT, &sp.temperature, "T", .help = "sampling temperature",
         .def = "0: greedy"},
        {"--top-k", NULL, MOE_FLAG_INT, &sp.top_k, "K", .help = "the K likeliest tokens only",
         .def = "0: off"},
        {"--top-p", NULL, MOE_FLAG_FLOAT, &sp.top_p, "P",
         .help = "the likeliest tokens up to probability P"},
        {"--min-p", NULL, MOE_FLAG_FLOAT, &sp.min_p, "P",
         .help = "tokens at least P times the likeliest's probability", .def = "0: off"},
        {"--seed", NULL, MOE_FLAG_UINT64, &sp.seed, "S", .help = "sampling seed", .def = "0"},
        {"--repeat-penalty", NULL, MOE_FLAG_FLOAT, &sp.repeat_penalty, "R",
         .help = "divides the logits of tokens seen lately"},
        {"--frequency-penalty", NULL, MOE_FLAG_FLOAT, &sp.frequency_penalty, "F",
         .help = "minus F per time a token was seen lately", .def = "0"},
        {"--presence-penalty", NULL, MOE_FLAG_FLOAT, &sp.presence_penalty, "P",
         .help = "minus P if a token was seen lately", .def = "0"},
        {"--penalty-last-n", NULL, MOE_FLAG_INT, &sp.penalty_last_n, "N",
         .help = "\"lately\": the last N tokens (0: no penalties)"},
        {"--logprobs", NULL, MOE_FLAG_INT, &sp.n_logprobs, "N",
         .help = "logprob of each chosen token and the top N (0-20)"},
        {"--stop", NULL, MOE_FLAG_STRINGS, &stop, "STR",
         .help = "stop when the generated text contains STR (may span\n"
                 "tokens; up to 8; the text ends before it)",
         .check = check_stop},
        {"--stream", NULL, MOE_FLAG_BOOL, &stream, NULL,
         .help = "write the text to stdout as it is generated (whole\n"
                 "UTF-8 characters; text that may begin a --stop string\n"
                 "is held until it is decided) and the JSON to stderr"},
        {.include = run},
        {0}};
    const moe_flagset fs = cmd_flagset(cmd, generate_about, flags);
    const int status = parse_args(&fs, &o.path, argc, argv);
    if (status >= 0) return status;
    const int n_stops = stop.n;
    if ((!!toks + !!prompt + !!chat) != 1) return usage_error(&fs);
    moe_chat_msg *msgs = NULL;
    int n_msgs = 0, kind = -1;
    if (chat && (kind = chat_load(o.path, chat_name, chat, &msgs, &n_msgs)) < 0) return 1;
    moe_err err;
    /* the prompt: ids, or text (or messages) through the model's vocabulary */
    int32_t *tok = NULL, *pos = NULL, *slot = NULL, *out = NULL;
    int n = 0, rc = 0, n_out = 0;
    moe_gguf *g = NULL;
    moe_vocab *v = NULL;
    moe_model *m = NULL;
    moe_ctx *c = NULL;
    moe_gen_seq *s = NULL;
    moe_sample_result *lp = NULL;
    size_t tcap = 0, tlen = 0;
    char *gtext = NULL; /* the generated text: the steps' deltas */
    moe_gen_step st;
    const char *finish = "length";
    FILE *js = stream ? stderr : stdout;
    if (moe_gguf_open(&g, o.path, &err) < 0) {
        rc = die("%s", err.msg);
        goto done;
    }
    if (moe_vocab_load(&v, g, &err) < 0 && (prompt || chat)) {
        rc = die("%s: %s", o.path, err.msg);
        goto done;
    }
    if (prompt || chat) {
        const int r =
            prompt ? moe_gen_tokenize_text(v, prompt, strlen(prompt),
                                           special ? MOE_GEN_TEXT_SPECIAL : 0, &tok, &n, &err)
                   : moe_gen_tokenize_chat(v, kind, msgs, n_msgs, &tok, &n, &err);
        if (r < 0) {
            rc = die("%s", err.msg);
            goto done;
        }
    } else if ((n = parse_tokens(toks, &tok)) < 0) {
        rc = 1;
        goto done;
    }
    if (open_model(&o, n + n_gen, 1, 512, &m, &c)) {
        m = NULL, c = NULL, rc = 1;
        goto done;
    }
    moe_gen_params gp = moe_gen_default_params();
    gp.sampling = sp;
    gp.max_tokens = n_gen;
    gp.ignore_eos = ignore_eos;
    gp.eos_id = v ? moe_vocab_eos(v) : m->eos_id;
    gp.stop = stops;
    gp.n_stop = n_stops;
    pos = malloc((size_t)n * 4), slot = calloc((size_t)n, 4), out = malloc((size_t)n_gen * 4 + 4);
    lp = sp.n_logprobs > 0 ? calloc((size_t)n_gen + 1, sizeof *lp) : NULL;
    if ((n_stops || stream) && !v)
        rc = die("--stop and --stream need the model's vocabulary");
    else if (moe_gen_seq_create(&s, v, m->hp.n_vocab, tok, n, &gp, &err) < 0)
        rc = die("%s", err.msg);
    else if (!pos || !slot || !out || (sp.n_logprobs > 0 && !lp))
        rc = die("out of memory");
    for (int i = 0; !rc && i < n; i++) pos[i] = i;
    moe_batch b = {n, tok, pos, slot, NULL};
    if (!rc && moe_ctx_decode(c, &b, &err) < 0) rc = die("%s", err.msg);
    /* one step per token: sample from the last logits, then run the token */
    while (!rc && moe_gen_seq_finish(s) == MOE_GEN_FINISH_NONE) {
        if (moe_gen_seq_step(s, moe_ctx_logits(c, 0), &st, &err) < 0) {
            rc = die("sampling failed: non-finite logits");
        } else {
            if (lp) {
                lp[n_out].token = st.token, lp[n_out].logprob = st.logprob,
                lp[n_out].n_top = st.n_top;
                for (int k = 0; k < st.n_top; k++)
                    lp[n_out].top[k].token = st.top[k].token,
                    lp[n_out].top[k].logprob = st.top[k].logprob;
            }
            out[n_out++] = st.token;
            if (st.finish == MOE_GEN_FINISH_NONE) {
                int32_t p = moe_gen_seq_n_tokens(s) - 1, sl = 0, next = st.token;
                moe_batch nb = {1, &next, &p, &sl, NULL};
                if (moe_ctx_decode(c, &nb, &err) < 0) {
                    rc = die("%s", err.msg);
                    moe_gen_seq_fail(s, &st); /* st.text: the held text */
                }
            }
        }
        if (st.text_len && buf_add(&gtext, &tlen, &tcap, st.text, st.text_len) < 0 && !rc)
            rc = die("out of memory");
        if (stream && st.text_len) {
            fwrite(st.text, 1, st.text_len, stdout);
            fflush(stdout);
        }
    }
    if (stream) {
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (!rc) {
        const moe_gen_finish f = moe_gen_seq_finish(s);
        finish = f == MOE_GEN_FINISH_EOS ? "eos" : moe_gen_finish_reason(f);
        fprintf(js, "{\"tokens\": [");
        for (int i = 0; i < n_out; i++) fprintf(js, "%s%d", i ? ", " : "", out[i]);
        fprintf(js, "]");
        if ((prompt || chat) && v) {
            fprintf(js, ", \"text\": ");
            json_utf8(js, gtext ? gtext : "", tlen);
            fprintf(js, ", \"prompt_tokens\": %d", n);
        }
        fprintf(js, ", \"finish_reason\": \"%s\"", finish);
        if (lp) {
            fprintf(js, ", \"logprobs\": [");
            for (int i = 0; i < n_out; i++) {
                fprintf(js, "%s{\"token\": %d, \"logprob\": ", i ? ", " : "", lp[i].token);
                json_float(js, lp[i].logprob);
                fprintf(js, ", \"top\": [");
                for (int k = 0; k < lp[i].n_top; k++) {
                    fprintf(js, "%s[%d, ", k ? ", " : "", lp[i].top[k].token);
                    json_float(js, lp[i].top[k].logprob);
                    fprintf(js, "]");
                }
                fprintf(js, "]}");
            }
            fprintf(js, "]");
        }
        print_dropped_to(js, &o, c);
        print_remote_to(js, &o, c);
        fprintf(js, "}\n");
    }
done:
    free(tok);
    free(pos);
    free(slot);
    free(out);
    free(lp);
    free(gtext);
    moe_gen_seq_destroy(s);
    moe_ctx_destroy(c);
    if (m) moe_expert_backend_destroy(o.remote);
    moe_model_free(m);
    moe_vocab_free(v);
    moe_gguf_close(g);
    chat_msgs_free(msgs, n_msgs);
    return rc;
}

/* ---- bench ---------------------------------------------------------------------- */

static const char bench_about[] =
    "Prefill: B prompts of P tokens (deterministic ids), timed. Decode: G steps\n"
    "with the B sequences decoding together, timed. Best of R repetitions.\n"
    "At batch 1 decode reads every active weight once per token: its weight\n"
    "bandwidth is printed beside the machine's read bandwidth, measured after\n"
    "the runs with the same thread count (a plain loop over --read-mb MB), and\n"
    "their ratio (read_fraction). Batches (prefill, decode at --batch > 1) are\n"
    "compute-bound: their weight ops (2 x the active parameters per token x\n"
    "tok/s) are printed beside the int8 peak of the unit the batched tiles use\n"
    "(amx for Q8_0 experts' fast tile, else vnni, or avx2: a register loop on\n"
    "every thread, measured after the runs) and their ratio\n"
    "(prefill_compute_fraction, decode_compute_fraction).\n"
    "Prints {\"prefill_tok_s\": x, \"decode_tok_s\": y, ...}.\n";

int cmd_bench(const moectl_cmd *cmd, int argc, char **argv) {
    run_opts o = run_opts_default();
    int P = 128, G = 64, B = 1, reps = 3, read_mb = 256;
    moe_flag run[RUN_N_FLAGS + 1];
    run_flags(&o, run);
    const moe_flag flags[] = {
        {"--prompt", NULL, MOE_FLAG_INT, &P, "P", .help = "prompt tokens", .min = 1,
         .max = 1 << 20},
        {"--gen", NULL, MOE_FLAG_INT, &G, "G", .help = "decode steps", .min = 1, .max = 1 << 20},
        {"--batch", NULL, MOE_FLAG_INT, &B, "B", .help = "sequences", .min = 1, .max = 1024},
        {"--reps", NULL, MOE_FLAG_INT, &reps, "R", .help = "repetitions (the best counts)",
         .min = 1, .max = INT32_MAX},
        {"--read-mb", NULL, MOE_FLAG_INT, &read_mb, "MB",
         .help = "memory the read-bandwidth loop sums at batch 1 (0: skip it)", .min = 0,
         .max = 16384},
        {.include = run},
        {0}};
    const moe_flagset fs = cmd_flagset(cmd, bench_about, flags);
    const int status = parse_args(&fs, &o.path, argc, argv);
    if (status >= 0) return status;
    moe_model *m;
    moe_ctx *c;
    /* a step holds a prompt chunk of up to 512 or all B decode rows */
    const int n_batch = (P > 512 ? 512 : P) > B ? (P > 512 ? 512 : P) : B;
    if (open_model(&o, P + G, B, n_batch, &m, &c)) return 1;
    const int V = m->hp.n_vocab;
    int32_t *tok = malloc((size_t)P * 4), *pos = malloc((size_t)P * 4),
            *slot = malloc((size_t)P * 4);
    int32_t *dt = malloc((size_t)B * 4), *dp = malloc((size_t)B * 4), *ds = malloc((size_t)B * 4);
    double best_pf = 0, best_dec = 0;
    moe_err err;
    int rc = 0;
    if (!tok || !pos || !slot || !dt || !dp || !ds) {
        rc = die("out of memory");
        reps = 0;
    } else {
        for (int i = 0; i < P; i++)
            tok[i] = (int32_t)((i * 7 + 3) % (V > 1 ? V - 1 : 1)), pos[i] = i;
    }
    for (int r = 0; r < reps && !rc; r++) {
        for (int s = 0; s < B; s++) moe_ctx_slot_clear(c, s);
        double t0 = now_s();
        for (int s = 0; s < B && !rc; s++) {
            for (int i = 0; i < P; i++) slot[i] = s;
            moe_batch b = {P, tok, pos, slot, NULL};
            if (moe_ctx_decode(c, &b, &err) < 0) rc = die("%s", err.msg);
        }
        double t1 = now_s();
        for (int g = 0; g < G && !rc; g++) {
            for (int s = 0; s < B; s++) {
                dt[s] = (int32_t)((g * 13 + s * 5 + 1) % (V > 1 ? V - 1 : 1));
                dp[s] = P + g;
                ds[s] = s;
            }
            moe_batch b = {B, dt, dp, ds, NULL};
            if (moe_ctx_decode(c, &b, &err) < 0) rc = die("%s", err.msg);
        }
        double t2 = now_s();
        double pf = (double)P * B / (t1 - t0), dec = (double)G * B / (t2 - t1);
        if (pf > best_pf) best_pf = pf;
        if (dec > best_dec) best_dec = dec;
    }
    if (!rc) {
        const size_t ab = moe_model_active_bytes(m);
        printf("{\"prefill_tok_s\": %.2f, \"decode_tok_s\": %.2f, \"threads\": %d, \"batch\": %d, "
               "\"prompt\": %d, \"gen\": %d, \"reps\": %d, \"cpu\": \"%s\", "
               "\"numerics\": \"%s\", \"kv_type\": \"%s\", \"active_bytes_per_token\": %zu",
               best_pf, best_dec, o.n_threads, B, P, G, reps, moe_cpu_kernels_best()->name,
               o.exact             ? "exact"
               : moe_cpu_has_amx() ? "fast-amx"
                                   : "fast",
               moe_dtype_name(moe_ctx_kv_type(c)), ab);
        /* batches are compute-bound: the weights' ops (2 per multiply-add)
         * per second against the int8 peak of the unit the tiles use, both
         * with the run's threads */
        const double ops = 2.0 * (double)moe_model_active_params(m);
        {
            /* AMX runs the Q8_0 fast tile only: the exact numerics and the
             * other types' batches multiply with VNNI there */
            const int il = m->hp.n_layer_dense_lead < m->hp.n_layer ? m->hp.n_layer_dense_lead : 0;
            const int q8 = m->layers[il].gate_exps.data
                               ? m->layers[il].gate_exps.type == MOE_DTYPE_Q8_0
                               : m->layers[il].ffn_gate.type == MOE_DTYPE_Q8_0;
            const moe_int8_unit u = (o.exact || !q8) && moe_int8_unit_best() == MOE_INT8_AMX
                                        ? MOE_INT8_VNNI
                                        : moe_int8_unit_best();
            moe_pool *pool = NULL;
            const double peak = moe_cpu_kernels_best()->level >= MOE_CPU_AVX2 &&
                                        moe_pool_create(&pool, o.n_threads) == 0
                                    ? moe_int8_peak_gops(pool, u, 5)
                                    : 0; /* the scalar level has no int8 unit */
            moe_pool_destroy(pool);
            printf(", \"prefill_gops\": %.1f", ops * best_pf / 1e9);
            if (B > 1) printf(", \"decode_gops\": %.1f", ops * best_dec / 1e9);
            if (peak > 0) {
                printf(", \"int8_unit\": \"%s\", \"int8_peak_gops\": %.1f, "
                       "\"prefill_compute_fraction\": %.3f",
                       moe_int8_unit_name(u), peak, ops * best_pf / 1e9 / peak);
                if (B > 1)
                    printf(", \"decode_compute_fraction\": %.3f", ops * best_dec / 1e9 / peak);
            }
        }
        /* batch 1 reads every active weight once per token */
        if (B == 1) {
            const double wgb = best_dec * (double)ab / 1e9;
            printf(", \"decode_weight_gb_s\": %.2f", wgb);
            moe_pool *pool = NULL;
            const double rgb = read_mb > 0 && moe_pool_create(&pool, o.n_threads) == 0
                                   ? moe_read_bandwidth(pool, (size_t)read_mb << 20, 3)
                                   : 0;
            moe_pool_destroy(pool);
            if (rgb > 0)
                printf(", \"read_gb_s\": %.2f, \"read_fraction\": %.3f", rgb, wgb / rgb);
            else if (read_mb > 0)
                fprintf(stderr,
                        "moectl bench: warning: no read bandwidth measured (%d MB for the "
                        "read loop, or a pool of %d threads, could not be allocated)\n",
                        read_mb, o.n_threads);
        }
        print_dropped(&o, c);
        print_remote_to(stdout, &o, c);
        printf("}\n");
    }
    free(tok);
    free(pos);
    free(slot);
    free(dt);
    free(dp);
    free(ds);
    moe_ctx_destroy(c);
    moe_expert_backend_destroy(o.remote);
    moe_model_free(m);
    return rc;
}
