/* autostart.h — bring back the VMs marked autostart: ledged calls this when it starts (so VMs
 * come back after a host reboot), and it is harmless when they run (their supervisors are left
 * alone: a VM's lock tells). */
#pragma once

#include <stdbool.h>

/* Called once per autostart VM: started (result 0), already supervised (result 1), or failed
 * (result < 0, msg says why). */
typedef void (*vm_autostart_fn)(void *ud, const char *name, int result, const char *msg);

/* Start ledge-vmm for every VM under vmroot with autostart on that has none. Returns how many
 * were started, or < 0 when the directory cannot be read (-ENOENT: no VMs, not an error). */
int vm_autostart(const char *vmroot, vm_autostart_fn report, void *ud);
