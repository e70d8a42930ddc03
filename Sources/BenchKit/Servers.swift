import Foundation

/// A server under test, started as its own process (pinned to a core when `taskset` exists)
/// and stopped by its PID.
public final class ServerProcess: @unchecked Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case estuary
        case nginx = "nginx-rtmp"
    }

    public struct Options: Sendable {
        public var hls = false
        /// Estuary only: also write HLS files (the like-for-like row with nginx-rtmp's tmpfs files).
        public var hlsOnDisk = false
        public var cpu: Int?
        public init(hls: Bool = false, hlsOnDisk: Bool = false, cpu: Int? = nil) {
            self.hls = hls
            self.hlsOnDisk = hlsOnDisk
            self.cpu = cpu
        }
    }

    public let kind: Kind
    public let rtmpPort: Int
    public let httpPort: Int
    /// Where HLS files are (nginx-rtmp, or Estuary with `hlsOnDisk`).
    public let hlsDirectory: String
    private let process: Process
    private let workDirectory: String

    public var pid: Int32 { process.processIdentifier }

    public init(_ kind: Kind, options: Options, estuaryBinary: String, estuaryArguments: [String] = []) throws {
        self.kind = kind
        rtmpPort = try freePort()
        httpPort = try freePort()
        // tmpfs when there is one: disk speed is not what is measured.
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        workDirectory = "\(base)/estuary-bench-\(kind.rawValue)-\(UUID().uuidString.prefix(8))"
        hlsDirectory = workDirectory + "/hls"
        try FileManager.default.createDirectory(atPath: hlsDirectory, withIntermediateDirectories: true)
        // nginx's workers drop root for nobody and must still write the HLS files.
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: workDirectory)
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: hlsDirectory)

        var command: [String]
        switch kind {
        case .estuary:
            command = [estuaryBinary, "serve", "--bind", "127.0.0.1", "--rtmp-port", "\(rtmpPort)",
                       "--http-port", "\(httpPort)", "--data-dir", workDirectory + "/data", "--log-level", "warning"]
            if options.hlsOnDisk { command += ["--hls-path", hlsDirectory] }
            command += estuaryArguments
        case .nginx:
            let configuration = Self.nginxConfiguration(rtmpPort: rtmpPort, httpPort: httpPort, hls: options.hls,
                                                        hlsDirectory: hlsDirectory, workDirectory: workDirectory)
            try configuration.write(toFile: workDirectory + "/nginx.conf", atomically: true, encoding: .utf8)
            command = ["/usr/sbin/nginx", "-p", workDirectory + "/", "-c", workDirectory + "/nginx.conf"]
        }
        if let cpu = options.cpu, FileManager.default.isExecutableFile(atPath: "/usr/bin/taskset") {
            command = ["/usr/bin/taskset", "-c", "\(cpu)"] + command
        }
        process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    /// Waits until both ports accept connections.
    public func waitUntilReady(timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        for port in [rtmpPort, httpPort] {
            while !canConnect(port: port) {
                guard process.isRunning else { throw BenchError.serverExited(kind.rawValue, process.terminationStatus) }
                guard ContinuousClock.now < deadline else { throw BenchError.serverNotReady(kind.rawValue) }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: workDirectory)
    }

    static func nginxConfiguration(rtmpPort: Int, httpPort: Int, hls: Bool, hlsDirectory: String,
                                   workDirectory: String) -> String {
        let hlsDirectives = hls ? """
                    hls on;
                    hls_path \(hlsDirectory);
                    hls_nested on;
                    hls_fragment 2s;
                    hls_playlist_length 12s;
            """ : ""
        return """
            load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
            daemon off;
            master_process on;
            worker_processes 1;
            error_log \(workDirectory)/error.log warn;
            pid \(workDirectory)/nginx.pid;
            events { worker_connections 8192; }
            rtmp {
                server {
                    listen 127.0.0.1:\(rtmpPort);
                    chunk_size 4096;
                    application live {
                        live on;
            \(hlsDirectives)
                    }
                }
            }
            http {
                access_log off;
                sendfile on;
                server {
                    listen 127.0.0.1:\(httpPort);
                    location /live/ {
                        alias \(hlsDirectory)/;
                        types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
                        add_header Cache-Control no-cache;
                    }
                }
            }

            """
    }
}

public enum BenchError: Error, CustomStringConvertible {
    case serverExited(String, Int32)
    case serverNotReady(String)
    case noFreePort
    case tool(String)

    public var description: String {
        switch self {
        case .serverExited(let name, let status): "\(name) exited with status \(status) before it was ready"
        case .serverNotReady(let name): "\(name) did not open its ports in time"
        case .noFreePort: "no free loopback port"
        case .tool(let why): why
        }
    }
}

/// A loopback port nobody listens on right now.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw BenchError.noFreePort }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    guard bound else { throw BenchError.noFreePort }
    return Int(UInt16(bigEndian: address.sin_port))
}

func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}
