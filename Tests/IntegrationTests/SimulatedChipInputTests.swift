import Foundation
import Glibc
import RailgateCore
import RailgateGPIO
import RailgateSystem
import Testing

/// The simulated chip's client side against a scripted raw Unix-socket server that misbehaves:
/// a line without a newline, edges on lines nobody watches, absurd timestamps.
@Suite("Simulated chip client bounds its input")
struct SimulatedChipInputTests {
    /// Serves one `info` and one `watch` connection, then writes `script` on the watch connection.
    final class FakeSimulator: @unchecked Sendable {
        let path: String
        private let listener: Int32
        private var thread: Thread?

        init(script: [UInt8]) throws {
            path =
                FileManager.default.temporaryDirectory.appendingPathComponent(
                    "fake-gpiosim-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
                ).path
            unlink(path)
            listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard listener >= 0, UnixSocket.bind(listener, to: path), listen(listener, 4) == 0 else {
                throw POSIXError(.EADDRINUSE)
            }
            let listener = listener
            thread = Thread {
                for _ in 0..<2 {
                    let client = accept(listener, nil, nil)
                    guard client >= 0 else { return }
                    var request: [UInt8] = []
                    var byte: UInt8 = 0
                    while recv(client, &byte, 1, 0) == 1, byte != 10 { request.append(byte) }
                    let words = String(decoding: request, as: UTF8.self).split(separator: " ")
                    if words.first == "info" {
                        Self.write(
                            client,
                            Array(
                                #"{"name":"gpiosim","label":"fake","lines":[{"offset":1},{"offset":2},{"offset":5}]}"#
                                    .utf8) + [10])
                        close(client)
                    } else {
                        Self.write(client, Array("levels 1=0 2=0\n".utf8) + script)
                        // Hold the connection open: the client must stop on its own.
                        var scratch = [UInt8](repeating: 0, count: 16)
                        _ = recv(client, &scratch, 16, 0)
                        close(client)
                    }
                }
            }
            thread?.start()
        }

        static func write(_ fd: Int32, _ bytes: [UInt8]) {
            var offset = 0
            while offset < bytes.count {
                let sent = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard sent > 0 else { return }
                offset += sent
            }
        }

        deinit {
            shutdown(listener, Int32(SHUT_RDWR))
            close(listener)
            unlink(path)
        }
    }

    @Test("a line with no newline is an EMSGSIZE error after 64 KiB, not growing memory")
    func endlessLine() throws {
        let simulator = try FakeSimulator(script: [UInt8](repeating: UInt8(ascii: "x"), count: 1 << 20))
        let chip = try GPIOChips.open("sim:\(simulator.path)")
        let watch = try chip.watch(lines: [1, 2], activeLow: false, consumer: "test")
        defer { watch.release() }
        var thrown: GPIOError?
        for _ in 0..<100 where thrown == nil {
            do { _ = try watch.waitForEdges(timeoutMs: 1000) } catch { thrown = error }
        }
        #expect(thrown?.code == EMSGSIZE, "\(String(describing: thrown))")
    }

    @Test("edges on lines not watched are ignored; timestamps are clamped between the last edge and now")
    func edgesAndTimestamps() throws {
        let before = MonotonicInstant.now().nanoseconds
        let script = """
            edge 5 1 \(before + 1)
            edge 1 1 -9223372036854775808
            edge 2 7 \(before + 2)
            garbage
            edge 2 1 9223372036854775807
            edge 1 0 -1

            """
        let simulator = try FakeSimulator(script: Array(script.utf8))
        let chip = try GPIOChips.open("sim:\(simulator.path)")
        let watch = try chip.watch(lines: [1, 2], activeLow: false, consumer: "test")
        defer { watch.release() }
        var edges: [GPIOEdge] = []
        _ = try eventually("three edges", seconds: 30, intervalMs: 10) { () throws -> Bool? in
            edges += try watch.waitForEdges(timeoutMs: 100)
            return edges.count >= 3 ? true : nil
        }
        let after = MonotonicInstant.now().nanoseconds
        #expect(edges.map(\.line) == [1, 2, 1])
        #expect(edges.map(\.active) == [true, true, false])
        #expect(edges.allSatisfy { $0.timestampNs >= before && $0.timestampNs <= after })
        #expect(edges.map(\.timestampNs) == edges.map(\.timestampNs).sorted())
        #expect(try watch.levels()[5] == nil)
    }
}
