import ArgumentParser
import Glibc
import RailgateCore
import RailgateGPIO
import RailgateSystem

/// `railgate-sim gate`: a simulated GPIO chip with a barrier wired to two of its lines, served
/// on a Unix socket (the gateway's chip `sim:PATH`).
struct GateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gate",
        abstract: "Serve a simulated GPIO chip with a barrier on two of its lines.",
        discussion: """
            Without --scenario the barrier starts closed (closed line high, open line low) and lines \
            change only when driven (railgate-sim gate-set). A scenario's clock starts when the first \
            client watches lines, so a gateway sees the whole script.

            Examples:
              railgate-sim gate --socket /tmp/gate.sock --scenario Simulators/scenarios/gate-cycle.toml
              railgate-sim gate-set --socket /tmp/gate.sock --line 17 --value 1
            """)

    @Option(help: "Unix socket to serve the chip on.")
    var socket: String

    @Option(name: .customLong("open-line"), help: "Line of the fully-open limit switch.")
    var openLine: Int = 17

    @Option(name: .customLong("closed-line"), help: "Line of the fully-closed limit switch.")
    var closedLine: Int = 18

    @Option(help: "Number of input lines on the chip.")
    var lines: Int = 32

    @Option(help: "Barrier scenario file (see Simulators/scenarios/gate-*.toml).")
    var scenario: String?

    func validate() throws {
        guard (1...512).contains(lines) else { throw ValidationError("--lines must be 1...512") }
        guard (0..<lines).contains(openLine), (0..<lines).contains(closedLine), openLine != closedLine else {
            throw ValidationError("--open-line and --closed-line must be two different lines below \(lines)")
        }
    }

    func run() throws {
        var script = BarrierScript()
        if let scenario {
            guard let text = LocalFiles().read(scenario) else {
                printError("cannot read the scenario \(scenario)")
                throw ExitCode(66)
            }
            do {
                script = try BarrierScript.parse(text, file: scenario)
            } catch {
                printError(error.description)
                throw ExitCode(78)
            }
        }
        let server: SimulatedChipServer
        do {
            server = try SimulatedChipServer(socketPath: socket, lineCount: lines)
        } catch {
            printError("cannot serve on \(socket): \(String(cString: strerror(error.code)))")
            throw ExitCode(69)
        }
        server.levels[closedLine] = true
        let barrier = Barrier(openLine: openLine, closedLine: closedLine, script: script)
        StandardStreams.out(
            "railgate-sim: serving a gate chip with \(lines) lines on \(socket) (open line \(openLine), closed line \(closedLine))"
        )
        server.serve(barrier: barrier)
    }
}

/// `railgate-sim gate-set`: drives one line of a running gate simulator.
struct GateSetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gate-set", abstract: "Drive one simulated input line.",
        discussion: """
            Example: railgate-sim gate-set --socket /tmp/gate.sock --line 18 --value 0 (the closed switch opens)
            """)

    @Option(help: "The gate simulator's socket.")
    var socket: String

    @Option(help: "Line to drive.")
    var line: Int

    @Option(help: "Level: 0 or 1.")
    var value: Int

    func validate() throws {
        guard value == 0 || value == 1 else { throw ValidationError("--value must be 0 or 1") }
    }

    func run() throws {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        guard UnixSocket.connect(fd, to: socket) else {
            printError("cannot reach the gate simulator at \(socket): \(String(cString: strerror(errno)))")
            throw ExitCode(69)
        }
        guard ConnectedSocket.send(fd: fd, "set \(line) \(value)\n") else {
            printError("the gate simulator at \(socket) closed the connection: \(String(cString: strerror(errno)))")
            throw ExitCode(69)
        }
        var reply = [UInt8](repeating: 0, count: 256)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let count = recv(fd, &reply, reply.count, 0)
        let answer = count > 0 ? String(decoding: reply[0..<count], as: UTF8.self).trimmingCharacters : ""
        guard answer == "ok" else {
            printError("the simulator refused: \(answer.isEmpty ? "no answer" : answer)")
            throw ExitCode(65)
        }
    }
}

extension String {
    var trimmingCharacters: String { String(self.filter { $0 != "\n" && $0 != "\r" }) }
}

/// A barrier scenario: when the motor is told to open or close, and what goes wrong.
///
///     travel_s = 3.0       # time between leaving one limit and reaching the other
///     bounce_ms = 4        # each switch chatters this long when it changes
///     repeat_s = 20        # optional: run the steps again every this many seconds
///     [[step]]
///     at_s = 1.0           # seconds after the first client started watching
///     action = "open"      # open | close | stick_opening | stick_closing | set
///     line = 17            # set: which line
///     value = 0            # set: which level
struct BarrierScript {
    enum Action: Equatable {
        case open, close, stickOpening, stickClosing
        case set(line: Int, level: Bool)
    }

    var travelSeconds = 3.0
    var bounceMs = 4
    var repeatSeconds: Double?
    var steps: [(atSeconds: Double, action: Action)] = []
    /// How many repetitions a repeating script schedules (at 20 s a cycle, more than 5 hours).
    static let maxRepetitions = 1000

