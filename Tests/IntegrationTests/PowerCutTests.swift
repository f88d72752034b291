import Foundation
import RailgateCore
import Testing

/// Where the VM kit, the guest's binaries and the host tools are, and why the test cannot run
/// when something is missing.
enum PowerCutSetup {
    static let environment = ProcessInfo.processInfo.environment

    /// The kit (kernel, initramfs packer, qemu runner): `$RAILGATE_VM_KIT`, else `shared/vm` next
    /// to the repository (as CI lays it out), else `/work/shared/vm`; the first with a kernel.
    static let kit = VMKit.path

    /// The guest's `railgate` and `railgate-sim`: `$RAILGATE_VM_BIN_DIR`, else `.build/release`
    /// (`make test-vm` builds them there with Swift's runtime linked statically).
    static let binaries = environment["RAILGATE_VM_BIN_DIR"] ?? projectRoot + "/.build/release"

    static let hostTools = ["qemu-system-x86_64", "mkfs.ext4", "e2fsck", "debugfs", "cpio", "md5sum"]

    /// Nil when the test can run; otherwise what to do about it.
    static let skipReason: String? = {
        guard environment["RAILGATE_VM_TESTS"] == "1" else {
            return "the power-cut test boots VMs for minutes: run it with `make test-vm` (RAILGATE_VM_TESTS=1)"
        }
        guard kit != nil else {
            return "no VM kit: expected shared/vm next to the repository (\(projectRoot)/../shared/vm) "
                + "or $RAILGATE_VM_KIT; see README.md, 'The power-cut test'"
        }
        let missing = hostTools.filter { executable($0) == nil }
        guard missing.isEmpty else {
            return "missing \(missing.joined(separator: ", ")): make test-vm installs them "
                + "(qemu-system-x86 e2fsprogs cpio busybox-static)"
        }
        return nil
    }()

