/* manifest.c — parsing and validation of manifests, indexes and image configs, and the
 * platform rule (see manifest.h). */
#include "image/manifest.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

#include "base/json.h"

struct layer_type {
    const char *media_type;
    enum img_compression compression;
};

static const struct layer_type layer_types[] = {
    {"application/vnd.docker.image.rootfs.diff.tar.gzip", IMG_COMPRESSION_GZIP},
    {"application/vnd.docker.image.rootfs.diff.tar", IMG_COMPRESSION_NONE},
    {IMG_MT_OCI_LAYER, IMG_COMPRESSION_NONE},
    {IMG_MT_OCI_LAYER "+gzip", IMG_COMPRESSION_GZIP},
    {IMG_MT_OCI_LAYER "+zstd", IMG_COMPRESSION_ZSTD},
};

void img_manifest_free(struct img_manifest *m)
{
    if (!m)
        return;
    free(m->descs);
    free(m);
}

static int copy_str(char *dst, size_t size, const char *s)
{
    return lstr_copy(dst, size, s) < 0 ? -EINVAL : 0;
}

/* A descriptor {mediaType, digest, size[, platform]} at path. */
static int parse_desc(const json_t *j, const char *path, struct img_desc *d, struct lerr *e)
{
    if (!json_is_object(j))
        return lerr_set(e, -EINVAL, "%s: must be an object", path);
    const char *mt = ljson_str(j, "mediaType"), *digest = ljson_str(j, "digest");
    if (!mt || copy_str(d->media_type, sizeof(d->media_type), mt) < 0)
        return lerr_set(e, -EINVAL, "%s.mediaType: must be a string of at most %zu characters",
                        path, sizeof(d->media_type) - 1);
    if (!digest || !img_digest_valid(digest))
        return lerr_set(e, -EINVAL, "%s.digest: must be sha256:<64 lower-case hex digits>", path);
    memcpy(d->digest, digest, IMG_DIGEST_LEN + 1);
    json_t *size = json_object_get(j, "size");
    if (!json_is_integer(size) || json_integer_value(size) < 0)
        return lerr_set(e, -EINVAL, "%s.size: must be a non-negative integer", path);
    d->size = (uint64_t)json_integer_value(size);
    json_t *p = json_object_get(j, "platform");
    if (p) {
        const char *os = ljson_str(p, "os"), *arch = ljson_str(p, "architecture");
        const char *variant = ljson_str(p, "variant");
        if (!os || !arch || copy_str(d->platform.os, sizeof(d->platform.os), os) < 0 ||
            copy_str(d->platform.architecture, sizeof(d->platform.architecture), arch) < 0 ||
            copy_str(d->platform.variant, sizeof(d->platform.variant), variant ? variant : "") < 0)
            return lerr_set(e, -EINVAL,
                            "%s.platform: needs os and architecture strings (at most 31 "
                            "characters, variant at most 15)",
                            path);
        d->has_platform = true;
    }
    return 0;
}

static int parse_layers(const json_t *layers, struct img_manifest *m, struct lerr *e)
{
    if (!json_is_array(layers))
        return lerr_set(e, -EINVAL, "layers: must be an array");
    size_t n = json_array_size(layers);
    if (n > IMG_LAYERS_MAX)
        return lerr_set(e, -E2BIG, "layers: %zu layers, at most %d", n, IMG_LAYERS_MAX);
    m->descs = calloc(n ? n : 1, sizeof(*m->descs));
    if (!m->descs)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        char path[32];
        snprintf(path, sizeof(path), "layers[%zu]", i);
        struct img_desc *d = &m->descs[i];
        int r = parse_desc(json_array_get(layers, i), path, d, e);
        if (r < 0)
            return r;
        bool known = false;
        for (size_t t = 0; t < ARRAY_SIZE(layer_types); t++)
            if (strcmp(d->media_type, layer_types[t].media_type) == 0) {
                d->compression = layer_types[t].compression;
                known = true;
            }
        if (!known &&
            (strstr(d->media_type, "foreign") || strstr(d->media_type, "nondistributable")))
            return lerr_set(e, -ENOTSUP,
                            "%s.mediaType: %s: non-distributable layers are not supported", path,
                            d->media_type);
        if (!known)
            return lerr_set(e, -ENOTSUP, "%s.mediaType: unsupported layer type %s", path,
                            d->media_type);
        m->n_descs++;
    }
    return 0;
}

