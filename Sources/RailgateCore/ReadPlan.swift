/// One Modbus read request: a contiguous range of one table, and the points decoded from it.
public struct ReadRequest: Sendable, Equatable {
    public var table: RegisterTable
    public var address: Int
    public var count: Int
    /// Indices into the profile's points, in address order.
    public var pointIndices: [Int]
}

/// Plans the fewest read requests for a profile's points: per table, neighbours merged across
/// gaps of at most `maxGap` unused registers, within the per-request limit (125 registers,
/// 2000 bits). Pure; computed once per device.
public enum ReadPlanner {
    public static func plan(_ points: [PointDefinition], maxGap: Int) -> [ReadRequest] {
        var requests: [ReadRequest] = []
        for table in RegisterTable.allCases {
            let indices = points.indices.filter { points[$0].table == table }
                .sorted { (points[$0].address, $0) < (points[$1].address, $1) }
            var current: ReadRequest?
            for index in indices {
                let point = points[index]
                let end = point.address + point.count
                if var open = current {
                    let openEnd = open.address + open.count
                    let gap = point.address - openEnd
                    let mergedCount = max(openEnd, end) - open.address
                    if gap <= maxGap, mergedCount <= table.maxItemsPerRequest {
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
