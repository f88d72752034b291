import CModbus
import Glibc
import RailgateCore

/// The four data tables of one simulated slave (`modbus_mapping_t`), 65536 items each.
/// Owned by the serving thread: not thread-safe.
public final class ModbusDataBank {
    fileprivate let mapping: UnsafeMutablePointer<modbus_mapping_t>

    public init() throws(ModbusError) {
        guard let mapping = modbus_mapping_new(65536, 65536, 65536, 65536) else {
            throw ModbusError(kind: .setup, code: errno, operation: "allocate a Modbus register map")
        }
        self.mapping = mapping
    }

    deinit { modbus_mapping_free(mapping) }

    /// Writes `values` (registers, or 0/1 per bit) into `table` from `address`.
    public func set(_ table: RegisterTable, address: Int, _ values: [UInt16]) {
        for (offset, value) in values.enumerated() where address + offset < 65536 {
            let index = address + offset
            switch table {
            case .coil: mapping.pointee.tab_bits[index] = value != 0 ? 1 : 0
            case .discrete: mapping.pointee.tab_input_bits[index] = value != 0 ? 1 : 0
            case .input: mapping.pointee.tab_input_registers[index] = value
            case .holding: mapping.pointee.tab_registers[index] = value
            }
        }
    }

    /// Reads back `count` items of `table` from `address`.
    public func get(_ table: RegisterTable, address: Int, count: Int) -> [UInt16] {
        (address..<min(address + count, 65536)).map { index in
            switch table {
            case .coil: UInt16(mapping.pointee.tab_bits[index])
            case .discrete: UInt16(mapping.pointee.tab_input_bits[index])
            case .input: mapping.pointee.tab_input_registers[index]
            case .holding: mapping.pointee.tab_registers[index]
            }
        }
    }
}

/// A request a slave received, as the simulator's fault injection sees it.
public struct ModbusIndication: Sendable {
    public var unit: Int
    public var functionCode: UInt8
    public var address: Int
    public var count: Int

    /// The table a read function code addresses, if it is a read.
    public var readTable: RegisterTable? {
        switch functionCode {
        case 1: .coil
        case 2: .discrete
        case 3: .holding
        case 4: .input
        default: nil
        }
    }
}

/// What the simulator does with one request.
public enum ModbusResponse {
    /// Answer from the unit's data bank.
    case reply(ModbusDataBank)
    /// Answer with a Modbus exception code.
    case exception(UInt8)
    /// Say nothing: the master times out.
    case silence
    /// Answer from the bank, damaged on the wire (RTU only; a TCP slave stays silent instead).
    case damaged(ModbusDataBank, ReplyDamage)
}

/// How a simulated reply is damaged on the wire.
public enum ReplyDamage: String, Sendable {
    /// The CRC does not match (line noise).
    case badCRC = "crc"
    /// The reply stops halfway.
    case truncated = "short"
}

/// A Modbus TCP slave serving many unit ids and many clients on one thread, through libmodbus
/// (`modbus_receive` / `modbus_reply`). It blocks: run it on its own thread or process.
public final class ModbusTCPSlave {
    private let context: ModbusContext
    private let listener: Int32
    public let port: Int

    /// Listens on `host:port` (`modbus_tcp_pi_listen`).
    public init(host: String, port: Int) throws(ModbusError) {
        context = try ModbusContext(.tcp(host: host, port: port))
        let fd = modbus_tcp_pi_listen(context.handle, 16)
        guard fd >= 0 else {
            throw ModbusError.fromErrno(errno, operation: "listen on \(host):\(port)")
        }
        listener = fd
        // With port 0 the kernel picks one: report the real port so callers can announce it.
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        if bound == 0, Int32(address.ss_family) == AF_INET6 {
            self.port = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    Int(UInt16(bigEndian: $0.pointee.sin6_port))
                }
            }
        } else if bound == 0 {
            self.port = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
            }
        } else {
            self.port = port
        }
    }

    deinit { Glibc.close(listener) }

    /// Serves requests until `shouldStop` returns true, calling `tick` about every `tickMs`.
    /// `respond` decides, per request, which bank answers it (or an exception, or silence).
    public func serve(
        tickMs: Int, tick: () -> Void, shouldStop: () -> Bool, respond: (ModbusIndication) -> ModbusResponse
    ) {
        var clients: [Int32] = []
        var query = [UInt8](repeating: 0, count: 260)
        while !shouldStop() {
            var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
            fds += clients.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), Int32(tickMs))
            tick()
            guard ready > 0 else { continue }
            if fds[0].revents & Int16(POLLIN) != 0 {
                let client = accept(listener, nil, nil)
                if client >= 0 { clients.append(client) }
            }
            for entry in fds.dropFirst() where entry.revents != 0 {
                modbus_set_socket(context.handle, entry.fd)
                let length = query.withUnsafeMutableBufferPointer { modbus_receive(context.handle, $0.baseAddress) }
                if length <= 0 {
                    // -1: the client closed or sent garbage; 0: nothing for us.
                    if length == -1 {
                        Glibc.close(entry.fd)
                        clients.removeAll { $0 == entry.fd }
                    }
                    continue
                }
                let header = Int(modbus_get_header_length(context.handle))
                let indication = ModbusIndication(
                    unit: Int(query[header - 1]), functionCode: query[header],
                    address: Int(query[header + 1]) << 8 | Int(query[header + 2]),
                    count: Int(query[header + 3]) << 8 | Int(query[header + 4]))
                switch respond(indication) {
                case .reply(let bank):
                    _ = query.withUnsafeBufferPointer {
                        modbus_reply(context.handle, $0.baseAddress, length, bank.mapping)
                    }
                case .exception(let code):
                    _ = query.withUnsafeBufferPointer {
                        modbus_reply_exception(context.handle, $0.baseAddress, UInt32(code))
                    }
                case .silence, .damaged:
                    break
                }
            }
        }
        for client in clients { Glibc.close(client) }
    }
}
