#include "baseline.h"
#include <stdio.h>
#include <modbus.h>
#include <time.h>

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

double baseline_poll_loop(const char *host, int port, int unit, const baseline_request *requests, int request_count,
                          int cycles) {
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    modbus_t *ctx = modbus_new_tcp_pi(host, service);
    if (ctx == NULL) return -1;
    if (modbus_connect(ctx) == -1) {
        modbus_free(ctx);
        return -1;
    }
    modbus_set_slave(ctx, unit);
    uint16_t registers[125];
    uint8_t bits[2000];
    double start = now_seconds();
    for (int cycle = 0; cycle < cycles; cycle++) {
        for (int i = 0; i < request_count; i++) {
            const baseline_request *r = &requests[i];
            int rc;
            switch (r->table) {
            case 0: rc = modbus_read_bits(ctx, r->address, r->count, bits); break;
            case 1: rc = modbus_read_input_bits(ctx, r->address, r->count, bits); break;
            case 2: rc = modbus_read_input_registers(ctx, r->address, r->count, registers); break;
            default: rc = modbus_read_registers(ctx, r->address, r->count, registers); break;
            }
            if (rc == -1) {
                modbus_close(ctx);
                modbus_free(ctx);
                return -1;
            }
        }
    }
    double elapsed = now_seconds() - start;
    modbus_close(ctx);
    modbus_free(ctx);
    return elapsed;
}
