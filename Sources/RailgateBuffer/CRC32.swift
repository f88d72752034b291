import CZlib

/// CRC-32 (IEEE 802.3, as zlib and gzip compute it) over buffer frames, so that torn or
/// flipped bytes are never returned as data. zlib's `crc32` is table-driven and fast.
enum CRC32 {
    /// Continues `crc` (0 to start) over `bytes`.
    static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return UInt32(crc32(uLong(crc), base.assumingMemoryBound(to: Bytef.self), uInt(bytes.count)))
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 { bytes.withUnsafeBytes { update(0, $0) } }
}
