/* test_generate.c - generation sequences (moe/generate.h): stop strings and
 * UTF-8 split across tokens, seeded sampling, every finish reason, prompts
 * from text, chat and ids, logprobs; and a scheduler driving sequences in one
 * batch against the same sequences run alone. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/generate.h"
#include "moe/gguf.h"
#include "moe/model.h"
#include "moe/vocab.h"
#include "api.h" /* gateway/ */
#include "job.h"
#include "test.h"
#include "testmodel.h"

/* ==== A small byte-level vocabulary: id b < 256 is byte b ==== */

enum {
    T_ND = 256,    /* "ND" */
    T_END = 257,   /* "END" */
    T_HELLO = 258, /* "Hello" */
    T_WORLD = 259, /* " world" */
    T_EOT = 260,   /* <|eot|> (control) */
    T_EOS = 261,   /* </s> (control, EOS) */
    T_EN = 262,    /* "EN" */
    T_IMS = 263,   /* <|im_start|> (control) */
    T_IME = 264,   /* <|im_end|> (control) */
    N_VOCAB = 265
};

typedef struct tvocab {
    char path[256];
    moe_gguf *g;
    moe_vocab *v;
} tvocab;

static void tvocab_open(tvocab *t) {
    static char bytes[256][3];
    const char *toks[N_VOCAB];
    int32_t types[N_VOCAB];
    for (int b = 0; b < 256; b++) {
        const int l = moe_gpt2_byte_char(b, bytes[b]);
        bytes[b][l] = 0;
        toks[b] = bytes[b];
        types[b] = 1;
    }
    toks[T_ND] = "ND", toks[T_END] = "END", toks[T_HELLO] = "Hello";
    toks[T_WORLD] = "\xc4\xa0world"; /* GPT-2's character for a space, then "world" */
    toks[T_EOT] = "<|eot|>", toks[T_EOS] = "</s>", toks[T_EN] = "EN";
    toks[T_IMS] = "<|im_start|>", toks[T_IME] = "<|im_end|>";
    for (int i = 256; i < N_VOCAB; i++) types[i] = 1;
    types[T_EOT] = types[T_EOS] = types[T_IMS] = types[T_IME] = 3;
    snprintf(t->path, sizeof t->path, "/tmp/moe-test-%d-gen.gguf", (int)getpid());
    moe_err err;
    moe_gguf_writer *w = moe_gguf_writer_create();
    moe_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    moe_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, N_VOCAB);
    moe_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", MOE_GGUF_TYPE_INT32, types, N_VOCAB);
    moe_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", T_EOS);
    if (moe_gguf_writer_write(w, t->path, &err) < 0) TEST_FAIL("%s", err.msg);
    moe_gguf_writer_destroy(w);
    if (moe_gguf_open(&t->g, t->path, &err) < 0) TEST_FAIL("%s", err.msg);
    if (moe_vocab_load(&t->v, t->g, &err) < 0) TEST_FAIL("%s", err.msg);
    ASSERT_EQ_INT(moe_vocab_n_tokens(t->v), N_VOCAB);
    ASSERT_EQ_INT(moe_vocab_eos(t->v), T_EOS);
}

static void tvocab_close(tvocab *t) {
    moe_vocab_free(t->v);
    moe_gguf_close(t->g);
    unlink(t->path);
}

/* A sequence with prompt "Hi" (ids 72, 105) and the given params. */
static moe_gen_seq *seq_new(const tvocab *t, const moe_gen_params *p) {
    static const int32_t prompt[2] = {'H', 'i'};
    moe_gen_seq *s;
    moe_err err;
    if (moe_gen_seq_create(&s, t->v, N_VOCAB, prompt, 2, p, &err) < 0) TEST_FAIL("%s", err.msg);
    return s;
}

/* One step whose logits make tok the greedy choice. */
static void step_to(moe_gen_seq *s, int32_t tok, moe_gen_step *st) {
    float l[N_VOCAB];
    for (int i = 0; i < N_VOCAB; i++) l[i] = 0.0f;
    l[tok] = 10.0f;
    moe_err err;
    if (moe_gen_seq_step(s, l, st, &err) < 0) TEST_FAIL("step: %s", err.msg);
    ASSERT_EQ_INT(st->token, tok);
}

/* The step's delta equals want (exact bytes). */
#define ASSERT_TEXT(st, want)                                                                      \
    do {                                                                                           \
        const char *w_ = (want);                                                                   \
        if ((st).text_len != strlen(w_) || memcmp((st).text, w_, (st).text_len))                   \
            TEST_FAIL("delta '%.*s' (%zu bytes) != '%s'", (int)(st).text_len, (st).text,           \
                      (st).text_len, w_);                                                          \
    } while (0)

/* ==== Stop strings ==== */

/* "END" arriving as "E" + "ND" stops, and neither part is shown; a partial
 * match that turns out not to be one is released; a stop string inside one
 * token cuts the text there */
