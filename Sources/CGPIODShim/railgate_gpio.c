// railgate_gpio.h over libgpiod 1.6 (v1 API) or 2.x, whichever <gpiod.h> pkg-config found.
// libgpiod 1.x defines GPIOD_LINE_BULK_MAX_LINES; 2.x has no bulk API.
#define _GNU_SOURCE
#include "railgate_gpio.h"

#include <dirent.h>
#include <errno.h>
#include <gpiod.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RAILGATE_GPIO_MAX_LINES 64

static void copy_string(char *out, size_t size, const char *text) {
    snprintf(out, size, "%s", text ? text : "");
}

#ifdef GPIOD_LINE_BULK_MAX_LINES
// ---------------------------------------------------------------- libgpiod 1.6 (v1 API)

struct railgate_gpio_chip {
    struct gpiod_chip *chip;
};

struct railgate_gpio_request {
    size_t count;
    struct gpiod_line *lines[RAILGATE_GPIO_MAX_LINES];
};

int railgate_gpio_api_major(void) { return 1; }
const char *railgate_gpio_library_version(void) { return gpiod_version_string(); }

struct railgate_gpio_chip *railgate_gpio_chip_open(const char *descriptor) {
    errno = 0;
    struct gpiod_chip *chip = gpiod_chip_open_lookup(descriptor);
    if (!chip) {
        if (errno == 0) errno = ENOENT;
        return NULL;
    }
    struct railgate_gpio_chip *result = calloc(1, sizeof(*result));
    if (!result) {
        gpiod_chip_close(chip);
        errno = ENOMEM;
        return NULL;
    }
    result->chip = chip;
    return result;
}

void railgate_gpio_chip_close(struct railgate_gpio_chip *chip) {
    if (!chip) return;
    gpiod_chip_close(chip->chip);
    free(chip);
}

const char *railgate_gpio_chip_name(struct railgate_gpio_chip *chip) { return gpiod_chip_name(chip->chip); }
const char *railgate_gpio_chip_label(struct railgate_gpio_chip *chip) { return gpiod_chip_label(chip->chip); }
unsigned int railgate_gpio_chip_num_lines(struct railgate_gpio_chip *chip) { return gpiod_chip_num_lines(chip->chip); }

int railgate_gpio_line_info(struct railgate_gpio_chip *chip, unsigned int offset, struct railgate_gpio_line_info *info) {
    struct gpiod_line *line = gpiod_chip_get_line(chip->chip, offset);
    if (!line) return -1;
    // gpiod_chip_get_line caches the line: refresh what another process may have changed.
    if (!gpiod_line_is_requested(line) && gpiod_line_update(line) != 0) return -1;
    copy_string(info->name, sizeof(info->name), gpiod_line_name(line));
    copy_string(info->consumer, sizeof(info->consumer), gpiod_line_consumer(line));
    info->used = gpiod_line_is_used(line);
    info->output = gpiod_line_direction(line) == GPIOD_LINE_DIRECTION_OUTPUT;
    info->active_low = gpiod_line_active_state(line) == GPIOD_LINE_ACTIVE_STATE_LOW;
    return 0;
}

void railgate_gpio_request_release(struct railgate_gpio_request *request) {
    if (!request) return;
    for (size_t i = 0; i < request->count; i++) gpiod_line_release(request->lines[i]);
    free(request);
}

struct railgate_gpio_request *railgate_gpio_request_events(
    struct railgate_gpio_chip *chip, const unsigned int *offsets, size_t count, bool active_low,
    const char *consumer, unsigned int *failed_offset) {
    if (count == 0 || count > RAILGATE_GPIO_MAX_LINES) {
        errno = EINVAL;
        return NULL;
    }
    struct railgate_gpio_request *request = calloc(1, sizeof(*request));
    if (!request) {
        errno = ENOMEM;
        return NULL;
    }
    int flags = active_low ? GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW : 0;
    // One line at a time (the v1 uAPI makes one event request per line anyway): an EBUSY then
    // names the line that is held.
    for (size_t i = 0; i < count; i++) {
        struct gpiod_line *line = gpiod_chip_get_line(chip->chip, offsets[i]);
        if (!line || gpiod_line_request_both_edges_events_flags(line, consumer, flags) != 0) {
            int code = errno;
            *failed_offset = offsets[i];
            railgate_gpio_request_release(request);
            errno = code;
            return NULL;
        }
        request->lines[request->count++] = line;
    }
    return request;
}

