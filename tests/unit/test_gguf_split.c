/* test_gguf_split.c - split models (gguf_split.c, moe_gguf_writer_write_split):
 * names as llama.cpp derives them, a round trip through parts, the split keys
 * of each part, and the errors: a tensor in two parts, a part of another
 * count, a part opened first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "moe/gguf.h"
#include "test.h"

/* A writer with two keys and n f32 tensors "<prefix>.<i>" of 8 values
 * i*8 .. i*8+7. */
static moe_gguf_writer *split_writer(const char *prefix, int n) {
    moe_gguf_writer *w = moe_gguf_writer_create();
    ASSERT(w);
    ASSERT_EQ_INT(moe_gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    ASSERT_EQ_INT(moe_gguf_writer_set_u32(w, "llama.block_count", 7), 0);
    for (int i = 0; i < n; i++) {
        float v[8];
        for (int j = 0; j < 8; j++) v[j] = (float)(i * 8 + j);
        char name[32];
        snprintf(name, sizeof name, "%s.%d", prefix, i);
        const int64_t ne[1] = {8};
        ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, name, MOE_DTYPE_F32, 1, ne, v), 0);
    }
    return w;
}

static void split_dir(char *dir) {
    strcpy(dir, "/tmp/moe_gguf_split_XXXXXX");
    ASSERT(mkdtemp(dir));
}

static void rm_dir(const char *dir) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    ASSERT_EQ_INT(system(cmd), 0);
}

TEST(gguf_split_path) {
    char buf[64];
    ASSERT_EQ_INT(moe_gguf_split_path(buf, sizeof buf, "/m/x", 0, 3), 24);
    ASSERT(!strcmp(buf, "/m/x-00001-of-00003.gguf"));
    ASSERT_EQ_INT(moe_gguf_split_path(buf, sizeof buf, "x", 11, 12), 21);
    ASSERT(!strcmp(buf, "x-00012-of-00012.gguf"));
    ASSERT_EQ_INT(moe_gguf_split_path(buf, 10, "x", 0, 1), 0); /* does not fit */
}

TEST(gguf_split_roundtrip) {
    char dir[64], path[128], part[128];
    moe_err err;
    split_dir(dir);
    moe_gguf_writer *w = split_writer("t", 5);
    snprintf(path, sizeof path, "%s/m.gguf", dir);
    ASSERT_EQ_INT(moe_gguf_writer_write_split(w, path, 2, &err), 3);
    moe_gguf_writer_destroy(w);

    /* each part carries the split keys; only the first the others */
    for (int i = 0; i < 3; i++) {
        moe_gguf *p;
        snprintf(part, sizeof part, "%s/m-%05d-of-00003.gguf", dir, i + 1);
        ASSERT_EQ_INT(moe_gguf_open(&p, part, &err), 0);
        const moe_gguf_kv *no = moe_gguf_find_kv(p, "split.no"),
                          *count = moe_gguf_find_kv(p, "split.count"),
                          *nt = moe_gguf_find_kv(p, "split.tensors.count");
        ASSERT(no && count && nt);
        ASSERT_EQ_INT(no->type, MOE_GGUF_TYPE_UINT16);
        ASSERT_EQ_INT(count->type, MOE_GGUF_TYPE_UINT16);
        ASSERT_EQ_INT(nt->type, MOE_GGUF_TYPE_INT32);
        ASSERT_EQ_INT(no->v.u64, i);
        ASSERT_EQ_INT(count->v.u64, 3);
        ASSERT_EQ_INT(nt->v.i64, 5);
        ASSERT_EQ_INT(moe_gguf_find_kv(p, "general.architecture") != NULL, i == 0);
        ASSERT_EQ_INT(moe_gguf_n_tensors(p), i < 2 ? 2 : 1);
        moe_gguf_close(p);
    }

    moe_gguf *g;
    snprintf(part, sizeof part, "%s/m-00001-of-00003.gguf", dir);
    ASSERT_EQ_INT(moe_gguf_open_split(&g, part, &err), 0);
    ASSERT_EQ_INT(moe_gguf_n_parts(g), 3);
    ASSERT_EQ_INT(moe_gguf_n_tensors(g), 5);
    uint32_t v;
    ASSERT_EQ_INT(moe_gguf_get_u32(g, "llama.block_count", &v), 0);
    ASSERT_EQ_INT(v, 7);
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "t.%d", i);
        const moe_gguf_tensor *t = moe_gguf_find_tensor(g, name);
        ASSERT(t);
        ASSERT_EQ_INT(t->part, i / 2);
        ASSERT_NEAR(((const float *)t->data)[7], i * 8 + 7, 0);
        ASSERT(moe_gguf_part_size(g, t->part) > 0);
    }
    ASSERT_EQ_INT(moe_gguf_part_size(g, 3), 0);
    moe_gguf_close(g);

    /* the second part is refused, naming the first */
    snprintf(part, sizeof part, "%s/m-00002-of-00003.gguf", dir);
    ASSERT_EQ_INT(moe_gguf_open_split(&g, part, &err), MOE_EINVAL);
    ASSERT(strstr(err.msg, "open the first part"));

    /* a missing part is named */
    ASSERT_EQ_INT(unlink(part), 0);
    snprintf(part, sizeof part, "%s/m-00001-of-00003.gguf", dir);
    ASSERT_EQ_INT(moe_gguf_open_split(&g, part, &err), MOE_EIO);
    ASSERT(strstr(err.msg, "split part 2 of 3") && strstr(err.msg, "m-00002-of-00003.gguf"));
    rm_dir(dir);
}

