#ifndef RAILGATE_CMOSQUITTO_SHIM_H
#define RAILGATE_CMOSQUITTO_SHIM_H
#include <mosquitto.h>
#include <mqtt_protocol.h>
// The MOSQ_ERR_* codes are a named enum Swift imports as is; the log levels are expression
// macros ((1<<3)), which it does not: re-exported here.
static const int railgate_mosq_log_err = MOSQ_LOG_ERR;
static const int railgate_mosq_log_warning = MOSQ_LOG_WARNING;
#endif
