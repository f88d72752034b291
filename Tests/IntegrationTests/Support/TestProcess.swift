import Foundation
import RailgateCore

/// Where the built `railgate` and `railgate-sim` are: next to the test runner, or `$RAILGATE_BIN_DIR`.
enum Binaries {
    static let directory: String = {
        if let override = ProcessInfo.processInfo.environment["RAILGATE_BIN_DIR"] { return override }
        let runner = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        var candidate = URL(fileURLWithPath: runner).deletingLastPathComponent()
        // The runner may sit inside an .xctest bundle directory.
        while !FileManager.default.fileExists(atPath: candidate.appendingPathComponent("railgate").path),
            candidate.path != "/"
        {
            candidate.deleteLastPathComponent()
        }
        return candidate.path
    }()

    static var railgate: String { directory + "/railgate" }
    static var simulator: String { directory + "/railgate-sim" }
}

/// The project's root, for fixtures and shipped profiles.
let projectRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().path

/// A scratch directory removed when the test ends.
final class Scratch: @unchecked Sendable {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "railgate-it-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    @discardableResult
    func write(_ name: String, _ text: String) -> String {
        let file = path + "/" + name
        _ = FileManager.default.createFile(atPath: file, contents: Data(text.utf8))
        return file
    }
}

struct TimedOut: Error, CustomStringConvertible {
    var description: String
}

/// A child process with its output captured to files, so a test can wait for a line and read
/// everything afterwards. Killed with SIGKILL when dropped if still running.
///
/// Spawned with `posix_spawn`, an empty signal mask and default signal dispositions, as a
/// shell would: the test runner's threads block most signals, and a child inheriting that mask
/// (as with Foundation's `Process`) never sees SIGTERM if it relies on a handler (Mosquitto does).
final class TestProcess: @unchecked Sendable {
    let pid: pid_t
    let name: String
    private let outputPath: String
    private let errorPath: String
    private var exitStatus: Int32?

    /// `environment` is added to this process's own for the child.
    init(
        _ executable: String, _ arguments: [String], scratch: Scratch, name: String, environment: [String: String] = [:]
    ) throws {
        self.name = name
        outputPath = scratch.path + "/\(name).\(UUID().uuidString.prefix(4)).out"
        errorPath = outputPath.replacingOccurrences(of: ".out", with: ".err")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, errorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { $1 }
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var child: pid_t = 0
        let result =
            FileManager.default.changeCurrentDirectoryPath(projectRoot)
            ? posix_spawn(&child, executable, &actions, &attributes, argv, envp) : ENOENT
        guard result == 0 else {
            throw TimedOut(description: "cannot start \(executable): \(String(cString: strerror(result)))")
        }
        pid = child
    }

    deinit {
        if isRunning {
            kill(pid, SIGKILL)
            _ = try? waitForExit()
        }
    }

    /// Whether the child is still running (reaps it once it has exited).
    var isRunning: Bool {
        guard exitStatus == nil else { return false }
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return true }
        exitStatus = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return false
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var errorOutput: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }

    func signal(_ number: Int32) { kill(pid, number) }

    /// Waits for the process to exit and returns its status; throws if it takes longer than `seconds`.
    @discardableResult
    func waitForExit(seconds: Double = 30) throws -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning {
            guard Date() < deadline else { throw TimedOut(description: "\(name) did not exit within \(seconds) s") }
            usleep(20_000)
        }
        return exitStatus ?? -1
    }

    /// The first line of standard output containing `text`, waiting at most `seconds`.
    func waitForOutputLine(containing text: String, seconds: Double = 30) throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if let line = output.split(separator: "\n").first(where: { $0.contains(text) }) { return String(line) }
            guard isRunning, Date() < deadline else {
                throw TimedOut(
                    description: "\(name) printed no line with '\(text)' (stderr: \(errorOutput.suffix(500)))")
            }
            usleep(20_000)
        }
    }

    /// Runs a command to completion and returns its exit status and output.
    static func run(
        _ executable: String, _ arguments: [String], scratch: Scratch, seconds: Double = 60
    ) throws
        -> (status: Int32, output: String, error: String)
    {
        let child = try TestProcess(
            executable, arguments, scratch: scratch, name: URL(fileURLWithPath: executable).lastPathComponent)
        let status = try child.waitForExit(seconds: seconds)
        return (status, child.output, child.errorOutput)
    }
}

/// A TCP port nobody listens on right now (bound to 0 and released).
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
            bind(fd, pointer, length)
            return getsockname(fd, pointer, &length)
        }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
func isListening(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    } == 0
}
