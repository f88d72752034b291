import Foundation
import Glibc
import RailgateCore
import RailgateSystem
import Testing

@testable import RailgateGateway

/// The metrics endpoint, like the control socket: clients that trickle a request one byte every
/// 0.9 s, or open a connection and say nothing, must not delay another client's `GET /metrics`
/// by a second, nor a stop; a request line that arrives in pieces is still read whole.
@Suite("Metrics endpoint serves others while clients trickle")
struct MetricsTricklerTests {
    /// A TCP connection to 127.0.0.1:`port`, or -1.
    static func connect(port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if connected != 0 {
            close(fd)
            return -1
        }
        return fd
    }

    /// A port free on 127.0.0.1 a moment ago.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                _ = bind(fd, $0, length)
                return getsockname(fd, $0, &length)
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Clients that each send one byte every 0.9 s (or nothing, `silent`), reconnecting when cut off.
    final class Tricklers: @unchecked Sendable {
        private let lock = NSLock()
        private var stopping = false
        private var connections = 0

        init(count: Int, port: Int, silent: Bool) {
            for _ in 0..<count {
                Thread { [self] in
                    while !isStopping {
                        let fd = MetricsTricklerTests.connect(port: port)
                        guard fd >= 0 else {
                            usleep(50_000)
                            continue
                        }
                        lock.withLock { connections += 1 }
                        var byte = UInt8(ascii: "G")
                        while !isStopping, silent || send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) == 1 {
                            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                            if poll(&descriptor, 1, 900) != 0 { break }
                        }
                        close(fd)
                    }
                }.start()
            }
        }

        var isStopping: Bool { lock.withLock { stopping } }
        var connectionCount: Int { lock.withLock { connections } }
        func stop() { lock.withLock { stopping = true } }
    }

    /// Sends `request` in pieces of `pieceBytes`, 50 ms apart; returns the whole reply and its seconds.
    static func get(
        port: Int, request: String = "GET /metrics HTTP/1.0\r\n\r\n", pieceBytes: Int = 1 << 20
    )
        -> (String, Double)
    {
        let start = ContinuousClock.now
        let fd = connect(port: port)
        guard fd >= 0 else { return ("connect failed", 0) }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let bytes = Array(request.utf8)
        for offset in stride(from: 0, to: bytes.count, by: pieceBytes) {
            if offset > 0 { usleep(50_000) }
            let piece = Array(bytes[offset..<min(bytes.count, offset + pieceBytes)])
            _ = send(fd, piece, piece.count, Int32(MSG_NOSIGNAL))
        }
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

    @Test("2 tricklers and a silent client: every GET /metrics is answered within a second; a stop takes under one")
    func tricklersDoNotBlockMetrics() throws {
        let port = Self.freePort()
        let server = MetricsServer(listen: "127.0.0.1:\(port)") { "railgate_up 1\n" }
        try server.start()
        let tricklers = Tricklers(count: 2, port: port, silent: false)
        let silent = Tricklers(count: 1, port: port, silent: true)
        defer {
            tricklers.stop()
            silent.stop()
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while tricklers.connectionCount < 4 || silent.connectionCount < 2, ContinuousClock.now < deadline {
            usleep(20_000)
        }
        #expect(tricklers.connectionCount >= 4 && silent.connectionCount >= 2, "the clients were not cut off in time")
        var slowest = 0.0
        for attempt in 0..<10 {
            // Every other request arrives in 8-byte pieces: the request line is read whole.
            let (reply, seconds) = Self.get(port: port, pieceBytes: attempt % 2 == 0 ? 1 << 20 : 8)
            #expect(reply.hasPrefix("HTTP/1.0 200 OK") && reply.hasSuffix("railgate_up 1\n"), "\(reply)")
            slowest = max(slowest, seconds)
            usleep(150_000)
        }
        #expect(slowest < 1.0, "slowest GET took \(slowest) s")
        let (notFound, _) = Self.get(port: port, request: "GET /other HTTP/1.0\r\n\r\n")
        #expect(notFound.hasPrefix("HTTP/1.0 404"))
        let start = ContinuousClock.now
        server.stop()
        #expect(ContinuousClock.now - start < .seconds(1))
    }
}
