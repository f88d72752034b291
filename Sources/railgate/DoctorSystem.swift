import CCrypto
import Glibc
import RailgateBuffer
import RailgateCore
import RailgateSystem

/// The running daemon's process, found through its control socket (`SO_PEERCRED`).
struct DaemonProcess {
    var pid: pid_t
    var uid: uid_t
    /// Its primary and supplementary groups (`/proc/PID/status`, `Groups:`).
    var groups: [gid_t]

    /// The process listening on `socket`, or nil when none does or the kernel does not say.
    static func owning(socket path: String) -> DaemonProcess? {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard UnixSocket.connect(fd, to: path) else { return nil }
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; }: three 32-bit fields (Glibc hides the
        // struct's name behind _GNU_SOURCE).
        var credentials = [UInt32](repeating: 0, count: 3)
        var length = socklen_t(12)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, credentials[0] > 0 else {
            return nil
        }
        let pid = pid_t(bitPattern: credentials[0])
        var groups: [gid_t] = [credentials[2]]
        if let status = DoctorSystem.readText("/proc/\(pid)/status") {
            for line in status.split(separator: "\n") where line.hasPrefix("Groups:") {
                let fields = line.dropFirst("Groups:".count).split(separator: " ")
                for field in fields {
                    if let gid = gid_t(String(field.filter { $0 != "\t" })) { groups.append(gid) }
                }
            }
        }
        return DaemonProcess(pid: pid, uid: credentials[1], groups: groups)
    }

    /// The systemd watchdog period the daemon was started with (`WATCHDOG_USEC` in its
    /// environment), in seconds; nil without one or when the environment cannot be read.
    static func watchdogSeconds(pid: pid_t) -> Int? {
        guard let environment = DoctorSystem.readText("/proc/\(pid)/environ") else { return nil }
        for entry in environment.split(separator: "\0") where entry.hasPrefix("WATCHDOG_USEC=") {
            return Int(entry.dropFirst("WATCHDOG_USEC=".count)).map { $0 / 1_000_000 }
        }
        return nil
    }
}

/// Who the service runs as: what doctor checks device permissions for.
struct ServiceUser {
    var name: String
    var uid: uid_t
    var groups: [gid_t]
    /// Where the answer came from: "the running daemon", "the railgate user and its unit's SupplementaryGroups".
    var source: String

    /// The daemon's own credentials when it runs; else the `railgate` user with its groups and the
    /// unit's `SupplementaryGroups=` (the packaged unit adds dialout); else the user running doctor.
    static func find(daemon: DaemonProcess?) -> ServiceUser {
        if let daemon {
            return ServiceUser(
                name: DoctorSystem.userName(daemon.uid), uid: daemon.uid, groups: daemon.groups,
                source: "the running daemon")
        }
        if let entry = getpwnam("railgate") {
            let uid = entry.pointee.pw_uid
            let primary = entry.pointee.pw_gid
            var count: Int32 = 64
            var groups = [gid_t](repeating: 0, count: 64)
            if getgrouplist("railgate", primary, &groups, &count) < 0 { count = 0 }
            var all = Array(groups.prefix(Int(max(0, count))))
            var source = "the railgate user"
            for unit in ["/etc/systemd/system/railgate.service", "/lib/systemd/system/railgate.service"] {
                guard let text = DoctorSystem.readText(unit) else { continue }
                for line in text.split(separator: "\n") where line.hasPrefix("SupplementaryGroups=") {
                    for name in line.dropFirst("SupplementaryGroups=".count).split(separator: " ") {
                        if let group = getgrnam(String(name)) { all.append(group.pointee.gr_gid) }
                    }
                    source += " with \(unit)'s \(line)"
                }
                break
            }
            return ServiceUser(name: "railgate", uid: uid, groups: all, source: source)
        }
        var groups = [gid_t](repeating: 0, count: 256)
        let count = getgroups(Int32(groups.count), &groups)
        return ServiceUser(
            name: DoctorSystem.userName(geteuid()), uid: geteuid(),
            groups: [getegid()] + groups.prefix(Int(max(0, count))),
            source: "the user running doctor: no railgate user here")
    }

    /// Whether this user may open `info`'s file for reading and writing, by its mode bits.
    func mayReadWrite(_ info: stat) -> Bool {
        if uid == 0 { return true }
        let mode = info.st_mode
        if info.st_uid == uid { return mode & S_IRUSR != 0 && mode & S_IWUSR != 0 }
        if groups.contains(info.st_gid) { return mode & S_IRGRP != 0 && mode & S_IWGRP != 0 }
        return mode & S_IROTH != 0 && mode & S_IWOTH != 0
    }
}

