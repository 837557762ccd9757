/* store.h — durable per-endpoint message queues for ledge-hub: append-only segment files with
 * group commit, at-least-once in-order delivery, TTL, an on-disk size cap and start-up salvage.
 * Single-threaded, no internal threads or timers: the hub drives it from its event loop.
 * Design, on-disk format and guarantees: src/store/README.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/errors.h"
#include "base/str.h"

struct store;
struct queue;

/* When the hub may acknowledge a stored message to its sender (README "Durability"). */
enum store_sync_policy {
    /* Group commit: ack only after store_sync() returned 0 for a batch that contains the
     * message. Survives power loss. */
    STORE_SYNC_ALWAYS = 0,
    /* Ack right after queue_append(); store_tick() syncs every sync_interval_ms. Survives a
     * crash of the process (data is in the page cache); a power loss may lose the last
     * sync_interval_ms of acknowledged messages. */
    STORE_SYNC_INTERVAL,
};

#define STORE_NAME_MAX 200                      /* bytes of a queue name */
#define STORE_MESSAGE_MAX_DEFAULT (264u * 1024) /* 256 KiB of message + 8 KiB of envelope */
#define STORE_MESSAGE_MAX_LIMIT (16u << 20)     /* format limit of one record's payload */
#define STORE_SEGMENT_DEFAULT (8u << 20)
#define STORE_SEGMENT_MIN (64u * 1024)
#define STORE_SEGMENT_MAX (1u << 30)
#define STORE_QUEUES_DEFAULT 1024
#define STORE_INFLIGHT_DEFAULT 1024
#define STORE_INFLIGHT_LIMIT (1u << 20)
#define STORE_SYNC_INTERVAL_DEFAULT 1000       /* ms */
#define STORE_CHECKPOINT_INTERVAL_DEFAULT 1000 /* ms */
#define STORE_REPORT_NOTES_MAX 64

/* Zero fields mean "the default". */
struct store_options {
    uint64_t max_bytes;         /* cap on segment bytes on disk, store-wide; 0 = unlimited */
    uint64_t segment_bytes;     /* roll to a new segment file beyond this (clamped, see README) */
    uint32_t max_message_bytes; /* largest message queue_append() accepts */
    uint32_t max_queues;        /* store_queue() refuses to create more (-EMFILE) */
    uint32_t inflight_max;      /* per queue: delivered-but-unacked records */
    enum store_sync_policy sync;
    uint32_t sync_interval_ms;       /* STORE_SYNC_INTERVAL: store_tick() syncs this often */
    uint32_t checkpoint_interval_ms; /* store_tick() persists a changed ack floor this often */
};

void store_options_init(struct store_options *o);
/* "always" or "interval"; -EINVAL otherwise. */
int store_sync_policy_from_string(const char *s, enum store_sync_policy *ret);
const char *store_sync_policy_to_string(enum store_sync_policy p);

/* What store_open() found and repaired. Counts are over the whole store; notes say where. */
struct store_report {
    uint32_t queues;          /* queue directories loaded */
    uint32_t segments;        /* segment files kept */
    uint64_t records;         /* valid records found */
    uint64_t pending;         /* of which not acked yet: they will be delivered */
    uint64_t truncated_bytes; /* invalid tails cut off segment files (torn writes) */
    uint64_t corrupt_bytes;   /* bytes skipped inside segments (bad CRC, garbage) */
    uint32_t corrupt_regions;
    uint32_t files_removed;    /* segment files without any valid record, stale temp files */
    uint32_t files_ignored;    /* unknown names, left untouched */
    uint32_t checkpoints_lost; /* missing or invalid: that queue restarts from its oldest record */
    uint32_t queues_failed;    /* queue directories that could not be loaded (see notes) */
    struct lstrv notes;        /* one human line per finding, at most STORE_REPORT_NOTES_MAX */
    uint32_t notes_dropped;    /* findings beyond that */
    struct lerr error;         /* why store_open() failed */
};
void store_report_free(struct store_report *r);
/* True when salvage found anything worth a warning. */
bool store_report_has_findings(const struct store_report *r);

/* Open (create) the store in dir, take its lock (-EBUSY if another process holds it), load and
 * salvage every queue found. report may be NULL; if not, it is initialised here and must be
 * freed with store_report_free() whatever the result. Cost: reads every segment once. */
int store_open(const char *dir, const struct store_options *opts, struct store **ret,
               struct store_report *report);
/* Persist changed checkpoints, sync, release everything. Accepts NULL. Returns the first error
 * (the store is freed regardless). */
int store_close(struct store *s);
DEFINE_CLEANUP(struct store *, store_close)
#define _cleanup_store_ _cleanup_(store_closep)

/* The queue named name (any bytes but NUL, at most STORE_NAME_MAX, e.g. "upstream/p0"),
 * created durably if it does not exist. -EINVAL empty name, -ENAMETOOLONG, -EMFILE beyond
 * max_queues. The pointer stays valid until store_queue_remove() or store_close(). */