TEST(gen_stop_string_split_across_tokens) {
    tvocab t;
    tvocab_open(&t);
    const char *stops[] = {"END"};
    moe_gen_params p = moe_gen_default_params();
    p.stop = stops, p.n_stop = 1, p.max_tokens = 50;
    moe_gen_step st;

    moe_gen_seq *s;
    /* a stop string whose partial match falls back to a shorter one: "aab"
     * after "aaa" still holds "aa" (the matcher's state moves from 2 back to
     * 2 through its prefix function, not to 0) */
    {
        const char *aab[] = {"aab"};
        moe_gen_params q = p;
        q.stop = aab;
        s = seq_new(&t, &q);
        step_to(s, 'a', &st);
        ASSERT_TEXT(st, "");
        step_to(s, 'a', &st);
        ASSERT_TEXT(st, "");
        step_to(s, 'a', &st);
        ASSERT_TEXT(st, "a");
        step_to(s, 'b', &st);
        ASSERT_TEXT(st, "");
        ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_STOP_STRING);
        moe_gen_seq_destroy(s);
    }
    /* the longest stop string allowed is matched like any other */
    {
        static char big[MOE_GEN_MAX_STOP_LEN + 1];
        memset(big, 'a', MOE_GEN_MAX_STOP_LEN);
        const char *bigs[] = {big};
        moe_gen_params q = p;
        q.stop = bigs, q.max_tokens = 2 * MOE_GEN_MAX_STOP_LEN;
        s = seq_new(&t, &q);
        for (int i = 0; i < MOE_GEN_MAX_STOP_LEN - 1; i++) {
            step_to(s, 'a', &st);
            ASSERT_TEXT(st, "");
        }
        step_to(s, 'a', &st);
        ASSERT_TEXT(st, "");
        ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_STOP_STRING);
        moe_gen_seq_destroy(s);
        /* one byte too long: refused */
        static const int32_t prompt[2] = {'H', 'i'};
        moe_err err;
        char over[MOE_GEN_MAX_STOP_LEN + 2];
        memset(over, 'a', sizeof over - 1);
        over[sizeof over - 1] = 0;
        const char *overs[] = {over};
        q.stop = overs;
        ASSERT_EQ_INT(moe_gen_seq_create(&s, t.v, N_VOCAB, prompt, 2, &q, &err), MOE_EINVAL);
    }

    s = seq_new(&t, &p);
    step_to(s, 'a', &st);
    ASSERT_TEXT(st, "a");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_NONE);
    step_to(s, 'E', &st);
    ASSERT_TEXT(st, ""); /* could begin "END": held */
    step_to(s, T_ND, &st);
    ASSERT_TEXT(st, "");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_STOP_STRING);
    ASSERT_EQ_INT(st.stop_index, 0);
    ASSERT(!strcmp(moe_gen_finish_reason(st.finish), "stop"));
    ASSERT_EQ_INT(moe_gen_seq_n_generated(s), 3); /* the tokens are generated all the same */
    int n;
    const int32_t *ids = moe_gen_seq_tokens(s, &n);
    ASSERT_EQ_INT(n, 5);
    ASSERT_EQ_INT(ids[2], 'a');
    ASSERT_EQ_INT(ids[3], 'E');
    ASSERT_EQ_INT(ids[4], T_ND);
    moe_err err;
    float l[N_VOCAB] = {0};
    ASSERT_EQ_INT(moe_gen_seq_step(s, l, &st, &err), MOE_EINVAL); /* finished */
    moe_gen_seq_destroy(s);

    /* "E", "N", then "x": not a stop after all, "ENx" comes out at once */
    s = seq_new(&t, &p);
    step_to(s, 'E', &st);
    ASSERT_TEXT(st, "");
    step_to(s, 'N', &st);
    ASSERT_TEXT(st, "");
    step_to(s, 'x', &st);
    ASSERT_TEXT(st, "ENx");
    /* "EN" then "E": "EN" released, the new "E" held; then "ND" stops */
    step_to(s, T_EN, &st);
    ASSERT_TEXT(st, "");
    step_to(s, 'E', &st);
    ASSERT_TEXT(st, "EN");
    step_to(s, T_ND, &st);
    ASSERT_TEXT(st, "");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_STOP_STRING);
    moe_gen_seq_destroy(s);

    /* a stop string inside one token: the text before it is emitted */
    const char *stops2[] = {"llo", "ell"};
    p.stop = stops2, p.n_stop = 2;
    s = seq_new(&t, &p);
    step_to(s, 'x', &st);
    ASSERT_TEXT(st, "x");
    step_to(s, T_HELLO, &st);
    ASSERT_TEXT(st, "H"); /* "ell" starts first */
    ASSERT_EQ_INT(st.stop_index, 1);
    moe_gen_seq_destroy(s);

    /* held text at the end comes out: "E" and then the length limit */
    p.stop = stops, p.n_stop = 1, p.max_tokens = 2;
    s = seq_new(&t, &p);
    step_to(s, 'a', &st);
    ASSERT_TEXT(st, "a");
    step_to(s, 'E', &st);
    ASSERT_TEXT(st, "E");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_MAX_TOKENS);
    moe_gen_seq_destroy(s);

    /* a stop string over two tokens, the second carrying more text after it */
    const char *stops3[] = {"o wo"};
    p.stop = stops3, p.max_tokens = 50;
    s = seq_new(&t, &p);
    step_to(s, T_HELLO, &st);
    ASSERT_TEXT(st, "Hell");
    step_to(s, T_WORLD, &st);
    ASSERT_TEXT(st, "");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_STOP_STRING);
    moe_gen_seq_destroy(s);
    tvocab_close(&t);
}

