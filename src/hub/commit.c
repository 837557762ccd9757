/* commit.c — the hub's group commit and the acknowledgements that wait for it (commit.h).
 *
 * Acknowledgements wait in order until what they acknowledge is on disk. With hub.fsync "always"
 * the fsyncs run on one worker thread while the event loop goes on reading, routing and
 * delivering: the loop seals a batch (store_sync_prepare: the queues written so far, and the
 * acknowledgements waiting for them), hands it to the worker, and when the worker says it is
 * durable (an eventfd), answers those acknowledgements in order through each client's head.
 * Whatever arrives meanwhile forms the next batch, so batches grow with load and an fsync costs
 * the loop nothing. At most one batch is in flight, which keeps acknowledgements in the order
 * their messages came (MQTT-4.6.0-2). The worker touches only the batch: the store itself stays
 * single-threaded. The commit runs at the loop's lowest event priority, so a batch carries every
 * connection that was readable in that loop pass.
 *
 * With "interval", acknowledgements go out once the data is in the page cache; store_tick() syncs.
 */
#include "commit.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log/log.h"
#include "store/store.h"

#define COMP "hub"

struct pending_ack {
    struct hub_client *c; /* NULL once the client is gone */
    uint32_t token;
};

struct ack_list {
    struct pending_ack *v;
    size_t n, cap;
};

struct committer {
    struct hub *h;
    struct event *ev; /* runs commit_run() */
    bool scheduled;
    bool dirty;              /* appends since the last sealed batch */
    struct ack_list waiting; /* for the next batch */
    struct ack_list sealed;  /* of the batch being made durable */
    /* the worker (fsync "always") */
    bool has_worker;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct store_sync_batch *todo; /* handed to the worker */
    bool done;                     /* the worker finished todo */
    bool quit;
    int efd;
    struct event *done_ev;
    bool inflight; /* a batch is with the worker */
    struct store_sync_batch *batch;
};

static void schedule(struct committer *cm);

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

/* The waiting acknowledgements become the sealed batch's (the arrays swap: no copy). */
static void seal_acks(struct committer *cm)
{
    struct ack_list t = cm->sealed;
    cm->sealed = cm->waiting;
    cm->waiting = t;
    cm->waiting.n = 0;
}

static void answer_sealed(struct committer *cm)
{
    for (size_t i = 0; i < cm->sealed.n; i++) {
        struct hub_client *c = cm->sealed.v[i].c;
        if (!c)
            continue;
        c->pending_acks--;
        c->ops->acked(c, cm->sealed.v[i].token);
    }
    cm->sealed.n = 0;
}

/* Nothing of a failed batch is acknowledged. An MQTT 3.1.1 sender retransmits only after a
 * reconnect, so its connection is closed: it sends the batch again (duplicates of what did reach
 * the disk, never a loss). Closing a client drops its other waiting acknowledgements too
 * (commit_client_gone). */
static void fail_sealed(struct committer *cm, int r)
{
    log_error(COMP,
              "store sync failed: %s; %zu acknowledgements withheld, their senders disconnected "
              "to retransmit",
              strerror(-r), cm->sealed.n);
    for (size_t i = 0; i < cm->sealed.n; i++) {
        struct hub_client *c = cm->sealed.v[i].c;
        if (!c)
            continue;
        cm->sealed.v[i].c = NULL;
        c->pending_acks--;
        c->ops->close(c, "store sync failed", true);
    }
    cm->sealed.n = 0;
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct committer *cm = arg;
    uint64_t v;
    (void)!read(cm->efd, &v, sizeof(v));
    pthread_mutex_lock(&cm->lock);
    bool done = cm->done;
    cm->done = false;
    pthread_mutex_unlock(&cm->lock);
    if (!done || !cm->inflight)
        return;
    int r = store_sync_finish(cm->h->store, cm->batch);
    cm->batch = NULL;
    cm->inflight = false;
    if (r < 0)
        fail_sealed(cm, r);
    else
        answer_sealed(cm);
    /* what piled up meanwhile is the next batch */
    if (cm->waiting.n || cm->dirty)
        schedule(cm);
}

/* Seal the current batch: hand it to the worker, or (no worker: fsync "interval", or shutdown)
 * answer what is true now. */
