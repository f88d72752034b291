import Glibc
import RailgateCore
import RailgateSystem

/// The line protocol between `railgate-sim gate` (the server) and a simulated chip client.
/// One command per line from the client:
///
///     info                        -> one line of JSON: {"name","label","lines":[{"offset","name","consumer","used","level"}]}
///     watch CONSUMER L1 L2 ...    -> "levels L1=0 L2=1", then "edge L LEVEL NS" lines as they happen
///     set L LEVEL                 -> "ok"
///
/// Physical levels (0/1) on the wire; active-low is the client's business, as in the kernel.
/// Errors come back as "error busy L CONSUMER", "error range L COUNT" or "error MESSAGE".
public enum SimulatedChipProtocol {
    public static let chipName = "gpiosim"
    public static let chipLabel = "railgate-sim gate"
}

/// A simulated GPIO chip served by `railgate-sim gate` on a Unix socket (`sim:PATH`).
final class SimulatedGPIOChip: GPIOChip {
    let socketPath: String
    private let description: JSON

    init(socketPath: String) throws(GPIOError) {
        self.socketPath = socketPath
        let connection = try SimulatorConnection(socketPath: socketPath)
        try connection.send("info")
        let reply = try connection.readLine(timeoutMs: 5000)
        guard let document = try? JSONReader.parse(reply), document["lines"] != nil else {
            throw GPIOError(.io, chip: "sim:\(socketPath)", code: EPROTO)
        }
        description = document
    }

    var name: String { description["name"]?.stringValue ?? SimulatedChipProtocol.chipName }
    var label: String { description["label"]?.stringValue ?? "" }
    var lineCount: Int { description["lines"]?.arrayValue?.count ?? 0 }

    func lineInfo(_ offset: Int) throws(GPIOError) -> GPIOLineInfo {
        guard let line = description["lines"]?.arrayValue?.first(where: { $0["offset"]?.doubleValue == Double(offset) })
        else {
            throw GPIOError(.noSuchLine(lineCount: lineCount), chip: "sim:\(socketPath)", line: offset)
        }
        return GPIOLineInfo(
            offset: offset, name: line["name"]?.stringValue ?? "", consumer: line["consumer"]?.stringValue ?? "",
            isUsed: line["used"] == .bool(true), isOutput: false, activeLow: false,
            level: line["level"].map { $0.doubleValue == 1 })
    }

    func watch(lines: [Int], activeLow: Bool, consumer: String) throws(GPIOError) -> any GPIOLineWatch {
        let chip = "sim:\(socketPath)"
        let connection = try SimulatorConnection(socketPath: socketPath)
        let safeConsumer = consumer.isEmpty ? "railgate" : String(consumer.map { $0 == " " ? "_" : $0 })
        try connection.send("watch \(safeConsumer) " + lines.map(String.init).joined(separator: " "))
        let reply = try connection.readLine(timeoutMs: 5000)
        let levels: [Int: Bool]
        switch SimulatedChipProtocol.watchReply(reply) {
        case .levels(let physical): levels = physical.mapValues { $0 != activeLow }
        case .busy(let line, let consumer):
            throw GPIOError(.lineBusy(consumer: consumer), chip: chip, line: line, code: EBUSY)
        case .range(let line, let lineCount): throw GPIOError(.noSuchLine(lineCount: lineCount), chip: chip, line: line)
        case .refused: throw GPIOError(.io, chip: chip, code: EPROTO)
        }
        return SimulatedLineWatch(
            connection: connection, chip: chip, activeLow: activeLow, levels: levels, watched: Set(lines))
    }
}

/// Lines of a simulated chip being watched: the connection streams their edges, which
/// `SimulatedChipWatchState` takes or ignores.
final class SimulatedLineWatch: GPIOLineWatch {
    private var connection: SimulatorConnection?
    private let chip: String
    private var state: SimulatedChipWatchState

    init(connection: SimulatorConnection, chip: String, activeLow: Bool, levels: [Int: Bool], watched: Set<Int>) {
        self.connection = connection
        self.chip = chip
        state = SimulatedChipWatchState(
            watched: watched, activeLow: activeLow, levels: levels, startNs: MonotonicInstant.now().nanoseconds)
    }