static int parse_index(const json_t *manifests, struct img_manifest *m, struct lerr *e)
{
    if (!json_is_array(manifests))
        return lerr_set(e, -EINVAL, "manifests: must be an array");
    size_t n = json_array_size(manifests);
    if (n > IMG_INDEX_MAX)
        return lerr_set(e, -E2BIG, "manifests: %zu entries, at most %d", n, IMG_INDEX_MAX);
    m->descs = calloc(n ? n : 1, sizeof(*m->descs));
    if (!m->descs)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        char path[32];
        snprintf(path, sizeof(path), "manifests[%zu]", i);
        int r = parse_desc(json_array_get(manifests, i), path, &m->descs[i], e);
        if (r < 0)
            return r;
        m->n_descs++;
    }
    return 0;
}

int img_manifest_parse(const char *text, size_t n, const char *content_type,
                       struct img_manifest **ret, struct lerr *e)
{
    if (n > IMG_MANIFEST_MAX)
        return lerr_set(e, -E2BIG, "manifest of %zu bytes, at most %u", n, IMG_MANIFEST_MAX);
    _cleanup_json_ json_t *j = NULL;
    int r = ljson_parse(text, n, &j, e);
    if (r < 0)
        return r;
    if (!json_is_object(j))
        return lerr_set(e, -EINVAL, "manifest: must be a JSON object");
    json_t *sv = json_object_get(j, "schemaVersion");
    if (json_is_integer(sv) && json_integer_value(sv) == 1)
        return lerr_set(e, -ENOTSUP,
                        "Docker schema 1 manifests are not supported (push the "
                        "image again with a current client)");
    if (!json_is_integer(sv) || json_integer_value(sv) != 2)
        return lerr_set(e, -EINVAL, "schemaVersion: must be 2");

    _cleanup_img_manifest_ struct img_manifest *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    const char *mt = ljson_str(j, "mediaType");
    char ct[128] = "";
    if (content_type) {
        /* "type; charset=…" → "type" */
        size_t l = strcspn(content_type, "; \t");
        if (l < sizeof(ct)) {
            memcpy(ct, content_type, l);
            ct[l] = 0;
        }
    }
    bool ct_is_manifest = lstr_startswith(ct, "application/vnd.");
    if (mt && ct_is_manifest && strcmp(mt, ct) != 0)
        return lerr_set(e, -EINVAL, "mediaType %.100s disagrees with the Content-Type %.100s", mt,
                        ct);
    if (!mt && ct_is_manifest)
        mt = ct;
    if (!mt) /* OCI allows leaving it out: tell by the fields */
        mt = json_object_get(j, "manifests") ? IMG_MT_OCI_INDEX : IMG_MT_OCI_MANIFEST;
    if (copy_str(m->media_type, sizeof(m->media_type), mt) < 0)
        return lerr_set(e, -EINVAL, "mediaType: too long");

    if (strcmp(mt, IMG_MT_OCI_INDEX) == 0 || strcmp(mt, IMG_MT_DOCKER_LIST) == 0) {
        m->kind = IMG_KIND_INDEX;
        r = parse_index(json_object_get(j, "manifests"), m, e);
    } else if (strcmp(mt, IMG_MT_OCI_MANIFEST) == 0 || strcmp(mt, IMG_MT_DOCKER_MANIFEST) == 0) {
        m->kind = IMG_KIND_IMAGE;
        r = parse_desc(json_object_get(j, "config"), "config", &m->config, e);
        if (r >= 0 && strcmp(m->config.media_type, IMG_MT_DOCKER_CONFIG) != 0 &&
            strcmp(m->config.media_type, IMG_MT_OCI_CONFIG) != 0)
            r = lerr_set(e, -ENOTSUP, "config.mediaType: %s is not a container image config",
                         m->config.media_type);
        if (r >= 0 && m->config.size > IMG_CONFIG_MAX)
            r = lerr_set(e, -E2BIG, "config.size: %llu bytes, at most %u",
                         (unsigned long long)m->config.size, IMG_CONFIG_MAX);
        if (r >= 0)
            r = parse_layers(json_object_get(j, "layers"), m, e);
    } else {
        r = lerr_set(e, -ENOTSUP, "unsupported manifest media type %s", mt);
    }
    if (r < 0)
        return r;
    *ret = TAKE_PTR(m);
    return 0;
}

