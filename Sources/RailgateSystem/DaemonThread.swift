import Glibc

/// A thread could not be created: the service it was for does not run.
public struct ThreadError: Error, CustomStringConvertible, Sendable {
    /// The thread's name (the service it was for).
    public var name: String
    /// The error `pthread_create` returned (EAGAIN: out of threads or memory; EINVAL: bad attributes).
    public var code: Int32

    public var description: String {
        "cannot start a thread for \(name): pthread_create: \(String(cString: strerror(code))) (errno \(code))"
    }
}

/// An OS thread for a service that blocks in C calls (a Modbus bus, the uplink's publisher,
/// the control socket, the buffer's group commit): kept off Swift's 2-thread cooperative pool. `join()` waits for it.
///
/// The one way railgate starts a thread: creation either succeeds or throws, it never runs the
/// body somewhere else. The thread inherits the creating thread's signal mask (the daemon blocks
/// its signals before the first thread exists). The thread carries `name` (its first 15 bytes,
/// the kernel's limit) for `top -H`, `ps -L` and /proc/PID/task/TID/comm. The C function is
/// `pthread_create`; the name is written to /proc/thread-self/comm (what `pthread_setname_np`
/// does, which Glibc's Swift module does not export).
public final class DaemonThread: @unchecked Sendable {
    private var thread = pthread_t()
    private var joinable = true

    /// Starts `body` on a new thread for the service `name` (named in a failure).
    /// - Parameter stackBytes: the thread's stack size, or nil for the system's default.
    /// - Throws: `ThreadError` with `pthread_create`'s error; nothing runs then.
    public init(name: String, stackBytes: Int? = nil, _ body: @escaping @Sendable () -> Void) throws(ThreadError) {
        final class Box {
            let body: @Sendable () -> Void
            let name: [UInt8]
            init(body: @escaping @Sendable () -> Void, name: [UInt8]) {
                self.body = body
                self.name = name
            }
        }
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        if let stackBytes {
            let code = pthread_attr_setstacksize(&attributes, stackBytes)
            guard code == 0 else { throw ThreadError(name: name, code: code) }
        }
        let box = Unmanaged.passRetained(Box(body: body, name: Self.threadName(name))).toOpaque()
        let code = pthread_create(
            &thread, &attributes,
            { argument in
                let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
                DaemonThread.nameCurrentThread(box.name)
                box.body()
                return nil
            }, box)
        guard code == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw ThreadError(name: name, code: code)
        }
    }

    /// `name` cut to the kernel's 15 bytes at a character boundary; a trailing number (" 2", one
    /// of a pool of threads) is kept, so that the threads of a pool stay apart.
    static func threadName(_ name: String) -> [UInt8] {
        func cut(_ text: Substring, to limit: Int) -> [UInt8] {
            var bytes: [UInt8] = []
            for character in text {
                let encoded = Array(String(character).utf8)
                guard bytes.count + encoded.count <= limit else { break }
                bytes += encoded
            }
            return bytes
        }
        let words = name.split(separator: " ", omittingEmptySubsequences: false)
        guard name.utf8.count > 15, words.count > 1, let number = words.last, !number.isEmpty, number.count < 8,
            number.allSatisfy(\.isASCII), number.allSatisfy(\.isNumber)
        else { return cut(name[...], to: 15) }
        let head = name.dropLast(number.count + 1)
        var kept = cut(head, to: 15 - number.count - 1)
        while kept.last == UInt8(ascii: " ") { kept.removeLast() }
        return kept + Array(" \(number)".utf8)
    }

    /// Names the calling thread; a failure (no /proc) only leaves the process's name.
    static func nameCurrentThread(_ name: [UInt8]) {
        let descriptor = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        _ = name.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        close(descriptor)
    }

    /// Waits for the thread to end (once; later calls return at once).
    public func join() {
        guard joinable else { return }
        pthread_join(thread, nil)
        joinable = false
    }
}
