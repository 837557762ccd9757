/* registry.c — the distribution API v2 client (see registry.h). One curl easy handle per pull
 * (connections are reused); every request goes through request_authed(), which answers a 401
 * once by following the challenge (a Bearer token from the realm, or Basic) and retries. */
#include "image/registry.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/crypto.h"
#include "base/json.h"
#include "base/str.h"
#include "image/auth.h"
#include "image/creds.h"
#include "image-internal.h"
#include "image/manifest.h"

#ifndef LEDGE_VERSION
#define LEDGE_VERSION "0"
#endif

struct response {
    long status;
    char content_type[128];
    char docker_digest[IMG_DIGEST_LEN + 1];
    char www_auth[4096];
    struct lbuf body;        /* collected: error bodies always, success bodies unless sinking */
    struct img_ingest *sink; /* a 200 body streams here when set */
    struct lerr sink_err;
    int sink_r;
};

struct session {
    CURL *curl;
    const struct img_pull_opts *o;
    struct img_ref ref;
    char image[IMG_NAME_MAX + 1];
    const char *scheme; /* "https" or "http" */
    char *authz;        /* "Authorization: …" (a secret), or NULL */
    char errbuf[CURL_ERROR_SIZE];
    CURLcode last; /* of the last request */
    struct lerr *e;
};

static void response_reset(struct response *r)
{
    r->status = 0;
    r->content_type[0] = r->docker_digest[0] = r->www_auth[0] = 0;
    lbuf_reset(&r->body);
}

static void set_authz(struct session *s, char *value)
{
    if (s->authz) {
        lcrypto_wipe(s->authz, strlen(s->authz));
        free(s->authz);
    }
    s->authz = value;
}

/* ---- curl callbacks ------------------------------------------------------------------------- */

static void copy_header_value(char *dst, size_t size, const char *v, size_t n)
{
    while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
        n--;
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    if (n >= size)
        n = size - 1; /* oversized values are cut; a cut digest or challenge fails validation */
    memcpy(dst, v, n);
    dst[n] = 0;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct response *r = ud;
    size_t n = size * nmemb;
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        /* A new response (after a redirect or a 100): forget the previous one's headers. */
        response_reset(r);
        const char *sp = memchr(data, ' ', n);
        if (sp)
            r->status = strtol(sp + 1, NULL, 10);
        return n;
    }
    const char *colon = memchr(data, ':', n);
    if (!colon)
        return n;
    size_t kl = (size_t)(colon - data);
    const char *v = colon + 1;
    size_t vl = n - kl - 1;
    if (kl == 12 && strncasecmp(data, "content-type", 12) == 0)
        copy_header_value(r->content_type, sizeof(r->content_type), v, vl);
    else if (kl == 21 && strncasecmp(data, "docker-content-digest", 21) == 0)
        copy_header_value(r->docker_digest, sizeof(r->docker_digest), v, vl);
    else if (kl == 16 && strncasecmp(data, "www-authenticate", 16) == 0 && !r->www_auth[0])
        copy_header_value(r->www_auth, sizeof(r->www_auth), v, vl);
    return n;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *ud)
{
    struct response *r = ud;
    size_t n = size * nmemb;
    if (r->sink && r->status == 200) {
        r->sink_r = img_ingest_write(r->sink, data, n, &r->sink_err);
        if (r->sink_r < 0)
            return 0; /* aborts the transfer */
        return n;
    }
    if (lbuf_append(&r->body, data, n) < 0) {
        r->sink_r = -E2BIG;
        return 0;
    }
    return n;
}

/* ---- requests ------------------------------------------------------------------------------- */

static bool plain_http_allowed(const struct session *s)
{
    if (img_registry_is_loopback(s->ref.registry))
        return true;
    for (const char *const *p = s->o->insecure; p && *p; p++)
        if (img_registry_matches(*p, s->ref.registry))
            return true;
    return false;
}

/* One request to url; 0 when a response arrived (whatever its status), else -errno with e
 * saying why no answer came. authz_header: the Authorization header line or NULL. */
