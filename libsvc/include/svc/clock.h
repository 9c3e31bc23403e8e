/* svc/clock.h - the clocks every service reads.
 *
 *   int64_t t0 = moe_mono_ms();          // intervals, deadlines, backoff
 *   ...
 *   if (moe_mono_ms() - t0 > timeout_ms) ...
 *   char ts[32]; moe_log_stamp(ts, sizeof ts);   // "2026-11-22T14:40:01.123Z"
 */
#ifndef MOE_SVC_CLOCK_H
#define MOE_SVC_CLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Milliseconds of CLOCK_MONOTONIC: for intervals and deadlines. */
int64_t moe_mono_ms(void);
/* Microseconds of CLOCK_MONOTONIC. */
int64_t moe_mono_us(void);
/* Nanoseconds of CLOCK_MONOTONIC (benchmarks). */
int64_t moe_mono_ns(void);
/* Seconds of CLOCK_MONOTONIC, with the clock's resolution (timings to print). */
double moe_mono_s(void);
/* Milliseconds of the wall clock (Redis scores, time stamps in documents). */
int64_t moe_wall_ms(void);
/* The wall clock for log lines, UTC: "2026-11-22T14:40:01.123Z" (buf >= 32 bytes). */
const char *moe_log_stamp(char *buf, size_t cap);

#endif
