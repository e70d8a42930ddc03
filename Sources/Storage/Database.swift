public import FluentKit
import FluentSQL
import FluentPostgresDriver
import FluentSQLiteDriver
import Foundation
public import Logging
public import NIOCore
import NIOPosix

/// Where the database lives: a SQLite file (the embedded default) or a PostgreSQL server.
public enum DatabaseLocation: Sendable, Equatable, CustomStringConvertible {
    case sqlite(path: String)
    case postgres(url: String)

    public struct InvalidURL: Error, CustomStringConvertible {
        public let description: String
    }

    /// `postgres://user:pass@host:port/db?tlsmode=disable` (or `postgresql://`), or `sqlite:///abs/path.db`.
    public init(url: String) throws(InvalidURL) {
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            guard let parsed = URL(string: url), parsed.host != nil else {
                throw InvalidURL(description: "database URL '\(Self.redacted(url))' has no host")
            }
            self = .postgres(url: url)
        } else if url.hasPrefix("sqlite://") {
            let path = String(url.dropFirst("sqlite://".count))
            guard path.hasPrefix("/") else {
                throw InvalidURL(description: "database URL '\(url)': a sqlite URL needs an absolute path (sqlite:///path/to/file.db)")
            }
            self = .sqlite(path: path)
        } else {
            throw InvalidURL(description: "database URL '\(Self.redacted(url))' must start with postgres://, postgresql:// or sqlite:///")
        }
    }

    /// For logs: never the password.
    public var description: String {
        switch self {
        case .sqlite(let path): "sqlite \(path)"
        case .postgres(let url): "postgres \(Self.redacted(url))"
        }
    }

    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "***"
        return components.string ?? "postgres://***"
    }
}

/// The open database: Fluent's connection pools and the thread pool SQLite runs on.
/// Migrations run when it opens: they are versioned (Fluent records each in `_fluent_migrations`)
/// and idempotent (a migration already applied is skipped).
public final class Storage: Sendable {
    public let location: DatabaseLocation
    private let databases: Databases
    private let threadPool: NIOThreadPool
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger

    private init(location: DatabaseLocation, databases: Databases, threadPool: NIOThreadPool,
                 eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.location = location
        self.databases = databases
        self.threadPool = threadPool
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// Opens the database and brings its schema up to date.
    public static func open(_ location: DatabaseLocation, migrations: [any Migration],
                            eventLoopGroup: any EventLoopGroup, logger: Logger) async throws -> Storage {
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let databases = Databases(threadPool: threadPool, on: eventLoopGroup)
        switch location {
        case .sqlite(let path):
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            databases.use(.sqlite(.file(path), sqlLogLevel: .trace), as: .sqlite)
        case .postgres(let url):
            databases.use(try .postgres(url: url, maxConnectionsPerEventLoop: 4, sqlLogLevel: .trace), as: .psql)
        }
        let storage = Storage(location: location, databases: databases, threadPool: threadPool,
                              eventLoopGroup: eventLoopGroup, logger: logger)
        do {
            if case .sqlite = location {
                // Foreign keys are off by default in SQLite; the schema relies on ON DELETE CASCADE.
                try await storage.database.execute(sql: "PRAGMA foreign_keys = ON")
                // WAL lets readers go on while a writer commits.
                try await storage.database.execute(sql: "PRAGMA journal_mode = WAL")
            }
            let migrations = migrations.reduce(into: Migrations()) { $0.add($1) }
            let migrator = Migrator(databases: databases, migrations: migrations, logger: logger,
                                    on: eventLoopGroup.any(), migrationLogLevel: .debug)
            try await migrator.setupIfNeeded().get()
            try await migrator.prepareBatch().get()
        } catch {
            await storage.close()
            throw error
        }
        logger.info("database ready", metadata: ["database": "\(location)"])
        return storage
    }

    /// A handle on the database for one unit of work (any event loop of the group).
    public var database: any Database {
        databases.database(logger: logger, on: eventLoopGroup.any())!
    }

    public func close() async {
        await databases.shutdownAsync()
        try? await threadPool.shutdownGracefully()
    }
}

extension Database {
    /// Raw SQL, for the few statements Fluent has no builder for (pragmas, plain indexes).
    public func execute(sql statement: String) async throws {
        guard let database = self as? any SQLDatabase else { return }
        try await database.raw(SQLQueryString(statement)).run()
    }

    /// `CREATE INDEX IF NOT EXISTS name ON table (columns)`: the lookups on hot paths that are not unique.
    public func createIndex(_ name: String, on table: String, columns: [String]) async throws {
        try await execute(sql: "CREATE INDEX IF NOT EXISTS \(name) ON \(table) (\(columns.joined(separator: ", ")))")
    }
}

extension Storage {
    /// Whether `error` means the database could not be reached (as opposed to a bad query): the
    /// API answers 503 for these, and publishing with a database key is refused with that reason.
    public static func isUnavailable(_ error: any Error) -> Bool {
        if let error = error as? PSQLError {
            return [.connectionError, .serverClosedConnection, .clientClosedConnection].contains(error.code)
        }
        return error is ConnectionPoolTimeoutError || error is ConnectionPoolError || error is NIOConnectionError
            || error is ChannelError || error is IOError
    }
}
