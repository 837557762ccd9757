/* http_client.c — libcurl multi interface on a libevent loop (see http_client.h).
 *
 * curl tells us which sockets to watch (socket callback) and when to wake it (timer callback);
 * we translate both into libevent events and report back with curl_multi_socket_action. Finished
 * transfers are collected from curl_multi_info_read and completed outside curl's callbacks.
 * Cancellation from inside a callback only marks the transfer; it is removed once curl returns. */
#include "net/http_client.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <event2/event.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "base/crypto.h"
#include "base/macro.h"

struct hc_client {
    struct event_base *base;
    CURLM *multi;
    struct event *timer;
    struct hc_transfer *transfers;
    size_t n_active;
    int depth; /* >0 while inside curl_multi_socket_action */
    bool reaping;
};

struct hc_transfer {
    struct hc_client *c;
    CURL *easy;
    struct curl_slist *headers;
    struct lbuf body;
    size_t max_response;
    hc_data_fn on_data;
    hc_done_fn on_done;
    void (*on_status)(void *ud, long status);
    void (*on_headers)(void *ud, long status, const char *content_type);
    void (*on_peer_key)(void *ud, const char *pin);
    hc_header_fn on_header;
    bool paused;
    bool status_reported;
    void *ud;
    char *req_body;
    bool cancelled;
    bool overflow;
    bool aborted_by_data;
    struct hc_transfer *next, *prev;
};

/* Per-socket event, owned through curl_multi_assign. */
struct hc_sock {
    struct event *ev;
    struct hc_client *c;
};

static int curl_init_once(void)
{
    static bool done;
    if (!done) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return -EIO;
        done = true;
    }
    return 0;
}

static void transfer_unlink_free(struct hc_transfer *t)
{
    struct hc_client *c = t->c;
    if (t->prev)
        t->prev->next = t->next;
    else
        c->transfers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    curl_multi_remove_handle(c->multi, t->easy);
    curl_easy_cleanup(t->easy);
    curl_slist_free_all(t->headers);
    lbuf_free(&t->body);
    free(t->req_body);
    c->n_active--;
    free(t);
}

/* The transfer's result as -errno. A failed connect says why (the socket file is missing, no
 * permission, refused) from the connect(2) errno curl kept. */
static int map_curl_error(CURL *e, CURLcode cc)
{
    long os_errno = 0;
    switch (cc) {
    case CURLE_OK:
        return 0;
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(e, CURLINFO_OS_ERRNO, &os_errno);
        return os_errno > 0 && os_errno < 4096 ? -(int)os_errno : -ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
        return -EHOSTUNREACH;
    case CURLE_WRITE_ERROR:
        return -ECANCELED;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
        return -ECONNRESET;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        return -EPROTO;
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        return -EKEYREJECTED;
    default:
        return -EIO;
    }
}

/* "sha256//BASE64" of the first certificate's SubjectPublicKeyInfo (CURLOPT_CERTINFO), as
 * CURLOPT_PINNEDPUBKEY takes it. */
static int peer_key_pin(CURL *e, char *out, size_t size)
{
    struct curl_certinfo *ci = NULL;
    if (curl_easy_getinfo(e, CURLINFO_CERTINFO, &ci) != CURLE_OK || !ci || ci->num_of_certs < 1)
        return -ENOENT;
    const char *pem = NULL;
    for (struct curl_slist *l = ci->certinfo[0]; l && !pem; l = l->next)
        if (strncmp(l->data, "Cert:", 5) == 0)
            pem = l->data + 5;
    if (!pem)
        return -ENOENT;
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    unsigned char *der = NULL;
    int n = x ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der) : -1;
    X509_free(x);
    if (n <= 0)
        return -EINVAL;
    uint8_t h[LCRYPTO_SHA256_LEN];
    int r = lcrypto_sha256(der, (size_t)n, h);
    OPENSSL_free(der);
    _cleanup_lbuf_ struct lbuf b64 = LBUF_INIT;
    if (r < 0 || lcrypto_b64_encode(h, sizeof(h), &b64) < 0)
        return -ENOMEM;
    return snprintf(out, size, "sha256//%.*s", (int)b64.len, b64.data) < (int)size ? 0 : -E2BIG;
}