static int request(struct session *s, const char *url, const char *accept, const char *authz,
                   size_t max_body, struct response *r)
{
    CURL *c = s->curl;
    struct curl_slist *h = NULL, *t;
    char accept_line[512];
    if (accept) {
        snprintf(accept_line, sizeof(accept_line), "Accept: %s", accept);
        if (!(t = curl_slist_append(h, accept_line)))
            goto nomem;
        h = t;
    }
    if (authz) {
        if (!(t = curl_slist_append(h, authz)))
            goto nomem;
        h = t;
    }
    response_reset(r);
    r->body.max = max_body;
    r->sink_r = 0;
    lerr_clear(&r->sink_err);
    s->errbuf[0] = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    CURLcode cc = s->last = curl_easy_perform(c);
    /* The header list must outlive the transfer only. */
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    if (cc == CURLE_WRITE_ERROR && r->sink_r < 0) {
        if (r->sink_r == -E2BIG && !r->sink_err.msg[0])
            return lerr_set(s->e, -E2BIG, "%s: the answer is larger than %zu bytes", url, max_body);
        return lerr_set(s->e, r->sink_r, "%s", lerr_str(&r->sink_err));
    }
    if (cc != CURLE_OK) {
        int code = cc == CURLE_OPERATION_TIMEDOUT         ? -ETIMEDOUT
                   : cc == CURLE_COULDNT_CONNECT          ? -ECONNREFUSED
                   : cc == CURLE_COULDNT_RESOLVE_HOST     ? -EHOSTUNREACH
                   : cc == CURLE_PEER_FAILED_VERIFICATION ? -EPERM
                                                          : -EIO;
        return lerr_set(s->e, code, "%s: %s", url,
                        s->errbuf[0] ? s->errbuf : curl_easy_strerror(cc));
    }
    return 0;
nomem:
    curl_slist_free_all(h);
    return -ENOMEM;
}

/* "CODE: message" of a registry error body ({"errors": [{"code", "message"}]}), or "". */
static void registry_error(const struct response *r, char *dst, size_t size)
{
    dst[0] = 0;
    json_t *j = r->body.len ? json_loadb(r->body.data, r->body.len, 0, NULL) : NULL;
    json_t *first = json_array_get(json_object_get(j, "errors"), 0);
    const char *code = ljson_str(first, "code"), *msg = ljson_str(first, "message");
    if (code || msg)
        snprintf(dst, size, "%s%s%s", code ? code : "", code && msg ? ": " : "", msg ? msg : "");
    json_decref(j);
}

static char *basic_authz(const char *user, const char *pass)
{
    _cleanup_lbuf_ struct lbuf raw = LBUF_INIT, b64 = LBUF_INIT;
    if (lbuf_printf(&raw, "%s:%s", user, pass) < 0 ||
        lcrypto_b64_encode(raw.data, raw.len, &b64) < 0) {
        if (raw.data)
            lcrypto_wipe(raw.data, raw.len);
        return NULL;
    }
    lcrypto_wipe(raw.data, raw.len);
    char *line = lstr_printf("Authorization: Basic %s", b64.data);
    lcrypto_wipe(b64.data, b64.len);
    return line;
}

static bool have_creds(const struct session *s)
{
    return s->o->username && s->o->password;
}

