import CCrypto
import Glibc
import RailgateCore
import RailgateMQTT
import RailgateSystem

/// The broker checks: files readable, TLS certificates valid and not close to expiry, the broker
/// reachable, and (without a running daemon) a real MQTT CONNECT to see the credentials accepted.
enum DoctorUpstream {
    /// A certificate is reported as expiring soon when it has fewer days left than this.
    static let expiryWarningDays = 30

    static func check(_ config: GatewayConfig, daemon: JSON?, _ report: DoctorReport) {
        guard case .mqtt(let host, let port, let tls) = config.upstream.endpoint else {
            report.note(.ok, "upstream", "url = \"none\": buffering only")
            return
        }
        let subject = "upstream \(tls ? "mqtts" : "mqtt")://\(host):\(port)"
        var filesReadable = true
        for (key, file) in [
            ("password_file", config.upstream.passwordFile), ("ca_file", config.upstream.caFile),
            ("cert_file", config.upstream.certFile), ("key_file", config.upstream.keyFile),
        ] {
            if let file, access(file, R_OK) != 0 {
                filesReadable = false
                report.note(
                    .fail, subject, "\(key) \(file) cannot be read: \(String(cString: strerror(errno)))",
                    remedy: "install it readable by the railgate user")
            }
        }
        if tls && filesReadable { checkCertificates(config.upstream, subject: subject, report) }
        if let state = daemon?["upstream"]?["state"]?.stringValue {
            reportFromDaemon(daemon?["upstream"], state: state, subject: subject, report)
        }
        if let reason = TCPProbe.connect(host: host, port: port, timeoutMs: 3000) {
            report.note(
                .fail, subject, "cannot reach the broker: \(reason); records stay buffered",
                remedy: "check the broker runs, the modem/APN, DNS, the firewall and the url")
            return
        }
        report.note(.ok, subject, "the broker accepts TCP connections")
        if daemon == nil && filesReadable {
            probeSession(config.upstream, host: host, port: port, tls: tls, subject, report)
        }
    }

    private static func reportFromDaemon(_ upstream: JSON?, state: String, subject: String, _ report: DoctorReport) {
        let lastError = upstream?["last_error"]?.stringValue
        if state == "connected" {
            report.note(
                .ok, subject,
                "the daemon is connected, acknowledged through seq \(upstream?["acked_seq"]?.plainText ?? "?")")
            // A standing problem of the link: a client id taken over, records set aside.
            if let lastError { report.note(.warn, subject, lastError) }
        } else if state == "refused" {
            // The broker answered and said no: retrying will not mend it.
            report.note(
                .fail, subject, "\(lastError ?? "the broker refused the connection"); records stay buffered",
                remedy:
                    "fix what the broker names (credentials, client id, certificate), then systemctl restart railgate")
        } else {
            let error = lastError.map { " (\($0))" } ?? ""
            report.note(
                .warn, subject, "the daemon is \(state)\(error); records stay buffered until it connects")
        }
        if let count = upstream?["undeliverable"]?.intValue, count > 0 {
            report.note(
                .warn, subject,
                "\(DoctorText.plural(count, "record")) set aside as undeliverable (larger than the broker accepts)",
                remedy: "raise the broker's max_packet_size")
        }
    }

    // MARK: Certificates