    /// The path of `name` on `$PATH` (and the sbin folders), or nil.
    static func executable(_ name: String) -> String? {
        let folders = (environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        return folders.map { $0 + "/" + name }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// A small seeded generator (SplitMix64), so a run's cut moments can be replayed from its seed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What one boot's guest script printed on the serial console (see Fixtures/powercut/guest.sh).
struct GuestReport {
    /// `railgate buffer stats --json` before the daemon started; `.null` when there was no
    /// buffer yet (`PC-STATS none`), nil when the guest printed nothing.
    var stats: JSON?
    var dumpLines: Int?
    var dumpMD5: String?
    /// The first seq this run's daemon handed out.
    var first: UInt64?
    /// Every `PC-STATUS` report: next_seq - 1 and durable_seq.
    var statuses: [(handed: UInt64, durable: UInt64)] = []
    /// How many of them came after `PC-FIRST`.
    var statusesAfterFirst = 0
    var errors: [String] = []
    /// Whether the guest started the daemon (`PC-DAEMON`).
    var daemonStarted = false
    /// The daemon's exit status after the final boot's SIGTERM.
    var finalStatus: UInt64?

    /// Parses complete lines only: a line the kill cut short is ignored.
    init(console: String) {
        var text = console.replacingOccurrences(of: "\r", with: "")
        if let newline = text.lastIndex(of: "\n") { text = String(text[...newline]) } else { text = "" }
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            func number(_ key: String) -> UInt64? {
                words.first { $0.hasPrefix(key + "=") }.flatMap { UInt64($0.dropFirst(key.count + 1)) }
            }
            switch words.first {
            case "PC-STATS":
                let text = String(line.dropFirst("PC-STATS ".count))
                stats = text == "none" ? .null : try? JSONReader.parse(text)
            case "PC-DUMP":
                dumpLines = number("lines").map(Int.init)
                dumpMD5 = words.first { $0.hasPrefix("md5=") }.map { String($0.dropFirst(4)) }
            case "PC-DAEMON": daemonStarted = true
            case "PC-FIRST": first = number("seq")
            case "PC-STATUS":
                if let handed = number("handed"), let durable = number("durable") {
                    statuses.append((handed, durable))
                    if first != nil { statusesAfterFirst += 1 }
                }
            case "PC-ERROR:": errors.append(String(line))
            case "PC-FINAL": finalStatus = number("status")
            default: break
            }
        }
    }

    var maxHanded: UInt64 { statuses.map(\.handed).max() ?? 0 }
    var maxDurable: UInt64 { statuses.map(\.durable).max() ?? 0 }
}

/// The buffer as found on the disk image after a cut, read from the host: e2fsck replays the
/// journal on a copy, debugfs copies `state` out, and the read-only `railgate buffer` tools read it.
struct DiskView {
    var fsckStatus: Int32
    /// Whether `state/buffer` is on the image at all.
    var bufferExists: Bool
    var limitsFile: String?
    var stats: JSON
    /// Every line `railgate buffer dump` printed, with its seq (nil: not an intact record).
    var records: [(seq: UInt64?, line: String)]
    var dumpMD5: String

    var lastSeq: UInt64 { records.last?.seq ?? 0 }
}

@Suite("Power cuts in a VM", .serialized)
struct PowerCutTests {
    /// The devices of Fixtures/powercut/powercut.toml, and its gateway id (the source of the
    /// events the buffer writes itself, such as a report of records lost in a cut).
    static let sources: Set<String> = ["axlebox-1", "axlebox-2"]
    static let gatewayID = "VM-POWERCUT"
    /// `[buffer] max_bytes` in Fixtures/powercut/powercut.toml: not the default, so a lost
    /// `limits` file shows in `railgate buffer stats`.
    static let maxBytes = 4_194_304

    @Test(
        "qemu SIGKILLed at 30+ random moments: durable records intact, none changed, no seq handed out twice",
        .enabled(if: PowerCutSetup.skipReason == nil, Comment(rawValue: PowerCutSetup.skipReason ?? "")))
    func powerCuts() throws {
        let environment = PowerCutSetup.environment
        let kit = try #require(PowerCutSetup.kit)
        let cuts = Int(environment["RAILGATE_POWERCUT_CUTS"] ?? "") ?? 32
        let seed = UInt64(environment["RAILGATE_POWERCUT_SEED"] ?? "") ?? UInt64.random(in: 1...999_999)
        let maxDelayMs = UInt64(environment["RAILGATE_POWERCUT_MAX_DELAY_MS"] ?? "") ?? 4000
        let noFsync = environment["RAILGATE_POWERCUT_NOFSYNC"] == "1"
        var random = SplitMix64(seed: seed)
        let scratch = Scratch()
        let started = Date()
        print(
            "powercut: \(cuts) cuts, seed \(seed) (the same cut moments again: RAILGATE_POWERCUT_SEED=\(seed) make test-vm), kit \(kit)"
                + (noFsync ? ", NEGATIVE CONTROL: the daemon's fsync/fdatasync are no-ops (libeatmydata)" : ""))

        let initrd = try packInitramfs(kit: kit, scratch: scratch, noFsync: noFsync)
        let image = scratch.path + "/disk.img"
        try run("/usr/bin/truncate", ["-s", "64M", image], scratch: scratch)
        try run(PowerCutSetup.executable("mkfs.ext4")!, ["-F", "-q", image], scratch: scratch)

        var previous: DiskView?
        var known: [UInt64: String] = [:]  // every intact record seen after an earlier cut
        var handedBefore: UInt64 = 0  // the highest seq any run reported handed out
        var pending: (cut: Int, summary: String, failures: [(check: String, detail: String)])?
        var failedChecks: [String: Int] = [:]
        var passed = 0
        var failed = 0
        var recordsChecked = 0
        var lost: [UInt64] = []
        var reused: [UInt64] = []
        var startupCuts = 0

        func conclude(_ cut: Int, _ summary: String, _ failures: [(check: String, detail: String)]) {
            let name = cut > cuts ? "clean stop" : "cut \(cut)"
            if failures.isEmpty {
                passed += 1
                print("\(name): PASS: \(summary)")
                return
            }
            failed += 1
            for check in Set(failures.map(\.check)) { failedChecks[check, default: 0] += 1 }
            print("\(name): FAIL: \(summary)")
            for failure in failures {
                print("    \(failure.check): \(failure.detail)")
                Issue.record("\(name): \(failure.check): \(failure.detail)")
            }
        }

        for boot in 1...(cuts + 1) {
            let final = boot == cuts + 1
            // One cut in four falls while the daemon starts (recovery, its first records); the
            // others at any moment of its steady run. Drawn in a fixed order: a seed replays them.
            let startupCut = !final && random.next() % 4 == 0
            let delayMs = startupCut ? random.next() % 2001 : random.next() % (maxDelayMs + 1)
            let bootStarted = Date()
            let log = scratch.path + "/console-\(boot).log"
            let pidFile = scratch.path + "/qemu-\(boot).pid"
            let arguments =
                ["--initrd", initrd, "--disk", image, "--pidfile", pidFile, "--log", log, "--timeout", "300", "--"]
                + (final ? ["powercut.final"] : []) + (noFsync ? ["powercut.nofsync"] : [])
            let vm = try TestProcess(kit + "/run-vm.sh", arguments, scratch: scratch, name: "vm-\(boot)")
            let console = { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
            // Wait for the daemon's start (a start-up cut), or for the run's first record and a
            // status report after it, or the guest's failure; bounded.
            let deadline = Date().addingTimeInterval(180)
            while vm.isRunning, Date() < deadline {
                let report = GuestReport(console: console())
                if !report.errors.isEmpty || report.statusesAfterFirst > 0 || startupCut && report.daemonStarted {
                    break
                }
                usleep(50_000)
            }
            let waited = Date().timeIntervalSince(bootStarted)

            var failures: [(check: String, detail: String)] = []
            if final {
                let status = try vm.waitForExit(seconds: 180)
                if status != 0 { failures.append(("vm", "the final boot ended with \(status)")) }
            } else {
                if vm.isRunning { usleep(UInt32(delayMs * 1000)) }
                let qemu = try eventually("boot \(boot): qemu's pid", seconds: 30) {
                    (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap {
                        pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines))
                    }
                }
                let wasRunning = vm.isRunning
                kill(qemu, SIGKILL)
                let status = try vm.waitForExit(seconds: 60)
                if !wasRunning || status != 137 {
                    failures.append(("vm", "the VM was not cut: it ended by itself with status \(status)"))
                }
            }
            let report = GuestReport(console: console())
            let ran = startupCut ? report.daemonStarted : report.first != nil && report.statusesAfterFirst > 0
            if !ran || !report.errors.isEmpty {
                failures.append(
                    (
                        "vm",
                        "the guest did not run the daemon and report its status (\(report.errors.joined(separator: "; "))); console:\n"
                            + console().suffix(1500)
                    ))
            }
            if final, report.first != nil, report.finalStatus != 0 {
                failures.append(
                    (
                        "vm",
                        "the daemon did not stop cleanly: \(report.finalStatus.map { "status \($0)" } ?? "no PC-FINAL")"
                    ))
            }

            // The image, from the host.
            let view = try inspect(image: image, scratch: scratch)
            // The records this run wrote: nothing else wrote to the disk since the last check.
            let written = view.records.compactMap(\.seq).filter { known[$0] == nil }

            // The previous cut's last checks need this boot: its view of the disk before the
            // daemon started, and the first seq the restarted daemon handed out (seen live, or
            // on the disk when this run was cut before it could say).
            if let waiting = pending, let previous {
                let (cut, summary, failures) = waiting
                var all = failures + guestViewFailures(report, host: previous)
                let first = [report.first, written.min()].compactMap { $0 }.min()
                if let first, first <= handedBefore {
                    all.append(
                        (
                            "next-seq",
                            "the restarted daemon handed out seq \(first) again: seqs up to \(handedBefore) had been reported handed out by the runs before"
                        ))
                    reused.append(handedBefore - first + 1)
                } else if first == nil, !startupCut {
                    all.append(("next-seq", "the restarted daemon wrote no record (\(report.errors))"))
                }
                conclude(
                    cut,
                    summary + "; next run's first seq \(first.map(String.init) ?? "? (cut before its first record)")",
                    all)
                pending = nil
            }
            handedBefore = max(handedBefore, report.maxHanded)

            // What this run must have left on the disk: from its first record through the highest
            // durable_seq it reported (older records are held by the stable check); after a clean
            // stop, through the last seq it handed out.
            let mustHold = report.first.map { (from: $0, through: final ? report.maxHanded : report.maxDurable) }
            failures += diskFailures(view, known: known, mustHold: mustHold)
            recordsChecked += view.records.count
            for record in view.records { if let seq = record.seq { known[seq] = record.line } }
            let onDisk = view.lastSeq
            let cutLoss = report.maxHanded > onDisk ? report.maxHanded - onDisk : 0
            let moment =
                final
                ? "after a clean stop"
                : startupCut
                    ? "start-up cut: killed \(delayMs) ms after the daemon started"
                    : "killed \(delayMs) ms after the run's first record and status"
            let summary =
                moment
                + "; reported handed \(report.maxHanded), durable \(report.maxDurable) (\(report.statuses.count) reports)"
                + "; on disk through \(onDisk) (\(cutLoss) not durable lost), \(view.records.count) records checked"
                + String(
                    format: "; %.1f s (%.1f s to the cut's reference point)", Date().timeIntervalSince(bootStarted),
                    waited)
            if final {
                conclude(boot, summary, failures)
            } else {
                if !startupCut { lost.append(cutLoss) }
                if startupCut { startupCuts += 1 }
                pending = (boot, summary, failures)
            }
            previous = view
        }

        let seconds = Int(Date().timeIntervalSince(started))
        let checks = failedChecks.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print(
            "powercut: \(cuts) cuts (\(startupCuts) while the daemon started) and a clean stop, \(recordsChecked) records checked (\(known.count) distinct seqs), "
                + "\(seconds) s; not-durable records lost per steady-run cut \(lost.min() ?? 0)-\(lost.max() ?? 0); "
                + "cuts after which seqs were handed out again: \(reused.count) (\(reused.reduce(0, +)) seqs); seed \(seed)"
        )
        if !checks.isEmpty { print("powercut: checks failed (cuts): \(checks)") }
        print("powercut: \(passed) passed, \(failed) failed")
        if environment["RAILGATE_VM_KEEP"] == "1" {
            let kept = NSTemporaryDirectory() + "railgate-powercut-\(seed)"
            try? FileManager.default.removeItem(atPath: kept)
            try FileManager.default.copyItem(atPath: scratch.path, toPath: kept)
            print("powercut: consoles and the disk image kept in \(kept)")
        }
        #expect(passed == cuts + 1, "every cut and the clean stop must pass")
    }

    /// Strips the guest's binaries (a smaller initramfs boots faster) and packs them with the
    /// profiles, the configuration and the guest script.
    func packInitramfs(kit: String, scratch: Scratch, noFsync: Bool) throws -> String {
        let fixtures = projectRoot + "/Tests/IntegrationTests/Fixtures/powercut"
        var files: [String] = []
        for name in ["railgate", "railgate-sim"] {
            let built = PowerCutSetup.binaries + "/" + name
            try #require(
                FileManager.default.isExecutableFile(atPath: built),
                "no \(built): `make test-vm` builds it (swift build -c release --static-swift-stdlib)")
            let stripped = scratch.path + "/" + name
            if let strip = PowerCutSetup.executable("strip"),
                (try? run(strip, ["-o", stripped, built], scratch: scratch)) != nil
            {
                files.append(stripped + "=/usr/bin/")
            } else {
                files.append(built + "=/usr/bin/")
            }
        }
        files += [
            projectRoot + "/Firmware-config/profiles=/etc/railgate/profiles",
            fixtures + "/powercut.toml=/etc/railgate/powercut.toml",
        ]
        if noFsync {
            let library = "/usr/lib/x86_64-linux-gnu/libeatmydata.so"
            try #require(
                FileManager.default.fileExists(atPath: library), "the negative control needs libeatmydata1 (apt-get)")
            files.append(library + "=" + library)
        }
        let initrd = scratch.path + "/initrd.cpio.gz"
        try run(kit + "/mkinitramfs.sh", ["--test", fixtures + "/guest.sh", initrd] + files, scratch: scratch)
        return initrd
    }

