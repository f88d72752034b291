/// The compact telemetry payload, format `compact/1` (`[upstream] payload = "compact"`, the default): the same
/// records as the plain batch, without what every sample repeats. Point and source names go once
/// per batch in `sources`; a sample is a row `[dseq,dts,source,slot...]` whose slots follow its
/// source's name list; seq and time are differences from the previous row. Lossless: `decode`
/// gives back the plain batch byte for byte (values are copied as their JSON text, never parsed
/// and printed again). CONTRACT.md ("Compact payload") specifies it for consumers.
///
/// ```
/// {"gateway":"KZ-WAG-00042","format":"compact/1",
///  "sources":[["axlebox-1","bearing_temp_1","bearing_temp_2","door_open"]],
///  "records":[[1042,1795920000123,0,41.5,39.8,false],[1,1002,0,41.6,null,["timeout"]],
///             {"seq":1044,"ts":"...","kind":"event",...}]}
/// ```
///
/// A row: `dseq` and `dts` (milliseconds) are added to the previous row's seq and time (0 and 0
/// before the first row, so the first row carries both in full); `source` indexes `sources`,
/// whose entry is the source's name followed by its point names; slot i is the point named at
/// i + 1: `null` (not in this sample), a JSON value (in `values`) or a one-element array holding
/// the reason (in `errors`); trailing `null`s are left out. Events, and any record that does not
/// fit a row exactly, are carried as their plain JSON object; they do not move the row base.
/// Pure: no I/O. A value: each thread encodes with its own (`payload(of:)` is mutating, it keeps
/// what it learnt of each source's names for the next batch).
public struct CompactBatchEncoder: Sendable {
    /// The `format` field's value.
    public static let format = "compact/1"
    /// How many point names (all sources together) the encoder remembers between batches; past
    /// that (records of many configurations in the buffer) it starts afresh.
    static let rememberedNames = 65_536

    private let prefix: [UInt8]
    /// Each source's point names (JSON tokens) with their rank in its profile.
    private let ranks: [[UInt8]: [[UInt8]: Int]]
    /// Each source's name table as the last batch left it, by source token: a batch starts from
    /// it, so a source's names are matched by comparing bytes, not hashed again every batch.
    private var known: [[UInt8]: CompactScan.Names] = [:]

    /// `pointOrder`: each source's point names in profile order (the order its records list
    /// them in), so that slots follow it; names it does not list go after the one before them.
    public init(gatewayID: String, pointOrder: [String: [String]] = [:]) {
        var head = Array("{\"gateway\":".utf8)
        JSON.writeString(gatewayID, to: &head)
        head += ",\"format\":\"\(Self.format)\",\"sources\":[".utf8
        prefix = head
        func token(_ text: String) -> [UInt8] {
            var bytes: [UInt8] = []
            JSON.writeString(text, to: &bytes)
            return bytes
        }
        var ranks: [[UInt8]: [[UInt8]: Int]] = [:]
        // Sources of one profile share one table (and its name tokens).
        var tables: [[String]: [[UInt8]: Int]] = [:]
        for (source, names) in pointOrder {
            if let rank = tables[names] {
                ranks[token(source)] = rank
                continue
            }
            var rank: [[UInt8]: Int] = [:]
            for (index, name) in names.enumerated() { rank[token(name)] = index }
            ranks[token(source)] = rank
            tables[names] = rank
        }
        self.ranks = ranks
    }

    /// The compact payload of `records` (each as stored: a plain record object with its seq).
    /// The bytes depend on `records` alone, never on earlier batches.
    public mutating func payload(of records: [(seq: UInt64, bytes: [UInt8])]) -> [UInt8] {
        var scan = CompactScan(ranks: ranks, known: known)
        for record in records { scan.add(record.bytes) }
        let payload = scan.render(prefix: prefix, records: records)
        for source in scan.sources { known[source.token] = source.names }
        if known.values.reduce(0, { $0 + $1.names.count }) > Self.rememberedNames { known = [:] }
        return payload
    }
}

/// A sample read from its plain record, and the table of sources and names of a batch.
private struct CompactScan {
    struct Member {
        var name: Int
        var isError: Bool
        var start: Int
        var end: Int
    }

    struct Sample {
        var seq: Int64
        var milliseconds: Int64
        var source: Int
        var members: Range<Int>
    }

