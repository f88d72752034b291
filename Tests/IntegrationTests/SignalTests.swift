import Foundation
import RailgateCore
import RailgateSystem
import Testing

/// A stop must be over well inside the unit's TimeoutStopSec (30 s).
let stopBoundSeconds = 10.0

/// A gateway with a broker, a subscriber from before the first record, and one simulated wagon.
final class SignalRig: @unchecked Sendable {
    let scratch = Scratch()
    let broker: Broker
    let subscriber: Subscriber
    let simulator: WagonSimulator
    let config: String
    var gateway: TestProcess

    init(pollMs: Int = 100) throws {
        broker = try Broker(scratch: scratch)
        subscriber = try Subscriber(port: broker.port)
        simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        config = gatewayConfig(
            scratch: scratch, brokerPort: broker.port,
            devices: [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")], pollMs: pollMs)
        gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
    }

    /// Waits for the `count`-th log line containing `text`.
    func waitForLog(_ text: String, count: Int = 1, seconds: Double = 30) throws {
        try eventually("\(count) log lines '\(text)'", seconds: seconds, intervalMs: 20) {
            gateway.errorOutput.components(separatedBy: text).count - 1 >= count ? () : nil
        }
    }

    /// Waits until `more` records beyond those seen now have arrived.
    func waitForMoreRecords(_ more: Int = 5) throws {
        let seen = subscriber.records.count
        try subscriber.waitUntil(seconds: 60) { _ in self.subscriber.records.count >= seen + more }
    }

    /// Sends `signal` and expects a clean exit 0 within `stopBoundSeconds`.
    func expectCleanStop(after signal: Int32 = SIGTERM) throws {
        gateway.signal(signal)
        let started = Date()
        let status = try gateway.waitForExit(seconds: stopBoundSeconds)
        let took = Date().timeIntervalSince(started)
        #expect(status == 0, "exit status \(status); log tail: \(gateway.errorOutput.suffix(1500))")
        #expect(took < stopBoundSeconds, "stopped in \(took) s")
        #expect(!gateway.errorOutput.contains("did not stop within"))
    }

    /// Nothing lost: every seq from 1 to the last one the buffer ever took reaches the broker,
    /// none missing, after the daemon is started again (it sends what the stop left unsent).
    func expectNothingLost() throws {
        let state = scratch.path + "/state"
        let stats = try TestProcess.run(
            Binaries.railgate, ["buffer", "stats", "--json", "--state-dir", state], scratch: scratch)
        let acked = (try? JSONReader.parse(stats.output))?["acked_seq"]?.intValue ?? 0
        let last = max(acked, seqs(try bufferedRecords(state, scratch: scratch)).max() ?? 0)
        #expect(last >= 5, "the buffer took records: acked \(acked), \(stats.output)")
        gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        // Running (its control socket answers) before it is stopped again.
        try eventually("the restarted daemon answers") { try daemonStatus(scratch)["gateway"] != nil ? () : nil }
        try subscriber.waitUntil(seconds: 60) { _ in Set(seqs(self.subscriber.records)).isSuperset(of: 1...last) }
        try expectCleanStop()
        let received = Set(seqs(subscriber.records))
        #expect(received.isSuperset(of: 1...last), "missing: \(Set(1...last).subtracting(received).sorted())")
        #expect(contiguous(Array(received)), "no gap after the restart either")
    }
}

@Suite("Signals", .serialized)
struct SignalTests {
    @Test("two quick SIGHUPs: both reloads happen, then a clean exit 0, nothing lost")
    func twoQuickReloads() throws {
        let rig = try SignalRig()
        try rig.waitForMoreRecords()
        rig.gateway.signal(SIGHUP)
        // The second arrives while the first reload is stopping and starting the services.
        try rig.waitForLog("reloading the configuration")
        rig.gateway.signal(SIGHUP)
        try rig.waitForLog("reloading the configuration", count: 2)
        #expect(rig.gateway.isRunning, "a SIGHUP during a reload is not fatal: \(rig.gateway.errorOutput.suffix(800))")
        try rig.waitForMoreRecords()
        try rig.expectCleanStop()
        try rig.expectNothingLost()
    }

    @Test("SIGHUP then SIGTERM during the reload: a clean exit 0, nothing lost")
    func reloadThenStop() throws {
        let rig = try SignalRig()
        try rig.waitForMoreRecords()
        rig.gateway.signal(SIGHUP)
        try rig.waitForLog("reloading the configuration")
        try rig.expectCleanStop(after: SIGTERM)
        #expect(rig.gateway.errorOutput.contains("signal 15: stopping"))
        try rig.expectNothingLost()
    }

    @Test("SIGHUPs from start-up on (a burst of ten, 20 ms apart) reload the daemon, never kill it")
    func reloadsFromStartUp() throws {
        let rig = try SignalRig()
        // The buffer (and its sync thread) is open by the time this line is logged; services are
        // still starting. Later ones land while a reload stops and starts the services.
        try rig.waitForLog("buffer holds")
        for _ in 0..<10 {
            rig.gateway.signal(SIGHUP)
            usleep(20_000)
        }
        try rig.waitForLog("reloading the configuration")
        try rig.waitForMoreRecords()
        #expect(rig.gateway.isRunning)
        try rig.expectCleanStop()
        try rig.expectNothingLost()
    }

    @Test("SIGTERM while a control client trickles bytes: a clean exit 0 within the bound, nothing lost")
    func stopWhileControlClientTrickles() throws {
        let rig = try SignalRig()
        try rig.waitForMoreRecords()
        let trickler = Trickler(socket: rig.scratch.path + "/control.sock")
        defer { trickler.finish() }
        try eventually("the trickling client has sent a few bytes", intervalMs: 20) {
            trickler.bytesSent >= 3 ? () : nil
        }
        try rig.expectCleanStop()
        #expect(trickler.bytesSent >= 3)
        trickler.finish()
        try rig.expectNothingLost()
    }
}

/// A control socket client that sends letters of "status" one byte every 200 ms (well inside the
/// server's 1 s receive timeout) and never the newline, reconnecting whenever the daemon drops
/// it, until finished.
final class Trickler: @unchecked Sendable {
    private let lock = ConditionLock()
    private var finished = false
    private var sent = 0
    private var thread: Thread?

    init(socket path: String) {
        let thread = Thread { [self] in
            let text = Array("status".utf8)
            while !isFinished {
                let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
                defer { close(fd) }
                guard UnixSocket.connect(fd, to: path) else {
                    usleep(50_000)
                    continue
                }
                var index = 0
                while !isFinished {
                    var value = text[index % text.count]
                    index += 1
                    guard send(fd, &value, 1, Int32(MSG_NOSIGNAL)) == 1 else { break }
                    lock.withLock { sent += 1 }
                    _ = lock.withLock { lock.wait(until: MonotonicInstant.now().adding(milliseconds: 200)) }
                }
            }
        }
        self.thread = thread
        thread.start()
    }

    private var isFinished: Bool { lock.withLock { finished } }

    var bytesSent: Int { lock.withLock { sent } }

    func finish() {
        lock.withLock {
            finished = true
            lock.broadcast()
        }
        while thread?.isFinished == false { usleep(10_000) }
    }
}

@Suite("Alarm state across reload and restart", .serialized)
struct AlarmPersistenceTests {
    @Test("a reload and a restart while an alarm is raised: exactly one alarm_above and one alarm_clear")
    func alarmSurvivesReloadAndRestart() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        var simulator = try WagonSimulator(
            profile: "axle-bearing-sensor", units: "2-3", scratch: scratch, extra: ["--set", "bearing_temp_3=95"])
        let port = simulator.port
        let one = [("axlebox-2", port, 2, "axle-bearing-sensor")]
        let config = gatewayConfig(scratch: scratch, brokerPort: broker.port, devices: one, pollMs: 100)
        var gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")

        func alarmEvents(_ source: String) -> [String] {
            var seen = Set<Int>()
            return subscriber.records.filter {
                $0["source"] == .string(source) && $0["point"] == .string("bearing_temp_3")
                    && seen.insert($0["seq"]?.intValue ?? -1).inserted
            }.compactMap { $0["event"]?.stringValue }
        }
        /// Waits until the running daemon has polled `device` at least `count` times with the
        /// configuration that lists `devices`.
        func waitForPolls(_ device: String, _ count: Int, devices: [String]) throws {
            try eventually("\(count) polls of \(device) with devices \(devices)") { () -> Void? in
                let status = try daemonStatus(scratch)
                let listed = status["devices"]?.arrayValue ?? []
                guard listed.compactMap({ $0["name"]?.stringValue }) == devices,
                    let polls = listed.first(where: { $0["name"] == .string(device) })?["polls"]?.intValue,
                    polls >= count
                else { return nil }
                return ()
            }
        }

        try subscriber.waitUntil(seconds: 60) { _ in alarmEvents("axlebox-2") == ["alarm_above"] }
        try eventually("the alarm kept in state_dir") {
            (try? String(contentsOfFile: scratch.path + "/state/alarms.json", encoding: .utf8))?
                .contains("bearing_temp_3") == true ? () : nil
        }

        // A reload (which adds a second wagon, hot too) while the alarm is raised.
        let two = one + [("axlebox-3", port, 3, "axle-bearing-sensor")]
        _ = gatewayConfig(scratch: scratch, brokerPort: broker.port, devices: two, pollMs: 100)
        gateway.signal(SIGHUP)
        try waitForPolls("axlebox-2", 5, devices: ["axlebox-2", "axlebox-3"])
        try subscriber.waitUntil(seconds: 60) { _ in alarmEvents("axlebox-3") == ["alarm_above"] }

        // A restart while both are raised.
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit(seconds: stopBoundSeconds) == 0)
        gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try waitForPolls("axlebox-2", 5, devices: ["axlebox-2", "axlebox-3"])
        try waitForPolls("axlebox-3", 5, devices: ["axlebox-2", "axlebox-3"])

        // The bearings cool down.
        try simulator.kill()
        simulator = try WagonSimulator(
            profile: "axle-bearing-sensor", units: "2-3", scratch: scratch, port: port,
            extra: ["--set", "bearing_temp_3=40"])
        try subscriber.waitUntil(seconds: 60) { _ in
            alarmEvents("axlebox-2").count >= 2 && alarmEvents("axlebox-3").count >= 2
        }
        // Ten more polls of each: time for a stray event to show itself.
        let seen = subscriber.records.count
        try subscriber.waitUntil(seconds: 60) { _ in subscriber.records.count >= seen + 20 }
        #expect(alarmEvents("axlebox-2") == ["alarm_above", "alarm_clear"])
        #expect(alarmEvents("axlebox-3") == ["alarm_above", "alarm_clear"])
        #expect(!gateway.errorOutput.contains("is no longer kept"))
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit(seconds: stopBoundSeconds) == 0)
        #expect(contiguous(seqs(subscriber.records)))
        _ = simulator
    }
}

