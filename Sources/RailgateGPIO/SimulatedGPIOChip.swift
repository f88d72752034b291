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
        let words = reply.split(separator: " ").map(String.init)
        if words.first == "error" {
            if words.count >= 4, words[1] == "busy" {
                throw GPIOError(.lineBusy(consumer: words[3]), chip: chip, line: Int(words[2]), code: EBUSY)
            }
            if words.count >= 4, words[1] == "range" {
                throw GPIOError(.noSuchLine(lineCount: Int(words[3]) ?? 0), chip: chip, line: Int(words[2]))
            }
            throw GPIOError(.io, chip: chip, code: EPROTO)
        }
        guard words.first == "levels" else { throw GPIOError(.io, chip: chip, code: EPROTO) }
        var levels: [Int: Bool] = [:]
        for pair in words.dropFirst() {
            let parts = pair.split(separator: "=")
            if parts.count == 2, let line = Int(parts[0]) { levels[line] = (parts[1] == "1") != activeLow }
        }
        return SimulatedLineWatch(connection: connection, chip: chip, activeLow: activeLow, levels: levels)
    }
}

/// Lines of a simulated chip being watched: the connection streams their edges.
final class SimulatedLineWatch: GPIOLineWatch {
    private var connection: SimulatorConnection?
    private let chip: String
    private let activeLow: Bool
    private var current: [Int: Bool]

    init(connection: SimulatorConnection, chip: String, activeLow: Bool, levels: [Int: Bool]) {
        self.connection = connection
        self.chip = chip
        self.activeLow = activeLow
        current = levels
    }

    func levels() throws(GPIOError) -> [Int: Bool] { current }

    func waitForEdges(timeoutMs: Int) throws(GPIOError) -> [GPIOEdge] {
        guard let connection else { throw GPIOError(.io, chip: chip, code: EBADF) }
        var edges: [GPIOEdge] = []
        var wait = timeoutMs
        while let line = try connection.readLineIfAny(timeoutMs: wait) {
            wait = 0  // take what has arrived, then return
            let words = line.split(separator: " ")
            guard words.count == 4, words[0] == "edge", let offset = Int(words[1]), let nanoseconds = Int64(words[3])
            else { continue }
            let active = (words[2] == "1") != activeLow
            current[offset] = active
            edges.append(GPIOEdge(line: offset, active: active, timestampNs: nanoseconds))
        }
        return edges
    }

    func release() { connection = nil }
}

/// A line-oriented client connection to the simulator's socket.
final class SimulatorConnection {
    private let fd: Int32
    private let path: String
    private var buffered: [UInt8] = []

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
        let bytes = Array((line + "\n").utf8)
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else { throw GPIOError.from(errno: errno, chip: "sim:\(path)") }
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
            if let newline = buffered.firstIndex(of: 10) {
                let line = String(decoding: buffered[..<newline], as: UTF8.self)
                buffered.removeSubrange(...newline)
                return line
            }
            let remaining = max(0, Int(deadline.milliseconds(since: MonotonicInstant.now())))
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(remaining))
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { return nil }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { throw GPIOError(.io, chip: "sim:\(path)", code: count == 0 ? ECONNRESET : errno) }
            buffered += chunk[0..<count]
        }
    }
}