TEST(gguf_split_one_part_and_single_file) {
    char dir[64], path[128];
    moe_err err;
    moe_gguf *g;
    split_dir(dir);
    moe_gguf_writer *w = split_writer("t", 3);
    snprintf(path, sizeof path, "%s/one", dir); /* no .gguf: the prefix as given */
    ASSERT_EQ_INT(moe_gguf_writer_write_split(w, path, 10, &err), 1);
    snprintf(path, sizeof path, "%s/one-00001-of-00001.gguf", dir);
    ASSERT_EQ_INT(moe_gguf_open_split(&g, path, &err), 0);
    ASSERT_EQ_INT(moe_gguf_n_parts(g), 1);
    ASSERT_EQ_INT(moe_gguf_n_tensors(g), 3);
    moe_gguf_close(g);
    snprintf(path, sizeof path, "%s/plain.gguf", dir);
    ASSERT_EQ_INT(moe_gguf_writer_write(w, path, &err), 0);
    ASSERT_EQ_INT(moe_gguf_open_split(&g, path, &err), 0);
    ASSERT_EQ_INT(moe_gguf_n_parts(g), 1);
    ASSERT_EQ_INT(moe_gguf_find_tensor(g, "t.2")->part, 0);
    moe_gguf_close(g);
    ASSERT_EQ_INT(moe_gguf_writer_write_split(w, path, 0, &err), MOE_EINVAL);
    moe_gguf_writer_destroy(w);
    rm_dir(dir);
}

TEST(gguf_split_foreign_parts) {
    char dir[64], path[128], a[128], b[128];
    moe_err err;
    moe_gguf *g;
    split_dir(dir);
    /* A: [t.0 t.1] [t.2 t.3]; B: [x.0 x.1] [t.1 x.3]. B's second part beside
     * A's first: the counts agree, t.1 is in both */
    moe_gguf_writer *w = split_writer("t", 4);
    snprintf(path, sizeof path, "%s/a.gguf", dir);
    ASSERT_EQ_INT(moe_gguf_writer_write_split(w, path, 2, &err), 2);
    moe_gguf_writer_destroy(w);
    w = moe_gguf_writer_create();
    const int64_t ne[1] = {8};
    const float v[8] = {0};
    const char *names[4] = {"x.0", "x.1", "t.1", "x.3"};
    for (int i = 0; i < 4; i++)
        ASSERT_EQ_INT(moe_gguf_writer_add_tensor(w, names[i], MOE_DTYPE_F32, 1, ne, v), 0);
    snprintf(path, sizeof path, "%s/b.gguf", dir);
    ASSERT_EQ_INT(moe_gguf_writer_write_split(w, path, 2, &err), 2);
    moe_gguf_writer_destroy(w);
    snprintf(a, sizeof a, "%s/a-00002-of-00002.gguf", dir);
    snprintf(b, sizeof b, "%s/b-00002-of-00002.gguf", dir);
    ASSERT_EQ_INT(rename(b, a), 0);
    snprintf(a, sizeof a, "%s/a-00001-of-00002.gguf", dir);
    ASSERT_EQ_INT(moe_gguf_open_split(&g, a, &err), MOE_EFORMAT);
    ASSERT(strstr(err.msg, "tensor 't.1' is in part 1 and again in part 2"));

    /* a part of a split in 3 beside a first part that says 2 */
    w = split_writer("t", 4);
    snprintf(path, sizeof path, "%s/c.gguf", dir);
    ASSERT_EQ_INT(moe_gguf_writer_write_split(w, path, 1, &err), 4);
    moe_gguf_writer_destroy(w);
    snprintf(b, sizeof b, "%s/c-00002-of-00004.gguf", dir);
    snprintf(path, sizeof path, "%s/a-00002-of-00002.gguf", dir);
    ASSERT_EQ_INT(rename(b, path), 0);
    ASSERT_EQ_INT(moe_gguf_open_split(&g, a, &err), MOE_EFORMAT);
    ASSERT(strstr(err.msg, "split.count is 4, the first part says 2"));
    rm_dir(dir);
}
