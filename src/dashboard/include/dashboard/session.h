/* session.h — the dashboard's browser sessions (in memory: a restart of ledged logs everyone
 * out) and the checks every request passes: the session cookie, the per-session CSRF token a
 * changing request must carry in X-CSRF-Token, and its Origin. Pure: no I/O, never logs. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dashboard/tokens.h"

#define DASH_SESSIONS_MAX 64 /* more logins drop the least recently used session */
#define DASH_COOKIE "ledge_session"
#define DASH_CSRF_HEADER "X-CSRF-Token"
#define DASH_SECRET_HEX 64

struct dash_session {
    char id[DASH_SECRET_HEX + 1];   /* the cookie's value */
    char csrf[DASH_SECRET_HEX + 1]; /* what X-CSRF-Token must say */
    char token_id[DASH_TOKEN_ID_LEN + 1];
    int64_t expires_ms; /* the token's expiry: a session never outlives its token */
    int64_t last_ms;    /* last request, for the idle timeout */
};

struct dash_sessions {
    struct dash_session v[DASH_SESSIONS_MAX];
    size_t n;
    int64_t idle_ms;
};

void dash_sessions_init(struct dash_sessions *s, int64_t idle_ms);
/* A new session for a verified token. NULL only when random bytes fail. */
struct dash_session *dash_session_create(struct dash_sessions *s, const char *token_id,
                                         int64_t token_expires_ms, int64_t now_ms);
/* The live session a Cookie header names (and touch it), or NULL. */
struct dash_session *dash_session_find(struct dash_sessions *s, const char *cookie_header,
                                       int64_t now_ms);
void dash_session_end(struct dash_sessions *s, struct dash_session *session);
/* End every session of token_id (NULL: all); how many ended. */
size_t dash_sessions_revoke(struct dash_sessions *s, const char *token_id);

/* The value of cookie name in a Cookie header into buf; -ENOENT, -E2BIG (longer than buf). */
int dash_cookie_get(const char *header, const char *name, char *buf, size_t size);
/* Set-Cookie for a session (HttpOnly, SameSite=Strict, Path=/, Secure over TLS); max_age_s 0
 * clears it. Returns buf. */
char *dash_cookie_format(char *buf, size_t size, const char *value, int64_t max_age_s, bool tls);
/* Does X-CSRF-Token (header, may be NULL) match the session's, in constant time? */
bool dash_csrf_ok(const struct dash_session *session, const char *header);
/* Is origin (the Origin header, may be NULL) this server, as the Host header names it? A
 * changing request without Origin is refused: every browser that could be tricked sends one. */
bool dash_origin_ok(const char *origin, const char *host, bool tls);
/* Does method change anything (anything but GET and HEAD)? */
bool dash_method_changes(const char *method);