    private static func checkCertificates(_ settings: UpstreamSettings, subject: String, _ report: DoctorReport) {
        var now = Int(time(nil))
        if let hooked = getenv(DoctorSystem.clockHook).flatMap({ Int(String(cString: $0)) }) { now = hooked }
        for (key, file) in [("ca_file", settings.caFile), ("cert_file", settings.certFile)] {
            guard let file else { continue }
            let certificate: Certificate
            do {
                certificate = try Certificate(file: file)
            } catch {
                report.note(
                    .fail, subject, "\(key) \(file): \(error)", remedy: "install a PEM certificate there")
                continue
            }
            let days = (certificate.notAfter - now) / 86400
            let named = "\(key) \(file) (\(certificate.subject))"
            if certificate.notAfter <= now {
                report.note(
                    .fail, subject,
                    "\(named) expired on \(day(certificate.notAfter)); the broker refuses the TLS handshake",
                    remedy: "install a renewed certificate (and key) at \(file), then systemctl restart railgate")
            } else if certificate.notBefore > now {
                report.note(
                    .fail, subject,
                    "\(named) is not valid before \(day(certificate.notBefore)); the clock reads \(day(now))",
                    remedy: "set the clock right (see the clock line) or install a certificate valid now")
            } else if days < expiryWarningDays {
                report.note(
                    .warn, subject,
                    "\(named) expires on \(day(certificate.notAfter)), \(days == 0 ? "within a day" : "in \(DoctorText.plural(days, "day"))")",
                    remedy: "renew it before then")
            } else {
                report.note(
                    .ok, subject,
                    "\(named) valid until \(day(certificate.notAfter)) (\(DoctorText.plural(days, "day")) left)")
            }
            if key == "cert_file", let keyFile = settings.keyFile {
                if let problem = certificate.matches(keyFile: keyFile) {
                    report.note(
                        .fail, subject, "key_file \(keyFile) \(problem)",
                        remedy: "install the key that belongs to \(file)")
                }
                if let caFile = settings.caFile, let problem = certificate.verify(caFile: caFile, at: now),
                    certificate.notAfter > now
                {
                    report.note(
                        .warn, subject, "cert_file \(file) does not verify against ca_file \(caFile): \(problem)",
                        remedy: "the broker may trust another CA than ca_file; check with its operator")
                }
            }
        }
    }

    private static func day(_ seconds: Int) -> String {
        String(Timestamp(millisecondsSinceEpoch: Int64(seconds) * 1000).secondsDescription.prefix(10))
    }

    // MARK: A real session

    /// Connects as the daemon would (client id with `-doctor` appended, so no daemon elsewhere is
    /// thrown off), waits up to 10 s for the CONNACK, and says what the broker answered.
    private static func probeSession(
        _ settings: UpstreamSettings, host: String, port: Int, tls: Bool, _ subject: String, _ report: DoctorReport
    ) {
        let outcome = SessionOutcome()
        let started = MonotonicInstant.now()
        do {
            let client = try MQTTClient(
                clientID: String((settings.clientID + "-doctor").prefix(23)), protocolVersion: settings.protocolVersion
            ) { event in outcome.take(event) }
            if let username = settings.username {
                try client.setCredentials(username: username, password: password(settings))
            }
            if tls {
                try client.setTLS(
                    MQTTTLS(caFile: settings.caFile, certFile: settings.certFile, keyFile: settings.keyFile))
            }
            try client.start(host: host, port: port, keepaliveSeconds: 30)
            let answer = outcome.wait(milliseconds: 10_000)
            client.disconnect()
            let took = DoctorText.duration(milliseconds: MonotonicInstant.now().milliseconds(since: started))
            switch answer {
            case .accepted:
                report.note(
                    .ok, subject,
                    "the broker accepted an MQTT session\(settings.username.map { " as \($0)" } ?? "")\(tls ? " over TLS" : "") (\(took))"
                )
            case .refused(let reason):
                report.note(
                    .fail, subject, "the broker refused the connection: \(reason)",
                    remedy: "check username and password (password_file), the client certificate and the broker's ACL")
            case .failed(let reason):
                report.note(
                    .fail, subject, "no MQTT session: \(reason)",
                    remedy: tls
                        ? "check ca_file, cert_file and key_file against what the broker requires, and the clock"
                        : "check the url and that the port speaks MQTT")
            case nil:
                report.note(
                    .fail, subject, "no CONNACK within \(took)",
                    remedy: "check the port speaks MQTT\(tls ? " over TLS" : "") and the firewall")
            }
        } catch {
            report.note(.fail, subject, "cannot set up an MQTT client: \(error)")
        }
    }

    /// The password as the daemon reads it: the first line of `password_file`, or of the systemd
    /// credential `mqtt-password` when doctor runs under the service's credentials.
    private static func password(_ settings: UpstreamSettings) -> String? {
        let file =
            settings.passwordFile
            ?? getenv("CREDENTIALS_DIRECTORY").map { String(cString: $0) + "/mqtt-password" }
        guard let file, let text = DoctorSystem.readText(file) else { return nil }
        return String(text.prefix { $0 != "\n" && $0 != "\r" })
    }
}

