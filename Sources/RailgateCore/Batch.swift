/// How much one batch may carry (`batch_max_records`, `batch_max_bytes`).
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
}

/// Assembles the telemetry payload `{"gateway":ID,"records":[...]}` from already-encoded
/// records. Pure: the uplink decides what goes in and when.
public struct BatchBuilder: Sendable {
    private let prefix: [UInt8]
    private static let suffix = Array("]}".utf8)

    public init(gatewayID: String) {
        var head = Array("{\"gateway\":".utf8)
        JSON.writeString(gatewayID, to: &head)
        head += ",\"records\":[".utf8
        prefix = head
    }

    /// Bytes of an empty batch's envelope.
    public var overhead: Int { prefix.count + BatchBuilder.suffix.count }

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