enum railgate_gpio_clock railgate_gpio_request_clock(struct railgate_gpio_request *request) {
    (void)request;
    return RAILGATE_GPIO_CLOCK_KERNEL_DEFAULT;
}

int railgate_gpio_request_values(struct railgate_gpio_request *request, int *values) {
    for (size_t i = 0; i < request->count; i++) {
        int value = gpiod_line_get_value(request->lines[i]);
        if (value < 0) return -1;
        values[i] = value;
    }
    return 0;
}

static int poll_lines(struct railgate_gpio_request *request, struct pollfd *fds, int timeout_ms) {
    for (size_t i = 0; i < request->count; i++) {
        fds[i].fd = gpiod_line_event_get_fd(request->lines[i]);
        fds[i].events = POLLIN | POLLPRI;
        fds[i].revents = 0;
    }
    return poll(fds, request->count, timeout_ms);
}

int railgate_gpio_request_wait(struct railgate_gpio_request *request, int timeout_ms) {
    struct pollfd fds[RAILGATE_GPIO_MAX_LINES];
    int ready = poll_lines(request, fds, timeout_ms);
    return ready < 0 ? -1 : (ready > 0 ? 1 : 0);
}

int railgate_gpio_request_read(struct railgate_gpio_request *request, struct railgate_gpio_event *events, size_t max) {
    struct pollfd fds[RAILGATE_GPIO_MAX_LINES];
    if (poll_lines(request, fds, 0) < 0) return -1;
    size_t total = 0;
    for (size_t i = 0; i < request->count && total < max; i++) {
        if (!(fds[i].revents & (POLLIN | POLLPRI))) continue;
        struct gpiod_line_event read[16];
        unsigned int room = (unsigned int)(max - total < 16 ? max - total : 16);
        int got = gpiod_line_event_read_fd_multiple(fds[i].fd, read, room);
        if (got < 0) return -1;
        for (int j = 0; j < got; j++) {
            events[total].offset = gpiod_line_offset(request->lines[i]);
            events[total].rising = read[j].event_type == GPIOD_LINE_EVENT_RISING_EDGE;
            events[total].timestamp_ns = (uint64_t)read[j].ts.tv_sec * 1000000000ULL + (uint64_t)read[j].ts.tv_nsec;
            total++;
        }
    }
    return (int)total;
}

#else
// ---------------------------------------------------------------- libgpiod 2.x

struct railgate_gpio_chip {
    struct gpiod_chip *chip;
    struct gpiod_chip_info *info;
};

struct railgate_gpio_request {
    struct gpiod_line_request *request;
    struct gpiod_edge_event_buffer *buffer;
    size_t count;
    unsigned int offsets[RAILGATE_GPIO_MAX_LINES];
};

int railgate_gpio_api_major(void) { return 2; }
const char *railgate_gpio_library_version(void) { return gpiod_api_version(); }

static struct railgate_gpio_chip *open_path(const char *path) {
    struct gpiod_chip *chip = gpiod_chip_open(path);
    if (!chip) return NULL;
    struct gpiod_chip_info *info = gpiod_chip_get_info(chip);
    if (!info) {
        int code = errno;
        gpiod_chip_close(chip);
        errno = code;
        return NULL;
    }
    struct railgate_gpio_chip *result = calloc(1, sizeof(*result));
    if (!result) {
        gpiod_chip_info_free(info);
        gpiod_chip_close(chip);
        errno = ENOMEM;
        return NULL;
    }
    result->chip = chip;
    result->info = info;
    return result;
}