/// The first answer of a probe session, handed from libmosquitto's thread to doctor's.
private final class SessionOutcome: @unchecked Sendable {
    enum Answer {
        case accepted
        case refused(String)
        case failed(String)
    }

    private let lock = ConditionLock()
    private var answer: Answer?
    private var problems: [String] = []

    func take(_ event: MQTTEvent) {
        lock.withLock {
            switch event {
            case .connected(let code, let reason):
                if answer == nil { answer = code == 0 ? .accepted : .refused("\(reason) (CONNACK \(code))") }
            case .disconnected(let code, let reason) where code != 0:
                if answer == nil {
                    answer = .failed(([reason] + problems).joined(separator: "; "))
                }
            case .problem(let text):
                problems.append(text)
            default: return
            }
            lock.broadcast()
        }
    }

    func wait(milliseconds: Int) -> Answer? {
        let deadline = MonotonicInstant.now().adding(milliseconds: milliseconds)
        return lock.withLock {
            while answer == nil, MonotonicInstant.now() < deadline { lock.wait(until: deadline) }
            return answer
        }
    }
}

/// An X.509 certificate read with libcrypto (`PEM_read_bio_X509`): its subject and validity.
/// Owns the `X509` (freed in `deinit`). Not thread-safe.
final class Certificate {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    private let x509: OpaquePointer
    /// The subject, one line: `/CN=railgate-KZ-WAG-0042`.
    let subject: String
    /// Validity, seconds since 1970 (UTC).
    let notBefore: Int
    let notAfter: Int

    /// Reads the first PEM certificate in `file`.
    /// - Throws: `Failure` naming what libcrypto said (`BIO_new_file`, `PEM_read_bio_X509`).
    init(file: String) throws {
        guard let bio = BIO_new_file(file, "r") else { throw Failure(description: "cannot be opened") }
        defer { BIO_free(bio) }
        guard let x509 = PEM_read_bio_X509(bio, nil, nil, nil) else {
            throw Failure(description: "no PEM certificate in it (\(Self.lastError()))")
        }
        self.x509 = x509
        var name = [CChar](repeating: 0, count: 256)
        X509_NAME_oneline(X509_get_subject_name(x509), &name, Int32(name.count))
        subject = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        notBefore = Self.seconds(X509_get0_notBefore(x509)) ?? 0
        notAfter = Self.seconds(X509_get0_notAfter(x509)) ?? 0
    }

    deinit { X509_free(x509) }

    /// nil when the private key in `keyFile` belongs to this certificate (`X509_check_private_key`),
    /// else what is wrong.
    func matches(keyFile: String) -> String? {
        guard let bio = BIO_new_file(keyFile, "r") else { return "cannot be opened" }
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            return "holds no (unencrypted) PEM private key (\(Self.lastError()))"
        }
        defer { EVP_PKEY_free(key) }
        return X509_check_private_key(x509, key) == 1 ? nil : "does not belong to the certificate"
    }

    /// nil when the certificate verifies against the CAs in `caFile` at `at` (`X509_verify_cert`),
    /// else the reason libcrypto gives.
    func verify(caFile: String, at seconds: Int) -> String? {
        guard let store = X509_STORE_new() else { return "out of memory" }
        defer { X509_STORE_free(store) }
        guard X509_STORE_load_file(store, caFile) == 1 else { return "cannot load it (\(Self.lastError()))" }
        guard let context = X509_STORE_CTX_new() else { return "out of memory" }
        defer { X509_STORE_CTX_free(context) }
        guard X509_STORE_CTX_init(context, store, x509, nil) == 1 else { return Self.lastError() }
        X509_STORE_CTX_set_time(context, 0, time_t(seconds))
        if X509_verify_cert(context) == 1 { return nil }
        return String(cString: X509_verify_cert_error_string(Int(X509_STORE_CTX_get_error(context))))
    }

    private static func seconds(_ time: UnsafePointer<ASN1_TIME>?) -> Int? {
        guard let time else { return nil }
        var parts = tm()
        guard ASN1_TIME_to_tm(time, &parts) == 1 else { return nil }
        return Int(timegm(&parts))
    }

    private static func lastError() -> String {
        let code = ERR_get_error()
        guard code != 0 else { return "no reason given" }
        var text = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &text, text.count)
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