/* Get a token from the challenge's realm (the distribution token flow). */
static int bearer_token(struct session *s, const struct img_challenge *ch)
{
    if (!lstr_startswith_ci(ch->realm, "https://") &&
        !(lstr_startswith_ci(ch->realm, "http://") && strcmp(s->scheme, "http") == 0))
        return lerr_set(s->e, -EPROTO, "the token realm \"%.200s\" is not an https URL", ch->realm);
    _cleanup_lbuf_ struct lbuf url = LBUF_INIT;
    char scope[IMG_AUTH_PARAM_MAX + IMG_REF_MAX + 32];
    if (ch->scope[0])
        snprintf(scope, sizeof(scope), "%s", ch->scope);
    else
        snprintf(scope, sizeof(scope), "repository:%s:pull", s->ref.repo);
    int r = lbuf_printf(&url, "%s%c", ch->realm, strchr(ch->realm, '?') ? '&' : '?');
    if (r >= 0 && ch->service[0] && (r = lbuf_puts(&url, "service=")) >= 0 &&
        (r = lstr_url_encode(ch->service, strlen(ch->service), &url)) >= 0)
        r = lbuf_putc(&url, '&');
    if (r >= 0 && (r = lbuf_puts(&url, "scope=")) >= 0)
        r = lstr_url_encode(scope, strlen(scope), &url);
    if (r < 0)
        return r;
    _cleanup_free_ char *basic = have_creds(s) ? basic_authz(s->o->username, s->o->password) : NULL;
    if (have_creds(s) && !basic)
        return -ENOMEM;
    struct response resp = {0};
    r = request(s, url.data, "application/json", basic, IMG_TOKEN_MAX, &resp);
    if (basic)
        lcrypto_wipe(basic, strlen(basic));
    if (r < 0) {
        lbuf_free(&resp.body);
        return img_prefix(r, s->e, "token server");
    }
    if (resp.status == 401 || resp.status == 403) {
        char msg[256];
        registry_error(&resp, msg, sizeof(msg));
        lbuf_free(&resp.body);
        return lerr_set(s->e, -EACCES,
                        "authentication failed%s (the token server answered %ld%s%s)",
                        have_creds(s) ? ": wrong username or password?" : ": credentials needed",
                        resp.status, msg[0] ? ": " : "", msg);
    }
    if (resp.status != 200) {
        lbuf_free(&resp.body);
        return lerr_set(s->e, -EPROTO, "the token server answered %ld", resp.status);
    }
    json_t *j = json_loadb(resp.body.data ? resp.body.data : "", resp.body.len, 0, NULL);
    lcrypto_wipe(resp.body.data, resp.body.len);
    lbuf_free(&resp.body);
    const char *token = ljson_str(j, "token");
    if (lstr_empty(token))
        token = ljson_str(j, "access_token");
    char *line = !lstr_empty(token) ? lstr_printf("Authorization: Bearer %s", token) : NULL;
    json_decref(j);
    if (!line)
        return lerr_set(s->e, -EPROTO, "the token server's answer has no token");
    set_authz(s, line);
    return 0;
}

static int authenticate(struct session *s, const struct response *r)
{
    struct img_challenge ch;
    int q = img_challenge_parse(r->www_auth, strlen(r->www_auth), &ch);
    if (q < 0)
        return lerr_set(s->e, -EPROTO, "401 with an unusable challenge \"%.200s\"", r->www_auth);
    if (ch.scheme == IMG_AUTH_BEARER)
        return bearer_token(s, &ch);
    if (!have_creds(s))
        return lerr_set(s->e, -EACCES, "authentication required (no credentials for %s)",
                        s->ref.registry);
    char *line = basic_authz(s->o->username, s->o->password);
    if (!line)
        return -ENOMEM;
    set_authz(s, line);
    return 0;
}

/* request() with the session's Authorization, answering one 401 by authenticating. A 401 that
 * survives that is an error naming what the registry said. */
static int request_authed(struct session *s, const char *path, const char *accept, size_t max_body,
                          struct response *r)
{
    char url[PATH_MAX];
    if (snprintf(url, sizeof(url), "%s://%s%s", s->scheme, img_ref_api_host(&s->ref), path) >=
        (int)sizeof(url))
        return -ENAMETOOLONG;
    for (int attempt = 0;; attempt++) {
        int q = request(s, url, accept, s->authz, max_body, r);
        if (q < 0)
            return q;
        if (r->status != 401)
            return 0;
        if (attempt == 1 || !r->www_auth[0]) {
            char msg[256];
            registry_error(r, msg, sizeof(msg));
            const char *why = have_creds(s) ? ": wrong username or password, or no access to the "
                                              "repository?"
                              : s->authz ? ": the registry's token does not grant this repository"
                                         : ": the registry needs credentials";
            return lerr_set(s->e, -EACCES, "authentication failed%s (%ld%s%s)", why, r->status,
                            msg[0] ? " " : "", msg);
        }
        /* Nothing reached a sink: only a 200 body is streamed. */
        if ((q = authenticate(s, r)) < 0)
            return q;
    }
}

