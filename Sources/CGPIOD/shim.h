#ifndef RAILGATE_CGPIOD_SHIM_H
#define RAILGATE_CGPIOD_SHIM_H
// libgpiod v1 (Debian 12 ships 1.6.3). v2 keeps the header and pkg-config name but not the API:
// fail the build clearly rather than with a hundred missing symbols.
#include <gpiod.h>
#ifndef GPIOD_LINE_BULK_MAX_LINES
#error "railgate needs the libgpiod v1 API (1.6.x, Debian 12's libgpiod-dev)"
#endif
#endif