    /// A source's names by id, kept from batch to batch: ids are only ever added.
    struct Names {
        /// Name tokens (with their quotes) by id; a profile's names share the profile table's.
        var names: [[UInt8]] = []
        /// Each id's profile rank, -1 when unknown.
        var rank: [Int] = []
        /// The ids of the previous sample's members, in order (a guess for the next one).
        var previous: [Int] = []
    }

    struct Source {
        var token: [UInt8]
        /// Profile ranks of the names (from `pointOrder`).
        var hint: [[UInt8]: Int]
        var names: Names
        /// Ids by name token, made the first time this batch meets a name out of the usual order.
        var ids: [[UInt8]: Int]?
        /// Name ids in slot order: only the names this batch uses.
        var order: [Int] = []
        /// Each id's slot, -1 while this batch has not used it.
        var slot: [Int]
        /// The highest profile rank in `order` (-1: none).
        var highestRank = -1
    }

    let ranks: [[UInt8]: [[UInt8]: Int]]
    let known: [[UInt8]: Names]
    var samples: [Sample?] = []
    var members: [Member] = []
    var sources: [Source] = []
    var sourceIDs: [[UInt8]: Int] = [:]
    var lastSource = -1

    mutating func add(_ bytes: [UInt8]) {
        let mark = members.count
        let sample = bytes.withUnsafeBufferPointer { parse($0) }
        if sample == nil { members.removeSubrange(mark...) }
        samples.append(sample)
    }