static void reap(struct hc_client *c)
{
    if (c->reaping)
        return;
    c->reaping = true;
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        struct hc_transfer *t = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (!t)
            continue;
        CURLcode cc = m->data.result;
        if (t->cancelled) {
            transfer_unlink_free(t);
            continue;
        }
        long status = 0;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
        int result = map_curl_error(t->easy, cc);
        if (t->overflow)
            result = -E2BIG;
        else if (t->aborted_by_data)
            result = -ECANCELED;
        /* Unlink before the callback so it may start new transfers or free the client. */
        if (t->prev)
            t->prev->next = t->next;
        else
            c->transfers = t->next;
        if (t->next)
            t->next->prev = t->prev;
        curl_multi_remove_handle(c->multi, t->easy);
        t->prev = t->next = NULL;
        t->cancelled = true; /* hc_cancel() on itself from the callback is a no-op */
        if (t->on_peer_key && result == 0) {
            char pin[128];
            if (peer_key_pin(t->easy, pin, sizeof(pin)) == 0)
                t->on_peer_key(t->ud, pin);
        }
        if (t->on_done)
            t->on_done(t->ud, result, status, &t->body);
        curl_easy_cleanup(t->easy);
        curl_slist_free_all(t->headers);
        lbuf_free(&t->body);
        free(t->req_body);
        c->n_active--;
        free(t);
    }
    c->reaping = false;
}

static void drive(struct hc_client *c, curl_socket_t fd, int action)
{
    int running;
    c->depth++;
    curl_multi_socket_action(c->multi, fd, action, &running);
    c->depth--;
    reap(c);
}

static void sock_eventcb(evutil_socket_t fd, short what, void *arg)
{
    struct hc_client *c = arg;
    int action =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    drive(c, fd, action);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    drive(arg, CURL_SOCKET_TIMEOUT, 0);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct hc_client *c = userp;
    struct hc_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            event_free(s->ev);
            free(s);
            curl_multi_assign(c->multi, fd, NULL);
        }
        return 0;
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
                 ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->c = c;
        curl_multi_assign(c->multi, fd, s);
    } else {
        event_free(s->ev);
    }
    s->ev = event_new(c->base, fd, kind, sock_eventcb, c);
    if (!s->ev)
        return -1;
    event_add(s->ev, NULL);
    return 0;
}

static int timer_set_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct hc_client *c = userp;
    if (timeout_ms < 0) {
        evtimer_del(c->timer);
        return 0;
    }
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
    return 0;
}

int hc_client_new(struct event_base *base, struct hc_client **ret)
{
    int r = curl_init_once();
    if (r < 0)
        return r;
    struct hc_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->base = base;
    c->multi = curl_multi_init();
    c->timer = evtimer_new(base, timer_cb, c);
    if (!c->multi || !c->timer) {
        if (c->multi)
            curl_multi_cleanup(c->multi);
        if (c->timer)
            event_free(c->timer);
        free(c);
        return -ENOMEM;
    }
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_set_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    *ret = c;
    return 0;
}

void hc_client_free(struct hc_client *c)
{
    if (!c)
        return;
    while (c->transfers)
        transfer_unlink_free(c->transfers);
    curl_multi_cleanup(c->multi);
    event_free(c->timer);
    free(c);
}

