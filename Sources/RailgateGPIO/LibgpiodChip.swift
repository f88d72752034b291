import CGPIODShim
import Glibc

/// Which libgpiod this build uses: chosen at build time from the `<gpiod.h>` pkg-config found
/// (1.6: the v1 API; 2.x: chip, line settings, line config, request config, edge event buffer).
public enum LibgpiodBackend {
    /// 1 or 2. The corresponding C function is `railgate_gpio_api_major` (CGPIODShim).
    public static var apiMajor: Int { Int(railgate_gpio_api_major()) }
    /// The library's own version at run time, such as "1.6.3" or "2.1.3" (`gpiod_version_string`,
    /// `gpiod_api_version`).
    public static var libraryVersion: String { String(cString: railgate_gpio_library_version()) }
    /// "libgpiod 1.6.3 (v1 API)", as `railgate --version` and `status` show it.
    public static var summary: String { "libgpiod \(libraryVersion) (v\(apiMajor) API)" }
}

/// A kernel GPIO chip through libgpiod v1 or v2 (CGPIODShim's `struct railgate_gpio_chip`),
/// closed in `deinit`.
final class LibgpiodChip: GPIOChip {
    fileprivate let chip: OpaquePointer
    fileprivate let descriptor: String

    /// The corresponding C function is `railgate_gpio_chip_open` (v1 `gpiod_chip_open_lookup`,
    /// v2 `gpiod_chip_open`).
    init(_ descriptor: String) throws(GPIOError) {
        errno = 0
        guard let chip = railgate_gpio_chip_open(descriptor) else {
            throw GPIOError.from(errno: errno == 0 ? ENOENT : errno, chip: descriptor)
        }
        self.chip = chip
        self.descriptor = descriptor
    }

    deinit { railgate_gpio_chip_close(chip) }

    var name: String { String(cString: railgate_gpio_chip_name(chip)) }
    var label: String { String(cString: railgate_gpio_chip_label(chip)) }
    var lineCount: Int { Int(railgate_gpio_chip_num_lines(chip)) }

    private func checkOffset(_ offset: Int) throws(GPIOError) {
        guard offset >= 0, offset < lineCount else {
            throw GPIOError(.noSuchLine(lineCount: lineCount), chip: descriptor, line: offset)
        }
    }

    /// The corresponding C function is `railgate_gpio_line_info`.
    func lineInfo(_ offset: Int) throws(GPIOError) -> GPIOLineInfo {
        try checkOffset(offset)
        var info = railgate_gpio_line_info()
        guard railgate_gpio_line_info(chip, UInt32(offset), &info) == 0 else {
            throw GPIOError.from(errno: errno, chip: descriptor, line: offset)
        }
        return GPIOLineInfo(
            offset: offset, name: Self.string(info.name), consumer: Self.string(info.consumer), isUsed: info.used,
            isOutput: info.output, activeLow: info.active_low, level: nil)
    }

    /// The corresponding C function is `railgate_gpio_request_events` (v1
    /// `gpiod_line_request_both_edges_events_flags` per line, v2 `gpiod_chip_request_lines`).
    func watch(lines offsets: [Int], activeLow: Bool, consumer: String) throws(GPIOError) -> any GPIOLineWatch {
        for offset in offsets { try checkOffset(offset) }
        var failed: UInt32 = 0
        let cOffsets = offsets.map { UInt32($0) }
        guard let request = railgate_gpio_request_events(chip, cOffsets, cOffsets.count, activeLow, consumer, &failed)
        else {
            var error = GPIOError.from(errno: errno, chip: descriptor, line: Int(failed))
            if case .lineBusy = error.kind {
                error.kind = .lineBusy(consumer: (try? lineInfo(Int(failed)).consumer) ?? "")
            }
            throw error
        }
        return LibgpiodWatch(chip: self, request: request, offsets: offsets)
    }

    fileprivate static func string<T>(_ tuple: T) -> String {
        withUnsafeBytes(of: tuple) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}

/// Lines of a libgpiod chip requested for events; released in `release()` or `deinit`.
final class LibgpiodWatch: GPIOLineWatch {
    private let chip: LibgpiodChip  // keeps the chip open while its lines are held
    private var request: OpaquePointer?
    private let offsets: [Int]
    private let clock: railgate_gpio_clock

    init(chip: LibgpiodChip, request: OpaquePointer, offsets: [Int]) {
        self.chip = chip
        self.request = request
        self.offsets = offsets
        clock = railgate_gpio_request_clock(request)
    }

    deinit { release() }

    /// The corresponding C function is `railgate_gpio_request_values` (v1 `gpiod_line_get_value`,
    /// v2 `gpiod_line_request_get_values_subset`).
    func levels() throws(GPIOError) -> [Int: Bool] {
        guard let request else { throw GPIOError(.io, chip: chip.descriptor, code: EBADF) }
        var values = [Int32](repeating: 0, count: offsets.count)
        guard railgate_gpio_request_values(request, &values) == 0 else {
            throw GPIOError.from(errno: errno, chip: chip.descriptor)
        }
        return Dictionary(uniqueKeysWithValues: zip(offsets, values.map { $0 == 1 }))
    }

    /// The corresponding C functions are `railgate_gpio_request_wait` and `railgate_gpio_request_read`
    /// (v1 `gpiod_line_event_read_fd_multiple`, v2 `gpiod_line_request_read_edge_events`).
    /// Timestamps come back on CLOCK_MONOTONIC: see `GPIOEventClock`.
    func waitForEdges(timeoutMs: Int) throws(GPIOError) -> [GPIOEdge] {
        guard let request else { throw GPIOError(.io, chip: chip.descriptor, code: EBADF) }
        let ready = railgate_gpio_request_wait(request, Int32(timeoutMs))
        if ready < 0 {
            if errno == EINTR { return [] }
            throw GPIOError.from(errno: errno, chip: chip.descriptor)
        }
        guard ready > 0 else { return [] }
        var events = [railgate_gpio_event](repeating: railgate_gpio_event(), count: 64)
        let count = railgate_gpio_request_read(request, &events, events.count)
        guard count >= 0 else { throw GPIOError.from(errno: errno, chip: chip.descriptor) }
        let now = GPIOEventClock.Now.read()
        return events.prefix(Int(count)).map { event in
            let stamp = Int64(bitPattern: event.timestamp_ns)
            return GPIOEdge(
                line: Int(event.offset), active: event.rising,
                timestampNs: clock == RAILGATE_GPIO_CLOCK_MONOTONIC ? stamp : GPIOEventClock.monotonic(stamp, now: now))
        }.sorted { $0.timestampNs < $1.timestampNs }
    }

    /// The corresponding C function is `railgate_gpio_request_release`.
    func release() {
        if let request { railgate_gpio_request_release(request) }
        request = nil
    }
}