static bool all_digits(const char *text) {
    if (!*text) return false;
    for (; *text; text++)
        if (*text < '0' || *text > '9') return false;
    return true;
}

// gpiod_chip_open_lookup's order from libgpiod 1.6: a path, a name, a number, then a label.
struct railgate_gpio_chip *railgate_gpio_chip_open(const char *descriptor) {
    char path[300];
    if (descriptor[0] == '/') return open_path(descriptor);
    if (strncmp(descriptor, "gpiochip", 8) == 0 && !strchr(descriptor, '/')) {
        snprintf(path, sizeof(path), "/dev/%s", descriptor);
        return open_path(path);
    }
    if (all_digits(descriptor)) {
        snprintf(path, sizeof(path), "/dev/gpiochip%s", descriptor);
        return open_path(path);
    }
    DIR *dev = opendir("/dev");
    if (!dev) return NULL;
    struct dirent *entry;
    int code = ENOENT;
    while ((entry = readdir(dev))) {
        if (strncmp(entry->d_name, "gpiochip", 8) != 0) continue;
        snprintf(path, sizeof(path), "/dev/%s", entry->d_name);
        struct railgate_gpio_chip *chip = open_path(path);
        if (!chip) {
            if (errno == EACCES || errno == EPERM) code = errno;
            continue;
        }
        if (strcmp(gpiod_chip_info_get_label(chip->info), descriptor) == 0) {
            closedir(dev);
            return chip;
        }
        railgate_gpio_chip_close(chip);
    }
    closedir(dev);
    errno = code;
    return NULL;
}

void railgate_gpio_chip_close(struct railgate_gpio_chip *chip) {
    if (!chip) return;
    gpiod_chip_info_free(chip->info);
    gpiod_chip_close(chip->chip);
    free(chip);
}

const char *railgate_gpio_chip_name(struct railgate_gpio_chip *chip) { return gpiod_chip_info_get_name(chip->info); }
const char *railgate_gpio_chip_label(struct railgate_gpio_chip *chip) { return gpiod_chip_info_get_label(chip->info); }
unsigned int railgate_gpio_chip_num_lines(struct railgate_gpio_chip *chip) {
    return (unsigned int)gpiod_chip_info_get_num_lines(chip->info);
}

int railgate_gpio_line_info(struct railgate_gpio_chip *chip, unsigned int offset, struct railgate_gpio_line_info *info) {
    struct gpiod_line_info *line = gpiod_chip_get_line_info(chip->chip, offset);
    if (!line) return -1;
    copy_string(info->name, sizeof(info->name), gpiod_line_info_get_name(line));
    copy_string(info->consumer, sizeof(info->consumer), gpiod_line_info_get_consumer(line));
    info->used = gpiod_line_info_is_used(line);
    info->output = gpiod_line_info_get_direction(line) == GPIOD_LINE_DIRECTION_OUTPUT;
    info->active_low = gpiod_line_info_is_active_low(line);
    gpiod_line_info_free(line);
    return 0;
}

void railgate_gpio_request_release(struct railgate_gpio_request *request) {
    if (!request) return;
    if (request->buffer) gpiod_edge_event_buffer_free(request->buffer);
    if (request->request) gpiod_line_request_release(request->request);
    free(request);
}