    func levels() throws(GPIOError) -> [Int: Bool] { state.levels }

    func waitForEdges(timeoutMs: Int) throws(GPIOError) -> [GPIOEdge] {
        guard let connection else { throw GPIOError(.io, chip: chip, code: EBADF) }
        var edges: [GPIOEdge] = []
        var wait = timeoutMs
        while let line = try connection.readLineIfAny(timeoutMs: wait) {
            wait = 0  // take what has arrived, then return
            if let edge = state.take(line, nowNs: MonotonicInstant.now().nanoseconds) { edges.append(edge) }
        }
        return edges
    }

    func release() { connection = nil }
}

/// What the client of a simulated chip believes about the lines it watches, fed one line of the
/// simulator's stream at a time. Pure (the clock is passed in), so that the fuzzer drives it.
///
/// The simulator is outside input: edges on lines not watched and malformed edge lines are
/// ignored; an edge's CLOCK_MONOTONIC timestamp is clamped into [the previous edge's (or the
/// watch's start), now], so that no edge is dated before another or in the future (a timestamp
/// of Int64.min reads as the previous edge's time, never as a date in 1734).
public struct SimulatedChipWatchState: Sendable {
    public let watched: Set<Int>
    public let activeLow: Bool
    /// The logical level of each watched line (active-low applied), as last reported.
    public private(set) var levels: [Int: Bool]
    /// The newest edge's timestamp (the watch's start before any), CLOCK_MONOTONIC ns.
    public private(set) var lastTimestampNs: Int64

    /// - Parameter levels: logical levels from the `levels` reply; lines not watched are dropped.
    public init(watched: Set<Int>, activeLow: Bool, levels: [Int: Bool], startNs: Int64) {
        self.watched = watched
        self.activeLow = activeLow
        self.levels = levels.filter { watched.contains($0.key) }
        lastTimestampNs = startNs
    }

    /// The edge `line` reports (`edge OFFSET LEVEL NS`, LEVEL the physical 0 or 1), or nil when
    /// it is no well-formed edge of a watched line. `nowNs` is CLOCK_MONOTONIC now.
    public mutating func take(_ line: String, nowNs: Int64) -> GPIOEdge? {
        let words = line.split(separator: " ")
        guard words.count == 4, words[0] == "edge", let offset = Int(words[1]), watched.contains(offset),
            words[2] == "0" || words[2] == "1", let nanoseconds = Int64(words[3])
        else { return nil }
        let active = (words[2] == "1") != activeLow
        levels[offset] = active
        let timestamp = max(min(max(nanoseconds, lastTimestampNs), nowNs), lastTimestampNs)
        lastTimestampNs = timestamp
        return GPIOEdge(line: offset, active: active, timestampNs: timestamp)
    }
}

extension SimulatedChipProtocol {
    /// The simulator's answer to `watch CONSUMER L1 L2 ...`.
    public enum WatchReply: Sendable, Equatable {
        /// `levels L1=0 L2=1`: the physical level of each line named (malformed pairs left out).
        case levels([Int: Bool])
        /// `error busy L CONSUMER`.
        case busy(line: Int?, consumer: String)
        /// `error range L COUNT`: the chip has COUNT lines.
        case range(line: Int?, lineCount: Int)
        /// Any other `error ...`, or a line that is no reply at all.
        case refused(String)
    }

    /// Reads the reply to a `watch` command.
    public static func watchReply(_ reply: String) -> WatchReply {
        let words = reply.split(separator: " ").map(String.init)
        if words.first == "error" {
            if words.count >= 4, words[1] == "busy" { return .busy(line: Int(words[2]), consumer: words[3]) }
            if words.count >= 4, words[1] == "range" {
                return .range(line: Int(words[2]), lineCount: Int(words[3]) ?? 0)
            }
            return .refused(reply)
        }
        guard words.first == "levels" else { return .refused(reply) }
        var levels: [Int: Bool] = [:]
        for pair in words.dropFirst() {
            let parts = pair.split(separator: "=")
            if parts.count == 2, let line = Int(parts[0]) { levels[line] = parts[1] == "1" }
        }
        return .levels(levels)
    }
}