int store_queue(struct store *s, const char *name, struct queue **ret);
/* The loaded queue named name, or NULL. */
struct queue *store_queue_find(struct store *s, const char *name);
/* Queues loaded or created, in no particular order (for finding orphans after a deployment). */
size_t store_queue_count(const struct store *s);
struct queue *store_queue_at(const struct store *s, size_t i);
/* Delete q and its files (an endpoint that no longer exists). q is freed. */
int store_queue_remove(struct store *s, struct queue *q);

/* Make every queue_append() so far durable: fdatasync each written segment, fsync directories
 * that gained a file. On failure, do not acknowledge the batch: the segment concerned is
 * retired (new appends go to a new file) because a failed fsync cannot be retried safely. */
int store_sync(struct store *s);

/* store_sync() in three steps, so the fsyncs can run on another thread while the event loop goes
 * on appending (what is appended meanwhile belongs to the next batch):
 *   store_sync_prepare()  on the store's thread: takes the current dirty set (duplicated fds of
 *                         the written segments, the directories that gained files) — the
 *                         acknowledgements to send after it are exactly those of the appends
 *                         made so far;
 *   store_sync_run()      on any thread: fdatasync/fsync them; touches nothing but the batch;
 *   store_sync_finish()   on the store's thread: apply the outcome as store_sync() would (a
 *                         failed segment is retired) and free the batch. Returns 0 or the first
 *                         error: then do not acknowledge the batch.
 * An empty dirty set gives a batch with nothing to do. */
struct store_sync_batch;
int store_sync_prepare(struct store *s, struct store_sync_batch **ret);
void store_sync_run(struct store_sync_batch *b);
int store_sync_finish(struct store *s, struct store_sync_batch *b);
/* Periodic maintenance (call every 100 ms - 1 s): drop segments whose records are all acked or
 * expired, persist ack floors due for a checkpoint, and under STORE_SYNC_INTERVAL sync when
 * due. now_ms is the wall clock (TTLs are wall-clock) and also paces syncs and checkpoints.
 * Returns the first error; all queues are visited regardless. */
int store_tick(struct store *s, int64_t now_ms);

/* Change the cap on bytes on disk (a redeployed storeLimits.maxSizeBytes; 0 = none). A cap
 * below what is stored already refuses appends until acks and expiry bring it under. */
void store_set_max_bytes(struct store *s, uint64_t max_bytes);

struct store_stats {
    uint64_t bytes;         /* segment bytes on disk, all queues */
    uint64_t max_bytes;     /* the cap, 0 = none */
    uint64_t segment_bytes; /* effective segment size */
    uint64_t mem_bytes;     /* heap the store holds (queues, segment tables, windows, buffer) */
    uint64_t syncs;         /* fdatasync/fsync calls */
    uint64_t sync_errors;
    uint64_t checkpoints; /* checkpoint files written */
    uint32_t queues;
    enum store_sync_policy sync;
};
void store_get_stats(const struct store *s, struct store_stats *ret);

const char *queue_name(const struct queue *q);

/* Append one message. enqueue_ms and expiry_ms are wall-clock ms (expiry 0 = never). On
 * success the message is in the page cache (and will be delivered) but durable only after
 * store_sync(). -EMSGSIZE beyond max_message_bytes; -ENOSPC when the cap would be exceeded or
 * the disk is full (the file is left as it was; retry later). */
int queue_append(struct queue *q, const void *msg, size_t len, int64_t enqueue_ms,
                 int64_t expiry_ms, uint64_t *ret_seq);

struct queue_record {
    uint64_t seq; /* pass to queue_ack() */
    int64_t enqueue_ms;
    int64_t expiry_ms; /* 0 = never */
    const void *data;  /* valid until the next queue_next() on any queue of this store */
    size_t len;
    bool redelivery; /* delivered before and rewound by queue_rewind_inflight() (after a
                      * restart, unacked records come again without this flag) */
};

/* The next record to deliver, in seq order: returns 1 and fills ret; 0 when there is nothing
 * to deliver now (queue drained, or inflight_max records await their ack); -errno on an I/O
 * error. Expired records are skipped and counted; corrupt ones skipped and counted. */
int queue_next(struct queue *q, int64_t now_ms, struct queue_record *ret);
/* Acknowledge a delivered record; any order within the window. Acking a seq already acked or
 * expired is a no-op (0); -EINVAL for a seq never delivered. */
int queue_ack(struct queue *q, uint64_t seq);
/* The subscriber went away: its unacked records will be delivered again, in order. */
void queue_rewind_inflight(struct queue *q);

struct queue_stats {
    uint64_t depth;    /* stored records neither acked nor known to be expired */
    uint64_t inflight; /* delivered, not acked */
    uint64_t bytes;    /* segment bytes on disk */
    uint64_t segments;
    uint64_t acked_seq; /* the ack floor: every seq <= it is acked or expired */
    uint64_t next_seq;  /* seq the next append gets */
    /* counters since store_open() */
    uint64_t appended, delivered, redelivered, acked, expired, refused, corrupt_bytes;
};
void queue_get_stats(const struct queue *q, struct queue_stats *ret);
