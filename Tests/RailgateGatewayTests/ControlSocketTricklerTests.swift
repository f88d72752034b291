import Foundation
import Glibc
import Logging
import RailgateCore
import RailgateSystem
import Testing

@testable import RailgateGateway

/// Clients that trickle one byte every 0.9 s, reconnecting when cut off, must not delay another
/// client's `status` by a second, nor a stop.
@Suite("Control socket serves others while clients trickle")
struct ControlSocketTricklerTests {
    final class Tricklers: @unchecked Sendable {
        private let lock = NSLock()
        private var stopping = false
        private(set) var connections = 0
        private var threads: [Thread] = []

        init(count: Int, path: String) {
            for _ in 0..<count {
                let thread = Thread { [self] in
                    while !isStopping {
                        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
                        guard fd >= 0, UnixSocket.connect(fd, to: path) else {
                            if fd >= 0 { close(fd) }
                            usleep(50_000)
                            continue
                        }
                        lock.withLock { connections += 1 }
                        var byte = UInt8(ascii: "s")
                        // One byte, then 0.9 s of silence, until the server answers or hangs up.
                        while !isStopping, send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 {
                            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                            if poll(&descriptor, 1, 900) != 0 { break }
                        }
                        close(fd)
                    }
                }
                threads.append(thread)
                thread.start()
            }
        }

        var isStopping: Bool { lock.withLock { stopping } }
        var connectionCount: Int { lock.withLock { connections } }
        func stop() { lock.withLock { stopping = true } }
    }

    /// Sends `status` and reads the reply to the end; returns it and the seconds it took.
    private func status(_ path: String) -> (String, Double) {
        let start = ContinuousClock.now
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        guard UnixSocket.connect(fd, to: path) else { return ("connect failed", 0) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let request = Array("status\n".utf8)
        _ = send(fd, request, request.count, Int32(MSG_NOSIGNAL))
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            let count = recv(fd, &chunk, chunk.count, 0)
            guard count > 0 else { break }
            reply += chunk[0..<count]
        }
        let elapsed = ContinuousClock.now - start
        return (
            String(decoding: reply, as: UTF8.self),
            Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        )
    }

    @Test("3 tricklers: every status is answered within a second, and a stop takes under a second")
    func tricklersDoNotBlockStatus() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ctl-trickle-\(getpid()).sock").path
        let server = ControlServer(path: path, logger: Logger(label: "test")) { command in
            .object([("answer", .string(command))])
        }
        try server.start()
        let tricklers = Tricklers(count: 3, path: path)
        defer { tricklers.stop() }
        let deadline = ContinuousClock.now + .seconds(30)
        while tricklers.connectionCount < 6, ContinuousClock.now < deadline { usleep(20_000) }
        #expect(tricklers.connectionCount >= 6, "the tricklers did not get through their first second")
        var slowest = 0.0
        for _ in 0..<10 {
            let (reply, seconds) = status(path)
            #expect(reply.contains("\"answer\":\"status\""), "\(reply)")
            slowest = max(slowest, seconds)
            usleep(150_000)
        }
        #expect(slowest < 1.0, "slowest status took \(slowest) s")
        let start = ContinuousClock.now
        server.stop()
        #expect(ContinuousClock.now - start < .seconds(1))
    }

    @Test("a client that asks and does not read the reply does not hold up a stop for the send timeout")
    func stopWithUnreadReply() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ctl-unread-\(getpid()).sock").path
        // 8 MB: far more than the socket buffers hold, so the server blocks in send.
        let big = String(repeating: "x", count: 8 << 20)
        let server = ControlServer(path: path, logger: Logger(label: "test")) { _ in .object([("big", .string(big))]) }
        try server.start()
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var small: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        #expect(UnixSocket.connect(fd, to: path))
        let request = Array("status\n".utf8)
        #expect(send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count)
        // The reply has begun to arrive (and stopped: nobody reads): the server is in send.
        let deadline = ContinuousClock.now + .seconds(30)
        var waiting: Int32 = 0
        while waiting == 0, ContinuousClock.now < deadline {
            _ = ioctl(fd, UInt(FIONREAD), &waiting)
            if waiting == 0 { usleep(10_000) }
        }
        #expect(waiting > 0, "no reply began")
        let start = ContinuousClock.now
        server.stop()
        // The send timeout is 1 s: a stop that waited it out would take that long.
        #expect(ContinuousClock.now - start < .milliseconds(800))
    }
}
