/// One Modbus read request: a contiguous range of one table, and the points decoded from it.
public struct ReadRequest: Sendable, Equatable {
    public var table: RegisterTable
    public var address: Int
    public var count: Int
    /// Indices into the profile's points, in address order.
    public var pointIndices: [Int]

    public init(table: RegisterTable, address: Int, count: Int, pointIndices: [Int]) {
        self.table = table
        self.address = address
        self.count = count
        self.pointIndices = pointIndices
    }

    /// The request for some of this request's points: from the first one's address to the end
    /// of the last one.
    /// - Precondition: `indices` is a non-empty part of `pointIndices`, in address order.
    public func covering(_ indices: ArraySlice<Int>, of points: [PointDefinition]) -> ReadRequest {
        let start = points[indices.first!].address
        let end = indices.map { points[$0].address + points[$0].count }.max()!
        return ReadRequest(table: table, address: start, count: end - start, pointIndices: Array(indices))
    }

    /// The request cut in two near the middle of its address range, on a point boundary (each
    /// part a request for its points); nil for a request of one point. Used when a device
    /// refuses a read: halving finds a size limit, or one illegal address, in a few requests.
    public func halves(of points: [PointDefinition]) -> (ReadRequest, ReadRequest)? {
        guard pointIndices.count > 1 else { return nil }
        let middle = address + count / 2
        var cut = pointIndices.firstIndex { points[$0].address >= middle } ?? pointIndices.count - 1
        cut = min(max(cut, 1), pointIndices.count - 1)
        return (covering(pointIndices[..<cut], of: points), covering(pointIndices[cut...], of: points))
    }
}

/// The most registers and bits one read request may ask a device for: the protocol's limits
/// (125 registers, 2000 bits; Modbus application protocol 6.1-6.4), or a device's smaller ones
/// (`max_registers_per_request`, `max_bits_per_request`).
public struct RequestLimits: Sendable, Equatable {
    public var registers: Int
    public var bits: Int

    public init(
        registers: Int = RegisterTable.holding.maxItemsPerRequest, bits: Int = RegisterTable.coil.maxItemsPerRequest
    ) {
        self.registers = registers
        self.bits = bits
    }

    /// The protocol's limits.
    public static let protocolMaximum = RequestLimits()

    /// The limit for a table: bits for coils and discrete inputs, registers otherwise.
    public func items(for table: RegisterTable) -> Int { table.holdsBits ? bits : registers }
}

/// Plans the fewest read requests for a profile's points: per table, neighbours merged across
/// gaps of at most `maxGap` unused registers, within the per-request limits. Points that share a
/// register (the `bit` flags and `u8`/`i8` halves of one status register) cost that register once.
/// Pure; computed once per device.
public enum ReadPlanner {
    /// - Parameter including: which points to plan for (all by default; the poller plans its
    ///   `poll = "once"` points apart from the others). Indices stay those of `points`.
    public static func plan(
        _ points: [PointDefinition], maxGap: Int, limits: RequestLimits = .protocolMaximum,
        including: (PointDefinition) -> Bool = { _ in true }
    ) -> [ReadRequest] {
        var requests: [ReadRequest] = []
        for table in RegisterTable.allCases {
            let indices = points.indices.filter { points[$0].table == table && including(points[$0]) }
                .sorted { (points[$0].address, $0) < (points[$1].address, $1) }
            let limit = limits.items(for: table)
            var current: ReadRequest?
            for index in indices {
                let point = points[index]
                let end = point.address + point.count
                if var open = current {
                    let openEnd = open.address + open.count
                    let gap = point.address - openEnd
                    let mergedCount = max(openEnd, end) - open.address
                    if gap <= maxGap, mergedCount <= limit {
                        open.count = mergedCount
                        open.pointIndices.append(index)
                        current = open
                        continue
                    }
                    requests.append(open)
                }
                current = ReadRequest(table: table, address: point.address, count: point.count, pointIndices: [index])
            }
            if let open = current { requests.append(open) }
        }
        return requests
    }
}
