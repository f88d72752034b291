import Foundation
import RailgateCore
import RailgateSystem
import Testing

/// A port where nothing speaks MQTT: every connection is accepted and closed at once (a broker
/// that is down behind a load balancer), each attempt's time kept on the monotonic clock.
final class ClosingPeer: @unchecked Sendable {
    let port: Int
    private let listener: Int32
    private let lock = ConditionLock()
    private var times: [MonotonicInstant] = []
    private var stopping = false
    private var thread: Thread?

    init() throws {
        // Close-on-exec: a daemon started meanwhile must not inherit the port and keep it.
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listener = listener
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(listener, pointer, length) == 0 else { return -1 }
                return getsockname(listener, pointer, &length)
            }
        }
        guard bound == 0, listen(listener, 8) == 0 else { throw TimedOut(description: "cannot listen: \(errno)") }
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in serve() }
        self.thread = thread
        thread.start()
    }

    /// When each connection attempt arrived, oldest first.
    var attempts: [MonotonicInstant] { lock.withLock { times } }

    private func serve() {
        while !lock.withLock({ stopping }) {
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { continue }
            let now = MonotonicInstant.now()
            close(connection)
            lock.withLock { times.append(now) }
        }
    }

    /// Stops accepting and frees the port.
    func stop() {
        lock.withLock { stopping = true }
        while thread?.isFinished == false { usleep(10_000) }
        close(listener)
    }
}

@Suite("Reconnect back-off", .serialized)
struct ReconnectBackoffTests {
    @Test(
        "reconnect_min_ms 200, reconnect_max_ms 800: retries of a broker that is down keep within them; up, data flows")
    func configuredBounds() throws {
        let scratch = Scratch()
        let peer = try ClosingPeer()
        let sim = try wagon(scratch)
        let config = brokerLimitsConfig(
            scratch: scratch, brokerPort: peer.port, wagonPort: sim.port,
            upstream: ["reconnect_min_ms = 200", "reconnect_max_ms = 800"])
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "gw")
        let attempts = try eventually("9 connection attempts", seconds: 60, intervalMs: 50) {
            () -> [MonotonicInstant]? in
            let attempts = peer.attempts
            return attempts.count >= 9 ? attempts : nil
        }
        let gaps = zip(attempts.dropFirst(), attempts).map { Int($0.0.milliseconds(since: $0.1)) }
        print("reconnect waits (ms), configured 200...800 less up to 20 %: \(gaps)")
        for (attempt, gap) in gaps.enumerated() {
            let wait = min(800, 200 << attempt)
            // Never shorter than the back-off allows (the jitter takes at most 20 % off)...
            #expect(
                gap >= wait * 8 / 10 - 5, "attempt \(attempt + 1): \(gap) ms after the one before, back-off \(wait)")
            // ...and never the default's 1 s, 2 s, 4 s, 5 s: the cap holds (slack for a loaded machine).
            #expect(gap <= 800 + 700, "attempt \(attempt + 1): \(gap) ms after the one before, cap 800")
        }
        #expect(try daemonStatus(scratch)["upstream"]?["state"] == .string("connecting"))

        // The broker comes up on that port: the next attempt, within the cap, connects.
        peer.stop()
        let broker = try Broker(scratch: scratch, port: peer.port)
        let up = Date()
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/KZ-WAG-LIMITS/#")
        try subscriber.waitUntil(seconds: 30) { _ in seqs(subscriber.records).contains(1) }
        let delay = Date().timeIntervalSince(up)
        print("first record \(Int(delay * 1000)) ms after the broker came up")
        #expect(delay < 5, "records flow once the broker is up: \(delay) s")
        // The birth message says online, with the backlog it found: the records buffered while the
        // broker was down (a poll every 100 ms for seconds), the oldest of them seconds old.
        let birth = try #require(
            subscriber.messages.first { $0.topic.hasSuffix("/status") && $0.json?["state"] == .string("online") }?.json)
        let downFor = attempts.last!.milliseconds(since: attempts.first!) / 1000
        print("birth message buffer: \(birth["buffer"]?.serialized ?? "none"), broker down \(downFor) s or more")
        #expect(birth["version"] != nil && birth["started"] != nil)
        #expect((birth["buffer"]?["records"]?.intValue ?? 0) >= 10, "\(birth.serialized)")
        #expect((birth["buffer"]?["oldest_age_s"]?.intValue ?? -1) >= Int(downFor) - 1, "\(birth.serialized)")
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
    }

    @Test("check: reconnect_max_ms below reconnect_min_ms, or out of range, is FILE:LINE and exit 78")
    func refusedValues() throws {
        let scratch = Scratch()
        for (lines, expected) in [
            (["reconnect_min_ms = 2000", "reconnect_max_ms = 1000"], "reconnect_max_ms (1000) must not be below"),
            (["reconnect_min_ms = 5"], "reconnect_min_ms"), (["reconnect_max_ms = 0"], "reconnect_max_ms"),
            (["reconnect_max_ms = 500"], "reconnect_max_ms (500) must not be below reconnect_min_ms (1000)"),
            (["payload = \"tiny\""], "payload"),
        ] {
            let config = brokerLimitsConfig(scratch: scratch, brokerPort: 1883, wagonPort: 502, upstream: lines)
            let result = try TestProcess.run(Binaries.railgate, ["check", "--config", config], scratch: scratch)
            #expect(result.status == 78, "\(lines): \(result.error)")
            // The [upstream] keys are on lines 16-17 of the generated file.
            let line = try #require(
                result.error.split(separator: "\n").first { $0.contains(expected) }, "\(result.error)")
            #expect(line.hasPrefix("\(config):1"), "\(line)")
        }
        let good = brokerLimitsConfig(
            scratch: scratch, brokerPort: 1883, wagonPort: 502,
            upstream: ["reconnect_min_ms = 100", "reconnect_max_ms = 100", "payload = \"compact\""])
        let result = try TestProcess.run(Binaries.railgate, ["check", "--config", good], scratch: scratch)
        #expect(result.status == 0, "\(result.error)")
    }
}
