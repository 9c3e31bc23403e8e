/*
 * moe/chat.h - chat templates: a list of messages -> the prompt text a chat
 * model was trained on, without a Jinja engine.
 *
 * A GGUF may carry tokenizer.chat_template, the Jinja template from the
 * model's Hugging Face tokenizer_config.json. moe_chat_template_detect
 * recognises the common families by distinctive substrings of that text, and
 * moe_chat_apply renders a family's format in C:
 *
 *   chatml     Qwen and others: <|im_start|>ROLE\nCONTENT<|im_end|>\n ...;
 *              generation prompt <|im_start|>assistant\n
 *   mistral    Mistral/Mixtral (v0.1 instruct): <s>[INST] USER [/INST]
 *              ASSISTANT</s>...; a system message is put before the next user
 *              message's content, followed by a blank line ("SYS\n\nUSER");
 *              the generation prompt is empty (the text ends with [/INST])
 *   llama3     <|begin_of_text|><|start_header_id|>ROLE<|end_header_id|>\n\n
 *              CONTENT<|eot_id|>... (content trimmed of ASCII whitespace, as
 *              the template's `| trim` does); generation prompt
 *              <|start_header_id|>assistant<|end_header_id|>\n\n
 *   deepseek3  DeepSeek-V3: <｜begin▁of▁sentence｜>, the system messages
 *              first (joined by a blank line), then <｜User｜>USER and
 *              <｜Assistant｜>ASSISTANT<｜end▁of▁sentence｜>; generation
 *              prompt <｜Assistant｜>
 *   olmoe      OLMoE-1B-7B-0924-Instruct (Tulu style): <|endoftext|>, then
 *              <|system|>\nS\n, <|user|>\nU\n, <|assistant|>\nA<|endoftext|>\n;
 *              generation prompt <|assistant|>\n (after at least one message)
 *
 * The BOS text is part of the prompt (as the templates write it), so the
 * result is tokenized with special-token text matched and no extra BOS.
 * Only these forms are rendered: tool calls, Qwen3's <think> handling of
 * assistant turns and similar template logic are not.
 *
 *     moe_err err;
 *     int kind = moe_chat_template_detect(tmpl, tmpl_len, &err);
 *     if (kind < 0) ... err.msg names the --chat-template NAME override
 *     moe_chat_msg msgs[] = {{"system", "Be brief."}, {"user", "Hi"}};
 *     size_t need;
 *     char buf[1024];
 *     if (moe_chat_apply(kind, msgs, 2, 1, buf, sizeof buf, &need, &err) == MOE_ENOSPC)
 *         ... retry with a buffer of need bytes
 */
#ifndef MOE_CHAT_H
#define MOE_CHAT_H

#include <stddef.h>

#include "moe/error.h"

typedef enum moe_chat_kind {
    MOE_CHAT_CHATML = 0,
    MOE_CHAT_MISTRAL = 1,
    MOE_CHAT_LLAMA3 = 2,
    MOE_CHAT_DEEPSEEK3 = 3,
    MOE_CHAT_OLMOE = 4,
    MOE_CHAT_COUNT
} moe_chat_kind;

/* One message. role: "system", "user" or "assistant"; content: UTF-8 text
 * (NUL-terminated). */
typedef struct moe_chat_msg {
    const char *role;
    const char *content;
} moe_chat_msg;

/* Recognises a Jinja chat template (len bytes, need not be NUL-terminated).
 * Returns a moe_chat_kind, or MOE_ENOTSUP (err names the --chat-template
 * NAME override and the known names) for an unknown template. */
int moe_chat_template_detect(const char *tmpl, size_t len, moe_err *err);

/* The kind's name ("chatml", ...), or NULL for an invalid kind. */
const char *moe_chat_template_name(int kind);

/* The texts of the special tokens that end an assistant turn in the kind's
 * format ("<|im_end|>" for chatml, "<|eot_id|>" for llama3, ...): a server
 * looks each up in the vocabulary (moe_vocab_find) and stops on it. A
 * NULL-terminated static list; empty for an invalid kind. */
const char *const *moe_chat_end_texts(int kind);

/* The kind for a name (case-insensitive), or MOE_EINVAL. */
int moe_chat_template_parse_name(const char *name);

/* Renders n messages in the kind's format, plus the generation prompt (the
 * start of an assistant turn) if add_generation_prompt. Writes the text and a
 * NUL terminator to out (cap bytes); *needed (if non-NULL) gets the text's
 * length + 1 whether or not it fitted. Returns 0; MOE_ENOSPC if cap is too
 * small (out then holds nothing useful); MOE_EINVAL for an invalid kind, a
 * NULL role or content, or an unknown role (named in err). */
int moe_chat_apply(int kind, const moe_chat_msg *msgs, int n, int add_generation_prompt, char *out,
                   size_t cap, size_t *needed, moe_err *err);

#endif
