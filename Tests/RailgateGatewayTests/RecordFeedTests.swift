import Foundation
import Glibc
import Logging
import RailgateCore
import RailgateSystem
import Testing

@testable import RailgateGateway

/// The `follow` stream: a client that never reads must not block the producers nor grow the
/// daemon's memory; it misses records and is told how many.
@Suite("Record feed for follow clients")
struct RecordFeedTests {
    static func sample(_ index: Int) -> Record {
        Record(
            timestamp: Timestamp(millisecondsSinceEpoch: 1_800_000_000_000 + Int64(index)), source: "axlebox-1",
            body: .sample(
                values: [("bearing_temp_1", .number(41.5)), ("revolution_count", .integer(Int64(index)))], errors: []))
    }

    /// A connected pair of Unix stream sockets: the daemon's end, the client's end.
    static func socketPair() -> (daemon: Int32, client: Int32) {
        var ends: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0)
        return (ends[0], ends[1])
    }

    /// Reads lines from `fd` until `done` says so or 20 s pass.
    static func readLines(_ fd: Int32, until done: ([String]) -> Bool) -> [String] {
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let deadline = MonotonicInstant.now().adding(milliseconds: 20_000)
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while MonotonicInstant.now() < deadline {
            let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
            if done(lines) { return lines }
            let count = recv(fd, &chunk, chunk.count, 0)
            if count > 0 { bytes += chunk[0..<count] } else if count == 0 { break }
        }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// `SO_RCVBUF` or `SO_SNDBUF` of `fd`, in bytes (`getsockopt`).
    static func bufferSize(_ fd: Int32, _ option: Int32) -> Int {
        var size: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, option, &size, &length)
        return Int(size)
    }

    @Test("a client that reads nothing misses records, counted, while publishing never waits")
    func slowClientDrops() throws {
        let feed = RecordFeed(logger: Logger(label: "test"))
        let (daemon, client) = Self.socketPair()
        defer { close(client) }
        #expect(feed.follow(fd: daemon) == nil)
        let total = 20_000
        let started = MonotonicInstant.now()
        for index in 1...total { feed.publish(Self.sample(index), seq: UInt64(index)) }
        let elapsedMs = MonotonicInstant.now().milliseconds(since: started)
        // 20,000 records into a client that reads nothing: the producer went on at once.
        #expect(elapsedMs < 10_000, "publishing took \(elapsedMs) ms")
        func tally(_ documents: [JSON]) -> (received: Int, missed: Int) {
            let received = documents.filter { $0["kind"] == .string("sample") }.count
            let missed = documents.filter { $0["kind"] == .string("dropped") }.reduce(0) {
                $0 + ($1["count"]?.intValue ?? 0)
            }
            return (received, missed)
        }
        // Read until every record is accounted for: received, or counted in a notice.
        let lines = Self.readLines(client) { lines in
            let (received, missed) = tally(lines.compactMap { try? JSONReader.parse($0) })
            return received + missed >= total
        }
        let documents = lines.compactMap { try? JSONReader.parse($0) }
        #expect(documents.first?["kind"] == .string("following"))
        let (count, missed) = tally(documents)
        let received = documents.filter { $0["kind"] == .string("sample") }
        #expect(missed > 0)
        #expect(count + missed == total, "received \(count), missed \(missed)")
        // Bounded by the queue plus what the socket pair itself can hold (its send and receive
        // buffers, in lines of the shortest length seen), never the 20,000 published.
        let shortest = lines.map(\.utf8.count).min() ?? 1
        let socketLines = (Self.bufferSize(client, SO_RCVBUF) + Self.bufferSize(client, SO_SNDBUF)) / (shortest + 1)
        #expect(
            received.count <= RecordFeed.queueLimit + socketLines + 2,
            "the queue is bounded: \(received.count) lines (the socket pair holds \(socketLines))")
        #expect(RecordFeed.queueLimit + socketLines + 2 < total / 2, "the bound means something")
        // Received lines are whole records in seq order, with their units.
        let seqs = received.compactMap { $0["seq"]?.intValue }
        #expect(seqs == seqs.sorted() && seqs.first == 1)
        #expect(received.first?["units"]?["bearing_temp_1"] == nil, "no configuration: no units")
        feed.stop()
    }

    @Test("samples carry their units and alarm events their point's unit; events are kept for status")
    func unitsAndRecentEvents() throws {
        let feed = RecordFeed(logger: Logger(label: "test"))
        let profile = DeviceProfile(
            model: "AX-4",
            points: [
                PointDefinition(name: "bearing_temp_1", table: .input, address: 0, type: .i16, unit: "degC"),
                PointDefinition(name: "revolution_count", table: .input, address: 1, type: .u16, unit: "rev"),
            ])
        feed.configure(units: ["axlebox-1": profile], gateway: "KZ-WAG-TEST")
        let (daemon, client) = Self.socketPair()
        defer { close(client) }
        #expect(feed.follow(fd: daemon) == nil)
        feed.publish(Self.sample(1), seq: 7)
        let alarm = Record(
            timestamp: Timestamp(millisecondsSinceEpoch: 1_800_000_000_100), source: "axlebox-1",
            body: .event(
                name: "alarm_above",
                fields: [("point", .string("bearing_temp_1")), ("value", .number(96)), ("threshold", .number(90))]),
            priority: .alarm)
        feed.publish(alarm, seq: 8)
        let lines = Self.readLines(client) { $0.count >= 3 }
        let documents = lines.compactMap { try? JSONReader.parse($0) }
        #expect(documents.count == 3)
        #expect(documents.first?["gateway"] == .string("KZ-WAG-TEST"))
        #expect(documents[1]["seq"] == .integer(7))
        #expect(documents[1]["units"]?["bearing_temp_1"] == .string("degC"))
        #expect(documents[1]["units"]?["revolution_count"] == .string("rev"))
        #expect(documents[2]["event"] == .string("alarm_above"))
        #expect(documents[2]["unit"] == .string("degC"))
        #expect(feed.recentEvents.map { $0["seq"] } == [.integer(8)], "samples are not kept, events are")
        feed.stop()
    }

    @Test("a client that goes away is let go, and a stop ends every follower")
    func clientGoneAndStop() throws {
        let feed = RecordFeed(logger: Logger(label: "test"))
        let (daemon, client) = Self.socketPair()
        #expect(feed.follow(fd: daemon) == nil)
        #expect(feed.followerCount == 1)
        close(client)
        // The follower notices within about a second, with no record to send.
        let deadline = MonotonicInstant.now().adding(milliseconds: 20_000)
        while feed.followerCount > 0, MonotonicInstant.now() < deadline { usleep(50_000) }
        #expect(feed.followerCount == 0)
        let (another, anotherClient) = Self.socketPair()
        defer { close(anotherClient) }
        #expect(feed.follow(fd: another) == nil)
        #expect(feed.followerCount == 1)
        feed.stop()
        #expect(feed.followerCount == 0)
        let (late, lateClient) = Self.socketPair()
        defer { close(lateClient) }
        #expect(feed.follow(fd: late)?["error"] == .string("shutting down"))
    }

    @Test("at most 8 clients follow at once; the next is refused with a reason")
    func followerLimit() throws {
        let feed = RecordFeed(logger: Logger(label: "test"))
        var clients: [Int32] = []
        defer { for client in clients { close(client) } }
        for _ in 0..<RecordFeed.maxFollowers {
            let (daemon, client) = Self.socketPair()
            clients.append(client)
            #expect(feed.follow(fd: daemon) == nil)
        }
        let (extra, extraClient) = Self.socketPair()
        clients.append(extraClient)
        let refusal = try #require(feed.follow(fd: extra))
        #expect(refusal["error"]?.stringValue?.contains("8 clients follow already") == true, "\(refusal.serialized)")
        #expect(feed.followerCount == RecordFeed.maxFollowers)
        feed.stop()
    }

    @Test("the send rate is the counter's change per second over the window")
    func rateMeter() {
        var meter = RateMeter(windowMs: 10_000)
        #expect(meter.rate(atMs: 0, value: 0) == nil)
        meter.add(atMs: 0, value: 100)
        #expect(meter.rate(atMs: 200, value: 150) == nil, "too soon to tell")
        #expect(meter.rate(atMs: 2000, value: 120) == 10)
        for second in 1...30 { meter.add(atMs: Int64(second) * 1000, value: 100 + UInt64(second) * 5) }
        // Old samples fall out of the window: the rate is the recent one.
        #expect(meter.rate(atMs: 30_000, value: 250) == 5)
        meter.add(atMs: 30_100, value: 999)  // too close to the last sample: ignored
        #expect(meter.rate(atMs: 31_000, value: 255) == 5)
    }
}