/// The checks of the box itself: clock, state directory, buffer.
enum DoctorSystem {
    /// The whole of a small file (under /proc, /etc), or nil when it cannot be read.
    static func readText(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &chunk, chunk.count)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The user name of `uid`, or the number.
    static func userName(_ uid: uid_t) -> String {
        getpwuid(uid).map { String(cString: $0.pointee.pw_name) } ?? "uid \(uid)"
    }

    /// The group name of `gid`, or the number.
    static func groupName(_ gid: gid_t) -> String {
        getgrgid(gid).map { String(cString: $0.pointee.gr_name) } ?? "gid \(gid)"
    }

    /// No clock on a working gateway reads earlier than this (2024-01-01T00:00:00Z): a box
    /// without a battery-backed clock boots in 1970 until NTP, GPS or the modem sets it.
    static let earliestPlausible = 1_704_067_200

    /// Test hook, never set in production: `RAILGATE_TEST_HOOK_CLOCK=SECONDS` makes doctor read the
    /// wall clock as that many seconds since 1970 (a test cannot set the real clock to 1970).
    static let clockHook = "RAILGATE_TEST_HOOK_CLOCK"

    /// The clock is plausible (not before 2024) and synchronised (the kernel's `STA_UNSYNC` is
    /// clear, read with `ntp_adjtime` without changing anything).
    static func checkClock(_ report: DoctorReport) {
        var now = Int(time(nil))
        if let hooked = getenv(clockHook).flatMap({ Int(String(cString: $0)) }) { now = hooked }
        let text = Timestamp(millisecondsSinceEpoch: Int64(now) * 1000).secondsDescription
        guard now >= earliestPlausible else {
            report.note(
                .fail, "clock", "reads \(text), before 2024: records would carry wrong times",
                remedy:
                    "set the time source: timedatectl set-ntp true (NTP), check the GPS/modem time and the RTC battery (hwclock)"
            )
            return
        }
        var timex = CCrypto.timex()
        let state = ntp_adjtime(&timex)
        if state == -1 {
            report.note(.warn, "clock", "reads \(text); cannot ask the kernel whether it is synchronised")
        } else if state == TIME_ERROR || timex.status & STA_UNSYNC != 0 {
            report.note(
                .warn, "clock", "reads \(text) but is not synchronised (kernel STA_UNSYNC)",
                remedy:
                    "timedatectl set-ntp true, and check the NTP server or GPS is reachable (timedatectl timesync-status)"
            )
        } else {
            report.note(
                .ok, "clock",
                "reads \(text), synchronised (estimated error \(timex.esterror) us)")
        }
    }

    /// The state directory exists and takes a file (made, synced and removed: a read-only mount or
    /// a full disk shows here, whatever the permission bits say), and the buffer's health: free
    /// space, damage found, drops, and how long an outage the space holds.
    static func checkStateDirectory(_ config: GatewayConfig, daemon: JSON?, _ report: DoctorReport) {
        let directory = config.gateway.stateDir
        var info = stat()
        guard stat(directory, &info) == 0 else {
            report.note(
                .warn, "state_dir", "\(directory) does not exist yet",
                remedy: "the daemon creates it (systemd: StateDirectory=railgate); check its parent is writable")
            return
        }
        let probe = directory + "/.railgate-doctor-\(getpid())"
        let fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 {
            let code = errno
            let remedy =
                code == EROFS
                ? "the file system is mounted read-only (a worn or failing card remounts so: dmesg, mount); fsck it or replace the card"
                : code == ENOSPC ? "the disk is full: free space" : "chown -R railgate: \(directory)"
            report.note(
                .fail, "state_dir",
                "\(directory) does not take a file: \(String(cString: strerror(code))); nothing can be buffered",
                remedy: remedy)
            return
        }
        let written = write(fd, "railgate doctor\n", 16)
        let writeError = written == 16 ? nil : errno
        let synced = fsync(fd) == 0
        close(fd)
        unlink(probe)
        if writeError != nil || !synced {
            report.note(
                .fail, "state_dir",
                "\(directory): a write or fsync failed: \(String(cString: strerror(writeError ?? errno)))",
                remedy: "check the card (dmesg), free space")
            return
        }
        report.note(.ok, "state_dir", "\(directory) takes a file (written, synced and removed)")
        var filesystem = statvfs()
        guard statvfs(directory, &filesystem) == 0 else { return }
        let free = Int(filesystem.f_bavail) * Int(filesystem.f_frsize)
        checkBuffer(config, daemon: daemon, free: free, report)
    }

