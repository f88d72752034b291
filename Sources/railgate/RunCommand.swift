import ArgumentParser
import Glibc
import Logging
import RailgateBuffer
import RailgateCore
import RailgateGateway
import RailgateSystem

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the gateway in the foreground (what systemd starts).",
        discussion: """
            SIGTERM or SIGINT: stop polling, flush what the broker takes, persist, exit 0 (70 if \
            a service did not stop within 20 s: the buffer is synced first). SIGHUP: reload the \
            configuration; an invalid one is refused and the running one kept. Exit 71 if a \
            service thread cannot be created.
            """)

    @Option(help: "The gateway configuration (TOML).")
    var config: String

    @Flag(
        help:
            "Poll every device once, print the records as JSON lines, send nothing, exit (69 if a device did not answer; gates the running daemon holds are skipped)."
    )
    var once = false

    func run() throws {
        if !once {
            // Before anything can start a thread (the buffer's sync thread starts when it opens):
            // every thread inherits the mask, and signals sent during start-up wait for the daemon.
            Gateway.blockSignals()
            // glibc gives each thread that allocates its own arena (up to 8 per core): with a
            // thread per bus that is memory the box does not have. Two arenas measured 1.3 MiB
            // less steady RSS at 10,000 points/s, at the same CPU (make bench).
            _ = glibcMallopt(-8, 2)  // M_ARENA_MAX (malloc.h, not in the Glibc module)
        }
        let loaded = try loadConfig(config)
        if once {
            let (records, allAnswered) = SinglePoll.pollAll(loaded)
            for record in records { StandardStreams.out(record.text(seq: nil)) }
            if !allAnswered { throw Exit.unavailable }
            return
        }
        let level = Logger.Level(rawValue: loaded.gateway.logLevel.rawValue) ?? .info
        LoggingSystem.bootstrap { label in RailgateLogHandler(label: label, level: level) }
        var logger = Logger(label: "railgate")
        logger.logLevel = level
        let gateway: Gateway
        do {
            gateway = try Gateway(config: loaded, logger: logger)
        } catch  where error.operation == DiskBuffer.syncThreadOperation {
            logger.critical(
                "cannot \(error.operation): pthread_create: \(String(cString: strerror(error.code))) (errno \(error.code)); exiting"
            )
            throw ExitCode(Gateway.exitNoThread)
        } catch {
            logger.critical("cannot open the buffer: \(error)")
            throw Exit.ioError
        }
        let code = gateway.run()
        if code != 0 { throw ExitCode(code) }
    }
}

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a configuration and every profile it names (exit 78 with FILE:LINE: message per problem).")

    @Option(help: "The gateway configuration (TOML).")
    var config: String

    @Flag(help: "Print a JSON summary instead of text.")
    var json = false

    func run() throws {
        let loaded = try loadConfig(config, json: json)
        if json {
            StandardStreams.out(
                JSON.object([
                    ("ok", .bool(true)), ("gateway", .string(loaded.gateway.id)),
                    ("buses", .integer(Int64(loaded.buses.count))),
                    ("devices", .integer(Int64(loaded.devices.count))), ("gates", .integer(Int64(loaded.gates.count))),
                    ("inputs", .integer(Int64(loaded.inputs.count))),
                    ("points", .integer(Int64(loaded.devices.reduce(0) { $0 + $1.profile.points.count }))),
                ]).serialized)
        } else {
            let points = loaded.devices.reduce(0) { $0 + $1.profile.points.count }
            StandardStreams.out(
                "\(config): ok: gateway \(loaded.gateway.id), \(HumanFormat.count(loaded.buses.count, "bus", plural: "buses")), \(HumanFormat.count(loaded.devices.count, "device")) (\(HumanFormat.count(points, "point"))), \(HumanFormat.count(loaded.gates.count, "gate"))"
                    + (loaded.inputs.isEmpty ? "" : ", \(HumanFormat.count(loaded.inputs.count, "input"))")
            )
        }
    }
}

/// glibc's `mallopt(3)`: malloc.h is not part of Swift's Glibc module.
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
