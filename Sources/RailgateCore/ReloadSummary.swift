/// What a reload changed, in one line for the daemon's log, e.g.
/// `1 bus, 2 devices, 1 gate, 0 inputs; devices added: axlebox-2; gates changed: north-barrier;
/// upstream kept (the MQTT session stays up)`. Buses, devices, gates and inputs are matched by
/// name: added, removed, or changed (any setting, the profile's points included). Pure.
public enum ReloadSummary {
    /// The line for a reload from `old` to `new`; `upstreamKept` says whether the MQTT session
    /// stayed up (same upstream and gateway id) or was reconnected.
    public static func describe(from old: GatewayConfig, to new: GatewayConfig, upstreamKept: Bool) -> String {
        var parts = [
            [
                HumanFormat.count(new.buses.count, "bus", plural: "buses"),
                HumanFormat.count(new.devices.count, "device"),
                HumanFormat.count(new.gates.count, "gate"), HumanFormat.count(new.inputs.count, "input"),
            ].joined(separator: ", ")
        ]
        parts += changes("buses", old.buses, new.buses, name: \.name)
        parts += changes("devices", old.devices, new.devices, name: \.name)
        parts += changes("gates", old.gates, new.gates, name: \.name)
        parts += changes("inputs", old.inputs, new.inputs, name: \.name)
        if parts.count == 1 { parts.append("no bus, device, gate or input changed") }
        parts.append(
            new.upstream.endpoint == .none
                ? "no upstream (records stay in the buffer)"
                : upstreamKept ? "upstream kept (the MQTT session stays up)" : "upstream changed (a new MQTT session)")
        return parts.joined(separator: "; ")
    }

    /// "devices added: a, b", "devices removed: c", "devices changed: d", as there are any.
    private static func changes<T: Equatable>(_ kind: String, _ old: [T], _ new: [T], name: (T) -> String) -> [String] {
        let before = Dictionary(old.map { (name($0), $0) }, uniquingKeysWith: { first, _ in first })
        let after = Set(new.map(name))
        let added = new.map(name).filter { before[$0] == nil }
        let removed = old.map(name).filter { !after.contains($0) }
        let changed = new.filter { item in before[name(item)].map { $0 != item } ?? false }.map(name)
        return [("added", added), ("removed", removed), ("changed", changed)].compactMap { word, names in
            names.isEmpty ? nil : "\(kind) \(word): \(names.joined(separator: ", "))"
        }
    }
}
