import Glibc
import RailgateBuffer
import RailgateCore
import RailgateSystem

/// Serves Prometheus text at `GET /metrics` on `[metrics] listen` (HOST:PORT); anything else gets
/// 404 or 400. Kept tiny on purpose: no HTTP library for one read-only page. Served by a pool of
/// 4 threads (`ConnectionServer`); a client has a second to send its request line (however it is
/// cut into packets), so clients that trickle bytes or hold half a request hold one thread for
/// at most a second each, and a stop waits for none of them longer than 200 ms.
final class MetricsServer: @unchecked Sendable {
    private let host: String
    private let port: Int
    private let render: @Sendable () -> String
    private var server: ConnectionServer?

    init(listen: String, render: @escaping @Sendable () -> String) {
        let (host, port) = HostPort.split(listen, defaultPort: 9105) ?? ("127.0.0.1", 9105)
        self.host = host
        self.port = port
        self.render = render
    }

    /// Listens and serves on a thread supervised by `supervisor`.
    /// - Throws: `ControlSocketError` if it cannot listen, `ThreadError` if no thread could be created.
    func start(supervisor: Supervisor? = nil) throws {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else {
            throw ControlSocketError(operation: "resolve", path: "\(host):\(port)", code: EINVAL)
        }
        defer { freeaddrinfo(result) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard fd >= 0, bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0, listen(fd, 8) == 0 else {
            let code = errno
            if fd >= 0 { close(fd) }
            throw ControlSocketError(operation: "listen on", path: "\(host):\(port)", code: code)
        }
        let server = ConnectionServer(listener: fd, timeoutSeconds: 1)
        do {
            try server.start(name: "metrics", supervisor: supervisor) { [self] client in answer(client) }
        } catch {
            close(fd)
            throw error
        }
        self.server = server
    }

    func stop() {
        server?.stop()
        server = nil
    }

    /// The request line (up to CR or LF, at most 2 KiB) sent before the client's deadline; what
    /// came when the deadline, a stop or the 2 KiB end it.
    static func requestLine(_ client: ClientConnection) -> String {
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while request.count < 2048, !request.contains(10), !request.contains(13) {
            guard let count = chunk.withUnsafeMutableBytes({ client.receive(into: $0) }), count > 0 else { break }
            request += chunk[0..<count]
        }
        return String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
    }

    private func answer(_ connection: ClientConnection) {
        let client = connection.fd
        let line = Self.requestLine(connection)
        let response: String
        if line.hasPrefix("GET /metrics ") || line == "GET /metrics" {
            let body = render()
            response =
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n"
                + body
        } else if line.hasPrefix("GET ") {
            response = "HTTP/1.0 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n"
        } else {
            response = "HTTP/1.0 400 Bad Request\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad request\n"
        }
        ConnectedSocket.send(fd: client, response)
    }
}

/// The Prometheus exposition of the gateway's counters and gauges.
enum MetricsText {
    static func render(
        buffer: BufferStats, buses: [BusStatus], upstream: UplinkStatus?, droppedInMemory: Int = 0
    ) -> String {
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) \(type)")
            for sample in samples {
                lines.append("\(name)\(sample.labels.isEmpty ? "" : "{\(sample.labels)}") \(sample.value)")
            }
        }
        func label(_ key: String, _ value: String) -> String {
            var escaped = ""
            for character in value {
                if character == "\\" || character == "\"" { escaped.append("\\") }
                escaped.append(character == "\n" ? "n" : character)
            }
            return "\(key)=\"\(escaped)\""
        }
        metric(
            "railgate_buffer_records", "gauge", "Records buffered and not yet acknowledged upstream.",
            [("", "\(buffer.records)")])
        metric("railgate_buffer_bytes", "gauge", "Bytes of the buffer's files.", [("", "\(buffer.bytes)")])
        metric(
            "railgate_buffer_max_bytes", "gauge", "The buffer's capacity (buffer.max_bytes).",
            [("", "\(buffer.maxBytes)")])
        metric("railgate_buffer_next_seq", "gauge", "The seq the next record gets.", [("", "\(buffer.nextSeq)")])
        metric(
            "railgate_buffer_dropped_total", "counter", "Records dropped because the buffer was full.",
            [
                (label("priority", "normal"), "\(buffer.droppedNormal)"),
                (label("priority", "alarm"), "\(buffer.droppedAlarm)"),
            ])
        metric(
            "railgate_buffer_dropped_in_memory_total", "counter",
            "Records dropped while held in memory because the disk refused writes for too long.",
            [("", "\(droppedInMemory)")])
        metric(
            "railgate_buffer_lost_records_total", "counter",
            "Records known lost since start (damaged or unreadable buffer files); reported upstream.",
            [("", "\(buffer.lostRecords)")])
        metric(
            "railgate_buffer_lost_seqs_total", "counter",
            "Seqs that will never arrive, found since start (lost records and seqs reserved but not handed out "
                + "before a power cut); reported upstream as records_lost events.",
            [("", "\(buffer.lostSeqs)")])
        metric(
            "railgate_bus_utilisation_ratio", "gauge", "Share of time the bus spends in requests.",
            buses.map { (label("bus", $0.name), "\($0.utilisation)") })
        let devices = buses.flatMap { bus in bus.devices.map { (bus: bus.name, name: $0.name, stats: $0.stats) } }
        metric(
            "railgate_device_polls_total", "counter", "Polls of each device.",
            devices.map { (label("device", $0.name) + "," + label("bus", $0.bus), "\($0.stats.polls)") })
        metric(
            "railgate_device_poll_errors_total", "counter", "Polls in which a point could not be read.",
            devices.map { (label("device", $0.name) + "," + label("bus", $0.bus), "\($0.stats.errors)") })
        metric(
            "railgate_device_requests_total", "counter", "Modbus requests sent to each device.",
            devices.map { (label("device", $0.name) + "," + label("bus", $0.bus), "\($0.stats.requests)") })
        metric(
            "railgate_device_answering", "gauge", "1 if the device answered its last poll.",
            devices.map {
                (label("device", $0.name) + "," + label("bus", $0.bus), $0.stats.consecutiveFailures == 0 ? "1" : "0")
            })
        if let upstream {
            metric(
                "railgate_upstream_connected", "gauge", "1 while connected to the broker.",
                [("", upstream.state == "connected" ? "1" : "0")])
            metric(
                "railgate_upstream_acked_seq", "gauge", "Everything up to this seq was acknowledged by the broker.",
                [("", "\(upstream.ackedSeq)")])
            metric(
                "railgate_upstream_batches_total", "counter", "Batches acknowledged by the broker.",
                [("", "\(upstream.batches)")])
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
