#ifndef RAILGATE_GPIO_H
#define RAILGATE_GPIO_H
// One small C API over libgpiod 1.6 (the v1 API) and libgpiod 2.x (chip, line settings, line
// config, request config, edge event buffer). Which one is compiled in is decided by the
// <gpiod.h> that pkg-config finds (railgate_gpio.c); Swift sees only this header, the same for
// both. Every function that fails returns NULL or -1 with errno set right after the failing
// libgpiod or system call. Not thread-safe per object: one thread per chip or request.
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/// An open GPIO chip.
struct railgate_gpio_chip;
/// Lines of one chip requested as inputs with both-edge events.
struct railgate_gpio_request;

/// A line as gpioinfo shows it; strings are cut at 63 bytes.
struct railgate_gpio_line_info {
    char name[64];
    char consumer[64];
    bool used;
    bool output;
    bool active_low;
};

/// One edge: the line offset, the logical level after it (active-low applied) and the kernel's
/// timestamp in nanoseconds on the clock `railgate_gpio_request_clock` names.
struct railgate_gpio_event {
    unsigned int offset;
    bool rising;
    uint64_t timestamp_ns;
};

/// The clock of event timestamps.
enum railgate_gpio_clock {
    /// CLOCK_MONOTONIC (libgpiod 2 asks for it; v1 on kernels 5.7 and later).
    RAILGATE_GPIO_CLOCK_MONOTONIC = 0,
    /// Whatever the kernel gives: v1 before kernel 5.7 gave CLOCK_REALTIME. The caller tells
    /// from the value (see GPIOEventClock in RailgateGPIO).
    RAILGATE_GPIO_CLOCK_KERNEL_DEFAULT = 1,
};

/// 1 or 2: the libgpiod API compiled in.
int railgate_gpio_api_major(void);
/// The library's version string at run time (`gpiod_version_string` / `gpiod_api_version`).
const char *railgate_gpio_library_version(void);

/// Opens a chip by name (gpiochip0), path (/dev/gpiochip0), number (0) or label.
/// v1: `gpiod_chip_open_lookup`; v2: `gpiod_chip_open` on the path, the label looked up in /dev.
struct railgate_gpio_chip *railgate_gpio_chip_open(const char *descriptor);
void railgate_gpio_chip_close(struct railgate_gpio_chip *chip);
const char *railgate_gpio_chip_name(struct railgate_gpio_chip *chip);
const char *railgate_gpio_chip_label(struct railgate_gpio_chip *chip);
unsigned int railgate_gpio_chip_num_lines(struct railgate_gpio_chip *chip);
/// 0, or -1 with errno.
int railgate_gpio_line_info(struct railgate_gpio_chip *chip, unsigned int offset, struct railgate_gpio_line_info *info);

/// Requests `count` lines as inputs with both-edge events under `consumer`. On EBUSY the
/// offset that was busy is in `*failed_offset`. v1: `gpiod_line_request_bulk_both_edges_events_flags`;
/// v2: `gpiod_chip_request_lines` with one line settings for all (edge both, monotonic clock).
struct railgate_gpio_request *railgate_gpio_request_events(
    struct railgate_gpio_chip *chip, const unsigned int *offsets, size_t count, bool active_low,
    const char *consumer, unsigned int *failed_offset);
void railgate_gpio_request_release(struct railgate_gpio_request *request);
enum railgate_gpio_clock railgate_gpio_request_clock(struct railgate_gpio_request *request);
/// The logical values (active-low applied) of the requested lines, in request order. 0 or -1.
int railgate_gpio_request_values(struct railgate_gpio_request *request, int *values);
/// Waits up to `timeout_ms` for events: 1 ready, 0 timeout, -1 error (EINTR is left to the caller).
int railgate_gpio_request_wait(struct railgate_gpio_request *request, int timeout_ms);
/// Reads the events that are ready, without blocking, up to `max`: their count, or -1.
int railgate_gpio_request_read(struct railgate_gpio_request *request, struct railgate_gpio_event *events, size_t max);

#endif
