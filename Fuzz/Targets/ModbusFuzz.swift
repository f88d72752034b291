/// libFuzzer target `modbus-fuzz`: Modbus reply matching (ModbusReplyHarness, Tests/FuzzTests/Harness).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzModbusReplies(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzEntry.run(data, size, ModbusReplyHarness.check)
}
