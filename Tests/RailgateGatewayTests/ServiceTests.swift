import Foundation
import Glibc
import Logging
import RailgateSystem
import Testing

@testable import RailgateCore
@testable import RailgateGateway

/// The pure parts of running under systemd: the watchdog's settings, heartbeats, the STATUS=
/// line, and journald's priority prefixes.
struct ServiceTests {
    @Test func watchdogPeriodFromTheEnvironment() {
        let watchdog = SystemdWatchdog(environment: ["WATCHDOG_USEC": "30000000"], pid: 42)
        #expect(watchdog?.pingIntervalMs == 15_000)
        #expect(SystemdWatchdog(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"], pid: 42) != nil)
        // Meant for another process (a child that inherited the variables): no pings from here.
        #expect(SystemdWatchdog(environment: ["WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"], pid: 42) == nil)
        #expect(SystemdWatchdog(environment: [:], pid: 42) == nil)
        #expect(SystemdWatchdog(environment: ["WATCHDOG_USEC": "0"], pid: 42) == nil)
        #expect(SystemdWatchdog(environment: ["WATCHDOG_USEC": "30s"], pid: 42) == nil)
    }

    @Test func heartbeatOverdueOnlyPastItsPromiseAndWhileRunning() {
        let beat = Heartbeat(name: "bus line-1")
        beat.expect(within: 2000)
        let now = MonotonicInstant.now()
        #expect(beat.overdueMs(now: now) == nil)
        let promise = 2000 + Heartbeat.slackMs
        #expect(beat.overdueMs(now: now.adding(milliseconds: promise - 100)) == nil)
        let late = beat.overdueMs(now: now.adding(milliseconds: promise + 5000))
        #expect(late != nil && late! >= 4900 && late! <= 5000)
        // A loop whose thread ended is the supervisor's business, not the watchdog's.
        beat.ended()
        #expect(beat.overdueMs(now: now.adding(milliseconds: promise + 5000)) == nil)
        beat.expect(within: 0)
        #expect(beat.overdueMs(now: MonotonicInstant.now().adding(milliseconds: Heartbeat.slackMs + 1000)) != nil)
    }

    @Test func statusLine() {
        #expect(
            StatusLine.render(
                devicesAnswering: 2, devices: 3, gates: 0, uplink: "connected", records: 12, nextSeq: 4711, stalled: nil
            )
                == "2/3 devices answering, uplink connected, buffer 12 records (next seq 4711)")
        #expect(
            StatusLine.render(
                devicesAnswering: 0, devices: 1, gates: 2, uplink: "connecting", records: 0, nextSeq: 1,
                stalled: "bus line-1")
                == "0/1 devices answering, 2 gates, uplink connecting, buffer 0 records (next seq 1); "
                + "bus line-1 stalled, watchdog pings withheld")
    }

    @Test func journalPriorityPrefixes() {
        let warning = LogEvent(
            level: .warning, message: "device x is not answering", metadata: ["unit": "7"], source: "test",
            file: #filePath, function: #function, line: #line)
        #expect(
            RailgateLogHandler.line(event: warning, label: "railgate", metadata: [:], journal: true)
                == "<4>railgate: device x is not answering unit=7")
        #expect(
            RailgateLogHandler.line(event: warning, label: "railgate", metadata: [:], journal: false)
                == "WARNING railgate: device x is not answering unit=7")
        let expected: [(Logger.Level, Int)] = [
            (.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2),
        ]
        for (level, priority) in expected { #expect(level.syslogPriority == priority) }
    }

    @Test func journalStreamMatchesOnlyTheFileItNames() throws {
        let path = NSTemporaryDirectory() + "railgate-journal-\(getpid())"
        let fd = open(path, O_CREAT | O_RDWR, 0o600)
        #expect(fd >= 0)
        defer {
            close(fd)
            unlink(path)
        }
        var info = stat()
        #expect(fstat(fd, &info) == 0)
        #expect(JournalStream.matches("\(info.st_dev):\(info.st_ino)", fd: fd))
        #expect(!JournalStream.matches("\(info.st_dev):\(info.st_ino + 1)", fd: fd))
        #expect(!JournalStream.matches("\(info.st_dev)", fd: fd))
        #expect(!JournalStream.matches("garbage", fd: fd))
    }
}