size_t hc_client_active(const struct hc_client *c)
{
    return c->n_active;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct hc_transfer *t = ud;
    size_t n = size * nmemb;
    if (t->cancelled)
        return 0;
    if (t->on_data) {
        int r = t->on_data(t->ud, data, n);
        if (r < 0) {
            t->aborted_by_data = true;
            return 0;
        }
        if (r == HC_DATA_PAUSE && !t->cancelled) {
            t->paused = true;
            return CURL_WRITEFUNC_PAUSE;
        }
        return t->cancelled ? 0 : n;
    }
    if (t->body.len + n > t->max_response) {
        t->overflow = true;
        return 0;
    }
    return lbuf_append(&t->body, data, n) < 0 ? 0 : n;
}

int hc_status_line_code(const char *line, size_t n)
{
    /* "HTTP/" version SP 3DIGIT [SP reason] */
    if (n < 5 || memcmp(line, "HTTP/", 5) != 0)
        return 0;
    size_t i = 5;
    while (i < n && (isdigit((unsigned char)line[i]) || line[i] == '.'))
        i++;
    if (i == 5 || i + 4 > n || line[i] != ' ')
        return 0;
    const char *d = line + i + 1;
    if (!isdigit((unsigned char)d[0]) || !isdigit((unsigned char)d[1]) ||
        !isdigit((unsigned char)d[2]) || (i + 4 < n && d[3] != ' ' && d[3] != '\r' && d[3] != '\n'))
        return 0;
    int code = (d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0');
    return code >= 100 ? code : 0;
}

int hc_header_split(const char *line, size_t n, const char **ret_name, size_t *ret_name_len,
                    const char **ret_value, size_t *ret_value_len)
{
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\n'))
        n--;
    const char *colon = n ? memchr(line, ':', n) : NULL;
    if (!colon || colon == line)
        return -EINVAL;
    /* a token: no blanks or controls in the name (a status line has a blank before its colon) */
    for (const char *p = line; p < colon; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return -EINVAL;
    const char *v = colon + 1, *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *ret_name = line;
    *ret_name_len = (size_t)(colon - line);
    *ret_value = v;
    *ret_value_len = (size_t)(end - v);
    return 0;
}

/* The end of a header block tells us the status; interim 1xx blocks are skipped. */
static size_t header_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct hc_transfer *t = ud;
    size_t n = size * nmemb;
    if (t->on_header && !t->cancelled) {
        const char *name, *value;
        size_t nl, vl;
        if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
            t->on_header(t->ud, NULL, 0, data, n);
        else if (hc_header_split(data, n, &name, &nl, &value, &vl) == 0)
            t->on_header(t->ud, name, nl, value, vl);
    }
    if ((t->on_status || t->on_headers) && !t->status_reported && n <= 2 &&
        (n == 0 || data[0] == '\r' || data[0] == '\n')) {
        long status = 0;
        curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200) {
            t->status_reported = true;
            if (t->on_headers) {
                const char *ct = NULL;
                curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &ct);
                t->on_headers(t->ud, status, ct);
            }
            if (t->on_status)
                t->on_status(t->ud, status);
        }
    }
    return n;
}

static int setup_easy(CURL *e, const struct hc_request *req, struct curl_slist **headers,
                      char **ret_body_copy, void *write_ud)
{
    if (req->on_status || req->on_headers || req->on_header) {
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, write_ud);
    }
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, write_ud);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     req->connect_timeout_ms ? req->connect_timeout_ms : 5000L);
    if (req->timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms);
    if (req->unix_socket)
        curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, req->unix_socket);
    if (req->pinned_pubkey || req->tls_learn_key) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (req->pinned_pubkey)
        curl_easy_setopt(e, CURLOPT_PINNEDPUBLICKEY, req->pinned_pubkey);
    if (req->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
    if (req->follow_redirects) {
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    }
    if (req->http1_only)
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    if (req->low_speed_time_s) {
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, req->low_speed_time_s);
    }
    if (req->tls_learn_key) { /* a connection of its own: a reused one has no certificate info */
        curl_easy_setopt(e, CURLOPT_CERTINFO, 1L);
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    }
    const char *method = req->method ? req->method : "GET";
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    /* Keep the request body alive for the whole transfer. */
    if (req->body) {
        char *copy = malloc(req->body_len + 1);
        if (!copy)
            return -ENOMEM;
        memcpy(copy, req->body, req->body_len);
        copy[req->body_len] = 0;
        *ret_body_copy = copy;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, copy);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        char ct[200];
        snprintf(ct, sizeof(ct), "Content-Type: %s",
                 req->content_type ? req->content_type : "application/json");
        *headers = curl_slist_append(*headers, ct);
    } else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    *headers = curl_slist_append(*headers, "Expect:");
    for (size_t i = 0; req->headers && req->headers[i]; i++)
        *headers = curl_slist_append(*headers, req->headers[i]);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, *headers);
    return 0;
}

