/*
 * moectl - the moemesh command-line tool: inspect models, make test models,
 * compute logits, generate, benchmark. JSON on stdout, errors on stderr.
 */
#include <string.h>

#include "moectl.h"

/* The commands: each parses its own flags (see 'moectl COMMAND --help'). */
static const moectl_cmd cmds[] = {
    {"info", "moectl info", cmd_info, "MODEL.gguf [--json]",
     "MODEL.gguf [--json]          architecture, hyperparameters, tensors"},
    {"logits", "moectl logits", cmd_logits, "MODEL.gguf --tokens 1,2,3 [options]",
     "MODEL.gguf --tokens 1,2,3    logits after every prompt position"},
    {"generate", "moectl generate", cmd_generate,
     "MODEL.gguf (--tokens 1,2,3 | --prompt TEXT | --chat FILE.json)\n"
     "                       [-n 16] [sampling] [options]",
     "MODEL.gguf --tokens 1,2,3 -n N   greedy (or --temp) continuation"},
    {"bench", "moectl bench", cmd_bench,
     "MODEL.gguf [--prompt 128] [--gen 64] [--batch B] [--reps R]\n"
     "                    [options]",
     "MODEL.gguf [--prompt P] [--gen G] [--batch B]   tokens/s"},
    {"mkmodel", "moectl mkmodel", cmd_mkmodel,
     "--arch A [--dtype D] [--seed S] [dims...] -o OUT.gguf",
     "--arch A --dtype D --seed S -o OUT.gguf   random-weight test model"},
    {"expert", "moectl expert", cmd_expert,
     "MODEL.gguf --layer L --input FILE [--workers H:P,...] "
     "[--wire f32|bf16]\n                     [--threads N]",
     "MODEL.gguf --layer L --input FILE [--workers H:P,...]   one layer's experts"},
    {"tokenize", "moectl tokenize", cmd_tokenize,
     "MODEL.gguf (--text TEXT | --texts FILE.json) [--special] "
     "[--bos]\n                       [--bench R]",
     "MODEL.gguf --text TEXT | --texts FILE.json   text -> token ids"},
    {"detokenize", "moectl detokenize", cmd_detokenize,
     "MODEL.gguf (--tokens 1,2,3 | --results FILE.json)\n"
     "                         [--skip-special] [--continuation]",
     "MODEL.gguf --tokens 1,2,3                  token ids -> text"},
    {"chat-template", "moectl chat-template", cmd_chat_template,
     "(--model MODEL.gguf | --template-file F | --name NAME)\n"
     "                            --messages FILE.json [--gen]",
     "(--model M.gguf | --template-file F | --name N) --messages FILE.json [--gen]\n"
     "                                                        messages -> chat prompt text"},
    {"redis-acl", "moectl redis-acl", cmd_redis_acl,
     "[--prefix P] [--password-dir DIR] [--aclfile] [--select]",
     "[--prefix P] [--password-dir DIR] [--aclfile]   Redis ACL users, one per role"},
    {"tenant", "moectl tenant", cmd_tenant, "add|list|revoke|set-limits|hash [NAME] [options]",
     "add|list|revoke|set-limits|hash ...   tenants and their API keys in Redis"},
};

static void usage(FILE *out) {
    fputs("usage: moectl COMMAND [options]\n\ncommands:\n", out);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(out, "  %-9s %s\n", cmds[i].name, cmds[i].synopsis);
    fputs("\n'moectl COMMAND --help' describes each command. Output is JSON on stdout;\n"
          "errors go to stderr with a non-zero exit status.\n",
          out);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(&cmds[i], argc - 1, argv + 1);
    fprintf(stderr, "moectl: error: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
