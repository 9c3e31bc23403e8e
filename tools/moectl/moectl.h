/* moectl.h - shared pieces of the moectl commands. */
#ifndef MOECTL_H
#define MOECTL_H

#include <stdint.h>
#include <stdio.h>

#include "moe/chat.h"
#include "moe/model.h"
#include "svc/clock.h"
#include "svc/flags.h"
#include "svc/strbuf.h"

/* A command: its name, the usage line's program and arguments, its function
 * and the line 'moectl --help' shows (all static). */
typedef struct moectl_cmd moectl_cmd;
struct moectl_cmd {
    const char *name; /* "tokenize" */
    const char *prog; /* "moectl tokenize" */
    int (*fn)(const moectl_cmd *cmd, int argc, char **argv);
    const char *args;     /* after "usage: PROG ": the command's arguments */
    const char *synopsis; /* for 'moectl --help': arguments, then what it does */
};

/* The command's flagset: its usage line from cmd, the lines under it (about)
 * and its flag table. */
static inline moe_flagset cmd_flagset(const moectl_cmd *cmd, const char *about,
                                      const moe_flag *flags) {
    return (moe_flagset){.prog = cmd->prog, .args = cmd->args, .about = about, .flags = flags};
}

int cmd_info(const moectl_cmd *cmd, int argc, char **argv);
int cmd_logits(const moectl_cmd *cmd, int argc, char **argv);
int cmd_generate(const moectl_cmd *cmd, int argc, char **argv);
int cmd_bench(const moectl_cmd *cmd, int argc, char **argv);
int cmd_mkmodel(const moectl_cmd *cmd, int argc, char **argv);
int cmd_expert(const moectl_cmd *cmd, int argc, char **argv);
int cmd_tokenize(const moectl_cmd *cmd, int argc, char **argv);
int cmd_detokenize(const moectl_cmd *cmd, int argc, char **argv);
int cmd_chat_template(const moectl_cmd *cmd, int argc, char **argv);
int cmd_redis_acl(const moectl_cmd *cmd, int argc, char **argv);
int cmd_tenant(const moectl_cmd *cmd, int argc, char **argv);

/* Prints "moectl: error: ..." to stderr; returns 1 (the exit status). */
int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Each command parses its argv with a moe_flag table (svc/flags.h) and
 * moe_flags_run: --help prints the usage generated from it. */

/* A command's required argument is missing: its usage on stderr; returns 2. */
int usage_error(const moe_flagset *fs);

/* Parses a command's argv with fs (moe_flags_run); with path, MODEL.gguf is
 * its one positional argument, required, written to *path (borrowed from
 * argv). Returns -1 when the command goes on, else its exit status: 0 after
 * --help, 2 after a bad flag or without MODEL.gguf (the usage on stderr). */
int parse_args(const moe_flagset *fs, const char **path, int argc, char **argv);

/* Loads the model at path into *m (free with moe_model_free), its Q8_0
 * experts repacked as repack says (moe/model.h); returns 0, or 1 (the exit
 * status) with the error reported. */
int load_model(moe_model **m, const char *path, moe_repack repack);

/* Reads a whole file, NUL-terminated; NULL (reported) on failure. */
char *read_file(const char *path, size_t *len);

/* Parses "1,2,3" into a malloc'd array; returns count or -1 (reported). */
int parse_tokens(const char *s, int32_t **out);

/* The character a one-letter JSON escape stands for (after the backslash:
 * n t r b f, and " \\ / for themselves), or -1 (also for 'u'). */
int json_escape_char(char c);
/* Writes cp (at most U+10FFFF) at dst as 1 to 4 bytes of UTF-8; returns how
 * many. Surrogates are written as they come (CESU-8). */
int utf8_encode(uint32_t cp, char *dst);

/* Writes a float that reads back to the same float (or null if non-finite). */
void json_float(FILE *f, float v);
/* Writes n bytes of s as a JSON string with escapes (svc/strbuf.h). */
static inline void json_str(FILE *f, const char *s, size_t n) {
    moe_json_write(f, s, n, 0);
}

/* Reads a JSON message list (file) and the chat format: the model's
 * tokenizer.chat_template, or the named one. Returns the moe_chat_kind, with
 * the messages in *msgs (free with chat_msgs_free), or -1 (reported). */
int chat_load(const char *model, const char *name, const char *messages_file, moe_chat_msg **msgs,
              int *n_msgs);
void chat_msgs_free(moe_chat_msg *m, int n);

/* Writes bytes as a JSON string; invalid UTF-8 bytes become U+FFFD. */
static inline void json_utf8(FILE *f, const char *buf, size_t len) {
    moe_json_write(f, buf, len, MOE_JSON_UTF8_FIX);
}

/* Monotonic seconds (svc/clock.h). */
static inline double now_s(void) {
    return moe_mono_s();
}

#endif