    /// Replays the journal on a copy of `image`, copies `state` out and reads it with the
    /// read-only tools (the same binary as in the guest).
    func inspect(image: String, scratch: Scratch) throws -> DiskView {
        let copy = scratch.path + "/check.img"
        let out = scratch.path + "/check"
        try? FileManager.default.removeItem(atPath: out)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try run("/bin/cp", ["--sparse=always", image, copy], scratch: scratch)
        // 1: the journal was replayed and the free counts fixed (normal after a cut); more is damage.
        let fsck = try TestProcess.run(PowerCutSetup.executable("e2fsck")!, ["-fy", copy], scratch: scratch)
        try run(PowerCutSetup.executable("debugfs")!, ["-R", "rdump /state \(out)", copy], scratch: scratch)
        let state = out + "/state"
        guard FileManager.default.fileExists(atPath: state + "/buffer") else {
            return DiskView(
                fsckStatus: fsck.status, bufferExists: false, limitsFile: nil, stats: .null, records: [], dumpMD5: "")
        }
        let railgate = PowerCutSetup.binaries + "/railgate"
        let stats = try TestProcess.run(
            railgate, ["buffer", "stats", "--state-dir", state, "--json"], scratch: scratch)
        let dump = try TestProcess.run(railgate, ["buffer", "dump", "--state-dir", state], scratch: scratch)
        let dumpFile = scratch.path + "/dump.jsonl"
        try dump.output.write(toFile: dumpFile, atomically: false, encoding: .utf8)
        let md5 = try TestProcess.run("/usr/bin/md5sum", [dumpFile], scratch: scratch).output.prefix { $0 != " " }
        let records = dump.output.split(separator: "\n").map { line -> (seq: UInt64?, line: String) in
            guard let record = try? JSONReader.parse(String(line)), let seq = record["seq"]?.intValue, seq > 0,
                record["ts"]?.stringValue != nil, let source = record["source"]?.stringValue,
                let kind = record["kind"]?.stringValue,
                Self.sources.contains(source) && (kind == "sample" || kind == "event")
                    || source == Self.gatewayID && kind == "event"
            else { return (nil, String(line)) }
            return (UInt64(seq), String(line))
        }
        return DiskView(
            fsckStatus: fsck.status, bufferExists: true,
            limitsFile: try? String(contentsOfFile: state + "/buffer/limits", encoding: .utf8),
            stats: (try? JSONReader.parse(stats.output)) ?? .null, records: records, dumpMD5: String(md5))
    }

