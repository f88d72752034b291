import Testing

@testable import RailgateCore

@Suite("Human output")
struct HumanFormatTests {
    @Test("bytes in binary units, one decimal below 10")
    func bytes() {
        #expect(HumanFormat.bytes(0) == "0 B")
        #expect(HumanFormat.bytes(1023) == "1023 B")
        #expect(HumanFormat.bytes(1024) == "1.0 KiB")
        #expect(HumanFormat.bytes(1536) == "1.5 KiB")
        #expect(HumanFormat.bytes(4927) == "4.8 KiB")
        #expect(HumanFormat.bytes(10_189) == "10 KiB")
        #expect(HumanFormat.bytes(1_048_575) == "1.0 MiB")
        #expect(HumanFormat.bytes(16_777_216) == "16 MiB")
        #expect(HumanFormat.bytes(67_108_864) == "64 MiB")
        #expect(HumanFormat.bytes(3 << 30) == "3.0 GiB")
        #expect(HumanFormat.bytes(-2048) == "-2.0 KiB")
    }

    @Test("durations as a person says them: 45s, 3m05s, 1h02m, 2d03h")
    func durations() {
        #expect(HumanFormat.duration(seconds: 0) == "0s")
        #expect(HumanFormat.duration(seconds: 0.9) == "0s")
        #expect(HumanFormat.duration(seconds: 45) == "45s")
        #expect(HumanFormat.duration(seconds: 185) == "3m05s")
        #expect(HumanFormat.duration(seconds: 3720) == "1h02m")
        #expect(HumanFormat.duration(seconds: 86_399) == "23h59m")
        #expect(HumanFormat.duration(seconds: 2 * 86_400 + 3 * 3600 + 59) == "2d03h")
        #expect(HumanFormat.duration(seconds: -61) == "-1m01s")
        #expect(HumanFormat.duration(seconds: .nan) == "?")
        #expect(HumanFormat.milliseconds(12.4) == "12 ms")
        #expect(HumanFormat.milliseconds(999.4) == "999 ms")
        #expect(HumanFormat.milliseconds(1250) == "1.3 s")
        #expect(HumanFormat.milliseconds(65_000) == "1m05s")
    }

    @Test("ranges as 12-16, plurals right, quantities with their unit")
    func rangesPluralsUnits() {
        #expect(HumanFormat.range(12, 16) == "12-16")
        #expect(HumanFormat.range(UInt64(7), 7) == "7")
        #expect(HumanFormat.range(5, 4) == "none")
        #expect(HumanFormat.count(0, "record") == "0 records")
        #expect(HumanFormat.count(1, "record") == "1 record")
        #expect(HumanFormat.count(UInt64(2), "record") == "2 records")
        #expect(HumanFormat.count(1, "batch", plural: "batches") == "1 batch")
        #expect(HumanFormat.count(3, "batch", plural: "batches") == "3 batches")
        #expect(HumanFormat.quantity("41.5", unit: "degC") == "41.5 degC")
        #expect(HumanFormat.quantity("87", unit: "%") == "87%")
        #expect(HumanFormat.quantity("3", unit: nil) == "3")
        #expect(HumanFormat.quantity("3", unit: "") == "3")
        #expect(HumanFormat.percent(0.006, of: 1) == "1%")
        #expect(HumanFormat.percent(5, of: 0) == "0%")
        #expect(HumanFormat.bytesPerHour(1536) == "1.5 KiB/h")
    }