    private static func checkBuffer(_ config: GatewayConfig, daemon: JSON?, free: Int, _ report: DoctorReport) {
        let directory = config.gateway.stateDir
        var stats: BufferStats?
        // The running daemon's figures are the live ones; reading the files beside it would race its writes.
        let live = daemon?["buffer"]
        if live == nil, access(directory + "/buffer", F_OK) == 0 {
            do {
                let buffer = try DiskBuffer(stateDirectory: directory, settings: config.buffer, readOnly: true)
                stats = buffer.stats()
                buffer.close()
            } catch {
                report.note(
                    .fail, "buffer", "cannot be read: \(error)",
                    remedy: "check the files under \(directory)/buffer (railgate buffer stats)")
            }
        }
        let used = live?["bytes"]?.intValue ?? stats?.bytes ?? 0
        let records = live?["records"]?.intValue ?? stats?.records ?? 0
        let stored = live?["stored_records"]?.intValue ?? stats?.storedRecords ?? 0
        let dropped = live?["dropped"]?.intValue ?? stats.map { Int($0.dropped) } ?? 0
        let lost = live?["lost_records"]?.intValue ?? stats.map { Int($0.lostRecords) } ?? 0
        let room = max(0, min(config.buffer.maxBytes, used + free) - used)
        // Records per hour: the daemon's measured store rate where its status has one (`stored_per_s`)
        // above zero, else the configured poll rates (an upper bound: the edge filter stores fewer).
        // A measured zero (nothing stored in the last 10 s, or a rate rounded to 0.00) is no reason
        // to promise room for any outage.
        let measured = live?["stored_per_s"]?.doubleValue.flatMap { $0 > 0 ? $0 * 3600 : nil }
        let perHour =
            measured ?? config.devices.reduce(0.0) { $0 + 3_600_000 / Double(max(1, $1.pollIntervalMs)) }
        let hours = OutageRoom.hours(
            roomBytes: room, bytesPerRecord: OutageRoom.bytesPerRecord(storedBytes: used, storedRecords: stored),
            recordsPerHour: perHour)
        let holds = hours.isInfinite ? "any outage" : "\(DoctorText.duration(seconds: Int(hours * 3600))) of outage"
        let seen =
            "\(DoctorText.plural(records, "record")) waiting (\(DoctorText.bytes(used)) of \(DoctorText.bytes(config.buffer.maxBytes))), "
            + "\(DoctorText.bytes(free)) free on disk; room for \(holds) at \(Int(perHour)) records/h\(measured == nil ? " (configured poll rates)" : " (measured)")"
        if let error = live?["disk_error"]?.stringValue ?? stats?.diskError {
            report.note(.fail, "buffer", "disk error: \(error)", remedy: "check the flash card (dmesg), free space")
        } else if free + used < config.buffer.maxBytes && hours < 24 {
            report.note(
                .warn, "buffer", seen + "; the disk cannot hold max_bytes",
                remedy: "free space on \(directory) or lower [buffer] max_bytes")
        } else if hours < 24 {
            report.note(
                .warn, "buffer", seen, remedy: "raise [buffer] max_bytes or poll less often if outages last longer")
        } else {
            report.note(.ok, "buffer", seen)
        }
        if let stats, stats.corruptBytesSkipped > 0 || !stats.warnings.isEmpty {
            report.note(
                .warn, "buffer",
                "damage found: \(DoctorText.bytes(stats.corruptBytesSkipped)) skipped"
                    + (stats.warnings.isEmpty ? "" : " (\(stats.warnings.joined(separator: "; ")))"),
                remedy:
                    "intact records are kept; repeated damage means power cuts or a worn card (check the supply, replace the card)"
            )
        }
        if dropped > 0 || lost > 0 {
            report.note(
                .warn, "buffer",
                "\(DoctorText.plural(dropped, "record")) dropped when full, \(DoctorText.plural(lost, "record")) lost to damage",
                remedy: "an outage outlasted max_bytes: raise [buffer] max_bytes or fix the link sooner")
        }
    }
}