/* ==== UTF-8 ==== */

/* byte tokens of one character: nothing until it is whole; a character cut
 * off by the end comes out raw in the last delta; a stop string over a split
 * character */
TEST(gen_utf8_split_across_tokens) {
    tvocab t;
    tvocab_open(&t);
    moe_gen_params p = moe_gen_default_params();
    p.max_tokens = 50;
    moe_gen_step st;
    moe_gen_seq *s = seq_new(&t, &p);
    step_to(s, 0xC3, &st);
    ASSERT_TEXT(st, "");
    ASSERT_EQ_INT(st.n_bytes, 1);
    ASSERT_EQ_INT((unsigned char)st.bytes[0], 0xC3); /* the token's own bytes */
    step_to(s, 0xA9, &st);
    ASSERT_TEXT(st, "\xc3\xa9"); /* é */
    step_to(s, 0xE2, &st);
    ASSERT_TEXT(st, "");
    step_to(s, 0x82, &st);
    ASSERT_TEXT(st, "");
    step_to(s, 0xAC, &st);
    ASSERT_TEXT(st, "\xe2\x82\xac"); /* € */
    step_to(s, 0xF0, &st);
    ASSERT_TEXT(st, "");
    step_to(s, 0x9F, &st);
    ASSERT_TEXT(st, "");
    ASSERT_EQ_INT(moe_gen_seq_cancel(s, &st), 0); /* the cut-off bytes come out */
    ASSERT_TEXT(st, "\xf0\x9f");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_ABORT);
    moe_gen_seq_destroy(s);

    /* stop "é!" with é split: nothing of it shown; "aé" before "é?" shown */
    const char *stops[] = {"\xc3\xa9!"};
    p.stop = stops, p.n_stop = 1;
    s = seq_new(&t, &p);
    step_to(s, 'a', &st);
    ASSERT_TEXT(st, "a");
    step_to(s, 0xC3, &st);
    ASSERT_TEXT(st, "");
    step_to(s, 0xA9, &st);
    ASSERT_TEXT(st, ""); /* é could begin "é!" */
    step_to(s, '?', &st);
    ASSERT_TEXT(st, "\xc3\xa9?");
    step_to(s, 0xC3, &st);
    ASSERT_TEXT(st, "");
    step_to(s, 0xA9, &st);
    ASSERT_TEXT(st, "");
    step_to(s, '!', &st);
    ASSERT_TEXT(st, "");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_STOP_STRING);
    moe_gen_seq_destroy(s);

    /* a stop string that is not whole UTF-8 (it could end a delta inside a
     * character) is refused, naming it */
    const char *stops2[] = {"ok", "\xa9x"};
    p.stop = stops2, p.n_stop = 2;
    {
        static const int32_t prompt[2] = {'H', 'i'};
        moe_err err;
        s = (moe_gen_seq *)1;
        ASSERT_EQ_INT(moe_gen_seq_create(&s, t.v, N_VOCAB, prompt, 2, &p, &err), MOE_EINVAL);
        ASSERT(s == NULL);
        ASSERT(strstr(err.msg, "stop string 1 is not valid UTF-8") != NULL);
    }

    /* the length limit on a cut character: its byte comes out raw */
    p.n_stop = 0, p.max_tokens = 2;
    s = seq_new(&t, &p);
    step_to(s, 'a', &st);
    ASSERT_TEXT(st, "a");
    step_to(s, 0xE2, &st);
    ASSERT_TEXT(st, "\xe2");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_MAX_TOKENS);
    moe_gen_seq_destroy(s);
    tvocab_close(&t);
}

/* ==== Sampling ==== */

/* Generates n tokens at temperature 1 from fixed, varied logits. */
static void run_seeded(const tvocab *t, uint64_t seed, int32_t *out, int n) {
    moe_gen_params p = moe_gen_default_params();
    p.sampling.temperature = 1.0f;
    p.sampling.seed = seed;
    p.max_tokens = n;
    p.ignore_eos = 1;
    moe_gen_seq *s = seq_new(t, &p);
    float l[N_VOCAB];
    uint64_t r = 12345;
    moe_gen_step st;
    moe_err err;
    for (int i = 0; i < n; i++) {
        for (int v = 0; v < N_VOCAB; v++) l[v] = test_rand_f32(&r);
        if (moe_gen_seq_step(s, l, &st, &err) < 0) TEST_FAIL("%s", err.msg);
        out[i] = st.token;
        ASSERT_EQ_INT(st.finish, i + 1 == n ? MOE_GEN_FINISH_MAX_TOKENS : MOE_GEN_FINISH_NONE);
    }
    moe_gen_seq_destroy(s);
}

