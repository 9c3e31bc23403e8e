/* start.c - a service's start-up: flags, logger, stop signals (see svc/start.h). */
#include "svc/log.h"
#include "svc/signal.h"
#include "svc/start.h"

int moe_svc_start(const moe_svc *svc, const moe_flag *flags, int argc, char **argv) {
    const char *level = "info", *format = "json";
    const moe_flag all[] = {{.include = flags},
                            {"--log-level", "MOE_LOG_LEVEL", MOE_FLAG_STRING, &level, "LEVEL",
                             .help = "debug, info, warn or error", .check = moe_logger_check_level},
                            {"--log-format", "MOE_LOG_FORMAT", MOE_FLAG_STRING, &format, "F",
                             .help = "json (one object a line) or text",
                             .check = moe_logger_check_format},
                            {0}};
    const moe_flagset fs = {.prog = svc->name,
                            .args = svc->args,
                            .about = svc->about,
                            .footer = svc->footer,
                            .flags = all};
    const int status = moe_flags_run(&fs, argc, argv, stdout, stderr);
    if (status >= 0) return status;
    moe_err err;
    if (moe_logger_init(&(moe_logger_cfg){.out = stderr, .level = level, .format = format}, &err) <
        0) {
        fprintf(stderr, "%s: error: %s\n", svc->name, err.msg);
        return 2;
    }
    if (moe_stop_install(&err) < 0) {
        moe_log(MOE_LOG_ERROR, svc->name, "%s", err.msg);
        return 1;
    }
    return -1;
}
