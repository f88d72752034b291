import Glibc
import RailgateCore

/// Reads configuration and profile files from the local filesystem (the core itself touches no
/// disk), behind `ConfigFileSource` so that loading stays testable in memory.
public struct LocalFiles: ConfigFileSource {
    public init() {}

    public func read(_ path: String) -> String? {
        bytes(path, limit: .max).map { String(decoding: $0, as: UTF8.self) }
    }

    /// What `open`, `fstat` or `read` said about `path` (the C library's text for errno), or
    /// that it is a directory or not a regular file; nil when it reads.
    public func unreadableReason(_ path: String) -> String? {
        switch openRegular(path) {
        case .failure(let reason): return reason.text
        case .success(let fd):
            defer { close(fd) }
            var byte: UInt8 = 0
            return Glibc.read(fd, &byte, 1) < 0 ? String(cString: strerror(errno)) : nil
        }
    }

    private struct Unreadable: Error { var text: String }

    /// `path` opened read-only if it is a regular file, or why not.
    private func openRegular(_ path: String) -> Result<Int32, Unreadable> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(Unreadable(text: String(cString: strerror(errno)))) }
        var status = stat()
        let reason: String?
        if fstat(fd, &status) != 0 {
            reason = String(cString: strerror(errno))
        } else {
            reason =
                switch status.st_mode & S_IFMT {
                case S_IFREG: nil
                case S_IFDIR: "is a directory"
                default: "not a regular file"
                }
        }
        guard let reason else { return .success(fd) }
        close(fd)
        return .failure(Unreadable(text: reason))
    }

    /// The file's bytes, at most `TOMLLimits().maxBytes + 1` of them (enough for the TOML reader
    /// to refuse a larger file by its size, without reading a huge one into memory).
    public func readBytes(_ path: String) -> [UInt8]? { bytes(path, limit: TOMLLimits().maxBytes + 1) }

    private func bytes(_ path: String, limit: Int) -> [UInt8]? {
        guard case .success(let fd) = openRegular(path) else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { return nil }
            if count == 0 { break }
            bytes += chunk[0..<count]
            if bytes.count >= limit { break }
        }
        return bytes
    }
}

/// Unbuffered writes to standard output and error, line at a time. (Swift 6 refuses the C
/// `stdout`/`stderr` globals as shared mutable state; `write(2)` on fds 1 and 2 needs none.)
public enum StandardStreams {
    /// Writes `line` and a newline to standard output.
    public static func out(_ line: String) { write(fd: 1, line + "\n") }

    /// Writes `line` and a newline to standard error.
    public static func error(_ line: String) { write(fd: 2, line + "\n") }

    /// Writes `text` to `fd`, retrying on EINTR and partial writes.
    public static func write(fd: Int32, _ text: String) { write(fd: fd, bytes: Array(text.utf8)) }

    /// Writes `bytes` to `fd`, retrying on EINTR and partial writes; false if the fd refuses.
    @discardableResult
    public static func write(fd: Int32, bytes: [UInt8]) -> Bool {
        transferAll(bytes) { Glibc.write(fd, $0, $1) }
    }
}

/// Calls `transfer` (a `write` or `send` of the bytes at the pointer, that many) until all of
/// `bytes` went, retrying on EINTR and after a partial transfer; false, errno set, when it refuses.
private func transferAll(_ bytes: [UInt8], _ transfer: (UnsafeRawPointer, Int) -> Int) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let done = bytes.withUnsafeBytes { transfer($0.baseAddress! + offset, $0.count - offset) }
        if done < 0, errno == EINTR { continue }
        guard done > 0 else { return false }
        offset += done
    }
    return true
}

/// Writes on a connected stream socket (Unix or TCP) that never raise SIGPIPE.
public enum ConnectedSocket {
    /// Sends all of `bytes` on the connected stream socket `fd` with `send(2)` and
    /// `MSG_NOSIGNAL`, retrying on EINTR and partial sends. Blocks as the socket does (its
    /// `SO_SNDTIMEO` bounds each send). Returns false, errno set, when the socket refuses: EPIPE or
    /// ECONNRESET when the peer has gone, EAGAIN when the send timeout ran out. A peer that has
    /// gone is never a SIGPIPE, which kills a process that has not ignored it (the daemon does;
    /// the CLI, the simulators and the tests need not). Any thread.
    @discardableResult
    public static func send(fd: Int32, bytes: [UInt8]) -> Bool {
        transferAll(bytes) { Glibc.send(fd, $0, $1, Int32(MSG_NOSIGNAL)) }
    }

