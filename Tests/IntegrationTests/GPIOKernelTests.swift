import Foundation
import RailgateCore
import Testing

/// The libgpiod builds the real-kernel GPIO test runs, and why one cannot run here.
enum GPIOKernelSetup {
    static let environment = ProcessInfo.processInfo.environment

    /// The VM kit: `$RAILGATE_VM_KIT`, else `shared/vm` next to the repository (as CI lays it
    /// out), else `/work/shared/vm`; the first with a kernel.
    static let kit = VMKit.path

    enum Backend: String, CaseIterable {
        case v1, v2

        /// The guest's `railgate`, built by `make test-vm` with Swift's runtime linked statically:
        /// against the system's libgpiod 1.6, or against libgpiod 2.1.3 by `.ci/gpiod2.sh`.
        var binary: String {
            switch self {
            case .v1:
                environment["RAILGATE_VM_BIN_DIR"].map { $0 + "/railgate" } ?? projectRoot + "/.build/release/railgate"
            case .v2: projectRoot + "/.build-gpiod2/release/railgate"
            }
        }

        /// Where `.ci/gpiod2.sh` unpacked libgpiod 2 and its tools (v2 only).
        static let gpiod2 = projectRoot + "/.build/gpiod2/usr"
    }

    static let hostTools = ["qemu-system-x86_64", "cpio", "strip"]

    /// Nil when the test can run for `backend`; otherwise what to do about it.
    static func skipReason(_ backend: Backend) -> String? {
        guard environment["RAILGATE_VM_TESTS"] == "1" else {
            return "the real-kernel GPIO test boots VMs: run it with `make test-vm` (RAILGATE_VM_TESTS=1)"
        }
        guard kit != nil else {
            return "no VM kit: expected shared/vm next to the repository (\(projectRoot)/../shared/vm) "
                + "or $RAILGATE_VM_KIT; see README.md, 'GPIO on a real kernel'"
        }
        let missing = hostTools.filter { executable($0) == nil }
        guard missing.isEmpty else {
            return "missing \(missing.joined(separator: ", ")): make test-vm installs them"
        }
        if backend == .v1, executable("gpioinfo") == nil {
            return "no gpiod tools (libgpiod 1.6's gpioinfo, gpiomon): make test-vm installs Debian's gpiod"
        }
        guard FileManager.default.isExecutableFile(atPath: backend.binary) else {
            return "no \(backend.binary): make test-vm builds it"
        }
        if backend == .v2, !FileManager.default.isExecutableFile(atPath: Backend.gpiod2 + "/bin/gpioinfo") {
            return "no libgpiod 2 tools in \(Backend.gpiod2): .ci/gpiod2.sh fetch unpacks them"
        }
        return nil
    }

