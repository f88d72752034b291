import CModbus
import Glibc
import RailgateCore

/// What went wrong in a Modbus call, with the C error kept for the log line.
public struct ModbusError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kinds of failure a poller reacts to differently.
    public enum Kind: Sendable, Equatable {
        /// No (complete) answer within the response timeout.
        case timeout
        /// The slave answered with a Modbus exception (1 illegal function, 2 illegal address, ...).
        case exception(UInt8)
        /// CRC mismatch on an RTU frame.
        case crc
        /// A reply that was short, malformed or from the wrong slave.
        case badReply
        /// The TCP connection was refused, reset or closed; the serial device failed.
        case connection
        /// Opening the context or device failed (bad device path, permission, no such host).
        case setup
    }

    public var kind: Kind
    /// The errno (or libmodbus code above MODBUS_ENOBASE) that was read right after the call.
    public var code: Int32
    /// What was being done: "read 10 input registers at 0 from unit 7 on tcp 127.0.0.1:1502".
    public var operation: String

    public var description: String {
        "\(operation): \(String(cString: modbus_strerror(code))) (\(code))"
    }

    /// The reason a sample's `errors` carries for this failure.
    public var readFailure: ReadFailure {
        switch kind {
        case .timeout: .timeout
        case .exception(let code): .exception(code)
        case .crc: .crc
        case .badReply, .connection, .setup: .io
        }
    }

    static func fromErrno(_ code: Int32, operation: String) -> ModbusError {
        let kind: Kind
        switch code {
        case ETIMEDOUT, EAGAIN: kind = .timeout
        case railgate_modbus_embbadcrc: kind = .crc
        case railgate_modbus_embbaddata, railgate_modbus_embmdata, railgate_modbus_embbadslave,
            railgate_modbus_embbadexc, railgate_modbus_embunkexc:
            kind = .badReply
        case (railgate_modbus_enobase + 1)...(railgate_modbus_enobase + 11):
            kind = .exception(UInt8(code - railgate_modbus_enobase))
        default: kind = .connection
        }
        return ModbusError(kind: kind, code: code, operation: operation)
    }
}

/// Where a Modbus master connects.
public enum ModbusEndpoint: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case rtu(device: String, baud: Int, parity: BusTransport.Parity, dataBits: Int, stopBits: Int)

    public init(_ transport: BusTransport) {
        switch transport {
        case .tcp(let host, let port): self = .tcp(host: host, port: port)
        case .rtu(let device, let baud, let parity, let dataBits, let stopBits):
            self = .rtu(device: device, baud: baud, parity: parity, dataBits: dataBits, stopBits: stopBits)
        }
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): "tcp \(host):\(port)"
        case .rtu(let device, let baud, let parity, let dataBits, let stopBits):
            "rtu \(device) \(baud) \(dataBits)\(parity.rawValue.first!.uppercased())\(stopBits)"
        }
    }
}

/// Owns one libmodbus context (`modbus_t`): frees it in `deinit`, refuses use after `close()`.
/// Not thread-safe: one bus poller owns it and calls it from its own thread (the calls block).
final class ModbusContext {
    private var context: OpaquePointer?

    init(_ endpoint: ModbusEndpoint) throws(ModbusError) {
        switch endpoint {
        case .tcp(let host, let port):
            context = modbus_new_tcp_pi(host, String(port))
        case .rtu(let device, let baud, let parity, let dataBits, let stopBits):
            let parityCode: UInt8 =
                switch parity {
                case .none: UInt8(ascii: "N")
                case .even: UInt8(ascii: "E")
                case .odd: UInt8(ascii: "O")
                }
            context = modbus_new_rtu(
                device, Int32(baud), CChar(bitPattern: parityCode), Int32(dataBits), Int32(stopBits))
        }
        guard context != nil else {
            throw ModbusError(kind: .setup, code: errno, operation: "create a Modbus context for \(endpoint)")
        }
    }

    deinit {
        if let context {
            modbus_close(context)
            modbus_free(context)
        }
    }

    /// The live C handle; traps on use after `close()` (a programming error).
    var handle: OpaquePointer {
        guard let context else { preconditionFailure("Modbus context used after close") }
        return context
    }

    func close() {
        guard let context else { return }
        modbus_close(context)
        modbus_free(context)
        self.context = nil
    }
}

