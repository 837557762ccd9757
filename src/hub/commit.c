/* commit.c — the hub's group commit: QoS 1 PUBACKs wait until what they acknowledge is on disk.
 *
 * With hub.fsync "always", the fsyncs run on one worker thread while the event loop goes on
 * reading, routing and delivering: the loop seals a batch (store_sync_prepare: the queues written
 * so far, and the PUBACKs waiting for them), hands it to the worker, and when the worker says it
 * is durable (an eventfd), sends those PUBACKs in order. Whatever arrives meanwhile forms the
 * next batch, so batches grow with load and an fsync costs the loop nothing. At most one batch is
 * in flight, which keeps PUBACKs in the order their PUBLISHes came (MQTT-4.6.0-2). The worker
 * touches only the batch: the store itself stays single-threaded.
 *
 * With "interval", PUBACKs go out once the data is in the page cache; store_tick() syncs. */
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "hub/hub.h"
#include "log/log.h"

#define COMP "hub"

struct committer {
    struct hub *h;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct store_sync_batch *todo; /* handed to the worker */
    bool done;                     /* the worker finished todo */
    bool quit;
    int efd;
    struct event *done_ev;
    /* the batch in flight: its PUBACKs, sent when it is durable */
    bool inflight;
    struct store_sync_batch *batch;
    struct pending_ack *acks;
    size_t n_acks, cap_acks;
};

static void *worker(void *arg)
{
    struct committer *cm = arg;
    pthread_mutex_lock(&cm->lock);
    for (;;) {
        while (!cm->todo && !cm->quit)
            pthread_cond_wait(&cm->cond, &cm->lock);
        if (cm->quit)
            break;
        struct store_sync_batch *b = cm->todo;
        pthread_mutex_unlock(&cm->lock);
        store_sync_run(b);
        pthread_mutex_lock(&cm->lock);
        cm->todo = NULL;
        cm->done = true;
        pthread_cond_broadcast(&cm->cond); /* commit_stop() may be waiting for it */
        uint64_t one = 1;
        /* tell the loop; a full counter cannot happen with one batch in flight */
        (void)!write(cm->efd, &one, sizeof(one));
    }
    pthread_mutex_unlock(&cm->lock);
    return NULL;
}

static void send_acks(struct pending_ack *acks, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct conn *c = acks[i].c;
        if (!c)
            continue;
        uint16_t id = acks[i].packet_id;
        uint8_t ack[4] = {0x40, 0x02, (uint8_t)(id >> 8), (uint8_t)id};
        conn_send(c, ack, sizeof(ack));
        c->pending_acks--;
    }
}

/* Nothing of a failed batch is acknowledged. An MQTT 3.1.1 sender retransmits only after a
 * reconnect, so its connection is closed: it sends the batch again (duplicates of what did reach
 * the disk, never a loss). */
static void fail_acks(struct pending_ack *acks, size_t n, int r)
{
    log_error(COMP,
              "store sync failed: %s; %zu acknowledgements withheld, their senders disconnected "
              "to retransmit",
              strerror(-r), n);
    for (size_t i = 0; i < n; i++) {
        struct conn *c = acks[i].c;
        if (!c)
            continue;
        c->pending_acks = 0;
        conn_close(c, "store sync failed");
    }
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct committer *cm = arg;
    struct hub *h = cm->h;
    uint64_t v;
    (void)!read(cm->efd, &v, sizeof(v));
    pthread_mutex_lock(&cm->lock);
    bool done = cm->done;
    cm->done = false;
    pthread_mutex_unlock(&cm->lock);
    if (!done || !cm->inflight)
        return;
    int r = store_sync_finish(h->store, cm->batch);
    cm->batch = NULL;
    cm->inflight = false;
    size_t n = cm->n_acks;
    cm->n_acks = 0;
    if (r < 0)
        fail_acks(cm->acks, n, r);
    else
        send_acks(cm->acks, n);
    /* what piled up meanwhile is the next batch */
    if (h->n_acks || h->store_dirty)
        router_schedule_commit(h);
}

