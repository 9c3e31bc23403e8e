/*
 * api.h - the OpenAI API's JSON, both ways: a request body becomes a
 * gw_api_req (parameters checked, prompts tokenized), and the scheduler's
 * output becomes response objects and server-sent-event chunks. No I/O and
 * no threads here: http.c calls the parser, scheduler.c the renderers.
 *
 *     gw_api_req r;
 *     gw_api_error e;
 *     if (gw_api_parse(&ctx, GW_ROUTE_CHAT, body, len, &r, &e) < 0)
 *         reply(e.status, gw_api_error_json(&e));   // 400 naming e.param
 *     ... r.prompts[i] to the scheduler; gw_api_req_free(&r) ...
 *
 * What is accepted follows OpenAI's API reference (chat completions and the
 * legacy completions): unknown fields are ignored, as OpenAI's clients expect
 * servers to do; fields this server knows but cannot honour (tools,
 * response_format other than text, suffix, ...) are refused with a 400 that
 * names them.
 */
#ifndef GW_API_H
#define GW_API_H

#include <stddef.h>
#include <stdint.h>

#include "moe/generate.h"
#include "svc/strbuf.h"

typedef enum gw_route {
    GW_ROUTE_CHAT,        /* POST /v1/chat/completions */
    GW_ROUTE_COMPLETIONS, /* POST /v1/completions */
} gw_route;

/* Limits of a request. */
#define GW_MAX_N 8        /* choices per prompt */
#define GW_MAX_PROMPTS 64 /* prompts in one completions request */
#define GW_MAX_MESSAGES 4096
#define GW_MAX_LOGPROBS_COMPLETIONS 5 /* completions: logprobs 0..5 */

/* What the parser needs to know about the served model. Borrowed. */
typedef struct gw_api_ctx {
    const moe_vocab *vocab;
    int n_vocab;            /* the model's logit rows */
    int n_ctx;              /* positions per sequence: a prompt must be shorter */
    int chat_kind;          /* moe_chat_kind for chat messages */
    const char *model;      /* the served model name */
    const int32_t *end_ids; /* (n_end) chat: ids that end an assistant turn */
    int n_end;
    int max_seqs; /* sequences the server runs at once: n x prompts must fit */
} gw_api_ctx;

/* An error answer: HTTP status, OpenAI type, the parameter at fault (or
 * ""), a message that says what to change. */
typedef struct gw_api_error {
    int status;
    const char *type; /* "invalid_request_error", "not_found_error", ... (static) */
    char param[64];
    char code[32]; /* "" or e.g. "model_not_found", "context_length_exceeded" */
    char message[512];
} gw_api_error;

/* A tokenized prompt. */
typedef struct gw_prompt {
    int32_t *ids; /* (n) malloc'd */
    int n;
    char *text; /* completions with echo: the prompt's text (malloc'd), else NULL */
    size_t text_len;
} gw_prompt;

/* A parsed request; every pointer is owned (gw_api_req_free). */
typedef struct gw_api_req {
    gw_route route;
    char *model; /* as sent */
    int stream;
    int include_usage;  /* stream_options.include_usage */
    moe_gen_params gen; /* sampling, max_tokens (-1: up to the context), stops */
    int seed_given;
    char **stop; /* (n_stop) owned copies; gen.stop points here */
    int n_stop;
    int32_t stop_ids[MOE_GEN_MAX_STOP_TOKENS]; /* chat end ids; gen.stop_tokens points
                                                  here (re-pointed when the struct moves) */
    int n_stop_ids;
    int logprobs;         /* chat: 0/1; completions: 0/1 (logprobs given) */
    int top_logprobs;     /* alternatives per token (chat top_logprobs, completions logprobs) */
    int n;                /* choices per prompt, 1..GW_MAX_N */
    int echo;             /* completions: the prompt's text before the completion */
    int return_token_ids; /* (vLLM's extension) each choice's generated ids as "token_ids" */
    char *user;           /* (optional) */
    gw_prompt *prompts;   /* (n_prompts) */
    int n_prompts;
} gw_api_req;

/* Parses and checks a body (len bytes, need not be NUL-terminated) for a
 * route, tokenizing prompts with ctx->vocab. 0, or -1 with *e filled
 * (status 400, 404 for an unknown model, 413 for a prompt that does not fit
 * the context). On failure *out holds nothing to free. */
int gw_api_parse(const gw_api_ctx *ctx, gw_route route, const char *body, size_t len,
                 gw_api_req *out, gw_api_error *e);
void gw_api_req_free(gw_api_req *r);

/* POST /tokenize: {"prompt": text, "add_special_tokens": bool} or
 * {"messages": [...]} -> {"count":N,"max_model_len":CTX,"tokens":[...]}
 * into out. 0, or -1 with *e. "model", when given, must be the served one. */
int gw_api_tokenize(const gw_api_ctx *ctx, const char *body, size_t len, moe_buf *out,
                    gw_api_error *e);
/* POST /detokenize: {"tokens": [ids]} -> {"prompt": text}. */
int gw_api_detokenize(const gw_api_ctx *ctx, const char *body, size_t len, moe_buf *out,
                      gw_api_error *e);

/* Fills *e (printf-style message). */
void gw_api_error_set(gw_api_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* {"error":{"message":...,"type":...,"param":...,"code":...}} into b. */
void gw_api_error_json(moe_buf *b, const gw_api_error *e);

/* ---- Rendering -------------------------------------------------------- */

/* Appends one token's logprobs entry: chat {"token","logprob","bytes",
 * "top_logprobs":[...]} (top limited to n_top). */
void gw_api_chat_logprob(moe_buf *b, const moe_gen_step *st, int n_top);

/* Writes a token's text (its raw bytes) as a JSON string, invalid UTF-8
 * repaired. */
void gw_api_token_json(moe_buf *b, const char *bytes, int n);

/* "chatcmpl-" / "cmpl-" + 24 random hex digits into id (>= 40 bytes). */
void gw_api_new_id(gw_route route, char *id, uint64_t *rng);

#endif