/* same seed, same tokens; another seed, other tokens; the draws really vary */
TEST(gen_seeded_reproducible) {
    tvocab t;
    tvocab_open(&t);
    enum { N = 40 };
    int32_t a[N], b[N], c[N];
    run_seeded(&t, 7, a, N);
    run_seeded(&t, 7, b, N);
    run_seeded(&t, 8, c, N);
    int same_ab = 0, same_ac = 0, distinct = 0;
    for (int i = 0; i < N; i++) {
        same_ab += a[i] == b[i];
        same_ac += a[i] == c[i];
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= a[j] == a[i];
        distinct += !seen;
    }
    ASSERT_EQ_INT(same_ab, N);
    ASSERT(same_ac < N / 2);
    ASSERT(distinct > N / 2);
    tvocab_close(&t);
}

/* logprobs: the chosen token's and the top alternatives', with their bytes */
TEST(gen_logprobs) {
    tvocab t;
    tvocab_open(&t);
    moe_gen_params p = moe_gen_default_params();
    p.sampling.n_logprobs = 3;
    moe_gen_seq *s = seq_new(&t, &p);
    float l[N_VOCAB];
    for (int i = 0; i < N_VOCAB; i++) l[i] = -INFINITY;
    l['A'] = logf(0.5f), l['B'] = logf(0.25f), l[0xC3] = logf(0.125f), l[T_HELLO] = logf(0.125f);
    moe_gen_step st;
    moe_err err;
    ASSERT_EQ_INT(moe_gen_seq_step(s, l, &st, &err), 0);
    ASSERT_EQ_INT(st.token, 'A');
    ASSERT_NEAR(st.logprob, log(0.5), 1e-6);
    ASSERT_EQ_INT(st.n_top, 3);
    ASSERT_EQ_INT(st.top[0].token, 'A');
    ASSERT_EQ_INT(st.top[1].token, 'B');
    ASSERT_EQ_INT(st.top[2].token, 0xC3); /* a tie with Hello: the lower id */
    ASSERT_NEAR(st.top[1].logprob, log(0.25), 1e-6);
    ASSERT_NEAR(st.top[2].logprob, log(0.125), 1e-6);
    ASSERT(st.top[0].n_bytes == 1 && st.top[0].bytes[0] == 'A');
    ASSERT(st.top[1].n_bytes == 1 && st.top[1].bytes[0] == 'B');
    ASSERT(st.top[2].n_bytes == 1 && (unsigned char)st.top[2].bytes[0] == 0xC3);
    ASSERT(st.n_bytes == 1 && st.bytes[0] == 'A');
    ASSERT_TEXT(st, "A");
    l['A'] = -INFINITY; /* now Hello, tied with 0xC3, loses only by id... */
    l[T_HELLO] = 5.0f;  /* ...unless it is far ahead */
    ASSERT_EQ_INT(moe_gen_seq_step(s, l, &st, &err), 0);
    ASSERT_EQ_INT(st.token, T_HELLO);
    ASSERT(st.n_bytes == 5 && !memcmp(st.bytes, "Hello", 5));
    ASSERT(st.top[0].n_bytes == 5 && !memcmp(st.top[0].bytes, "Hello", 5));
    moe_gen_seq_destroy(s);
    tvocab_close(&t);
}

/* ==== Finish reasons ==== */

/* A sequence with params p that generates 'a', 'b' unfinished, then 'c'
 * finished as want, a "length" reason; returned for more checks. */
static moe_gen_seq *seq_length_after_abc(const tvocab *t, const moe_gen_params *p,
                                         moe_gen_finish want, moe_gen_step *st) {
    moe_gen_seq *s = seq_new(t, p);
    step_to(s, 'a', st);
    step_to(s, 'b', st);
    ASSERT_EQ_INT(st->finish, MOE_GEN_FINISH_NONE);
    step_to(s, 'c', st);
    ASSERT_EQ_INT(st->finish, want);
    ASSERT(!strcmp(moe_gen_finish_reason(st->finish), "length"));
    return s;
}