    /// The record as a sample row, or nil to carry it as it is.
    private mutating func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> Sample? {
        var reader = TokenReader(bytes: bytes)
        guard reader.literal(#"{"seq":"#), let seq = reader.digits(), reader.literal(#","ts":""#),
            let milliseconds = reader.timestamp(), reader.literal(#"","kind":"sample","source":"#),
            let sourceRange = reader.string()
        else { return nil }
        let source = sourceID(bytes, sourceRange)
        let first = members.count
        var position = 0
        for (key, isError) in [(#","values":{"#, false), (#","errors":{"#, true)] where reader.literal(key) {
            guard !reader.literal("}") else { return nil }  // an empty object is never written
            var previousID: Int?
            repeat {
                guard let nameRange = reader.string(), reader.literal(":"),
                    let value = isError ? reader.string() : reader.value()
                else { return nil }
                let id = nameID(source, bytes, nameRange, guess: position)
                position += 1
                placeIfNew(id, after: previousID, in: source)
                previousID = id
                members.append(Member(name: id, isError: isError, start: value.lowerBound, end: value.upperBound))
            } while reader.literal(",")
            guard reader.literal("}") else { return nil }
        }
        guard reader.literal("}"), reader.atEnd else { return nil }
        sources[source].names.previous.removeAll(keepingCapacity: true)
        for member in members[first...] { sources[source].names.previous.append(member.name) }
        return Sample(seq: seq, milliseconds: milliseconds, source: source, members: first..<members.count)
    }

    private mutating func sourceID(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int {
        if lastSource >= 0, sources[lastSource].token.elementsEqual(bytes[range]) { return lastSource }
        let token = Array(bytes[range])
        if let id = sourceIDs[token] {
            lastSource = id
            return id
        }
        let names = known[token] ?? Names()
        sources.append(
            Source(
                token: token, hint: ranks[token] ?? [:], names: names,
                slot: [Int](repeating: -1, count: names.names.count)))
        sourceIDs[token] = sources.count - 1
        lastSource = sources.count - 1
        return lastSource
    }

    private mutating func nameID(
        _ source: Int, _ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, guess: Int
    )
        -> Int
    {
        if guess < sources[source].names.previous.count {
            let id = sources[source].names.previous[guess]
            if sources[source].names.names[id].elementsEqual(bytes[range]) { return id }
        }
        var token = Array(bytes[range])
        if sources[source].ids == nil {
            var ids: [[UInt8]: Int] = [:]
            for (id, name) in sources[source].names.names.enumerated() { ids[name] = id }
            sources[source].ids = ids
        }
        if let id = sources[source].ids?[token] { return id }
        let id = sources[source].names.names.count
        var rank = -1
        if let index = sources[source].hint.index(forKey: token) {
            token = sources[source].hint.keys[index]
            rank = sources[source].hint.values[index]
        }
        sources[source].names.names.append(token)
        sources[source].ids?[token] = id
        sources[source].names.rank.append(rank)
        sources[source].slot.append(-1)
        return id
    }

    /// A name seen for the first time goes where its profile rank puts it, or else right after
    /// the one before it in its record, so that slot order agrees with the order of every
    /// record of the batch.
    private mutating func placeIfNew(_ id: Int, after previous: Int?, in source: Int) {
        guard sources[source].slot[id] < 0 else { return }
        var at = sources[source].order.count
        let rank = sources[source].names.rank[id]
        if rank >= 0 {
            // Ranked names stay in rank order among themselves (unranked ones never move them):
            // a rank above every placed one goes last, the usual case of a profile's records.
            if rank < sources[source].highestRank {
                let ranks = sources[source].names.rank
                at = sources[source].order.firstIndex { ranks[$0] > rank } ?? at
            }
            sources[source].highestRank = max(sources[source].highestRank, rank)
        } else if let previous {
            at = sources[source].slot[previous] + 1
        }
        sources[source].order.insert(id, at: at)
        for slot in at..<sources[source].order.count { sources[source].slot[sources[source].order[slot]] = slot }
    }

    func render(prefix: [UInt8], records: [(seq: UInt64, bytes: [UInt8])]) -> [UInt8] {
        var output = prefix
        output.reserveCapacity(records.reduce(prefix.count + 64) { $0 + $1.bytes.count / 2 })
        // Only the sources some row uses are listed (a record kept plain needs none).
        let rows: [Bool] = records.indices.map { index in
            guard let sample = samples[index] else { return false }
            return rowFits(sample)
        }
        var listed = [Int](repeating: -1, count: sources.count)
        var count = 0
        for (index, isRow) in rows.enumerated() where isRow {
            let source = samples[index]!.source
            guard listed[source] < 0 else { continue }
            listed[source] = count
            if count > 0 { output.append(UInt8(ascii: ",")) }
            count += 1
            output.append(UInt8(ascii: "["))
            output += sources[source].token
            for id in sources[source].order {
                output.append(UInt8(ascii: ","))
                output += sources[source].names.names[id]
            }
            output.append(UInt8(ascii: "]"))
        }
        output += "],\"records\":[".utf8
        var seq: Int64 = 0
        var milliseconds: Int64 = 0
        var slots: [Int] = []
        for (index, record) in records.enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            guard rows[index], let sample = samples[index] else {
                output += record.bytes
                continue
            }
            let rowStart = output.count
            output.append(UInt8(ascii: "["))
            CompactScan.writeInteger(sample.seq &- seq, to: &output)
            output.append(UInt8(ascii: ","))
            CompactScan.writeInteger(sample.milliseconds &- milliseconds, to: &output)
            output.append(UInt8(ascii: ","))
            CompactScan.writeInteger(Int64(listed[sample.source]), to: &output)
            let previous = (seq: seq, milliseconds: milliseconds)
            seq = sample.seq
            milliseconds = sample.milliseconds
            let table = sources[sample.source]
            let used = members[sample.members]
            let width = (used.map { table.slot[$0.name] }.max() ?? -1) + 1
            slots.removeAll(keepingCapacity: true)
            slots.append(contentsOf: repeatElement(-1, count: width))
            for (offset, member) in used.enumerated() {
                slots[table.slot[member.name]] = sample.members.lowerBound + offset
            }
            record.bytes.withUnsafeBufferPointer { bytes in
                for memberIndex in slots {
                    output.append(UInt8(ascii: ","))
                    guard memberIndex >= 0 else {
                        output += "null".utf8
                        continue
                    }
                    let member = members[memberIndex]
                    if member.isError { output.append(UInt8(ascii: "[")) }
                    output.append(contentsOf: bytes[member.start..<member.end])
                    if member.isError { output.append(UInt8(ascii: "]")) }
                }
            }
            output.append(UInt8(ascii: "]"))
            if output.count - rowStart > record.bytes.count {
                // Mostly nulls (a deadband let few of many points through): the plain object is
                // smaller, and the row base stays where it was.
                output.removeSubrange(rowStart...)
                output += record.bytes
                seq = previous.seq
                milliseconds = previous.milliseconds
            }
        }
        output += "]}".utf8
        return output
    }

    /// Whether the sample's values and errors each come in slot order (so the decoder rebuilds
    /// them in the order stored), with no point in both.
    private func rowFits(_ sample: Sample) -> Bool {
        let slot = sources[sample.source].slot
        let used = members[sample.members]
        // `parse` reads the values, then the errors.
        let errorStart = used.firstIndex(where: \.isError) ?? used.endIndex
        let values = used[..<errorStart]
        let errors = used[errorStart...]
        func rising(_ part: ArraySlice<Member>) -> Bool {
            zip(part, part.dropFirst()).allSatisfy { slot[$0.name] < slot[$1.name] }
        }
        guard errors.allSatisfy(\.isError), rising(values), rising(errors) else { return false }
        // No point both read and failed: both lists rise, so one walk compares them.
        var next = values.startIndex
        for error in errors {
            while next < values.endIndex, slot[values[next].name] < slot[error.name] { next += 1 }
            if next < values.endIndex, slot[values[next].name] == slot[error.name] { return false }
        }
        return true
    }

    static func writeInteger(_ value: Int64, to output: inout [UInt8]) {
        if value < 0 { output.append(UInt8(ascii: "-")) }
        JSON.writeDigits(value.magnitude, to: &output)
    }
}

/// Reads the exact layout `Record.write` produces; any other byte makes a read fail.
private struct TokenReader {
    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0

    var atEnd: Bool { index == bytes.count }

    mutating func literal(_ text: StaticString) -> Bool {
        let count = text.utf8CodeUnitCount
        guard bytes.count - index >= count else { return false }
        let start = text.utf8Start
        for offset in 0..<count where bytes[index + offset] != start[offset] { return false }
        index += count
        return true
    }

    mutating func literal(_ text: String) -> Bool {
        let utf8 = text.utf8
        guard bytes.count - index >= utf8.count else { return false }
        var offset = index
        for byte in utf8 {
            guard bytes[offset] == byte else { return false }
            offset += 1
        }
        index = offset
        return true
    }

    /// A seq: decimal digits without a leading zero, below 2^63.
    mutating func digits() -> Int64? {
        let start = index
        var value: Int64 = 0
        while index < bytes.count, bytes[index] &- UInt8(ascii: "0") < 10 {
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(bytes[index] - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { return nil }
            value = sum
            index += 1
        }
        guard index > start, bytes[start] != UInt8(ascii: "0") || index == start + 1 else { return nil }
        return value
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` (the closing quote is left), as milliseconds since the epoch;
    /// nil unless `Timestamp` writes exactly that text for them.
    mutating func timestamp() -> Int64? {
        guard bytes.count - index >= 24 else { return nil }
        let text = UnsafeBufferPointer(rebasing: bytes[index..<index + 24])
        func number(_ from: Int, _ count: Int) -> Int64? {
            var value: Int64 = 0
            for offset in from..<from + count {
                let digit = text[offset] &- UInt8(ascii: "0")
                guard digit < 10 else { return nil }
                value = value * 10 + Int64(digit)
            }
            return value
        }
        guard text[4] == UInt8(ascii: "-"), text[7] == UInt8(ascii: "-"), text[10] == UInt8(ascii: "T"),
            text[13] == UInt8(ascii: ":"), text[16] == UInt8(ascii: ":"), text[19] == UInt8(ascii: "."),
            text[23] == UInt8(ascii: "Z"), let year = number(0, 4), let month = number(5, 2), let day = number(8, 2),
            let hour = number(11, 2), let minute = number(14, 2), let second = number(17, 2),
            let millisecond = number(20, 3), (1...12).contains(month), (1...31).contains(day), hour < 24,
            minute < 60, second < 60
        else { return nil }
        let days = CompactTime.days(year: year, month: month, day: day)
        let milliseconds = ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millisecond
        // Rejects dates such as February 30 that the arithmetic would carry into March.
        var check: [UInt8] = []
        check.reserveCapacity(24)
        Timestamp(millisecondsSinceEpoch: milliseconds).write(to: &check, withMilliseconds: true)
        guard check.elementsEqual(text) else { return nil }
        index += 24
        return milliseconds
    }

    /// A JSON string token (quotes included), or nil.
    mutating func string() -> Range<Int>? {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        let start = index
        index += 1
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\""):
                index += 1
                return start..<index
            case UInt8(ascii: "\\"): index += 2
            default: index += 1
            }
        }
        return nil
    }

    /// A scalar JSON value token: a string, a number, true, false or null.
    mutating func value() -> Range<Int>? {
        guard index < bytes.count else { return nil }
        switch bytes[index] {
        case UInt8(ascii: "\""): return string()
        case UInt8(ascii: "t"): return literal("true") ? index - 4..<index : nil
        case UInt8(ascii: "f"): return literal("false") ? index - 5..<index : nil
        case UInt8(ascii: "n"): return literal("null") ? index - 4..<index : nil
        default:
            let start = index
            while index < bytes.count, Self.isNumberByte(bytes[index]) { index += 1 }
            return index > start ? start..<index : nil
        }
    }

    static func isNumberByte(_ byte: UInt8) -> Bool {
        byte &- UInt8(ascii: "0") < 10 || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "+")
            || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E")
    }
}

/// Day counts of the proleptic Gregorian calendar (H. Hinnant's days_from_civil).
enum CompactTime {
    static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}

/// Why a compact payload could not be decoded.
public struct CompactBatchError: Error, CustomStringConvertible {
    public var offset: Int
    public var message: String
    public var description: String { "invalid compact batch at byte \(offset): \(message)" }
}

/// Decoding of `compact/1` payloads (tests, tools, and the reference for consumers).
public enum CompactBatch {
    /// The time of a record as stored (`{"seq":N,"ts":"...` as `Record.write` writes it), read
    /// without parsing the rest; nil for any other text.
    public static func timestamp(ofRecord bytes: [UInt8]) -> Timestamp? {
        bytes.withUnsafeBufferPointer { buffer -> Timestamp? in
            var reader = TokenReader(bytes: buffer)
            guard reader.literal(#"{"seq":"#), reader.digits() != nil, reader.literal(#","ts":""#),
                let milliseconds = reader.timestamp()
            else { return nil }
            return Timestamp(millisecondsSinceEpoch: milliseconds)
        }
    }

    /// The plain batch (`{"gateway":ID,"records":[...]}`, records as `Record.write` writes them)
    /// that `payload` carries: byte for byte what `BatchBuilder` makes of the same records.
    /// - Throws: `CompactBatchError` for text that is not a `compact/1` payload.
    public static func decode(_ payload: [UInt8]) throws(CompactBatchError) -> [UInt8] {
        var parser = CompactParser(bytes: payload)
        let top = try parser.parse()
        func fail(_ message: String, _ node: CompactParser.Node) -> CompactBatchError {
            CompactBatchError(offset: node.range.lowerBound, message: message)
        }
        guard case .object(let members) = top.kind else { throw fail("not an object", top) }
        func member(_ key: String) -> CompactParser.Node? {
            members.first { Array(payload[$0.key]) == Array("\"\(key)\"".utf8) }?.value
        }
        guard let format = member("format"), Array(payload[format.range]) == Array("\"compact/1\"".utf8) else {
            throw fail("format is not \"compact/1\"", top)
        }
        guard let gateway = member("gateway"), case .scalar = gateway.kind,
            payload[gateway.range.lowerBound] == UInt8(ascii: "\"")
        else { throw fail("no gateway", top) }
        guard let sourcesNode = member("sources"), case .array(let sourceNodes) = sourcesNode.kind,
            let recordsNode = member("records"), case .array(let recordNodes) = recordsNode.kind
        else { throw fail("sources and records must be arrays", top) }
        var sources: [[Range<Int>]] = []
        for node in sourceNodes {
            guard case .array(let names) = node.kind, !names.isEmpty,
                names.allSatisfy({ $0.isString(in: payload) })
            else { throw fail("a source is an array of its name and its point names", node) }
            sources.append(names.map(\.range))
        }
        var output = Array("{\"gateway\":".utf8) + payload[gateway.range] + Array(",\"records\":[".utf8)
        var seq: Int64 = 0
        var milliseconds: Int64 = 0
        for (index, node) in recordNodes.enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            switch node.kind {
            case .object:
                output += payload[node.range]
            case .array(let items):
                guard items.count >= 3, let dseq = items[0].integer(in: payload),
                    let dts = items[1].integer(in: payload), let source = items[2].integer(in: payload),
                    sources.indices.contains(Int(source)), items.count - 3 <= sources[Int(source)].count - 1
                else { throw fail("a row is [dseq,dts,source,slot...] with a listed source", node) }
                seq &+= dseq
                milliseconds &+= dts
                // RFC 3339 years 0000-9999 only.
                guard (-62_167_219_200_000...253_402_300_799_999).contains(milliseconds), seq >= 0 else {
                    throw fail("seq or time out of range", node)
                }
                let names = sources[Int(source)]
                output += "{\"seq\":".utf8
                JSON.writeDigits(UInt64(bitPattern: seq), to: &output)
                output += ",\"ts\":\"".utf8
                Timestamp(millisecondsSinceEpoch: milliseconds).write(to: &output, withMilliseconds: true)
                output += "\",\"kind\":\"sample\",\"source\":".utf8
                output += payload[names[0]]
                for wantErrors in [false, true] {
                    var first = true
                    for (offset, slot) in items.dropFirst(3).enumerated() {
                        let value: Range<Int>
                        switch slot.kind {
                        case .scalar:
                            guard !wantErrors, !payload[slot.range].elementsEqual("null".utf8) else { continue }
                            value = slot.range
                        case .array(let reason):
                            guard wantErrors else { continue }
                            guard reason.count == 1, reason[0].isString(in: payload) else {
                                throw fail("an error slot is [\"reason\"]", slot)
                            }
                            value = reason[0].range
                        case .object:
                            throw fail("a slot is null, a value or [\"reason\"]", slot)
                        }
                        output +=
                            first ? Array((wantErrors ? ",\"errors\":{" : ",\"values\":{").utf8) : [UInt8(ascii: ",")]
                        first = false
                        output += payload[names[offset + 1]]
                        output.append(UInt8(ascii: ":"))
                        output += payload[value]
                    }
                    if !first { output.append(UInt8(ascii: "}")) }
                }
                output.append(UInt8(ascii: "}"))
            case .scalar:
                throw fail("a record is a row (array) or a plain record (object)", node)
            }
        }
        output += "]}".utf8
        return output
    }
}

/// A JSON parser that keeps every value's byte range (so values are copied, never reprinted).
private struct CompactParser {
    struct Node {
        enum Kind {
            case scalar
            case array([Node])
            case object([(key: Range<Int>, value: Node)])
        }
        var kind: Kind
        var range: Range<Int>

        func isString(in bytes: [UInt8]) -> Bool {
            if case .scalar = kind { return bytes[range.lowerBound] == UInt8(ascii: "\"") }
            return false
        }

        /// An integer token (`-` and digits) as a signed 64-bit number.
        func integer(in bytes: [UInt8]) -> Int64? {
            guard case .scalar = kind else { return nil }
            return Int64(String(decoding: bytes[range], as: UTF8.self))
        }
    }

    let bytes: [UInt8]
    var index = 0
    var depth = 0

    mutating func parse() throws(CompactBatchError) -> Node {
        let node = try value()
        skipSpace()
        guard index == bytes.count else { throw fail("trailing characters") }
        return node
    }

    private func fail(_ message: String) -> CompactBatchError { CompactBatchError(offset: index, message: message) }

    private mutating func skipSpace() {
        while index < bytes.count, [9, 10, 13, 32].contains(bytes[index]) { index += 1 }
    }

    private mutating func value() throws(CompactBatchError) -> Node {
        skipSpace()
        guard index < bytes.count else { throw fail("unexpected end") }
        let start = index
        switch bytes[index] {
        case UInt8(ascii: "["), UInt8(ascii: "{"):
            depth += 1
            defer { depth -= 1 }
            guard depth <= JSONReader.maxDepth else { throw fail("nested too deep") }
            let isObject = bytes[index] == UInt8(ascii: "{")
            let close = isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
            index += 1
            var elements: [Node] = []
            var members: [(key: Range<Int>, value: Node)] = []
            skipSpace()
            if index < bytes.count, bytes[index] == close {
                index += 1
            } else {
                while true {
                    if isObject {
                        skipSpace()
                        let key = try value()
                        guard key.isString(in: bytes) else { throw fail("expected a key") }
                        skipSpace()
                        guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw fail("expected :") }
                        index += 1
                        members.append((key.range, try value()))
                    } else {
                        elements.append(try value())
                    }
                    skipSpace()
                    guard index < bytes.count else { throw fail("unexpected end") }
                    if bytes[index] == UInt8(ascii: ",") {
                        index += 1
                        continue
                    }
                    guard bytes[index] == close else { throw fail("expected , or \(isObject ? "}" : "]")") }
                    index += 1
                    break
                }
            }
            return Node(kind: isObject ? .object(members) : .array(elements), range: start..<index)
        case UInt8(ascii: "\""):
            index += 1
            while index < bytes.count, bytes[index] != UInt8(ascii: "\"") {
                index += bytes[index] == UInt8(ascii: "\\") ? 2 : 1
            }
            guard index < bytes.count else { throw fail("unterminated string") }
            index += 1
        default:
            while index < bytes.count, TokenReader.isNumberByte(bytes[index]) || (97...122).contains(bytes[index]) {
                index += 1
            }
            guard index > start else { throw fail("unexpected character") }
        }
        return Node(kind: .scalar, range: start..<index)
    }
}
