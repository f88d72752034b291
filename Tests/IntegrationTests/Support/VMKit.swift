import Foundation

/// The VM kit (kernel, initramfs packer, qemu runner) the tests that need a kernel boot:
/// `$RAILGATE_VM_KIT`, else `shared/vm` next to the repository (as CI lays it out), else
/// `/work/shared/vm`; the first that holds a kernel, or nil.
enum VMKit {
    static let path: String? = {
        let environment = ProcessInfo.processInfo.environment
        let candidates =
            [environment["RAILGATE_VM_KIT"], projectRoot + "/../shared/vm", "/work/shared/vm"].compactMap { $0 }
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/bzImage") }
            .map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    }()
}