int commit_start(struct hub *h)
{
    if (h->cfg.hub.fsync != CONFIG_FSYNC_ALWAYS)
        return 0;
    struct committer *cm = calloc(1, sizeof(*cm));
    if (!cm)
        return -ENOMEM;
    h->committer = cm;
    cm->h = h;
    pthread_mutex_init(&cm->lock, NULL);
    pthread_cond_init(&cm->cond, NULL);
    cm->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (cm->efd < 0)
        return neg_errno();
    cm->done_ev = event_new(h->base, cm->efd, EV_READ | EV_PERSIST, done_cb, cm);
    if (!cm->done_ev || event_add(cm->done_ev, NULL) < 0)
        return -ENOMEM;
    /* The worker must not take signals meant for the loop (SIGHUP, SIGTERM). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int r = pthread_create(&cm->thread, NULL, worker, cm);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (r != 0)
        return -r;
    cm->thread_started = true;
    return 0;
}

/* Run the worker's batch to its end here (shutdown), then stop the worker. */
void commit_stop(struct hub *h)
{
    struct committer *cm = h->committer;
    if (!cm)
        return;
    if (cm->thread_started) {
        pthread_mutex_lock(&cm->lock);
        while (cm->todo)
            pthread_cond_wait(&cm->cond, &cm->lock);
        cm->quit = true;
        pthread_cond_broadcast(&cm->cond);
        pthread_mutex_unlock(&cm->lock);
        pthread_join(cm->thread, NULL);
    }
    if (cm->inflight) {
        int r = store_sync_finish(h->store, cm->batch);
        if (r < 0)
            fail_acks(cm->acks, cm->n_acks, r);
        else
            send_acks(cm->acks, cm->n_acks);
        cm->inflight = false;
    }
    if (cm->done_ev)
        event_free(cm->done_ev);
    if (cm->efd >= 0)
        close(cm->efd);
    pthread_mutex_destroy(&cm->lock);
    pthread_cond_destroy(&cm->cond);
    free(cm->acks);
    free(cm);
    h->committer = NULL;
}

void commit_conn_gone(struct hub *h, struct conn *c)
{
    struct committer *cm = h->committer;
    for (size_t i = 0; cm && i < cm->n_acks && c->pending_acks; i++)
        if (cm->acks[i].c == c) {
            cm->acks[i].c = NULL;
            c->pending_acks--;
        }
}

/* Seal the current batch. Synchronous store_sync() when there is no worker (interval policy
 * decides elsewhere; this is only reached for "always"). */
void commit_now(struct hub *h)
{
    struct committer *cm = h->committer;
    if (!cm) {
        /* fsync "interval": acknowledged data is in the page cache and store_tick() syncs;
         * "always" without the worker (shutdown): sync here, on the loop */
        if (h->store_dirty && h->cfg.hub.fsync == CONFIG_FSYNC_ALWAYS) {
            int r = store_sync(h->store);
            h->store_dirty = false;
            if (r < 0) {
                fail_acks(h->acks, h->n_acks, r);
                h->n_acks = 0;
                return;
            }
        }
        h->store_dirty = false;
        send_acks(h->acks, h->n_acks);
        h->n_acks = 0;
        return;
    }
    if (cm->inflight)
        return; /* done_cb starts the next batch */
    if (!h->store_dirty) {
        /* nothing new to make durable: these acknowledge what already is */
        send_acks(h->acks, h->n_acks);
        h->n_acks = 0;
        return;
    }
    struct store_sync_batch *b = NULL;
    int r = store_sync_prepare(h->store, &b);
    if (r < 0) {
        fail_acks(h->acks, h->n_acks, r);
        h->n_acks = 0;
        return;
    }
    h->store_dirty = false;
    /* the waiting PUBACKs move with the batch */
    struct pending_ack *tmp = cm->acks;
    size_t tcap = cm->cap_acks;
    cm->acks = h->acks;
    cm->cap_acks = h->cap_acks;
    cm->n_acks = h->n_acks;
    h->acks = tmp;
    h->cap_acks = tcap;
    h->n_acks = 0;
    cm->batch = b;
    cm->inflight = true;
    pthread_mutex_lock(&cm->lock);
    cm->todo = b;
    pthread_cond_broadcast(&cm->cond);
    pthread_mutex_unlock(&cm->lock);
}
