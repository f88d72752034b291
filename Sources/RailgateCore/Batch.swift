/// Assembles the telemetry payload `{"gateway":ID,"records":[...]}` from already-encoded
/// records, within the batch limits. Pure: the uplink decides when to call it.
public struct BatchLimits: Sendable, Equatable {
    public var maxRecords: Int
    public var maxBytes: Int

    public init(maxRecords: Int, maxBytes: Int) {
        self.maxRecords = maxRecords
        self.maxBytes = maxBytes
    }
}

/// A batch ready to publish: its payload and the sequence numbers it carries.
public struct Batch: Sendable, Equatable {
    public var payload: [UInt8]
    public var seqs: [UInt64]

    public var firstSeq: UInt64? { seqs.first }
    public var lastSeq: UInt64? { seqs.last }
}

/// Builds batches for one gateway.
public struct BatchBuilder: Sendable {
    private let prefix: [UInt8]
    private static let suffix = Array("]}".utf8)

    public init(gatewayID: String) {
        var head = ""
        head += "{\"gateway\":"
        JSON.writeString(gatewayID, to: &head)
        head += ",\"records\":["
        prefix = Array(head.utf8)
    }

    /// Bytes of an empty batch's envelope.
    public var overhead: Int { prefix.count + BatchBuilder.suffix.count }

    /// How many of `records` (in order) fit in one batch: at most `maxRecords`, and within
    /// `maxBytes` unless the first record alone is larger (it then travels alone rather than never).
    public func count(fitting records: some Sequence<[UInt8]>, limits: BatchLimits) -> Int {
        var size = overhead
        var count = 0
        for record in records {
            guard count < limits.maxRecords else { break }
            let added = record.count + (count > 0 ? 1 : 0)
            if count > 0, size + added > limits.maxBytes { break }
            size += added
            count += 1
        }
        return count
    }

    /// The batch carrying `records` (each an encoded record with its seq).
    public func batch(of records: [(seq: UInt64, bytes: [UInt8])]) -> Batch {
        var payload = prefix
        payload.reserveCapacity(overhead + records.reduce(records.count) { $0 + $1.bytes.count })
        for (index, record) in records.enumerated() {
            if index > 0 { payload.append(UInt8(ascii: ",")) }
            payload += record.bytes
        }
        payload += BatchBuilder.suffix
        return Batch(payload: payload, seqs: records.map(\.seq))
    }
}