@Suite("Daemon skeleton: threads and the stop deadline", .serialized)
struct StopDeadlineTests {
    @Test("a bus stuck in a 60 s request past the 20 s stop deadline: buffer synced, the bus named, exit 70")
    func stuckServiceIsCutShort() throws {
        let scratch = Scratch()
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        // A Modbus TCP peer that accepts (in the kernel's backlog) and never answers.
        let silent = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(silent) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                bind(silent, pointer, length)
                return getsockname(silent, pointer, &length)
            }
        }
        #expect(listen(silent, 8) == 0)
        let silentPort = Int(UInt16(bigEndian: address.sin_port))
        let config = scratch.write(
            "gateway.toml",
            """
            [gateway]
            id = "KZ-WAG-TEST"
            state_dir = "\(scratch.path)/state"
            control_socket = "\(scratch.path)/control.sock"
            profile_path = ["Firmware-config/profiles"]

            [buffer]
            sync_interval_ms = 100

            [upstream]
            url = "none"

            [[bus]]
            name = "stuck-line"
            transport = "tcp"
            host = "127.0.0.1"
            port = \(silentPort)
            timeout_ms = 60000
            retries = 0

            [[bus]]
            name = "good-line"
            transport = "tcp"
            host = "127.0.0.1"
            port = \(simulator.port)
            timeout_ms = 300

            [[device]]
            name = "silent-box"
            bus = "stuck-line"
            unit = 1
            profile = "axle-bearing-sensor"
            poll_interval_ms = 100

            [[device]]
            name = "axlebox-1"
            bus = "good-line"
            unit = 7
            profile = "axle-bearing-sensor"
            poll_interval_ms = 100
            """)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let handedOut = try eventually("records in the buffer") { () -> Int? in
            let next = try daemonStatus(scratch)["buffer"]?["next_seq"]?.intValue ?? 0
            return next > 10 ? next - 1 : nil
        }
        gateway.signal(SIGTERM)
        let started = Date()
        let status = try gateway.waitForExit(seconds: 40)
        let took = Date().timeIntervalSince(started)
        #expect(status == 70, "\(gateway.errorOutput.suffix(1000))")
        #expect(took >= 19 && took < 29, "cut short at the 20 s deadline, inside TimeoutStopSec: \(took) s")
        #expect(gateway.errorOutput.contains("bus stuck-line did not stop within 20 s"), "\(gateway.errorOutput)")
        let kept = Set(seqs(try bufferedRecords(scratch.path + "/state", scratch: scratch)))
        #expect(kept.isSuperset(of: 1...handedOut), "missing: \(Set(1...handedOut).subtracting(kept).sorted())")
    }

    @Test("no thread to be had at start-up: exit 71 naming the service and the errno; nothing runs inline")
    func noThreadAtStartUp() throws {
        let scratch = Scratch()
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let config = gatewayConfig(
            scratch: scratch, brokerPort: nil, devices: [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")])
        // Threads get RLIMIT_STACK (4 GB here) as their stack, more than RLIMIT_AS (3 GB) leaves:
        // every pthread_create fails with EAGAIN, as on a box out of memory.
        let result = try TestProcess.run(
            "/bin/sh",
            ["-c", "ulimit -s 4000000 && ulimit -v 3000000 && exec \(Binaries.railgate) run --config \(config)"],
            scratch: scratch)
        #expect(result.status == 71, "\(result.error)")
        #expect(
            result.error.contains(
                "cannot start a thread for the buffer's group commit: pthread_create: Resource temporarily unavailable (errno 11); exiting"
            ), "\(result.error)")
        #expect(!result.error.contains("not answering"), "no poll ran inline")
        let stats = try TestProcess.run(
            Binaries.railgate, ["buffer", "stats", "--json", "--state-dir", scratch.path + "/state"], scratch: scratch)
        #expect((try? JSONReader.parse(stats.output))?["records"]?.intValue == 0, "no record was polled")
    }
}
