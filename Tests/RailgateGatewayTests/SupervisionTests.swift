import Glibc
import Logging
import RailgateSystem
import Testing

@testable import RailgateCore
@testable import RailgateGateway

/// Log lines kept in memory, for tests that check what the technician is told.
final class LogLines: @unchecked Sendable {
    private let lock = ConditionLock()
    private var lines: [String] = []

    var all: [String] { lock.withLock { lines } }

    func append(_ line: String) { lock.withLock { lines.append(line) } }

    var logger: Logger {
        Logger(label: "test") { _ in MemoryLogHandler(lines: self) }
    }
}

struct MemoryLogHandler: LogHandler {
    let lines: LogLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) { lines.append("\(event.level) \(event.message)") }
}

/// A service body that returns at once for its first `dyingRuns` runs, then keeps running until
/// stopped, counting its runs.
final class FlakyService: @unchecked Sendable {
    let thread = ServiceThread()
    private let lock = ConditionLock()
    private var runs = 0
    let dyingRuns: Int

    init(dyingRuns: Int) { self.dyingRuns = dyingRuns }

    var runCount: Int { lock.withLock { runs } }

    func body() {
        let run: Int = lock.withLock {
            runs += 1
            return runs
        }
        guard run > dyingRuns else { return }
        while thread.wait(until: MonotonicInstant.now().adding(milliseconds: 1000)) {}
    }
}

/// Drives `supervisor` as the daemon's main thread does, until `done` or `seconds` pass.
func supervise(_ supervisor: Supervisor, seconds: Int = 20, until done: () -> Bool) -> Bool {
    let deadline = MonotonicInstant.now().adding(milliseconds: seconds * 1000)
    while !done() {
        guard MonotonicInstant.now() < deadline else { return false }
        supervisor.restartDue()
        usleep(5000)
    }
    return true
}

@Suite("Daemon threads and supervision")
struct SupervisionTests {
    @Test("a thread that cannot be created is an error naming the service and the errno, and nothing runs")
    func threadCreationFailure() throws {
        let ran = LogLines()
        // A stack of 64 TiB cannot be mapped: pthread_create fails with EAGAIN as when out of memory.
        let error = try #require(throws: ThreadError.self) {
            _ = try DaemonThread(name: "bus line-1", stackBytes: 1 << 46) { ran.append("ran") }
        }
        #expect(error.code == EAGAIN || error.code == ENOMEM || error.code == EINVAL)
        #expect(error.description.contains("bus line-1") && error.description.contains("pthread_create"))
        usleep(50_000)
        #expect(ran.all.isEmpty, "the body never runs inline")
    }

    @Test("a thread that can be created runs its body and joins")
    func threadRuns() throws {
        let ran = LogLines()
        let thread = try DaemonThread(name: "worker") { ran.append("ran") }
        thread.join()
        thread.join()
        #expect(ran.all == ["ran"])
    }

    @Test("a thread carries its service's name (cut to the kernel's 15 bytes at a character boundary)")
    func threadNamed() throws {
        let names = LogLines()
        for name in ["uplink", "bus axle-line-1200", "bus ось-колёс", "control socket 3", "metrics 2"] {
            let thread = try DaemonThread(name: name) {
                let path = "/proc/thread-self/comm"
                guard let file = fopen(path, "r") else { return names.append("no \(path)") }
                defer { fclose(file) }
                var line = [CChar](repeating: 0, count: 64)
                _ = fgets(&line, 64, file)
                names.append(
                    String(decoding: line.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }
            thread.join()
        }
        #expect(names.all == ["uplink", "bus axle-line-1", "bus ось-ко", "control socke 3", "metrics 2"])
    }

    @Test("a service that dies is logged and restarted, with a growing back-off, until it stays up")
    func dyingServiceRestarted() throws {
        let log = LogLines()
        let supervisor = Supervisor(logger: log.logger, initialBackoffMs: 50, maxBackoffMs: 400)
        let service = FlakyService(dyingRuns: 3)
        let started = MonotonicInstant.now()
        try service.thread.start(name: "bus line-1", supervisor: supervisor) { service.body() }
        #expect(supervise(supervisor) { service.runCount == 4 })
        let elapsed = MonotonicInstant.now().milliseconds(since: started)
        #expect(elapsed >= 50 + 100 + 200, "back-off 50, 100, 200 ms: \(elapsed) ms")
        let lines = log.all
        #expect(lines.filter { $0.contains("service bus line-1 ended unexpectedly") }.count == 3, "\(lines)")
        #expect(lines.contains { $0.contains("restarting it in 200 ms") }, "\(lines)")
        #expect(lines.filter { $0.contains("service bus line-1 restarted") }.count == 3)
        // Running now: nothing more is due, and a stop is not a death.
        usleep(100_000)
        #expect(supervisor.nextRestart == nil)
        service.thread.stop()
        usleep(100_000)
        supervisor.restartDue()
        #expect(service.runCount == 4)
        #expect(supervisor.fatalReason == nil)
    }

    @Test("a service stopped while waiting for its restart is not restarted")
    func stoppedServiceStaysStopped() throws {
        let log = LogLines()
        let supervisor = Supervisor(logger: log.logger, initialBackoffMs: 50)
        let service = FlakyService(dyingRuns: 1)
        try service.thread.start(name: "gate g", supervisor: supervisor) { service.body() }
        #expect(supervise(supervisor, until: { supervisor.nextRestart != nil }))
        service.thread.stop()
        #expect(supervisor.nextRestart == nil)
        usleep(100_000)
        supervisor.restartDue()
        #expect(service.runCount == 1)
    }

    @Test("a service whose policy is exitDaemon makes the daemon exit when it dies")
    func fatalService() throws {
        let log = LogLines()
        let woken = LogLines()
        let supervisor = Supervisor(logger: log.logger) { woken.append("wake") }
        let service = FlakyService(dyingRuns: 1)
        try service.thread.start(name: "uplink", supervisor: supervisor, policy: .exitDaemon) { service.body() }
        #expect(supervise(supervisor, until: { supervisor.fatalReason != nil }))
        #expect(supervisor.fatalReason?.contains("uplink") == true)
        #expect(woken.all == ["wake"], "the main thread is woken, not left to poll")
        #expect(log.all.contains { $0.hasPrefix("critical") && $0.contains("uplink ended unexpectedly") })
        #expect(supervisor.nextRestart == nil, "not restarted")
    }
}