/// A Modbus master connection over TCP or RTU through libmodbus.
///
/// Every call blocks up to the response timeout: use it from a dedicated thread, never from
/// Swift's cooperative pool. Errors are `ModbusError` with the C code kept.
public final class ModbusConnection {
    public let endpoint: ModbusEndpoint
    private let context: ModbusContext
    public private(set) var isConnected = false

    /// Creates the context and sets timeouts; does not connect yet.
    /// - Parameters:
    ///   - responseTimeoutMs: how long to wait for a reply (`modbus_set_response_timeout`).
    ///   - byteTimeoutMs: the longest silence inside a frame (`modbus_set_byte_timeout`); nil keeps libmodbus's.
    public init(endpoint: ModbusEndpoint, responseTimeoutMs: Int, byteTimeoutMs: Int? = nil) throws(ModbusError) {
        self.endpoint = endpoint
        context = try ModbusContext(endpoint)
        let handle = context.handle
        modbus_set_response_timeout(handle, UInt32(responseTimeoutMs / 1000), UInt32(responseTimeoutMs % 1000 * 1000))
        if let byteTimeoutMs {
            modbus_set_byte_timeout(handle, UInt32(byteTimeoutMs / 1000), UInt32(byteTimeoutMs % 1000 * 1000))
        }
        // No automatic link/protocol recovery: libmodbus would sleep and flush for a whole extra
        // timeout on every error (FACTS: 1.0 s instead of 0.5 s); the poller decides what to do.
        modbus_set_error_recovery(handle, MODBUS_ERROR_RECOVERY_NONE)
        if case .rtu = endpoint {
            // RS-485 mode where the port supports it; a pty or an RS-232 adapter refuses, which is fine.
            _ = modbus_rtu_set_serial_mode(handle, Int32(MODBUS_RTU_RS485))
        }
    }

    /// Opens the TCP connection or the serial device (`modbus_connect`).
    public func connect() throws(ModbusError) {
        guard !isConnected else { return }
        if modbus_connect(context.handle) == -1 {
            throw ModbusError.fromErrno(errno, operation: "connect to \(endpoint)")
        }
        isConnected = true
    }

    /// Closes the socket or device; the next read reconnects.
    public func disconnect() {
        guard isConnected else { return }
        modbus_close(context.handle)
        isConnected = false
    }

    /// Reads `count` registers or bits of `table` at `address` from `unit`, connecting first if needed.
    /// Bits come back as 0 or 1, one per element. A connection-level failure closes the
    /// connection so that the next call reconnects.
    public func read(_ table: RegisterTable, unit: Int, address: Int, count: Int) throws(ModbusError) -> [UInt16] {
        try connect()
        let handle = context.handle
        modbus_set_slave(handle, Int32(unit))
        let result: Int32
        var registers: [UInt16]
        if table.holdsBits {
            var bits = [UInt8](repeating: 0, count: count)
            result = bits.withUnsafeMutableBufferPointer { buffer in
                table == .coil
                    ? modbus_read_bits(handle, Int32(address), Int32(count), buffer.baseAddress)
                    : modbus_read_input_bits(handle, Int32(address), Int32(count), buffer.baseAddress)
            }
            registers = bits.map { UInt16($0 != 0 ? 1 : 0) }
        } else {
            registers = [UInt16](repeating: 0, count: count)
            result = registers.withUnsafeMutableBufferPointer { buffer in
                table == .holding
                    ? modbus_read_registers(handle, Int32(address), Int32(count), buffer.baseAddress)
                    : modbus_read_input_registers(handle, Int32(address), Int32(count), buffer.baseAddress)
            }
        }
        if result == -1 {
            let error = ModbusError.fromErrno(
                errno, operation: "read \(count) \(table.rawValue) at \(address) from unit \(unit) on \(endpoint)")
            switch error.kind {
            case .connection:
                disconnect()
            case .timeout, .crc, .badReply:
                // Late or garbled bytes may still arrive and be taken for the next reply: drop them.
                if case .tcp = endpoint { disconnect() } else { modbus_flush(handle) }
            case .exception, .setup:
                break
            }
            throw error
        }
        guard result == Int32(count) else {
            throw ModbusError(
                kind: .badReply, code: railgate_modbus_embbaddata,
                operation: "read \(count) \(table.rawValue) at \(address) from unit \(unit): got \(result)")
        }
        return registers
    }
}
