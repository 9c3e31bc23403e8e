/* tests/unit/main.c - runs one registered unit test, or lists them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>
#include <unistd.h>

#include "test.h"

#define MAX_TESTS 1024

static struct {
    const char *name;
    moe_test_fn fn;
} tests[MAX_TESTS];
static int n_tests;

void moe__test_register(const char *name, moe_test_fn fn) {
    if (n_tests == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        abort();
    }
    tests[n_tests].name = name;
    tests[n_tests].fn = fn;
    n_tests++;
}

static int cmp_test(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int test_run_child(void (*fn)(void), char *out, size_t cap) {
    int p[2];
    ASSERT(pipe(p) == 0);
    fflush(NULL);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        dup2(p[1], 1);
        dup2(p[1], 2);
        fn();
        _exit(0);
    }
    close(p[1]);
    size_t n = 0;
    for (ssize_t r; n + 1 < cap && (r = read(p[0], out + n, cap - 1 - n)) > 0;) n += (size_t)r;
    out[n] = 0;
    close(p[0]);
    int st = 0;
    ASSERT(waitpid(pid, &st, 0) == pid);
    return st;
}

int main(int argc, char **argv) {
    qsort(tests, n_tests, sizeof tests[0], cmp_test);
    if (argc == 2 && !strcmp(argv[1], "--list")) {
        for (int i = 0; i < n_tests; i++) printf("%s\n", tests[i].name);
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr,
                "usage: %s --list | TEST_NAME\n"
                "Runs one unit test (tests/run.sh runs them all, one process each).\n",
                argv[0]);
        return 2;
    }
    for (int i = 0; i < n_tests; i++) {
        if (!strcmp(tests[i].name, argv[1])) {
            tests[i].fn();
            return 0;
        }
    }
    fprintf(stderr, "no test named '%s'\n", argv[1]);
    return 2;
}
