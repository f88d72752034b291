import Foundation
import RailgateCore
import RailgateSystem
import Testing

/// systemd's side of sd_notify for a test: a datagram socket the daemon finds in `$NOTIFY_SOCKET`.
final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32
    /// Every datagram received so far, in order.
    private(set) var received: [String] = []

    init(scratch: Scratch) throws {
        path = scratch.path + "/notify.sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0, UnixSocket.bind(fd, to: path) else {
            throw TimedOut(description: "cannot bind \(path): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(fd) }

    /// Reads what arrived within `seconds` (at least one wait, for datagrams already queued).
    @discardableResult
    func collect(seconds: Double) -> [String] {
        var fresh: [String] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        repeat {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let left = max(0, Int32(deadline.timeIntervalSinceNow * 1000))
            guard poll(&descriptor, 1, left) > 0 else { continue }
            let count = recv(fd, &buffer, buffer.count, 0)
            if count > 0 { fresh.append(String(decoding: buffer[0..<count], as: UTF8.self)) }
        } while Date() < deadline
        received += fresh
        return fresh
    }

    /// Waits up to `seconds` for a datagram with a line for which `matches` holds; returns that line.
    func waitForLine(_ what: String, seconds: Double = 30, _ matches: (String) -> Bool) throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let lines = collect(seconds: 0.2).flatMap { $0.split(separator: "\n").map(String.init) }
            if let line = lines.first(where: matches) { return line }
        }
        throw TimedOut(description: "no sd_notify line \(what) within \(seconds) s; received \(received.suffix(10))")
    }
}

/// `Type=notify` with `WatchdogSec=`, without systemd: the daemon's datagrams on a socket of our own.
@Suite(.serialized) struct WatchdogTests {
    @Test func readyStatusAndWatchdogPingsStopWhenABusLoopStalls() throws {
        let scratch = Scratch()
        let notify = try NotifySocket(scratch: scratch)
        let broker = try Broker(scratch: scratch)
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let config = gatewayConfig(
            scratch: scratch, brokerPort: broker.port,
            devices: [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")], pollMs: 200)
        let stallFile = scratch.path + "/stall"
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate",
            environment: [
                "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000",
                "RAILGATE_TEST_HOOK_STALL_FILE": stallFile,
            ])

        _ = try notify.waitForLine("READY=1") { $0 == "READY=1" }
        let status = try notify.waitForLine("STATUS= with the device answering and the uplink connected") {
            $0.hasPrefix("STATUS=1/1 devices answering, uplink connected, buffer ")
        }
        #expect(status.contains("next seq"))
        // Pings every half period (1 s) while every loop beats.
        notify.collect(seconds: 3.5)
        #expect(notify.received.filter { $0.contains("WATCHDOG=1") }.count >= 3, "\(notify.received.suffix(8))")

        // The bus loop takes the hook and hangs: the pings stop once its heartbeat is overdue.
        #expect(FileManager.default.createFile(atPath: stallFile, contents: Data()))
        try eventually("the bus loop took the stall file") {
            FileManager.default.fileExists(atPath: stallFile) ? nil : ()
        }
        let stalled = try notify.waitForLine("STATUS= naming the stalled bus", seconds: 40) {
            $0.hasPrefix("STATUS=") && $0.contains("bus-\(simulator.port) stalled")
        }
        #expect(stalled.contains("watchdog pings withheld"))
        let after = notify.collect(seconds: 3.5)
        #expect(!after.contains { $0.contains("WATCHDOG=1") }, "pings after the stall: \(after)")
        #expect(gateway.errorOutput.contains("bus bus-\(simulator.port) made no progress"))

        // A stalled loop still honours a stop (systemd's SIGABRT is not needed for that).
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit(seconds: stopBoundSeconds) == 0, "\(gateway.errorOutput.suffix(1500))")
        notify.collect(seconds: 0.2)
        #expect(notify.received.contains { $0.contains("STOPPING=1") })
    }

    @Test func outsideSystemdNoWatchdogAndTerminalLines() throws {
        let scratch = Scratch()
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let config = gatewayConfig(
            scratch: scratch, brokerPort: nil, devices: [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")])
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate",
            environment: ["NOTIFY_SOCKET": "", "WATCHDOG_USEC": "2000000", "JOURNAL_STREAM": "1:1"])
        try eventually("the gateway polled") { gateway.errorOutput.contains("buffer holds") ? () : nil }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit(seconds: stopBoundSeconds) == 0)
        // Outside systemd: terminal lines (JOURNAL_STREAM names another file than stderr).
        #expect(gateway.errorOutput.contains("INFO railgate: railgate"), "\(gateway.errorOutput.prefix(600))")
        #expect(!gateway.errorOutput.contains("<6>"))
        #expect(!gateway.errorOutput.contains("systemd watchdog"))
    }

    /// journald gets one line per change of a device's state: with one device of a bus silent,
    /// the polls of its answering neighbour log nothing (they used to log "answers again" each).
    @Test func oneLinePerDeviceStateChangeNeverOnePerPoll() throws {
        let scratch = Scratch()
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let config = gatewayConfig(
            scratch: scratch, brokerPort: nil,
            devices: [
                ("axlebox-1", simulator.port, 7, "axle-bearing-sensor"),
                ("axlebox-2", simulator.port, 8, "axle-bearing-sensor"),
            ], pollMs: 100)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try eventually("20 polls of axlebox-1 and 3 of the silent axlebox-2", seconds: 60, intervalMs: 200) {
            () -> Void? in
            let devices = try daemonStatus(scratch)["devices"]?.arrayValue ?? []
            let polls = { (name: String) in
                devices.first { $0["name"] == .string(name) }?["polls"]?.intValue ?? 0
            }
            return polls("axlebox-1") >= 20 && polls("axlebox-2") >= 3 ? () : nil
        }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit(seconds: stopBoundSeconds) == 0)
        let log = gateway.errorOutput
        #expect(log.components(separatedBy: "device axlebox-2 (unit 8) is not answering").count - 1 == 1, "\(log)")
        #expect(!log.contains("answers again"), "\(log.suffix(2000))")
        #expect(!log.contains("axlebox-1 (unit 7) is not answering"))
    }
}
