import CGPIOD
import Glibc

/// A kernel GPIO chip through libgpiod v1 (`struct gpiod_chip`), closed in `deinit`.
final class LibgpiodChip: GPIOChip {
    private let chip: OpaquePointer
    private let descriptor: String

    /// The corresponding C function is `gpiod_chip_open_lookup`.
    init(_ descriptor: String) throws(GPIOError) {
        guard let chip = gpiod_chip_open_lookup(descriptor) else {
            throw GPIOError.from(errno: errno == 0 ? ENOENT : errno, chip: descriptor)
        }
        self.chip = chip
        self.descriptor = descriptor
    }

    deinit { gpiod_chip_close(chip) }

    var name: String { String(cString: gpiod_chip_name(chip)) }
    var label: String { String(cString: gpiod_chip_label(chip)) }
    var lineCount: Int { Int(gpiod_chip_num_lines(chip)) }

    private func line(_ offset: Int) throws(GPIOError) -> OpaquePointer {
        guard offset >= 0, offset < lineCount else {
            throw GPIOError(.noSuchLine(lineCount: lineCount), chip: descriptor, line: offset)
        }
        guard let line = gpiod_chip_get_line(chip, UInt32(offset)) else {
            throw GPIOError.from(errno: errno, chip: descriptor, line: offset)
        }
        return line
    }

    func lineInfo(_ offset: Int) throws(GPIOError) -> GPIOLineInfo {
        let line = try line(offset)
        return GPIOLineInfo(
            offset: offset, name: gpiod_line_name(line).map { String(cString: $0) } ?? "",
            consumer: gpiod_line_consumer(line).map { String(cString: $0) } ?? "", isUsed: gpiod_line_is_used(line),
            isOutput: gpiod_line_direction(line) == Int32(GPIOD_LINE_DIRECTION_OUTPUT),
            activeLow: gpiod_line_active_state(line) == Int32(GPIOD_LINE_ACTIVE_STATE_LOW), level: nil)
    }

    /// The corresponding C function is `gpiod_line_request_both_edges_events_flags`.
    func watch(lines offsets: [Int], activeLow: Bool, consumer: String) throws(GPIOError) -> any GPIOLineWatch {
        var requested: [(offset: Int, line: OpaquePointer)] = []
        let flags = activeLow ? Int32(GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW) : 0
        for offset in offsets {
            let line = try line(offset)
            if gpiod_line_request_both_edges_events_flags(line, consumer, flags) != 0 {
                let code = errno
                for (_, held) in requested { gpiod_line_release(held) }
                var error = GPIOError.from(errno: code, chip: descriptor, line: offset)
                if case .lineBusy = error.kind {
                    error.kind = .lineBusy(consumer: gpiod_line_consumer(line).map { String(cString: $0) } ?? "")
                }
                throw error
            }
            requested.append((offset, line))
        }
        return LibgpiodWatch(chip: self, descriptor: descriptor, lines: requested)
    }
}

/// Lines of a libgpiod chip requested for events; released in `release()` or `deinit`.
final class LibgpiodWatch: GPIOLineWatch {
    private let chip: LibgpiodChip  // keeps the chip open while its lines are held
    private let descriptor: String
    private var lines: [(offset: Int, line: OpaquePointer)]

    init(chip: LibgpiodChip, descriptor: String, lines: [(offset: Int, line: OpaquePointer)]) {
        self.chip = chip
        self.descriptor = descriptor
        self.lines = lines
    }

    deinit { release() }

    func levels() throws(GPIOError) -> [Int: Bool] {
        var levels: [Int: Bool] = [:]
        for (offset, line) in lines {
            let value = gpiod_line_get_value(line)
            guard value >= 0 else { throw GPIOError.from(errno: errno, chip: descriptor, line: offset) }
            levels[offset] = value == 1
        }
        return levels
    }

    /// The corresponding C functions are `poll` on `gpiod_line_event_get_fd` and `gpiod_line_event_read`.
    func waitForEdges(timeoutMs: Int) throws(GPIOError) -> [GPIOEdge] {
        var descriptors = lines.map { pollfd(fd: gpiod_line_event_get_fd($0.line), events: Int16(POLLIN), revents: 0) }
        let ready = poll(&descriptors, nfds_t(descriptors.count), Int32(timeoutMs))
        if ready < 0 {
            if errno == EINTR { return [] }
            throw GPIOError.from(errno: errno, chip: descriptor)
        }
        var edges: [GPIOEdge] = []
        for (index, polled) in descriptors.enumerated() where polled.revents & Int16(POLLIN) != 0 {
            var event = gpiod_line_event()
            guard gpiod_line_event_read(lines[index].line, &event) == 0 else {
                throw GPIOError.from(errno: errno, chip: descriptor, line: lines[index].offset)
            }
            edges.append(
                GPIOEdge(
                    line: lines[index].offset, active: event.event_type == Int32(GPIOD_LINE_EVENT_RISING_EDGE),
                    timestampNs: Int64(event.ts.tv_sec) * 1_000_000_000 + Int64(event.ts.tv_nsec)))
        }
        return edges.sorted { $0.timestampNs < $1.timestampNs }
    }

    func release() {
        for (_, line) in lines { gpiod_line_release(line) }
        lines = []
    }
}