static void commit_run(struct committer *cm)
{
    struct hub *h = cm->h;
    cm->scheduled = false;
    if (!cm->has_worker || !cm->thread_started) {
        /* "interval": acknowledged data is in the page cache and store_tick() syncs; "always"
         * without the worker (shutdown): sync here, on the loop */
        int r = 0;
        if (cm->dirty && h->cfg.hub.fsync == CONFIG_FSYNC_ALWAYS)
            r = store_sync(h->store);
        cm->dirty = false;
        seal_acks(cm);
        if (r < 0)
            fail_sealed(cm, r);
        else
            answer_sealed(cm);
        return;
    }
    if (cm->inflight)
        return; /* done_cb starts the next batch */
    if (!cm->dirty) {
        /* nothing new to make durable: these acknowledge what already is */
        seal_acks(cm);
        answer_sealed(cm);
        return;
    }
    struct store_sync_batch *b = NULL;
    int r = store_sync_prepare(h->store, &b);
    seal_acks(cm);
    if (r < 0) {
        fail_sealed(cm, r);
        return;
    }
    cm->dirty = false;
    cm->batch = b;
    cm->inflight = true;
    pthread_mutex_lock(&cm->lock);
    cm->todo = b;
    pthread_cond_broadcast(&cm->cond);
    pthread_mutex_unlock(&cm->lock);
}

static void run_cb(evutil_socket_t fd, short what, void *arg)
{
    commit_run(arg);
}

static void schedule(struct committer *cm)
{
    if (cm->scheduled)
        return;
    cm->scheduled = true;
    /* After every callback already active in this loop iteration: one sync per batch. */
    event_active(cm->ev, 0, 0);
}

int commit_start(struct hub *h)
{
    struct committer *cm = calloc(1, sizeof(*cm));
    if (!cm)
        return -ENOMEM;
    h->commit = cm;
    cm->h = h;
    cm->efd = -1;
    cm->ev = event_new(h->base, -1, 0, run_cb, cm);
    if (!cm->ev)
        return -ENOMEM;
    /* Lowest priority: every readable connection of this loop pass is routed first, so one batch
     * carries all of them. */
    event_priority_set(cm->ev, HUB_PRIORITY_LOW);
    if (h->cfg.hub.fsync != CONFIG_FSYNC_ALWAYS)
        return 0;
    cm->has_worker = true;
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

void commit_stop(struct hub *h)
{
    struct committer *cm = h->commit;
    if (!cm)
        return;
    /* What was accepted gets its acknowledgement before the store closes: seal what waits, let
     * the worker finish its batch, then sync what was left, here. */
    if (cm->ev && h->store)
        commit_run(cm);
    if (cm->thread_started) {
        pthread_mutex_lock(&cm->lock);
        while (cm->todo)
            pthread_cond_wait(&cm->cond, &cm->lock);
        cm->quit = true;
        pthread_cond_broadcast(&cm->cond);
        pthread_mutex_unlock(&cm->lock);
        pthread_join(cm->thread, NULL);
        cm->thread_started = false;
    }
    if (cm->inflight) {
        int r = store_sync_finish(h->store, cm->batch);
        cm->inflight = false;
        if (r < 0)
            fail_sealed(cm, r);
        else
            answer_sealed(cm);
    }
    if (cm->ev && h->store)
        commit_run(cm);
    if (cm->ev)
        event_free(cm->ev);
    if (cm->done_ev)
        event_free(cm->done_ev);
    if (cm->efd >= 0)
        close(cm->efd);
    if (cm->has_worker) {
        pthread_mutex_destroy(&cm->lock);
        pthread_cond_destroy(&cm->cond);
    }
    free(cm->waiting.v);
    free(cm->sealed.v);
    free(cm);
    h->commit = NULL;
}

void commit_dirty(struct hub *h)
{
    struct committer *cm = h->commit;
    if (!cm)
        return;
    cm->dirty = true;
    schedule(cm);
}

int commit_ack(struct hub *h, struct hub_client *c, uint32_t token)
{
    struct committer *cm = h->commit;
    if (!cm)
        return -ESHUTDOWN;
    struct ack_list *l = &cm->waiting;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct pending_ack *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (struct pending_ack){c, token};
    c->pending_acks++;
    schedule(cm);
    return 0;
}

void commit_client_gone(struct hub *h, struct hub_client *c)
{
    struct committer *cm = h->commit;
    struct ack_list *lists[] = {cm ? &cm->sealed : NULL, cm ? &cm->waiting : NULL};
    for (size_t k = 0; k < ARRAY_SIZE(lists) && lists[k]; k++)
        for (size_t i = 0; i < lists[k]->n && c->pending_acks; i++)
            if (lists[k]->v[i].c == c) {
                lists[k]->v[i].c = NULL;
                c->pending_acks--;
            }
}

void commit_tick(struct hub *h)
{
    struct committer *cm = h->commit;
    if (cm && cm->waiting.n)
        schedule(cm);
}
