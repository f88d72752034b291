import Glibc
import RailgateCore
import RailgateSystem

/// A service loop's proof of life for the systemd watchdog: the loop says, at each step, by
/// when it will report again (`expect(within:)`); the daemon's main thread reads `overdueMs`.
/// A loop that waits for its next poll beats at least every `sliceMs`; one that is in a bounded
/// call (a Modbus poll) says how long that call may take. A loop whose thread has ended is not
/// overdue: restarting it is the supervisor's job, not the watchdog's.
///
/// Threads: `expect` and `ended` on the service's own thread, `overdueMs` on the main thread.
final class Heartbeat: @unchecked Sendable {
    /// What the logs call the loop ("bus line-1", "the uplink").
    let name: String
    private let lock = ConditionLock()
    private var deadline = MonotonicInstant.now().adding(milliseconds: Heartbeat.slackMs)
    private var running = true

    /// The longest a loop waits between two beats while idle, in milliseconds.
    static let sliceMs = 1000
    /// Added to every promise: scheduling delays on a loaded box are not a hang.
    static let slackMs = 10_000

    init(name: String) { self.name = name }

    /// The loop made progress and will report again within `milliseconds` (plus `slackMs`).
    func expect(within milliseconds: Int) {
        let next = MonotonicInstant.now().adding(milliseconds: milliseconds + Self.slackMs)
        lock.withLock {
            deadline = next
            running = true
        }
    }

    /// The loop's thread is ending (asked to stop, or failed and left to the supervisor).
    func ended() { lock.withLock { running = false } }

    /// How long past its promise the loop is, in milliseconds; nil when it kept it.
    func overdueMs(now: MonotonicInstant = .now()) -> Int64? {
        lock.withLock {
            guard running, now > deadline else { return nil }
            return now.milliseconds(since: deadline)
        }
    }
}

/// The daemon's side of the systemd watchdog (`WatchdogSec=`): systemd passes the period as
/// `WATCHDOG_USEC` (and the pid it is meant for as `WATCHDOG_PID`); the main thread sends
/// `WATCHDOG=1` every half period, but only while no `Heartbeat` is overdue, so a hung bus
/// thread or uplink gets the service killed and restarted. See sd_watchdog_enabled(3).
struct SystemdWatchdog: Sendable {
    /// Half of `WATCHDOG_USEC`, in milliseconds: how often the pings go out.
    let pingIntervalMs: Int

    /// The watchdog systemd asked for in `environment`, or nil (no `WatchdogSec=`, not meant for
    /// `pid`, or not a positive number).
    init?(environment: [String: String], pid: Int32) {
        guard let text = environment["WATCHDOG_USEC"], let usec = Int(text), usec > 0 else { return nil }
        if let owner = environment["WATCHDOG_PID"], Int32(owner) != pid { return nil }
        pingIntervalMs = max(1, usec / 2000)
    }

    /// The process's own environment, for `init?(environment:pid:)`.
    static func processEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        for name in ["WATCHDOG_USEC", "WATCHDOG_PID"] {
            if let value = getenv(name) { result[name] = String(cString: value) }
        }
        return result
    }
}

/// The one-line `STATUS=` systemd shows in `systemctl status`: devices answering, the uplink's
/// state, the buffer's depth. `"3/3 devices answering, uplink connected, buffer 12 records (next seq 4711)"`.
enum StatusLine {
    static func render(
        devicesAnswering: Int, devices: Int, gates: Int, uplink: String, records: Int, nextSeq: UInt64,
        stalled: String?
    ) -> String {
        var line = "\(devicesAnswering)/\(devices) devices answering"
        if gates > 0 { line += ", \(gates) gates" }
        line += ", uplink \(uplink), buffer \(records) records (next seq \(nextSeq))"
        if let stalled { line += "; \(stalled) stalled, watchdog pings withheld" }
        return line
    }
}

/// Test hook, never set in production: when the environment names a file in
/// `RAILGATE_TEST_HOOK_STALL_FILE` and that file exists, the next bus loop to look removes it and
/// hangs (until stopped), as a bus thread stuck in a driver would, so a test can prove the systemd
/// watchdog restarts the service. Unset, this costs one `getenv` at start.
enum StallTestHook {
    static let path: String? = getenv("RAILGATE_TEST_HOOK_STALL_FILE").map { String(cString: $0) }

    /// True once, when the trigger file existed and was taken by this caller.
    static func triggered() -> Bool {
        guard let path, !path.isEmpty else { return false }
        return unlink(path) == 0
    }
}
