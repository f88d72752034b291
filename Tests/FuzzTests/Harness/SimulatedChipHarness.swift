import RailgateGPIO

/// The simulated chip's client side fed the simulator's stream from the input: the bytes cut into
/// reads of any size, framed into lines, each line read as a `watch` reply and as an edge of the
/// watched lines (which, active-low or not, and the clock all from the input). Holds: nothing
/// traps; no more than `maxLineBytes` of a line is ever held (a longer line is refused); edges
/// come only for watched lines, dated no earlier than the previous edge or the watch's start and
/// no later than now; levels are known only for watched lines. And a libgpiod event stamp of
/// any value moves onto the monotonic clock without trapping.
enum SimulatedChipHarness {
    static func check(_ bytes: [UInt8]) -> [String] {
        var input = FuzzInput(bytes)
        var violations = Violations()
        let watched = Set((0..<Int(input.byte() % 4)).map { _ in Int(input.byte() % 8) })
        let activeLow = input.byte() & 1 == 1
        let startNs = Int64(bitPattern: input.u64())
        // A libgpiod event's stamp of either clock, against any pair of clock readings.
        let clocks = GPIOEventClock.Now(monotonicNs: startNs, realtimeNs: Int64(bitPattern: input.u64()))
        let stamp = Int64(bitPattern: input.u64())
        let converted = GPIOEventClock.monotonic(stamp, now: clocks)
        if max(stamp.magnitude, clocks.realtimeNs.magnitude, clocks.monotonicNs.magnitude) <= 1 << 61 {
            violations.check(
                converted == stamp || converted == stamp - (clocks.realtimeNs - clocks.monotonicNs),
                "stamp \(stamp) converted to \(converted) with clocks \(clocks)")
        }
        var nowNs = startNs
        var state = SimulatedChipWatchState(watched: watched, activeLow: activeLow, levels: [:], startNs: startNs)
        var framer = SimulatedChipLineFramer()
        let readSize = 1 + Int(input.byte())
        let stream = input.rest()
        var offset = 0
        // A stream without a newline stands for an endless line: repeated past the limit.
        let repeats = stream.isEmpty || stream.contains(10) ? 1 : 1 + 70_000 / stream.count
        var round = 0
        reading: while round < repeats {
            while offset < stream.count {
                let end = min(stream.count, offset + readSize)
                framer.append(stream[offset..<end])
                offset = end
                while true {
                    let line: String?
                    do {
                        line = try framer.nextLine()
                    } catch {
                        violations.check(
                            error.bytes > SimulatedChipLineFramer.maxLineBytes, "refused a line of \(error.bytes) bytes"
                        )
                        break reading
                    }
                    guard let line else { break }
                    violations.check(
                        line.utf8.count <= SimulatedChipLineFramer.maxLineBytes + readSize,
                        "a line of \(line.utf8.count) bytes")
                    take(line, &state, &nowNs, watched: watched, &violations)
                }
                violations.check(
                    framer.pendingBytes <= SimulatedChipLineFramer.maxLineBytes + readSize,
                    "holds \(framer.pendingBytes) bytes without a newline")
            }
            offset = 0
            round += 1
        }
        return violations.messages
    }

    private static func take(
        _ line: String, _ state: inout SimulatedChipWatchState, _ nowNs: inout Int64, watched: Set<Int>,
        _ violations: inout Violations
    ) {
        if case .levels(let levels) = SimulatedChipProtocol.watchReply(line) {
            let state = SimulatedChipWatchState(watched: watched, activeLow: false, levels: levels, startNs: 0)
            violations.check(Set(state.levels.keys).isSubset(of: watched), "levels of lines not watched")
        }
        // The clock moves on by the line's length (any amount, never back).
        let (advanced, overflow) = nowNs.addingReportingOverflow(Int64(line.utf8.count) * 1_000_003)
        if !overflow { nowNs = advanced }
        let previous = state.lastTimestampNs
        guard let edge = state.take(line, nowNs: nowNs) else { return }
        violations.check(watched.contains(edge.line), "an edge on line \(edge.line), not watched: \(line)")
        violations.check(
            edge.timestampNs >= previous && edge.timestampNs <= max(nowNs, previous),
            "edge at \(edge.timestampNs) after \(previous), now \(nowNs): \(line)")
        violations.check(Set(state.levels.keys).isSubset(of: watched), "levels of lines not watched")
    }
}
