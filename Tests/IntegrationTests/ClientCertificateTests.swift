import Foundation
import RailgateCore
import Testing

@Suite("Client certificate refused", .serialized)
struct ClientCertificateTests {
    @Test(
        "a client certificate the broker refuses: named in status, doctor and once in the log, records buffered, no loop; a good one delivers every record",
        .enabled(if: FileManager.default.fileExists(atPath: "/usr/bin/openssl"), "needs openssl for test certificates"))
    func refusedCertificate() throws {
        let scratch = Scratch()
        // ca.pem signs the broker's certificate; other-ca.pem is a self-signed certificate from
        // "some other CA" with its key: a client certificate the broker's CA does not vouch for.
        let files = try TLSTests().certificates(scratch)
        let broker = try Broker(scratch: scratch, tls: files, tlsOptions: ["require_certificate true"])
        let tlsPort = try #require(broker.tlsPort)
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/KZ-WAG-LIMITS/telemetry")
        let sim = try wagon(scratch)
        func config(certificate: String, key: String) throws -> String {
            let text = try String(
                contentsOfFile: brokerLimitsConfig(
                    scratch: scratch, brokerPort: tlsPort, wagonPort: sim.port,
                    upstream: [
                        "ca_file = \"\(files.ca)\"", "cert_file = \"\(certificate)\"", "key_file = \"\(key)\"",
                    ]),
                encoding: .utf8)
            return scratch.write(
                "certificate-\(UUID().uuidString.prefix(4)).toml",
                text.replacingOccurrences(of: "mqtt://127.0.0.1:", with: "mqtts://127.0.0.1:"))
        }
        let refused = try config(certificate: scratch.path + "/other-ca.pem", key: scratch.path + "/other.key")
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", refused], scratch: scratch, name: "gw1")
        let reason = try eventually("the refused certificate in the status", seconds: 30, intervalMs: 200) {
            () -> String? in
            let upstream = try daemonStatus(scratch)["upstream"] ?? .null
            guard let text = upstream["last_error"]?.stringValue, text.contains("client certificate") else {
                return nil
            }
            #expect(upstream["state"] != .string("connected"), "\(upstream.serialized)")
            return text
        }
        #expect(reason.contains("other-ca.pem"), "the certificate is named: \(reason)")
        let firstAttempts = occurrences(of: "New connection from", in: broker.log)
        let watchStart = Date()
        usleep(7_000_000)
        let attempts = occurrences(of: "New connection from", in: broker.log) - firstAttempts
        let watched = Date().timeIntervalSince(watchStart)
        // 1 s, 2 s, 4 s, 5 s, each at most 20 % shorter: no more than one attempt per 0.8 s.
        #expect(attempts >= 1 && Double(attempts) <= watched / 0.8 + 1, "\(attempts) attempts in \(watched) s")
        let status = try daemonStatus(scratch)
        #expect((status["buffer"]?["records"]?.intValue ?? 0) >= 10, "records stay buffered")
        #expect(status["upstream"]?["state"] != .string("connected"))
        let doctor = try doctorOutput(refused, scratch: scratch)
        #expect(doctor.contains("client certificate"), "doctor: \(doctor)")
        #expect(occurrences(of: "client certificate", in: daemonLog(gateway)) == 1, "\(daemonLog(gateway))")
        #expect(subscriber.records.isEmpty)
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)

        // A client certificate the broker's CA signed: every record buffered meanwhile arrives.
        let path = scratch.path
        for arguments in [
            [
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(path)/client.key", "-out", "\(path)/client.csr",
                "-subj", "/CN=KZ-WAG-LIMITS",
            ],
            [
                "x509", "-req", "-in", "\(path)/client.csr", "-CA", files.ca, "-CAkey", "\(path)/ca.key",
                "-CAcreateserial", "-out", "\(path)/client.pem", "-days", "1",
            ],
        ] {
            let result = try TestProcess.run("/usr/bin/openssl", arguments, scratch: scratch)
            #expect(result.status == 0, "openssl \(arguments[0]): \(result.error)")
        }
        let good = try config(certificate: path + "/client.pem", key: path + "/client.key")
        let second = try TestProcess(Binaries.railgate, ["run", "--config", good], scratch: scratch, name: "gw2")
        _ = try eventually("connected with a good certificate", seconds: 30, intervalMs: 200) { () -> Void? in
            try daemonStatus(scratch)["upstream"]?["state"] == .string("connected") ? () : nil
        }
        let made = try #require(try daemonStatus(scratch)["buffer"]?["next_seq"]?.intValue) - 1
        try subscriber.waitUntil(seconds: 60) { _ in Set(seqs(subscriber.records)).isSuperset(of: Set(1...made)) }
        second.signal(SIGTERM)
        #expect(try second.waitForExit() == 0)
        print("client certificate refused: \(reason)")
    }
}
