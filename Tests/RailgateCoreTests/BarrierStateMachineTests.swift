import Testing

@testable import RailgateCore

@Suite("Barrier state machine")
struct BarrierStateMachineTests {
    typealias State = BarrierStateMachine.State

    func machine() -> BarrierStateMachine { BarrierStateMachine(debounceMs: 20, travelTimeoutMs: 8000) }

    func states(_ transitions: [BarrierStateMachine.Transition]) -> [String] {
        transitions.map { $0.state.rawValue + ($0.fault.map { ":" + $0.rawValue } ?? "") }
    }

    @Test(
        "the initial state comes from the switches",
        arguments: [
            (false, true, "closed"), (true, false, "open"), (true, true, "fault:both_limits"),
            (false, false, "closing"),
        ])
    func initialState(_ open: Bool, _ closed: Bool, _ expected: String) {
        var barrier = machine()
        let first = barrier.start(openActive: open, closedActive: closed, atMs: 0)
        #expect(states(first) == [expected])
        #expect(first[0].previous == nil)
        #expect(first[0].fields.first?.1 == .string("unknown"))
    }

    @Test("a full cycle: closed, opening, open, closing, closed, with travel and open durations")
    func fullCycle() {
        var barrier = machine()
        _ = barrier.start(openActive: false, closedActive: true, atMs: 0)
        var all: [BarrierStateMachine.Transition] = []
        all += barrier.edge(.closed, active: false, atMs: 1000)
        all += barrier.tick(atMs: 1020)
        all += barrier.edge(.open, active: true, atMs: 4000)
        all += barrier.tick(atMs: 4100)
        all += barrier.edge(.open, active: false, atMs: 20_000)
        all += barrier.edge(.closed, active: true, atMs: 23_500)
        all += barrier.tick(atMs: 23_600)
        #expect(states(all) == ["opening", "open", "closing", "closed"])
        #expect(all.map(\.previous) == [.closed, .opening, .open, .closing])
        #expect(all[1].travelMs == 3000)
        #expect(all[3].travelMs == 3500)
        #expect(all[3].openMs == 22_500, "left closed at 1000, closed again at 23500")
        #expect(all.allSatisfy { $0.priority == .normal })
        #expect(all.map(\.atMs) == [1000, 4000, 20_000, 23_500], "events carry the moment the switch changed")
    }

    @Test("a bounce shorter than debounce_ms is ignored; a longer one counts")
    func bounce() {
        var barrier = machine()
        _ = barrier.start(openActive: false, closedActive: true, atMs: 0)
        #expect(barrier.edge(.closed, active: false, atMs: 100).isEmpty)
        #expect(barrier.edge(.closed, active: true, atMs: 110).isEmpty)
        #expect(barrier.tick(atMs: 1000).isEmpty, "10 ms of chatter is not an opening")
        #expect(barrier.edge(.closed, active: false, atMs: 2000).isEmpty)
        #expect(barrier.nextDeadlineMs == 2020)
        #expect(states(barrier.tick(atMs: 2019)).isEmpty)
        #expect(states(barrier.tick(atMs: 2020)) == ["opening"])
    }

    @Test("contacts chattering on arrival settle into one transition")
    func chatterOnArrival() {
        var barrier = machine()
        _ = barrier.start(openActive: false, closedActive: true, atMs: 0)
        _ = barrier.edge(.closed, active: false, atMs: 0)
        _ = barrier.tick(atMs: 100)
        var transitions: [BarrierStateMachine.Transition] = []
        for (offset, level) in [(0, true), (3, false), (6, true), (9, false), (12, true)] {
            transitions += barrier.edge(.open, active: level, atMs: 3000 + Int64(offset))
        }
        transitions += barrier.tick(atMs: 3100)
        #expect(states(transitions) == ["open"])
        #expect(transitions[0].atMs == 3012)
    }

    @Test("no limit within travel_timeout_ms is a travel_timeout alarm; reaching a limit recovers")
    func travelTimeout() {
        var barrier = machine()
        _ = barrier.start(openActive: false, closedActive: true, atMs: 0)
        _ = barrier.edge(.closed, active: false, atMs: 1000)
        _ = barrier.tick(atMs: 1020)
        #expect(barrier.nextDeadlineMs == 9000)
        #expect(barrier.tick(atMs: 8999).isEmpty)
        let stuck = barrier.tick(atMs: 9000)
        #expect(states(stuck) == ["fault:travel_timeout"])
        #expect(stuck[0].previous == .opening && stuck[0].priority == .alarm && stuck[0].atMs == 9000)
        #expect(barrier.tick(atMs: 60_000).isEmpty, "one alarm, not one per tick")
        _ = barrier.edge(.open, active: true, atMs: 61_000)
        let recovered = barrier.tick(atMs: 61_020)
        #expect(states(recovered) == ["open"])
        #expect(recovered[0].previous == .fault)
    }

    @Test("a timeout noticed only at the next edge is still reported, before the edge's transition")
    func lateTimeout() {
        var barrier = machine()
        _ = barrier.start(openActive: true, closedActive: false, atMs: 0)
        _ = barrier.edge(.open, active: false, atMs: 0)
        _ = barrier.tick(atMs: 20)
        let atEdge = barrier.edge(.closed, active: true, atMs: 10_000)
        #expect(states(atEdge + barrier.tick(atMs: 10_020)) == ["fault:travel_timeout", "closed"])
    }

    @Test("both limits active is a fault; releasing one recovers to the other")
    func bothLimits() {
        var barrier = machine()
        _ = barrier.start(openActive: false, closedActive: true, atMs: 0)
        _ = barrier.edge(.open, active: true, atMs: 500)
        let fault = barrier.tick(atMs: 520)
        #expect(states(fault) == ["fault:both_limits"])
        #expect(fault[0].priority == .alarm)
        _ = barrier.edge(.open, active: false, atMs: 1000)
        #expect(states(barrier.tick(atMs: 1020)) == ["closed"])
        // From both active to neither: wait for a limit (a broken wire is not a direction).
        _ = barrier.edge(.open, active: true, atMs: 2000)
        _ = barrier.tick(atMs: 2020)
        _ = barrier.edge(.open, active: false, atMs: 3000)
        _ = barrier.edge(.closed, active: false, atMs: 3000)
        #expect(barrier.tick(atMs: 3020).isEmpty)
        #expect(barrier.state == .fault)
    }

    @Test("a reversal while opening goes straight back to closed")
    func reversal() {
        var barrier = machine()
        _ = barrier.start(openActive: false, closedActive: true, atMs: 0)
        _ = barrier.edge(.closed, active: false, atMs: 100)
        _ = barrier.tick(atMs: 120)
        _ = barrier.edge(.closed, active: true, atMs: 1100)
        let back = barrier.tick(atMs: 1120)
        #expect(states(back) == ["closed"])
        #expect(back[0].previous == .opening && back[0].openMs == 1000)
        // ...and while closing, back to open.
        var other = machine()
        _ = other.start(openActive: true, closedActive: false, atMs: 0)
        _ = other.edge(.open, active: false, atMs: 100)
        _ = other.tick(atMs: 120)
        _ = other.edge(.open, active: true, atMs: 900)
        #expect(states(other.tick(atMs: 920)) == ["open"])
    }
}
