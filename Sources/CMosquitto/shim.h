#ifndef RAILGATE_CMOSQUITTO_SHIM_H
#define RAILGATE_CMOSQUITTO_SHIM_H
#include <mosquitto.h>
// Nothing to re-export: the MOSQ_ERR_* codes are a named enum Swift imports as is.
#endif
