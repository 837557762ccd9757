/* autostart.c — starting the supervisors of autostart VMs (autostart.h). */
#include "vm/autostart.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <unistd.h>

#include "vm/def.h"
#include "vm/paths.h"
#include "vm/update.h"
#include "spawn.h"

int vm_autostart(const char *vmroot, vm_autostart_fn report, void *ud)
{
    DIR *d = opendir(vmroot);
    if (!d)
        return neg_errno();
    int started = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[PATH_MAX];
        struct vm_def def;
        struct lerr err = {0};
        if (vm_name_check(e->d_name, NULL) < 0 ||
            vm_path(path, sizeof(path), vmroot, e->d_name, VM_FILE_DEF) < 0 ||
            access(path, F_OK) < 0)
            continue;
        if (vm_def_load(path, &def, &err) < 0) {
            if (report)
                report(ud, e->d_name, err.code ? err.code : -EINVAL, lerr_str(&err));
            continue;
        }
        bool want = def.autostart;
        vm_def_free(&def);
        if (!want)
            continue;
        bool supervised = vm_supervised(vmroot, e->d_name);
        if (!supervised) {
            /* an update cut short by a host stop: the VM boots a whole image (update.h) */
            struct vm_host h = {.root = vmroot};
            const char *what;
            if (vm_update_recover_stopped(&h, e->d_name, &what, &err) < 0) {
                if (report)
                    report(ud, e->d_name, err.code ? err.code : -EIO, lerr_str(&err));
                continue;
            }
        }
        int r = supervised ? 1 : vm_supervisor_spawn(vmroot, e->d_name, &err);
        if (r == 0)
            started++;
        if (report)
            report(ud, e->d_name, r, r < 0 ? lerr_str(&err) : "");
    }
    closedir(d);
    return started;
}
