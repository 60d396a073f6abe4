/* One-line structured logging to stderr: time, level, node, shard, message. */
#ifndef CHORUS_LOG_H
#define CHORUS_LOG_H

enum ch_log_level { CH_LOG_DEBUG, CH_LOG_INFO, CH_LOG_WARN, CH_LOG_ERROR };

/* Sets the process-wide node id printed in every line and the minimum level. */
void ch_log_setup(unsigned node_id, enum ch_log_level min_level);

/* Parses "debug" | "info" | "warn" | "error"; returns -1 when unknown. */
int ch_log_level_parse(const char *name);

/*
 * Logs one line: `2026-11-22T11:00:00.123Z INFO node=2 shard=5 msg...`.
 * shard < 0 omits the shard field.
 */
void ch_log(enum ch_log_level level, int shard, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CH_DEBUG(shard, ...) ch_log(CH_LOG_DEBUG, (shard), __VA_ARGS__)
#define CH_INFO(shard, ...) ch_log(CH_LOG_INFO, (shard), __VA_ARGS__)
#define CH_WARN(shard, ...) ch_log(CH_LOG_WARN, (shard), __VA_ARGS__)
#define CH_ERROR(shard, ...) ch_log(CH_LOG_ERROR, (shard), __VA_ARGS__)

#endif
