/*
 * quantize.c - llama-quantize as the reference llama.cpp does it: its
 * llama_model_quantize from node-llama-cpp's prebuilt libllama (the pinned
 * release v0.5.0), for tests/integration/quant_mixes.sh.
 *
 *     quantize IN.gguf OUT.gguf FTYPE [--pure]
 *
 * FTYPE: a llama_ftype number (10 Q2_K, 12 Q3_K_M, 15 Q4_K_M, 17 Q5_K_M);
 * --pure: every matrix in its base type. One thread, no imatrix. Exit 0 on
 * success. Built against the library without its headers (which the npm
 * package does not ship): the declarations below are llama.h's at v0.5.0.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama.h (v0.5.0): struct llama_model_quantize_params, field for field;
 * the enums are int-sized */
struct llama_model_quantize_params {
    int32_t nthread;
    int ftype;                /* enum llama_ftype */
    int output_tensor_type;   /* enum ggml_type */
    int token_embedding_type; /* enum ggml_type */
    bool allow_requantize;
    bool quantize_output_tensor;
    bool only_copy;
    bool pure;
    bool keep_split;
    bool dry_run;
    const void *imatrix;
    const void *kv_overrides;
    const void *tt_overrides;
    const int32_t *prune_layers;
    size_t max_buf_size;
};

void llama_backend_init(void);
struct llama_model_quantize_params llama_model_quantize_default_params(void);
uint32_t llama_model_quantize(const char *fname_inp, const char *fname_out,
                              const struct llama_model_quantize_params *params);

enum { LLAMA_FTYPE_MOSTLY_Q8_0 = 7, GGML_TYPE_COUNT = 43 };

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5 || (argc == 5 && strcmp(argv[4], "--pure"))) {
        fprintf(stderr, "usage: quantize IN.gguf OUT.gguf FTYPE [--pure]\n");
        return 2;
    }
    llama_backend_init();
    struct llama_model_quantize_params p = llama_model_quantize_default_params();
    /* the defaults as v0.5.0 sets them: a layout that does not match would
     * show here */
    if (p.nthread != 0 || p.ftype != LLAMA_FTYPE_MOSTLY_Q8_0 ||
        p.output_tensor_type != GGML_TYPE_COUNT || p.token_embedding_type != GGML_TYPE_COUNT ||
        !p.quantize_output_tensor || p.pure || p.imatrix || p.max_buf_size == 0) {
        fprintf(stderr, "quantize: llama_model_quantize_params is not v0.5.0's\n");
        return 1;
    }
    p.ftype = atoi(argv[3]);
    p.nthread = 1;
    p.pure = argc == 5;
    return llama_model_quantize(argv[1], argv[2], &p) ? 1 : 0;
}
