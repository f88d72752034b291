import Testing

@testable import RailgateCore

@Suite("Digital inputs")
struct InputTests {
    @Test("the first level, then a change once it has held for debounce_ms, timed at the edge")
    func changeAfterDebounce() {
        var input = InputDebouncer(debounceMs: 50)
        #expect(input.start(active: false, atMs: 1000) == .init(active: false, previous: nil, heldMs: nil, atMs: 1000))
        #expect(input.edge(active: true, atMs: 1200).isEmpty)
        #expect(input.nextDeadlineMs == 1250)
        #expect(input.tick(atMs: 1249).isEmpty)
        let change = input.tick(atMs: 1250)
        #expect(change == [.init(active: true, previous: false, heldMs: 200, atMs: 1200)])
        #expect(change[0].event == "active")
        #expect(change[0].fields.map(\.0) == ["previous", "held_ms"])
        #expect(input.active == true)
        #expect(input.nextDeadlineMs == nil)
    }

    @Test("a bounce shorter than debounce_ms leaves no event; a longer one is two events")
    func bounces() {
        var input = InputDebouncer(debounceMs: 50)
        _ = input.start(active: true, atMs: 0)
        #expect(input.edge(active: false, atMs: 100).isEmpty)
        #expect(input.edge(active: true, atMs: 130).isEmpty)  // back within 30 ms
        #expect(input.edge(active: false, atMs: 131).isEmpty)
        #expect(input.edge(active: true, atMs: 140).isEmpty)
        #expect(input.tick(atMs: 10_000).isEmpty)
        #expect(input.nextDeadlineMs == nil)
        // Off for 80 ms, then on: the off is due at the next edge, the on after its own debounce.
        #expect(input.edge(active: false, atMs: 20_000).isEmpty)
        let off = input.edge(active: true, atMs: 20_080)
        #expect(off == [.init(active: false, previous: true, heldMs: 20_000, atMs: 20_000)])
        #expect(input.tick(atMs: 20_130) == [.init(active: true, previous: false, heldMs: 80, atMs: 20_080)])
    }

    @Test("debounce_ms 0: every edge is a change")
    func noDebounce() {
        var input = InputDebouncer(debounceMs: 0)
        _ = input.start(active: false, atMs: 0)
        #expect(input.edge(active: true, atMs: 5).isEmpty)
        #expect(input.edge(active: false, atMs: 6).map(\.active) == [true])
        #expect(input.tick(atMs: 6).map(\.active) == [false])
    }

    @Test("[[input]] decodes with its defaults; mistakes are reported with their line")
    func configuration() throws {
        let text = """
            [gateway]
            id = "TM-GATE-1"
            [upstream]
            url = "none"
            [[input]]
            name = "cabinet-door"
            chip = "gpiochip0"
            line = 5
            active_low = true
            debounce_ms = 80
            priority = "alarm"
            [[input]]
            name = "tamper"
            chip = "gpiochip0"
            line = 6
            """
        let config = try ConfigLoader(files: MemoryFiles(files: [:])).parse(text, file: "gw.toml")
        #expect(
            config.inputs == [
                InputConfig(
                    name: "cabinet-door", chip: "gpiochip0", line: 5, activeLow: true, debounceMs: 80, priority: .alarm),
                InputConfig(
                    name: "tamper", chip: "gpiochip0", line: 6, activeLow: false, debounceMs: 20, priority: .normal),
            ])
        let broken = """
            [gateway]
            id = "TM-GATE-1"
            [[input]]
            name = "door"
            chip = "gpiochip0"
            line = 5
            priority = "urgent"
            [[input]]
            name = "door"
            chip = "gpiochip0"
            line = 2000
            """
        #expect {
            try ConfigLoader(files: MemoryFiles(files: [:])).parse(broken, file: "gw.toml")
        } throws: { error in
            let problems = (error as? ConfigErrors)?.problems.map(\.description) ?? []
            return problems.contains { $0.hasPrefix("gw.toml:7:") && $0.contains("priority") }
                && problems.contains { $0.hasPrefix("gw.toml:11:") && $0.contains("out of range") }
        }
    }
}