    /// Sends all of `text` as UTF-8; see `send(fd:bytes:)`.
    @discardableResult
    public static func send(fd: Int32, _ text: String) -> Bool { send(fd: fd, bytes: Array(text.utf8)) }
}

/// Unix sockets by path: the control socket, the simulated GPIO chip, systemd's notify socket.
public enum UnixSocket {
    /// Calls `body` with `path` as a socket address and its length, or returns nil if the path is
    /// too long for one. A leading "@" names the abstract namespace (as `$NOTIFY_SOCKET` may).
    public static func withAddress<R>(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { target in
            for (index, byte) in bytes.enumerated() { target[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }

    /// Connects `fd` to the socket at `path`; on false, errno says why (ENAMETOOLONG if too long).
    public static func connect(_ fd: Int32, to path: String) -> Bool {
        guard let result = withAddress(path, { Glibc.connect(fd, $0, $1) }) else {
            errno = ENAMETOOLONG
            return false
        }
        return result == 0
    }

    /// Binds `fd` to `path`, replacing a stale socket file; on false, errno says why.
    public static func bind(_ fd: Int32, to path: String) -> Bool {
        unlink(path)
        guard let result = withAddress(path, { Glibc.bind(fd, $0, $1) }) else {
            errno = ENAMETOOLONG
            return false
        }
        return result == 0
    }
}

/// A client for the daemon's control socket: one command line out, one JSON document back.
public enum ControlClient {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Sends `command` and a newline on the Unix socket at `path` and reads until the daemon
    /// closes (`SO_RCVTIMEO` of `timeoutSeconds`); the reply without trailing newlines. Throws
    /// `Failure` with the errno text when the socket cannot be reached or does not answer.
    public static func request(_ command: String, socket path: String, timeoutSeconds: Int = 5) throws -> String {
        let fd = try connect(sending: command, socket: path, receiveTimeoutSeconds: timeoutSeconds)
        defer { close(fd) }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                if count < 0 { throw Failure(description: "no answer: \(String(cString: strerror(errno)))") }
                break
            }
            reply += chunk[0..<count]
        }
        while reply.last == 10 { reply.removeLast() }
        // Every answer is a line; none at all is a daemon that stopped before answering.
        guard !reply.isEmpty else { throw Failure(description: "the daemon closed the connection without answering") }
        return String(decoding: reply, as: UTF8.self)
    }
}

extension ControlClient {
    /// A Unix stream socket connected to the daemon at `path` with `command` and a newline sent on
    /// it, with `SO_RCVTIMEO` of `receiveTimeoutSeconds` if given; the caller reads and closes it.
    /// - Throws: `Failure` with the errno text when the socket cannot be reached, or when the
    ///   daemon closed the connection before the command went.
    public static func connect(
        sending command: String, socket path: String, receiveTimeoutSeconds: Int? = nil
    )
        throws -> Int32
    {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: String(cString: strerror(errno))) }
        if let receiveTimeoutSeconds {
            var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }
        guard UnixSocket.connect(fd, to: path) else {
            let code = errno
            close(fd)
            throw Failure(description: String(cString: strerror(code)))
        }
        guard ConnectedSocket.send(fd: fd, command + "\n") else {
            let code = errno
            close(fd)
            throw Failure(description: "the daemon closed the connection: \(String(cString: strerror(code)))")
        }
        return fd
    }
}

/// A pipe for waking a thread that sleeps in `poll`: a byte written to `write` leaves `read`
/// readable (for every thread polling it, until someone reads it). Both ends non-blocking and
/// close-on-exec. Nil when the process is out of descriptors. The C functions are `pipe` and
/// `fcntl`.
public func makeWakePipe() -> (read: Int32, write: Int32)? {
    var ends: [Int32] = [-1, -1]
    guard pipe(&ends) == 0 else { return nil }
    for end in ends {
        _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
    }
    return (ends[0], ends[1])
}

/// glibc's `malloc_trim(3)` (malloc.h is not part of Swift's Glibc module).
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32

/// Gives the pages of freed heap memory back to the kernel, in every malloc arena (glibc's
/// `malloc_trim(0)`). For after a large transient, such as a `status` reply for 100 devices
/// (345 KB of text built from a JSON tree several times that): glibc keeps freed memory in the
/// arena of the thread that used it, and the daemon's RSS would stay 4-8 MiB higher for good.
/// Walks the arenas' free lists: well under a millisecond on the daemon's small heap.
public func returnFreedMemory() { _ = glibcMallocTrim(0) }
