import ArgumentParser
import RailgateCore
import RailgateGPIO
import RailgateSystem

struct GPIOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpio", abstract: "GPIO chips and lines, like gpioinfo and gpiomon (sim:PATH chips too).",
        subcommands: [GPIOInfoCommand.self, GPIOWatchCommand.self])
}

/// Opens a chip for a command, or exits 69 with the error and its remedy.
func openChip(_ name: String) throws -> any GPIOChip {
    do {
        return try GPIOChips.open(name)
    } catch {
        StandardStreams.error("railgate gpio: \(error)")
        throw Exit.unavailable
    }
}

struct GPIOInfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "List chips and their lines.")

    @Option(help: "One chip: gpiochip0, /dev/gpiochip0, a label, a number, or sim:PATH. All kernel chips by default.")
    var chip: String?

    @Flag(help: "Print one JSON document.")
    var json = false

    func run() throws {
        let names = chip.map { [$0] } ?? GPIOChips.kernelChips()
        guard !names.isEmpty else {
            StandardStreams.error(
                "railgate gpio info: no GPIO chips (/dev/gpiochip*) on this machine; a simulated chip is sim:PATH")
            throw Exit.unavailable
        }
        var documents: [JSON] = []
        for name in names {
            let chip = try openChip(name)
            var lines: [GPIOLineInfo] = []
            for offset in 0..<chip.lineCount {
                do {
                    lines.append(try chip.lineInfo(offset))
                } catch {
                    StandardStreams.error("railgate gpio info: \(error)")
                    throw Exit.ioError
                }
            }
            if json {
                documents.append(
                    .object([
                        ("chip", .string(chip.name)), ("label", .string(chip.label)),
                        (
                            "lines",
                            .array(
                                lines.map { line in
                                    .object([
                                        ("offset", .integer(Int64(line.offset))), ("name", .string(line.name)),
                                        ("consumer", .string(line.consumer)),
                                        ("used", .bool(line.isUsed)),
                                        ("direction", .string(line.isOutput ? "output" : "input")),
                                        ("active_low", .bool(line.activeLow)),
                                        ("level", line.level.map { .integer($0 ? 1 : 0) } ?? .null),
                                    ])
                                })
                        ),
                    ]))
                continue
            }
            StandardStreams.out("\(chip.name) [\(chip.label)] - \(chip.lineCount) lines:")
            for line in lines {
                let name = line.name.isEmpty ? "unnamed" : "\"\(line.name)\""
                let consumer = line.isUsed ? "\"\(line.consumer.isEmpty ? "kernel" : line.consumer)\"" : "unused"
                var text =
                    "\tline \(line.offset): \(name) \(consumer) \(line.isOutput ? "output" : "input") active-\(line.activeLow ? "low" : "high")"
                if let level = line.level { text += " [\(level ? 1 : 0)]" }
                StandardStreams.out(text)
            }
        }
        if json { StandardStreams.out((documents.count == 1 ? documents[0] : .array(documents)).serialized) }
    }
}

struct GPIOWatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Print edge events on lines as they happen, like gpiomon.")

    @Option(help: "The chip: gpiochip0, /dev/gpiochip0, a label, a number, or sim:PATH.")
    var chip: String

    @Option(
        name: .customLong("line"), parsing: .upToNextOption, help: "Lines to watch: --line 17 18, or --line repeated.")
    var lines: [Int]

    @Flag(name: .customLong("active-low"), help: "The lines are active-low.")
    var activeLow = false

    @Option(name: .customLong("num-events"), help: "Exit after this many events.")
    var numEvents: Int?

    @Flag(help: "One JSON object per event.")
    var json = false

    func validate() throws {
        guard !lines.isEmpty else { throw ValidationError("give at least one --line") }
    }

    func run() throws {
        let chip = try openChip(self.chip)
        let watch: any GPIOLineWatch
        do {
            watch = try chip.watch(lines: lines, activeLow: activeLow, consumer: "railgate-watch")
        } catch {
            StandardStreams.error("railgate gpio watch: \(error)")
            throw Exit.unavailable
        }
        defer { watch.release() }
        var seen = 0
        while numEvents.map({ seen < $0 }) ?? true {
            let edges: [GPIOEdge]
            do {
                edges = try watch.waitForEdges(timeoutMs: 1000)
            } catch {
                StandardStreams.error("railgate gpio watch: \(error)")
                throw Exit.unavailable
            }
            for edge in edges where numEvents.map({ seen < $0 }) ?? true {
                seen += 1
                let seconds = edge.timestampNs / 1_000_000_000
                let nanoseconds = String(edge.timestampNs % 1_000_000_000)
                let padded = String(repeating: "0", count: 9 - nanoseconds.count) + nanoseconds
                if json {
                    StandardStreams.out(
                        JSON.object([
                            ("line", .integer(Int64(edge.line))), ("edge", .string(edge.active ? "rising" : "falling")),
                            ("timestamp_ns", .integer(edge.timestampNs)),
                        ]).serialized)
                } else {
                    StandardStreams.out(
                        "event: \(edge.active ? "RISING EDGE " : "FALLING EDGE") offset: \(edge.line) timestamp: [\(seconds).\(padded)]"
                    )
                }
            }
        }
    }
}
