/// libFuzzer target: any bytes through the TOML reader must parse or throw `TOMLSyntaxError`,
/// never crash, overflow the stack or take more than linear time.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTOML(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    _ = try? TOMLParser.parse(bytes: bytes)
    return 0
}