    @Test("columns line up, numbers on the right, no trailing spaces")
    func columns() {
        let lines = HumanFormat.columns(
            [["device", "polls", "state"], ["axlebox-1", "8", "answering"], ["b", "1234", ""]], rightAligned: [1])
        #expect(
            lines == [
                "device     polls  state",
                "axlebox-1      8  answering",
                "b           1234",
            ])
        #expect(HumanFormat.columns([]) == [])
        #expect(HumanFormat.columns([["a"], ["bb", "c"]], indent: "  ") == ["  a", "  bb  c"])
    }

    @Test("did you mean: the nearest known name within a slip's distance")
    func suggestions() {
        #expect(NameSuggestion.editDistance("", "abc") == 3)
        #expect(NameSuggestion.editDistance("kitten", "sitting") == 3)
        #expect(NameSuggestion.editDistance("log_levle", "log_level") == 1)  // a swap is one edit
        #expect(NameSuggestion.closest(to: "log_levle", among: ["id", "log_level", "state_dir"]) == "log_level")
        #expect(NameSuggestion.closest(to: "upstrem", among: ["gateway", "upstream", "buffer"]) == "upstream")
        #expect(NameSuggestion.closest(to: "devise", among: ["device", "gate", "bus"]) == "device")
        #expect(NameSuggestion.closest(to: "URL", among: ["url", "qos"]) == "url")
        #expect(NameSuggestion.closest(to: "colour", among: ["url", "qos", "username"]) == nil)
        #expect(NameSuggestion.closest(to: "bsu", among: ["bus", "gate"]) == "bus")
        #expect(NameSuggestion.closest(to: "xyz", among: ["bus"]) == nil)
    }

    @Test("config problems: did you mean for keys and sections, a missing [upstream], one line each")
    func configProblems() {
        let text = """
            [gateway]
            id = "KZ-WAG-00042"
            log_levle = "info"
            "a\\nb" = 1

            [upstrem]
            url = "none"

            [[devise]]
            name = "x"

            [[gate]]
            name = "g"
            chip = "gpiochip0"
            open_line = 17
            closed_line = 18
            debounse_ms = 20
            """
        do {
            _ = try ConfigLoader(files: MemoryFiles(files: [:])).parse(text, file: "gw.toml")
            Issue.record("a config with misspelt keys was accepted")
        } catch {
            let lines = error.problems.map(\.description)
            #expect(lines.contains("gw.toml:3: unknown key 'log_levle' in [gateway]; did you mean 'log_level'?"))
            #expect(
                lines.contains("gw.toml:6: unknown section [upstrem] in the configuration; did you mean [upstream]?"))
            #expect(
                lines.contains("gw.toml:9: unknown section [[devise]] in the configuration; did you mean [[device]]?"))
            #expect(lines.contains("gw.toml:17: unknown key 'debounse_ms' in [[gate]]; did you mean 'debounce_ms'?"))
            #expect(lines.contains("gw.toml:4: unknown key 'a\\nb' in [gateway]"), "a newline in a key is escaped")
            #expect(
                lines.contains(
                    "gw.toml: the [upstream] table is missing: add it with url = \"mqtt://HOST:PORT\" (or url = \"none\" to keep records in the buffer only)"
                ))
            #expect(lines.allSatisfy { !$0.contains("\n") })
        }
    }

    @Test("a TOML syntax error is one FILE:LINE line, whatever byte stopped the parser")
    func syntaxErrorsOnOneLine() {
        let cases: [(String, String)] = [
            ("[gateway\nid = \"x\"\n", "gw.toml:1: expected ']', found end of line"),
            ("[gateway]\nid = \n", "gw.toml:2: expected a value, found end of line; strings must be quoted"),
            ("[gateway]\nid = \"a\\\tb\"\n", "gw.toml:2: invalid escape: a backslash followed by a tab"),
            ("[gateway]\nid = \"a\\qb\"\n", "gw.toml:2: invalid escape '\\q'"),
            ("[gateway]\n= 1\n", "gw.toml:2: expected a key, found '='"),
        ]
        for (text, expected) in cases {
            do {
                _ = try TOMLParser.parse(text, file: "gw.toml")
                Issue.record("accepted: \(text.debugDescription)")
            } catch {
                #expect(error.problems.map(\.description) == [expected], "\(text.debugDescription)")
            }
        }
    }
}