struct railgate_gpio_request *railgate_gpio_request_events(
    struct railgate_gpio_chip *chip, const unsigned int *offsets, size_t count, bool active_low,
    const char *consumer, unsigned int *failed_offset) {
    if (count == 0 || count > RAILGATE_GPIO_MAX_LINES) {
        errno = EINVAL;
        return NULL;
    }
    struct railgate_gpio_request *result = calloc(1, sizeof(*result));
    struct gpiod_line_settings *settings = gpiod_line_settings_new();
    struct gpiod_line_config *config = gpiod_line_config_new();
    struct gpiod_request_config *request_config = gpiod_request_config_new();
    int code = ENOMEM;
    if (!result || !settings || !config || !request_config) goto fail;
    if (gpiod_line_settings_set_direction(settings, GPIOD_LINE_DIRECTION_INPUT) != 0 ||
        gpiod_line_settings_set_edge_detection(settings, GPIOD_LINE_EDGE_BOTH) != 0 ||
        gpiod_line_settings_set_event_clock(settings, GPIOD_LINE_CLOCK_MONOTONIC) != 0) {
        code = errno;
        goto fail;
    }
    gpiod_line_settings_set_active_low(settings, active_low);
    if (gpiod_line_config_add_line_settings(config, offsets, count, settings) != 0) {
        code = errno;
        goto fail;
    }
    gpiod_request_config_set_consumer(request_config, consumer);
    result->buffer = gpiod_edge_event_buffer_new(64);
    if (!result->buffer) goto fail;
    result->request = gpiod_chip_request_lines(chip->chip, request_config, config);
    if (!result->request) {
        code = errno;
        // The kernel requests all lines at once: name the first one someone else holds.
        *failed_offset = offsets[0];
        for (size_t i = 0; i < count; i++) {
            struct gpiod_line_info *line = gpiod_chip_get_line_info(chip->chip, offsets[i]);
            bool used = line && gpiod_line_info_is_used(line);
            if (line) gpiod_line_info_free(line);
            if (used) {
                *failed_offset = offsets[i];
                break;
            }
        }
        goto fail;
    }
    result->count = count;
    memcpy(result->offsets, offsets, count * sizeof(*offsets));
    gpiod_request_config_free(request_config);
    gpiod_line_config_free(config);
    gpiod_line_settings_free(settings);
    return result;
fail:
    if (request_config) gpiod_request_config_free(request_config);
    if (config) gpiod_line_config_free(config);
    if (settings) gpiod_line_settings_free(settings);
    railgate_gpio_request_release(result);
    errno = code;
    return NULL;
}

enum railgate_gpio_clock railgate_gpio_request_clock(struct railgate_gpio_request *request) {
    (void)request;
    return RAILGATE_GPIO_CLOCK_MONOTONIC;
}

int railgate_gpio_request_values(struct railgate_gpio_request *request, int *values) {
    enum gpiod_line_value read[RAILGATE_GPIO_MAX_LINES];
    if (gpiod_line_request_get_values_subset(request->request, request->count, request->offsets, read) != 0) return -1;
    for (size_t i = 0; i < request->count; i++) values[i] = read[i] == GPIOD_LINE_VALUE_ACTIVE;
    return 0;
}

int railgate_gpio_request_wait(struct railgate_gpio_request *request, int timeout_ms) {
    struct pollfd fd = {.fd = gpiod_line_request_get_fd(request->request), .events = POLLIN | POLLPRI};
    int ready = poll(&fd, 1, timeout_ms);
    return ready < 0 ? -1 : (ready > 0 ? 1 : 0);
}

int railgate_gpio_request_read(struct railgate_gpio_request *request, struct railgate_gpio_event *events, size_t max) {
    struct pollfd fd = {.fd = gpiod_line_request_get_fd(request->request), .events = POLLIN | POLLPRI};
    int ready = poll(&fd, 1, 0);
    if (ready < 0) return -1;
    if (ready == 0) return 0;
    size_t room = max < 64 ? max : 64;
    int got = gpiod_line_request_read_edge_events(request->request, request->buffer, room);
    if (got < 0) return -1;
    for (int i = 0; i < got; i++) {
        struct gpiod_edge_event *event = gpiod_edge_event_buffer_get_event(request->buffer, (unsigned long)i);
        events[i].offset = gpiod_edge_event_get_line_offset(event);
        events[i].rising = gpiod_edge_event_get_event_type(event) == GPIOD_EDGE_EVENT_RISING_EDGE;
        events[i].timestamp_ns = gpiod_edge_event_get_timestamp_ns(event);
    }
    return got;
}
#endif