    /// The checks on the image after a cut.
    func diskFailures(
        _ view: DiskView, known: [UInt64: String], mustHold: (from: UInt64, through: UInt64)?
    ) -> [(check: String, detail: String)] {
        var failures: [(check: String, detail: String)] = []
        if view.fsckStatus > 1 { failures.append(("fsck", "e2fsck -fy exited \(view.fsckStatus)")) }
        // intact: each line a record of this gateway's sources, seqs strictly increasing (each once).
        var previous: UInt64 = 0
        for record in view.records {
            guard let seq = record.seq else {
                failures.append(("intact", "not an intact record: \(record.line.prefix(200))"))
                continue
            }
            if seq <= previous {
                failures.append(("intact", "seq \(seq) after seq \(previous) (duplicated or out of order)"))
            }
            previous = seq
        }
        if view.bufferExists, view.stats["dropped"]?.intValue != 0 {
            failures.append(
                ("intact", "the buffer dropped records (is the test's max_bytes too small?): \(view.stats.serialized)"))
        }
        // durable: every seq this run reported durable is there.
        let present = Set(view.records.compactMap(\.seq))
        if let mustHold, mustHold.from <= mustHold.through {
            let missing = (mustHold.from...mustHold.through).filter { !present.contains($0) }
            if !missing.isEmpty {
                failures.append(
                    (
                        "durable",
                        "\(missing.count) of the seqs \(mustHold.from)...\(mustHold.through) reported durable are missing"
                            + (view.bufferExists ? "" : " (no state/buffer on the image)") + ": \(missing.prefix(10))"
                    ))
            }
        }
        // stable: a record found after an earlier cut is still there, byte for byte.
        var byseq: [UInt64: String] = [:]
        for record in view.records { if let seq = record.seq, byseq[seq] == nil { byseq[seq] = record.line } }
        var vanished: [UInt64] = []
        var changed: [UInt64] = []
        for (seq, line) in known {
            guard let now = byseq[seq] else {
                vanished.append(seq)
                continue
            }
            if now != line { changed.append(seq) }
        }
        if !vanished.isEmpty {
            failures.append(
                (
                    "stable",
                    "\(vanished.count) records found after an earlier cut are gone: \(vanished.sorted().prefix(10))"
                ))
        }
        if !changed.isEmpty {
            failures.append(
                ("stable", "\(changed.count) seqs now hold a different record: \(changed.sorted().prefix(10))"))
        }
        // limits: the read-only tools still know the configured max_bytes. The file is written
        // (new file, fsync, rename, fsync directory) when the buffer opens, before any record: a
        // cut before that leaves none yet, and no record either; a file there is never torn.
        let limitsDue = view.limitsFile != nil || !view.records.isEmpty
        if view.bufferExists, limitsDue, view.stats["max_bytes"]?.intValue != Self.maxBytes {
            failures.append(
                (
                    "limits",
                    "buffer stats says max_bytes \(view.stats["max_bytes"]?.serialized ?? "?"), configured \(Self.maxBytes); limits file: \(view.limitsFile.map { "\"\($0)\"" } ?? "missing")"
                ))
        }
        return failures
    }

    /// The guest kernel's view of the disk (before the daemon started) against the host's.
    func guestViewFailures(_ guest: GuestReport, host: DiskView) -> [(check: String, detail: String)] {
        guard let stats = guest.stats else { return [("guest-view", "the guest printed no buffer stats")] }
        if stats == .null || !host.bufferExists {
            return stats == .null && !host.bufferExists
                ? []
                : [
                    (
                        "guest-view",
                        "the guest sees \(stats == .null ? "no" : "a") buffer, the host \(host.bufferExists ? "one" : "none")"
                    )
                ]
        }
        var failures: [(check: String, detail: String)] = []
        for key in ["records", "first_seq", "next_seq", "max_bytes", "dropped"]
        where stats[key]?.serialized != host.stats[key]?.serialized {
            failures.append(
                (
                    "guest-view",
                    "\(key): the guest sees \(stats[key]?.serialized ?? "nothing"), the host \(host.stats[key]?.serialized ?? "nothing")"
                ))
        }
        if guest.dumpLines != host.records.count || guest.dumpMD5 != host.dumpMD5 {
            failures.append(
                (
                    "guest-view",
                    "buffer dump: the guest has \(guest.dumpLines ?? -1) lines md5 \(guest.dumpMD5 ?? "?"), the host \(host.records.count) lines md5 \(host.dumpMD5)"
                ))
        }
        return failures
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
