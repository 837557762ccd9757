/* deployment.c — the checks' view of a parsed deployment manifest (agent/manifest.h), for every
 * caller that has one: `ledge check` (from ledged or a file) and ledged itself. */
#include <errno.h>
#include <stdlib.h>

#include "agent/manifest.h"
#include "check/check.h"

int check_deployment_view(const struct deployment *dep, const char *source,
                          struct check_deployment_view *ret)
{
    struct check_module *modules = calloc(dep->n_modules ? dep->n_modules : 1, sizeof(*modules));
    if (!modules)
        return -ENOMEM;
    for (size_t i = 0; i < dep->n_modules; i++) {
        const struct module_spec *m = &dep->modules[i];
        struct check_module *cm = &modules[i];
        cm->name = m->name;
        cm->system = m->system;
        if (m->type != MODULE_TYPE_DOCKER)
            continue;
        cm->image = m->image;
        cm->create_options = m->create_options;
        const struct registry_credential *cred = deployment_credential_for(dep, m->image);
        if (cred) {
            cm->registry_server = cred->address;
            cm->registry_username = cred->username;
            cm->registry_password = cred->password;
        }
    }
    *ret = (struct check_deployment_view){
        .d =
            {
                .source = source,
                .min_docker_version = dep->min_docker_version,
                .logging_options = dep->logging_options,
                .modules = modules,
                .n_modules = dep->n_modules,
            },
        .modules = modules,
    };
    return 0;
}

void check_deployment_view_clear(struct check_deployment_view *v)
{
    if (!v)
        return;
    free(v->modules);
    v->modules = NULL;
    v->d.modules = NULL;
    v->d.n_modules = 0;
}
