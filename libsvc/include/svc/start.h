/*
 * svc/start.h - a service's start-up, the same in every service's main():
 * its flags plus --log-level and --log-format, the logger (svc/log.h), and
 * graceful stop on SIGTERM/SIGINT (svc/signal.h).
 *
 *     static const moe_svc svc = {.name = "router-svc", .args = "--redis URL [options]"};
 *     int main(int argc, char **argv) {
 *         const char *redis = NULL;
 *         const moe_flag flags[] = {{"--redis", "MOE_REDIS", MOE_FLAG_STRING, &redis, "URL",
 *                                    .help = "redis://host:port"},
 *                                   {0}};
 *         const int status = moe_svc_start(&svc, flags, argc, argv);
 *         if (status >= 0) return status;   // --help, a bad flag, no signals
 *         ... serve until *moe_stop_flag() ...
 *     }
 */
#ifndef MOE_SVC_START_H
#define MOE_SVC_START_H

#include "svc/flags.h"

/* A service: its name and what its --help says around the flags. Borrowed. */
typedef struct moe_svc {
    const char *name;   /* "router-svc": the program, and the log component */
    const char *args;   /* after "usage: NAME ": "--redis URL [options]" */
    const char *about;  /* (optional) lines printed under the usage line */
    const char *footer; /* (optional) lines printed after the flags */
} moe_svc;

/* Parses argv with flags (borrowed; ended by {0}) followed by --log-level
 * and --log-format (MOE_LOG_LEVEL, MOE_LOG_FORMAT: "info", "json"), starts
 * the logger on stderr with them (moe_logger_init), then installs the stop
 * signals (moe_stop_install). Returns -1 when the service goes on, else its
 * exit status: 0 after --help; 2 after a bad flag or log setting, reported
 * on stderr; 1 when the signals cannot be installed, logged. */
int moe_svc_start(const moe_svc *svc, const moe_flag *flags, int argc, char **argv);

#endif