TEST(gen_finish_reasons) {
    tvocab t;
    tvocab_open(&t);
    moe_gen_step st;
    moe_err err;
    float l[N_VOCAB] = {0};
    const char *stops[] = {"END"};

    /* EOS: "stop", not in the text; the held "E" comes out with it */
    moe_gen_params p = moe_gen_default_params();
    p.max_tokens = 10, p.stop = stops, p.n_stop = 1;
    moe_gen_seq *s = seq_new(&t, &p);
    step_to(s, 'E', &st);
    ASSERT_TEXT(st, "");
    step_to(s, T_EOS, &st);
    ASSERT_TEXT(st, "E");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_EOS);
    ASSERT_EQ_INT(moe_gen_seq_finish(s), MOE_GEN_FINISH_EOS);
    ASSERT(!strcmp(moe_gen_finish_reason(st.finish), "stop"));
    moe_gen_seq_destroy(s);
    /* ignore_eos: EOS is a token like any other, with its text */
    p.ignore_eos = 1;
    s = seq_new(&t, &p);
    step_to(s, T_EOS, &st);
    ASSERT_TEXT(st, "</s>");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_NONE);
    moe_gen_seq_destroy(s);
    p.ignore_eos = 0;
    /* skip_special: the same token adds no text */
    p.ignore_eos = 1, p.skip_special = 1;
    s = seq_new(&t, &p);
    step_to(s, T_EOS, &st);
    ASSERT_TEXT(st, "");
    step_to(s, 'z', &st);
    ASSERT_TEXT(st, "z");
    moe_gen_seq_destroy(s);
    p.ignore_eos = 0, p.skip_special = 0;

    /* a stop token: "stop", not in the text */
    const int32_t stop_ids[] = {T_IME, T_EOT};
    p.stop_tokens = stop_ids, p.n_stop_tokens = 2;
    s = seq_new(&t, &p);
    step_to(s, 'q', &st);
    ASSERT_TEXT(st, "q");
    step_to(s, T_EOT, &st);
    ASSERT_TEXT(st, "");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_STOP_TOKEN);
    ASSERT_EQ_INT(st.stop_index, 1);
    moe_gen_seq_destroy(s);
    p.n_stop_tokens = 0;

    /* a stop string */
    s = seq_new(&t, &p);
    step_to(s, T_END, &st);
    ASSERT_TEXT(st, "");
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_STOP_STRING);
    moe_gen_seq_destroy(s);

    /* max tokens: "length" after exactly 3; max_tokens 0 is born finished */
    p.n_stop = 0, p.max_tokens = 3;
    s = seq_length_after_abc(&t, &p, MOE_GEN_FINISH_MAX_TOKENS, &st);
    ASSERT_TEXT(st, "c");
    ASSERT_EQ_INT(moe_gen_seq_step(s, l, &st, &err), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gen_seq_n_generated(s), 3);
    moe_gen_seq_destroy(s);
    p.max_tokens = 0;
    s = seq_new(&t, &p);
    ASSERT_EQ_INT(moe_gen_seq_finish(s), MOE_GEN_FINISH_MAX_TOKENS);
    moe_gen_seq_destroy(s);

    /* the context limit: prompt 2 + 3 generated = n_ctx 5 */
    p.max_tokens = 100, p.n_ctx = 5;
    s = seq_length_after_abc(&t, &p, MOE_GEN_FINISH_CONTEXT, &st);
    ASSERT_EQ_INT(moe_gen_seq_n_tokens(s), 5);
    moe_gen_seq_destroy(s);
    p.max_tokens = -1; /* no limit but the context */
    s = seq_new(&t, &p);
    for (int i = 0; i < 3; i++) step_to(s, 'a', &st);
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_CONTEXT);
    moe_gen_seq_destroy(s);
    p.n_ctx = 2; /* the prompt fills it */
    const int32_t hi[2] = {'H', 'i'};
    ASSERT_EQ_INT(moe_gen_seq_create(&s, t.v, N_VOCAB, hi, 2, &p, &err), MOE_ERANGE);
    ASSERT(s == NULL);
    p.n_ctx = 0; /* and no limit at all is refused */
    ASSERT_EQ_INT(moe_gen_seq_create(&s, t.v, N_VOCAB, hi, 2, &p, &err), MOE_EINVAL);
    p.max_tokens = 10;

    /* abort: the held text comes out; a second cancel is refused */
    p.stop = stops, p.n_stop = 1;
    s = seq_new(&t, &p);
    step_to(s, 'E', &st);
    ASSERT_TEXT(st, "");
    ASSERT_EQ_INT(moe_gen_seq_cancel(s, &st), 0);
    ASSERT_TEXT(st, "E");
    ASSERT_EQ_INT(st.token, -1);
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_ABORT);
    ASSERT(!strcmp(moe_gen_finish_reason(moe_gen_seq_finish(s)), "abort"));
    ASSERT_EQ_INT(moe_gen_seq_cancel(s, NULL), MOE_EINVAL);
    ASSERT_EQ_INT(moe_gen_seq_step(s, l, &st, &err), MOE_EINVAL);
    moe_gen_seq_destroy(s);

    /* error: set by the caller, or NaN logits */
    s = seq_new(&t, &p);
    ASSERT_EQ_INT(moe_gen_seq_fail(s, NULL), 0);
    ASSERT_EQ_INT(moe_gen_seq_finish(s), MOE_GEN_FINISH_ERROR);
    ASSERT(!strcmp(moe_gen_finish_reason(MOE_GEN_FINISH_ERROR), "error"));
    moe_gen_seq_destroy(s);
    s = seq_new(&t, &p);
    step_to(s, 'E', &st);
    l[7] = NAN;
    ASSERT_EQ_INT(moe_gen_seq_step(s, l, &st, &err), MOE_ENUMERIC);
    ASSERT_STR_CONTAINS(err.msg, "non-finite");
    ASSERT_EQ_INT(st.token, -1);
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_ERROR);
    ASSERT_TEXT(st, "E");
    ASSERT_EQ_INT(moe_gen_seq_n_generated(s), 1);
    moe_gen_seq_destroy(s);
    ASSERT(moe_gen_finish_reason(MOE_GEN_FINISH_NONE) == NULL);
    tvocab_close(&t);
}

/* ==== Prompts ==== */