    static func executable(_ name: String) -> String? {
        let folders = (environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        return folders.map { $0 + "/" + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// What the guest script (Fixtures/gpio-vm/guest.sh) printed on the console.
struct GPIOGuestReport {
    var version = ""
    var kernel = ""
    var passes: [String] = []
    var failures: [String] = []
    var gpioinfo: [String] = []
    var railgateInfo: JSON?
    var infoByLabel = ""
    var watch: [JSON] = []
    var watchWindow: (start: Double, end: Double)?
    var monitor: [String] = []
    var records: [JSON] = []
    var daemonExit: Int?
    var seconds: Double?
    var log: [String] = []

    init(console: String) {
        var watchStart: Double?
        for raw in console.replacingOccurrences(of: "\r", with: "").split(separator: "\n") {
            let line = String(raw)
            func rest(_ prefix: String) -> String? {
                line.hasPrefix(prefix) ? String(line.dropFirst(prefix.count)) : nil
            }
            func uptime() -> Double? { line.split(separator: "=").last.flatMap { Double($0) } }
            if let text = rest("GV-API ") {
                version = text
            } else if let text = rest("GV-KERNEL ") {
                kernel = text
            } else if let text = rest("GV-PASS ") {
                passes.append(text)
            } else if let text = rest("GV-FAIL ") {
                failures.append(text)
            } else if let text = rest("GV-GPIOINFO ") {
                gpioinfo.append(text)
            } else if let text = rest("GV-RGINFO-LABEL ") {
                infoByLabel = text
            } else if let text = rest("GV-RGINFO ") {
                railgateInfo = try? JSONReader.parse(text)
            } else if line.hasPrefix("GV-WATCH-START ") {
                watchStart = uptime()
            } else if line.hasPrefix("GV-WATCH-END "), let start = watchStart, let end = uptime() {
                watchWindow = (start, end)
            } else if let text = rest("GV-WATCH ") {
                if let event = try? JSONReader.parse(text) {
                    watch.append(event)
                } else {
                    failures.append("watch: \(text)")
                }
            } else if let text = rest("GV-MON ") {
                monitor.append(text)
            } else if let text = rest("GV-REC ") {
                if let record = try? JSONReader.parse(text) {
                    records.append(record)
                } else {
                    failures.append("record: \(text)")
                }
            } else if let text = rest("GV-DAEMON-EXIT ") {
                daemonExit = Int(text)
            } else if let text = rest("GV-TIME ") {
                seconds = Double(text)
            } else if let text = rest("GV-LOG ") {
                log.append(text)
            }
        }
    }

    /// The gate's events in seq order: (event, fault, the record).
    func events(of gate: String) -> [JSON] {
        records.filter { $0["source"]?.stringValue == gate && $0["kind"]?.stringValue == "event" }
    }
}

/// A line as gpioinfo (libgpiod 1.6 or 2.x) prints it.
struct GPIOInfoLine: Equatable {
    var name: String
    var consumer: String?
    var activeLow: Bool

    /// v1: `line   5: "NAME" "CONSUMER" input active-low [used]` (or `unnamed`, `unused`);
    /// v2: `line   5: "NAME" input active-low consumer="CONSUMER"`.
    static func parse(_ text: String) -> (offset: Int, line: GPIOInfoLine)? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("line"), let colon = trimmed.firstIndex(of: ":"),
            let offset = Int(
                trimmed[trimmed.index(trimmed.startIndex, offsetBy: 4)..<colon].trimmingCharacters(in: .whitespaces))
        else { return nil }
        let after = String(trimmed[trimmed.index(after: colon)...])
        let quoted = after.split(separator: "\"", omittingEmptySubsequences: false)
        // quoted: [before, NAME, between, CONSUMER?, ...] for v1; v2 has consumer="..." instead.
        let name =
            after.trimmingCharacters(in: .whitespaces).hasPrefix("unnamed")
            ? "" : (quoted.count > 1 ? String(quoted[1]) : "")
        var consumer: String?
        if let range = after.range(of: "consumer=\"") {
            consumer = String(after[range.upperBound...].prefix { $0 != "\"" })
        } else if quoted.count > 3, quoted[2].trimmingCharacters(in: .whitespaces).isEmpty {
            consumer = String(quoted[3])
        } else if after.contains("[used") || after.contains("kernel") {
            consumer = "kernel"
        }
        return (offset, GPIOInfoLine(name: name, consumer: consumer, activeLow: after.contains("active-low")))
    }
}

@Suite("GPIO on a real kernel: gpio-sim in a VM", .serialized)
struct GPIOKernelTests {
    @Test(
        "libgpiod v1 backend against the kernel's gpio-sim",
        .enabled(if: GPIOKernelSetup.skipReason(.v1) == nil, Comment(rawValue: GPIOKernelSetup.skipReason(.v1) ?? "")))
    func v1Backend() throws { try check(.v1) }

    @Test(
        "libgpiod v2 backend against the kernel's gpio-sim",
        .enabled(if: GPIOKernelSetup.skipReason(.v2) == nil, Comment(rawValue: GPIOKernelSetup.skipReason(.v2) ?? "")))
    func v2Backend() throws { try check(.v2) }

    /// Packs the backend's railgate (stripped) and its libgpiod tools with the guest script,
    /// boots the VM and checks what it printed.
    func check(_ backend: GPIOKernelSetup.Backend) throws {
        let kit = try #require(GPIOKernelSetup.kit)
        let scratch = Scratch()
        let started = Date()
        let stripped = scratch.path + "/railgate"
        try run(GPIOKernelSetup.executable("strip")!, ["-o", stripped, backend.binary], scratch: scratch)
        let initrd = scratch.path + "/initrd.cpio.gz"
        let guest = projectRoot + "/Tests/IntegrationTests/Fixtures/gpio-vm/guest.sh"
        switch backend {
        case .v1:
            try run(
                kit + "/mkinitramfs.sh", ["--gpiod", "--test", guest, initrd, stripped + "=/usr/bin/"], scratch: scratch
            )
        case .v2:
            // The v2 tools find libgpiod.so.3 in the guest's library folder; ldd on the host finds
            // it through LD_LIBRARY_PATH.
            let gpiod2 = GPIOKernelSetup.Backend.gpiod2
            let libraries = gpiod2 + "/lib/x86_64-linux-gnu"
            let tools = ["gpiodetect", "gpioinfo", "gpioget", "gpioset", "gpiomon"].map {
                gpiod2 + "/bin/" + $0 + "=/usr/bin/"
            }
            try run(
                "/usr/bin/env",
                [
                    "LD_LIBRARY_PATH=" + libraries, kit + "/mkinitramfs.sh", "--test", guest, initrd,
                    stripped + "=/usr/bin/",
                    libraries + "/libgpiod.so.3=/usr/lib/x86_64-linux-gnu/libgpiod.so.3",
                ] + tools,
                scratch: scratch)
        }
        let log = scratch.path + "/console.log"
        let vm = try TestProcess(
            kit + "/run-vm.sh", ["--initrd", initrd, "--log", log, "--timeout", "420"], scratch: scratch, name: "vm")
        let status = try vm.waitForExit(seconds: 480)
        let console = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let report = GPIOGuestReport(console: console)
        let wall = Date().timeIntervalSince(started)
        if GPIOKernelSetup.environment["RAILGATE_VM_KEEP"] == "1" {
            let kept = NSTemporaryDirectory() + "railgate-gpio-vm-\(backend.rawValue).log"
            try? FileManager.default.removeItem(atPath: kept)
            try? FileManager.default.copyItem(atPath: log, toPath: kept)
            print("gpio-vm \(backend.rawValue): console kept in \(kept)")
        }
        print(
            "gpio-vm \(backend.rawValue): railgate \(report.version); kernel \(report.kernel); checks "
                + String(format: "%.1f s in the VM, %.1f s in all", report.seconds ?? -1, wall)
                + "; \(report.passes.count) guest checks passed, \(report.failures.count) failed")
        if status != 0 || report.seconds == nil {
            Issue.record("the VM ended with \(status) before the script finished; console:\n\(console.suffix(3000))")
            return
        }
        #expect(
            report.version.contains(backend == .v1 ? "(v1 API)" : "(v2 API)"), "railgate --version: \(report.version)")
        for failure in report.failures { Issue.record("guest: \(failure)") }
        #expect(report.passes.count == 27, "guest checks passed: \(report.passes)")
        #expect(report.daemonExit == 0, "the daemon's exit status after SIGTERM")
        for gate in ["g-cycle", "g-bounce", "g-low", "g-jam", "g-both", "g-busy", "g-hog", "g-late", "door"] {
            let events = report.events(of: gate).map { event in
                (event["event"]?.stringValue ?? "?") + (event["fault"]?.stringValue.map { "(\($0))" } ?? "")
                    + (event["travel_ms"]?.intValue.map { " travel_ms=\($0)" } ?? "")
                    + (event["held_ms"]?.intValue.map { " held_ms=\($0)" } ?? "")
            }
            print("gpio-vm \(backend.rawValue): \(gate): \(events.joined(separator: ", "))")
        }
        checkEvents(report)
        checkInfo(report)
        checkWatch(report)
        if !report.failures.isEmpty || report.daemonExit != 0 {
            print(report.log.map { "  daemon: " + $0 }.joined(separator: "\n"))
        }
    }

    /// Each barrier's event records, in order, as the buffer holds them.
    func checkEvents(_ report: GPIOGuestReport) {
        func names(_ gate: String) -> [String] {
            report.events(of: gate).map { event in
                let name = event["event"]?.stringValue ?? "?"
                return event["fault"]?.stringValue.map { "\(name):\($0)" } ?? name
            }
        }
        #expect(names("g-cycle") == ["closed", "opening", "open", "closing", "closed"], "full cycle")
        let lastClosed = report.events(of: "g-cycle").last
        #expect(
            lastClosed?["open_ms"]?.intValue != nil && lastClosed?["travel_ms"]?.intValue != nil, "open_ms, travel_ms")
        // The short bounce leaves no event; the 1 s one is an opening and a closing.
        #expect(names("g-bounce") == ["closed", "opening", "closed"], "bounce shorter and longer than debounce_ms")
        let bounce = report.events(of: "g-bounce")
        if bounce.count == 3, let held = bounce[2]["travel_ms"]?.intValue {
            #expect(held >= 1000, "the 1 s bounce lasted \(held) ms by the kernel's timestamps")
        }
        #expect(names("g-low") == ["closed", "opening", "open"], "active_low")
        #expect(names("g-jam") == ["closed", "opening", "fault:travel_timeout"], "jam")
        let jam = report.events(of: "g-jam")
        if jam.count == 3, let opening = jam[1]["ts"]?.stringValue, let fault = jam[2]["ts"]?.stringValue,
            let from = Self.milliseconds(opening), let to = Self.milliseconds(fault)
        {
            #expect(
                abs(to - from - 1500) <= 5, "the travel timeout fired \(to - from) ms after opening, configured 1500")
        }
        #expect(jam.last?["priority"]?.stringValue == "alarm")
        #expect(names("g-both") == ["closed", "fault:both_limits"], "both limits at once")
        #expect(names("g-busy") == ["closed"], "the line held by another process, taken once released")
        #expect(names("g-hog").isEmpty, "a line the kernel holds is never taken")
        // [[input]]: the door contact (active-low, alarm): the short bounce left no event.
        let door = report.events(of: "door")
        #expect(door.map { $0["event"]?.stringValue ?? "?" } == ["active", "inactive", "active"], "door contact")
        #expect(door.allSatisfy { $0["priority"]?.stringValue == "alarm" })
        if door.count == 3, let held = door[2]["held_ms"]?.intValue {
            #expect(held >= 1000, "the door was open \(held) ms by the kernel's timestamps")
        }
        // The late chip's lines read low until the script sets them: "closing" first is right.
        let late = names("g-late")
        #expect(late == ["closed"] || late == ["closing", "closed"], "the chip that appeared after start: \(late)")
        let seqs = report.records.compactMap { $0["seq"]?.intValue }
        #expect(!seqs.isEmpty && seqs == Array(1...seqs.count), "seqs 1...n, each once: \(seqs)")
    }

