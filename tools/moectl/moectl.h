/* moectl.h - shared pieces of the moectl commands. */
#ifndef MOECTL_H
#define MOECTL_H

#include <stdint.h>
#include <stdio.h>

#include "moe/chat.h"

int cmd_info(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_expert(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_chat_template(int argc, char **argv);

/* Prints "moectl: error: ..." to stderr; returns 1 (the exit status). */
int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Option parsing: if argv[*i] is name, consumes it and its value. Returns 1
 * if matched (value parsed into *out), 0 if not this option, -1 on a bad or
 * missing value (already reported). */
int opt_int(int argc, char **argv, int *i, const char *name, int *out);
int opt_u64(int argc, char **argv, int *i, const char *name, uint64_t *out);
int opt_float(int argc, char **argv, int *i, const char *name, float *out);
int opt_str(int argc, char **argv, int *i, const char *name, const char **out);
int is_help(const char *a);

/* Reads a whole file, NUL-terminated; NULL (reported) on failure. */
char *read_file(const char *path, size_t *len);

/* Parses "1,2,3" into a malloc'd array; returns count or -1 (reported). */
int parse_tokens(const char *s, int32_t **out);

/* Writes a float that reads back to the same float (or null if non-finite). */
void json_float(FILE *f, float v);
/* Writes a JSON string with escapes. */
void json_str(FILE *f, const char *s, size_t n);

/* Reads a JSON message list (file) and the chat format: the model's
 * tokenizer.chat_template, or the named one. Returns the moe_chat_kind, with
 * the messages in *msgs (free with chat_msgs_free), or -1 (reported). */
int chat_load(const char *model, const char *name, const char *messages_file, moe_chat_msg **msgs,
              int *n_msgs);
void chat_msgs_free(moe_chat_msg *m, int n);

/* Writes bytes as a JSON string; invalid UTF-8 bytes become U+FFFD. */
void json_utf8(FILE *f, const char *buf, size_t len);

/* Monotonic seconds. */
double now_s(void);

#endif