/* ---- platforms ------------------------------------------------------------------------------- */

/* Go's names for what uname and Debian call architectures. */
static void normalize_platform(struct img_platform *p)
{
    static const struct {
        const char *from, *arch, *variant;
    } aliases[] = {
        {"x86_64", "amd64", ""}, {"x86-64", "amd64", ""},    {"aarch64", "arm64", ""},
        {"armhf", "arm", "v7"},  {"armel", "arm", "v6"},     {"armv7l", "arm", "v7"},
        {"armv6l", "arm", "v6"}, {"armv5tel", "arm", "v5"},  {"i386", "386", ""},
        {"i686", "386", ""},     {"ppc64el", "ppc64le", ""},
    };
    lstr_lower(p->os);
    lstr_lower(p->architecture);
    lstr_lower(p->variant);
    for (size_t i = 0; i < ARRAY_SIZE(aliases); i++)
        if (strcmp(p->architecture, aliases[i].from) == 0) {
            snprintf(p->architecture, sizeof(p->architecture), "%s", aliases[i].arch);
            if (!p->variant[0])
                snprintf(p->variant, sizeof(p->variant), "%s", aliases[i].variant);
        }
    if (strcmp(p->architecture, "arm64") == 0 && strcmp(p->variant, "v8") == 0)
        p->variant[0] = 0;
    if (strcmp(p->architecture, "arm") == 0 && !p->variant[0])
        snprintf(p->variant, sizeof(p->variant), "v7");
}

int img_platform_host(struct img_platform *ret)
{
    struct utsname u;
    if (uname(&u) < 0)
        return neg_errno();
    struct img_platform p = {.os = "linux"};
    snprintf(p.architecture, sizeof(p.architecture), "%.31s", u.machine);
    normalize_platform(&p);
    *ret = p;
    return 0;
}

int img_platform_parse(const char *s, struct img_platform *ret, struct lerr *e)
{
    struct img_platform p = {0};
    char buf[96];
    if (!s || lstr_copy(buf, sizeof(buf), s) < 0)
        return lerr_set(e, -EINVAL, "platform: must be os/architecture[/variant]");
    char *parts[4] = {0};
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(buf, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == 3)
            return lerr_set(e, -EINVAL, "platform %.90s: must be os/architecture[/variant]", s);
        parts[n++] = t;
    }
    if (n == 0)
        return lerr_set(e, -EINVAL, "platform: must be os/architecture[/variant]");
    const char *os = n == 1 ? "linux" : parts[0], *arch = n == 1 ? parts[0] : parts[1];
    const char *variant = n == 3 ? parts[2] : "";
    if (copy_str(p.os, sizeof(p.os), os) < 0 ||
        copy_str(p.architecture, sizeof(p.architecture), arch) < 0 ||
        copy_str(p.variant, sizeof(p.variant), variant) < 0)
        return lerr_set(e, -EINVAL, "platform %.90s: a part is too long", s);
    normalize_platform(&p);
    *ret = p;
    return 0;
}