/* Find the scheme: https, or plain http where allowed and https does not answer. */
static int ping(struct session *s)
{
    struct response r = {0};
    s->scheme = "https";
    int q = request_authed(s, "/v2/", "application/json", IMG_ERROR_BODY_MAX, &r);
    /* Only a TLS handshake that got no TLS answer falls back: a certificate that does not
     * verify is an error, not a reason to go plain. */
    if (q < 0 && s->last == CURLE_SSL_CONNECT_ERROR && plain_http_allowed(s)) {
        struct lerr first = *s->e;
        s->scheme = "http";
        set_authz(s, NULL);
        int q2 = request_authed(s, "/v2/", "application/json", IMG_ERROR_BODY_MAX, &r);
        if (q2 < 0 && q2 != -EACCES)
            lerr_set(s->e, q2, "%s; over plain HTTP: %s", lerr_str(&first), lerr_str(s->e));
        else if (q2 == 0 && r.status != 200 && r.status != 401)
            *s->e = first; /* not a registry over plain HTTP either: say what HTTPS said */
        else
            q = q2;
    }
    lbuf_free(&r.body);
    if (q < 0)
        return q == -EACCES ? q : img_prefix(q, s->e, "registry unreachable");
    if (r.status != 200)
        return lerr_set(s->e, -EPROTO, "%s://%s/v2/ answered %ld: not a registry API v2", s->scheme,
                        img_ref_api_host(&s->ref), r.status);
    return 0;
}

/* GET a manifest by tag or digest into *ret (NUL-terminated), checking its digest. */
static int get_manifest(struct session *s, const char *selector, char **ret, size_t *ret_len,
                        char ret_ct[128], char ret_digest[IMG_DIGEST_LEN + 1])
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "/v2/%s/manifests/%s", s->ref.repo, selector);
    struct response r = {0};
    int q = request_authed(s, path, IMG_MANIFEST_ACCEPT, IMG_MANIFEST_MAX, &r);
    if (q < 0) {
        lbuf_free(&r.body);
        return q == -E2BIG ? lerr_set(s->e, q, "manifest %s: larger than %u bytes", selector,
                                      IMG_MANIFEST_MAX)
                           : q;
    }
    if (r.status != 200) {
        char msg[256];
        registry_error(&r, msg, sizeof(msg));
        lbuf_free(&r.body);
        if (r.status == 404)
            return lerr_set(s->e, -ENOENT, "%s %s not found in repository %s (%s)",
                            selector[0] == 's' && img_digest_valid(selector) ? "manifest" : "tag",
                            selector, s->ref.repo, msg[0] ? msg : "404");
        return lerr_set(s->e, -EPROTO, "manifest %s: the registry answered %ld%s%s", selector,
                        r.status, msg[0] ? ": " : "", msg);
    }
    char digest[IMG_DIGEST_LEN + 1];
    const char *body = r.body.data ? r.body.data : "";
    if ((q = img_digest_of(body, r.body.len, digest)) < 0) {
        lbuf_free(&r.body);
        return q;
    }
    const char *want = img_digest_valid(selector)          ? selector
                       : img_digest_valid(r.docker_digest) ? r.docker_digest
                                                           : NULL;
    if (want && strcmp(want, digest) != 0) {
        lbuf_free(&r.body);
        return lerr_set(s->e, -EBADMSG,
                        "manifest %s: digest mismatch (expected %s, the content is %s)", selector,
                        want, digest);
    }
    memcpy(ret_ct, r.content_type, 128);
    memcpy(ret_digest, digest, IMG_DIGEST_LEN + 1);
    *ret_len = r.body.len;
    *ret = lbuf_steal(&r.body);
    return 0;
}

/* GET a blob: streamed into ig when set, else collected (at most max bytes) into *ret. */
static int get_blob(struct session *s, const struct img_desc *d, struct img_ingest *ig, size_t max,
                    char **ret, size_t *ret_len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "/v2/%s/blobs/%s", s->ref.repo, d->digest);
    struct response r = {.sink = ig};
    curl_easy_setopt(s->curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)d->size + 1);
    int q = request_authed(s, path, NULL, ig ? IMG_ERROR_BODY_MAX : max, &r);
    curl_easy_setopt(s->curl, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)0);
    if (q < 0) {
        lbuf_free(&r.body);
        return q;
    }
    if (r.status != 200) {
        char msg[256];
        registry_error(&r, msg, sizeof(msg));
        lbuf_free(&r.body);
        return lerr_set(s->e, r.status == 404 ? -ENOENT : -EPROTO,
                        "blob %s: the registry answered %ld%s%s", d->digest, r.status,
                        msg[0] ? ": " : "", msg);
    }
    if (ig) {
        lbuf_free(&r.body);
        return 0;
    }
    char digest[IMG_DIGEST_LEN + 1];
    const char *body = r.body.data ? r.body.data : "";
    if ((q = img_digest_of(body, r.body.len, digest)) < 0) {
        lbuf_free(&r.body);
        return q;
    }
    if (strcmp(digest, d->digest) != 0 || r.body.len != d->size) {
        lbuf_free(&r.body);
        return lerr_set(s->e, -EBADMSG, "blob %s: digest mismatch (the content is %s, %zu bytes)",
                        d->digest, digest, r.body.len);
    }
    *ret_len = r.body.len;
    *ret = lbuf_steal(&r.body);
    return 0;
}