TEST(gen_prompts_text_chat_ids) {
    tvocab t;
    tvocab_open(&t);
    moe_gen_params p = moe_gen_default_params();
    moe_gen_seq *s;
    moe_err err;
    int n;
    /* text: bytes here (no merges), no BOS (this vocabulary asks for none) */
    ASSERT_EQ_INT(moe_gen_seq_create_text(&s, t.v, 0, "Hi!", 3, 0, &p, &err), 0);
    const int32_t *ids = moe_gen_seq_tokens(s, &n);
    ASSERT_EQ_INT(n, 3);
    ASSERT_EQ_INT(moe_gen_seq_n_prompt(s), 3);
    ASSERT_EQ_INT(ids[0], 'H');
    ASSERT_EQ_INT(ids[1], 'i');
    ASSERT_EQ_INT(ids[2], '!');
    moe_gen_seq_destroy(s);
    /* special-token text: a token only when asked */
    ASSERT_EQ_INT(
        moe_gen_seq_create_text(&s, t.v, 0, "a<|eot|>", 8, MOE_GEN_TEXT_SPECIAL, &p, &err), 0);
    ids = moe_gen_seq_tokens(s, &n);
    ASSERT_EQ_INT(n, 2);
    ASSERT_EQ_INT(ids[1], T_EOT);
    moe_gen_seq_destroy(s);
    ASSERT_EQ_INT(moe_gen_seq_create_text(&s, t.v, 0, "a<|eot|>", 8, 0, &p, &err), 0);
    ASSERT_EQ_INT(moe_gen_seq_n_prompt(s), 8);
    moe_gen_seq_destroy(s);
    ASSERT_EQ_INT(moe_gen_seq_create_text(&s, t.v, 0, "", 0, 0, &p, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "no tokens");
    /* chat: chatml's markers become their tokens, then the reply prompt */
    const moe_chat_msg msgs[] = {{"user", "Hi"}};
    ASSERT_EQ_INT(moe_gen_seq_create_chat(&s, t.v, 0, MOE_CHAT_CHATML, msgs, 1, &p, &err), 0);
    ids = moe_gen_seq_tokens(s, &n);
    static const char want[] = "Suser\nHiE\nSassistant\n"; /* S, E: im_start, im_end */
    ASSERT_EQ_INT(n, (int)strlen(want));
    for (int i = 0; i < n; i++)
        ASSERT_EQ_INT(ids[i], want[i] == 'S' ? T_IMS : want[i] == 'E' ? T_IME : want[i]);
    moe_gen_seq_destroy(s);
    const moe_chat_msg bad[] = {{"robot", "Hi"}};
    ASSERT_EQ_INT(moe_gen_seq_create_chat(&s, t.v, 0, MOE_CHAT_CHATML, bad, 1, &p, &err),
                  MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "robot");
    /* ids: checked against n_vocab; no vocabulary, no stop strings */
    const int32_t ok_ids[2] = {1, 2}, bad_ids[2] = {1, N_VOCAB};
    ASSERT_EQ_INT(moe_gen_seq_create(&s, t.v, N_VOCAB, bad_ids, 2, &p, &err), MOE_ERANGE);
    ASSERT_STR_CONTAINS(err.msg, "prompt token 1");
    ASSERT_EQ_INT(moe_gen_seq_create(&s, NULL, N_VOCAB, ok_ids, 2, &p, &err), 0);
    moe_gen_step st;
    step_to(s, 'A', &st);
    ASSERT_TEXT(st, ""); /* no vocabulary: ids only */
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_NONE);
    moe_gen_seq_destroy(s);
    const char *stops[] = {"x"};
    p.stop = stops, p.n_stop = 1;
    ASSERT_EQ_INT(moe_gen_seq_create(&s, NULL, N_VOCAB, ok_ids, 2, &p, &err), MOE_EINVAL);
    const char *empty[] = {""};
    p.stop = empty;
    ASSERT_EQ_INT(moe_gen_seq_create(&s, t.v, N_VOCAB, ok_ids, 2, &p, &err), MOE_EINVAL);
    p.n_stop = 0;
    p.sampling.top_p = 1.5f; /* the sampler's checks */
    ASSERT_EQ_INT(moe_gen_seq_create(&s, t.v, N_VOCAB, ok_ids, 2, &p, &err), MOE_EINVAL);
    ASSERT_STR_CONTAINS(err.msg, "top_p");
    tvocab_close(&t);
}

/* the prompt enters the penalty window (penalize_prompt), or not */
TEST(gen_penalize_prompt) {
    tvocab t;
    tvocab_open(&t);
    float l[N_VOCAB];
    for (int i = 0; i < N_VOCAB; i++) l[i] = 0.0f;
    l['H'] = 2.0f, l['x'] = 1.5f; /* 'H' is in the prompt "Hi" */
    moe_gen_params p = moe_gen_default_params();
    p.sampling.repeat_penalty = 2.0f; /* 'H': 2 -> 1, below 'x' */
    moe_gen_step st;
    moe_err err;
    for (int pen = 0; pen < 2; pen++) {
        p.penalize_prompt = pen;
        moe_gen_seq *s = seq_new(&t, &p);
        ASSERT_EQ_INT(moe_gen_seq_step(s, l, &st, &err), 0);
        ASSERT_EQ_INT(st.token, pen ? 'x' : 'H');
        moe_gen_seq_destroy(s);
    }
    tvocab_close(&t);
}

