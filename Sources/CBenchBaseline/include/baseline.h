#ifndef RAILGATE_BENCH_BASELINE_H
#define RAILGATE_BENCH_BASELINE_H
#include <stdint.h>

/// One read request of the baseline loop: table 0 coil, 1 discrete, 2 input, 3 holding.
typedef struct {
    int table;
    int address;
    int count;
} baseline_request;

/// The plain C libmodbus loop railgate's poller is measured against: connects to host:port and
/// runs `cycles` cycles of `request_count` reads from `unit`. Returns the seconds it took, or
/// a negative number on a Modbus error.
double baseline_poll_loop(const char *host, int port, int unit, const baseline_request *requests, int request_count,
                          int cycles);
#endif