@Suite("Record lines")
struct RecordTextTests {
    let units = RecordText.units(
        fromBirth: try! JSONReader.parse(
            #"{"state":"online","gateway":"G","sources":{"axlebox-1":{"kind":"modbus","points":{"#
                + #""bearing_temp_1":{"unit":"degC","type":"i16"},"door":{"type":"bool"}}},"#
                + #""north-barrier":{"kind":"gate"}}}"#))

    @Test("a sample: time, seq, source, values with their units, failed points named")
    func sample() throws {
        let record = try JSONReader.parse(
            #"{"seq":1042,"ts":"2026-11-29T02:40:00.123Z","kind":"sample","source":"axlebox-1","#
                + #""values":{"bearing_temp_1":41.5,"door":false},"errors":{"bearing_temp_3":"timeout"}}"#)
        let line = RecordText.line(record, units: units)
        #expect(
            line.text
                == "02:40:00.123Z  seq 1042  axlebox-1        bearing_temp_1 41.5 degC, door false, FAILED bearing_temp_3 timeout"
        )
        #expect(line.emphasis == .normal)
        #expect(RecordText.units(fromBirth: .null).isEmpty)
    }

    @Test("alarms and gate events stand out, with units and durations")
    func events() throws {
        let alarm = try JSONReader.parse(
            #"{"seq":1044,"ts":"2026-11-29T02:40:02.500Z","kind":"event","source":"axlebox-1","#
                + #""point":"bearing_temp_1","event":"alarm_above","value":93.1,"threshold":90,"priority":"alarm"}"#)
        #expect(
            RecordText.line(alarm, units: units)
                == ("02:40:02.500Z  seq 1044  axlebox-1        ALARM bearing_temp_1 above 90 degC: 93.1 degC", .alarm))
        let clear = try JSONReader.parse(
            #"{"seq":1050,"ts":"2026-11-29T02:41:00.000Z","kind":"event","source":"axlebox-1","#
                + #""point":"bearing_temp_1","event":"alarm_clear","value":85.2,"alarm":"alarm_above","priority":"alarm"}"#
        )
        #expect(
            RecordText.line(clear, units: units).text
                == "02:41:00.000Z  seq 1050  axlebox-1        CLEAR bearing_temp_1 back to 85.2 degC (alarm_above cleared)"
        )
        let closed = try JSONReader.parse(
            #"{"seq":1043,"ts":"2026-11-29T02:40:01.002Z","kind":"event","source":"north-barrier","#
                + #""event":"closed","previous":"closing","travel_ms":4200,"open_ms":65000,"priority":"normal"}"#)
        #expect(
            RecordText.line(closed, units: units)
                == (
                    "02:40:01.002Z  seq 1043  north-barrier    GATE  closed (was closing, travel 4.2 s, open 1m05s)",
                    .event
                ))
        let fault = try JSONReader.parse(
            #"{"ts":"2026-11-29T02:40:09.000Z","kind":"event","source":"north-barrier","event":"fault","#
                + #""fault":"travel_timeout","previous":"opening","priority":"alarm"}"#)
        #expect(
            RecordText.line(fault)
                == ("02:40:09.000Z  north-barrier    FAULT travel_timeout (was opening)", .alarm))
        let lost = try JSONReader.parse(
            #"{"seq":9,"ts":"2026-11-29T02:40:09.000Z","kind":"event","source":"G","event":"records_lost","#
                + #""from_seq":5,"to_seq":8,"count":4,"seqs":4,"reason":"damaged","priority":"alarm"}"#)
        #expect(
            RecordText.line(lost)
                == (
                    "02:40:09.000Z  seq 9  G                ALARM records_lost seqs 5-8 (count 4, seqs 4, reason damaged)",
                    .alarm
                ))
        #expect(RecordText.coloured("x", .alarm) == "\u{1B}[1;31mx\u{1B}[0m")
        #expect(RecordText.coloured("x", .normal) == "x")
    }
}
