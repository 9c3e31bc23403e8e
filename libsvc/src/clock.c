/* clock.c - clocks and time stamps (see svc/clock.h). */
#include <stdio.h>
#include <time.h>

#include "svc/clock.h"

int64_t moe_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t moe_mono_ms(void) {
    return moe_mono_ns() / 1000000;
}

int64_t moe_mono_us(void) {
    return moe_mono_ns() / 1000;
}

double moe_mono_s(void) {
    return (double)moe_mono_ns() * 1e-9;
}

int64_t moe_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *moe_log_stamp(char *buf, size_t cap) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char day[24];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, cap, "%s.%03ldZ", day, ts.tv_nsec / 1000000);
    return buf;
}
