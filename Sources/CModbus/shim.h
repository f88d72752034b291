#ifndef RAILGATE_CMODBUS_SHIM_H
#define RAILGATE_CMODBUS_SHIM_H
#include <modbus.h>

// libmodbus defines its error codes as expression macros (MODBUS_ENOBASE + n), which Swift
// does not import. Re-exported here as constants so the Swift layer can map errno exactly.
static const int railgate_modbus_enobase = MODBUS_ENOBASE;
static const int railgate_modbus_embbadcrc = EMBBADCRC;
static const int railgate_modbus_embbaddata = EMBBADDATA;
static const int railgate_modbus_embbadexc = EMBBADEXC;
static const int railgate_modbus_embunkexc = EMBUNKEXC;
static const int railgate_modbus_embmdata = EMBMDATA;
static const int railgate_modbus_embbadslave = EMBBADSLAVE;
#endif
