#ifndef RAILGATE_CGPIOD_SHIM_H
#define RAILGATE_CGPIOD_SHIM_H
// libgpiod, v1 (1.6, Debian 12) or v2 (2.x): the same header and pkg-config name, incompatible
// APIs. Swift does not call it directly: CGPIODShim (railgate_gpio.h) wraps both.
#include <gpiod.h>
#endif
