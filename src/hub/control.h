/* control.h — the hub's control API for ledged: HTTP/1.1 + JSON on a unix socket only root can
 * reach (hub.control_socket, 0600): status, twins, methods. */
#pragma once

#include "hub.h"

int control_start(struct hub *h);
void control_stop(struct hub *h);