int img_platform_format(const struct img_platform *p, char *dst, size_t size)
{
    int n = snprintf(dst, size, "%s/%s%s%s", p->os, p->architecture, p->variant[0] ? "/" : "",
                     p->variant);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static int arm_version(const char *variant)
{
    if (variant[0] != 'v' || variant[1] < '5' || variant[1] > '8' || variant[2])
        return -1;
    return variant[1] - '0';
}

int img_platform_score(const struct img_platform *want_in, const struct img_platform *have_in)
{
    struct img_platform want = *want_in, have = *have_in;
    normalize_platform(&want);
    normalize_platform(&have);
    if (strcmp(want.os, have.os) != 0 || strcmp(want.architecture, have.architecture) != 0)
        return -1;
    if (strcmp(want.architecture, "arm") == 0) {
        int w = arm_version(want.variant), h = arm_version(have.variant);
        if (w < 0 || h < 0 || h > w)
            return -1;
        return 10 - (w - h); /* v7 on v7 beats v6 on v7 */
    }
    return strcmp(want.variant, have.variant) == 0 ? 10 : 9;
}

int img_index_select(const struct img_manifest *index, const struct img_platform *want,
                     const struct img_desc **ret, struct lerr *e)
{
    const struct img_desc *best = NULL;
    int best_score = -1;
    for (size_t i = 0; i < index->n_descs; i++) {
        const struct img_desc *d = &index->descs[i];
        if (!d->has_platform)
            continue;
        int s = img_platform_score(want, &d->platform);
        if (s > best_score) {
            best = d;
            best_score = s;
        }
    }
    if (best) {
        *ret = best;
        return 0;
    }
    char w[96], offered[256] = "";
    img_platform_format(want, w, sizeof(w));
    size_t off = 0;
    for (size_t i = 0; i < index->n_descs && off + 1 < sizeof(offered); i++) {
        char p[96];
        if (!index->descs[i].has_platform ||
            img_platform_format(&index->descs[i].platform, p, sizeof(p)) < 0)
            continue;
        int k = snprintf(offered + off, sizeof(offered) - off, "%s%s", off ? ", " : "", p);
        if (k < 0)
            break;
        off += MIN((size_t)k, sizeof(offered) - off - 1);
    }
    return lerr_set(e, -ENOENT, "no manifest for platform %s (the index offers: %s)", w,
                    off ? offered : "none");
}

/* ---- image config ---------------------------------------------------------------------------- */

void img_config_free(struct img_config *c)
{
    if (!c)
        return;
    lstrv_free(&c->diff_ids);
    json_decref(c->doc);
    free(c);
}

int img_config_parse(const char *text, size_t n, struct img_config **ret, struct lerr *e)
{
    if (n > IMG_CONFIG_MAX)
        return lerr_set(e, -E2BIG, "image config of %zu bytes, at most %u", n, IMG_CONFIG_MAX);
    _cleanup_img_config_ struct img_config *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int r = ljson_parse(text, n, &c->doc, e);
    if (r < 0)
        return r;
    if (!json_is_object(c->doc))
        return lerr_set(e, -EINVAL, "image config: must be a JSON object");
    const char *os = ljson_str(c->doc, "os"), *arch = ljson_str(c->doc, "architecture");
    const char *variant = ljson_str(c->doc, "variant");
    if (!os || !arch)
        return lerr_set(e, -EINVAL, "image config: os and architecture must be strings");
    if (copy_str(c->platform.os, sizeof(c->platform.os), os) < 0 ||
        copy_str(c->platform.architecture, sizeof(c->platform.architecture), arch) < 0 ||
        copy_str(c->platform.variant, sizeof(c->platform.variant), variant ? variant : "") < 0)
        return lerr_set(e, -EINVAL, "image config: os, architecture or variant too long");
    json_t *rootfs = json_object_get(c->doc, "rootfs");
    const char *type = ljson_str(rootfs, "type");
    if (!type || strcmp(type, "layers") != 0)
        return lerr_set(e, -EINVAL, "image config: rootfs.type must be \"layers\"");
    json_t *ids = json_object_get(rootfs, "diff_ids");
    if (!json_is_array(ids))
        return lerr_set(e, -EINVAL, "image config: rootfs.diff_ids must be an array");
    if (json_array_size(ids) > IMG_LAYERS_MAX)
        return lerr_set(e, -E2BIG, "image config: %zu layers, at most %d", json_array_size(ids),
                        IMG_LAYERS_MAX);
    size_t i;
    json_t *v;
    json_array_foreach (ids, i, v) {
        const char *d = json_string_value(v);
        if (!d || !img_digest_valid(d))
            return lerr_set(e, -EINVAL,
                            "image config: rootfs.diff_ids[%zu]: must be sha256:<64 hex digits>",
                            i);
        if ((r = lstrv_push(&c->diff_ids, d)) < 0)
            return r;
    }
    json_t *cfg = json_object_get(c->doc, "config");
    if (cfg && !json_is_object(cfg) && !json_is_null(cfg))
        return lerr_set(e, -EINVAL, "image config: config must be an object");
    *ret = TAKE_PTR(c);
    return 0;
}
