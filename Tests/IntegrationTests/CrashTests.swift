import Foundation
import RailgateCore
import Testing

@Suite("Buffer crash safety", .serialized)
struct CrashTests {
    var benchBinary: String { Binaries.directory + "/railgate-bench" }

    /// Dumps records from `from` and checks each is intact JSON with its seq, in order.
    func dumpIntact(_ state: String, from: UInt64, scratch: Scratch, round: Int) throws -> [UInt64] {
        let dump = try TestProcess.run(
            Binaries.railgate, ["buffer", "dump", "--state-dir", state, "--from", "\(from)"], scratch: scratch)
        #expect(dump.status == 0, "\(dump.error)")
        var seqs: [UInt64] = []
        for line in dump.output.split(separator: "\n") {
            guard let record = try? JSONReader.parse(String(line)), let seq = record["seq"]?.doubleValue,
                record["source"]?.stringValue?.hasPrefix("axlebox-") == true
            else {
                Issue.record("round \(round): a corrupt record was returned: \(line.prefix(200))")
                continue
            }
            #expect(UInt64(seq) > (seqs.last ?? 0), "round \(round): seqs out of order")
            seqs.append(UInt64(seq))
        }
        return seqs
    }

    @Test("SIGKILLed at 50 random moments: every synced record is there and intact, no seq reused")
    func killedWriter() throws {
        let scratch = Scratch()
        let state = scratch.path + "/state"
        var random = SystemRandomNumberGenerator()
        var highestSynced: UInt64 = 0
        var highestPresent: UInt64 = 0
        for round in 1...50 {
            let writer = try TestProcess(benchBinary, ["crash-writer", state], scratch: scratch, name: "writer")
            let start = try #require(UInt64(try writer.waitForOutputLine(containing: "start").split(separator: " ")[1]))
            #expect(
                start == highestPresent + 1,
                "round \(round): starts at \(start) after \(highestPresent) (no seq reused, none skipped)")
            #expect(start > highestSynced, "round \(round): a synced seq would be reused")
            usleep(UInt32.random(in: 1_000...60_000, using: &random))
            writer.signal(SIGKILL)
            _ = try writer.waitForExit()
            if let synced = writer.output.split(separator: "\n").last(where: { $0.hasPrefix("synced ") }).flatMap({
                UInt64($0.dropFirst(7))
            }) {
                highestSynced = max(highestSynced, synced)
            }

            // The whole buffer's shape: seqs 1..<next_seq, every one present (seqs only increase,
            // so a count equal to the range means no hole), and everything synced among them.
            let stats = try JSONReader.parse(
                try TestProcess.run(
                    Binaries.railgate, ["buffer", "stats", "--state-dir", state, "--json"], scratch: scratch
                ).output)
            let next = UInt64(stats["next_seq"]?.doubleValue ?? 0)
            #expect(stats["first_seq"]?.intValue == 1)
            #expect(UInt64(stats["records"]?.intValue ?? -1) == next - 1, "round \(round): \(stats.serialized)")
            #expect(
                next - 1 >= highestSynced, "round \(round): synced through \(highestSynced), buffer ends at \(next - 1)"
            )
            // The tail, where a kill can tear a frame, record by record.
            let tail = try dumpIntact(
                state, from: max(1, highestPresent > 200 ? highestPresent - 200 : 1), scratch: scratch, round: round)
            #expect(tail.last == next - 1 || (tail.isEmpty && next == 1))
            highestPresent = next - 1
        }
        let all = try dumpIntact(state, from: 1, scratch: scratch, round: 0)
        #expect(all == Array(1...highestPresent))
        #expect(highestSynced > 1000, "the writer got real work done: \(highestSynced) records synced")
    }
}
