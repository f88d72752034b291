import Glibc
import RailgateCore
import RailgateSystem

/// A process the scale benchmark starts (broker, simulator, gateway): stdout and stderr go to
/// `output`; SIGKILLed and reaped by `stop()`.
final class Child {
    let pid: pid_t
    let output: String
    private var reaped = false

    /// Starts `path` with `arguments` (`posix_spawn`, the benchmark's environment).
    init(_ path: String, _ arguments: [String], output: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard rc == 0 else {
            throw BenchError(description: "cannot start \(path): \(String(cString: strerror(rc)))")
        }
        self.pid = pid
        self.output = output
    }

    var isRunning: Bool {
        guard !reaped else { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            reaped = true
            return false
        }
        return true
    }

    /// What it printed so far.
    var printed: String { LocalFiles().read(output) ?? "" }

    /// Sends `signal` and waits for the exit (SIGKILL after 20 s).
    func stop(_ signal: Int32 = SIGKILL) {
        guard !reaped else { return }
        kill(pid, signal)
        let deadline = seconds() + 20
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) != pid {
            if seconds() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                break
            }
            usleep(10_000)
        }
        reaped = true
    }

    deinit { stop() }
}

/// One process's footprint from /proc: CPU time, memory, threads' context switches, open fds.
struct ProcSample {
    /// user + system CPU seconds (/proc/PID/stat utime + stime).
    var cpuSeconds: Double { userSeconds + systemSeconds }
    var userSeconds: Double
    var systemSeconds: Double
    /// Resident set size and its peak, KiB (/proc/PID/status VmRSS, VmHWM).
    var rssKiB: Int
    var peakKiB: Int
    /// Context switches of all its threads, voluntary + involuntary (/proc/PID/task/*/status).
    var switches: Int
    var threads: Int
    /// Entries in /proc/PID/fd.
    var fds: Int
    var at: Double

    static func read(_ pid: pid_t) -> ProcSample {
        let files = LocalFiles()
        var sample = ProcSample(
            userSeconds: 0, systemSeconds: 0, rssKiB: 0, peakKiB: 0, switches: 0, threads: 0, fds: 0, at: seconds())
        if let stat = files.read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") {
            // Fields after "(comm)": state is field 3, utime 14, stime 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) {
                let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
                sample.userSeconds = user / ticks
                sample.systemSeconds = system / ticks
            }
        }
        let status = files.read("/proc/\(pid)/status") ?? ""
        sample.rssKiB = field(status, "VmRSS")
        sample.peakKiB = field(status, "VmHWM")
        for task in entries("/proc/\(pid)/task") {
            let text = files.read("/proc/\(pid)/task/\(task)/status") ?? ""
            sample.switches += field(text, "voluntary_ctxt_switches") + field(text, "nonvoluntary_ctxt_switches")
            sample.threads += 1
        }
        sample.fds = entries("/proc/\(pid)/fd").count
        return sample
    }

    private static func field(_ text: String, _ name: String) -> Int {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }) else { return 0 }
        return Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? 0
    }

    /// Names in a directory, without . and ..
    static func entries(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

/// A free TCP port on 127.0.0.1 (bound to port 0, read back, closed).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            bind(fd, pointer, length)
            return getsockname(fd, pointer, &length)
        }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Connects to 127.0.0.1:`port`; the socket, or nil.
func connectLoopback(_ port: Int) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard rc == 0 else {
        close(fd)
        return nil
    }
    return fd
}

/// Waits up to `timeout` seconds for `condition`, checking every 20 ms.
func waitFor(_ timeout: Double, _ what: String, _ condition: () -> Bool) throws {
    let deadline = seconds() + timeout
    while !condition() {
        guard seconds() < deadline else { throw BenchError(description: "timed out waiting for \(what)") }
        usleep(20_000)
    }
}

/// A Prometheus gauge or counter from the gateway's metrics endpoint (`GET /metrics`), or nil.
func metric(port: Int, _ name: String) -> Double? {
    guard let fd = connectLoopback(port) else { return nil }
    defer { close(fd) }
    let request = Array("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    guard ConnectedSocket.send(fd: fd, bytes: request) else { return nil }
    var response: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16384)
    while true {
        let count = read(fd, &chunk, chunk.count)
        if count <= 0 { break }
        response += chunk[0..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
        return Double(line.split(separator: " ").last ?? "")
    }
    return nil
}

/// Environment setting in seconds (the benchmark's durations), or `fallback`.
func environmentSeconds(_ name: String, _ fallback: Double) -> Double {
    getenv(name).flatMap { Double(String(cString: $0)) } ?? fallback
}
