import CZlib

/// A failed zlib call, with zlib's return code (`Z_MEM_ERROR` -4, `Z_STREAM_ERROR` -2, ...).
public struct GzipError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var code: Int32

    public var description: String {
        let name: String
        switch code {
        case Z_MEM_ERROR: name = "out of memory"
        case Z_STREAM_ERROR: name = "invalid stream or level"
        case Z_BUF_ERROR: name = "output buffer too small"
        case Z_VERSION_ERROR: name = "zlib version mismatch"
        case Z_OK: name = "did not finish in one pass"
        default: name = "zlib error"
        }
        return "gzip \(operation): \(name) (zlib \(code))"
    }
}

/// gzip compression of batch payloads through zlib (`compression = "gzip"`).
public enum Gzip {
    /// The gzip member (magic 1f 8b) holding `bytes`. Throws `GzipError` with zlib's code when
    /// zlib fails (out of memory, a bad level). Wraps `deflateInit2`, `deflate` (`Z_FINISH`, one
    /// call into an output sized by `deflateBound`) and `deflateEnd`. Any thread.
    public static func compress(_ bytes: [UInt8], level: Int32 = 6) throws(GzipError) -> [UInt8] {
        var stream = z_stream()
        let initialised = railgate_deflate_init_gzip(&stream, level)
        guard initialised == Z_OK else { throw GzipError(operation: "deflateInit2", code: initialised) }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))) + 32)
        let status: Int32 = bytes.withUnsafeBytes { input in
            output.withUnsafeMutableBytes { target in
                stream.next_in = UnsafeMutablePointer(mutating: input.bindMemory(to: Bytef.self).baseAddress)
                stream.avail_in = uInt(input.count)
                stream.next_out = target.bindMemory(to: Bytef.self).baseAddress
                stream.avail_out = uInt(target.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else { throw GzipError(operation: "deflate", code: status) }
        return Array(output.prefix(Int(stream.total_out)))
    }
}