    static func parse(_ text: String, file: String) throws(ConfigErrors) -> BarrierScript {
        let root = try TOMLParser.parse(text, file: file)
        var problems: [ConfigProblem] = []
        var script = BarrierScript()
        for key in root.keys where !["travel_s", "bounce_ms", "repeat_s", "step"].contains(key) {
            problems.append(ConfigProblem(file: file, line: root[key]?.line, message: "unknown key '\(key)'"))
        }
        script.travelSeconds =
            root.number("travel_s", within: 0.001...3600, file: file, problems: &problems) ?? script.travelSeconds
        script.bounceMs =
            root.number("bounce_ms", within: 0...10_000, whole: true, file: file, problems: &problems).map { Int($0) }
            ?? script.bounceMs
        script.repeatSeconds = root.number("repeat_s", within: 0.001...86_400, file: file, problems: &problems)
        if case .array(let steps)? = root["step"]?.kind {
            for entry in steps {
                guard case .table(let step) = entry.kind else { continue }
                let action: Action
                switch step.string("action") {
                case "open": action = .open
                case "close": action = .close
                case "stick_opening": action = .stickOpening
                case "stick_closing": action = .stickClosing
                case "set":
                    guard step.number("line") != nil, step.number("value") != nil else {
                        problems.append(ConfigProblem(file: file, line: step.line, message: "set needs line and value"))
                        continue
                    }
                    guard
                        let line = step.number("line", within: 0...4095, whole: true, file: file, problems: &problems),
                        let value = step.number("value", within: 0...1, whole: true, file: file, problems: &problems)
                    else { continue }
                    action = .set(line: Int(line), level: value != 0)
                default:
                    problems.append(
                        ConfigProblem(
                            file: file, line: step["action"]?.line ?? step.line,
                            message: "action must be open, close, stick_opening, stick_closing or set"))
                    continue
                }
                guard
                    step.number("at_s") == nil
                        || step.number("at_s", within: 0...31_536_000, file: file, problems: &problems) != nil
                else { continue }
                script.steps.append((step.number("at_s") ?? 0, action))
            }
        }
        if !problems.isEmpty { throw ConfigErrors(problems) }
        script.steps.sort { $0.atSeconds < $1.atSeconds }
        return script
    }
}

/// The barrier's motor and switches: turns script steps into timed line changes with bounce.
final class Barrier {
    let openLine: Int
    let closedLine: Int
    private var script: BarrierScript
    private var startNs: Int64?

    init(openLine: Int, closedLine: Int, script: BarrierScript) {
        self.openLine = openLine
        self.closedLine = closedLine
        self.script = script
    }

    /// Starts the script's clock (at the first watch).
    func start(atNs now: Int64, schedule: inout [(atNs: Int64, line: Int, level: Bool)]) {
        guard startNs == nil else { return }
        startNs = now
        let travel = Int64(script.travelSeconds * 1e9)
        let repetitions = script.repeatSeconds == nil ? 1 : BarrierScript.maxRepetitions
        let period = Int64((script.repeatSeconds ?? 0) * 1e9)
        for repetition in 0..<repetitions {
            schedule += steps(from: now + Int64(repetition) * period, travel: travel)
        }
        schedule.sort { $0.atNs < $1.atNs }
    }

    private func steps(from start: Int64, travel: Int64) -> [(atNs: Int64, line: Int, level: Bool)] {
        var schedule: [(atNs: Int64, line: Int, level: Bool)] = []
        for (atSeconds, action) in script.steps {
            let at = start + Int64(atSeconds * 1e9)
            switch action {
            case .open:
                schedule += change(closedLine, to: false, at: at) + change(openLine, to: true, at: at + travel)
            case .close:
                schedule += change(openLine, to: false, at: at) + change(closedLine, to: true, at: at + travel)
            case .stickOpening:
                schedule += change(closedLine, to: false, at: at)
            case .stickClosing:
                schedule += change(openLine, to: false, at: at)
            case .set(let line, let level):
                schedule.append((at, line, level))
            }
        }
        return schedule
    }

    /// A switch changing level, chattering for `bounce_ms` first.
    private func change(_ line: Int, to level: Bool, at: Int64) -> [(atNs: Int64, line: Int, level: Bool)] {
        var changes: [(atNs: Int64, line: Int, level: Bool)] = []
        let bounces = max(0, script.bounceMs)
        var offset: Int64 = 0
        if bounces > 0 {
            for flip in 0..<4 {
                changes.append((at + offset, line, flip % 2 == 0 ? level : !level))
                offset += Int64(bounces) * 1_000_000 / 4
            }
        }
        changes.append((at + offset, line, level))
        return changes
    }
}

/// The chip server: lines, watchers, and the line protocol of `SimulatedChipProtocol`.
final class SimulatedChipServer {
    struct Failure: Error {
        var code: Int32
    }