/* ==== A scheduler: N sequences in one batch ==== */

/* Three sequences of different prompts decoded together, as moe/generate.h
 * describes (prefill rows and decode rows in one moe_ctx_decode), give the
 * same tokens as each run alone in a context of its own. */
TEST(gen_scheduler_batch_matches_alone) {
    moe_testmodel_params tp;
    moe_testmodel_defaults(&tp, MOE_ARCH_LLAMA, "tiny");
    char path[256];
    snprintf(path, sizeof path, "/tmp/moe-test-%d-gensched.gguf", (int)getpid());
    moe_err err;
    if (moe_testmodel_write(&tp, path, &err) < 0) TEST_FAIL("%s", err.msg);
    moe_model *m;
    if (moe_model_load(&m, path, &err) < 0) TEST_FAIL("%s", err.msg);
    moe_vocab *v;
    if (moe_vocab_load(&v, m->gguf, &err) < 0) TEST_FAIL("%s", err.msg);
    enum { NS = 3, NGEN = 6 };
    static const char *prompts[NS] = {"hello world", "ab", "the quick brown fox"};
    moe_gen_params p = moe_gen_default_params();
    p.max_tokens = NGEN;
    p.ignore_eos = 1;
    p.sampling.temperature = 0.9f;
    int32_t alone[NS][NGEN], batched[NS][NGEN];

    /* alone: one context per sequence */
    for (int k = 0; k < NS; k++) {
        moe_ctx_params cp = moe_ctx_default_params();
        cp.n_ctx = 64;
        moe_ctx *c;
        if (moe_ctx_create(&c, m, &cp, &err) < 0) TEST_FAIL("%s", err.msg);
        p.sampling.seed = 100 + (uint64_t)k;
        moe_gen_seq *s;
        if (moe_gen_seq_create_text(&s, v, m->hp.n_vocab, prompts[k], strlen(prompts[k]), 0, &p,
                                    &err) < 0)
            TEST_FAIL("%s", err.msg);
        int n;
        const int32_t *ids = moe_gen_seq_tokens(s, &n);
        int32_t pos[64], slot[64] = {0};
        for (int i = 0; i < n; i++) pos[i] = i;
        moe_batch b = {n, ids, pos, slot, NULL};
        if (moe_ctx_decode(c, &b, &err) < 0) TEST_FAIL("%s", err.msg);
        moe_gen_step st;
        for (int g = 0; g < NGEN; g++) {
            if (moe_gen_seq_step(s, moe_ctx_logits(c, 0), &st, &err) < 0) TEST_FAIL("%s", err.msg);
            alone[k][g] = st.token;
            if (st.finish) break;
            int32_t tk = st.token, ps = moe_gen_seq_n_tokens(s) - 1, sl = 0;
            moe_batch nb = {1, &tk, &ps, &sl, NULL};
            if (moe_ctx_decode(c, &nb, &err) < 0) TEST_FAIL("%s", err.msg);
        }
        ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_MAX_TOKENS);
        moe_gen_seq_destroy(s);
        moe_ctx_destroy(c);
    }

    /* together: slot k; sequence k is admitted at iteration k, its prefill
     * rows sharing the batch with the others' decode rows */
    moe_ctx_params cp = moe_ctx_default_params();
    cp.n_ctx = 64;
    cp.n_slots = NS;
    moe_ctx *c;
    if (moe_ctx_create(&c, m, &cp, &err) < 0) TEST_FAIL("%s", err.msg);
    moe_gen_seq *seq[NS] = {0};
    int n_done = 0, n_gen[NS] = {0};
    for (int it = 0; n_done < NS && it < 100; it++) {
        int32_t tok[128], pos[128], slot[128];
        int8_t want[128];
        int owner[NS], nrow = 0, nflag = 0;
        for (int k = 0; k < NS; k++) { /* decode rows of the running ones */
            if (!seq[k] || moe_gen_seq_finish(seq[k]) || n_gen[k] == 0) continue;
            tok[nrow] = batched[k][n_gen[k] - 1];
            pos[nrow] = moe_gen_seq_n_tokens(seq[k]) - 1, slot[nrow] = k, want[nrow++] = 1;
            owner[nflag++] = k;
        }
        if (it < NS) { /* admit sequence it: its whole prompt, logits on the last row */
            const int k = it;
            p.sampling.seed = 100 + (uint64_t)k;
            if (moe_gen_seq_create_text(&seq[k], v, m->hp.n_vocab, prompts[k], strlen(prompts[k]),
                                        0, &p, &err) < 0)
                TEST_FAIL("%s", err.msg);
            moe_ctx_slot_clear(c, k);
            int n;
            const int32_t *ids = moe_gen_seq_tokens(seq[k], &n);
            for (int i = 0; i < n; i++)
                tok[nrow] = ids[i], pos[nrow] = i, slot[nrow] = k, want[nrow++] = i == n - 1;
            owner[nflag++] = k;
        }
        moe_batch b = {nrow, tok, pos, slot, want};
        if (moe_ctx_decode(c, &b, &err) < 0) TEST_FAIL("%s", err.msg);
        ASSERT_EQ_INT(moe_ctx_n_logits(c), nflag);
        for (int j = 0; j < nflag; j++) {
            const int k = owner[j];
            moe_gen_step st;
            if (moe_gen_seq_step(seq[k], moe_ctx_logits(c, j), &st, &err) < 0)
                TEST_FAIL("%s", err.msg);
            batched[k][n_gen[k]++] = st.token;
            n_done += st.finish != MOE_GEN_FINISH_NONE;
        }
    }
    ASSERT_EQ_INT(n_done, NS);
    for (int k = 0; k < NS; k++) {
        ASSERT_EQ_INT(n_gen[k], NGEN);
        for (int g = 0; g < NGEN; g++) ASSERT_EQ_INT(batched[k][g], alone[k][g]);
        moe_gen_seq_destroy(seq[k]);
    }
    /* the sequences did not all produce the same tokens (the check can fail) */
    ASSERT(memcmp(alone[0], alone[1], sizeof alone[0]) ||
           memcmp(alone[1], alone[2], sizeof alone[0]));
    moe_ctx_destroy(c);
    moe_vocab_free(v);
    moe_model_free(m);
    unlink(path);
}