/* ---- the pull ------------------------------------------------------------------------------- */

static int xferinfo_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ut,
                             curl_off_t un);

struct progress_ctx {
    struct session *s;
    const char *what;
    uint64_t total;
};

static int layer(struct session *s, struct img_store *st, const struct img_desc *d,
                 const char *diff_id, uint64_t max_layer)
{
    const struct img_pull_opts *o = s->o;
    if (img_store_has_layer(st, diff_id)) {
        if (o->progress)
            o->progress(o->ud, d->digest, d->size, d->size);
        return 0;
    }
    if (d->size > max_layer)
        return lerr_set(s->e, -EFBIG, "layer %s: %llu bytes, at most %llu", d->digest,
                        (unsigned long long)d->size, (unsigned long long)max_layer);
    _cleanup_img_ingest_ struct img_ingest *ig = NULL;
    int q = img_ingest_begin(st, d->digest, d->size, &ig, s->e);
    if (q < 0)
        return q;
    struct progress_ctx pc = {.s = s, .what = d->digest, .total = d->size};
    if (o->progress) {
        curl_easy_setopt(s->curl, CURLOPT_XFERINFOFUNCTION, xferinfo_progress);
        curl_easy_setopt(s->curl, CURLOPT_XFERINFODATA, &pc);
        curl_easy_setopt(s->curl, CURLOPT_NOPROGRESS, 0L);
    }
    q = get_blob(s, d, ig, 0, NULL, NULL);
    curl_easy_setopt(s->curl, CURLOPT_NOPROGRESS, 1L);
    if (q < 0)
        return q;
    int fd;
    if ((q = img_ingest_verify(ig, &fd, s->e)) < 0)
        return q;
    return img_store_unpack(st, fd, diff_id, &o->unpack, NULL, s->e);
}

static int xferinfo_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ut,
                             curl_off_t un)
{
    (void)dltotal, (void)ut, (void)un;
    struct progress_ctx *pc = ud;
    pc->s->o->progress(pc->s->o->ud, pc->what, (uint64_t)dlnow, pc->total);
    return 0;
}