    private struct Client {
        var fd: Int32
        var input: [UInt8] = []
        var consumer: String?
        var lines: Set<Int> = []
    }

    var levels: [Bool]
    private let listener: Int32
    private let path: String
    private var clients: [Client] = []
    private var schedule: [(atNs: Int64, line: Int, level: Bool)] = []

    init(socketPath: String, lineCount: Int) throws(Failure) {
        levels = [Bool](repeating: false, count: lineCount)
        path = socketPath
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0, UnixSocket.bind(fd, to: socketPath), listen(fd, 16) == 0 else { throw Failure(code: errno) }
        listener = fd
        signal(SIGPIPE, SIG_IGN)
    }

    func serve(barrier: Barrier) {
        while true {
            let now = MonotonicInstant.now().nanoseconds
            while let next = schedule.first, next.atNs <= now {
                schedule.removeFirst()
                setLevel(next.line, next.level, atNs: next.atNs)
            }
            let timeoutMs =
                schedule.first.map { Int32(max(0, min(1000, ($0.atNs - now + 999_999) / 1_000_000))) } ?? 1000
            var descriptors = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
            descriptors += clients.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            guard poll(&descriptors, nfds_t(descriptors.count), timeoutMs) > 0 else { continue }
            if descriptors[0].revents != 0 {
                let client = accept(listener, nil, nil)
                if client >= 0 { clients.append(Client(fd: client)) }
            }
            var closed: Set<Int32> = []
            for descriptor in descriptors.dropFirst() where descriptor.revents != 0 {
                guard let index = clients.firstIndex(where: { $0.fd == descriptor.fd }) else { continue }
                var chunk = [UInt8](repeating: 0, count: 1024)
                let count = recv(descriptor.fd, &chunk, chunk.count, 0)
                guard count > 0, clients[index].input.count < 4096 else {
                    closed.insert(descriptor.fd)
                    continue
                }
                clients[index].input += chunk[0..<count]
                while let newline = clients[index].input.firstIndex(of: 10) {
                    let line = String(decoding: clients[index].input[..<newline], as: UTF8.self)
                    clients[index].input.removeSubrange(...newline)
                    handle(line, client: index, barrier: barrier)
                }
            }
            for fd in closed { close(fd) }
            clients.removeAll { closed.contains($0.fd) }
        }
    }

    private func handle(_ command: String, client index: Int, barrier: Barrier) {
        let words = command.split(separator: " ").map(String.init)
        let fd = clients[index].fd
        switch words.first {
        case "info":
            let lines: [JSON] = levels.indices.map { offset in
                let holder = clients.first { $0.lines.contains(offset) }
                return .object([
                    ("offset", .integer(Int64(offset))),
                    (
                        "name",
                        .string(
                            offset == barrier.openLine
                                ? "barrier-open" : offset == barrier.closedLine ? "barrier-closed" : "")
                    ),
                    ("consumer", .string(holder?.consumer ?? "")), ("used", .bool(holder != nil)),
                    ("level", .integer(levels[offset] ? 1 : 0)),
                ])
            }
            reply(
                fd,
                JSON.object([
                    ("name", .string(SimulatedChipProtocol.chipName)),
                    ("label", .string(SimulatedChipProtocol.chipLabel)), ("lines", .array(lines)),
                ]).serialized)
        case "watch" where words.count >= 3:
            let requested = words.dropFirst(2).compactMap { Int($0) }
            if let bad = requested.first(where: { !levels.indices.contains($0) }) {
                reply(fd, "error range \(bad) \(levels.count)")
                return
            }
            if let busy = requested.first(where: { line in clients.contains { $0.fd != fd && $0.lines.contains(line) } }
            ),
                let holder = clients.first(where: { $0.lines.contains(busy) })
            {
                reply(fd, "error busy \(busy) \(holder.consumer ?? "unknown")")
                return
            }
            clients[index].consumer = words[1]
            clients[index].lines.formUnion(requested)
            reply(fd, "levels " + requested.map { "\($0)=\(levels[$0] ? 1 : 0)" }.joined(separator: " "))
            barrier.start(atNs: MonotonicInstant.now().nanoseconds, schedule: &schedule)
        case "set" where words.count == 3:
            guard let line = Int(words[1]), levels.indices.contains(line), words[2] == "0" || words[2] == "1" else {
                reply(fd, "error bad line or level")
                return
            }
            setLevel(line, words[2] == "1", atNs: MonotonicInstant.now().nanoseconds)
            reply(fd, "ok")
        default:
            reply(fd, "error unknown command")
        }
    }

    private func setLevel(_ line: Int, _ level: Bool, atNs: Int64) {
        guard levels.indices.contains(line), levels[line] != level else { return }
        levels[line] = level
        for client in clients where client.lines.contains(line) {
            reply(client.fd, "edge \(line) \(level ? 1 : 0) \(atNs)")
        }
    }

    private func reply(_ fd: Int32, _ line: String) {
        StandardStreams.write(fd: fd, line + "\n")
    }
}