/* The token list starts small and doubles: a long generation keeps every
 * token, in order, up to max_tokens exactly. */
TEST(gen_token_list_grows) {
    tvocab t;
    tvocab_open(&t);
    moe_gen_params p = moe_gen_default_params();
    p.max_tokens = 2500;
    moe_gen_step st;
    moe_gen_seq *s = seq_new(&t, &p);
    for (int i = 0; i < 2500; i++) {
        ASSERT_EQ_INT(st.finish = MOE_GEN_FINISH_NONE, MOE_GEN_FINISH_NONE);
        step_to(s, 'a' + i % 26, &st);
    }
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_MAX_TOKENS);
    int n = 0;
    const int32_t *ids = moe_gen_seq_tokens(s, &n);
    ASSERT_EQ_INT(n, 2 + 2500);
    ASSERT_EQ_INT(moe_gen_seq_n_generated(s), 2500);
    for (int i = 0; i < 2500; i++) ASSERT_EQ_INT(ids[2 + i], 'a' + i % 26);
    moe_gen_seq_destroy(s);
    tvocab_close(&t);
}

/* ==== The gateway's jobs (gateway/api.c, gateway/job.c) ==== */

/* Parses body into a request on this frame's stack and makes a job of it
 * (the gateway's HTTP thread does the same; the frame is gone when the
 * engine thread starts the job). */
static __attribute__((noinline)) gw_job *job_from(const gw_api_ctx *ctx, gw_route r,
                                                  const char *body) {
    gw_api_req req;
    gw_api_error e;
    if (gw_api_parse(ctx, r, body, strlen(body), &req, &e) < 0) TEST_FAIL("parse: %s", e.message);
    uint64_t rng = 1;
    gw_job *j;
    if (gw_job_create(&j, &req, &rng, &e) < 0) TEST_FAIL("job: %s", e.message);
    return j;
}

static __attribute__((noinline)) void clobber_stack(void) {
    volatile unsigned char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = 0xA5;
}

TEST(gateway_job_chat_stops_at_end_of_turn) {
    tvocab t;
    tvocab_open(&t);
    const int32_t end[1] = {T_IME};
    const gw_api_ctx ctx = {.vocab = t.v,
                            .n_vocab = N_VOCAB,
                            .n_ctx = 256,
                            .chat_kind = MOE_CHAT_CHATML,
                            .model = "m",
                            .end_ids = end,
                            .n_end = 1,
                            .max_seqs = 8};
    gw_job *j = job_from(&ctx, GW_ROUTE_CHAT,
                         "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],"
                         "\"n\":2,\"temperature\":0,\"stop\":[\"ND\"]}");
    clobber_stack();
    gw_api_error e;
    if (gw_job_start(j, t.v, N_VOCAB, &e) < 0) TEST_FAIL("start: %s", e.message);
    ASSERT_EQ_INT(j->n_ch, 2);
    float *logits = calloc(N_VOCAB, sizeof *logits);
    moe_gen_step st;
    moe_err err;
    logits['A'] = 5; /* "A": text */
    ASSERT_EQ_INT(moe_gen_seq_step(j->ch[0].seq, logits, &st, &err), 0);
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_NONE);
    logits[T_IME] = 10; /* <|im_end|> ends the turn */
    ASSERT_EQ_INT(moe_gen_seq_step(j->ch[0].seq, logits, &st, &err), 0);
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_STOP_TOKEN);
    logits[T_IME] = 0, logits[T_ND] = 10; /* the stop string, in choice 1 */
    ASSERT_EQ_INT(moe_gen_seq_step(j->ch[1].seq, logits, &st, &err), 0);
    ASSERT_EQ_INT(st.finish, MOE_GEN_FINISH_STOP_STRING);
    free(logits);
    gw_job_unref(j);
    tvocab_close(&t);
}