    /// `railgate gpio info` against gpioinfo, line by line, with the daemon holding its lines.
    func checkInfo(_ report: GPIOGuestReport) {
        let reference = Dictionary(
            report.gpioinfo.compactMap(GPIOInfoLine.parse).map { ($0.offset, $0.line) }, uniquingKeysWith: { a, _ in a }
        )
        let lines = report.railgateInfo?["lines"]?.arrayValue ?? []
        #expect(reference.count == 16 && lines.count == 16, "16 lines each: \(reference.count), \(lines.count)")
        for line in lines {
            guard let offset = line["offset"]?.intValue, let expected = reference[Int(offset)] else { continue }
            let used = line["used"] == .bool(true)
            let mine = GPIOInfoLine(
                name: line["name"]?.stringValue ?? "", consumer: used ? line["consumer"]?.stringValue ?? "" : nil,
                activeLow: line["active_low"] == .bool(true))
            #expect(mine == expected, "line \(offset): railgate \(mine), gpioinfo \(expected)")
        }
        #expect(lines.filter { $0["consumer"]?.stringValue == "railgate-g-cycle" }.count == 2)
        #expect(report.infoByLabel.contains("gpiochip"), "railgate gpio info --chip rg-main (by label)")
    }

    /// `railgate gpio watch` and gpiomon on the same four edges; railgate's times on CLOCK_MONOTONIC.
    func checkWatch(_ report: GPIOGuestReport) {
        let edges = report.watch.map { "\($0["edge"]?.stringValue ?? "?") \($0["line"]?.intValue ?? -1)" }
        #expect(edges == ["rising 12", "falling 12", "rising 12", "falling 12"], "railgate gpio watch")
        #expect(report.monitor == ["R 12", "F 12", "R 12", "F 12"], "gpiomon")
        let stamps = report.watch.compactMap { $0["timestamp_ns"]?.intValue }.map { Double($0) / 1e9 }
        if let window = report.watchWindow, stamps.count == 4 {
            #expect(stamps == stamps.sorted(), "edge times in order")
            #expect(
                stamps.allSatisfy { $0 >= window.start - 0.5 && $0 <= window.end + 0.5 },
                "edge times \(stamps) on the guest's monotonic clock (uptime \(window.start)...\(window.end))")
        }
    }

    static func milliseconds(_ iso: String) -> Int64? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: iso).map { Int64(($0.timeIntervalSince1970 * 1000).rounded()) }
    }

    @discardableResult
    func run(_ executable: String, _ arguments: [String], scratch: Scratch) throws -> String {
        let result = try TestProcess.run(executable, arguments, scratch: scratch, seconds: 120)
        guard result.status == 0 else {
            throw TimedOut(
                description:
                    "\(executable) \(arguments.joined(separator: " ")) exited \(result.status): \(result.error)")
        }
        return result.output
    }
}