/// Cuts the simulator's byte stream into lines (LF-terminated), holding at most
/// `maxLineBytes` of a line without its newline: past that the stream is refused, not kept.
public struct SimulatedChipLineFramer: Sendable {
    /// Longest line accepted from the simulator, in bytes (its `info` reply is a few KiB).
    public static let maxLineBytes = 1 << 16

    private var buffered: [UInt8] = []
    private var scanned = 0  // bytes of `buffered` already searched for a newline

    public init() {}

    /// Bytes received and not yet returned as a line.
    public var pendingBytes: Int { buffered.count }

    /// Adds bytes received from the simulator.
    public mutating func append(_ bytes: some Sequence<UInt8>) { buffered += bytes }

    /// The next whole line without its LF, or nil when none is complete yet.
    /// - Throws: `SimulatedChipLineTooLong` when more than `maxLineBytes` came without a newline.
    public mutating func nextLine() throws(SimulatedChipLineTooLong) -> String? {
        if let newline = buffered[scanned...].firstIndex(of: 10) {
            let line = String(decoding: buffered[..<newline], as: UTF8.self)
            buffered.removeSubrange(...newline)
            scanned = 0
            return line
        }
        scanned = buffered.count
        guard buffered.count <= Self.maxLineBytes else { throw SimulatedChipLineTooLong(bytes: buffered.count) }
        return nil
    }
}

/// More than `SimulatedChipLineFramer.maxLineBytes` bytes arrived without a newline.
public struct SimulatedChipLineTooLong: Error, Sendable, Equatable {
    public var bytes: Int
}

/// A line-oriented client connection to the simulator's socket. A line longer than
/// `SimulatedChipLineFramer.maxLineBytes` without a newline is an error (`EMSGSIZE`), not a buffer that grows.
final class SimulatorConnection {
    private let fd: Int32
    private let path: String
    private var framer = SimulatedChipLineFramer()

    init(socketPath: String) throws(GPIOError) {
        path = socketPath
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw GPIOError.from(errno: errno, chip: "sim:\(socketPath)") }
        guard UnixSocket.connect(fd, to: socketPath) else {
            let code = errno
            close(fd)
            // A missing or refusing socket is a missing chip to the technician.
            throw GPIOError(code == EACCES ? .permissionDenied : .noSuchChip, chip: "sim:\(socketPath)", code: code)
        }
        self.fd = fd
    }

    deinit { close(fd) }

    func send(_ line: String) throws(GPIOError) {
        guard ConnectedSocket.send(fd: fd, line + "\n") else { throw GPIOError.from(errno: errno, chip: "sim:\(path)") }
    }

    /// The next line, waiting at most `timeoutMs`; throws on timeout or a closed connection.
    func readLine(timeoutMs: Int) throws(GPIOError) -> String {
        guard let line = try readLineIfAny(timeoutMs: timeoutMs) else {
            throw GPIOError(.io, chip: "sim:\(path)", code: ETIMEDOUT)
        }
        return line
    }

    /// The next line if one arrives within `timeoutMs`, else nil; throws when the simulator is gone.
    func readLineIfAny(timeoutMs: Int) throws(GPIOError) -> String? {
        let deadline = MonotonicInstant.now().adding(milliseconds: timeoutMs)
        while true {
            do throws(SimulatedChipLineTooLong) {
                if let line = try framer.nextLine() { return line }
            } catch {
                throw GPIOError(.io, chip: "sim:\(path)", code: EMSGSIZE)
            }
            let remaining = max(0, Int(deadline.milliseconds(since: MonotonicInstant.now())))
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(remaining))
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { return nil }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { throw GPIOError(.io, chip: "sim:\(path)", code: count == 0 ? ECONNRESET : errno) }
            framer.append(chunk[0..<count])
        }
    }
}