struct hc_transfer *hc_request(struct hc_client *c, const struct hc_request *req)
{
    struct hc_transfer *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->c = c;
    t->easy = curl_easy_init();
    t->max_response = req->max_response ? req->max_response : 16u << 20;
    t->on_data = req->on_data;
    t->on_done = req->on_done;
    t->on_status = req->on_status;
    t->on_headers = req->on_headers;
    t->on_header = req->on_header;
    t->on_peer_key = req->tls_learn_key ? req->on_peer_key : NULL;
    t->ud = req->ud;
    if (!t->easy || setup_easy(t->easy, req, &t->headers, &t->req_body, t) < 0) {
        if (t->easy)
            curl_easy_cleanup(t->easy);
        curl_slist_free_all(t->headers);
        free(t->req_body);
        free(t);
        return NULL;
    }
    curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
    if (curl_multi_add_handle(c->multi, t->easy) != CURLM_OK) {
        curl_easy_cleanup(t->easy);
        curl_slist_free_all(t->headers);
        free(t->req_body);
        free(t);
        return NULL;
    }
    t->next = c->transfers;
    if (c->transfers)
        c->transfers->prev = t;
    c->transfers = t;
    c->n_active++;
    return t;
}

void hc_cancel(struct hc_transfer *t)
{
    if (!t || t->cancelled)
        return;
    struct hc_client *c = t->c;
    t->cancelled = true;
    t->on_done = NULL;
    /* Inside curl (a write callback) the handle cannot be removed; returning 0 from the write
     * callback fails the transfer and reap() frees it. Outside curl, remove it now. */
    if (c->depth == 0)
        transfer_unlink_free(t);
}

void hc_resume(struct hc_transfer *t)
{
    if (!t || t->cancelled || !t->paused)
        return;
    struct hc_client *c = t->c;
    t->paused = false;
    /* curl may hand the held data to write_cb right here: count it as inside curl */
    c->depth++;
    curl_easy_pause(t->easy, CURLPAUSE_CONT);
    c->depth--;
    reap(c);
}

int hc_request_sync(const struct hc_request *req, long *ret_status, struct lbuf *ret_body)
{
    int r = curl_init_once();
    if (r < 0)
        return r;
    struct hc_transfer t = {
        .max_response = req->max_response ? req->max_response : 16u << 20,
        .on_data = req->on_data,
        .on_status = req->on_status,
        .ud = req->ud,
    };
    CURL *e = curl_easy_init();
    if (!e)
        return -ENOMEM;
    t.easy = e;
    struct curl_slist *headers = NULL;
    char *body_copy = NULL;
    r = setup_easy(e, req, &headers, &body_copy, &t);
    if (r == 0) {
        CURLcode cc = curl_easy_perform(e);
        r = map_curl_error(e, cc);
        if (t.overflow)
            r = -E2BIG;
        else if (t.aborted_by_data)
            r = -ECANCELED;
        long status = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (ret_status)
            *ret_status = status;
    }
    curl_easy_cleanup(e);
    curl_slist_free_all(headers);
    free(body_copy);
    if (ret_body && r >= 0 && !req->on_data) {
        lbuf_free(ret_body);
        *ret_body = t.body;
    } else {
        lbuf_free(&t.body);
    }
    return r;
}