static int pull(struct session *s, struct img_store *st, struct img_image *im)
{
    const struct img_pull_opts *o = s->o;
    struct img_platform want;
    int q = o->platform ? img_platform_parse(o->platform, &want, s->e) : img_platform_host(&want);
    if (q < 0)
        return q;
    if ((q = ping(s)) < 0)
        return q;

    _cleanup_free_ char *text = NULL, *index_text = NULL;
    size_t len = 0, index_len = 0;
    char ct[128], digest[IMG_DIGEST_LEN + 1];
    if ((q = get_manifest(s, img_ref_selector(&s->ref), &text, &len, ct, digest)) < 0)
        return q;
    _cleanup_img_manifest_ struct img_manifest *m = NULL;
    if ((q = img_manifest_parse(text, len, ct, &m, s->e)) < 0)
        return img_prefix(q, s->e, "manifest %s", digest);
    if (m->kind == IMG_KIND_INDEX) {
        const struct img_desc *d;
        if ((q = img_index_select(m, &want, &d, s->e)) < 0)
            return q;
        char chosen[IMG_DIGEST_LEN + 1];
        memcpy(chosen, d->digest, sizeof(chosen));
        memcpy(im->index, digest, sizeof(digest));
        index_text = TAKE_PTR(text);
        index_len = len;
        img_manifest_free(TAKE_PTR(m));
        if ((q = get_manifest(s, chosen, &text, &len, ct, digest)) < 0)
            return q;
        if ((q = img_manifest_parse(text, len, ct, &m, s->e)) < 0)
            return img_prefix(q, s->e, "manifest %s", digest);
        if (m->kind != IMG_KIND_IMAGE)
            return lerr_set(s->e, -ENOTSUP, "manifest %s: an index inside an index", digest);
    }
    memcpy(im->manifest, digest, sizeof(digest));
    memcpy(im->config, m->config.digest, sizeof(im->config));

    /* The config: small, collected, verified, stored. */
    _cleanup_free_ char *ctext = NULL;
    size_t clen = 0;
    if (img_store_has_blob(st, m->config.digest))
        q = img_store_read_blob(st, m->config.digest, IMG_CONFIG_MAX, &ctext, &clen, s->e);
    else if ((q = get_blob(s, &m->config, NULL, IMG_CONFIG_MAX, &ctext, &clen)) >= 0)
        q = img_store_put_blob(st, ctext, clen, m->config.digest, NULL, s->e);
    if (q < 0)
        return q;
    _cleanup_img_config_ struct img_config *cfg = NULL;
    if ((q = img_config_parse(ctext, clen, &cfg, s->e)) < 0)
        return img_prefix(q, s->e, "config %s", m->config.digest);
    if (cfg->diff_ids.n != m->n_descs)
        return lerr_set(s->e, -EINVAL, "config %s lists %zu layers, the manifest %zu",
                        m->config.digest, cfg->diff_ids.n, m->n_descs);
    if (img_platform_score(&want, &cfg->platform) < 0) {
        char w[96], h[96];
        img_platform_format(&want, w, sizeof(w));
        img_platform_format(&cfg->platform, h, sizeof(h));
        return lerr_set(s->e, -ENOEXEC, "the image is for %s, this machine needs %s", h, w);
    }
    img_platform_format(&cfg->platform, im->platform, sizeof(im->platform));

    uint64_t max_layer = o->max_layer ? o->max_layer : IMG_LAYER_MAX;
    for (size_t i = 0; i < m->n_descs; i++) {
        if ((q = layer(s, st, &m->descs[i], cfg->diff_ids.v[i], max_layer)) < 0)
            return q;
        if ((q = lstrv_push(&im->layers, cfg->diff_ids.v[i])) < 0)
            return q;
    }
    /* Manifests last: a stored image's manifest means all it names is there. */
    if ((q = img_store_put_blob(st, text, len, digest, NULL, s->e)) < 0)
        return q;
    if (index_text &&
        (q = img_store_put_blob(st, index_text, index_len, im->index, NULL, s->e)) < 0)
        return q;
    return img_store_tag(st, im, s->e);
}

int img_pull(struct img_store *st, const char *ref, const struct img_pull_opts *o,
             struct img_image *ret, struct lerr *e)
{
    static const struct img_pull_opts dflt = {0};
    struct lerr local;
    if (!e)
        e = &local;
    lerr_clear(e);
    struct session s = {.o = o ? o : &dflt, .e = e};
    int q = img_ref_parse(ref, &s.ref, e);
    if (q < 0)
        return q;
    img_ref_format(&s.ref, s.image, sizeof(s.image));
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return lerr_set(e, -EIO, "curl_global_init failed");
    s.curl = curl_easy_init();
    if (!s.curl)
        return -ENOMEM;
    CURL *c = s.curl;
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, s.errbuf);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "ledge/" LEDGE_VERSION);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L); /* blobs redirect to storage */
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     s.o->connect_timeout_ms ? s.o->connect_timeout_ms : 10000L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, s.o->stall_timeout_s ? s.o->stall_timeout_s : 60L);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 1L);
    if (s.o->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, s.o->ca_file);

    struct img_image im = {0};
    snprintf(im.name, sizeof(im.name), "%s", s.image);
    q = pull(&s, st, &im);
    set_authz(&s, NULL);
    curl_easy_cleanup(c);
    if (q < 0) {
        img_image_clear(&im);
        return img_prefix(q, e, "pulling %s from %s", s.image, s.ref.registry);
    }
    if (ret)
        *ret = im;
    else
        img_image_clear(&im);
    return 0;
}
